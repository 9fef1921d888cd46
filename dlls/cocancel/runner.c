/*
 * Running a call so that its caller can leave it.
 *
 * Owns the places where a call runs away from the caller's own flow:
 *
 *  - worker fibers of the calling thread.  A run's body (Wine's SendReceive
 *    for a synchronous call, the proxy's synchronous method for an
 *    asynchronous one) runs on a worker fiber.  When Wine's code on that
 *    fiber waits for the reply (combase's imports of WaitForMultipleObjectsEx
 *    and MsgWaitForMultipleObjectsEx are redirected for that), the fiber
 *    parks: it switches back to the thread, which decides what to do - wait
 *    in the fiber's place (runner_run_task), or return and resume it later
 *    (the asynchronous-call engine).  A run left parked is abandoned: a pool
 *    wait notes when its reply comes, and its thread finishes it (Wine's code
 *    after the wait uses the thread's COM data, so no other thread may) the
 *    next time it comes through the engine (runner_reap);
 *  - engine threads, for calls of MTA callers that cannot take a fiber.
 *
 * Fibers are kept per thread and reused: a worker fiber runs one call after
 * another.  The thread's fiber state is the program's: a thread that is not
 * a fiber is converted to one only for the moment the engine switches to a
 * worker and back (runner_resume), so that before and after every call it is
 * what the program made it, and a program may convert its threads to fibers
 * and back, or call from fibers of its own, at any time.
 *
 * The runner knows nothing of what it runs: the owner of a run supplies its
 * body and what to do when its reply comes (struct run_ops).  The phase and
 * flags of a run form the state machine of core.c (struct cc_run).
 */

#include "cocancel_private.h"

#define FIBER_STACK (256 * 1024)
#define MAX_IDLE_FIBERS 8

static CRITICAL_SECTION runner_cs;              /* abandoned runs, pool waits */
static DWORD run_tls = TLS_OUT_OF_INDEXES;      /* the run on this thread's current fiber */
static DWORD fibers_tls = TLS_OUT_OF_INDEXES;   /* the thread's struct thread_fibers */
static struct run *abandoned_runs;
static LONG abandoned_count;
static LONG leaked_count;                       /* given up at their thread's exit */

/* How long an ending thread waits for the replies of the calls it abandoned. */
#define THREAD_EXIT_WAIT_MS 500
/* Told on the owner's thread when a run is abandoned there (uninit.c). */
static void (*abandon_hook)(void);

struct worker_fiber
{
    void *fiber;
    struct run *run;                /* the run it has now */
    struct worker_fiber *next;      /* in the thread's idle list */
};

struct thread_fibers
{
    struct worker_fiber *idle;
    unsigned int idle_count;
    unsigned int live;
};

struct run *runner_current(void)
{
    return run_tls == TLS_OUT_OF_INDEXES ? NULL : TlsGetValue(run_tls);
}

static void WINAPI worker_main(void *arg)
{
    struct worker_fiber *worker = arg;

    for (;;)
    {
        struct run *run = worker->run;

        run->ops->body(run);
        if (cc_run_move(&run->state, ~0u, CC_RUN_DONE))
        {
            ERR("run %p ended in phase %u\n", run, cc_run_phase(&run->state));
            cc_run_init(&run->state, CC_RUN_DONE, run->state.word);
        }
        TlsSetValue(run_tls, NULL);
        /* Back to the thread; resumed only with a new run. */
        SwitchToFiber(run->return_fiber);
    }
}

/* gcc misreads mingw's inline TEB access in GetCurrentFiber as an array overrun. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
static void * __attribute__((noinline)) current_fiber(void)
{
    return GetCurrentFiber();
}
#pragma GCC diagnostic pop

/*
 * Runs the run's fiber until it parks or finishes; FALSE if it could not be
 * switched to (nothing ran).  A thread that is not a
 * fiber becomes one for the switch and goes back afterwards (converting back
 * on the fiber the conversion made is exactly what ConvertFiberToThread is
 * for); the worker returns to whichever fiber resumed it.
 */
