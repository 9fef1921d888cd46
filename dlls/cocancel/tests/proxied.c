/*
 * What only cocancel has, around proxied calls.
 *
 * abandoned: calls whose caller was let go before the reply came: cocancel keeps each
 * one until its reply arrives, and must not keep it longer.  The ole32
 * conformance tests check what a program sees (the proxy keeps working,
 * the cancelled caller is released); this checks, through
 * CocancelGetStatus, that the engine has finished with every such call:
 *  - a synchronous call cancelled with CoCancelCall, whose thread then
 *    leaves its apartment without another call: from an STA nothing is left
 *    once its CoUninitialize has returned; from the MTA (which lives on in
 *    the process) the call ends when the server answers;
 *  - call objects released without Finish_ (pending, cancelled, released
 *    from another thread): nothing is left a few seconds after the replies
 *    came, while the proxy keeps being used;
 *  - a thread that ends right after its call was cancelled, with no other
 *    call and no CoUninitialize: its end finishes the call if the reply
 *    comes at once, and gives it up (counted as leaked) if it does not.
 *
 * mismatch: each place the engine patches in Wine, made to look different
 * (COCANCEL_TEST_MISMATCH, in a child process of this program): the engine
 * leaves that place and what depends on it alone, says so in
 * CocancelGetStatus, keeps every other place, and proxied calls work as on
 * stock Wine.
 *
 * Uses the interfaces of dlls/ole32/tests/asynccall_ps.idl.
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "windef.h"
#include "winbase.h"
#include "winuser.h"
#include "objbase.h"
#include "objidl.h"
#include "rpcproxy.h"
#include "cocancel.h"

#include "asynccall_ps.h"
#include "async_ps.h"

#include "wine/test.h"

static HANDLE slow_started, slow_release;

static HRESULT WINAPI obj_Add(ICcAsyncTest *iface, int a, int b, int *sum)
{
    *sum = a + b;
    return S_OK;
}

/* Runs until slow_release is set or ms milliseconds pass; ignores cancels. */
static HRESULT WINAPI obj_Slow(ICcAsyncTest *iface, DWORD ms, DWORD *seen)
{
    *seen = 0;
    SetEvent(slow_started);
    WaitForSingleObject(slow_release, ms);
    return S_OK;
}

/* The engine's status now; every count ~0u if it cannot be had. */
static struct cocancel_status engine_status(void)
{
    struct cocancel_status status;

    memset(&status, 0, sizeof(status));
    status.size = sizeof(status);
    if (CocancelGetStatus(&status) != S_OK) memset(&status, 0xff, sizeof(status));
    return status;
}

static unsigned int abandoned_calls(void)
{
    return engine_status().abandoned_calls;
}

struct client
{
    IStream *stream;
    DWORD model;
    HANDLE thread;
    HRESULT hr;                 /* what the cancelled call returned */
    unsigned int abandoned;     /* the engine's abandoned calls right after CoUninitialize */
};

static DWORD WINAPI uninit_client(void *arg)
{
    struct client *client = arg;
    ICcAsyncTest *proxy = NULL;
    DWORD seen, cookie;

    CoInitializeEx(NULL, client->model);
    cookie = register_ps();
    CoEnableCallCancellation(NULL);
    client->hr = CoGetInterfaceAndReleaseStream(client->stream, &IID_ICcAsyncTest, (void **)&proxy);
    if (proxy) client->hr = ICcAsyncTest_Slow(proxy, 20000, &seen);
    /* No other call and no Release: the apartment's end takes the proxy down. */
    CoDisableCallCancellation(NULL);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    client->abandoned = abandoned_calls();
    return 0;
}

