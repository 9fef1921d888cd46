/*
 * Making proxied calls cancellable: interception of Wine's client channel.
 *
 * Every client IRpcChannelBuffer in Wine shares one vtable in combase.  The
 * engine finds it once per process by unmarshaling a private interface whose
 * proxy it supplies itself (the proxy's Connect receives a real client
 * channel), checks it, and redirects its SendReceive and FreeBuffer slots:
 *
 *  - every proxied call gets a cancel object on the calling thread's stack
 *    for its duration (CoGetCancelObject / CoCancelCall find it);
 *  - a call from an MTA thread with cancellation enabled runs Wine's real
 *    SendReceive on a private copy of the message on an engine thread, so
 *    that a cancel releases the caller at once; Wine's per-call state stays
 *    alive until the real completion, when the engine frees it (the caller's
 *    FreeBuffer of the abandoned message is skipped);
 *  - a call from an STA thread runs on the caller's thread as before; a
 *    cancel reaches the server and the call ends with RPC_E_CALL_CANCELED
 *    when the server returns (its reply is freed by the caller's FreeBuffer).
 *
 * A channel hook (CoRegisterChannelHook, a public mechanism Wine implements)
 * tags each request with a call id.  On the server it installs a call
 * context answering ICancelMethodCalls for the duration of the method, so
 * that CoGetCallContext and CoTestCancel work there; cancelled call ids are
 * published by the client in a small named shared ring, which the server
 * reads, so the cancel is seen across processes too.
 */

#include "cocancel_private.h"
#include <stdio.h>
#include <stdlib.h>

/* The ORPC extension that carries the call id. */
static const GUID cocancel_extension = {0x6a0c3c4e, 0x2f57, 0x4b0e, {0x8d, 0x41, 0x5e, 0x1b, 0x90, 0x7a, 0x33, 0xc2}};
/* The private interface and proxy/stub class used to find the channel vtable. */
static const IID IID_ICocancelProbe = {0x9d3f1b22, 0x6c1e, 0x4f7a, {0xa4, 0x0b, 0x2c, 0x61, 0x5e, 0x90, 0x13, 0x7d}};
static const CLSID CLSID_CocancelProbePS = {0x9d3f1b23, 0x6c1e, 0x4f7a, {0xa4, 0x0b, 0x2c, 0x61, 0x5e, 0x90, 0x13, 0x7d}};

#define EXTENSION_MAGIC 0x4e414343  /* "CCAN" */

struct call_extension
{
    DWORD magic;
    DWORD version;
    ULONGLONG call_id;   /* client pid << 32 | sequence */
};

static HRESULT (WINAPI *p_CoRegisterChannelHook)(REFGUID, IChannelHook *);
static HRESULT (WINAPI *p_CoSwitchCallContext)(IUnknown *, IUnknown **);
static HRESULT (WINAPI *p_CoGetApartmentType)(APTTYPE *, APTTYPEQUALIFIER *);

static HRESULT (WINAPI *real_SendReceive)(IRpcChannelBuffer *, RPCOLEMESSAGE *, ULONG *);
static HRESULT (WINAPI *real_FreeBuffer)(IRpcChannelBuffer *, RPCOLEMESSAGE *);

static DWORD pending_call_tls = TLS_OUT_OF_INDEXES;  /* call id set by ClientFillBuffer */
static DWORD transport_tls = TLS_OUT_OF_INDEXES;     /* the call being built goes through rpcrt4 */
static DWORD server_call_tls = TLS_OUT_OF_INDEXES;   /* innermost server call context */
static LONG next_sequence;
static LONG channel_refused;
static LONG discovery_started;
static HANDLE discovery_done;

/* ---------------------------------------------------------------------
 * Cancelled call ids, published per client process.
 */

#define RING_SLOTS 1024

struct cancel_ring
{
    LONG64 slots[RING_SLOTS];
};

struct ring_view
{
    DWORD pid;
    HANDLE mapping;
    struct cancel_ring *ring;
};

static SRWLOCK ring_lock = SRWLOCK_INIT;
static struct ring_view ring_views[16];
static unsigned int ring_view_count;

static void ring_name(DWORD pid, WCHAR *name, size_t size)
{
    _snwprintf(name, size, L"Local\\cocancel-cancelled-%08lx", pid);
    name[size - 1] = 0;
}

/* The ring of process pid, mapped on first use; create it for our own process only. */
static struct cancel_ring *get_ring(DWORD pid, BOOL create)
{
    struct cancel_ring *ring = NULL;
    HANDLE mapping;
    WCHAR name[64];
    unsigned int i;

    AcquireSRWLockShared(&ring_lock);
    for (i = 0; i < ring_view_count; i++)
        if (ring_views[i].pid == pid) ring = ring_views[i].ring;
    ReleaseSRWLockShared(&ring_lock);
    if (ring) return ring;

    /* Our own ring is always mapped writable: the view is cached for the
     * server side (which only reads) and the client side (which writes) alike. */
    if (pid == GetCurrentProcessId()) create = TRUE;
    ring_name(pid, name, ARRAY_SIZE(name));
    if (create)
        mapping = CreateFileMappingW(INVALID_HANDLE_VALUE, NULL, PAGE_READWRITE, 0, sizeof(struct cancel_ring), name);
    else
        mapping = OpenFileMappingW(FILE_MAP_READ, FALSE, name);
    if (!mapping) return NULL;
    if (!(ring = MapViewOfFile(mapping, create ? FILE_MAP_WRITE : FILE_MAP_READ, 0, 0, sizeof(*ring))))
    {
        CloseHandle(mapping);
        return NULL;
    }

    AcquireSRWLockExclusive(&ring_lock);
    for (i = 0; i < ring_view_count; i++)
        if (ring_views[i].pid == pid) break;
    if (i < ring_view_count || ring_view_count == ARRAY_SIZE(ring_views))
    {
        /* Another thread mapped it first, or the cache is full: use a private view. */
        struct cancel_ring *cached = i < ring_view_count ? ring_views[i].ring : NULL;

        ReleaseSRWLockExclusive(&ring_lock);
        if (cached)
        {
            UnmapViewOfFile(ring);
            CloseHandle(mapping);
            return cached;
        }
        /* Kept mapped: the cache is full, and a view is small. */
        return ring;
    }
    ring_views[ring_view_count].pid = pid;
    ring_views[ring_view_count].mapping = mapping;
    ring_views[ring_view_count].ring = ring;
    ring_view_count++;
    ReleaseSRWLockExclusive(&ring_lock);
    return ring;
}

