/*
 * The synchronous call policy: how a proxied call runs so that it can be
 * cancelled.
 *
 * Owns the replacements of the client channel's GetBuffer, SendReceive and
 * FreeBuffer (winepatch.c applies them).  GetBuffer notes, for each request,
 * what the channel hook and the transport learned while Wine built it (its
 * call id, whether it goes through rpcrt4), and SendReceive takes the note
 * of its own message: a call made between the two on the same thread (Wine's
 * marshaling of a proxy argument calls IRemUnknown::RemAddRef there) has a
 * note of its own.  Every proxied call gets a cancel object on the
 * calling thread's stack for its duration (CoGetCancelObject / CoCancelCall
 * find it).  Then:
 *
 *  - the request of an asynchronous call goes to the call-object engine
 *    (the route main.c hands to synccall_init);
 *  - a call that can be cancelled (cancellation enabled, or an STA caller
 *    whose message filter may cancel it) runs Wine's real SendReceive on a
 *    worker fiber of the caller's own thread, over a heap copy of the
 *    message (runner_run_task); while Wine waits for the reply, the thread
 *    waits for the reply and for the call's cancel.  A cancel releases the
 *    caller at once; the fiber stays parked until the reply comes and is
 *    finished by its thread later (runner.c).  The call keeps the caller's
 *    apartment, which is what lets an STA caller be released from a call
 *    into an STA of its own process, and costs no thread switch;
 *  - failing a fiber, an MTA caller's call runs on an engine thread instead;
 *  - otherwise the call runs as Wine runs it, and a cancel can only abort it
 *    in the RPC transport (transport.c) or mark its reply as not delivered.
 *
 * A call made away from the caller's stack checks, when it completes, the
 * fact that path stands on: Wine's SendReceive worked on the message it was
 * given, the copy (the caller's own is as the proxy left it).  If it does
 * not hold, once, the engine stops making calls cancellable in the process:
 * every later call runs as Wine runs it, and CoCancelCall answers
 * CO_E_CANCEL_DISABLED for it.  (That the reply wait goes through combase's
 * imports cannot be checked the same way: Wine takes a reply that is
 * already there without waiting at all.)
 *
 * A call in the RPC transport is also aborted there on cancel.  A caller
 * released while Wine's state of its call (or its reply) still belongs to
 * the fiber or engine thread leaves an abandoned record: the proxy's
 * FreeBuffer of the caller's message is skipped, and the record's own
 * message is freed when the call really ends.
 */

#include "cocancel_private.h"

static HRESULT (WINAPI *p_CoGetApartmentType)(APTTYPE *, APTTYPEQUALIFIER *);
/* The request of an asynchronous call, if it is one (main.c: asynccall.c). */
static BOOL (*async_route)(IRpcChannelBuffer *, RPCOLEMESSAGE *, ULONG *, ULONGLONG, HRESULT *);

/* A synchronous call made away from the caller's stack: on a fiber or an engine thread. */
struct sync_call
{
    struct thread_job job;          /* in the engine threads' queue */
    LONG refcount;                  /* the caller (or the abandoned list) and the maker */
    IRpcChannelBuffer *chan;
    RPCOLEMESSAGE msg;              /* the copy Wine's SendReceive works on */
    RPCOLEMESSAGE request;          /* the caller's message as it was when the call was made */
    RPCOLEMESSAGE *sent;            /* the message given to Wine: &msg (another only under a test knob) */
    ULONG status;
    HRESULT hr;
    ICancelMethodCalls *cancel;
    ULONGLONG call_id;
    BOOL transport;                 /* the call goes through rpcrt4: a cancel also aborts it there */
    struct transport_call watch;    /* ... found there by this */
    RPCOLEMESSAGE *caller_msg;      /* while abandoned: the caller's message, whose FreeBuffer is skipped */
    void *caller_state;
    BOOL abandoned;
    struct sync_call *next_abandoned;
};

/*
 * A proxied call in progress on the caller's stack, and what it holds that
 * must be given back if an exception unwinds it: code that runs while the
 * caller waits (a message filter's MessagePending) may raise one, and the
 * caller's handler (or the proxy's) is outside the engine's frames.
 */