BOOL runner_resume(struct run *run)
{
    void *previous = TlsGetValue(run_tls);
    BOOL converted = FALSE;

    if (!IsThreadAFiber())
    {
        if (!ConvertThreadToFiberEx(NULL, FIBER_FLAG_FLOAT_SWITCH))
        {
            ERR("cannot switch to run %p: %lu\n", run, GetLastError());
            return FALSE;
        }
        converted = TRUE;
    }
    run->return_fiber = current_fiber();
    TlsSetValue(run_tls, run);
    cc_run_set(&run->state, CC_RUN_ACTIVE);
    SwitchToFiber(run->worker->fiber);
    cc_run_clear(&run->state, CC_RUN_ACTIVE);
    TlsSetValue(run_tls, previous);
    if (converted) ConvertFiberToThread();
    return TRUE;
}

/* Back to the thread until resumed (on the run's fiber). */
void runner_yield(struct run *run)
{
    TlsSetValue(run_tls, NULL);
    SwitchToFiber(run->return_fiber);
    TlsSetValue(run_tls, run);
}

static void park(struct run *run)
{
    if (cc_run_move(&run->state, CC_RUN_BIT(CC_RUN_SENDING) | CC_RUN_BIT(CC_RUN_WAITING), CC_RUN_PARKED))
        ERR("run %p parks in phase %u\n", run, cc_run_phase(&run->state));
    runner_yield(run);
}

static struct thread_fibers *thread_fibers(BOOL create)
{
    struct thread_fibers *fibers = TlsGetValue(fibers_tls);

    if (!fibers && create && (fibers = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*fibers))))
        TlsSetValue(fibers_tls, fibers);
    return fibers;
}

static BOOL acquire_worker(struct run *run)
{
    struct thread_fibers *fibers = thread_fibers(TRUE);
    struct worker_fiber *worker;

    if (!fibers) return FALSE;
    if ((worker = fibers->idle))
    {
        fibers->idle = worker->next;
        fibers->idle_count--;
    }
    else if (!(worker = HeapAlloc(GetProcessHeap(), 0, sizeof(*worker))) ||
             !(worker->fiber = CreateFiberEx(0, FIBER_STACK, FIBER_FLAG_FLOAT_SWITCH, worker_main, worker)))
    {
        HeapFree(GetProcessHeap(), 0, worker);
        return FALSE;
    }
    worker->run = run;
    run->worker = worker;
    fibers->live++;
    return TRUE;
}

/* Gives back the worker of a run that finished (or never ran); its thread only. */
static void release_worker(struct run *run)
{
    struct thread_fibers *fibers = thread_fibers(FALSE);
    struct worker_fiber *worker = run->worker;

    run->worker = NULL;
    if (!fibers) return;
    fibers->live--;
    if (fibers->idle_count < MAX_IDLE_FIBERS)
    {
        worker->run = NULL;
        worker->next = fibers->idle;
        fibers->idle = worker;
        fibers->idle_count++;
        return;
    }
    DeleteFiber(worker->fiber);
    HeapFree(GetProcessHeap(), 0, worker);
}

/* Prepares run (zeroed by its owner) and takes a worker fiber of this thread for it. */
BOOL runner_start(struct run *run, const struct run_ops *ops, enum cc_run_phase phase, int flags)
{
    run->ops = ops;
    run->owner_tid = GetCurrentThreadId();
    run->deferred = NULL;
    cc_run_init(&run->state, phase, flags);
    return acquire_worker(run);
}

/*
 * Withdraws a pool wait.  A callback still running may be inside the
 * program's Signal, which may send this very thread a message: the thread
 * takes sent messages while it waits for that callback (not under the
 * loader lock, as at thread exit).
 */
static void end_pool_wait(HANDLE wait)
{
    HANDLE done = discovery_holding_loader_lock() ? NULL : CreateEventW(NULL, TRUE, FALSE, NULL);
    MSG msg;

    if (!done)
    {
        UnregisterWaitEx(wait, INVALID_HANDLE_VALUE);
        return;
    }
    if (!UnregisterWaitEx(wait, done) && GetLastError() == ERROR_IO_PENDING)
    {
        while (MsgWaitForMultipleObjectsEx(1, &done, INFINITE, QS_SENDMESSAGE, 0) == WAIT_OBJECT_0 + 1)
            PeekMessageW(&msg, NULL, 0, 0, PM_NOREMOVE | PM_QS_SENDMESSAGE);
    }
    CloseHandle(done);
}