void channel_mark_cancelled(ULONGLONG call_id)
{
    struct cancel_ring *ring = get_ring(GetCurrentProcessId(), TRUE);

    TRACE("call %llx cancelled\n", (unsigned long long)call_id);
    if (ring) InterlockedExchange64(&ring->slots[call_id % RING_SLOTS], (LONG64)call_id);
}

static BOOL call_cancelled(ULONGLONG call_id)
{
    struct cancel_ring *ring = get_ring((DWORD)(call_id >> 32), FALSE);

    /* The view is read-only: a plain aligned read (an interlocked one would write). */
    return ring && (ULONGLONG)*(volatile LONG64 *)&ring->slots[call_id % RING_SLOTS] == call_id;
}

/* ---------------------------------------------------------------------
 * The server side: a call context for the duration of each method.
 */

struct server_call
{
    ICancelMethodCalls ICancelMethodCalls_iface;
    LONG refcount;
    ULONGLONG call_id;
    LONG cancelled;              /* cancelled by the server itself */
    IUnknown *previous;          /* the call context it replaced */
    struct server_call *outer;   /* the enclosing call on this thread */
};

static inline struct server_call *impl_from_server_ICancelMethodCalls(ICancelMethodCalls *iface)
{
    return CONTAINING_RECORD(iface, struct server_call, ICancelMethodCalls_iface);
}

static HRESULT WINAPI server_call_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
{
    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICancelMethodCalls))
    {
        *ppv = iface;
        ICancelMethodCalls_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI server_call_AddRef(ICancelMethodCalls *iface)
{
    return InterlockedIncrement(&impl_from_server_ICancelMethodCalls(iface)->refcount);
}

static ULONG WINAPI server_call_Release(ICancelMethodCalls *iface)
{
    struct server_call *call = impl_from_server_ICancelMethodCalls(iface);
    ULONG refcount = InterlockedDecrement(&call->refcount);

    if (!refcount) HeapFree(GetProcessHeap(), 0, call);
    return refcount;
}

static HRESULT WINAPI server_call_Cancel(ICancelMethodCalls *iface, ULONG seconds)
{
    InterlockedExchange(&impl_from_server_ICancelMethodCalls(iface)->cancelled, 1);
    return S_OK;
}

static HRESULT WINAPI server_call_TestCancel(ICancelMethodCalls *iface)
{
    struct server_call *call = impl_from_server_ICancelMethodCalls(iface);

    if (call->cancelled || call_cancelled(call->call_id)) return RPC_E_CALL_CANCELED;
    return RPC_S_CALLPENDING;
}

static const ICancelMethodCallsVtbl server_call_vtbl =
{
    server_call_QueryInterface,
    server_call_AddRef,
    server_call_Release,
    server_call_Cancel,
    server_call_TestCancel,
};

/* ---------------------------------------------------------------------
 * The channel hook.
 */

static void start_discovery(void);

static ULONGLONG make_call_id(DWORD sequence)
{
    return ((ULONGLONG)GetCurrentProcessId() << 32) | sequence;
}

static HRESULT WINAPI hook_QueryInterface(IChannelHook *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IChannelHook))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI hook_AddRef(IChannelHook *iface)
{
    return 2;   /* a static object */
}

static ULONG WINAPI hook_Release(IChannelHook *iface)
{
    return 1;
}

static void WINAPI hook_ClientGetSize(IChannelHook *iface, REFGUID extension, REFIID riid, ULONG *size)
{
    *size = sizeof(struct call_extension);
    /* A new request: hook_I_RpcGetBuffer says below whether it goes to the transport. */
    TlsSetValue(transport_tls, NULL);
    /* The first proxied call of a process that did not start discovery at load. */
    start_discovery();
}

static void WINAPI hook_ClientFillBuffer(IChannelHook *iface, REFGUID extension, REFIID riid,
                                         ULONG *size, void *buffer)
{
    struct call_extension *data = buffer;
    DWORD sequence;

    if (*size < sizeof(*data))
    {
        *size = 0;
        return;
    }
    /* Never 0, which stands for "no call id". */
    while (!(sequence = (DWORD)InterlockedIncrement(&next_sequence)));
    data->magic = EXTENSION_MAGIC;
    data->version = 1;
    data->call_id = make_call_id(sequence);
    *size = sizeof(*data);
    /* Picked up by the SendReceive that follows this GetBuffer on the same thread. */
    TlsSetValue(pending_call_tls, (void *)(ULONG_PTR)sequence);
    async_client_fill(riid);
}

static void WINAPI hook_ClientNotify(IChannelHook *iface, REFGUID extension, REFIID riid, ULONG size,
                                     void *buffer, DWORD data_rep, HRESULT fault)
{
}

static void WINAPI hook_ServerNotify(IChannelHook *iface, REFGUID extension, REFIID riid, ULONG size,
                                     void *buffer, DWORD data_rep)
{
    const struct call_extension *data = buffer;
    struct server_call *call;

    if (!p_CoSwitchCallContext || size < sizeof(*data) || !buffer || data->magic != EXTENSION_MAGIC) return;
    if (!(call = HeapAlloc(GetProcessHeap(), 0, sizeof(*call)))) return;
    call->ICancelMethodCalls_iface.lpVtbl = &server_call_vtbl;
    call->refcount = 1;
    call->call_id = data->call_id;
    call->cancelled = 0;
    call->previous = NULL;
    /* Runs on the thread that invokes the method, right before it. */
    if (FAILED(p_CoSwitchCallContext((IUnknown *)&call->ICancelMethodCalls_iface, &call->previous)))
    {
        HeapFree(GetProcessHeap(), 0, call);
        return;
    }
    call->outer = TlsGetValue(server_call_tls);
    TlsSetValue(server_call_tls, call);
    TRACE("server call %llx begins\n", (unsigned long long)call->call_id);
}

static void WINAPI hook_ServerGetSize(IChannelHook *iface, REFGUID extension, REFIID riid, HRESULT fault,
                                      ULONG *size)
{
    struct server_call *call = TlsGetValue(server_call_tls);
    IUnknown *current;

    *size = 0;
    if (!call) return;
    /* The reply is being marshaled: the method has returned. */
    TlsSetValue(server_call_tls, call->outer);
    p_CoSwitchCallContext(call->previous, &current);
    TRACE("server call %llx ends\n", (unsigned long long)call->call_id);
    ICancelMethodCalls_Release(&call->ICancelMethodCalls_iface);
}