static void test_uninitialize_after_cancel(DWORD client_model, DWORD host_model)
{
    struct client client = { 0 };
    struct host host;
    DWORD start;

    winetest_push_context("%s client, %s host", client_model == COINIT_MULTITHREADED ? "MTA" : "STA",
                          host_model == COINIT_MULTITHREADED ? "MTA" : "STA");
    ResetEvent(slow_release);
    ResetEvent(slow_started);
    ok(start_host(&host, host_model), "the host did not start\n");
    client.stream = host.stream;
    client.model = client_model;
    client.abandoned = 0xdead;
    client.thread = CreateThread(NULL, 0, uninit_client, &client, 0, NULL);
    ok(!WaitForSingleObject(slow_started, 10000), "the call did not reach the server\n");
    ok(CoCancelCall(GetThreadId(client.thread), 0) == S_OK, "CoCancelCall failed\n");
    ok(!WaitForSingleObject(client.thread, 10000), "the client did not end\n");
    ok(client.hr == RPC_E_CALL_CANCELED, "the call got %#lx\n", client.hr);
    if (client_model == COINIT_APARTMENTTHREADED)
        ok(!client.abandoned, "%u abandoned calls right after CoUninitialize\n", client.abandoned);
    CloseHandle(client.thread);
    SetEvent(slow_release);
    for (start = GetTickCount(); abandoned_calls() && GetTickCount() - start < 5000;) Sleep(20);
    ok(!abandoned_calls(), "%u abandoned calls 5 s after the server answered\n", abandoned_calls());
    ok(stop_host(&host), "the host did not stop\n");
    winetest_pop_context();
}

static DWORD WINAPI release_thread(void *arg)
{
    AsyncICcAsyncTest_Release((AsyncICcAsyncTest *)arg);
    return 0;
}