/* A pool wait that the registrar thread registers for an abandoned run (runner_abandon). */
struct deferred_watch
{
    SLIST_ENTRY entry;              /* in watch_queue */
    struct run *run;                /* NULL once the run no longer wants it */
};

static SLIST_HEADER watch_queue;
/* Bumped for each watch queued; the registrar waits for it to change (an
 * address wait: no round trip to Wine's server to wake it). */
static LONG watch_sequence;
static LONG registrar_state;        /* 0 none, 1 starting or running, 2 could not start */
/* Watches were queued and the registrar not woken for them yet (runner_abandon's quiet form). */
static LONG registrar_owed;

/* Work to run on the registrar a little later (runner_later). */
struct later_work
{
    SLIST_ENTRY entry;
    void (*func)(void *);
    void *arg;
};

static SLIST_HEADER later_queue;

/* Takes back the run's pool wait, registered or still to be; under runner_cs. */
static HANDLE take_pool_wait(struct run *run)
{
    HANDLE wait = run->pool_wait;

    if (run->deferred)
    {
        run->deferred->run = NULL;
        run->deferred = NULL;
    }
    run->pool_wait = NULL;
    return wait;
}

/* The run is over (or never ran): its worker goes back and its owner frees it. */
void runner_free(struct run *run)
{
    HANDLE wait;

    EnterCriticalSection(&runner_cs);
    wait = take_pool_wait(run);
    LeaveCriticalSection(&runner_cs);
    if (wait) end_pool_wait(wait);
    if (run->worker) release_worker(run);
    run->ops->destroy(run);
}

/* What the parked wait waited for was signalled: the owner is told, or the run marked. */
static void note_reply(struct run *run, BOOL from_pool)
{
    if (run->ops->reply) run->ops->reply(run, from_pool);
    else cc_run_set(&run->state, CC_RUN_REPLIED);
}

/*
 * Thread pool: Wine's event for the parked run was signalled (and is
 * taken).  On a worker thread, not the pool's wait thread: the program's
 * Signal may take its time without holding up the other waits.
 */
static void CALLBACK reply_arrived(void *arg, BOOLEAN timeout)
{
    note_reply(arg, TRUE);
}

/*
 * Who waits for Wine's event of a parked run.  Wine's event is auto-reset
 * and a thread-pool wait cannot be withdrawn without the risk of losing a
 * signal it already took, so the pool is asked to watch only when something
 * needs the reply noticed without the run's thread (an abandoned run, or
 * what the owner asks for); otherwise the fiber waits for it itself.  Both
 * may wait at once: whichever takes the signal notes the reply for the other.
 */
void runner_watch(struct run *run)
{
    EnterCriticalSection(&runner_cs);
    if (cc_run_test(&run->state, CC_RUN_HAS_PARKED) && !cc_run_test(&run->state, CC_RUN_REPLIED) &&
        !run->pool_wait &&
        !RegisterWaitForSingleObject(&run->pool_wait, run->wine_event, reply_arrived, run, INFINITE,
                                     WT_EXECUTEONLYONCE))
    {
        ERR("cannot watch the reply of run %p\n", run);
        run->pool_wait = NULL;
    }
    LeaveCriticalSection(&runner_cs);
}

void runner_unwatch(struct run *run)
{
    HANDLE wait;

    EnterCriticalSection(&runner_cs);
    wait = take_pool_wait(run);
    LeaveCriticalSection(&runner_cs);
    if (wait) end_pool_wait(wait);
}

/* Runs the work queued for later, at least a millisecond after it was queued. */
static void run_later_work(void)
{
    struct later_work *work, *next, *first = NULL;

    if (!(work = (struct later_work *)InterlockedFlushSList(&later_queue))) return;
    /* The queue is last in, first out: put the batch back in order. */
    for (; work; work = next)
    {
        next = (struct later_work *)work->entry.Next;
        work->entry.Next = &first->entry;
        first = work;
    }
    Sleep(1);
    for (work = first; work; work = next)
    {
        next = (struct later_work *)work->entry.Next;
        work->func(work->arg);
        _aligned_free(work);
    }
}

/*
 * The registrar: one thread of the process registers the pool waits of
 * abandoned runs, in turn, and runs the work queued for later.
 */
