/*
 * Benchmark of asynchronous calls (part of "make bench"; prints figures,
 * asserts nothing).
 *
 *   asyncbench.exe ratio          Begin_+Finish_ round trip vs the synchronous call, per topology
 *   asyncbench.exe cancel N       Cancel(0) -> Finish_ returns, N times per topology
 *   asyncbench.exe outstanding    1,000 calls begun from one thread, then finished
 *   asyncbench.exe served         a synchronous call served through the server's call object vs the
 *                                 same call served by the synchronous method, per topology
 *
 * Output lines are tab-separated for tools/run_bench.sh.  The interfaces
 * are the conformance test's (dlls/ole32/tests/asynccall_ps.idl).
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdio.h>
#include <stdlib.h>
#include <windows.h>
#include <objbase.h>
#include <psapi.h>
#include <rpcproxy.h>

#include "asynccall_ps.h"

static const CLSID CLSID_AsyncBenchServer = {0x2c3e5a1d, 0x7c4b, 0x4e8e, {0x9a, 0x51, 0x1f, 0x0d, 0x6b, 0x2a, 0x9c, 0x01}};
static const CLSID CLSID_AsyncBenchServed = {0x2c3e5a1c, 0x7c4b, 0x4e8e, {0x9a, 0x51, 0x1f, 0x0d, 0x6b, 0x2a, 0x9c, 0x01}};

static HRESULT (WINAPI *pCoTestCancel)(void);
static LARGE_INTEGER frequency;
static HANDLE slow_started, slow_done;

static double now_us(void)
{
    LARGE_INTEGER counter;

    QueryPerformanceCounter(&counter);
    return counter.QuadPart * 1e6 / frequency.QuadPart;
}

#include "async_ps.h"

/* The server object: Add, and Slow, which stops as soon as it sees the cancel. */
static HRESULT WINAPI obj_Add(ICcAsyncTest *iface, int a, int b, int *sum)
{
    *sum = a + b;
    return S_OK;
}

static HRESULT WINAPI obj_Slow(ICcAsyncTest *iface, DWORD ms, DWORD *seen)
{
    DWORD start = GetTickCount();
    HRESULT hr = S_OK;

    *seen = 0;
    SetEvent(slow_started);
    while (GetTickCount() - start < ms)
    {
        if (pCoTestCancel && pCoTestCancel() == RPC_E_CALL_CANCELED)
        {
            *seen = 1;
            hr = E_ABORT;
            break;
        }
        Sleep(1);
    }
    SetEvent(slow_done);
    return hr;
}

/*
 * The served object: Add processed through its own call object, which
 * aggregates the stub's object and signals it from Begin_ (server-side
 * asynchronous processing at its cheapest: what the figure measures is the
 * machinery, not the server's work).
 */
struct bench_call
{
    IUnknown IUnknown_inner;
    AsyncICcAsyncTest AsyncICcAsyncTest_iface;
    LONG refcount;
    IUnknown *outer;
    int sum;
};

static HRESULT WINAPI bench_inner_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    struct bench_call *call = CONTAINING_RECORD(iface, struct bench_call, IUnknown_inner);

    if (IsEqualIID(riid, &IID_IUnknown)) *ppv = &call->IUnknown_inner;
    else if (IsEqualIID(riid, &IID_AsyncICcAsyncTest)) *ppv = &call->AsyncICcAsyncTest_iface;
    else
    {
        *ppv = NULL;
        return E_NOINTERFACE;
    }
    IUnknown_AddRef((IUnknown *)*ppv);
    return S_OK;
}

static ULONG WINAPI bench_inner_AddRef(IUnknown *iface)
{
    return InterlockedIncrement(&CONTAINING_RECORD(iface, struct bench_call, IUnknown_inner)->refcount);
}

static ULONG WINAPI bench_inner_Release(IUnknown *iface)
{
    struct bench_call *call = CONTAINING_RECORD(iface, struct bench_call, IUnknown_inner);
    ULONG ref = InterlockedDecrement(&call->refcount);

    if (!ref) HeapFree(GetProcessHeap(), 0, call);
    return ref;
}

static const IUnknownVtbl bench_inner_vtbl = { bench_inner_QueryInterface, bench_inner_AddRef, bench_inner_Release };