struct sending
{
    IRpcChannelBuffer *chan;
    RPCOLEMESSAGE *msg;
    ULONG *status;
    ICancelMethodCalls *cancel;
    ULONGLONG call_id;
    BOOL transport, cancellable;
    BOOL refused;                   /* synccall_refused() when the call began */
    HRESULT hr;
    /* Held now: */
    struct filter_wrapper *wrapper;
    struct sync_call *call;         /* made on a fiber, not ended yet */
    struct run *waiting;            /* ... its run, while the thread waits in its place */
    struct transport_call *watch;   /* made inline, watched in the transport */
};

/* What was noted of the requests built on this thread and not sent yet, by Wine's state of each message. */
struct request_note
{
    void *state;                    /* msg->reserved1, Wine's message state */
    ULONGLONG call_id;
    BOOL transport;
};

#define MAX_NOTES 8

struct request_notes
{
    unsigned int count;
    struct request_note note[MAX_NOTES];
};

static DWORD notes_tls = TLS_OUT_OF_INDEXES;

/* A call showed that a fact the engine relies on does not hold here: no call is made cancellable any more. */
static LONG calls_refused;

/*
 * COCANCEL_TEST_BREAK=message (a test knob, documented in the README) makes
 * the engine act as if Wine's SendReceive worked on a message other than the
 * one it is given: it gives Wine the caller's message instead of the copy.
 */
#define BREAK_MESSAGE 0x1
static DWORD test_break;

BOOL synccall_refused(void)
{
    return InterlockedCompareExchange(&calls_refused, 0, 0) != 0;
}

static void refuse_calls(const char *why)
{
    if (!InterlockedExchange(&calls_refused, 1))
        WARN("%s: proxied calls are not cancellable in this process from now on\n", why);
}

static CRITICAL_SECTION abandoned_cs;
static struct sync_call *abandoned_calls;
static LONG abandoned_count;

static void sync_call_release(struct sync_call *call)
{
    if (InterlockedDecrement(&call->refcount)) return;
    /* Last reference of an abandoned call: Wine's reply and per-call state go now. */
    if (call->abandoned) wine_real.FreeBuffer(call->chan, &call->msg);
    IRpcChannelBuffer_Release(call->chan);
    ICancelMethodCalls_Release(call->cancel);
    _aligned_free(call);
}

/* Makes the call on the record's copy of the message, on an engine thread or a fiber. */
static void make_call(void *arg)
{
    struct sync_call *call = arg;

    if (call->transport) transport_watch(&call->watch, &call->msg, call->call_id);
    call->hr = wine_real.SendReceive(call->chan, call->sent, &call->status);
    if (call->transport) transport_unwatch(&call->watch);
    if (cancelobj_complete(call->cancel) != S_OK)
        TRACE("call %p completed after it was cancelled: %#lx\n", call, call->hr);
    sync_call_release(call);
}

static void make_call_job(struct thread_job *job)
{
    make_call(CONTAINING_RECORD(job, struct sync_call, job));
}

/*
 * The caller of a cancelled call is released while Wine's state of the call
 * (or its reply) is still the maker's: the FreeBuffer that the proxy is
 * about to make for the caller's message must not touch it, and is deferred
 * to the last release of the record.
 */
static HRESULT abandon_call(struct sync_call *call, RPCOLEMESSAGE *msg, ULONG *status)
{
    call->caller_msg = msg;
    call->caller_state = msg->reserved1;
    call->abandoned = TRUE;
    EnterCriticalSection(&abandoned_cs);
    call->next_abandoned = abandoned_calls;
    abandoned_calls = call;
    InterlockedIncrement(&abandoned_count);
    LeaveCriticalSection(&abandoned_cs);
    if (status) *status = RPC_S_CALL_CANCELLED;
    return RPC_E_CALL_CANCELED;
}