static DWORD WINAPI registrar_thread(void *arg)
{
    struct deferred_watch *deferred;

    for (;;)
    {
        LONG seen = InterlockedCompareExchange(&watch_sequence, 0, 0);

        run_later_work();
        while ((deferred = (struct deferred_watch *)InterlockedPopEntrySList(&watch_queue)))
        {
            EnterCriticalSection(&runner_cs);
            if (deferred->run)
            {
                deferred->run->deferred = NULL;
                runner_watch(deferred->run);
            }
            LeaveCriticalSection(&runner_cs);
            _aligned_free(deferred);
        }
        WaitOnAddress(&watch_sequence, &seen, sizeof(seen), INFINITE);
    }
    return 0;
}

/* Starts the registrar once; FALSE if there is none. */
static BOOL start_registrar(void)
{
    HANDLE thread;
    LONG state = InterlockedCompareExchange(&registrar_state, 1, 0);

    if (state) return state == 1;
    if (!(thread = CreateThread(NULL, 0, registrar_thread, NULL, 0, NULL)))
    {
        InterlockedExchange(&registrar_state, 2);
        return FALSE;
    }
    CloseHandle(thread);
    return TRUE;
}

/*
 * Registering a pool wait costs Wine a round trip to its server (the pool's
 * wait thread is told), and so does handing work to the thread pool: each
 * about as long as the rest of a cancel.  A released caller leaves the
 * registration to the registrar thread, woken by an address wait (no round
 * trip), and goes back at once.  Quiet: not even that; the registrar is
 * woken later: by the work the caller's canceller queues for it
 * (runner_later), or at the thread's next runner_reap().
 * FALSE when there is no registrar.
 */
static BOOL defer_watch(struct run *run, BOOL quiet)
{
    struct deferred_watch *deferred;

    if (!start_registrar()) return FALSE;
    if (!(deferred = _aligned_malloc(sizeof(*deferred), MEMORY_ALLOCATION_ALIGNMENT))) return FALSE;
    deferred->run = run;
    EnterCriticalSection(&runner_cs);
    run->deferred = deferred;
    LeaveCriticalSection(&runner_cs);
    InterlockedPushEntrySList(&watch_queue, &deferred->entry);
    InterlockedIncrement(&watch_sequence);
    if (quiet) InterlockedExchange(&registrar_owed, 1);
    else runner_wake_registrar();
    return TRUE;
}

/*
 * Runs func(arg) on the registrar thread about a millisecond from now, out
 * of the way of a thread that has just been released.  FALSE (nothing
 * queued) when the registrar is not running: it is started before the
 * first call that a cancel may release (runner_expect_abandon), so that
 * queueing never costs a thread's creation.
 */
BOOL runner_later(void (*func)(void *), void *arg)
{
    struct later_work *work;

    if (InterlockedCompareExchange(&registrar_state, 0, 0) != 1) return FALSE;
    if (!(work = _aligned_malloc(sizeof(*work), MEMORY_ALLOCATION_ALIGNMENT))) return FALSE;
    work->func = func;
    work->arg = arg;
    InterlockedPushEntrySList(&later_queue, &work->entry);
    InterlockedIncrement(&watch_sequence);
    runner_wake_registrar();
    return TRUE;
}

/* Wakes the registrar for the watches queued so far. */
void runner_wake_registrar(void)
{
    InterlockedExchange(&registrar_owed, 0);
    WakeByAddressSingle(&watch_sequence);
}

static void abandon(struct run *run, BOOL quiet)
{
    cc_run_set(&run->state, CC_RUN_DISCARD);
    EnterCriticalSection(&runner_cs);
    run->next_abandoned = abandoned_runs;
    abandoned_runs = run;
    InterlockedIncrement(&abandoned_count);
    LeaveCriticalSection(&runner_cs);
    if (abandon_hook && run->owner_tid == GetCurrentThreadId()) abandon_hook();
    if (!defer_watch(run, quiet)) runner_watch(run);
}

/* Hands a run that still waits for its reply to its thread's clean-up; its reply is not delivered. */
void runner_abandon(struct run *run)
{
    abandon(run, FALSE);
}

/* Lets a parked run whose reply has arrived go to its end and frees it (its thread only). */
void runner_finish(struct run *run)
{
    if (cc_run_phase(&run->state) != CC_RUN_DONE) runner_resume(run);
    if (cc_run_phase(&run->state) != CC_RUN_DONE && run->task)
    {
        /* The task waited for something else on its way: watch that too. */
        TRACE("task %p waits again\n", run);
        cc_run_clear(&run->state, CC_RUN_REPLIED);
        runner_abandon(run);
        return;
    }
    if (cc_run_phase(&run->state) != CC_RUN_DONE)
    {
        ERR("run %p did not finish\n", run);
        return;
    }
    runner_free(run);
}

