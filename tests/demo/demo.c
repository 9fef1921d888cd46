/*
 * cocancel demo, in two parts, using only the standard COM API (statically
 * imported from ole32, as any Windows program does):
 *
 *  1. a watchdog cancels a long operation on another thread through
 *     CoSetCancelObject / CoCancelCall;
 *  2. a client stuck in a slow call to a local COM server (this program,
 *     started by COM with -Embedding) is released by a watchdog's
 *     CoCancelCall; the server reports that CoTestCancel told it so.
 *
 * On stock Wine this program dies with "unimplemented function
 * ole32.dll.CoSetCancelObject"; with cocancel it prints the timings.
 */

#define COBJMACROS
#define CONST_VTABLE
#include <windows.h>
#include <objbase.h>
#include <stdio.h>

#include "cocancel.h"

struct operation
{
    ICancelMethodCalls ICancelMethodCalls_iface;
    LONG refcount;
    LONG cancelled;
    LARGE_INTEGER cancelled_at;
};

static LARGE_INTEGER frequency, started;

static double ms_since(LARGE_INTEGER start)
{
    LARGE_INTEGER now;

    QueryPerformanceCounter(&now);
    return (now.QuadPart - start.QuadPart) * 1000.0 / frequency.QuadPart;
}

static struct operation *impl_from_ICancelMethodCalls(ICancelMethodCalls *iface)
{
    return CONTAINING_RECORD(iface, struct operation, ICancelMethodCalls_iface);
}

static HRESULT WINAPI operation_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICancelMethodCalls))
    {
        *ppv = iface;
        ICancelMethodCalls_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI operation_AddRef(ICancelMethodCalls *iface)
{
    return InterlockedIncrement(&impl_from_ICancelMethodCalls(iface)->refcount);
}

static ULONG WINAPI operation_Release(ICancelMethodCalls *iface)
{
    return InterlockedDecrement(&impl_from_ICancelMethodCalls(iface)->refcount);
}

static HRESULT WINAPI operation_Cancel(ICancelMethodCalls *iface, ULONG seconds)
{
    struct operation *op = impl_from_ICancelMethodCalls(iface);

    QueryPerformanceCounter(&op->cancelled_at);
    InterlockedExchange(&op->cancelled, 1);
    return S_OK;
}

static HRESULT WINAPI operation_TestCancel(ICancelMethodCalls *iface)
{
    return impl_from_ICancelMethodCalls(iface)->cancelled ? RPC_E_CALL_CANCELED : RPC_S_CALLPENDING;
}

static const ICancelMethodCallsVtbl operation_vtbl =
{
    operation_QueryInterface, operation_AddRef, operation_Release, operation_Cancel, operation_TestCancel,
};

static struct operation op = { { &operation_vtbl }, 1 };
static HANDLE registered;

/* A worker in a long (10 s) operation that checks for cancellation as it goes. */
static DWORD WINAPI worker(void *arg)
{
    ICancelMethodCalls *self;
    HRESULT hr;

    CoSetCancelObject((IUnknown *)&op.ICancelMethodCalls_iface);
    SetEvent(registered);
    while (ms_since(started) < 10000)
    {
        if (SUCCEEDED(CoGetCancelObject(0, &IID_ICancelMethodCalls, (void **)&self)))
        {
            hr = ICancelMethodCalls_TestCancel(self);
            ICancelMethodCalls_Release(self);
            if (hr == RPC_E_CALL_CANCELED) break;
        }
        Sleep(1);
    }
    printf("  worker: %s after %.1f ms (%.3f ms after the cancel request)\n",
           op.cancelled ? "stopped by the watchdog" : "ran to the end", ms_since(started),
           op.cancelled ? ms_since(op.cancelled_at) : 0.0);
    CoSetCancelObject(NULL);
    return 0;
}

/* Part 2: the local server.  CreateInstance(IID_IUnknown) is a 10-second job
 * that stops when CoTestCancel reports a cancel; CreateInstance(IID_IPersist)
 * answers what the last job saw. */
static const CLSID CLSID_DemoServer = {0x7d2b9c10, 0x4e3f, 0x4a61, {0x93, 0x0d, 0x5b, 0x8e, 0x27, 0xc4, 0x1f, 0x66}};
static HRESULT last_seen = S_OK;
static DWORD last_ms;

static HRESULT WINAPI server_QueryInterface(IClassFactory *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IClassFactory))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI server_AddRef(IClassFactory *iface) { return 2; }
static ULONG WINAPI server_Release(IClassFactory *iface) { return 1; }