/* A record for a call made elsewhere than the caller's stack: the caller's and the maker's reference. */
static struct sync_call *new_call(IRpcChannelBuffer *chan, const RPCOLEMESSAGE *msg, ICancelMethodCalls *cancel,
                                  ULONGLONG call_id, BOOL transport)
{
    struct sync_call *call;

    if (!(call = _aligned_malloc(sizeof(*call), MEMORY_ALLOCATION_ALIGNMENT))) return NULL;
    memset(call, 0, sizeof(*call));
    call->job.run = make_call_job;
    call->refcount = 2;
    call->chan = chan;
    IRpcChannelBuffer_AddRef(chan);
    call->msg = *msg;
    call->request = *msg;
    call->sent = test_break & BREAK_MESSAGE ? (RPCOLEMESSAGE *)msg : &call->msg;
    call->cancel = cancel;
    ICancelMethodCalls_AddRef(cancel);
    call->call_id = call_id;
    call->transport = transport;
    return call;
}

/* A record whose call was never made. */
static void discard_call(struct sync_call *call)
{
    IRpcChannelBuffer_Release(call->chan);
    ICancelMethodCalls_Release(call->cancel);
    _aligned_free(call);
}

/* The caller's side once the call is complete or cancelled: the reply, or the abandoned record. */
static HRESULT end_call(struct sync_call *call, RPCOLEMESSAGE *msg, ULONG *status)
{
    HRESULT hr;

    if (cancelobj_state(call->cancel) != CC_COMPLETE) return abandon_call(call, msg, status);
    if (memcmp(msg, &call->request, sizeof(*msg)))
    {
        /* Wine's state of the call is in the caller's message, the copy is stale: keep the former. */
        refuse_calls("Wine's SendReceive changed a message other than the one it was given");
        if (status) *status = call->status;
        hr = call->hr;
        sync_call_release(call);
        return hr;
    }
    *msg = call->msg;
    if (status) *status = call->status;
    hr = call->hr;
    sync_call_release(call);
    return hr;
}

/* On an engine thread (the thread never initialises COM, so it runs in the MTA). */
static HRESULT send_receive_detached(struct sending *sending)
{
    struct sync_call *call;

    if (!(call = new_call(sending->chan, sending->msg, sending->cancel, sending->call_id, sending->transport)))
        return wine_real.SendReceive(sending->chan, sending->msg, sending->status);
    if (!runner_submit_job(&call->job))
    {
        discard_call(call);
        return wine_real.SendReceive(sending->chan, sending->msg, sending->status);
    }
    cancelobj_wait(sending->cancel);
    return end_call(call, sending->msg, sending->status);
}

/* On a worker fiber of this thread; FALSE when the call cannot run on a fiber here (nothing was sent). */
static BOOL send_receive_fiber(struct sending *sending)
{
    struct sync_call *call;
    HANDLE cancelled;

    if (!(cancelled = cancelobj_cancelled_event(sending->cancel))) return FALSE;
    if (!(call = new_call(sending->chan, sending->msg, sending->cancel, sending->call_id, sending->transport)))
        return FALSE;
    sending->call = call;
    /* Released, the caller wakes nobody: the cancel's later work is followed by the registrar's (cancelobj.c). */
    if (runner_run_task(make_call, call, cancelled, TRUE, &sending->waiting) == E_NOTIMPL)
    {
        sending->call = NULL;
        discard_call(call);
        return FALSE;
    }
    sending->call = NULL;
    /* Left parked (S_FALSE): cancelled, and the reply, when it comes, is not delivered. */
    sending->hr = end_call(call, sending->msg, sending->status);
    return TRUE;
}

/* On the caller's stack, as Wine makes it; a cancel can abort it in the transport. */
static HRESULT send_receive_inline(struct sending *sending, BOOL watched)
{
    struct transport_call transport_call;
    HRESULT hr;

    if (watched)
    {
        transport_watch(&transport_call, sending->msg, sending->call_id);
        sending->watch = &transport_call;
    }
    hr = wine_real.SendReceive(sending->chan, sending->msg, sending->status);
    if (watched)
    {
        sending->watch = NULL;
        transport_unwatch(&transport_call);
    }
    /* Cancelled while it ran: whatever came back is not delivered (the
     * proxy's FreeBuffer releases it as for any failed call). */
    if (cancelobj_complete(sending->cancel) == RPC_E_CALL_CANCELED) hr = RPC_E_CALL_CANCELED;
    return hr;
}