/* Takes an abandoned run of this thread off the list: one whose reply came, or any. */
static struct run *take_abandoned(DWORD tid, BOOL replied_only)
{
    struct run *run, **link;

    EnterCriticalSection(&runner_cs);
    for (link = &abandoned_runs; (run = *link); link = &run->next_abandoned)
        if (run->owner_tid == tid && (!replied_only || cc_run_test(&run->state, CC_RUN_REPLIED))) break;
    if (run)
    {
        *link = run->next_abandoned;
        InterlockedDecrement(&abandoned_count);
    }
    LeaveCriticalSection(&runner_cs);
    return run;
}

DWORD runner_abandoned(void)
{
    return InterlockedCompareExchange(&abandoned_count, 0, 0);
}

/* Finishes this thread's abandoned runs whose replies have arrived. */
void runner_reap(void)
{
    DWORD tid = GetCurrentThreadId();
    struct run *run;

    if (!InterlockedCompareExchange(&abandoned_count, 0, 0)) return;
    /* Watches queued quietly whose wake-up nobody else gave (or has given yet). */
    if (InterlockedCompareExchange(&registrar_owed, 0, 0)) runner_wake_registrar();
    while ((run = take_abandoned(tid, TRUE))) runner_finish(run);
}

/* Does this thread have abandoned runs? */
static BOOL has_abandoned(DWORD tid)
{
    struct run *run;

    EnterCriticalSection(&runner_cs);
    for (run = abandoned_runs; run; run = run->next_abandoned) if (run->owner_tid == tid) break;
    LeaveCriticalSection(&runner_cs);
    return run != NULL;
}

void runner_reap_wait(DWORD timeout)
{
    DWORD start = GetTickCount(), tid = GetCurrentThreadId();

    runner_reap();
    while (has_abandoned(tid))
    {
        if (GetTickCount() - start >= timeout)
        {
            WARN("abandoned calls of thread %04lx still wait for their replies\n", tid);
            return;
        }
        Sleep(5);
        runner_reap();
    }
}

DWORD runner_leaked(void)
{
    return (DWORD)InterlockedCompareExchange(&leaked_count, 0, 0);
}

/*
 * The thread ends: its abandoned runs are finished if their replies come
 * within THREAD_EXIT_WAIT_MS (they were cancelled: the transport abort or
 * the server's answer ends them within milliseconds as a rule).  The others
 * can never be (their state is the thread's, and Wine's code after the
 * wait needs it), so they leave the list, where a later thread with the
 * same id would otherwise find them, and are leaked, counted.  The wait
 * runs under the loader lock: a reply that needs a new thread to be seen
 * is not seen, and its run is leaked as before.
 */
static void drop_abandoned(void)
{
    DWORD tid = GetCurrentThreadId();
    struct run *run;

    if (has_abandoned(tid)) runner_reap_wait(THREAD_EXIT_WAIT_MS);
    while ((run = take_abandoned(tid, FALSE)))
    {
        InterlockedIncrement(&leaked_count);
        runner_unwatch(run);
        if (run->task && run->worker)
        {
            /* A task's messages and Wine's state of the call are on the
             * heap, where the late reply goes: only its records leak, and
             * the fiber, which nothing will resume, is freed. */
            struct thread_fibers *fibers = thread_fibers(FALSE);

            WARN("thread ends before the reply of abandoned call %p: its records are leaked\n", run);
            DeleteFiber(run->worker->fiber);
            HeapFree(GetProcessHeap(), 0, run->worker);
            run->worker = NULL;
            if (fibers) fibers->live--;
        }
        /* A proxy method's message is on the fiber's stack: all of it stays. */
        else WARN("thread ends before the reply of abandoned call %p: its state is leaked\n", run);
    }
}

