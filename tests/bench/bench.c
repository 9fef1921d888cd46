/*
 * cocancel benchmark: proxied call cost and cancel latency, per topology.
 *
 *   bench.exe calls      median round trip of a quick call, cancellation
 *                        disabled and enabled, per topology
 *   bench.exe cancel N   cancel -> caller released latency over N cancels
 *                        (median, p99), per topology
 *   bench.exe server -Embedding   (started by COM as the local server)
 *
 * Prints figures only; tools/run_bench.sh runs it on stock Wine and with the
 * shim and puts the numbers side by side.
 */

#define COBJMACROS
#define CONST_VTABLE
#include <windows.h>
#include <objbase.h>
#include <stdio.h>
#include <stdlib.h>

static const CLSID CLSID_BenchServer = {0x5a8e2f61, 0x03c4, 0x4d9b, {0x8e, 0x21, 0x7c, 0x55, 0x1a, 0x90, 0xbe, 0x42}};

static HRESULT (WINAPI *pCoCancelCall)(DWORD, ULONG);
static HRESULT (WINAPI *pCoTestCancel)(void);
static LARGE_INTEGER frequency;
static HANDLE in_call, release_call;

static double now_us(void)
{
    LARGE_INTEGER now;

    QueryPerformanceCounter(&now);
    return now.QuadPart * 1e6 / frequency.QuadPart;
}

/* The server: CreateInstance(IID_IPersist) returns at once; for IID_IUnknown
 * it runs until cancelled (polling CoTestCancel) or released. */
static HRESULT WINAPI factory_QueryInterface(IClassFactory *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IClassFactory))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI factory_AddRef(IClassFactory *iface) { return 2; }
static ULONG WINAPI factory_Release(IClassFactory *iface) { return 1; }

static HRESULT WINAPI factory_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    DWORD start = GetTickCount();

    *ppv = NULL;
    if (!IsEqualIID(riid, &IID_IUnknown)) return S_FALSE;
    SetEvent(in_call);
    while (WaitForSingleObject(release_call, 1) == WAIT_TIMEOUT && GetTickCount() - start < 10000)
        if (pCoTestCancel && pCoTestCancel() == RPC_E_CALL_CANCELED) break;
    return E_ABORT;
}

static HRESULT WINAPI factory_LockServer(IClassFactory *iface, BOOL lock) { return S_OK; }

static const IClassFactoryVtbl factory_vtbl =
{
    factory_QueryInterface, factory_AddRef, factory_Release, factory_CreateInstance, factory_LockServer,
};

static IClassFactory factory = { &factory_vtbl };

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

/* An apartment hosting the object; its stream carries the reference to the client. */
struct host
{
    DWORD model;
    IStream *stream;
    HANDLE ready, quit, thread;
};

static DWORD WINAPI host_thread(void *arg)
{
    struct host *host = arg;
    IClassFactory *remote = NULL;
    MSG msg;

    CoInitializeEx(NULL, host->model != LOCAL_SERVER ? host->model : COINIT_MULTITHREADED);
    if (host->model != LOCAL_SERVER)
        CoMarshalInterThreadInterfaceInStream(&IID_IClassFactory, (IUnknown *)&factory, &host->stream);
    else if (SUCCEEDED(CoGetClassObject(&CLSID_BenchServer, CLSCTX_LOCAL_SERVER, NULL, &IID_IClassFactory,
                                        (void **)&remote)))
        CoMarshalInterThreadInterfaceInStream(&IID_IClassFactory, (IUnknown *)remote, &host->stream);
    SetEvent(host->ready);
    while (MsgWaitForMultipleObjects(1, &host->quit, FALSE, INFINITE, QS_ALLINPUT) != WAIT_OBJECT_0)
        while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
    if (remote) IClassFactory_Release(remote);
    CoUninitialize();
    return 0;
}

/* The client: a thread in its own apartment that runs one job. */
struct client
{
    const struct topology *topology;
    BOOL enable;
    int mode;               /* 0: time quick calls, 1: cancel latency */
    unsigned int count;
    IStream *stream;
    double *samples;
    unsigned int done;
    DWORD tid;
    HANDLE call_started, call_returned, next;
    double returned_at;
};

static DWORD WINAPI client_thread(void *arg)
{
    struct client *client = arg;
    IClassFactory *proxy;
    unsigned int i, round;
    void *unk;

    CoInitializeEx(NULL, client->topology->client_model);
    if (FAILED(CoGetInterfaceAndReleaseStream(client->stream, &IID_IClassFactory, (void **)&proxy)))
    {
        CoUninitialize();
        return 1;
    }
    if (client->enable) CoEnableCallCancellation(NULL);
    for (i = 0; i < 200; i++) IClassFactory_CreateInstance(proxy, NULL, &IID_IPersist, &unk);
    if (client->mode == 0)
    {
        for (round = 0; round < client->count; round++)
        {
            double start = now_us();

            for (i = 0; i < 500; i++) IClassFactory_CreateInstance(proxy, NULL, &IID_IPersist, &unk);
            client->samples[client->done++] = (now_us() - start) / 500;
        }
    }
    else
    {
        for (i = 0; i < client->count; i++)
        {
            WaitForSingleObject(client->next, INFINITE);
            IClassFactory_CreateInstance(proxy, NULL, &IID_IUnknown, &unk);
            client->returned_at = now_us();
            SetEvent(client->call_returned);
        }
    }
    if (client->enable) CoDisableCallCancellation(NULL);
    IClassFactory_Release(proxy);
    CoUninitialize();
    return 0;
}

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

