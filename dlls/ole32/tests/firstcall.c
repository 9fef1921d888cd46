/*
 * A cancellable call made as the first thing a process does.
 *
 * Programs arm a watchdog (WIL's com_timeout, say) before their first COM
 * call; on Windows, CoCancelCall on a thread that is inside a proxied call
 * reaches that call whenever it was made.  Each child process here makes a
 * blocking proxied call as soon as it has an object to call (an STA of its
 * own, or a local server started by COM), with cancellation enabled, while
 * a watchdog thread waits until the server is inside the call and cancels
 * it.  The parent runs the children one after another, with a second
 * process keeping both cores busy.
 *
 * Usage: firstcall [count]   (count children per kind of call; default 20)
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define COBJMACROS
#define CONST_VTABLE
#include "windef.h"
#include "winbase.h"
#include "objbase.h"

#include "wine/test.h"

static HRESULT (WINAPI *pCoCancelCall)(DWORD, ULONG);
static HRESULT (WINAPI *pCoTestCancel)(void);

#define SLOW_RESULT ((HRESULT)0x8004c0de)   /* CreateInstance's result when nobody cancels */

static DWORD parent_pid;
static HANDLE in_call;      /* set by the server when CreateInstance starts */

static void make_name(WCHAR *name, size_t size, const WCHAR *what)
{
    swprintf(name, size, L"cocancel_firstcall_%ls_%lx", what, parent_pid);
}

/* The class of the local server: one per parent, so that runs do not meet. */
static void server_clsid(CLSID *clsid)
{
    static const CLSID base = {0x5a61d3e2, 0x0c4f, 0x4b9d, {0x8e, 0x21, 0x3f, 0x77, 0x09, 0xb4, 0x6d, 0x10}};

    *clsid = base;
    clsid->Data1 ^= parent_pid;
}

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

/* The views of file mappings in this process (Wine 8.0 answers 0 to GetProcessHandleCount). */
static DWORD count_mapped_views(void)
{
    MEMORY_BASIC_INFORMATION info;
    const BYTE *p = NULL;
    void *last_base = NULL;
    DWORD count = 0;

    while (VirtualQuery(p, &info, sizeof(info)))
    {
        if (info.Type == MEM_MAPPED && info.AllocationBase != last_base)
        {
            last_base = info.AllocationBase;
            count++;
        }
        if (p + info.RegionSize < p) break;
        p = (const BYTE *)info.BaseAddress + info.RegionSize;
    }
    return count;
}

/*
 * Runs until the client's cancel is seen (CoTestCancel), 10 s at most, then
 * asks 100 times more: a server polls a cancelled call until it has cleaned
 * up, and that must cost it nothing that lasts, however many client
 * processes it has served.  Asked for IID_IPersist, answers how many views
 * of file mappings it has instead (as FACILITY_ITF's error code).
 */
static HRESULT WINAPI factory_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    DWORD start = GetTickCount();
    unsigned int i;

    *ppv = NULL;
    if (IsEqualIID(riid, &IID_IPersist))
    {
        /* An error code, which the proxy hands back as it is. */
        return MAKE_HRESULT(SEVERITY_ERROR, FACILITY_ITF, min(count_mapped_views(), 0xffff));
    }
    SetEvent(in_call);
    while (GetTickCount() - start < 10000)
    {
        if (pCoTestCancel && pCoTestCancel() == RPC_E_CALL_CANCELED)
        {
            for (i = 0; i < 100; i++) pCoTestCancel();
            return E_ABORT;
        }
        Sleep(5);
    }
    return SLOW_RESULT;
}

static HRESULT WINAPI factory_LockServer(IClassFactory *iface, BOOL lock) { return S_OK; }

static const IClassFactoryVtbl factory_vtbl =
{
    factory_QueryInterface,
    factory_AddRef,
    factory_Release,
    factory_CreateInstance,
    factory_LockServer,
};

static IClassFactory factory = { &factory_vtbl };

/* The apartment of an in-process object: an STA thread pumping messages. */
struct host
{
    IStream *stream;
    HANDLE ready, quit, thread;
};

static DWORD WINAPI host_thread(void *arg)
{
    struct host *host = arg;
    MSG msg;

    CoInitializeEx(NULL, COINIT_APARTMENTTHREADED);
    CoMarshalInterThreadInterfaceInStream(&IID_IClassFactory, (IUnknown *)&factory, &host->stream);
    SetEvent(host->ready);
    while (MsgWaitForMultipleObjects(1, &host->quit, FALSE, 30000, QS_ALLINPUT) == WAIT_OBJECT_0 + 1)
        while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
    CoUninitialize();
    return 0;
}

