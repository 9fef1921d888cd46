/*
 * The RPC transport under Wine's channel.
 *
 * Owns what the engine knows of calls that go through rpcrt4 (calls to
 * other processes, and into the MTA): whether the request being built does
 * (Wine's GetBuffer asks rpcrt4 for the buffer only then), which pool thread
 * carries a watched call while it waits in I_RpcSendReceive, and aborting it
 * there with RpcCancelThread when the call is cancelled.  Wine then finishes
 * the call itself, with an error, and closes that connection, so the next
 * call on the proxy gets a connection (and reply) of its own.  Also owns the
 * one wait of RpcServerUnregisterIf that must not happen (see below).
 */

#include "cocancel_private.h"

static DWORD transport_tls = TLS_OUT_OF_INDEXES;     /* the call being built goes through rpcrt4 */
static DWORD thread_handle_tls = TLS_OUT_OF_INDEXES; /* this thread's handle for RpcCancelThread */

/* Wine's rpcrt4 takes one argument here, where the SDK declares two. */
static RPC_STATUS (WINAPI *pI_RpcReceive)(RPC_MESSAGE *);

/* A new request is being built on this thread (the channel hook's ClientGetSize). */
void transport_new_request(void)
{
    TlsSetValue(transport_tls, NULL);
}

/* Did the request being built on this thread ask rpcrt4 for its buffer? */
BOOL transport_request_uses_rpc(void)
{
    return TlsGetValue(transport_tls) != NULL;
}


/*
 * Wine's GetBuffer asks rpcrt4 for the buffer only when the call will go
 * through the RPC runtime (it allocates one itself for a call posted to an
 * STA of this process).  Noting that lets an MTA caller keep its call on
 * its own thread, aborting it in the transport on cancel, instead of
 * handing it to an engine thread.
 */
RPC_STATUS WINAPI transport_I_RpcGetBuffer(RPC_MESSAGE *msg)
{
    TlsSetValue(transport_tls, (void *)1);
    return wine_real.I_RpcGetBuffer(msg);
}
static CRITICAL_SECTION transport_cs;
static struct transport_call *transport_calls;
static LONG transport_count;

/*
 * Aborting a call makes Wine destroy that call's connection.  If it was the
 * last connection of its association, the server forgets the association
 * group, while the client's association keeps its id and offers it in every
 * later bind: the server rejects them all, and the proxy answers
 * RPC_S_CALL_FAILED_DNE for good (rpcrt4 destroys a server association
 * with its last connection; found by syncstress, STA client and MTA
 * server).  So before a watched call is sent, one more connection of the
 * same binding is taken and handed straight back to the association's idle
 * pool: as long as the aborted call runs there is another connection that
 * no cancel destroys.  Once two connections exist this only takes one from
 * the pool and puts it back.
 */
static void keep_spare_connection(const RPC_MESSAGE *msg)
{
    RPC_MESSAGE spare;
    RPC_STATUS status;

    memset(&spare, 0, sizeof(spare));
    spare.Handle = msg->Handle;
    spare.DataRepresentation = msg->DataRepresentation;
    spare.RpcInterfaceInformation = msg->RpcInterfaceInformation;
    spare.ProcNum = msg->ProcNum;
    spare.RpcFlags = msg->RpcFlags & ~RPC_BUFFER_ASYNC;
    if ((status = wine_real.I_RpcGetBuffer(&spare)))
    {
        TRACE("no spare connection for the watched call %p: %ld\n", msg, (long)status);
        return;
    }
    I_RpcFreeBuffer(&spare);
}

/*
 * A watched call is sent and received in two steps, as rpcrt4's own
 * I_RpcSendReceive does it (I_RpcSend, I_RpcReceive, and on success the
 * request buffer freed), so that aborts reach only the wait for the reply.
 * An abort that lands in I_RpcSend fails the write, and rpcrt4 then retries
 * on another connection of the association, binding a new one when the
 * pool is empty; the next abort then fails that bind, which leaves the
 * association counting a connection it does not have and offering an
 * association group the server has dropped: every later call of the proxy
 * failed with RPC_S_CALL_FAILED_DNE (syncstress, STA client and MTA
 * server, about one run in ten).  I_RpcReceive only reads, and on failure
 * closes its connection.
 */
static RPC_STATUS watched_send_receive(struct transport_call *call, RPC_MESSAGE *msg)
{
    void *request = msg->Buffer;
    RPC_STATUS status;

    if (!pI_RpcReceive) return wine_real.I_RpcSendReceive(msg);
    if ((status = I_RpcSend(msg))) return status;
    EnterCriticalSection(&transport_cs);
    call->receiving = TRUE;
    LeaveCriticalSection(&transport_cs);
    if (!(status = pI_RpcReceive(msg))) I_RpcFree(request);
    return status;
}

/*
 * A handle of the calling thread that RpcCancelThread can be given from
 * another thread, made once per thread and closed when it ends: made and
 * closed per call, it cost every watched call two round trips to the
 * wineserver, some 5-10% of a call to another process (P4).
 */