void runner_thread_detach(void)
{
    struct thread_fibers *fibers;
    struct worker_fiber *worker;

    if (fibers_tls == TLS_OUT_OF_INDEXES || !(fibers = thread_fibers(FALSE))) return;
    if (InterlockedCompareExchange(&abandoned_count, 0, 0)) drop_abandoned();
    while ((worker = fibers->idle))
    {
        fibers->idle = worker->next;
        DeleteFiber(worker->fiber);
        HeapFree(GetProcessHeap(), 0, worker);
    }
    /* Runs still parked on this thread can never finish now: their state is leaked. */
    if (fibers->live) WARN("thread exits with %u asynchronous calls unfinished\n", fibers->live);
    TlsSetValue(fibers_tls, NULL);
    HeapFree(GetProcessHeap(), 0, fibers);
}

/* ---------------------------------------------------------------------
 * Wine's waits on a worker fiber.
 */

/*
 * The owner resumed the run to wait for the reply itself: it waits for
 * Wine's event (the reply) or the run's release handle (a cancel, or the
 * reply taken by the pool).  Window messages go back to Wine, which pumps
 * and waits again.
 */
static DWORD wait_inline(struct run *run, const struct wine_wait *wait)
{
    HANDLE handles[2] = { run->wine_event, run->release };
    DWORD ret;

    for (;;)
    {
        if (cc_run_test(&run->state, CC_RUN_REPLIED))
        {
            runner_unwatch(run);
            return WAIT_OBJECT_0;
        }
        if (wait->pump)
            ret = wine_real.MsgWaitForMultipleObjectsEx(2, handles, INFINITE, wait->mask, wait->flags & ~MWMO_WAITALL);
        else
            ret = wine_real.WaitForMultipleObjectsEx(2, handles, FALSE, INFINITE, wait->alertable);
        if (ret == WAIT_OBJECT_0)
        {
            note_reply(run, FALSE);
            runner_unwatch(run);
            return WAIT_OBJECT_0;
        }
        if (ret == WAIT_OBJECT_0 + 1)
        {
            if (cc_run_test(&run->state, CC_RUN_REPLIED)) continue;
            if (run->ops->give_up && run->ops->give_up(run))
            {
                /* The owner returns now; the pool notes the reply when it comes. */
                cc_run_clear(&run->state, CC_RUN_INLINE);
                runner_watch(run);
                park(run);
                runner_unwatch(run);
                return WAIT_OBJECT_0;
            }
            /* Signalled for another reason: only the reply ends this wait. */
            handles[1] = handles[0];
            continue;
        }
        if (ret == WAIT_OBJECT_0 + 2) return WAIT_OBJECT_0 + 1;
        return ret;
    }
}

/* A task's wait: the thread waits in its place (runner_run_task). */
static DWORD task_wait(struct run *run, HANDLE handle, DWORD timeout, const struct wine_wait *wait)
{
    DWORD ret;

    run->wine_event = handle;
    run->wait = wait;
    run->timeout = timeout;
    cc_run_set(&run->state, CC_RUN_HAS_PARKED);
    park(run);
    run->wait = NULL;
    cc_run_move(&run->state, CC_RUN_BIT(CC_RUN_PARKED), CC_RUN_SENDING);
    if (cc_run_test(&run->state, CC_RUN_REPLIED))
    {
        /* Abandoned, and resumed once the pool saw the event (which it consumed). */
        runner_unwatch(run);
        ret = WAIT_OBJECT_0;
    }
    else ret = run->wake;
    return ret;
}

/* A proxy method's wait for its reply: the fiber parks and the owner goes on. */
static DWORD method_wait(struct run *run, HANDLE handle, const struct wine_wait *wait)
{
    run->wine_event = handle;
    cc_run_set(&run->state, CC_RUN_HAS_PARKED);
    TRACE("run %p parked, event %p\n", run, handle);
    if (cc_run_test(&run->state, CC_RUN_WATCH)) runner_watch(run);
    park(run);
    if (cc_run_test(&run->state, CC_RUN_INLINE))
    {
        cc_run_move(&run->state, CC_RUN_BIT(CC_RUN_PARKED), CC_RUN_WAITING);
        return wait_inline(run, wait);
    }
    /* Resumed once the pool saw the event (which it consumed). */
    runner_unwatch(run);
    cc_run_move(&run->state, CC_RUN_BIT(CC_RUN_PARKED), CC_RUN_SENDING);
    return WAIT_OBJECT_0;
}