struct watchdog
{
    DWORD tid;                  /* the caller */
    HANDLE thread;
    HRESULT hr;                 /* what the accepted cancel (or the last one) answered */
    unsigned int refused;       /* answers other than S_OK while the caller was inside the call */
    double longest_ms;          /* the longest CoCancelCall */
    LARGE_INTEGER cancelled;    /* when the accepted cancel returned */
};

static double ms_since(LARGE_INTEGER start)
{
    LARGE_INTEGER now, freq;

    QueryPerformanceCounter(&now);
    QueryPerformanceFrequency(&freq);
    return (now.QuadPart - start.QuadPart) * 1000.0 / freq.QuadPart;
}

/* Once the server is inside the call, cancels it every 20 ms until a cancel is accepted (5 s at most). */
static DWORD WINAPI watchdog_thread(void *arg)
{
    struct watchdog *dog = arg;
    unsigned int i;

    dog->hr = E_FAIL;
    if (WaitForSingleObject(in_call, 10000)) return 0;
    for (i = 0; i < 250; i++)
    {
        LARGE_INTEGER start;
        double took;

        QueryPerformanceCounter(&start);
        dog->hr = pCoCancelCall(dog->tid, 0);
        took = ms_since(start);
        if (took > dog->longest_ms) dog->longest_ms = took;
        if (dog->hr == S_OK)
        {
            QueryPerformanceCounter(&dog->cancelled);
            return 0;
        }
        dog->refused++;
        Sleep(20);
    }
    return 0;
}

static void child(const char *kind)
{
    BOOL local = !strcmp(kind, "local"), sta = !strcmp(kind, "sta");
    struct host host = { 0 };
    struct watchdog dog = { 0 };
    IClassFactory *proxy = NULL;
    LARGE_INTEGER process_start;
    IUnknown *unk = NULL;
    WCHAR name[64];
    HRESULT hr;
    CLSID clsid;

    QueryPerformanceCounter(&process_start);
    if (local)
    {
        make_name(name, ARRAY_SIZE(name), L"in_call");
        in_call = OpenEventW(EVENT_ALL_ACCESS, FALSE, name);
    }
    else
    {
        in_call = CreateEventW(NULL, TRUE, FALSE, NULL);
        host.ready = CreateEventW(NULL, TRUE, FALSE, NULL);
        host.quit = CreateEventW(NULL, TRUE, FALSE, NULL);
        host.thread = CreateThread(NULL, 0, host_thread, &host, 0, NULL);
        ok(!WaitForSingleObject(host.ready, 10000), "the host apartment did not start\n");
    }
    ok(in_call != NULL, "no in-call event\n");

    CoInitializeEx(NULL, sta ? COINIT_APARTMENTTHREADED : COINIT_MULTITHREADED);
    hr = CoEnableCallCancellation(NULL);
    ok(hr == S_OK, "CoEnableCallCancellation got %#lx\n", hr);
    if (local)
    {
        server_clsid(&clsid);
        hr = CoGetClassObject(&clsid, CLSCTX_LOCAL_SERVER, NULL, &IID_IClassFactory, (void **)&proxy);
    }
    else hr = CoGetInterfaceAndReleaseStream(host.stream, &IID_IClassFactory, (void **)&proxy);
    ok(hr == S_OK, "getting the object got %#lx\n", hr);

    if (proxy)
    {
        dog.tid = GetCurrentThreadId();
        dog.thread = CreateThread(NULL, 0, watchdog_thread, &dog, 0, NULL);
        hr = IClassFactory_CreateInstance(proxy, NULL, &IID_IUnknown, (void **)&unk);
        ok(hr == RPC_E_CALL_CANCELED, "the call got %#lx\n", hr);
        ok(!WaitForSingleObject(dog.thread, 10000), "the watchdog did not end\n");
        ok(dog.hr == S_OK, "CoCancelCall got %#lx\n", dog.hr);
        /* From the moment the server is inside the call, the call can be cancelled. */
        ok(!dog.refused, "CoCancelCall refused %u times while the caller was inside the call (last %#lx)\n",
           dog.refused, dog.hr);
        if (dog.hr == S_OK)
        {
            double released = ms_since(dog.cancelled);

            /* Loose bounds: a busy machine may be slow, a lost cancel is not. */
            ok(released < 2000, "the caller was released %.1f ms after the cancel\n", released);
            ok(dog.longest_ms < 1000, "CoCancelCall took %.1f ms\n", dog.longest_ms);
            trace("firstcall-figures: kind=%s cancel_ms=%.3f released_ms=%.3f since_start_ms=%.1f\n",
                  kind, dog.longest_ms, released, ms_since(process_start));
        }
        CloseHandle(dog.thread);
        if (unk) IUnknown_Release(unk);
        IClassFactory_Release(proxy);
    }
    CoUninitialize();
    if (host.thread)
    {
        SetEvent(host.quit);
        ok(!WaitForSingleObject(host.thread, 10000), "the host apartment did not end\n");
        CloseHandle(host.thread);
    }
}