/*
 * The floor of P1: another thread's SetEvent until an STA thread is back
 * from CoWaitForMultipleHandles on that event (what any release of a
 * waiting caller costs at least).  "cancel" takes one floor sample after
 * each cancel, so that both figures come from the same minutes of the same
 * process: on this project's 2-core virtual machines the floor measured on
 * its own moved between 26 and 56 us from one run to the next.
 */
struct floor_job
{
    HANDLE go, event, back, thread;
    BOOL quit;
    double returned_at;
};

static struct floor_job floor_job;

static DWORD WINAPI floor_thread(void *arg)
{
    struct floor_job *job = arg;
    DWORD index;

    CoInitializeEx(NULL, COINIT_APARTMENTTHREADED);
    for (;;)
    {
        SetEvent(job->go);
        if (CoWaitForMultipleHandles(0, 60000, 1, &job->event, &index) != S_OK || job->quit) break;
        job->returned_at = now_us();
        SetEvent(job->back);
    }
    CoUninitialize();
    return 0;
}

static void floor_start(void)
{
    floor_job.go = CreateEventW(NULL, FALSE, FALSE, NULL);
    floor_job.event = CreateEventW(NULL, FALSE, FALSE, NULL);
    floor_job.back = CreateEventW(NULL, FALSE, FALSE, NULL);
    floor_job.quit = FALSE;
    floor_job.thread = CreateThread(NULL, 0, floor_thread, &floor_job, 0, NULL);
}

/* One sample of the floor, in microseconds; negative if the thread did not answer. */
static double floor_sample(void)
{
    double set_at;

    if (WaitForSingleObject(floor_job.go, 10000)) return -1.0;
    Sleep(1);   /* the thread is in its wait */
    set_at = now_us();
    SetEvent(floor_job.event);
    if (WaitForSingleObject(floor_job.back, 10000)) return -1.0;
    return floor_job.returned_at - set_at;
}

static void floor_stop(void)
{
    floor_job.quit = TRUE;
    SetEvent(floor_job.event);
    WaitForSingleObject(floor_job.thread, 10000);
    CloseHandle(floor_job.thread);
    CloseHandle(floor_job.go);
    CloseHandle(floor_job.event);
    CloseHandle(floor_job.back);
}

static unsigned int measure_floor(unsigned int count, double *samples)
{
    unsigned int i, n = 0;
    double sample;

    floor_start();
    for (i = 0; i < count; i++)
    {
        if ((sample = floor_sample()) < 0) break;
        samples[n++] = sample;
    }
    floor_stop();
    return n;
}

/* The floor samples taken between the cancels (see floor_sample). */
static double floor_samples[100000];
static unsigned int floor_count;

/* Runs one job against one topology; returns the number of samples taken. */
static unsigned int run(const struct topology *topology, BOOL enable, int mode, unsigned int count, double *samples)
{
    struct host host = { topology->host_model };
    struct client client = { topology, enable, mode, count };
    HANDLE thread;
    unsigned int i;

    host.ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    host.quit = CreateEventW(NULL, TRUE, FALSE, NULL);
    host.thread = CreateThread(NULL, 0, host_thread, &host, 0, NULL);
    WaitForSingleObject(host.ready, 30000);
    if (!host.stream)
    {
        SetEvent(host.quit);
        WaitForSingleObject(host.thread, 10000);
        return 0;
    }
    client.stream = host.stream;
    client.samples = samples;
    client.next = CreateEventW(NULL, FALSE, FALSE, NULL);
    client.call_returned = CreateEventW(NULL, FALSE, FALSE, NULL);
    thread = CreateThread(NULL, 0, client_thread, &client, 0, &client.tid);
    if (mode == 1)
    {
        for (i = 0; i < count; i++)
        {
            double cancelled_at, floor;

            ResetEvent(in_call);
            ResetEvent(release_call);
            SetEvent(client.next);
            if (WaitForSingleObject(in_call, 10000)) break;
            /* The caller is in its wait, as the floor's thread is: a server in
             * this process can be in the method before the caller has finished
             * posting the call (seen: the caller's wait began 30 us before the
             * cancel, STA servers), and then the figure is how long the caller
             * takes to reach its wait, not how long a blocked caller takes to be
             * released. */
            Sleep(1);
            cancelled_at = now_us();
            pCoCancelCall(client.tid, 0);
            if (WaitForSingleObject(client.call_returned, 10000)) break;
            samples[client.done++] = client.returned_at - cancelled_at;
            SetEvent(release_call);
            if (floor_count < ARRAYSIZE(floor_samples) && (floor = floor_sample()) >= 0)
                floor_samples[floor_count++] = floor;
        }
        SetEvent(release_call);
        while (client.done < count && i < count) { SetEvent(client.next); i++; }
    }
    WaitForSingleObject(thread, 60000);
    CloseHandle(thread);
    SetEvent(host.quit);
    WaitForSingleObject(host.thread, 10000);
    CloseHandle(host.thread);
    return client.done;
}