static void WINAPI hook_ServerFillBuffer(IChannelHook *iface, REFGUID extension, REFIID riid, ULONG *size,
                                         void *buffer, HRESULT fault)
{
    *size = 0;
}

static const IChannelHookVtbl hook_vtbl =
{
    hook_QueryInterface,
    hook_AddRef,
    hook_Release,
    hook_ClientGetSize,
    hook_ClientFillBuffer,
    hook_ClientNotify,
    hook_ServerNotify,
    hook_ServerGetSize,
    hook_ServerFillBuffer,
};

static IChannelHook channel_hook = { &hook_vtbl };

/* ---------------------------------------------------------------------
 * Calls made away from the caller's stack: on an engine thread (an MTA
 * caller's) or on a worker fiber of the caller's thread.
 */

/* A call in the RPC transport that a cancel may abort (see channel_abort_call). */
struct transport_call
{
    struct transport_call *next;
    RPCOLEMESSAGE *msg;
    ULONGLONG call_id;
    HANDLE thread;          /* the pool thread in I_RpcSendReceive, while it is there */
    BOOL entered, left;
};

static void transport_watch(struct transport_call *call, RPCOLEMESSAGE *msg, ULONGLONG call_id);
static void transport_unwatch(struct transport_call *call);

struct detached_call
{
    SLIST_ENTRY entry;              /* in the work queue */
    LONG refcount;                  /* the caller (or the orphan list) and the worker */
    IRpcChannelBuffer *chan;
    RPCOLEMESSAGE msg;              /* the copy Wine's SendReceive works on */
    ULONG status;
    HRESULT hr;
    ICancelMethodCalls *cancel;
    ULONGLONG call_id;
    BOOL transport;                 /* the call goes through rpcrt4: a cancel also aborts it there */
    struct transport_call watch;    /* ... found there by this */
    RPCOLEMESSAGE *caller_msg;      /* while orphaned: the caller's message, whose FreeBuffer is skipped */
    void *caller_state;
    BOOL orphaned;
    struct detached_call *next_orphan;
};

static SLIST_HEADER work_queue;
/* Bumped for each call queued; idle workers wait for it to change.  Address
 * waits, unlike kernel objects, cost Wine no round trip to its server. */
static LONG work_sequence;
static LONG idle_workers;
static CRITICAL_SECTION orphan_cs;
static struct detached_call *orphans;
static LONG orphan_count;

static void detached_release(struct detached_call *call)
{
    if (InterlockedDecrement(&call->refcount)) return;
    /* Last reference of an abandoned call: Wine's reply and per-call state go now. */
    if (call->orphaned) real_FreeBuffer(call->chan, &call->msg);
    IRpcChannelBuffer_Release(call->chan);
    ICancelMethodCalls_Release(call->cancel);
    _aligned_free(call);
}

/* Makes the call on the record's copy of the message, on an engine thread or a fiber. */
static void run_call(void *arg)
{
    struct detached_call *call = arg;

    if (call->transport) transport_watch(&call->watch, &call->msg, call->call_id);
    call->hr = real_SendReceive(call->chan, &call->msg, &call->status);
    if (call->transport) transport_unwatch(&call->watch);
    if (CocancelCompleteCall(call->cancel) != S_OK)
        TRACE("call %p completed after it was cancelled: %#lx\n", call, call->hr);
    detached_release(call);
}

static DWORD WINAPI worker_thread(void *arg)
{
    for (;;)
    {
        struct detached_call *call;

        InterlockedIncrement(&idle_workers);
        for (;;)
        {
            LONG seen = InterlockedCompareExchange(&work_sequence, 0, 0);

            if ((call = (struct detached_call *)InterlockedPopEntrySList(&work_queue))) break;
            WaitOnAddress(&work_sequence, &seen, sizeof(seen), INFINITE);
        }

        /* The thread never initialises COM, so it runs in the process's MTA. */
        run_call(call);
    }
    return 0;
}

static BOOL submit(struct detached_call *call)
{
    HANDLE thread;

    /* Each detached call may block for long, so every call gets an idle worker. */
    if (InterlockedDecrement(&idle_workers) < 0)
    {
        InterlockedIncrement(&idle_workers);
        if (!(thread = CreateThread(NULL, 0, worker_thread, NULL, 0, NULL))) return FALSE;
        CloseHandle(thread);
        /* The new worker counts itself idle before it waits; claim it. */
        while (InterlockedCompareExchange(&idle_workers, 0, 0) <= 0) Sleep(0);
        InterlockedDecrement(&idle_workers);
    }
    InterlockedPushEntrySList(&work_queue, &call->entry);
    InterlockedIncrement(&work_sequence);
    WakeByAddressSingle(&work_sequence);
    return TRUE;
}

/*
 * The caller of a cancelled call is released while Wine's state of the call
 * (or its reply) is still the worker's: the FreeBuffer that the proxy is
 * about to make for the caller's message must not touch it, and is deferred
 * to the last release of the record.
 */
static HRESULT orphan_call(struct detached_call *call, RPCOLEMESSAGE *msg, ULONG *status)
{
    call->caller_msg = msg;
    call->caller_state = msg->reserved1;
    call->orphaned = TRUE;
    EnterCriticalSection(&orphan_cs);
    call->next_orphan = orphans;
    orphans = call;
    InterlockedIncrement(&orphan_count);
    LeaveCriticalSection(&orphan_cs);
    if (status) *status = RPC_S_CALL_CANCELLED;
    return RPC_E_CALL_CANCELED;
}

/* A record for a call made elsewhere than the caller's stack: the caller's and the maker's reference. */
static struct detached_call *new_call(IRpcChannelBuffer *chan, const RPCOLEMESSAGE *msg, ICancelMethodCalls *cancel,
                                      ULONGLONG call_id, BOOL transport)
{
    struct detached_call *call;

    if (!(call = _aligned_malloc(sizeof(*call), MEMORY_ALLOCATION_ALIGNMENT))) return NULL;
    memset(call, 0, sizeof(*call));
    call->refcount = 2;
    call->chan = chan;
    IRpcChannelBuffer_AddRef(chan);
    call->msg = *msg;
    call->cancel = cancel;
    ICancelMethodCalls_AddRef(cancel);
    call->call_id = call_id;
    call->transport = transport;
    return call;
}

/* A record whose call was never made. */
static void discard_call(struct detached_call *call)
{
    IRpcChannelBuffer_Release(call->chan);
    ICancelMethodCalls_Release(call->cancel);
    _aligned_free(call);
}

