/*
 * Stress and soak of asynchronous calls, in the conformance harness's dialect
 * (summary lines are counted by "make check").
 *
 *   stress.exe asyncstress [N]   N randomised calls per topology (default 300):
 *                                cancel before the request goes, while the
 *                                server runs, around its reply, after
 *                                completion, or never
 *   stress.exe asyncsoak [N]     N Begin_/Cancel/Finish_ cycles (default
 *                                2,000); prints memory and handle figures
 *   stress.exe syncstress [N]    N synchronous calls per topology (default
 *                                300), a watchdog thread cancelling each with
 *                                CoCancelCall after a random delay, or not
 *
 * Invariants checked for every call: Finish_ ends it exactly once, with its
 * own result (each call adds a distinct number) or RPC_E_CALL_CANCELED, and
 * only a cancel that reported S_OK may produce RPC_E_CALL_CANCELED, and
 * such a cancel always does; no deadlock (each client runs under a
 * watchdog).  Topologies: MTA->STA, STA->MTA and STA->STA in process, and
 * MTA and STA clients of a local server (this program, "stressserver",
 * registered under a new class each run).  "make check-stress" runs 10,000
 * calls per topology and 100,000 soak cycles.
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdarg.h>
#include <stdlib.h>

#include "windef.h"
#include "winbase.h"
#include "winuser.h"
#include "objbase.h"
#include "psapi.h"
#include "tlhelp32.h"
#include "rpcproxy.h"

#include "asynccall_ps.h"
#include "async_ps.h"
#include "cocancel.h"

#include "wine/test.h"

static HRESULT (WINAPI *pCoTestCancel)(void);

/* The local server of this run: this program, started by COM ("stressserver").
 * LOCAL_SERVER stands for it where an apartment type is expected
 * (COINIT_MULTITHREADED is 0). */
#define LOCAL_SERVER 0xffffffffu
static CLSID server_clsid;
static BOOL server_registered;
static WCHAR server_quit_name[64];

static HRESULT WINAPI obj_Add(ICcAsyncTest *iface, int a, int b, int *sum)
{
    /* A reply that races with the cancel: sometimes a short delay. */
    if (a % 7 == 0) Sleep(1);
    *sum = a + b;
    return S_OK;
}

static HRESULT WINAPI obj_Slow(ICcAsyncTest *iface, DWORD ms, DWORD *seen)
{
    DWORD start = GetTickCount();

    *seen = 0;
    while (GetTickCount() - start < ms)
    {
        if (pCoTestCancel && pCoTestCancel() == RPC_E_CALL_CANCELED)
        {
            *seen = 1;
            return E_ABORT;
        }
        Sleep(1);
    }
    return S_OK;
}

/* rand() keeps its state per thread: each client seeds its own, or every
 * run would replay the same sequence. */
static void seed_thread(void)
{
    LARGE_INTEGER now;

    QueryPerformanceCounter(&now);
    srand((unsigned int)now.QuadPart ^ GetCurrentThreadId());
}

struct job
{
    DWORD client_model;
    IStream *stream;
    unsigned int count;
    BOOL soak;
    /* results */
    unsigned int completed, cancelled, wrong, lost;
    SIZE_T resident_before, resident_after;
    SIZE_T heap_before, heap_middle, heap_after;
    SIZE_T private_before, private_after;
    DWORD threads_before, threads_after;
    DWORD handles_before, handles_after;
    DWORD abandoned_after;   /* calls the engine still held at the end, ~0u if not known */
};

static SIZE_T resident(void)
{
    PROCESS_MEMORY_COUNTERS counters = { sizeof(counters) };

    GetProcessMemoryInfo(GetCurrentProcess(), &counters, sizeof(counters));
    return counters.WorkingSetSize;
}

static DWORD thread_count(void)
{
    THREADENTRY32 entry = { sizeof(entry) };
    HANDLE snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
    DWORD count = 0;

    if (snapshot == INVALID_HANDLE_VALUE) return 0;
    if (Thread32First(snapshot, &entry))
        do if (entry.th32OwnerProcessID == GetCurrentProcessId()) count++; while (Thread32Next(snapshot, &entry));
    CloseHandle(snapshot);
    return count;
}