static HRESULT WINAPI server_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    DWORD start = GetTickCount();

    *ppv = NULL;
    if (IsEqualIID(riid, &IID_IPersist)) return last_seen;
    if (IsEqualIID(riid, &IID_IStream)) return last_ms;
    last_seen = CoTestCancel();
    while (GetTickCount() - start < 10000 && (last_seen = CoTestCancel()) == RPC_S_CALLPENDING) Sleep(1);
    last_ms = GetTickCount() - start;
    return last_seen == RPC_E_CALL_CANCELED ? E_ABORT : S_OK;
}

static HRESULT WINAPI server_LockServer(IClassFactory *iface, BOOL lock) { return S_OK; }

static const IClassFactoryVtbl server_vtbl =
{
    server_QueryInterface, server_AddRef, server_Release, server_CreateInstance, server_LockServer,
};

static IClassFactory server = { &server_vtbl };

static int run_server(void)
{
    HANDLE quit = CreateEventW(NULL, TRUE, FALSE, L"cocancel_demo_quit");
    DWORD cookie;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    CoRegisterClassObject(&CLSID_DemoServer, (IUnknown *)&server, CLSCTX_LOCAL_SERVER, REGCLS_MULTIPLEUSE, &cookie);
    WaitForSingleObject(quit, 60000);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void register_server(BOOL add)
{
    WCHAR key[128] = L"CLSID\\", exe[MAX_PATH], command[MAX_PATH + 16] = L"\"";
    HKEY hkey;

    StringFromGUID2(&CLSID_DemoServer, key + wcslen(key), 64);
    if (!add)
    {
        RegDeleteTreeW(HKEY_CLASSES_ROOT, key);
        return;
    }
    GetModuleFileNameW(NULL, exe, MAX_PATH);
    wcscat(command, exe);
    wcscat(command, L"\"");
    wcscat(key, L"\\LocalServer32");
    if (RegCreateKeyExW(HKEY_CLASSES_ROOT, key, 0, NULL, 0, KEY_WRITE, NULL, &hkey, NULL)) return;
    RegSetValueExW(hkey, NULL, 0, REG_SZ, (BYTE *)command, (wcslen(command) + 1) * sizeof(WCHAR));
    RegCloseKey(hkey);
}

static DWORD client_tid;
static HANDLE client_ready;

static DWORD WINAPI watchdog(void *arg)
{
    LARGE_INTEGER at;
    HRESULT hr;

    WaitForSingleObject(client_ready, 10000);
    Sleep(300);
    QueryPerformanceCounter(&at);
    /* Stored before the cancel: the client reads it as soon as it is released. */
    *(LARGE_INTEGER *)arg = at;
    hr = CoCancelCall(client_tid, 0);
    printf("  watchdog: CoCancelCall(client, 0) = %#lx at %.1f ms\n", hr, ms_since(started));
    return 0;
}

static void remote_call_demo(void)
{
    IClassFactory *factory;
    LARGE_INTEGER cancelled_at;
    HANDLE thread;
    void *unk;
    HRESULT hr;

    printf("\ncocancel demo, part 2: a slow call to a local COM server, cancelled by a watchdog after 300 ms\n");
    register_server(TRUE);
    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    hr = CoGetClassObject(&CLSID_DemoServer, CLSCTX_LOCAL_SERVER, NULL, &IID_IClassFactory, (void **)&factory);
    if (FAILED(hr))
    {
        printf("  cannot start the local server: %#lx\n", hr);
        CoUninitialize();
        register_server(FALSE);
        return;
    }
    CoEnableCallCancellation(NULL);
    client_tid = GetCurrentThreadId();
    client_ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    thread = CreateThread(NULL, 0, watchdog, &cancelled_at, 0, NULL);
    QueryPerformanceCounter(&started);
    SetEvent(client_ready);
    printf("  client: calling the server's 10-second method ...\n");
    hr = IClassFactory_CreateInstance(factory, NULL, &IID_IUnknown, &unk);
    printf("  client: the call returned %#lx%s at %.1f ms (%.3f ms after the cancel)\n", hr,
           hr == RPC_E_CALL_CANCELED ? " (RPC_E_CALL_CANCELED)" : "", ms_since(started), ms_since(cancelled_at));
    WaitForSingleObject(thread, 10000);
    CloseHandle(thread);
    Sleep(100);
    hr = IClassFactory_CreateInstance(factory, NULL, &IID_IPersist, &unk);
    printf("  server: CoTestCancel in the method said %#lx%s; it stopped after %ld ms\n", hr,
           hr == RPC_E_CALL_CANCELED ? " (RPC_E_CALL_CANCELED)" : "",
           (long)IClassFactory_CreateInstance(factory, NULL, &IID_IStream, &unk));
    CoDisableCallCancellation(NULL);
    IClassFactory_Release(factory);
    CoUninitialize();
    SetEvent(CreateEventW(NULL, TRUE, FALSE, L"cocancel_demo_quit"));
    register_server(FALSE);
}

/* Says how the API got here, if cocancel is in the process (looked up, not imported). */
static void show_engine(void)
{
    HRESULT (WINAPI *get_status)(struct cocancel_status *);
    struct cocancel_status status = { sizeof(status) };
    HMODULE engine = GetModuleHandleW(L"cocancel.dll");

    if (!engine || !(get_status = (void *)GetProcAddress(engine, "CocancelGetStatus"))) return;
    if (FAILED(get_status(&status))) return;
    printf("  cocancel routes:%s%s%s%s%s; %lu import slots repaired\n",
           status.routes & COCANCEL_ROUTE_CARRIER ? " carrier-ole32" : "",
           status.routes & COCANCEL_ROUTE_COMBASE_STUBS ? " combase-stubs" : "",
           status.routes & COCANCEL_ROUTE_OLE32_GRAFT ? " ole32-export-graft" : "",
           status.routes & COCANCEL_ROUTE_OLE32_NATIVE ? " ole32-exports" : "",
           status.routes & COCANCEL_ROUTE_DLL_NOTIFY ? " dll-notifications" : "",
           status.repaired_imports);
}

int main(int argc, char **argv)
{
    HANDLE thread;
    DWORD tid;
    HRESULT hr;

    setvbuf(stdout, NULL, _IONBF, 0);
    QueryPerformanceFrequency(&frequency);
    if (argc > 1 && !_stricmp(argv[1], "-Embedding")) return run_server();
    QueryPerformanceCounter(&started);
    printf("cocancel demo: a watchdog cancels a 10-second operation after 300 ms\n");
    registered = CreateEventW(NULL, TRUE, FALSE, NULL);
    thread = CreateThread(NULL, 0, worker, NULL, 0, &tid);
    WaitForSingleObject(registered, 5000);
    Sleep(300);
    hr = CoCancelCall(tid, 0);
    printf("  watchdog: CoCancelCall(%04lx, 0) = %#lx at %.1f ms\n", tid, hr, ms_since(started));
    WaitForSingleObject(thread, 15000);
    hr = CoCancelCall(tid, 0);
    printf("  watchdog: CoCancelCall again after the worker ended = %#lx (E_NOINTERFACE: nothing to cancel)\n", hr);
    printf("  CoTestCancel outside any call = %#lx (RPC_E_CALL_COMPLETE)\n", CoTestCancel());
    show_engine();
    remote_call_demo();
    return op.cancelled ? 0 : 1;
}