/* The local server: serves until the parent lets it go (or 15 minutes pass). */
static void run_server(void)
{
    HANDLE quit;
    WCHAR name[64];
    DWORD cookie;
    CLSID clsid;
    HRESULT hr;

    make_name(name, ARRAY_SIZE(name), L"quit");
    quit = CreateEventW(NULL, TRUE, FALSE, name);
    make_name(name, ARRAY_SIZE(name), L"in_call");
    in_call = CreateEventW(NULL, FALSE, FALSE, name);
    server_clsid(&clsid);
    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    hr = CoRegisterClassObject(&clsid, (IUnknown *)&factory, CLSCTX_LOCAL_SERVER, REGCLS_MULTIPLEUSE, &cookie);
    ok(hr == S_OK, "CoRegisterClassObject got %#lx\n", hr);
    WaitForSingleObject(quit, 900000);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    CloseHandle(quit);
}

static DWORD WINAPI spin_thread(void *arg)
{
    volatile unsigned int n = 0;

    while (WaitForSingleObject(arg, 0) == WAIT_TIMEOUT) n++;
    return n;
}

/* Keeps both cores busy until the parent lets it go (or 15 minutes pass). */
static void run_busy(void)
{
    HANDLE quit, threads[2];
    WCHAR name[64];
    unsigned int i;

    make_name(name, ARRAY_SIZE(name), L"busy_quit");
    quit = CreateEventW(NULL, TRUE, FALSE, name);
    for (i = 0; i < ARRAY_SIZE(threads); i++) threads[i] = CreateThread(NULL, 0, spin_thread, quit, 0, NULL);
    WaitForSingleObject(quit, 900000);
    SetEvent(quit);
    WaitForMultipleObjects(ARRAY_SIZE(threads), threads, TRUE, 10000);
    for (i = 0; i < ARRAY_SIZE(threads); i++) CloseHandle(threads[i]);
    CloseHandle(quit);
}

static HANDLE start_self(const char *args)
{
    PROCESS_INFORMATION info;
    STARTUPINFOA startup = { sizeof(startup) };
    char exe[MAX_PATH], command[MAX_PATH + 128];

    unsigned int attempt;

    GetModuleFileNameA(NULL, exe, sizeof(exe));
    snprintf(command, sizeof(command), "\"%s\" firstcall %s %lx", exe, args, parent_pid);
    /* Wine decides whether CreateProcess succeeds before any of the child's Windows code
     * runs (the child reports its start-up as done from ntdll's Unix side, before the PE
     * loader maps a single DLL), so a failure here is the host's, not cocancel's: one run in
     * many of this test's 60-odd children saw it fail once on a loaded 2-core machine. Try
     * again, say so, and fail only if it keeps failing. */
    for (attempt = 0; attempt < 3; attempt++)
    {
        if (CreateProcessA(NULL, command, NULL, NULL, FALSE, 0, NULL, NULL, &startup, &info))
        {
            CloseHandle(info.hThread);
            return info.hProcess;
        }
        trace("CreateProcess(%s) failed (attempt %u): %lu\n", args, attempt + 1, GetLastError());
        Sleep(100);
    }
    return NULL;
}

static BOOL register_server(void)
{
    WCHAR key[128], exe[MAX_PATH], command[MAX_PATH + 64];
    CLSID clsid;
    HKEY hkey;
    LONG ret;

    server_clsid(&clsid);
    GetModuleFileNameW(NULL, exe, MAX_PATH);
    swprintf(command, ARRAY_SIZE(command), L"\"%ls\" firstcall server %lx", exe, parent_pid);
    StringFromGUID2(&clsid, key + wcslen(wcscpy(key, L"CLSID\\")), 64);
    wcscat(key, L"\\LocalServer32");
    if ((ret = RegCreateKeyExW(HKEY_CLASSES_ROOT, key, 0, NULL, 0, KEY_WRITE, NULL, &hkey, NULL))) return FALSE;
    ret = RegSetValueExW(hkey, NULL, 0, REG_SZ, (BYTE *)command, (wcslen(command) + 1) * sizeof(WCHAR));
    RegCloseKey(hkey);
    return !ret;
}