/* Wine waits on a worker fiber: TRUE if the wait is the run's (*ret is its result). */
static BOOL fiber_wait(DWORD count, const HANDLE *handles, DWORD timeout, const struct wine_wait *wait, DWORD *ret)
{
    struct run *run = TlsGetValue(run_tls);
    enum cc_run_phase phase;

    if (!run || !timeout || count != 1) return FALSE;
    phase = cc_run_phase(&run->state);
    if (run->task)
    {
        if (phase != CC_RUN_SENDING) return FALSE;
        *ret = task_wait(run, handles[0], timeout, wait);
        return TRUE;
    }
    if (phase == CC_RUN_WAITING && handles[0] == run->wine_event)
    {
        *ret = wait_inline(run, wait);
        return TRUE;
    }
    if (phase != CC_RUN_SENDING) return FALSE;
    *ret = method_wait(run, handles[0], wait);
    return TRUE;
}

DWORD WINAPI runner_WaitForMultipleObjectsEx(DWORD count, const HANDLE *handles, BOOL all, DWORD timeout,
                                             BOOL alertable)
{
    struct wine_wait wait = { FALSE, 0, 0, alertable };
    DWORD ret;

    if (TlsGetValue(run_tls) && fiber_wait(count, handles, timeout, &wait, &ret)) return ret;
    return wine_real.WaitForMultipleObjectsEx(count, handles, all, timeout, alertable);
}

DWORD WINAPI runner_MsgWaitForMultipleObjectsEx(DWORD count, const HANDLE *handles, DWORD timeout,
                                                DWORD mask, DWORD flags)
{
    struct wine_wait wait = { TRUE, mask, flags, FALSE };
    DWORD ret;

    if (TlsGetValue(run_tls) && fiber_wait(count, handles, timeout, &wait, &ret)) return ret;
    return wine_real.MsgWaitForMultipleObjectsEx(count, handles, timeout, mask, flags);
}

/* ---------------------------------------------------------------------
 * Tasks: a function run on a worker fiber while the thread waits in its place.
 */

struct task
{
    struct run run;
    void (*func)(void *);
    void *arg;
};

static void task_body(struct run *run)
{
    struct task *task = CONTAINING_RECORD(run, struct task, run);

    task->func(task->arg);
}

static void task_destroy(struct run *run)
{
    HeapFree(GetProcessHeap(), 0, CONTAINING_RECORD(run, struct task, run));
}

static const struct run_ops task_ops = { task_body, NULL, NULL, task_destroy };

/*
 * The thread waits in a parked task's place, on its own stack: for what
 * Wine's code waited for, and for 'release'.  It waits through Wine's own
 * CoWaitForMultipleHandles, which pumps and consults the message filter as
 * Wine's SendReceive would, so that window procedures, filter callbacks and
 * incoming calls run on the caller's stack, with its fiber data and its
 * exception handlers; a wait inside them is an ordinary wait.  TRUE if
 * 'release' ended it; otherwise run->wake is what Wine's wait returns.
 */
static BOOL wait_for_task(struct run *run, HANDLE release)
{
    HANDLE handles[2] = { run->wine_event, release };
    const struct wine_wait *wait = run->wait;
    BOOL alertable = wait->pump ? (wait->flags & MWMO_ALERTABLE) != 0 : wait->alertable;
    DWORD index = ~0u;
    HRESULT hr;

    hr = CoWaitForMultipleHandles(alertable ? COWAIT_ALERTABLE : 0, run->timeout, 2, handles, &index);
    if (hr == S_OK && index == 1) return TRUE;
    if (hr == S_OK && index == 0) run->wake = WAIT_OBJECT_0;
    else if (hr == RPC_S_CALLPENDING) run->wake = WAIT_TIMEOUT;
    else if (hr == S_OK && index == WAIT_IO_COMPLETION) run->wake = WAIT_IO_COMPLETION;
    else
    {
        WARN("waiting for task %p failed: %#lx\n", run, hr);
        run->wake = WAIT_FAILED;
    }
    return FALSE;
}

/*
 * Runs func(arg) on a worker fiber of this thread.  Each time Wine's code in
 * it waits (for a reply), the thread waits instead (wait_for_task), and also
 * for 'release'.  S_OK: the task ran to its end.  S_FALSE: 'release' was
 * signalled first; the task is left parked, the pool notes when what it
 * waits for is signalled, and the thread finishes it the next time it comes
 * through the engine; quiet: the registrar that watches it is not woken
 * (see defer_watch for who wakes it).  E_NOTIMPL: tasks cannot run
 * here (nothing was run).
 * *waiting is the run while the thread waits in its place (code that runs
 * during that wait may raise an exception that unwinds this frame: the run
 * is then to be abandoned, runner_abandon), NULL otherwise.
 */