static HRESULT WINAPI bench_QueryInterface(AsyncICcAsyncTest *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(CONTAINING_RECORD(iface, struct bench_call, AsyncICcAsyncTest_iface)->outer,
                                   riid, ppv);
}

static ULONG WINAPI bench_AddRef(AsyncICcAsyncTest *iface)
{
    return IUnknown_AddRef(CONTAINING_RECORD(iface, struct bench_call, AsyncICcAsyncTest_iface)->outer);
}

static ULONG WINAPI bench_Release(AsyncICcAsyncTest *iface)
{
    return IUnknown_Release(CONTAINING_RECORD(iface, struct bench_call, AsyncICcAsyncTest_iface)->outer);
}

static HRESULT WINAPI bench_Begin_Add(AsyncICcAsyncTest *iface, int a, int b)
{
    struct bench_call *call = CONTAINING_RECORD(iface, struct bench_call, AsyncICcAsyncTest_iface);
    ISynchronize *sync;

    /* Not the synchronous method's result: the benchmark checks which one served it. */
    call->sum = a + b + 1000;
    if (SUCCEEDED(IUnknown_QueryInterface(call->outer, &IID_ISynchronize, (void **)&sync)))
    {
        ISynchronize_Signal(sync);
        ISynchronize_Release(sync);
    }
    return S_OK;
}

static HRESULT WINAPI bench_Finish_Add(AsyncICcAsyncTest *iface, int *sum)
{
    *sum = CONTAINING_RECORD(iface, struct bench_call, AsyncICcAsyncTest_iface)->sum;
    return S_OK;
}

