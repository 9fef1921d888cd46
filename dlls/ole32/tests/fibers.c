/*
 * Proxied calls and the program's own fibers.
 *
 * A thread's fiber state belongs to the program: a call leaves it as it
 * was, a program may convert its threads to fibers and back around calls,
 * and may make calls from fibers of its own.  Every case runs with call
 * cancellation enabled (the calls an implementation may run elsewhere) and
 * disabled, from an MTA and an STA thread, calling an object in an STA of
 * the same process.
 */

#include <stdarg.h>

#define COBJMACROS
#define CONST_VTABLE
#include "windef.h"
#include "winbase.h"
#include "winuser.h"
#include "objbase.h"

#include "wine/test.h"

#if defined(__MINGW32__) && !defined(__clang__)
/* gcc reads mingw's inline TEB accessors (GetCurrentFiber, GetFiberData) as array overruns. */
#pragma GCC diagnostic ignored "-Warray-bounds"
#endif

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
    *ppv = NULL;
    return S_FALSE;
}

static HRESULT WINAPI factory_LockServer(IClassFactory *iface, BOOL lock) { return S_OK; }

static const IClassFactoryVtbl factory_vtbl =
{
    factory_QueryInterface, factory_AddRef, factory_Release, factory_CreateInstance, factory_LockServer,
};

static IClassFactory factory = { &factory_vtbl };

/* Not declared by every SDK's headers (Wine 8.0's lack it). */
static BOOL (WINAPI *pIsThreadAFiber)(void);

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

struct client
{
    struct host *host;
    DWORD model;
    BOOL enable;
    IClassFactory *proxy;
    void *main_fiber;
};

static void call(struct client *client, const char *when)
{
    IUnknown *unk = NULL;
    HRESULT hr;

    hr = IClassFactory_CreateInstance(client->proxy, NULL, &IID_IUnknown, (void **)&unk);
    ok(hr == S_FALSE, "%s: the call got %#lx\n", when, hr);
}

/* A fiber of the program's own: makes a call, then goes back. */
static void WINAPI program_fiber(void *arg)
{
    struct client *client = arg;

    call(client, "from the program's fiber");
    ok(GetFiberData() == client, "the program's fiber data changed\n");
    SwitchToFiber(client->main_fiber);
}

static DWORD WINAPI client_thread(void *arg)
{
    struct client *client = arg;
    void *fiber, *own;
    HRESULT hr;

    CoInitializeEx(NULL, client->model);
    if (client->enable) CoEnableCallCancellation(NULL);
    hr = CoGetInterfaceAndReleaseStream(client->host->stream, &IID_IClassFactory, (void **)&client->proxy);
    ok(hr == S_OK, "unmarshaling got %#lx\n", hr);
    if (FAILED(hr)) return 0;

    /* A call leaves a thread that is not a fiber as it was. */
    call(client, "first call");
    ok(!pIsThreadAFiber(), "the thread is a fiber after a call\n");

    /* The program converts the thread after calls, calls, and converts back. */
    fiber = ConvertThreadToFiber(client);
    ok(fiber != NULL, "ConvertThreadToFiber failed: %lu\n", GetLastError());
    if (fiber)
    {
        call(client, "on the program's converted thread");
        ok(pIsThreadAFiber() && GetCurrentFiber() == fiber, "the current fiber changed\n");
        ok(GetFiberData() == client, "the fiber data changed\n");
        ok(ConvertFiberToThread(), "ConvertFiberToThread failed: %lu\n", GetLastError());
    }
    call(client, "after the program converted back");
    ok(!pIsThreadAFiber(), "the thread is a fiber after a call\n");

    /* Calls from a fiber of the program's own. */
    client->main_fiber = ConvertThreadToFiber(NULL);
    ok(client->main_fiber != NULL, "ConvertThreadToFiber failed: %lu\n", GetLastError());
    if (client->main_fiber)
    {
        own = CreateFiber(0, program_fiber, client);
        ok(own != NULL, "CreateFiber failed: %lu\n", GetLastError());
        if (own)
        {
            SwitchToFiber(own);
            ok(GetCurrentFiber() == client->main_fiber, "back on fiber %p, not %p\n", GetCurrentFiber(),
               client->main_fiber);
            DeleteFiber(own);
        }
        call(client, "on the main fiber");
        ConvertFiberToThread();
    }
    call(client, "last call");
    ok(!pIsThreadAFiber(), "the thread is a fiber after a call\n");

    IClassFactory_Release(client->proxy);
    if (client->enable) CoDisableCallCancellation(NULL);
    CoUninitialize();
    return 0;
}

static void test_fibers(DWORD model, BOOL enable)
{
    struct client client = { 0 };
    struct host host = { 0 };
    HANDLE thread;

    winetest_push_context("%s caller, cancellation %s", model == COINIT_MULTITHREADED ? "MTA" : "STA",
                          enable ? "enabled" : "disabled");
    host.ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    host.quit = CreateEventW(NULL, TRUE, FALSE, NULL);
    host.thread = CreateThread(NULL, 0, host_thread, &host, 0, NULL);
    ok(!WaitForSingleObject(host.ready, 10000), "the host did not start\n");
    client.host = &host;
    client.model = model;
    client.enable = enable;
    thread = CreateThread(NULL, 0, client_thread, &client, 0, NULL);
    ok(!WaitForSingleObject(thread, 30000), "the client did not end\n");
    CloseHandle(thread);
    SetEvent(host.quit);
    ok(!WaitForSingleObject(host.thread, 10000), "the host did not end\n");
    CloseHandle(host.thread);
    CloseHandle(host.ready);
    CloseHandle(host.quit);
    winetest_pop_context();
}

START_TEST(fibers)
{
    pIsThreadAFiber = (void *)GetProcAddress(GetModuleHandleA("kernel32.dll"), "IsThreadAFiber");
    if (!pIsThreadAFiber)
    {
        win_skip("IsThreadAFiber is not available\n");
        return;
    }
    test_fibers(COINIT_MULTITHREADED, FALSE);
    test_fibers(COINIT_MULTITHREADED, TRUE);
    test_fibers(COINIT_APARTMENTTHREADED, FALSE);
    test_fibers(COINIT_APARTMENTTHREADED, TRUE);
}
