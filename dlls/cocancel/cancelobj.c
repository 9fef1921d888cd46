/*
 * Cancel objects and each thread's stack of them.
 *
 * Owns cocancel's cancel object (the state of one synchronous call,
 * cancellable from any thread; its events come from a small pool and are
 * taken only when somebody waits), and the per-thread stacks that
 * CoSetCancelObject pushes onto and CoGetCancelObject / CoCancelCall look
 * at.  Each thread that registers a cancel object gets a record holding its
 * stack.  The record is found by the owner through TLS and by other threads
 * through a table keyed by thread id; a reference count keeps it alive while
 * another thread looks at it, so a thread may exit at any time.  A thread
 * that was terminated never detaches: its record holds a handle to it, so
 * that a record whose thread is gone (and whose id may be reused) is told
 * from a live one with one wait of zero length.
 */

#include "cocancel_private.h"

static HRESULT (WINAPI *p_CoEnableCallCancellation)(void *reserved);
static HRESULT (WINAPI *p_CoDisableCallCancellation)(void *reserved);

HRESULT hresult_from_status(enum cc_status status)
{
    switch (status)
    {
    case CC_OK:          return S_OK;
    case CC_E_PENDING:   return RPC_S_CALLPENDING;
    case CC_E_COMPLETE:  return RPC_E_CALL_COMPLETE;
    case CC_E_CANCELLED: return RPC_E_CALL_CANCELED;
    case CC_E_DISABLED:  return CO_E_CANCEL_DISABLED;
    }
    return E_UNEXPECTED;
}

/*
 * Wine keeps the per-thread count of CoEnableCallCancellation itself (and its
 * test suite checks it), but offers no way to read it.  Rather than keep a
 * second count that programs calling combase directly would bypass, read
 * Wine's: CoDisableCallCancellation fails exactly when the count is zero, and
 * a successful probe is undone at once.  Only the calling thread touches its
 * own count, so the probe cannot race.
 */
BOOL cancelobj_enabled(void)
{
    if (!p_CoDisableCallCancellation || !p_CoEnableCallCancellation) return FALSE;
    if (p_CoDisableCallCancellation(NULL) != S_OK) return FALSE;
    p_CoEnableCallCancellation(NULL);
    return TRUE;
}

/*
 * Manual-reset events kept for reuse (cancel objects take one per call
 * somebody waits for): no kernel object is created or closed per call, and
 * a 'cancelled' event of a call nobody cancels needs no operation at all.
 */
#define MAX_POOLED_EVENTS 64

struct pooled_event
{
    SLIST_ENTRY entry;
    HANDLE event;
};

static SLIST_HEADER event_pool;
static LONG pooled_events;

static HANDLE take_event(void)
{
    struct pooled_event *item = (struct pooled_event *)InterlockedPopEntrySList(&event_pool);
    HANDLE event;

    if (!item) return CreateEventW(NULL, TRUE, FALSE, NULL);
    InterlockedDecrement(&pooled_events);
    event = item->event;
    _aligned_free(item);
    return event;
}

/* Takes back an event that is not signalled. */
static void give_back_event(HANDLE event)
{
    struct pooled_event *item;

    if (InterlockedIncrement(&pooled_events) > MAX_POOLED_EVENTS ||
        !(item = _aligned_malloc(sizeof(*item), MEMORY_ALLOCATION_ALIGNMENT)))
    {
        InterlockedDecrement(&pooled_events);
        CloseHandle(event);
        return;
    }
    item->event = event;
    InterlockedPushEntrySList(&event_pool, &item->entry);
}

struct thread_record
{
    struct cc_thread_node node;   /* node.tid is the owner's id */
    LONG refcount;
    SRWLOCK lock;                 /* guards stack */
    struct cc_stack stack;        /* IUnknown *, each holding a reference */
    HANDLE thread;                /* the owner (SYNCHRONIZE), or NULL: tells it from a later thread with its id */
    BOOL linked;                  /* in thread_table; guarded by table_lock */
};