static BOOL caller_in_mta(void)
{
    APTTYPEQUALIFIER qualifier;
    APTTYPE type;

    if (!p_CoGetApartmentType || FAILED(p_CoGetApartmentType(&type, &qualifier))) return FALSE;
    return type == APTTYPE_MTA;
}

/* Where the call runs, by what can cancel it (sending->hr is its result). */
static void send_receive_cancellable(void *arg)
{
    struct sending *sending = arg;
    BOOL mta = caller_in_mta(), cancellable = sending->cancellable, transport = sending->transport, wrapped;

    sending->wrapper = mta || sending->refused ? NULL : msgfilter_wrap(sending->cancel);
    wrapped = sending->wrapper != NULL;
    /* The server looks for the ring of a call that can be cancelled: it exists before the call goes. */
    if (cancellable || wrapped) cancelring_prepare();
    if (cancellable) runner_expect_abandon();
    /*
     * A call that only the message filter can cancel, and that goes through
     * rpcrt4, runs as Wine runs it, on the caller's stack: the filter's
     * PENDINGMSG_CANCELCALL aborts it in the transport, which ends Wine's
     * wait.  (Every MFC program has a filter; most of its calls never see
     * a cancel.)  A call posted to an STA of this process has no transport
     * to abort, and keeps the fiber.
     */
    if (wrapped && !cancellable && transport)
        sending->hr = send_receive_inline(sending, TRUE);
    else if ((cancellable || wrapped) && send_receive_fiber(sending))
        TRACE("call %llx made on a fiber: %#lx\n", (unsigned long long)sending->call_id, sending->hr);
    else if (cancellable && mta)
        sending->hr = send_receive_detached(sending);
    else
        sending->hr = send_receive_inline(sending, cancellable || wrapped);
    if (wrapped) msgfilter_unwrap(sending->wrapper);
    sending->wrapper = NULL;
}

/* An exception unwinds a call in progress: the call is abandoned as a cancelled one would be. */
static void unwind_sending(void *arg)
{
    struct sending *sending = arg;

    WARN("an exception leaves call %llx: its caller is gone\n", (unsigned long long)sending->call_id);
    if (sending->waiting) runner_abandon(sending->waiting);
    if (sending->call) abandon_call(sending->call, sending->msg, sending->status);
    if (sending->watch) transport_unwatch(sending->watch);
    if (sending->wrapper) msgfilter_unwrap(sending->wrapper);
    cancelobj_pop(sending->cancel);
    ICancelMethodCalls_Release(sending->cancel);
}

HRESULT WINAPI synccall_GetBuffer(IRpcChannelBuffer *iface, RPCOLEMESSAGE *msg, REFIID riid)
{
    HRESULT hr = wine_real.GetBuffer(iface, msg, riid);
    DWORD error = GetLastError();
    ULONGLONG call_id = orpchook_take_call_id();
    struct request_notes *notes;

    if (SUCCEEDED(hr) && call_id)
    {
        if (!(notes = TlsGetValue(notes_tls)) &&
            (notes = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*notes))))
            TlsSetValue(notes_tls, notes);
        if (notes)
        {
            if (notes->count == MAX_NOTES)
            {
                WARN("more than %u requests built and not sent on this thread; the oldest is forgotten\n",
                     MAX_NOTES);
                memmove(notes->note, notes->note + 1, --notes->count * sizeof(notes->note[0]));
            }
            notes->note[notes->count].state = msg->reserved1;
            notes->note[notes->count].call_id = call_id;
            notes->note[notes->count].transport = transport_request_uses_rpc();
            notes->count++;
        }
    }
    SetLastError(error);
    return hr;
}

/* Takes the note GetBuffer made of msg, if there is one. */
static BOOL take_note(const RPCOLEMESSAGE *msg, struct request_note *found)
{
    struct request_notes *notes = TlsGetValue(notes_tls);
    unsigned int i;

    if (!notes) return FALSE;
    for (i = notes->count; i--;)
    {
        if (notes->note[i].state != msg->reserved1) continue;
        *found = notes->note[i];
        memmove(notes->note + i, notes->note + i + 1, (--notes->count - i) * sizeof(notes->note[0]));
        return TRUE;
    }
    return FALSE;
}