/* Committed private memory, from the address space itself (Wine does not report PrivateUsage). */
static SIZE_T committed_private(void)
{
    MEMORY_BASIC_INFORMATION info;
    const char *address = NULL;
    SIZE_T total = 0;

    while (VirtualQuery(address, &info, sizeof(info)))
    {
        if (info.State == MEM_COMMIT && info.Type == MEM_PRIVATE) total += info.RegionSize;
        if ((const char *)info.BaseAddress + info.RegionSize <= address) break;
        address = (const char *)info.BaseAddress + info.RegionSize;
    }
    return total;
}

/* Bytes in use in the process's heaps: what a leak of heap memory grows. */
static SIZE_T heap_in_use(void)
{
    HANDLE heaps[64];
    PROCESS_HEAP_ENTRY entry;
    DWORD count, i;
    SIZE_T total = 0;

    count = GetProcessHeaps(ARRAY_SIZE(heaps), heaps);
    for (i = 0; i < count && i < ARRAY_SIZE(heaps); i++)
    {
        if (!HeapLock(heaps[i])) continue;
        entry.lpData = NULL;
        while (HeapWalk(heaps[i], &entry))
            if (entry.wFlags & PROCESS_HEAP_ENTRY_BUSY) total += entry.cbData;
        HeapUnlock(heaps[i]);
    }
    return total;
}

static DWORD handles(void)
{
    DWORD count = 0;

    GetProcessHandleCount(GetCurrentProcess(), &count);
    return count;
}

/* The calls cocancel still holds for replies that have not come: ~0u when
 * the engine is not in this process. */
static DWORD abandoned_calls(void)
{
    HRESULT (WINAPI *pCocancelGetStatus)(struct cocancel_status *);
    struct cocancel_status status = { sizeof(status) };
    HMODULE engine = GetModuleHandleA("cocancel.dll");

    if (!engine || !(pCocancelGetStatus = (void *)GetProcAddress(engine, "CocancelGetStatus"))) return ~0u;
    if (FAILED(pCocancelGetStatus(&status))) return ~0u;
    return status.abandoned_calls;
}

/* One randomised call: returns FALSE if an invariant broke. */
static BOOL one_call(struct job *job, AsyncICcAsyncTest *call, ICancelMethodCalls *cancel, ISynchronize *sync,
                     unsigned int i)
{
    int when = rand() % 5, sum = -1;
    BOOL slow = rand() % 4 == 0;
    HRESULT begin, cancel_hr = E_FAIL, hr;
    DWORD seen;

    begin = slow ? AsyncICcAsyncTest_Begin_Slow(call, 1 + rand() % 15) : AsyncICcAsyncTest_Begin_Add(call, i, 1000);
    if (begin != S_OK)
    {
        if (job->wrong++ < 5) trace("call %u: Begin_ got %#lx\n", i, begin);
        return FALSE;
    }
    switch (when)
    {
    case 0: break;                                                  /* never cancelled */
    case 1: cancel_hr = ICancelMethodCalls_Cancel(cancel, 0); break;  /* at once */
    case 2: Sleep(rand() % 3); cancel_hr = ICancelMethodCalls_Cancel(cancel, 0); break;
    case 3:                                                         /* around the reply */
        { volatile unsigned int spin = rand() % 20000; while (spin--); }
        cancel_hr = ICancelMethodCalls_Cancel(cancel, 0);
        break;
    case 4:                                                         /* after completion */
        ISynchronize_Wait(sync, 0, 10000);
        cancel_hr = ICancelMethodCalls_Cancel(cancel, 0);
        break;
    }
    hr = slow ? AsyncICcAsyncTest_Finish_Slow(call, &seen) : AsyncICcAsyncTest_Finish_Add(call, &sum);
    if (hr == RPC_E_CALL_CANCELED)
    {
        job->cancelled++;
        if (cancel_hr != S_OK) job->wrong++;
        return cancel_hr == S_OK;
    }
    /* A cancel that reported S_OK must have cancelled it. */
    if (cancel_hr == S_OK) job->wrong++;
    if (when == 4 && cancel_hr != RPC_E_CALL_COMPLETE) job->wrong++;
    if (slow ? (hr != S_OK && hr != E_ABORT) : (hr != S_OK || sum != (int)i + 1000))
    {
        if (job->wrong++ < 5) trace("call %u (%s, cancel %d: %#lx): Finish_ got %#lx, %d\n", i, slow ? "slow" : "add",
                                    when, cancel_hr, hr, sum);
        return FALSE;
    }
    job->completed++;
    /* A second Finish_ finds nothing: the call ended exactly once. */
    if ((slow ? AsyncICcAsyncTest_Finish_Slow(call, &seen) : AsyncICcAsyncTest_Finish_Add(call, &sum)) !=
        RPC_E_CALL_COMPLETE)
    {
        job->wrong++;
        return FALSE;
    }
    return TRUE;
}

