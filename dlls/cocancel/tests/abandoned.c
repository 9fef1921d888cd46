/*
 * Calls whose caller was let go before the reply came: cocancel keeps each
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
 *    came, while the proxy keeps being used.
 * Uses the interfaces of dlls/ole32/tests/asynccall_ps.idl.
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdarg.h>

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

static unsigned int abandoned_calls(void)
{
    struct cocancel_status status;

    status.size = sizeof(status);
    if (CocancelGetStatus(&status) != S_OK) return ~0u;
    return status.abandoned_calls;
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

START_TEST(abandoned)
{
    if (sizeof(void *) != 8)
    {
        skip("cocancel intercepts proxied calls on x86_64 only\n");
        return;
    }
    slow_started = CreateEventW(NULL, FALSE, FALSE, NULL);
    slow_release = CreateEventW(NULL, TRUE, FALSE, NULL);
    init_ps();

    test_uninitialize_after_cancel(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED);
    test_uninitialize_after_cancel(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED);
    test_released_without_finish(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED);
    test_released_without_finish(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED);
    test_released_without_finish(COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED);

    CloseHandle(slow_started);
    CloseHandle(slow_release);
}