void synccall_thread_detach(void)
{
    if (notes_tls == TLS_OUT_OF_INDEXES) return;
    HeapFree(GetProcessHeap(), 0, TlsGetValue(notes_tls));
    TlsSetValue(notes_tls, NULL);
}

HRESULT WINAPI synccall_SendReceive(IRpcChannelBuffer *iface, RPCOLEMESSAGE *msg, ULONG *status)
{
    struct request_note note = { NULL, 0, FALSE };
    ICancelMethodCalls *cancel;
    ULONGLONG call_id;
    BOOL refused, cancellable;
    HRESULT hr;

    /* A request whose GetBuffer was not seen (made before the channel was
     * patched) goes with what this thread noted last. */
    if (!take_note(msg, &note))
    {
        note.call_id = orpchook_take_call_id();
        note.transport = transport_request_uses_rpc();
    }
    call_id = note.call_id;

    /* The request of an asynchronous call is the call engine's. */
    if (async_route && async_route(iface, msg, status, call_id, &hr)) return hr;
    /* Wine keeps the cancel objects of its calls itself. */
    if (apiroute_wine_has_api()) return wine_real.SendReceive(iface, msg, status);
    runner_reap();
    refused = synccall_refused();
    cancellable = !refused && cancelobj_enabled();
    if (FAILED(cancelobj_create(cancellable, call_id, &cancel))) return wine_real.SendReceive(iface, msg, status);
    if (FAILED(cancelobj_push(cancel)))
    {
        ICancelMethodCalls_Release(cancel);
        return wine_real.SendReceive(iface, msg, status);
    }
    {
        struct sending sending = { iface, msg, status, cancel, call_id, note.transport, cancellable, refused };
        struct unwind_guard guard = { unwind_sending, &sending };

        unwind_guarded(send_receive_cancellable, &sending, &guard);
        hr = sending.hr;
    }
    cancelobj_pop(cancel);
    ICancelMethodCalls_Release(cancel);
    return hr;
}

HRESULT WINAPI synccall_FreeBuffer(IRpcChannelBuffer *iface, RPCOLEMESSAGE *msg)
{
    struct sync_call *call = NULL, **link;
    struct request_note note;

    /* A request freed without being sent (its marshaling failed). */
    take_note(msg, &note);
    if (InterlockedCompareExchange(&abandoned_count, 0, 0))
    {
        EnterCriticalSection(&abandoned_cs);
        for (link = &abandoned_calls; *link; link = &(*link)->next_abandoned)
        {
            if ((*link)->caller_msg != msg || (*link)->caller_state != msg->reserved1) continue;
            call = *link;
            *link = call->next_abandoned;
            InterlockedDecrement(&abandoned_count);
            break;
        }
        LeaveCriticalSection(&abandoned_cs);
        if (call)
        {
            TRACE("FreeBuffer of abandoned call %p deferred to its completion\n", call);
            sync_call_release(call);
            return S_OK;
        }
    }
    return wine_real.FreeBuffer(iface, msg);
}

void synccall_init(BOOL (*route)(IRpcChannelBuffer *, RPCOLEMESSAGE *, ULONG *, ULONGLONG, HRESULT *))
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");
    char knob[64];
    DWORD len = GetEnvironmentVariableA("COCANCEL_TEST_BREAK", knob, sizeof(knob));

    if (combase) p_CoGetApartmentType = (void *)GetProcAddress(combase, "CoGetApartmentType");
    if (len && len < sizeof(knob))
    {
        if (strstr(knob, "message")) test_break |= BREAK_MESSAGE;
        WARN("COCANCEL_TEST_BREAK=%s: the engine acts as if Wine's channel worked otherwise\n", knob);
    }
    async_route = route;
    notes_tls = TlsAlloc();
    InitializeCriticalSection(&abandoned_cs);
}