static const AsyncICcAsyncTestVtbl bench_call_vtbl =
{
    bench_QueryInterface, bench_AddRef, bench_Release, bench_Begin_Add, bench_Finish_Add,
    (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl,
    (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl,
    (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl,
    (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl,
};

static ICcAsyncTest served;
static ICallFactory served_factory;

static HRESULT WINAPI served_QueryInterface(ICcAsyncTest *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_ICallFactory))
    {
        *ppv = &served_factory;
        return S_OK;
    }
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICcAsyncTest))
    {
        *ppv = &served;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static const ICcAsyncTestVtbl served_vtbl =
{
    served_QueryInterface, obj_AddRef, obj_Release, obj_Add, obj_Slow,
    (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl,
    (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl,
};

static ICcAsyncTest served = { &served_vtbl };

static HRESULT WINAPI served_factory_QueryInterface(ICallFactory *iface, REFIID riid, void **ppv)
{
    return served_QueryInterface(&served, riid, ppv);
}

static ULONG WINAPI served_factory_AddRef(ICallFactory *iface) { return 2; }
static ULONG WINAPI served_factory_Release(ICallFactory *iface) { return 1; }

static HRESULT WINAPI served_factory_CreateCall(ICallFactory *iface, REFIID riid, IUnknown *outer, REFIID riid2,
                                                IUnknown **ppv)
{
    struct bench_call *call;
    HRESULT hr;

    *ppv = NULL;
    if (!IsEqualIID(riid, &IID_AsyncICcAsyncTest)) return E_NOINTERFACE;
    if (!(call = HeapAlloc(GetProcessHeap(), 0, sizeof(*call)))) return E_OUTOFMEMORY;
    call->IUnknown_inner.lpVtbl = &bench_inner_vtbl;
    call->AsyncICcAsyncTest_iface.lpVtbl = &bench_call_vtbl;
    call->refcount = 1;
    call->outer = outer ? outer : &call->IUnknown_inner;
    call->sum = 0;
    hr = IUnknown_QueryInterface(&call->IUnknown_inner, riid2, (void **)ppv);
    IUnknown_Release(&call->IUnknown_inner);
    return hr;
}

static const ICallFactoryVtbl served_factory_vtbl =
{
    served_factory_QueryInterface, served_factory_AddRef, served_factory_Release, served_factory_CreateCall,
};

static ICallFactory served_factory = { &served_factory_vtbl };

static HRESULT WINAPI served_class_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    *ppv = NULL;
    if (outer) return CLASS_E_NOAGGREGATION;
    return served_QueryInterface(&served, riid, ppv);
}

static const IClassFactoryVtbl served_class_vtbl =
{
    obj_factory_QueryInterface, obj_factory_AddRef, obj_factory_Release, served_class_CreateInstance,
    obj_factory_LockServer,
};

static IClassFactory served_class = { &served_class_vtbl };

struct topology
{
    const char *name;
    DWORD client_model;
    DWORD host_model;   /* LOCAL_SERVER: a local server process */
};

/* Not an apartment type (COINIT_MULTITHREADED is 0): the object lives in a local server. */
#define LOCAL_SERVER 0xffffffffu

static const struct topology topologies[] =
{
    { "MTA->STA in-proc",   COINIT_MULTITHREADED,     COINIT_APARTMENTTHREADED },
    { "STA->MTA in-proc",   COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED },
    { "STA->STA in-proc",   COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED },
    { "MTA->local server",  COINIT_MULTITHREADED,     LOCAL_SERVER },
    { "STA->local server",  COINIT_APARTMENTTHREADED, LOCAL_SERVER },
};

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *samples, unsigned int count, double p)
{
    unsigned int index;

    qsort(samples, count, sizeof(*samples), compare_double);
    index = (unsigned int)(p * (count - 1) + 0.5);
    return samples[index];
}

/* Resident memory of the process (Wine reports the working set from the host). */
static SIZE_T resident_bytes(void)
{
    PROCESS_MEMORY_COUNTERS counters = { sizeof(counters) };

    GetProcessMemoryInfo(GetCurrentProcess(), &counters, sizeof(counters));
    return counters.WorkingSetSize;
}

/* Committed private memory of the process (Wine does not fill in PrivateUsage). */
static SIZE_T private_bytes(void)
{
    MEMORY_BASIC_INFORMATION info;
    const BYTE *address = NULL;
    SIZE_T total = 0;

    while (VirtualQuery(address, &info, sizeof(info)) == sizeof(info))
    {
        if (info.State == MEM_COMMIT && info.Type == MEM_PRIVATE) total += info.RegionSize;
        address = (const BYTE *)info.BaseAddress + info.RegionSize;
        if (!address) break;
    }
    return total;
}

struct job
{
    const struct topology *topology;
    const char *mode;
    unsigned int count;
    IStream *stream, *served_stream;
};

static double samples[20000], samples2[20000];

static void job_ratio(const struct job *job, ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call = create_call(proxy);
    unsigned int round, i;
    int sum;

    if (!call)
    {
        printf("ratio\t%s\t-\t-\n", job->topology->name);
        return;
    }
    for (i = 0; i < 200; i++)
    {
        ICcAsyncTest_Add(proxy, i, 1, &sum);
        AsyncICcAsyncTest_Begin_Add(call, i, 1);
        AsyncICcAsyncTest_Finish_Add(call, &sum);
    }
    for (round = 0; round < 9; round++)
    {
        double start = now_us();

        for (i = 0; i < 300; i++) ICcAsyncTest_Add(proxy, i, 1, &sum);
        samples[round] = (now_us() - start) / 300;
        start = now_us();
        for (i = 0; i < 300; i++)
        {
            AsyncICcAsyncTest_Begin_Add(call, i, 1);
            AsyncICcAsyncTest_Finish_Add(call, &sum);
        }
        samples2[round] = (now_us() - start) / 300;
    }
    printf("ratio\t%s\t%.2f\t%.2f\n", job->topology->name, percentile(samples, 9, 0.5), percentile(samples2, 9, 0.5));
    AsyncICcAsyncTest_Release(call);
}

/* The same synchronous call to obj and to the served object, alternating rounds. */
static void job_served(const struct job *job, ICcAsyncTest *proxy)
{
    ICcAsyncTest *other = NULL;
    unsigned int round, i;
    int sum;

    if (job->served_stream) CoGetInterfaceAndReleaseStream(job->served_stream, &IID_ICcAsyncTest, (void **)&other);
    else CoCreateInstance(&CLSID_AsyncBenchServed, NULL, CLSCTX_LOCAL_SERVER, &IID_ICcAsyncTest, (void **)&other);
    /* The call object's Add adds 1000: no figure unless it serves the calls. */
    if (!other || FAILED(ICcAsyncTest_Add(other, 1, 2, &sum)) || sum != 1003)
    {
        printf("served\t%s\t-\t-\n", job->topology->name);
        if (other) ICcAsyncTest_Release(other);
        return;
    }
    for (i = 0; i < 200; i++)
    {
        ICcAsyncTest_Add(proxy, i, 1, &sum);
        ICcAsyncTest_Add(other, i, 1, &sum);
    }
    for (round = 0; round < 9; round++)
    {
        double start = now_us();

        for (i = 0; i < 300; i++) ICcAsyncTest_Add(proxy, i, 1, &sum);
        samples[round] = (now_us() - start) / 300;
        start = now_us();
        for (i = 0; i < 300; i++) ICcAsyncTest_Add(other, i, 1, &sum);
        samples2[round] = (now_us() - start) / 300;
    }
    printf("served\t%s\t%.2f\t%.2f\n", job->topology->name, percentile(samples, 9, 0.5),
           percentile(samples2, 9, 0.5));
    ICcAsyncTest_Release(other);
}

static void job_cancel(const struct job *job, ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call = create_call(proxy);
    ICancelMethodCalls *cancel;
    unsigned int i, n = 0;
    DWORD seen;

    if (!call)
    {
        printf("cancel\t%s\t0\t-\t-\n", job->topology->name);
        return;
    }
    AsyncICcAsyncTest_QueryInterface(call, &IID_ICancelMethodCalls, (void **)&cancel);
    for (i = 0; i < job->count; i++)
    {
        double start;

        ResetEvent(slow_started);
        ResetEvent(slow_done);
        if (FAILED(AsyncICcAsyncTest_Begin_Slow(call, 10000))) break;
        if (WaitForSingleObject(slow_started, 10000)) break;
        start = now_us();
        ICancelMethodCalls_Cancel(cancel, 0);
        if (AsyncICcAsyncTest_Finish_Slow(call, &seen) == RPC_E_CALL_CANCELED) samples[n++] = now_us() - start;
        /* The next call starts once the server has stopped. */
        if (WaitForSingleObject(slow_done, 10000)) break;
    }
    if (n) printf("cancel\t%s\t%u\t%.1f\t%.1f\n", job->topology->name, n, percentile(samples, n, 0.5),
                  percentile(samples, n, 0.99));
    else printf("cancel\t%s\t0\t-\t-\n", job->topology->name);
    ICancelMethodCalls_Release(cancel);
    AsyncICcAsyncTest_Release(call);
}

static void job_outstanding(const struct job *job, ICcAsyncTest *proxy)
{
    static AsyncICcAsyncTest *calls[1000];
    unsigned int i, right = 0;
    SIZE_T before, after, resident_before, resident_after;
    double start, begun, end;
    int sum;

    /* Warm up: the first call pays for one-time set-up. */
    if ((calls[0] = create_call(proxy)))
    {
        AsyncICcAsyncTest_Begin_Add(calls[0], 1, 1);
        AsyncICcAsyncTest_Finish_Add(calls[0], &sum);
        AsyncICcAsyncTest_Release(calls[0]);
    }
    before = private_bytes();
    resident_before = resident_bytes();
    start = now_us();
    for (i = 0; i < ARRAYSIZE(calls); i++)
        if ((calls[i] = create_call(proxy))) AsyncICcAsyncTest_Begin_Add(calls[i], i, 1);
    begun = now_us();
    after = private_bytes();
    resident_after = resident_bytes();
    for (i = 0; i < ARRAYSIZE(calls); i++)
    {
        if (!calls[i]) continue;
        if (AsyncICcAsyncTest_Finish_Add(calls[i], &sum) == S_OK && sum == (int)i + 1) right++;
        AsyncICcAsyncTest_Release(calls[i]);
    }
    end = now_us();
    printf("outstanding\t%s\t%u\t%.1f\t%.1f\t%.1f\t%.1f\n", job->topology->name, right, (begun - start) / 1000,
           (end - start) / 1000, (double)(resident_after > resident_before ? resident_after - resident_before : 0)
           / 1024 / ARRAYSIZE(calls), (double)(after > before ? after - before : 0) / 1024 / ARRAYSIZE(calls));
}

static DWORD WINAPI client_thread(void *arg)
{
    struct job *job = arg;
    ICcAsyncTest *proxy = NULL;
    DWORD cookie;

    CoInitializeEx(NULL, job->topology->client_model);
    cookie = register_ps();
    if (job->stream) CoGetInterfaceAndReleaseStream(job->stream, &IID_ICcAsyncTest, (void **)&proxy);
    else CoCreateInstance(&CLSID_AsyncBenchServer, NULL, CLSCTX_LOCAL_SERVER, &IID_ICcAsyncTest, (void **)&proxy);
    if (proxy)
    {
        if (!strcmp(job->mode, "ratio")) job_ratio(job, proxy);
        else if (!strcmp(job->mode, "served")) job_served(job, proxy);
        else if (!strcmp(job->mode, "cancel")) job_cancel(job, proxy);
        else job_outstanding(job, proxy);
        ICcAsyncTest_Release(proxy);
    }
    else printf("%s\t%s\tno proxy\n", job->mode, job->topology->name);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void run(const struct topology *topology, const char *mode, unsigned int count)
{
    struct job job = { topology, mode, count };
    struct host host, served_host;
    BOOL two = !strcmp(mode, "served");
    HANDLE thread;

    if (topology->host_model != LOCAL_SERVER)
    {
        start_host(&host, topology->host_model);
        job.stream = host.stream;
        if (two)
        {
            start_host_of(&served_host, topology->host_model, (IUnknown *)&served);
            job.served_stream = served_host.stream;
        }
    }
    thread = CreateThread(NULL, 0, client_thread, &job, 0, NULL);
    if (WaitForSingleObject(thread, 600000)) fprintf(stderr, "%s: %s did not finish\n", mode, topology->name);
    CloseHandle(thread);
    if (topology->host_model != LOCAL_SERVER)
    {
        stop_host(&host);
        if (two) stop_host(&served_host);
    }
}

int main(int argc, char **argv)
{
    unsigned int i, count = 0;
    const char *mode = argc > 1 ? argv[1] : "";

    setvbuf(stdout, NULL, _IONBF, 0);
    QueryPerformanceFrequency(&frequency);
    pCoTestCancel = (void *)GetProcAddress(GetModuleHandleW(L"ole32.dll"), "CoTestCancel");
    slow_started = CreateEventW(NULL, FALSE, FALSE, L"cocancel_asyncbench_started");
    slow_done = CreateEventW(NULL, FALSE, FALSE, L"cocancel_asyncbench_done");
    init_ps();

    if (!strcmp(mode, "server"))
    {
        DWORD cookie = 0;

        /* The MTA serve_local serves from holds the served object's class too. */
        CoInitializeEx(NULL, COINIT_MULTITHREADED);
        CoRegisterClassObject(&CLSID_AsyncBenchServed, (IUnknown *)&served_class, CLSCTX_LOCAL_SERVER,
                              REGCLS_MULTIPLEUSE, &cookie);
        serve_local(&CLSID_AsyncBenchServer, L"cocancel_asyncbench_quit", 900000);
        if (cookie) CoRevokeClassObject(cookie);
        CoUninitialize();
        return 0;
    }
    if (strcmp(mode, "ratio") && strcmp(mode, "cancel") && strcmp(mode, "outstanding") && strcmp(mode, "served"))
    {
        fprintf(stderr, "usage: asyncbench.exe ratio | cancel N | outstanding | served\n");
        return 1;
    }
    if (!strcmp(mode, "cancel")) count = argc > 2 ? min(atoi(argv[2]), (int)ARRAYSIZE(samples)) : 1000;
    register_local_server(&CLSID_AsyncBenchServer, L" server");
    register_local_server(&CLSID_AsyncBenchServed, L" server");
    for (i = 0; i < ARRAYSIZE(topologies); i++)
    {
        if (!strcmp(mode, "outstanding") && topologies[i].client_model != COINIT_MULTITHREADED) continue;
        run(&topologies[i], mode, count);
    }
    SetEvent(CreateEventW(NULL, TRUE, FALSE, L"cocancel_asyncbench_quit"));
    unregister_local_server(&CLSID_AsyncBenchServer);
    unregister_local_server(&CLSID_AsyncBenchServed);
    return 0;
}