static SRWLOCK table_lock = SRWLOCK_INIT;
static struct cc_thread_table thread_table;
static DWORD record_tls = TLS_OUT_OF_INDEXES;

void cancelobj_init(void)
{
    HMODULE combase;

    cc_table_init(&thread_table);
    record_tls = TlsAlloc();
    if ((combase = LoadLibraryW(L"combase.dll")))
    {
        p_CoEnableCallCancellation = (void *)GetProcAddress(combase, "CoEnableCallCancellation");
        p_CoDisableCallCancellation = (void *)GetProcAddress(combase, "CoDisableCallCancellation");
    }
    if (!p_CoEnableCallCancellation || !p_CoDisableCallCancellation)
        ERR("combase lacks the enable/disable functions\n");
}

static void record_release(struct thread_record *record)
{
    IUnknown *unk;

    if (InterlockedDecrement(&record->refcount)) return;
    /* The last reference: nobody else can see the stack any more. */
    while ((unk = cc_stack_pop(&record->stack))) IUnknown_Release(unk);
    cc_stack_free(&record->stack);
    if (record->thread) CloseHandle(record->thread);
    HeapFree(GetProcessHeap(), 0, record);
}

/* Takes the record out of the table; the table's reference is dropped. */
static void record_unlink(struct thread_record *record)
{
    BOOL linked;

    AcquireSRWLockExclusive(&table_lock);
    if ((linked = record->linked))
    {
        cc_table_remove(&thread_table, &record->node);
        record->linked = FALSE;
    }
    ReleaseSRWLockExclusive(&table_lock);
    if (linked) record_release(record);
}

/* The calling thread's record; created on demand when create is set. No reference is added. */
static struct thread_record *current_record(BOOL create)
{
    struct thread_record *record = TlsGetValue(record_tls), *stale = NULL;
    struct cc_thread_node *node;

    if (record || !create) return record;
    if (!(record = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*record)))) return NULL;
    record->node.tid = GetCurrentThreadId();
    record->refcount = 2;   /* one for the TLS slot, one for the table */
    InitializeSRWLock(&record->lock);
    cc_stack_init(&record->stack);
    if (!DuplicateHandle(GetCurrentProcess(), GetCurrentThread(), GetCurrentProcess(), &record->thread,
                         SYNCHRONIZE, FALSE, 0))
        record->thread = NULL;

    AcquireSRWLockExclusive(&table_lock);
    /* A record left by an earlier thread with the same id (one that was
     * terminated and never detached) is replaced. */
    if ((node = cc_table_find(&thread_table, record->node.tid)))
    {
        stale = CONTAINING_RECORD(node, struct thread_record, node);
        cc_table_remove(&thread_table, node);
        stale->linked = FALSE;
    }
    cc_table_insert(&thread_table, &record->node);
    record->linked = TRUE;
    ReleaseSRWLockExclusive(&table_lock);

    if (stale) record_release(stale);
    TlsSetValue(record_tls, record);
    return record;
}

/* Is the record's owner still running?  (Without a handle to it, it is taken to be.) */
static BOOL record_owner_alive(const struct thread_record *record)
{
    return !record->thread || WaitForSingleObject(record->thread, 0) == WAIT_TIMEOUT;
}

/* Drops the record of a thread that is gone (and the caller's reference). */
static void record_drop_dead(struct thread_record *record)
{
    TRACE("thread %04lx is gone, dropping its record\n", record->node.tid);
    record_unlink(record);
    record_release(record);
}

/*
 * The record of thread tid (0: the calling thread) with a reference added, or
 * NULL.  Unless 'checked' is FALSE, a record whose owner is gone is dropped
 * and not returned; with FALSE the caller checks (record_owner_alive) when
 * it suits it.
 */
static struct thread_record *find_thread_record(DWORD tid, BOOL checked)
{
    struct thread_record *record = NULL;
    struct cc_thread_node *node;

    if (!tid || tid == GetCurrentThreadId())
    {
        if ((record = current_record(FALSE))) InterlockedIncrement(&record->refcount);
        return record;
    }