static DWORD WINAPI async_client(void *arg)
{
    struct client *client = arg;
    AsyncICcAsyncTest *call;
    ICancelMethodCalls *cancel;
    ICcAsyncTest *proxy = NULL;
    unsigned int abandoned = ~0u;
    DWORD start, cookie;
    HANDLE thread;
    HRESULT hr;
    int sum;

    CoInitializeEx(NULL, client->model);
    cookie = register_ps();
    hr = CoGetInterfaceAndReleaseStream(client->stream, &IID_ICcAsyncTest, (void **)&proxy);
    ok(hr == S_OK, "unmarshal got %#lx\n", hr);
    if (!proxy) goto done;

    /* Pending, then released. */
    call = create_call(proxy);
    ok(call != NULL, "no call object\n");
    if (!call) goto done;
    ok(AsyncICcAsyncTest_Begin_Slow(call, 1000) == S_OK, "Begin_Slow failed\n");
    AsyncICcAsyncTest_Release(call);
    /* Cancelled, then released. */
    if ((call = create_call(proxy)))
    {
        ok(AsyncICcAsyncTest_Begin_Slow(call, 1000) == S_OK, "Begin_Slow failed\n");
        AsyncICcAsyncTest_QueryInterface(call, &IID_ICancelMethodCalls, (void **)&cancel);
        ICancelMethodCalls_Cancel(cancel, 0);
        ICancelMethodCalls_Release(cancel);
        AsyncICcAsyncTest_Release(call);
    }
    /* Released by another thread. */
    if ((call = create_call(proxy)))
    {
        ok(AsyncICcAsyncTest_Begin_Slow(call, 1000) == S_OK, "Begin_Slow failed\n");
        thread = CreateThread(NULL, 0, release_thread, call, 0, NULL);
        ok(!WaitForSingleObject(thread, 5000), "the release did not return\n");
        CloseHandle(thread);
    }
    ok(abandoned_calls() > 0, "the engine holds no call while the replies are outstanding\n");

    /* The server answers them within a second; the proxy keeps being used meanwhile. */
    for (start = GetTickCount(); GetTickCount() - start < 5000; Sleep(50))
    {
        if ((call = create_call(proxy)))
        {
            sum = 0;
            ok(AsyncICcAsyncTest_Begin_Add(call, 4, 5) == S_OK, "Begin_Add failed\n");
            hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
            ok(hr == S_OK && sum == 9, "Finish_Add got %#lx, %d\n", hr, sum);
            AsyncICcAsyncTest_Release(call);
        }
        if (!(abandoned = abandoned_calls())) break;
    }
    ok(!abandoned, "the engine still holds %u abandoned calls after 5 s\n", abandoned);

done:
    if (proxy) ICcAsyncTest_Release(proxy);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void test_released_without_finish(DWORD client_model, DWORD host_model)
{
    struct client client = { 0 };
    struct host host;

    winetest_push_context("%s client, %s host", client_model == COINIT_MULTITHREADED ? "MTA" : "STA",
                          host_model == COINIT_MULTITHREADED ? "MTA" : "STA");
    ResetEvent(slow_release);   /* Slow runs its full time */
    ok(start_host(&host, host_model), "the host did not start\n");
    client.stream = host.stream;
    client.model = client_model;
    client.thread = CreateThread(NULL, 0, async_client, &client, 0, NULL);
    ok(!WaitForSingleObject(client.thread, 30000), "the client did not end\n");
    CloseHandle(client.thread);
    ok(stop_host(&host), "the host did not stop\n");
    winetest_pop_context();
}

static unsigned int leaked_calls(void)
{
    return engine_status().leaked_calls;
}

struct exit_client
{
    IStream *stream;
    DWORD model;
    HANDLE thread, returned;
    HRESULT hr;
};

/* Makes one call, which is cancelled, and ends: no other call, no CoUninitialize. */
static DWORD WINAPI exit_client_thread(void *arg)
{
    struct exit_client *client = arg;
    ICcAsyncTest *proxy = NULL;
    DWORD seen;

    CoInitializeEx(NULL, client->model);
    register_ps();
    CoEnableCallCancellation(NULL);
    client->hr = CoGetInterfaceAndReleaseStream(client->stream, &IID_ICcAsyncTest, (void **)&proxy);
    if (proxy) client->hr = ICcAsyncTest_Slow(proxy, 20000, &seen);
    SetEvent(client->returned);
    return 0;
}

/*
 * Starts a host and a client thread whose first call (Slow, which the
 * server does not end before slow_release) is cancelled, and checks that
 * the client was released with RPC_E_CALL_CANCELED.
 */
static void start_cancelled_client(struct exit_client *client, struct host *host, DWORD model, DWORD host_model,
                                   LPTHREAD_START_ROUTINE proc)
{
    ResetEvent(slow_release);
    ResetEvent(slow_started);
    ok(start_host(host, host_model), "the host did not start\n");
    client->stream = host->stream;
    client->model = model;
    client->returned = CreateEventW(NULL, TRUE, FALSE, NULL);
    client->thread = CreateThread(NULL, 0, proc, client, 0, NULL);
    ok(!WaitForSingleObject(slow_started, 10000), "the call did not reach the server\n");
    ok(CoCancelCall(GetThreadId(client->thread), 0) == S_OK, "CoCancelCall failed\n");
    ok(!WaitForSingleObject(client->returned, 10000), "the caller was not released\n");
    ok(client->hr == RPC_E_CALL_CANCELED, "the call got %#lx\n", client->hr);
}

/*
 * A thread ends without another call and without CoUninitialize right after
 * its call was cancelled.  The reply comes at once: the thread's end
 * finishes the call (Wine's state of it, and the apartment reference it
 * holds, go).  The reply comes seconds later: the call is given up when the
 * thread ends, and counted as leaked.  Either way the engine holds nothing
 * for a thread that is gone.
 */
static void test_thread_exit_after_cancel(DWORD model, BOOL late_reply)
{
    struct exit_client client = { 0 };
    unsigned int leaked = leaked_calls();
    struct host host;

    winetest_push_context("%s client, %s reply", model == COINIT_MULTITHREADED ? "MTA" : "STA",
                          late_reply ? "late" : "prompt");
    start_cancelled_client(&client, &host, model, COINIT_APARTMENTTHREADED, exit_client_thread);
    if (!late_reply) SetEvent(slow_release);
    ok(!WaitForSingleObject(client.thread, 10000), "the client did not end\n");
    ok(!abandoned_calls(), "%u abandoned calls after the thread ended\n", abandoned_calls());
    if (late_reply)
    {
        ok(leaked_calls() == leaked + 1, "%u calls leaked, expected %u\n", leaked_calls(), leaked + 1);
        SetEvent(slow_release);
    }
    else ok(leaked_calls() == leaked, "%u calls leaked, expected %u\n", leaked_calls(), leaked);
    CloseHandle(client.thread);
    CloseHandle(client.returned);
    ok(stop_host(&host), "the host did not stop\n");
    winetest_pop_context();
}

/*
 * A call into the MTA (through the RPC transport) whose server ignores the
 * cancel: once the caller is released, the engine still aborts the call in
 * the transport (about a millisecond later, off the released caller's way),
 * so the call left behind ends there, and the thread's next calls finish it,
 * long before the server method returns.
 */
static DWORD WINAPI aborted_client(void *arg)
{
    struct exit_client *client = arg;
    ICcAsyncTest *proxy = NULL;
    DWORD seen, start, cookie;
    HRESULT hr;
    int sum;

    CoInitializeEx(NULL, client->model);
    cookie = register_ps();
    CoEnableCallCancellation(NULL);
    client->hr = CoGetInterfaceAndReleaseStream(client->stream, &IID_ICcAsyncTest, (void **)&proxy);
    if (proxy)
    {
        client->hr = ICcAsyncTest_Slow(proxy, 20000, &seen);
        SetEvent(client->returned);
        for (start = GetTickCount(); abandoned_calls() && GetTickCount() - start < 5000; Sleep(50))
        {
            sum = 0;
            hr = ICcAsyncTest_Add(proxy, 2, 3, &sum);
            ok(hr == S_OK && sum == 5, "a call after the cancel got %#lx, %d\n", hr, sum);
        }
        ok(!abandoned_calls(), "%u abandoned calls 5 s after the cancel, the server still in its method\n",
           abandoned_calls());
        ICcAsyncTest_Release(proxy);
    }
    CoDisableCallCancellation(NULL);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void test_transport_abort_after_release(DWORD model)
{
    struct exit_client client = { 0 };
    struct host host;

    winetest_push_context("%s client, MTA host", model == COINIT_MULTITHREADED ? "MTA" : "STA");
    start_cancelled_client(&client, &host, model, COINIT_MULTITHREADED, aborted_client);
    ok(!WaitForSingleObject(client.thread, 15000), "the client did not end\n");
    SetEvent(slow_release);
    CloseHandle(client.thread);
    CloseHandle(client.returned);
    ok(stop_host(&host), "the host did not stop\n");
    winetest_pop_context();
}

START_TEST(abandoned)
{
    slow_started = CreateEventW(NULL, FALSE, FALSE, NULL);
    slow_release = CreateEventW(NULL, TRUE, FALSE, NULL);
    init_ps();

    test_uninitialize_after_cancel(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED);
    test_uninitialize_after_cancel(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED);
    test_released_without_finish(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED);
    test_released_without_finish(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED);
    test_released_without_finish(COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED);
    test_thread_exit_after_cancel(COINIT_APARTMENTTHREADED, FALSE);
    test_thread_exit_after_cancel(COINIT_MULTITHREADED, FALSE);
    test_thread_exit_after_cancel(COINIT_APARTMENTTHREADED, TRUE);
    /* (An MTA client would get the MTA object itself, not a proxy.) */
    test_transport_abort_after_release(COINIT_APARTMENTTHREADED);

    CloseHandle(slow_started);
    CloseHandle(slow_release);
}

/* A patch point made to mismatch, and what must then stay off with it. */
static const struct
{
    const char *name;
    DWORD missing;      /* COCANCEL_PATCH_* that stay off */
    DWORD routes_off;   /* COCANCEL_ROUTE_* that must be absent */
    DWORD routes_on;    /* COCANCEL_ROUTE_* that must be present */
    BOOL refused;       /* counted in refused_patches (a stub that is not the stub is not) */
}
mismatches[] =
{
    { "channel", COCANCEL_PATCH_CHANNEL, COCANCEL_ROUTE_CHANNEL, 0, TRUE },
    { "transport", COCANCEL_PATCH_TRANSPORT | COCANCEL_PATCH_GETBUFFER, 0, 0, TRUE },
    { "getbuffer", COCANCEL_PATCH_GETBUFFER, 0, 0, TRUE },
    { "unregister", COCANCEL_PATCH_UNREGISTER, 0, 0, TRUE },
    { "waits", COCANCEL_PATCH_WAITS, 0, 0, TRUE },
    { "factory", COCANCEL_PATCH_FACTORY | COCANCEL_PATCH_MANAGER, COCANCEL_ROUTE_ASYNC, 0, TRUE },
    { "manager", COCANCEL_PATCH_MANAGER, COCANCEL_ROUTE_ASYNC, 0, TRUE },
    { "ndr_async", COCANCEL_PATCH_NDR_ASYNC, 0, 0, FALSE },
    { "ndr_async_stub", COCANCEL_PATCH_NDR_ASYNC_STUB, 0, 0, FALSE },
    { "dispatch", COCANCEL_PATCH_DISPATCH, 0, 0, TRUE },
    { "api_stubs", 0, COCANCEL_ROUTE_COMBASE_STUBS | COCANCEL_ROUTE_CHANNEL, COCANCEL_ROUTE_COMBASE_REAL, FALSE },
    /* One function implemented by combase: none routed, no second stack of cancel objects. */
    { "api_one", 0, COCANCEL_ROUTE_COMBASE_STUBS | COCANCEL_ROUTE_CHANNEL | COCANCEL_ROUTE_OLE32_GRAFT,
      COCANCEL_ROUTE_COMBASE_REAL, FALSE },
};

/* Every patch point a process of this architecture gets on the Wines tested (8.0, 10.0). */
static DWORD all_points(void)
{
    DWORD points = COCANCEL_PATCH_CHANNEL | COCANCEL_PATCH_TRANSPORT | COCANCEL_PATCH_GETBUFFER |
                   COCANCEL_PATCH_UNREGISTER | COCANCEL_PATCH_WAITS | COCANCEL_PATCH_FACTORY |
                   COCANCEL_PATCH_MANAGER | COCANCEL_PATCH_DISPATCH | COCANCEL_PATCH_NDR_ASYNC_STUB;

    /* NdrDcomAsyncClientCall is taken over on x86_64 only. */
    if (sizeof(void *) == 8) points |= COCANCEL_PATCH_NDR_ASYNC;
    return points;
}

/* One proxied call from an MTA thread into an STA host, then the status. */
static void proxied_call_and_status(struct cocancel_status *status, HRESULT *factory_hr)
{
    ICcAsyncTest *proxy = NULL;
    IUnknown *factory = NULL;
    struct host host;
    DWORD cookie;
    HRESULT hr;
    int sum = 0;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    cookie = register_ps();
    ok(start_host(&host, COINIT_APARTMENTTHREADED), "the host did not start\n");
    hr = CoGetInterfaceAndReleaseStream(host.stream, &IID_ICcAsyncTest, (void **)&proxy);
    ok(hr == S_OK, "unmarshal got %#lx\n", hr);
    if (proxy)
    {
        hr = ICcAsyncTest_Add(proxy, 2, 3, &sum);
        ok(hr == S_OK && sum == 5, "Add got %#lx, %d\n", hr, sum);
        *factory_hr = ICcAsyncTest_QueryInterface(proxy, &IID_ICallFactory, (void **)&factory);
        if (factory) IUnknown_Release(factory);
        ICcAsyncTest_Release(proxy);
    }
    ok(stop_host(&host), "the host did not stop\n");
    memset(status, 0, sizeof(*status));
    status->size = sizeof(*status);
    hr = CocancelGetStatus(status);
    ok(hr == S_OK, "CocancelGetStatus got %#lx\n", hr);
    CoRevokeClassObject(cookie);
    CoUninitialize();
}

/* Runs test 'test' of this program in a child process with the environment variable var set to value. */
static void run_child(const char *test, const char *var, const char *value)
{
    char exe[MAX_PATH], cmd[MAX_PATH + 32];
    PROCESS_INFORMATION info;
    STARTUPINFOA startup;
    DWORD code = ~0u;

    GetModuleFileNameA(NULL, exe, sizeof(exe));
    memset(&startup, 0, sizeof(startup));
    startup.cb = sizeof(startup);
    snprintf(cmd, sizeof(cmd), "\"%s\" %s", exe, test);
    SetEnvironmentVariableA(var, value);
    if (CreateProcessA(exe, cmd, NULL, NULL, FALSE, 0, NULL, NULL, &startup, &info))
    {
        if (WaitForSingleObject(info.hProcess, 60000))
        {
            ok(0, "the child did not end within 60 s\n");
            TerminateProcess(info.hProcess, 1);
            WaitForSingleObject(info.hProcess, 5000);
        }
        GetExitCodeProcess(info.hProcess, &code);
        ok(!code, "the child reported %lu failures\n", code);
        CloseHandle(info.hProcess);
        CloseHandle(info.hThread);
    }
    else ok(0, "CreateProcess failed: %lu\n", GetLastError());
    SetEnvironmentVariableA(var, NULL);
}

/* Run by test_mismatch in a child process with COCANCEL_TEST_MISMATCH set. */
START_TEST(mismatch_child)
{
    struct cocancel_status status;
    HRESULT factory_hr = E_FAIL;
    char name[64];
    unsigned int i;

    if (!GetEnvironmentVariableA("COCANCEL_TEST_MISMATCH", name, sizeof(name)))
    {
        skip("run by the mismatch test only\n");
        return;
    }
    for (i = 0; i < ARRAYSIZE(mismatches); i++) if (!strcmp(mismatches[i].name, name)) break;
    ok(i < ARRAYSIZE(mismatches), "unknown patch point %s\n", name);
    if (i == ARRAYSIZE(mismatches)) return;
    winetest_push_context("%s", name);
    init_ps();
    proxied_call_and_status(&status, &factory_hr);
    ok(status.patch_points == (all_points() & ~mismatches[i].missing), "patch points %#lx, expected %#lx\n",
       status.patch_points, all_points() & ~mismatches[i].missing);
    if (mismatches[i].refused) ok(status.refused_patches >= 1, "no refused patch\n");
    else ok(!status.refused_patches, "%lu refused patches\n", status.refused_patches);
    ok(!(status.routes & mismatches[i].routes_off), "routes %#lx include %#lx\n", status.routes,
       mismatches[i].routes_off);
    ok((status.routes & mismatches[i].routes_on) == mismatches[i].routes_on, "routes %#lx lack %#lx\n",
       status.routes, mismatches[i].routes_on);
    /* Without the proxy factory or the proxy manager, proxies answer as on stock Wine. */
    if (mismatches[i].routes_off & COCANCEL_ROUTE_ASYNC)
        ok(factory_hr == E_NOINTERFACE, "QueryInterface(ICallFactory) got %#lx\n", factory_hr);
    else ok(factory_hr == S_OK, "QueryInterface(ICallFactory) got %#lx\n", factory_hr);
    winetest_pop_context();
}

START_TEST(mismatch)
{
    struct cocancel_status status;
    HRESULT factory_hr = E_FAIL;
    unsigned int i;

    /* Without the knob every point is applied, and nothing refused. */
    init_ps();
    proxied_call_and_status(&status, &factory_hr);
    ok(status.patch_points == all_points(), "patch points %#lx, expected %#lx\n", status.patch_points,
       all_points());
    ok(!status.refused_patches, "%lu refused patches\n", status.refused_patches);
    ok(factory_hr == S_OK, "QueryInterface(ICallFactory) got %#lx\n", factory_hr);

    for (i = 0; i < ARRAYSIZE(mismatches); i++)
    {
        winetest_push_context("%s", mismatches[i].name);
        run_child("mismatch_child", "COCANCEL_TEST_MISMATCH", mismatches[i].name);
        winetest_pop_context();
    }
}

/*
 * broken: the engine makes proxied calls cancellable by running Wine's
 * SendReceive away from the caller's stack, relying on a fact it checks at
 * every such call: Wine's SendReceive works on the message it is given.
 * The fact is made to fail (COCANCEL_TEST_BREAK, in a child process): the call that shows it
 * still gets its result, and from then on the engine stays off - the status
 * says so, and a cancel answers CO_E_CANCEL_DISABLED instead of releasing
 * the caller.  Without the knob the same calls are cancellable.
 */
struct broken_client
{
    IStream *stream;
    HANDLE thread;
    HRESULT add_hr, slow_hr;
    int sum;
    struct cocancel_status status;      /* after the first call */
};

static DWORD WINAPI broken_client_thread(void *arg)
{
    struct broken_client *client = arg;
    ICcAsyncTest *proxy = NULL;
    DWORD seen, cookie;

    CoInitializeEx(NULL, COINIT_APARTMENTTHREADED);
    cookie = register_ps();
    CoEnableCallCancellation(NULL);
    client->add_hr = CoGetInterfaceAndReleaseStream(client->stream, &IID_ICcAsyncTest, (void **)&proxy);
    if (proxy)
    {
        client->add_hr = ICcAsyncTest_Add(proxy, 2, 3, &client->sum);
        client->status.size = sizeof(client->status);
        CocancelGetStatus(&client->status);
        client->slow_hr = ICcAsyncTest_Slow(proxy, 20000, &seen);
        ICcAsyncTest_Release(proxy);
    }
    CoDisableCallCancellation(NULL);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void test_broken_fact(BOOL broken)
{
    struct broken_client client = { 0 };
    struct host host;
    HRESULT hr;

    slow_started = CreateEventW(NULL, FALSE, FALSE, NULL);
    slow_release = CreateEventW(NULL, TRUE, FALSE, NULL);
    init_ps();
    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    ok(start_host(&host, COINIT_APARTMENTTHREADED), "the host did not start\n");
    client.stream = host.stream;
    client.add_hr = client.slow_hr = 0xdeadbeef;
    client.thread = CreateThread(NULL, 0, broken_client_thread, &client, 0, NULL);
    ok(!WaitForSingleObject(slow_started, 10000), "the second call did not reach the server\n");
    hr = CoCancelCall(GetThreadId(client.thread), 0);
    if (broken)
    {
        ok(hr == CO_E_CANCEL_DISABLED, "CoCancelCall got %#lx\n", hr);
        /* Not released: the call ends when the server answers. */
        ok(WaitForSingleObject(client.thread, 500) == WAIT_TIMEOUT, "the caller was released\n");
    }
    else ok(hr == S_OK, "CoCancelCall got %#lx\n", hr);
    SetEvent(slow_release);
    ok(!WaitForSingleObject(client.thread, 10000), "the client did not end\n");
    CloseHandle(client.thread);
    ok(client.add_hr == S_OK && client.sum == 5, "the first call got %#lx, %d\n", client.add_hr, client.sum);
    if (broken)
    {
        ok(client.status.routes & COCANCEL_ROUTE_CALLS_REFUSED, "routes %#lx: calls not refused\n",
           client.status.routes);
        ok(!(client.status.routes & COCANCEL_ROUTE_CHANNEL), "routes %#lx: the channel route is on\n",
           client.status.routes);
        ok(client.slow_hr == S_OK, "the second call got %#lx\n", client.slow_hr);
    }
    else
    {
        ok((client.status.routes & (COCANCEL_ROUTE_CALLS_REFUSED | COCANCEL_ROUTE_CHANNEL)) ==
           COCANCEL_ROUTE_CHANNEL, "routes %#lx\n", client.status.routes);
        ok(client.slow_hr == RPC_E_CALL_CANCELED, "the second call got %#lx\n", client.slow_hr);
    }
    ok(stop_host(&host), "the host did not stop\n");
    CoUninitialize();
    CloseHandle(slow_started);
    CloseHandle(slow_release);
}

/* Run by test_broken in a child process with COCANCEL_TEST_BREAK set. */
START_TEST(broken_child)
{
    char name[64];

    if (!GetEnvironmentVariableA("COCANCEL_TEST_BREAK", name, sizeof(name)))
    {
        skip("run by the broken test only\n");
        return;
    }
    winetest_push_context("%s", name);
    test_broken_fact(TRUE);
    winetest_pop_context();
}

START_TEST(broken)
{
    static const char *facts[] = { "message" };
    unsigned int i;

    test_broken_fact(FALSE);
    for (i = 0; i < ARRAYSIZE(facts); i++)
    {
        winetest_push_context("%s", facts[i]);
        run_child("broken_child", "COCANCEL_TEST_BREAK", facts[i]);
        winetest_pop_context();
    }
}