/* The caller's side once the call is complete or cancelled: the reply, or the orphaned record. */
static HRESULT end_call(struct detached_call *call, RPCOLEMESSAGE *msg, ULONG *status)
{
    HRESULT hr;

    if (cancel_object_state(call->cancel) != CC_COMPLETE) return orphan_call(call, msg, status);
    *msg = call->msg;
    if (status) *status = call->status;
    hr = call->hr;
    detached_release(call);
    return hr;
}

static HRESULT send_receive_detached(IRpcChannelBuffer *chan, RPCOLEMESSAGE *msg, ULONG *status,
                                     ICancelMethodCalls *cancel, ULONGLONG call_id, BOOL transport)
{
    struct detached_call *call;

    if (!(call = new_call(chan, msg, cancel, call_id, transport))) return real_SendReceive(chan, msg, status);
    if (!submit(call))
    {
        discard_call(call);
        return real_SendReceive(chan, msg, status);
    }
    cancel_object_wait(cancel);
    return end_call(call, msg, status);
}

/* ---------------------------------------------------------------------
 * Calls from STA threads that reach the RPC transport (cross-process, or
 * into the MTA): Wine runs I_RpcSendReceive on a pool thread while the STA
 * pumps.  The engine hooks combase's import of it to learn that thread, and
 * a cancel aborts the transport call there with RpcCancelThread; Wine then
 * finishes the call itself, with an error, and closes that connection, so
 * the next call on the proxy gets a connection (and reply) of its own.
 */

static RPC_STATUS (WINAPI *real_I_RpcSendReceive)(RPC_MESSAGE *);
static RPC_STATUS (WINAPI *real_I_RpcGetBuffer)(RPC_MESSAGE *);

/*
 * Wine's GetBuffer asks rpcrt4 for the buffer only when the call will go
 * through the RPC runtime (it allocates one itself for a call posted to an
 * STA of this process).  Noting that lets an MTA caller keep its call on
 * its own thread, aborting it in the transport on cancel, instead of
 * handing it to an engine thread.
 */
static RPC_STATUS WINAPI hook_I_RpcGetBuffer(RPC_MESSAGE *msg)
{
    TlsSetValue(transport_tls, (void *)1);
    return real_I_RpcGetBuffer(msg);
}
static CRITICAL_SECTION transport_cs;
static struct transport_call *transport_calls;
static LONG transport_count;

static RPC_STATUS WINAPI hook_I_RpcSendReceive(RPC_MESSAGE *msg)
{
    struct transport_call *call = NULL;
    HANDLE thread = NULL;
    RPC_STATUS status;

    if (InterlockedCompareExchange(&transport_count, 0, 0))
    {
        EnterCriticalSection(&transport_cs);
        for (call = transport_calls; call; call = call->next)
            if ((RPC_MESSAGE *)call->msg == msg && !call->entered) break;
        if (call && DuplicateHandle(GetCurrentProcess(), GetCurrentThread(), GetCurrentProcess(), &thread,
                                    THREAD_ALL_ACCESS, FALSE, 0))
        {
            call->thread = thread;
            call->entered = TRUE;
        }
        else call = NULL;
        LeaveCriticalSection(&transport_cs);
    }
    status = real_I_RpcSendReceive(msg);
    if (call)
    {
        EnterCriticalSection(&transport_cs);
        call->thread = NULL;
        call->left = TRUE;
        LeaveCriticalSection(&transport_cs);
        CloseHandle(thread);
    }
    return status;
}

static void transport_watch(struct transport_call *call, RPCOLEMESSAGE *msg, ULONGLONG call_id)
{
    memset(call, 0, sizeof(*call));
    call->msg = msg;
    call->call_id = call_id;
    EnterCriticalSection(&transport_cs);
    call->next = transport_calls;
    transport_calls = call;
    InterlockedIncrement(&transport_count);
    LeaveCriticalSection(&transport_cs);
}

static void transport_unwatch(struct transport_call *call)
{
    struct transport_call **link;

    EnterCriticalSection(&transport_cs);
    for (link = &transport_calls; *link; link = &(*link)->next)
    {
        if (*link != call) continue;
        *link = call->next;
        InterlockedDecrement(&transport_count);
        break;
    }
    LeaveCriticalSection(&transport_cs);
}

/*
 * Called by the cancel object of a call.  A cancel that reaches the pool
 * thread before it waits for the reply is lost, so it is repeated until the
 * transport call ends (or 2 s pass: the call then ends when the server
 * replies, as a cooperative cancel).  A call that has not entered the
 * transport within 50 ms never will: it was posted to an STA in this
 * process, and ends when that STA has run it.
 */
void channel_abort_call(ULONGLONG call_id)
{
    unsigned int i;

    if (!call_id || !real_I_RpcSendReceive) return;
    for (i = 0; i < 2000; i++)
    {
        struct transport_call *call;
        BOOL pending = FALSE;

        EnterCriticalSection(&transport_cs);
        for (call = transport_calls; call; call = call->next)
            if (call->call_id == call_id) break;
        if (call && !call->left && (call->entered || i < 50))
        {
            pending = TRUE;
            if (call->thread) RpcCancelThread(call->thread);
        }
        LeaveCriticalSection(&transport_cs);
        if (!pending) return;
        Sleep(1);
    }
}

/* ---------------------------------------------------------------------
 * The server side of an abandoned call.  Once a caller has been released by
 * a cancel it may release its proxy while the server method still runs; the
 * stub manager then loses its last reference when Wine's dispatch of that
 * very call ends, and Wine unregisters the interface from rpcrt4 there,
 * asking to wait for the interface's calls to complete - the one being
 * dispatched included.  The thread would wait for itself forever, holding
 * combase's lock on registered interfaces (no object could be marshaled in
 * the process again).  A thread that is dispatching a call does not wait:
 * rpcrt4 then drops the interface at once and frees its own record of it
 * when the calls in flight have ended.
 */
static RPC_STATUS (WINAPI *real_RpcServerUnregisterIf)(RPC_IF_HANDLE, UUID *, UINT);

static RPC_STATUS WINAPI hook_RpcServerUnregisterIf(RPC_IF_HANDLE spec, UUID *type, UINT wait)
{
    if (wait && I_RpcGetCurrentCallHandle())
    {
        TRACE("interface %p unregistered while this thread dispatches a call: not waiting for calls\n", spec);
        wait = FALSE;
    }
    return real_RpcServerUnregisterIf(spec, type, wait);
}