    AcquireSRWLockShared(&table_lock);
    if ((node = cc_table_find(&thread_table, tid)))
    {
        record = CONTAINING_RECORD(node, struct thread_record, node);
        InterlockedIncrement(&record->refcount);
    }
    ReleaseSRWLockShared(&table_lock);
    if (!record) return NULL;

    if (checked && !record_owner_alive(record))
    {
        record_drop_dead(record);
        return NULL;
    }
    return record;
}

void cancelobj_thread_detach(void)
{
    struct thread_record *record;

    if (record_tls == TLS_OUT_OF_INDEXES || !(record = TlsGetValue(record_tls))) return;
    TRACE("thread %04lx ends with %u cancel objects registered\n", record->node.tid, (unsigned int)record->stack.count);
    TlsSetValue(record_tls, NULL);
    record_unlink(record);
    record_release(record);
}


/* The innermost object of the record's stack, referenced, or NULL. */
static IUnknown *record_top(struct thread_record *record)
{
    IUnknown *unk;

    AcquireSRWLockShared(&record->lock);
    if ((unk = cc_stack_top(&record->stack))) IUnknown_AddRef(unk);
    ReleaseSRWLockShared(&record->lock);
    return unk;
}

/* The innermost cancel object of thread tid (0: this thread), referenced; NULL if it has none. */
IUnknown *cancelobj_stack_top(DWORD tid)
{
    struct thread_record *record;
    IUnknown *unk;

    if (!(record = find_thread_record(tid, TRUE))) return NULL;
    unk = record_top(record);
    record_release(record);
    return unk;
}

/* Pushes unk on the calling thread's stack, with a reference of its own. */
HRESULT cancelobj_stack_push(IUnknown *unk)
{
    struct thread_record *record;

    if (!(record = current_record(TRUE))) return E_OUTOFMEMORY;
    IUnknown_AddRef(unk);
    AcquireSRWLockExclusive(&record->lock);
    if (cc_stack_push(&record->stack, unk))
    {
        ReleaseSRWLockExclusive(&record->lock);
        IUnknown_Release(unk);
        return E_OUTOFMEMORY;
    }
    ReleaseSRWLockExclusive(&record->lock);
    return S_OK;
}

/* Pops the calling thread's innermost cancel object, if any; the caller releases it. */
IUnknown *cancelobj_stack_pop(void)
{
    struct thread_record *record;
    IUnknown *popped;

    if (!(record = current_record(FALSE))) return NULL;
    AcquireSRWLockExclusive(&record->lock);
    popped = cc_stack_pop(&record->stack);
    ReleaseSRWLockExclusive(&record->lock);
    return popped;
}

/* cocancel's cancel object: the state of one call, cancellable from any thread. */
struct cancel_object
{
    ICancelMethodCalls ICancelMethodCalls_iface;
    LONG refcount;
    struct cc_call call;
    HANDLE settled;     /* manual-reset: the call completed or was cancelled; made on first need */
    HANDLE cancelled;   /* manual-reset: the call was cancelled; from the pool, on first need */
    LONG settled_word;  /* an address to wait on: 1 settled, 0 not, 2 not and somebody waits */
    ULONGLONG call_id;  /* the proxied call it stands for (0: none), see orpchook.c */
};

static const ICancelMethodCallsVtbl cancel_object_vtbl;

static inline struct cancel_object *impl_from_ICancelMethodCalls(ICancelMethodCalls *iface)
{
    return CONTAINING_RECORD(iface, struct cancel_object, ICancelMethodCalls_iface);
}

/*
 * What a cancel still does once its caller is released: the transport abort
 * (Wine then ends the call left parked on the worker fiber, instead of
 * waiting for the server's reply).  The released caller queued the watch of
 * that call for the registrar without waking it (runner_run_task, quietly:
 * waking it took the caller 10-25 us, the woken thread competing with it
 * for a core); the registrar takes it up right after this work.  A caller
 * that waits for its call's cancelled event (a call made on a worker fiber)
 * needs neither to be released, so for it this waits about a millisecond on
 * the engine's registrar thread: measured on a 2-core machine, the abort (RpcCancelThread,
 * then rpcrt4 closing the connection, all round trips to the wineserver)
 * running while the released caller made its way back took 30-40 us of that
 * release, a third of it (P1 in BENCHMARKS.md).  (The thread pool would
 * do as well, except that its first use in a process creates a thread,
 * which made a first CoCancelCall take 2-3 ms instead of under 1 ms: P7.)
 * Any other caller is released by the abort itself, which is then made at
 * once.
 */
