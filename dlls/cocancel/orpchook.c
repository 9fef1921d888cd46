/*
 * The ORPC channel hook: call ids on the client, call contexts on the server.
 *
 * Owns the engine's IChannelHook (CoRegisterChannelHook, a public mechanism
 * Wine implements).  On the client it tags every request with a call id
 * (client pid << 32 | sequence) in an ORPC extension, and keeps the id for
 * the channel's GetBuffer that is filling the request (orpchook_take_call_id;
 * synccall.c notes it with the message).
 * On the server it installs, for the duration of each tagged method, a call
 * context answering ICancelMethodCalls, so that CoGetCallContext and
 * CoTestCancel work there; its TestCancel looks the id up in the client's
 * cancel ring (cancelring.c).  A call context ends when the reply is
 * marshaled (ServerGetSize), or, for a call Wine ends without a reply (the
 * message filter rejected it, the method faulted), where combase's dispatch
 * ends (orpchook_SetEvent, orpchook_RpcRaiseException).
 */

#include "cocancel_private.h"

/* The ORPC extension that carries the call id. */
static const GUID cocancel_extension = {0x6a0c3c4e, 0x2f57, 0x4b0e, {0x8d, 0x41, 0x5e, 0x1b, 0x90, 0x7a, 0x33, 0xc2}};

#define EXTENSION_MAGIC 0x4e414343  /* "CCAN" */

struct call_extension
{
    DWORD magic;
    DWORD version;
    ULONGLONG call_id;   /* client pid << 32 | sequence */
};

static HRESULT (WINAPI *p_CoRegisterChannelHook)(REFGUID, IChannelHook *);
static HRESULT (WINAPI *p_CoSwitchCallContext)(IUnknown *, IUnknown **);

static DWORD pending_call_tls = TLS_OUT_OF_INDEXES;  /* call id set by ClientFillBuffer */
static DWORD server_call_tls = TLS_OUT_OF_INDEXES;   /* innermost server call context */
static LONG next_sequence;
/* Told of each request filled on this thread (the asynchronous-call engine). */
static void (*request_filled)(REFIID riid);

/* ---------------------------------------------------------------------
 * The server side: a call context for the duration of each method.
 */

/* The base of the stack running now: the thread's, or a fiber's (the TEB follows SwitchToFiber). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
static void * __attribute__((noinline)) current_stack(void)
{
    return ((NT_TIB *)NtCurrentTeb())->StackBase;
}
#pragma GCC diagnostic pop

struct server_call
{
    ICancelMethodCalls ICancelMethodCalls_iface;
    LONG refcount;
    ULONGLONG call_id;
    LONG cancelled;              /* cancelled by the server itself */
    BOOL no_ring;                /* the client has no cancel ring: nothing to look up */
    IUnknown *previous;          /* the call context it replaced */
    struct server_call *outer;   /* the enclosing call on this thread */
    void *stack;                 /* the stack (thread's or fiber's) and frame of its ServerNotify */
    const void *frame;
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

    int found;

    if (call->cancelled) return RPC_E_CALL_CANCELED;
    if (call->no_ring) return RPC_S_CALLPENDING;
    if ((found = cancelring_cancelled(call->call_id)) > 0) return RPC_E_CALL_CANCELED;
    /* The client never made a call that can be cancelled: this one cannot be. */
    if (found < 0) call->no_ring = TRUE;
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

static ULONGLONG make_call_id(DWORD sequence)
{
    return ((ULONGLONG)GetCurrentProcessId() << 32) | sequence;
}

static HRESULT WINAPI orpc_QueryInterface(IChannelHook *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IChannelHook))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI orpc_AddRef(IChannelHook *iface)
{
    return 2;   /* a static object */
}

static ULONG WINAPI orpc_Release(IChannelHook *iface)
{
    return 1;
}

static void WINAPI orpc_ClientGetSize(IChannelHook *iface, REFGUID extension, REFIID riid, ULONG *size)
{
    *size = sizeof(struct call_extension);
    /* A new request: transport.c notes below whether it goes to the RPC runtime. */
    transport_new_request();
    /* The first proxied call of the process finds the channel, and is intercepted. */
    discovery_before_call();
}

static void WINAPI orpc_ClientFillBuffer(IChannelHook *iface, REFGUID extension, REFIID riid,
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
    /* Picked up by the GetBuffer this is part of, on return (synccall.c). */
    TlsSetValue(pending_call_tls, (void *)(ULONG_PTR)sequence);
    if (request_filled) request_filled(riid);
}

static void WINAPI orpc_ClientNotify(IChannelHook *iface, REFGUID extension, REFIID riid, ULONG size,
                                     void *buffer, DWORD data_rep, HRESULT fault)
{
}