/* Redirects combase's imports of rpcrt4!RpcServerUnregisterIf, I_RpcSendReceive and I_RpcGetBuffer,
 * after checking the slots. */
static void hook_transport(HMODULE combase)
{
    if (!redirect_import(combase, "rpcrt4.dll", "RpcServerUnregisterIf", (void *)hook_RpcServerUnregisterIf,
                         (void **)&real_RpcServerUnregisterIf))
    {
        WARN("combase's import of RpcServerUnregisterIf not found as expected; releasing a proxy before "
             "its cancelled call ends may hang the server\n");
        InterlockedIncrement(&channel_refused);
    }
    if (!redirect_import(combase, "rpcrt4.dll", "I_RpcSendReceive", (void *)hook_I_RpcSendReceive,
                         (void **)&real_I_RpcSendReceive))
    {
        WARN("combase's import of I_RpcSendReceive not found as expected; STA callers are released by the server\n");
        InterlockedIncrement(&channel_refused);
        return;
    }
    if (!redirect_import(combase, "rpcrt4.dll", "I_RpcGetBuffer", (void *)hook_I_RpcGetBuffer,
                         (void **)&real_I_RpcGetBuffer))
    {
        WARN("combase's import of I_RpcGetBuffer not found as expected; MTA callers always use a helper thread\n");
        InterlockedIncrement(&channel_refused);
    }
}

/* ---------------------------------------------------------------------
 * Message filters.  While an STA thread waits for a call, Wine asks the
 * apartment's IMessageFilter what to do with incoming messages but ignores
 * PENDINGMSG_CANCELCALL.  For the duration of each call from an STA with a
 * filter, the engine stands in front of it: the program's answers go back to
 * Wine unchanged, except that a cancel cancels the call (through its cancel
 * object, as CoCancelCall would) and Wine is told to keep waiting.
 */

struct filter_wrapper
{
    IMessageFilter IMessageFilter_iface;
    IMessageFilter *filter;         /* the program's */
    ICancelMethodCalls *cancel;     /* the call's */
};

static inline struct filter_wrapper *impl_from_IMessageFilter(IMessageFilter *iface)
{
    return CONTAINING_RECORD(iface, struct filter_wrapper, IMessageFilter_iface);
}

static HRESULT WINAPI filter_QueryInterface(IMessageFilter *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IMessageFilter))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

/* The wrapper lives on the caller's stack for exactly the call. */
static ULONG WINAPI filter_AddRef(IMessageFilter *iface)
{
    return 2;
}

static ULONG WINAPI filter_Release(IMessageFilter *iface)
{
    return 1;
}

static DWORD WINAPI filter_HandleInComingCall(IMessageFilter *iface, DWORD type, HTASK caller, DWORD ticks,
                                              INTERFACEINFO *info)
{
    return IMessageFilter_HandleInComingCall(impl_from_IMessageFilter(iface)->filter, type, caller, ticks, info);
}

static DWORD WINAPI filter_RetryRejectedCall(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    return IMessageFilter_RetryRejectedCall(impl_from_IMessageFilter(iface)->filter, callee, ticks, type);
}

static DWORD WINAPI filter_MessagePending(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    struct filter_wrapper *wrapper = impl_from_IMessageFilter(iface);
    DWORD answer = IMessageFilter_MessagePending(wrapper->filter, callee, ticks, type);

    if (answer != PENDINGMSG_CANCELCALL) return answer;
    TRACE("the message filter cancels the call\n");
    cancel_object_abort(wrapper->cancel);
    return PENDINGMSG_WAITDEFPROCESS;
}

static const IMessageFilterVtbl filter_vtbl =
{
    filter_QueryInterface,
    filter_AddRef,
    filter_Release,
    filter_HandleInComingCall,
    filter_RetryRejectedCall,
    filter_MessagePending,
};

static BOOL wrap_filter(struct filter_wrapper *wrapper, ICancelMethodCalls *cancel)
{
    IMessageFilter *previous = NULL;

    wrapper->IMessageFilter_iface.lpVtbl = &filter_vtbl;
    wrapper->cancel = cancel;
    if (CoRegisterMessageFilter(&wrapper->IMessageFilter_iface, &previous) != S_OK) return FALSE;
    if (!previous)
    {
        /* No filter to stand in front of. */
        CoRegisterMessageFilter(NULL, NULL);
        return FALSE;
    }
    wrapper->filter = previous;
    return TRUE;
}

static void unwrap_filter(struct filter_wrapper *wrapper)
{
    IMessageFilter *current = NULL;

    CoRegisterMessageFilter(wrapper->filter, &current);
    /* The program registered another filter during the call: that one stays. */
    if (current && current != &wrapper->IMessageFilter_iface)
    {
        CoRegisterMessageFilter(current, NULL);
        IMessageFilter_Release(current);
    }
    IMessageFilter_Release(wrapper->filter);
}

/*
 * A call run on a worker fiber of the caller's own thread (async.c's
 * tasks): Wine's SendReceive runs on the fiber, and while it waits for the
 * reply the thread waits for that and for the call's cancel.  A cancel
 * releases the caller at once; the fiber stays parked until the reply comes
 * and is finished by the thread the next time it makes a call (Wine's code
 * after the wait uses the thread's COM data, so no other thread may; a
 * thread that ends first leaves the records of the call behind, see
 * async.c).  The call keeps the caller's apartment, which is what lets an
 * STA caller be released from a call into an STA of its own process (Wine
 * posts those and waits in the caller), and costs no thread switch.  The
 * message Wine works on is the record's copy, on the heap, never on the
 * fiber's stack.  Same record and deferred FreeBuffer as a detached call.
 */
/* FALSE when the call cannot run on a fiber here (nothing was sent). */
static BOOL send_receive_fiber(IRpcChannelBuffer *chan, RPCOLEMESSAGE *msg, ULONG *status,
                               ICancelMethodCalls *cancel, ULONGLONG call_id, BOOL transport, HRESULT *hr)
{
    struct detached_call *call;
    HANDLE cancelled;
    HRESULT ran;

    if (!(cancelled = cancel_object_cancelled_event(cancel))) return FALSE;
    if (!(call = new_call(chan, msg, cancel, call_id, transport))) return FALSE;
    if ((ran = async_run_task(run_call, call, cancelled)) == E_NOTIMPL)
    {
        discard_call(call);
        return FALSE;
    }
    /* Left parked (S_FALSE): cancelled, and the reply, when it comes, is not delivered. */
    *hr = end_call(call, msg, status);
    return TRUE;
}