static void after_release(void *arg)
{
    struct cancel_object *object = arg;

    if (object->call_id) transport_abort(object->call_id);
    ICancelMethodCalls_Release(&object->ICancelMethodCalls_iface);
}

static void after_settle(struct cancel_object *object)
{
    if (InterlockedCompareExchangePointer(&object->cancelled, NULL, NULL))
    {
        ICancelMethodCalls_AddRef(&object->ICancelMethodCalls_iface);
        if (runner_later(after_release, object)) return;
        ICancelMethodCalls_Release(&object->ICancelMethodCalls_iface);
        runner_wake_registrar();
    }
    if (object->call_id) transport_abort(object->call_id);
}

static BOOL object_settled(struct cancel_object *object)
{
    enum cc_state state = cc_call_state(&object->call);

    return state == CC_COMPLETE || state == CC_CANCELLED;
}

static struct cancel_object *checked_cancel_object(ICancelMethodCalls *iface)
{
    if (!iface || iface->lpVtbl != &cancel_object_vtbl) return NULL;
    return impl_from_ICancelMethodCalls(iface);
}

static BOOL object_cancelled(struct cancel_object *object)
{
    return cc_call_state(&object->call) == CC_CANCELLED;
}

/*
 * An event is taken only when somebody waits, so that a call nobody waits
 * for costs no event operation.  Whoever settles the call sets the state
 * first and then looks for the event; a waiter publishes the event first and
 * then looks at the state (reached()), so one of them always sees the other.
 */
static HANDLE publish_event(struct cancel_object *object, HANDLE *slot, BOOL (*reached)(struct cancel_object *))
{
    HANDLE event = *slot, previous;

    if (event) return event;
    if (!(event = take_event())) return NULL;
    if ((previous = InterlockedCompareExchangePointer(slot, event, NULL)))
    {
        give_back_event(event);
        return previous;
    }
    if (reached(object)) SetEvent(event);
    return event;
}

static HANDLE settled_event(struct cancel_object *object)
{
    return publish_event(object, &object->settled, object_settled);
}

static void settle(struct cancel_object *object)
{
    HANDLE event = InterlockedCompareExchangePointer(&object->settled, NULL, NULL);

    if (event) SetEvent(event);
    if (InterlockedExchange(&object->settled_word, 1) == 2) WakeByAddressAll(&object->settled_word);
    if (object_cancelled(object) && (event = InterlockedCompareExchangePointer(&object->cancelled, NULL, NULL)))
        SetEvent(event);
}