static void unregister_server(void)
{
    WCHAR key[128];
    CLSID clsid;

    server_clsid(&clsid);
    StringFromGUID2(&clsid, key + wcslen(wcscpy(key, L"CLSID\\")), 64);
    RegDeleteTreeW(HKEY_CLASSES_ROOT, key);
}

/* How many views of file mappings the local server has (0 if it cannot be asked). */
static DWORD server_views(void)
{
    IClassFactory *proxy;
    IUnknown *unk = NULL;
    CLSID clsid;
    HRESULT hr;

    server_clsid(&clsid);
    hr = CoGetClassObject(&clsid, CLSCTX_LOCAL_SERVER, NULL, &IID_IClassFactory, (void **)&proxy);
    if (FAILED(hr))
    {
        trace("cannot reach the local server: %#lx\n", hr);
        return 0;
    }
    hr = IClassFactory_CreateInstance(proxy, NULL, &IID_IPersist, (void **)&unk);
    IClassFactory_Release(proxy);
    if (HRESULT_FACILITY(hr) == FACILITY_ITF && FAILED(hr)) return HRESULT_CODE(hr);
    trace("the local server answered %#lx\n", hr);
    return 0;
}

static void test_first_call(const char *kind, unsigned int count)
{
    BOOL local = !strcmp(kind, "local");
    DWORD first = 0, last;
    unsigned int i;

    winetest_push_context("%s", kind);
    for (i = 0; i < count; i++)
    {
        HANDLE process = start_self(kind);

        ok(process != NULL, "cannot start child %u\n", i);
        if (!process) break;
        winetest_wait_child_process(process);
        CloseHandle(process);
        if (local && !i) first = server_views();
    }
    /* A server that has served many client processes holds no more for it. */
    if (local && count > 17 && first)
    {
        last = server_views();
        trace("the server's mapped views: %lu after the first client, %lu after %u\n", first, last, count);
        ok(last < first + 32, "the server's mapped views went from %lu to %lu over %u client processes\n",
           first, last, count);
    }
    winetest_pop_context();
}

START_TEST(firstcall)
{
    HMODULE ole32 = GetModuleHandleA("ole32.dll");
    HANDLE busy, busy_quit, server_quit, in_call_event;
    unsigned int count = 20;
    WCHAR name[64];
    char **argv;
    int argc = winetest_get_mainargs(&argv);

    pCoCancelCall = (void *)GetProcAddress(ole32, "CoCancelCall");
    pCoTestCancel = (void *)GetProcAddress(ole32, "CoTestCancel");
    if (argc > 3)
    {
        parent_pid = strtoul(argv[3], NULL, 16);
        if (!strcmp(argv[2], "server")) run_server();
        else if (!strcmp(argv[2], "busy")) run_busy();
        else if (pCoCancelCall) child(argv[2]);
        return;
    }
    /* Windows has it since Windows 2000; stock Wine's ole32 exports none of it. */
    todo_wine_if(!pCoCancelCall || !pCoTestCancel)
    ok(pCoCancelCall && pCoTestCancel, "the call-cancellation API is not available\n");
    if (!pCoCancelCall || !pCoTestCancel)
    {
        skip("the call-cancellation API is not available\n");
        return;
    }
    if (argc > 2 && atoi(argv[2]) > 0) count = atoi(argv[2]);
    parent_pid = GetCurrentProcessId();
    CoInitializeEx(NULL, COINIT_MULTITHREADED);

    make_name(name, ARRAY_SIZE(name), L"busy_quit");
    busy_quit = CreateEventW(NULL, TRUE, FALSE, name);
    make_name(name, ARRAY_SIZE(name), L"quit");
    server_quit = CreateEventW(NULL, TRUE, FALSE, name);
    make_name(name, ARRAY_SIZE(name), L"in_call");
    in_call_event = CreateEventW(NULL, FALSE, FALSE, name);
    busy = start_self("busy");
    ok(busy != NULL, "cannot start the busy process\n");

    test_first_call("mta", count);
    test_first_call("sta", count);
    if (register_server())
    {
        test_first_call("local", count);
        unregister_server();
    }
    else skip("cannot register the local server\n");

    SetEvent(server_quit);
    SetEvent(busy_quit);
    if (busy)
    {
        ok(!WaitForSingleObject(busy, 10000), "the busy process did not end\n");
        CloseHandle(busy);
    }
    CloseHandle(busy_quit);
    CloseHandle(server_quit);
    CloseHandle(in_call_event);
    CoUninitialize();
}