static HANDLE own_thread_handle(void)
{
    HANDLE thread;

    if (thread_handle_tls == TLS_OUT_OF_INDEXES) return NULL;
    if ((thread = TlsGetValue(thread_handle_tls))) return thread;
    if (!DuplicateHandle(GetCurrentProcess(), GetCurrentThread(), GetCurrentProcess(), &thread, THREAD_ALL_ACCESS,
                         FALSE, 0))
        return NULL;
    TlsSetValue(thread_handle_tls, thread);
    return thread;
}

void transport_thread_detach(void)
{
    HANDLE thread;

    if (thread_handle_tls == TLS_OUT_OF_INDEXES || !(thread = TlsGetValue(thread_handle_tls))) return;
    TlsSetValue(thread_handle_tls, NULL);
    CloseHandle(thread);
}

RPC_STATUS WINAPI transport_I_RpcSendReceive(RPC_MESSAGE *msg)
{
    struct transport_call *call = NULL;
    HANDLE thread = NULL;
    RPC_STATUS status;

    if (InterlockedCompareExchange(&transport_count, 0, 0))
    {
        EnterCriticalSection(&transport_cs);
        for (call = transport_calls; call; call = call->next)
            if ((RPC_MESSAGE *)call->msg == msg && !call->entered) break;
        LeaveCriticalSection(&transport_cs);
        /* Before the call is marked as entered, so that no abort reaches
         * the spare connection's bind: a failed bind leaves rpcrt4's count
         * of the association's connections one short, and the association
         * then keeps an id the server has dropped. */
        if (call && wine_real.I_RpcGetBuffer) keep_spare_connection(msg);
        EnterCriticalSection(&transport_cs);
        if (call && (thread = own_thread_handle()))
        {
            call->thread = thread;
            call->entered = TRUE;
        }
        else call = NULL;
        LeaveCriticalSection(&transport_cs);
    }
    if (!call) return wine_real.I_RpcSendReceive(msg);
    status = watched_send_receive(call, msg);
    EnterCriticalSection(&transport_cs);
    call->thread = NULL;
    call->receiving = FALSE;
    call->left = TRUE;
    LeaveCriticalSection(&transport_cs);
    return status;
}

void transport_watch(struct transport_call *call, RPCOLEMESSAGE *msg, ULONGLONG call_id)
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

void transport_unwatch(struct transport_call *call)
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
 * One attempt to abort the transport call of call_id (attempt counts from
 * 0, about one a millisecond): TRUE while it may still need one.  A
 * cancel that reaches the pool thread before it waits for the reply is
 * lost, so it is repeated until the transport call ends (or about 2 s pass:
 * the call then ends when the server replies, as a cooperative cancel).  A
 * call that has not entered the transport within about 50 attempts never
 * will: it was posted to an STA in this process, and ends when that STA has
 * run it.
 */
static BOOL abort_attempt(ULONGLONG call_id, unsigned int attempt)
{
    struct transport_call *call;
    BOOL pending = FALSE;

    EnterCriticalSection(&transport_cs);
    for (call = transport_calls; call; call = call->next)
        if (call->call_id == call_id) break;
    if (call && !call->left && (call->entered || attempt < 50))
    {
        pending = TRUE;
        if (call->thread && call->receiving) RpcCancelThread(call->thread);
    }
    LeaveCriticalSection(&transport_cs);
    return pending;
}

struct abort_job
{
    ULONGLONG call_id;
    unsigned int attempt;
};

static void CALLBACK repeat_abort(PTP_CALLBACK_INSTANCE instance, void *arg)
{
    struct abort_job *job = arg;
    unsigned int attempt;

    for (attempt = job->attempt + 1; attempt < 2000 && abort_attempt(job->call_id, attempt); attempt++) Sleep(1);
    HeapFree(GetProcessHeap(), 0, job);
}

/*
 * Called by the cancel object of a call: one attempt here, and the rest
 * from the thread pool, so that CoCancelCall returns at once.  (An earlier
 * version waited here for up to 40 ms: the caller going on while an
 * aborted call was still in the transport used to break the proxy for good;
 * keep_spare_connection() is the cure for that.)
 */
void transport_abort(ULONGLONG call_id)
{
    struct abort_job *job;

    if (!call_id || !(winepatch_applied() & WINEPATCH_TRANSPORT)) return;
    if (!abort_attempt(call_id, 0)) return;
    if ((job = HeapAlloc(GetProcessHeap(), 0, sizeof(*job))))
    {
        job->call_id = call_id;
        job->attempt = 0;
        if (TrySubmitThreadpoolCallback(repeat_abort, job, NULL)) return;
        HeapFree(GetProcessHeap(), 0, job);
    }
    WARN("no pool thread to repeat the abort of call %llx\n", (unsigned long long)call_id);
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
RPC_STATUS WINAPI transport_RpcServerUnregisterIf(RPC_IF_HANDLE spec, UUID *type, UINT wait)
{
    if (wait && I_RpcGetCurrentCallHandle())
    {
        TRACE("interface %p unregistered while this thread dispatches a call: not waiting for calls\n", spec);
        wait = FALSE;
    }
    return wine_real.RpcServerUnregisterIf(spec, type, wait);
}

void transport_init(void)
{
    pI_RpcReceive = (void *)GetProcAddress(GetModuleHandleW(L"rpcrt4.dll"), "I_RpcReceive");
    transport_tls = TlsAlloc();
    thread_handle_tls = TlsAlloc();
    InitializeCriticalSection(&transport_cs);
}