static HRESULT WINAPI cancel_object_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
{
    TRACE("%p, %s, %p\n", iface, cc_debugstr_guid(riid), ppv);

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

static ULONG WINAPI cancel_object_AddRef(ICancelMethodCalls *iface)
{
    struct cancel_object *object = impl_from_ICancelMethodCalls(iface);
    ULONG refcount = InterlockedIncrement(&object->refcount);

    TRACE("%p, refcount %lu\n", iface, refcount);
    return refcount;
}

static ULONG WINAPI cancel_object_Release(ICancelMethodCalls *iface)
{
    struct cancel_object *object = impl_from_ICancelMethodCalls(iface);
    ULONG refcount = InterlockedDecrement(&object->refcount);

    TRACE("%p, refcount %lu\n", iface, refcount);
    if (!refcount)
    {
        /* Each event is set exactly when its state was reached: the pool takes them back unset. */
        if (object->settled)
        {
            if (object_settled(object)) ResetEvent(object->settled);
            give_back_event(object->settled);
        }
        if (object->cancelled)
        {
            if (object_cancelled(object)) ResetEvent(object->cancelled);
            give_back_event(object->cancelled);
        }
        HeapFree(GetProcessHeap(), 0, object);
    }
    return refcount;
}

static HRESULT WINAPI cancel_object_Cancel(ICancelMethodCalls *iface, ULONG seconds)
{
    struct cancel_object *object = impl_from_ICancelMethodCalls(iface);
    enum cc_status status;

    TRACE("%p, %lu\n", iface, seconds);

    if ((status = cc_call_cancel(&object->call, seconds != 0)) != CC_OK)
        return hresult_from_status(status);
    if (!seconds)
    {
        /* The caller is released first; the server is told after (a write
         * to shared memory), the transport aborted after that (after_settle). */
        settle(object);
        if (object->call_id) cancelring_publish(object->call_id);
        after_settle(object);
        return S_OK;
    }
    /* The server sees the request at once, whatever grace it is given. */
    if (object->call_id) cancelring_publish(object->call_id);
    {
        /* Give the server its grace period; completion sets the event. */
        HANDLE event = settled_event(object);

        if (event) WaitForSingleObject(event, cc_seconds_to_ms(seconds));
        else Sleep(cc_seconds_to_ms(seconds));
        if ((status = cc_call_expire(&object->call)) != CC_OK) return hresult_from_status(status);
    }
    settle(object);
    /* A caller blocked in the transport is released by aborting it there. */
    after_settle(object);
    return S_OK;
}

static HRESULT WINAPI cancel_object_TestCancel(ICancelMethodCalls *iface)
{
    struct cancel_object *object = impl_from_ICancelMethodCalls(iface);

    TRACE("%p\n", iface);
    return hresult_from_status(cc_call_test(&object->call));
}

static const ICancelMethodCallsVtbl cancel_object_vtbl =
{
    cancel_object_QueryInterface,
    cancel_object_AddRef,
    cancel_object_Release,
    cancel_object_Cancel,
    cancel_object_TestCancel,
};

/*
 * CoCancelCall's work: cancels the innermost call of thread tid (0: this
 * thread).  E_NOINTERFACE when the thread has no cancel object (or is gone)
 * or its object is not an ICancelMethodCalls; otherwise what Cancel answers.
 *
 * Whether another thread is still alive costs a wineserver round trip.  For
 * an immediate cancel of the engine's own cancel object it is asked after
 * the cancel, so that the caller is already on its way back: a thread that
 * turns out to be gone (terminated without detaching) was only holding the
 * object of a call nobody waits for any more, so cancelling it changed
 * nothing anybody sees, and the answer is E_NOINTERFACE all the same.  A
 * program's own cancel object, or a cancel with a grace period, is only
 * touched once the thread is known to be alive.
 */
HRESULT cancelobj_cancel_thread(DWORD tid, ULONG seconds)
{
    /* The calling thread's own record needs no check: it is running. */
    BOOL self = !tid || tid == GetCurrentThreadId(), check_after;
    struct thread_record *record;
    ICancelMethodCalls *cancel;
    IUnknown *unk;
    HRESULT hr;

    if (!(record = find_thread_record(tid, FALSE))) return E_NOINTERFACE;
    if (!(unk = record_top(record)))
    {
        record_release(record);
        return E_NOINTERFACE;
    }
    check_after = !self && !seconds && checked_cancel_object((ICancelMethodCalls *)unk);
    if (!self && !check_after && !record_owner_alive(record))
    {
        IUnknown_Release(unk);
        record_drop_dead(record);
        return E_NOINTERFACE;
    }
    hr = IUnknown_QueryInterface(unk, &IID_ICancelMethodCalls, (void **)&cancel);
    IUnknown_Release(unk);
    if (SUCCEEDED(hr))
    {
        hr = ICancelMethodCalls_Cancel(cancel, seconds);
        ICancelMethodCalls_Release(cancel);
    }
    if (check_after && !record_owner_alive(record))
    {
        record_drop_dead(record);
        return E_NOINTERFACE;
    }
    record_release(record);
    return hr;
}

HRESULT cancelobj_create(BOOL cancellable, ULONGLONG call_id, ICancelMethodCalls **cancel)
{
    struct cancel_object *object;

    if (!(object = HeapAlloc(GetProcessHeap(), 0, sizeof(*object)))) return E_OUTOFMEMORY;
    object->ICancelMethodCalls_iface.lpVtbl = &cancel_object_vtbl;
    object->refcount = 1;
    object->call_id = call_id;
    object->settled = NULL;
    object->cancelled = NULL;
    object->settled_word = 0;
    cc_call_init(&object->call);
    cc_call_begin(&object->call, cancellable);
    *cancel = &object->ICancelMethodCalls_iface;
    return S_OK;
}

/* Cancels the call whether or not cancellation was enabled (message-filter cancel). */
void cancelobj_abort(ICancelMethodCalls *cancel)
{
    struct cancel_object *object = impl_from_ICancelMethodCalls(cancel);

    if (cc_call_abort(&object->call) != CC_OK) return;
    if (object->call_id) cancelring_publish(object->call_id);
    settle(object);
    after_settle(object);
}

/*
 * Waits until the call is complete or cancelled.  An address wait: in Wine
 * it costs no round trip to the server, unlike an event, for the caller
 * or for whoever settles the call.
 */
void cancelobj_wait(ICancelMethodCalls *cancel)
{
    struct cancel_object *object = impl_from_ICancelMethodCalls(cancel);
    LONG waiting = 2;

    /* Marks the word waited on, so that settle() wakes the address only then. */
    while (InterlockedCompareExchange(&object->settled_word, 2, 0) != 1)
        WaitOnAddress(&object->settled_word, &waiting, sizeof(waiting), INFINITE);
}

/* An event set when the call is cancelled (only then), owned by the object. */
HANDLE cancelobj_cancelled_event(ICancelMethodCalls *cancel)
{
    struct cancel_object *object = impl_from_ICancelMethodCalls(cancel);

    return publish_event(object, &object->cancelled, object_cancelled);
}

enum cc_state cancelobj_state(ICancelMethodCalls *cancel)
{
    return cc_call_state(&impl_from_ICancelMethodCalls(cancel)->call);
}

/* Pushes a cancel object on the calling thread's stack without the checks of CoSetCancelObject. */
HRESULT cancelobj_push(ICancelMethodCalls *cancel)
{
    return cancelobj_stack_push((IUnknown *)cancel);
}

/* Pops 'cancel' if it is the innermost object (a program may have pushed its own on top). */
void cancelobj_pop(ICancelMethodCalls *cancel)
{
    struct thread_record *record = current_record(FALSE);
    BOOL popped = FALSE;

    if (!record) return;
    AcquireSRWLockExclusive(&record->lock);
    if (cc_stack_top(&record->stack) == cancel)
    {
        cc_stack_pop(&record->stack);
        popped = TRUE;
    }
    ReleaseSRWLockExclusive(&record->lock);
    if (popped) ICancelMethodCalls_Release(cancel);
    else WARN("cancel object %p is not the innermost one; left on the stack\n", cancel);
}


/* The call behind a cancel object of cocancel's has finished (CocancelCompleteCall). */
HRESULT cancelobj_complete(ICancelMethodCalls *cancel)
{
    struct cancel_object *object = checked_cancel_object(cancel);
    enum cc_status status;

    if (!object) return E_INVALIDARG;
    status = cc_call_complete(&object->call);
    if (status == CC_OK) settle(object);
    return hresult_from_status(status);
}

/* Waits for the call behind a cancel object of cocancel's to settle (CocancelWaitCall). */
HRESULT cancelobj_wait_settled(ICancelMethodCalls *cancel, DWORD timeout)
{
    struct cancel_object *object = checked_cancel_object(cancel);
    HANDLE event;

    if (!object) return E_INVALIDARG;
    if (!(event = settled_event(object))) return E_OUTOFMEMORY;
    if (WaitForSingleObject(event, timeout) != WAIT_OBJECT_0) return RPC_S_CALLPENDING;
    return cc_call_state(&object->call) == CC_COMPLETE ? S_OK : RPC_E_CALL_CANCELED;
}