static void register_server(void)
{
    WCHAR key[128] = L"CLSID\\", exe[MAX_PATH], command[MAX_PATH + 32] = L"\"";
    HKEY hkey;

    GetModuleFileNameW(NULL, exe, MAX_PATH);
    wcscat(command, exe);
    wcscat(command, L"\" server");
    StringFromGUID2(&CLSID_BenchServer, key + wcslen(key), 64);
    wcscat(key, L"\\LocalServer32");
    if (!RegCreateKeyExW(HKEY_CLASSES_ROOT, key, 0, NULL, 0, KEY_WRITE, NULL, &hkey, NULL))
    {
        RegSetValueExW(hkey, NULL, 0, REG_SZ, (BYTE *)command, (wcslen(command) + 1) * sizeof(WCHAR));
        RegCloseKey(hkey);
    }
}

static void unregister_server(void)
{
    WCHAR key[128] = L"CLSID\\";

    StringFromGUID2(&CLSID_BenchServer, key + wcslen(key), 64);
    RegDeleteTreeW(HKEY_CLASSES_ROOT, key);
}

int main(int argc, char **argv)
{
    HMODULE ole32 = GetModuleHandleW(L"ole32.dll");
    static double samples[100000];
    unsigned int i, n, count;

    setvbuf(stdout, NULL, _IONBF, 0);
    QueryPerformanceFrequency(&frequency);
    pCoCancelCall = (void *)GetProcAddress(ole32, "CoCancelCall");
    pCoTestCancel = (void *)GetProcAddress(ole32, "CoTestCancel");
    in_call = CreateEventW(NULL, TRUE, FALSE, L"cocancel_bench_in_call");
    release_call = CreateEventW(NULL, TRUE, FALSE, L"cocancel_bench_release");

    if (argc > 1 && !strcmp(argv[1], "server"))
    {
        HANDLE quit = CreateEventW(NULL, TRUE, FALSE, L"cocancel_bench_quit");
        DWORD cookie;

        CoInitializeEx(NULL, COINIT_MULTITHREADED);
        CoRegisterClassObject(&CLSID_BenchServer, (IUnknown *)&factory, CLSCTX_LOCAL_SERVER, REGCLS_MULTIPLEUSE, &cookie);
        WaitForSingleObject(quit, 600000);
        CoRevokeClassObject(cookie);
        CoUninitialize();
        return 0;
    }

    register_server();
    if (argc > 1 && !strcmp(argv[1], "calls"))
    {
        for (i = 0; i < ARRAYSIZE(topologies); i++)
        {
            n = run(&topologies[i], FALSE, 0, 9, samples);
            printf("calls\t%s\tdisabled\t%.2f\n", topologies[i].name, n ? percentile(samples, n, 0.5) : -1.0);
            if (!pCoCancelCall) continue;
            n = run(&topologies[i], TRUE, 0, 9, samples);
            printf("calls\t%s\tenabled\t%.2f\n", topologies[i].name, n ? percentile(samples, n, 0.5) : -1.0);
        }
    }
    else if (argc > 2 && !strcmp(argv[1], "cancel") && pCoCancelCall)
    {
        count = min(atoi(argv[2]), (int)ARRAYSIZE(samples));
        floor_start();
        for (i = 0; i < ARRAYSIZE(topologies); i++)
        {
            n = run(&topologies[i], TRUE, 1, count, samples);
            if (n) printf("cancel\t%s\t%u\t%.1f\t%.1f\n", topologies[i].name, n,
                          percentile(samples, n, 0.5), percentile(samples, n, 0.99));
            else printf("cancel\t%s\t0\t-\t-\n", topologies[i].name);
        }
        floor_stop();
        if (floor_count)
            printf("floor\tSetEvent -> STA CoWait back, between the cancels\t%u\t%.1f\t%.1f\n", floor_count,
                   percentile(floor_samples, floor_count, 0.5), percentile(floor_samples, floor_count, 0.99));
    }
    else if (argc > 2 && !strcmp(argv[1], "floor"))
    {
        count = min(atoi(argv[2]), (int)ARRAYSIZE(samples));
        n = measure_floor(count, samples);
        if (n) printf("floor\tSetEvent -> STA CoWait back\t%u\t%.1f\t%.1f\n", n, percentile(samples, n, 0.5),
                      percentile(samples, n, 0.99));
    }
    else fprintf(stderr, "usage: bench.exe calls | cancel N | floor N\n");
    SetEvent(CreateEventW(NULL, TRUE, FALSE, L"cocancel_bench_quit"));
    unregister_server();
    return 0;
}