/*
 * Lets the calls abandoned so far end before memory is measured.  Cancelling
 * each call as soon as it is begun sends requests faster than an STA serves
 * them, so a backlog builds up; a synchronous call queues behind all of it.
 * The replies of abandoned calls are then noted by the thread pool, and the
 * thread finishes those calls as it next uses the engine: one more call, as
 * a program that goes on would make.  The pool's threads that watched for
 * those replies are let go idle and retire.
 */
static void quiesce(ICcAsyncTest *proxy, AsyncICcAsyncTest *call)
{
    int sum;

    ICcAsyncTest_Add(proxy, 1, 2, &sum);
    Sleep(200);
    if (AsyncICcAsyncTest_Begin_Add(call, 1, 2) == S_OK) AsyncICcAsyncTest_Finish_Add(call, &sum);
    /* Wine retires the thread pool's idle threads after a few seconds. */
    Sleep(6000);
}

static DWORD WINAPI client_thread(void *arg)
{
    struct job *job = arg;
    AsyncICcAsyncTest *calls[3] = { NULL };
    ICancelMethodCalls *cancels[3];
    ISynchronize *syncs[3];
    ICcAsyncTest *proxy = NULL;
    unsigned int i, k;
    DWORD cookie;

    seed_thread();
    CoInitializeEx(NULL, job->client_model);
    cookie = register_ps();
    if (job->stream) CoGetInterfaceAndReleaseStream(job->stream, &IID_ICcAsyncTest, (void **)&proxy);
    else CoCreateInstance(&server_clsid, NULL, CLSCTX_LOCAL_SERVER, &IID_ICcAsyncTest, (void **)&proxy);
    for (k = 0; proxy && k < 3; k++)
    {
        if (!(calls[k] = create_call(proxy))) break;
        AsyncICcAsyncTest_QueryInterface(calls[k], &IID_ICancelMethodCalls, (void **)&cancels[k]);
        AsyncICcAsyncTest_QueryInterface(calls[k], &IID_ISynchronize, (void **)&syncs[k]);
    }
    if (k == 3)
    {
        for (i = 0; i < job->count; i++)
        {
            if (job->soak)
            {
                /* Begin_, Cancel, Finish_: the cycle a long-running program repeats. */
                int sum;

                /* The baseline is taken once caches and pools have warmed up. */
                if (i == max(200, job->count / 10))
                {
                    quiesce(proxy, calls[0]);
                    job->resident_before = resident();
                    job->heap_before = heap_in_use();
                    job->private_before = committed_private();
                    job->threads_before = thread_count();
                    job->handles_before = handles();
                }
                /* A leak grows the heap in both halves of the measured run;
                 * a one-off (a heap segment, a pool's cache) in one only. */
                if (i == max(200, job->count / 10) + (job->count - max(200, job->count / 10)) / 2)
                {
                    quiesce(proxy, calls[0]);
                    job->heap_middle = heap_in_use();
                }
                if (AsyncICcAsyncTest_Begin_Add(calls[0], i, 1000) != S_OK) job->wrong++;
                ICancelMethodCalls_Cancel(cancels[0], 0);
                if (AsyncICcAsyncTest_Finish_Add(calls[0], &sum) == S_OK) job->completed++;
                else job->cancelled++;
                continue;
            }
            k = rand() % 3;
            one_call(job, calls[k], cancels[k], syncs[k], i);
        }
        /* Late replies of cancelled calls land before the figures are
         * taken: a synchronous call queues behind every request sent. */
        if (job->soak) quiesce(proxy, calls[0]);
        else Sleep(100);
        job->resident_after = resident();
        job->heap_after = heap_in_use();
        job->private_after = committed_private();
        job->threads_after = thread_count();
        job->handles_after = handles();
        job->abandoned_after = abandoned_calls();
    }
    else job->lost = job->count;
    for (k = 0; k < 3; k++)
    {
        if (!calls[k]) continue;
        ICancelMethodCalls_Release(cancels[k]);
        ISynchronize_Release(syncs[k]);
        AsyncICcAsyncTest_Release(calls[k]);
    }
    if (proxy) ICcAsyncTest_Release(proxy);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void run(DWORD client_model, DWORD host_model, unsigned int count, BOOL soak, struct job *job)
{
    struct host host;
    HANDLE thread;

    memset(job, 0, sizeof(*job));
    if (host_model != LOCAL_SERVER)
    {
        ok(start_host(&host, host_model), "host did not start\n");
        job->stream = host.stream;
    }
    job->client_model = client_model;
    job->count = count;
    job->soak = soak;
    thread = CreateThread(NULL, 0, client_thread, job, 0, NULL);
    /* The watchdog: a deadlock fails here instead of hanging the run. */
    ok(!WaitForSingleObject(thread, 60000 + count * 50), "client deadlocked\n");
    CloseHandle(thread);
    if (host_model != LOCAL_SERVER) ok(stop_host(&host), "host did not stop\n");
}

/* ---------------------------------------------------------------------
 * Synchronous calls cancelled by a watchdog thread with CoCancelCall.
 */

struct sync_job
{
    DWORD client_model;
    IStream *stream;
    unsigned int count;
    DWORD tid;
    HANDLE go, cancelled;       /* client -> watchdog: call i starts; watchdog -> client: cancel done */
    LONG delay;                 /* microseconds of spinning before the cancel, -1: none */
    HRESULT cancel_hr;
    BOOL stop;
    unsigned int completed, cancelled_calls, wrong;
};

static HRESULT (WINAPI *pCoCancelCall)(DWORD, ULONG);

static DWORD WINAPI sync_watchdog(void *arg)
{
    struct sync_job *job = arg;

    for (;;)
    {
        WaitForSingleObject(job->go, INFINITE);
        if (job->stop) return 0;
        if (job->delay >= 0)
        {
            volatile LONG spin = job->delay * 50;

            while (spin-- > 0);
            job->cancel_hr = pCoCancelCall(job->tid, 0);
        }
        else job->cancel_hr = E_NOINTERFACE;
        SetEvent(job->cancelled);
    }
}

static DWORD WINAPI sync_client(void *arg)
{
    struct sync_job *job = arg;
    ICcAsyncTest *proxy = NULL;
    HANDLE watchdog;
    unsigned int i;
    DWORD cookie, seen;
    HRESULT hr;
    int sum;

    seed_thread();
    CoInitializeEx(NULL, job->client_model);
    cookie = register_ps();
    if (job->stream) CoGetInterfaceAndReleaseStream(job->stream, &IID_ICcAsyncTest, (void **)&proxy);
    else CoCreateInstance(&server_clsid, NULL, CLSCTX_LOCAL_SERVER, &IID_ICcAsyncTest, (void **)&proxy);
    job->tid = GetCurrentThreadId();
    watchdog = CreateThread(NULL, 0, sync_watchdog, job, 0, NULL);
    CoEnableCallCancellation(NULL);
    for (i = 0; proxy && i < job->count; i++)
    {
        BOOL slow = rand() % 4 == 0;

        job->delay = rand() % 4 ? rand() % 2000 : -1;
        SetEvent(job->go);
        sum = -1;
        hr = slow ? ICcAsyncTest_Slow(proxy, 1 + rand() % 10, &seen) : ICcAsyncTest_Add(proxy, i, 1000, &sum);
        WaitForSingleObject(job->cancelled, INFINITE);
        if (hr == RPC_E_CALL_CANCELED)
        {
            job->cancelled_calls++;
            if (job->cancel_hr != S_OK && job->wrong++ < 5) trace("call %u cancelled, CoCancelCall said %#lx\n", i, job->cancel_hr);
        }
        else if (slow ? (hr == S_OK || hr == E_ABORT) : (hr == S_OK && sum == (int)i + 1000))
        {
            job->completed++;
            if (job->cancel_hr == S_OK && job->wrong++ < 5) trace("call %u completed after a cancel said S_OK\n", i);
        }
        else if (job->wrong++ < 5) trace("call %u: %#lx, %d (cancel %#lx)\n", i, hr, sum, job->cancel_hr);
    }
    CoDisableCallCancellation(NULL);
    job->stop = TRUE;
    SetEvent(job->go);
    WaitForSingleObject(watchdog, 10000);
    CloseHandle(watchdog);
    if (proxy) ICcAsyncTest_Release(proxy);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static unsigned int count_arg(unsigned int fallback)
{
    char **argv;
    int argc = winetest_get_mainargs(&argv);

    return argc > 2 && atoi(argv[2]) > 0 ? (unsigned int)atoi(argv[2]) : fallback;
}

static const char *name(DWORD model)
{
    if (model == LOCAL_SERVER) return "local";
    return model == COINIT_MULTITHREADED ? "MTA" : "STA";
}

/* Registers this program, under a class of its own, as the local server of the topologies "local server". */
static void start_local_server(void)
{
    WCHAR args[80] = L" stressserver ";

    CoCreateGuid(&server_clsid);
    StringFromGUID2(&server_clsid, args + wcslen(args), 40);
    wcscpy(server_quit_name, L"cocancel_stress_quit_");
    StringFromGUID2(&server_clsid, server_quit_name + wcslen(server_quit_name), 40);
    server_registered = register_local_server(&server_clsid, args);
    if (!server_registered) skip("cannot register the local server\n");
}

/* Lets the server process go and removes the class. */
static void stop_local_server(void)
{
    HANDLE quit;

    if (!server_registered) return;
    quit = CreateEventW(NULL, TRUE, FALSE, server_quit_name);
    SetEvent(quit);
    CloseHandle(quit);
    unregister_local_server(&server_clsid);
}

/* The local server (argv[2] is its class), started by COM. */
START_TEST(stressserver)
{
    char **argv;
    int argc = winetest_get_mainargs(&argv);
    WCHAR text[64];

    if (argc < 3) return;
    pCoTestCancel = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoTestCancel");
    MultiByteToWideChar(CP_ACP, 0, argv[2], -1, text, ARRAY_SIZE(text));
    if (FAILED(CLSIDFromString(text, &server_clsid))) return;
    wcscpy(server_quit_name, L"cocancel_stress_quit_");
    wcscat(server_quit_name, text);
    init_ps();
    serve_local(&server_clsid, server_quit_name, 3600000);
}

START_TEST(asyncstress)
{
    static const DWORD models[][2] =
    {
        { COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED },
        { COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED },
        { COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED },
        { COINIT_MULTITHREADED, LOCAL_SERVER },
        { COINIT_APARTMENTTHREADED, LOCAL_SERVER },
    };
    unsigned int count = count_arg(300), i;
    struct job job;

    pCoTestCancel = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoTestCancel");
    init_ps();
    start_local_server();
    for (i = 0; i < ARRAY_SIZE(models); i++)
    {
        if (models[i][1] == LOCAL_SERVER && !server_registered) continue;
        winetest_push_context("%s client, %s server", name(models[i][0]), name(models[i][1]));
        run(models[i][0], models[i][1], count, FALSE, &job);
        ok(!job.lost, "no call object\n");
        ok(job.completed + job.cancelled == count, "%u completed + %u cancelled of %u calls\n",
           job.completed, job.cancelled, count);
        ok(!job.wrong, "%u calls broke an invariant\n", job.wrong);
        trace("%u calls: %u completed, %u cancelled\n", count, job.completed, job.cancelled);
        winetest_pop_context();
    }
    stop_local_server();
}

START_TEST(asyncsoak)
{
    unsigned int count = count_arg(2000);
    SIZE_T half_limit;
    struct job job;

    pCoTestCancel = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoTestCancel");
    init_ps();
    run(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED, count, TRUE, &job);
    ok(!job.wrong && job.completed + job.cancelled == count, "%u completed, %u cancelled, %u wrong of %u\n",
       job.completed, job.cancelled, job.wrong, count);
    /* Figures for the report, each from the process's own counters, taken
     * when the abandoned calls have ended (see quiesce()). */
    trace("soak: %u cycles, heap in use %+ld KiB (%+ld, %+ld), committed private %+ld KiB, resident %+ld KiB, "
          "handles %+ld, threads %+ld (from a tenth of the way)\n", count,
          (long)((LONG_PTR)(job.heap_after - job.heap_before) / 1024),
          (long)((LONG_PTR)(job.heap_middle - job.heap_before) / 1024),
          (long)((LONG_PTR)(job.heap_after - job.heap_middle) / 1024),
          (long)((LONG_PTR)(job.private_after - job.private_before) / 1024),
          (long)((LONG_PTR)(job.resident_after - job.resident_before) / 1024),
          (long)job.handles_after - (long)job.handles_before,
          (long)job.threads_after - (long)job.threads_before);
    ok(job.handles_after <= job.handles_before + 16, "handles grew from %lu to %lu\n", job.handles_before,
       job.handles_after);
    /* The engine's own threads are started once; the thread pool's idle
     * workers retire while quiesce() sleeps.  (A thread per burst of
     * cancels, as the engine once started, shows here.) */
    ok(job.threads_after <= job.threads_before + 2, "threads grew from %lu to %lu\n", job.threads_before,
       job.threads_after);
    /* Every cancelled call has been let go by the engine once its reply came:
     * the count is exact, where the heap figures below are noisy. */
    if (job.abandoned_after != ~0u)
        ok(!job.abandoned_after, "the engine still holds %lu abandoned calls after all replies came\n",
           job.abandoned_after);
    else trace("cocancel.dll is not loaded: no count of abandoned calls\n");
    /* Each half of the measured run (0.45 of the cycles) may grow the heap
     * by some noise (256 KiB) and by 8 bytes a cycle; the check fails only
     * when both halves grow more, as a leak does.  The noise is Wine's own:
     * a one-off growth in one half (Wine 10.0's heap has moved by up to
     * 165 KiB in one run, its 32-bit heap under WoW64 once by 738 KiB) and,
     * under WoW64, 144 KiB and then 114 KiB in one 2,000-cycle CI run, with
     * no trend over 10,000 or 30,000 cycles.  The short pass of make check
     * (2,000 cycles: 263 KiB a half) catches a leak of about 300 bytes a
     * cycle (a leaked call's state is larger), the long one (100,000 cycles:
     * 607 KiB a half) one of 14 bytes a cycle.  Committed memory moves by
     * whole fiber stacks (1 MiB each in Wine 8.0) as the idle fibers kept
     * for reuse (at most 8) come and go. */
    half_limit = 256 * 1024 + (SIZE_T)count * 8 * 45 / 100;
    ok(job.heap_middle < job.heap_before + half_limit || job.heap_after < job.heap_middle + half_limit,
       "heap in use grew by %Iu KiB and then %Iu KiB in %u cycles\n", (job.heap_middle - job.heap_before) / 1024,
       (job.heap_after - job.heap_middle) / 1024, count);
    ok(job.private_after < job.private_before + 9 * 1024 * 1024,
       "committed private memory grew by %Iu KiB\n", (job.private_after - job.private_before) / 1024);
}

START_TEST(syncstress)
{
    static const DWORD models[][2] =
    {
        { COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED },
        { COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED },
        { COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED },
        { COINIT_MULTITHREADED, LOCAL_SERVER },
        { COINIT_APARTMENTTHREADED, LOCAL_SERVER },
    };
    unsigned int count = count_arg(300), i;

    pCoTestCancel = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoTestCancel");
    pCoCancelCall = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoCancelCall");
    if (!pCoCancelCall)
    {
        win_skip("CoCancelCall is not available\n");
        return;
    }
    init_ps();
    start_local_server();
    for (i = 0; i < ARRAY_SIZE(models); i++)
    {
        struct sync_job job = { models[i][0] };
        struct host host;
        HANDLE thread;

        if (models[i][1] == LOCAL_SERVER && !server_registered) continue;
        winetest_push_context("%s client, %s server", name(models[i][0]), name(models[i][1]));
        if (models[i][1] != LOCAL_SERVER)
        {
            ok(start_host(&host, models[i][1]), "host did not start\n");
            job.stream = host.stream;
        }
        job.count = count;
        job.go = CreateEventW(NULL, FALSE, FALSE, NULL);
        job.cancelled = CreateEventW(NULL, FALSE, FALSE, NULL);
        thread = CreateThread(NULL, 0, sync_client, &job, 0, NULL);
        ok(!WaitForSingleObject(thread, 60000 + count * 50), "client deadlocked\n");
        CloseHandle(thread);
        if (models[i][1] != LOCAL_SERVER) ok(stop_host(&host), "host did not stop\n");
        ok(job.completed + job.cancelled_calls == count, "%u completed + %u cancelled of %u calls\n",
           job.completed, job.cancelled_calls, count);
        ok(!job.wrong, "%u calls broke an invariant\n", job.wrong);
        trace("%u calls: %u completed, %u cancelled\n", count, job.completed, job.cancelled_calls);
        CloseHandle(job.go);
        CloseHandle(job.cancelled);
        winetest_pop_context();
    }
    stop_local_server();
}