/* ---------------------------------------------------------------------
 * The channel slots.
 */

static BOOL caller_in_mta(void)
{
    APTTYPEQUALIFIER qualifier;
    APTTYPE type;

    if (!p_CoGetApartmentType || FAILED(p_CoGetApartmentType(&type, &qualifier))) return FALSE;
    return type == APTTYPE_MTA;
}

static HRESULT WINAPI hook_SendReceive(IRpcChannelBuffer *iface, RPCOLEMESSAGE *msg, ULONG *status)
{
    DWORD sequence = (DWORD)(ULONG_PTR)TlsGetValue(pending_call_tls);
    ULONGLONG call_id = sequence ? make_call_id(sequence) : 0;
    struct filter_wrapper wrapper;
    ICancelMethodCalls *cancel;
    BOOL cancellable, mta, transport, wrapped;
    HRESULT hr;

    TlsSetValue(pending_call_tls, NULL);
    /* The request of an asynchronous call is the call engine's. */
    if (async_send_receive(iface, msg, status, call_id, &hr)) return hr;
    async_reap();
    cancellable = cancellation_enabled();
    if (FAILED(cancel_object_create(cancellable, call_id, &cancel))) return real_SendReceive(iface, msg, status);
    if (FAILED(cancel_object_push(cancel)))
    {
        ICancelMethodCalls_Release(cancel);
        return real_SendReceive(iface, msg, status);
    }

    mta = caller_in_mta();
    transport = TlsGetValue(transport_tls) != NULL;
    wrapped = !mta && wrap_filter(&wrapper, cancel);
    /*
     * A call that can be cancelled runs on a fiber of the caller's thread
     * (failing that, an MTA caller's on an engine thread); a cancel also
     * aborts a call in the RPC transport, which ends it there soon.
     */
    if ((cancellable || wrapped) && send_receive_fiber(iface, msg, status, cancel, call_id, transport, &hr))
        TRACE("call %llx made on a fiber: %#lx\n", (unsigned long long)call_id, hr);
    else if (cancellable && mta)
        hr = send_receive_detached(iface, msg, status, cancel, call_id, transport);
    else
    {
        struct transport_call transport_call;
        BOOL watched = cancellable || wrapped;

        if (watched) transport_watch(&transport_call, msg, call_id);
        hr = real_SendReceive(iface, msg, status);
        if (watched) transport_unwatch(&transport_call);
        /* Cancelled while it ran: whatever came back is not delivered (the
         * proxy's FreeBuffer releases it as for any failed call). */
        if (CocancelCompleteCall(cancel) == RPC_E_CALL_CANCELED) hr = RPC_E_CALL_CANCELED;
    }
    if (wrapped) unwrap_filter(&wrapper);

    cancel_object_pop(cancel);
    ICancelMethodCalls_Release(cancel);
    return hr;
}

/* Wine's own SendReceive, for the requests of asynchronous calls. */
HRESULT channel_send_receive(IRpcChannelBuffer *chan, RPCOLEMESSAGE *msg, ULONG *status)
{
    return real_SendReceive(chan, msg, status);
}

static HRESULT WINAPI hook_FreeBuffer(IRpcChannelBuffer *iface, RPCOLEMESSAGE *msg)
{
    struct detached_call *call = NULL, **link;

    if (InterlockedCompareExchange(&orphan_count, 0, 0))
    {
        EnterCriticalSection(&orphan_cs);
        for (link = &orphans; *link; link = &(*link)->next_orphan)
        {
            if ((*link)->caller_msg != msg || (*link)->caller_state != msg->reserved1) continue;
            call = *link;
            *link = call->next_orphan;
            InterlockedDecrement(&orphan_count);
            break;
        }
        LeaveCriticalSection(&orphan_cs);
        if (call)
        {
            TRACE("FreeBuffer of abandoned call %p deferred to its completion\n", call);
            detached_release(call);
            return S_OK;
        }
    }
    return real_FreeBuffer(iface, msg);
}

/* ---------------------------------------------------------------------
 * Finding the client channel vtable.
 */

struct probe_proxy
{
    IRpcProxyBuffer IRpcProxyBuffer_iface;
    IUnknown IUnknown_iface;    /* the proxied ICocancelProbe, delegating to the proxy manager */
    LONG refcount;
    IUnknown *outer;
};

static void patch_channel_vtbl(IRpcChannelBuffer *chan);

static inline struct probe_proxy *impl_from_IRpcProxyBuffer(IRpcProxyBuffer *iface)
{
    return CONTAINING_RECORD(iface, struct probe_proxy, IRpcProxyBuffer_iface);
}

static inline struct probe_proxy *impl_from_probe_IUnknown(IUnknown *iface)
{
    return CONTAINING_RECORD(iface, struct probe_proxy, IUnknown_iface);
}

static HRESULT WINAPI probe_proxy_buffer_QueryInterface(IRpcProxyBuffer *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IRpcProxyBuffer))
    {
        *ppv = iface;
        IRpcProxyBuffer_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI probe_proxy_buffer_AddRef(IRpcProxyBuffer *iface)
{
    return InterlockedIncrement(&impl_from_IRpcProxyBuffer(iface)->refcount);
}

static ULONG WINAPI probe_proxy_buffer_Release(IRpcProxyBuffer *iface)
{
    struct probe_proxy *proxy = impl_from_IRpcProxyBuffer(iface);
    ULONG refcount = InterlockedDecrement(&proxy->refcount);

    if (!refcount) HeapFree(GetProcessHeap(), 0, proxy);
    return refcount;
}

static HRESULT WINAPI probe_proxy_buffer_Connect(IRpcProxyBuffer *iface, IRpcChannelBuffer *chan)
{
    patch_channel_vtbl(chan);
    return S_OK;
}

static void WINAPI probe_proxy_buffer_Disconnect(IRpcProxyBuffer *iface)
{
}

static const IRpcProxyBufferVtbl probe_proxy_buffer_vtbl =
{
    probe_proxy_buffer_QueryInterface,
    probe_proxy_buffer_AddRef,
    probe_proxy_buffer_Release,
    probe_proxy_buffer_Connect,
    probe_proxy_buffer_Disconnect,
};

static HRESULT WINAPI probe_iface_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(impl_from_probe_IUnknown(iface)->outer, riid, ppv);
}

static ULONG WINAPI probe_iface_AddRef(IUnknown *iface)
{
    return IUnknown_AddRef(impl_from_probe_IUnknown(iface)->outer);
}