HRESULT runner_run_task(void (*func)(void *), void *arg, HANDLE release, BOOL quiet, struct run **waiting)
{
    struct task *task;
    struct run *run;
    BOOL released;

    if (!(winepatch_applied() & WINEPATCH_WAITS) || run_tls == TLS_OUT_OF_INDEXES) return E_NOTIMPL;
    runner_reap();
    if (!(task = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*task)))) return E_NOTIMPL;
    task->func = func;
    task->arg = arg;
    run = &task->run;
    run->task = TRUE;
    if (!runner_start(run, &task_ops, CC_RUN_SENDING, 0))
    {
        HeapFree(GetProcessHeap(), 0, task);
        return E_NOTIMPL;
    }

    for (;;)
    {
        if (!runner_resume(run))
        {
            /* Never started: nothing was sent.  Parked mid-call: left to its end like a cancelled one. */
            if (!cc_run_test(&run->state, CC_RUN_HAS_PARKED))
            {
                runner_free(run);
                return E_NOTIMPL;
            }
            runner_abandon(run);
            return S_FALSE;
        }
        if (cc_run_phase(&run->state) == CC_RUN_DONE)
        {
            runner_free(run);
            return S_OK;
        }
        *waiting = run;
        released = wait_for_task(run, release);
        *waiting = NULL;
        if (released)
        {
            TRACE("task %p released, left parked\n", run);
            abandon(run, quiet);
            return S_FALSE;
        }
    }
}

/* ---------------------------------------------------------------------
 * Engine threads.
 */

static SLIST_HEADER job_queue;
/* Bumped for each job queued; idle threads wait for it to change.  Address
 * waits, unlike kernel objects, cost Wine no round trip to its server. */
static LONG job_sequence;
/* Engine threads waiting for a job. */
static LONG idle_threads;

static DWORD WINAPI engine_thread(void *arg)
{
    for (;;)
    {
        struct thread_job *job;

        for (;;)
        {
            LONG seen = InterlockedCompareExchange(&job_sequence, 0, 0);

            if ((job = (struct thread_job *)InterlockedPopEntrySList(&job_queue))) break;
            WaitOnAddress(&job_sequence, &seen, sizeof(seen), INFINITE);
        }
        job->run(job);
        InterlockedIncrement(&idle_threads);
    }
    return 0;
}

/*
 * A thread is about to make a call that a cancel may leave behind: the
 * registrar is started now, without waiting for it, so that a released
 * caller never pays for a thread's creation (it hands the abandoned call's
 * clean-up to the registrar, see defer_watch).  Only for calls that can be
 * cancelled: a program that never cancels gets no thread.
 */
void runner_expect_abandon(void)
{
    if (!InterlockedCompareExchange(&registrar_state, 0, 0)) start_registrar();
}

/* Runs job on an engine thread of its own (each job may block for long). */
BOOL runner_submit_job(struct thread_job *job)
{
    HANDLE thread;

    if (InterlockedDecrement(&idle_threads) < 0)
    {
        InterlockedIncrement(&idle_threads);
        /* A new thread takes the job when it starts; it counts itself idle once the job is done. */
        if (!(thread = CreateThread(NULL, 0, engine_thread, NULL, 0, NULL))) return FALSE;
        CloseHandle(thread);
    }
    InterlockedPushEntrySList(&job_queue, &job->entry);
    InterlockedIncrement(&job_sequence);
    WakeByAddressSingle(&job_sequence);
    return TRUE;
}

BOOL runner_init(void (*on_abandon)(void))
{
    abandon_hook = on_abandon;
    InitializeCriticalSection(&runner_cs);
    InitializeSListHead(&job_queue);
    InitializeSListHead(&watch_queue);
    InitializeSListHead(&later_queue);
    run_tls = TlsAlloc();
    fibers_tls = TlsAlloc();
    return run_tls != TLS_OUT_OF_INDEXES && fibers_tls != TLS_OUT_OF_INDEXES;
}