static void WINAPI orpc_ServerNotify(IChannelHook *iface, REFGUID extension, REFIID riid, ULONG size,
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
    call->no_ring = FALSE;
    call->previous = NULL;
    /* Runs on the thread that invokes the method, right before it. */
    if (FAILED(p_CoSwitchCallContext((IUnknown *)&call->ICancelMethodCalls_iface, &call->previous)))
    {
        HeapFree(GetProcessHeap(), 0, call);
        return;
    }
    call->outer = TlsGetValue(server_call_tls);
    call->stack = current_stack();
    call->frame = __builtin_frame_address(0);
    TlsSetValue(server_call_tls, call);
    TRACE("server call %llx begins\n", (unsigned long long)call->call_id);
}

/* The innermost server call of this thread (a reference), and its call id; NULL when there is none. */
ICancelMethodCalls *orpchook_server_call(ULONGLONG *call_id)
{
    struct server_call *call;

    if (server_call_tls == TLS_OUT_OF_INDEXES || !(call = TlsGetValue(server_call_tls))) return NULL;
    *call_id = call->call_id;
    ICancelMethodCalls_AddRef(&call->ICancelMethodCalls_iface);
    return &call->ICancelMethodCalls_iface;
}

/* Puts back the call context the innermost call replaced. */
static void end_server_call(struct server_call *call)
{
    IUnknown *current;

    TlsSetValue(server_call_tls, call->outer);
    p_CoSwitchCallContext(call->previous, &current);
    TRACE("server call %llx ends\n", (unsigned long long)call->call_id);
    ICancelMethodCalls_Release(&call->ICancelMethodCalls_iface);
}

static void WINAPI orpc_ServerGetSize(IChannelHook *iface, REFGUID extension, REFIID riid, HRESULT fault,
                                      ULONG *size)
{
    struct server_call *call = TlsGetValue(server_call_tls);

    *size = 0;
    /* The reply is being marshaled: the method has returned. */
    if (call) end_server_call(call);
}

/*
 * combase's dispatch of an incoming call ends here when it sends no reply.
 * 'frame' is a frame called by the dispatch itself: the calls this thread
 * began there or deeper on the same stack are over (Wine 8.0 calls the
 * hooks' ServerNotify straight from the dispatch, at the very same depth);
 * those of enclosing dispatches, still running, began higher up; on another
 * fiber's stack nothing is decided.
 */
static void end_finished_calls(const void *frame)
{
    void *stack = current_stack();
    struct server_call *call;

    while ((call = TlsGetValue(server_call_tls)) && call->stack == stack &&
           (ULONG_PTR)call->frame <= (ULONG_PTR)frame)
    {
        TRACE("server call %llx ended without a reply\n", (unsigned long long)call->call_id);
        end_server_call(call);
    }
}

/* combase's SetEvent: an STA's dispatch ends by waking its RPC thread. */
BOOL WINAPI orpchook_SetEvent(HANDLE event)
{
    DWORD error = GetLastError();

    if (TlsGetValue(server_call_tls)) end_finished_calls(__builtin_frame_address(0));
    SetLastError(error);
    return wine_real.SetEvent(event);
}

/* combase's RpcRaiseException: an MTA's dispatch ends by raising the failure. */
void WINAPI orpchook_RpcRaiseException(RPC_STATUS status)
{
    if (TlsGetValue(server_call_tls)) end_finished_calls(__builtin_frame_address(0));
    wine_real.RpcRaiseException(status);
}

static void WINAPI orpc_ServerFillBuffer(IChannelHook *iface, REFGUID extension, REFIID riid, ULONG *size,
                                         void *buffer, HRESULT fault)
{
    *size = 0;
}

static const IChannelHookVtbl orpc_hook_vtbl =
{
    orpc_QueryInterface,
    orpc_AddRef,
    orpc_Release,
    orpc_ClientGetSize,
    orpc_ClientFillBuffer,
    orpc_ClientNotify,
    orpc_ServerNotify,
    orpc_ServerGetSize,
    orpc_ServerFillBuffer,
};

static IChannelHook channel_hook = { &orpc_hook_vtbl };

/* The call id of the request last filled on this thread (0: none), taken once. */
ULONGLONG orpchook_take_call_id(void)
{
    DWORD sequence = (DWORD)(ULONG_PTR)TlsGetValue(pending_call_tls);

    if (!sequence) return 0;
    TlsSetValue(pending_call_tls, NULL);
    return make_call_id(sequence);
}

BOOL orpchook_init(void (*on_request_filled)(REFIID riid))
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");

    if (!combase) return FALSE;
    p_CoRegisterChannelHook = (void *)GetProcAddress(combase, "CoRegisterChannelHook");
    p_CoSwitchCallContext = (void *)GetProcAddress(combase, "CoSwitchCallContext");
    pending_call_tls = TlsAlloc();
    server_call_tls = TlsAlloc();
    next_sequence = GetTickCount() & 0xffffff;
    request_filled = on_request_filled;
    if (!p_CoRegisterChannelHook || pending_call_tls == TLS_OUT_OF_INDEXES || server_call_tls == TLS_OUT_OF_INDEXES)
    {
        ERR("cannot set up call interception\n");
        return FALSE;
    }
    if (FAILED(p_CoRegisterChannelHook(&cocancel_extension, &channel_hook)))
    {
        ERR("CoRegisterChannelHook failed\n");
        return FALSE;
    }
    return TRUE;
}