static ULONG WINAPI probe_iface_Release(IUnknown *iface)
{
    return IUnknown_Release(impl_from_probe_IUnknown(iface)->outer);
}

static const IUnknownVtbl probe_iface_vtbl = { probe_iface_QueryInterface, probe_iface_AddRef, probe_iface_Release };

/* The stub side of the probe interface: it has no methods to dispatch. */
struct probe_stub
{
    IRpcStubBuffer IRpcStubBuffer_iface;
    LONG refcount;
    IUnknown *server;
};

static inline struct probe_stub *impl_from_IRpcStubBuffer(IRpcStubBuffer *iface)
{
    return CONTAINING_RECORD(iface, struct probe_stub, IRpcStubBuffer_iface);
}

static HRESULT WINAPI probe_stub_QueryInterface(IRpcStubBuffer *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IRpcStubBuffer))
    {
        *ppv = iface;
        IRpcStubBuffer_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI probe_stub_AddRef(IRpcStubBuffer *iface)
{
    return InterlockedIncrement(&impl_from_IRpcStubBuffer(iface)->refcount);
}

static ULONG WINAPI probe_stub_Release(IRpcStubBuffer *iface)
{
    struct probe_stub *stub = impl_from_IRpcStubBuffer(iface);
    ULONG refcount = InterlockedDecrement(&stub->refcount);

    if (!refcount)
    {
        if (stub->server) IUnknown_Release(stub->server);
        HeapFree(GetProcessHeap(), 0, stub);
    }
    return refcount;
}

static HRESULT WINAPI probe_stub_Connect(IRpcStubBuffer *iface, IUnknown *server)
{
    struct probe_stub *stub = impl_from_IRpcStubBuffer(iface);

    IUnknown_AddRef(server);
    if (stub->server) IUnknown_Release(stub->server);
    stub->server = server;
    return S_OK;
}

static void WINAPI probe_stub_Disconnect(IRpcStubBuffer *iface)
{
    struct probe_stub *stub = impl_from_IRpcStubBuffer(iface);

    if (stub->server) IUnknown_Release(stub->server);
    stub->server = NULL;
}

static HRESULT WINAPI probe_stub_Invoke(IRpcStubBuffer *iface, RPCOLEMESSAGE *msg, IRpcChannelBuffer *chan)
{
    return RPC_E_UNEXPECTED;
}

static IRpcStubBuffer * WINAPI probe_stub_IsIIDSupported(IRpcStubBuffer *iface, REFIID riid)
{
    return NULL;
}

static ULONG WINAPI probe_stub_CountRefs(IRpcStubBuffer *iface)
{
    return impl_from_IRpcStubBuffer(iface)->refcount;
}

static HRESULT WINAPI probe_stub_DebugServerQueryInterface(IRpcStubBuffer *iface, void **ppv)
{
    *ppv = NULL;
    return E_NOTIMPL;
}

static void WINAPI probe_stub_DebugServerRelease(IRpcStubBuffer *iface, void *pv)
{
}

static const IRpcStubBufferVtbl probe_stub_vtbl =
{
    probe_stub_QueryInterface,
    probe_stub_AddRef,
    probe_stub_Release,
    probe_stub_Connect,
    probe_stub_Disconnect,
    probe_stub_Invoke,
    probe_stub_IsIIDSupported,
    probe_stub_CountRefs,
    probe_stub_DebugServerQueryInterface,
    probe_stub_DebugServerRelease,
};

static HRESULT WINAPI probe_factory_QueryInterface(IPSFactoryBuffer *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IPSFactoryBuffer))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI probe_factory_AddRef(IPSFactoryBuffer *iface)
{
    return 2;
}

static ULONG WINAPI probe_factory_Release(IPSFactoryBuffer *iface)
{
    return 1;
}

static HRESULT WINAPI probe_factory_CreateProxy(IPSFactoryBuffer *iface, IUnknown *outer, REFIID riid,
                                                IRpcProxyBuffer **proxy_buffer, void **ppv)
{
    struct probe_proxy *proxy;

    *proxy_buffer = NULL;
    *ppv = NULL;
    if (!IsEqualIID(riid, &IID_ICocancelProbe)) return E_NOINTERFACE;
    if (!(proxy = HeapAlloc(GetProcessHeap(), 0, sizeof(*proxy)))) return E_OUTOFMEMORY;
    proxy->IRpcProxyBuffer_iface.lpVtbl = &probe_proxy_buffer_vtbl;
    proxy->IUnknown_iface.lpVtbl = &probe_iface_vtbl;
    proxy->refcount = 1;
    proxy->outer = outer;
    *proxy_buffer = &proxy->IRpcProxyBuffer_iface;
    *ppv = &proxy->IUnknown_iface;
    IUnknown_AddRef(outer);
    return S_OK;
}

static HRESULT WINAPI probe_factory_CreateStub(IPSFactoryBuffer *iface, REFIID riid, IUnknown *server,
                                               IRpcStubBuffer **ppstub)
{
    struct probe_stub *stub;

    *ppstub = NULL;
    if (!IsEqualIID(riid, &IID_ICocancelProbe)) return E_NOINTERFACE;
    if (!(stub = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*stub)))) return E_OUTOFMEMORY;
    stub->IRpcStubBuffer_iface.lpVtbl = &probe_stub_vtbl;
    stub->refcount = 1;
    if (server) probe_stub_Connect(&stub->IRpcStubBuffer_iface, server);
    *ppstub = &stub->IRpcStubBuffer_iface;
    return S_OK;
}

static const IPSFactoryBufferVtbl probe_factory_vtbl =
{
    probe_factory_QueryInterface,
    probe_factory_AddRef,
    probe_factory_Release,
    probe_factory_CreateProxy,
    probe_factory_CreateStub,
};

static IPSFactoryBuffer probe_factory = { &probe_factory_vtbl };

/* The object marshaled for the probe: it only answers IUnknown and ICocancelProbe. */
static HRESULT WINAPI probe_object_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICocancelProbe))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI probe_object_AddRef(IUnknown *iface)
{
    return 2;
}

static ULONG WINAPI probe_object_Release(IUnknown *iface)
{
    return 1;
}

static const IUnknownVtbl probe_object_vtbl = { probe_object_QueryInterface, probe_object_AddRef, probe_object_Release };
static IUnknown probe_object = { &probe_object_vtbl };

static LONG channel_patched;

static void patch_channel_vtbl(IRpcChannelBuffer *chan)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");
    void **vtbl = (void **)chan->lpVtbl;
    IRpcChannelBuffer *same = NULL;
    unsigned int i;
    DWORD old;

    if (InterlockedCompareExchange(&channel_patched, 0, 0)) return;
    /* Only Wine's own channel, all of whose methods live in combase, is touched. */
    if (!combase || !in_module(combase, vtbl, 8 * sizeof(void *)))
    {
        WARN("client channel vtable %p is not in combase; not patched\n", vtbl);
        InterlockedIncrement(&channel_refused);
        return;
    }
    for (i = 0; i < 8; i++)
    {
        if (!in_module(combase, vtbl[i], 1))
        {
            WARN("client channel method %u at %p is not in combase; not patched\n", i, vtbl[i]);
            InterlockedIncrement(&channel_refused);
            return;
        }
    }
    if (IRpcChannelBuffer_QueryInterface(chan, &IID_IRpcChannelBuffer, (void **)&same) != S_OK || same != chan)
    {
        if (same) IRpcChannelBuffer_Release(same);
        WARN("object %p does not behave as a channel; not patched\n", chan);
        InterlockedIncrement(&channel_refused);
        return;
    }
    IRpcChannelBuffer_Release(same);

    if (!VirtualProtect(&vtbl[4], 2 * sizeof(void *), PAGE_READWRITE, &old))
    {
        InterlockedIncrement(&channel_refused);
        return;
    }
    real_SendReceive = vtbl[4];
    real_FreeBuffer = vtbl[5];
    /* FreeBuffer first: it is ready for orphans before any can exist. */
    InterlockedExchangePointer(&vtbl[5], (void *)hook_FreeBuffer);
    InterlockedExchangePointer(&vtbl[4], (void *)hook_SendReceive);
    VirtualProtect(&vtbl[4], 2 * sizeof(void *), old, &old);
    InterlockedExchange(&channel_patched, 1);
    TRACE("client channel vtable %p patched\n", vtbl);
}

struct discovery
{
    IStream *stream;
};

static DWORD WINAPI discovery_sta_thread(void *arg)
{
    struct discovery *discovery = arg;
    IUnknown *proxy = NULL;
    DWORD cookie = 0;

    if (FAILED(CoInitializeEx(NULL, COINIT_APARTMENTTHREADED))) return 0;
    CoRegisterClassObject(&CLSID_CocancelProbePS, (IUnknown *)&probe_factory, CLSCTX_INPROC_SERVER,
                          REGCLS_MULTIPLEUSE, &cookie);
    CoRegisterPSClsid(&IID_ICocancelProbe, &CLSID_CocancelProbePS);
    if (SUCCEEDED(CoGetInterfaceAndReleaseStream(discovery->stream, &IID_ICocancelProbe, (void **)&proxy)))
        IUnknown_Release(proxy);
    if (cookie) CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

/*
 * Runs once per process on its own thread: marshals the probe object from an
 * MTA thread and unmarshals it in an STA thread, whose proxy is then
 * connected to a genuine client channel.
 */
static DWORD WINAPI discovery_thread(void *arg)
{
    struct discovery discovery = { NULL };
    DWORD cookie = 0;
    HANDLE sta;

    if (SUCCEEDED(CoInitializeEx(NULL, COINIT_MULTITHREADED)))
    {
        CoRegisterClassObject(&CLSID_CocancelProbePS, (IUnknown *)&probe_factory, CLSCTX_INPROC_SERVER,
                              REGCLS_MULTIPLEUSE, &cookie);
        CoRegisterPSClsid(&IID_ICocancelProbe, &CLSID_CocancelProbePS);
        if (SUCCEEDED(CoMarshalInterThreadInterfaceInStream(&IID_ICocancelProbe, &probe_object, &discovery.stream)))
        {
            if ((sta = CreateThread(NULL, 0, discovery_sta_thread, &discovery, 0, NULL)))
            {
                if (WaitForSingleObject(sta, 30000)) ERR("channel discovery did not finish\n");
                CloseHandle(sta);
            }
        }
        if (cookie) CoRevokeClassObject(cookie);
        CoUninitialize();
    }
    if (!channel_patched) WARN("the client channel was not found: calls are not cancellable\n");
    SetEvent(discovery_done);
    return 0;
}

static void start_discovery(void)
{
    HANDLE thread;

    if (InterlockedCompareExchange(&discovery_started, 1, 0)) return;
    if ((thread = CreateThread(NULL, 0, discovery_thread, NULL, 0, NULL))) CloseHandle(thread);
    else SetEvent(discovery_done);
}

/* A program of its own (not one of Wine's system processes) gets the hook at start-up. */
static BOOL user_program(void)
{
    WCHAR exe[MAX_PATH], system[MAX_PATH];
    UINT len = GetSystemDirectoryW(system, MAX_PATH);

    if (!len || len >= MAX_PATH || !GetModuleFileNameW(NULL, exe, MAX_PATH)) return FALSE;
    return _wcsnicmp(exe, system, len) || exe[len] != '\\';
}

void channel_get_status(struct cocancel_status *status)
{
    if (channel_patched) status->routes |= COCANCEL_ROUTE_CHANNEL;
    status->refused_patches += channel_refused;
}

BOOL channel_wait_ready(DWORD timeout)
{
    start_discovery();
    WaitForSingleObject(discovery_done, timeout);
    return channel_patched;
}

void channel_init(void)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");

    if (!combase) return;
    p_CoRegisterChannelHook = (void *)GetProcAddress(combase, "CoRegisterChannelHook");
    p_CoSwitchCallContext = (void *)GetProcAddress(combase, "CoSwitchCallContext");
    p_CoGetApartmentType = (void *)GetProcAddress(combase, "CoGetApartmentType");
    pending_call_tls = TlsAlloc();
    transport_tls = TlsAlloc();
    InitializeCriticalSection(&transport_cs);
    server_call_tls = TlsAlloc();
    next_sequence = GetTickCount() & 0xffffff;
    InitializeSListHead(&work_queue);
    InitializeCriticalSection(&orphan_cs);
    discovery_done = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!p_CoRegisterChannelHook || pending_call_tls == TLS_OUT_OF_INDEXES || !discovery_done)
    {
        ERR("cannot set up call interception\n");
        return;
    }
    if (FAILED(p_CoRegisterChannelHook(&cocancel_extension, &channel_hook)))
    {
        ERR("CoRegisterChannelHook failed\n");
        return;
    }
    hook_transport(combase);
    /* The thread starts running once the loader has finished attaching DLLs. */
    if (user_program()) start_discovery();
}
