/*
 * cocancel demo, part 3: asynchronous calls on a standard proxy.
 *
 * A client gets ICallFactory from an ordinary proxy, begins a slow call and
 * does other work while the server runs it, then begins a second slow call
 * and cancels it, showing the rules of "Canceling an Asynchronous Call":
 * Begin_ on a cancelled call object fails until Finish_ cleans up, Finish_
 * reports the cancel, and the server sees it through CoTestCancel.
 *
 * On stock Wine the proxy answers E_NOINTERFACE for ICallFactory.
 */

#define COBJMACROS
#define CONST_VTABLE
#include <stdio.h>
#include <windows.h>
#include <objbase.h>
#include <rpcproxy.h>

#include "asynccall_ps.h"
#include "async_ps.h"

static LARGE_INTEGER frequency, started;
static HRESULT (WINAPI *pCoTestCancel)(void);
static HANDLE server_done;

static double ms(void)
{
    LARGE_INTEGER now;

    QueryPerformanceCounter(&now);
    return (now.QuadPart - started.QuadPart) * 1000.0 / frequency.QuadPart;
}

static HRESULT WINAPI obj_Add(ICcAsyncTest *iface, int a, int b, int *sum)
{
    *sum = a + b;
    return S_OK;
}

/* Works for ms milliseconds, stopping early when CoTestCancel reports a cancel. */
static HRESULT WINAPI obj_Slow(ICcAsyncTest *iface, DWORD ms_total, DWORD *seen)
{
    DWORD start = GetTickCount();
    HRESULT hr = S_OK;

    *seen = 0;
    printf("    server: Slow(%lu ms) starts at %.1f ms\n", ms_total, ms());
    while (GetTickCount() - start < ms_total)
    {
        if (pCoTestCancel && pCoTestCancel() == RPC_E_CALL_CANCELED)
        {
            printf("    server: CoTestCancel() = RPC_E_CALL_CANCELED at %.1f ms: stopping\n", ms());
            *seen = 1;
            hr = E_ABORT;
            break;
        }
        Sleep(5);
    }
    if (hr == S_OK) printf("    server: Slow done at %.1f ms\n", ms());
    SetEvent(server_done);
    return hr;
}

/* A call object, saying why if the proxy has no call factory. */
static AsyncICcAsyncTest *new_call(ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call = create_call(proxy);

    if (!call) printf("  no call object from the proxy (no ICallFactory): no asynchronous calls here\n");
    return call;
}

int main(void)
{
    struct host server;
    AsyncICcAsyncTest *call1, *call2;
    ICancelMethodCalls *cancel;
    ICcAsyncTest *proxy = NULL;
    DWORD seen, cookie;
    unsigned int steps = 0;
    HRESULT hr;
    int sum;

    setvbuf(stdout, NULL, _IONBF, 0);
    QueryPerformanceFrequency(&frequency);
    pCoTestCancel = (void *)GetProcAddress(GetModuleHandleW(L"ole32.dll"), "CoTestCancel");
    server_done = CreateEventW(NULL, FALSE, FALSE, NULL);
    init_ps();
    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    cookie = register_ps();
    /* The object lives in a single-threaded apartment of its own. */
    start_host(&server, COINIT_APARTMENTTHREADED);
    CoGetInterfaceAndReleaseStream(server.stream, &IID_ICcAsyncTest, (void **)&proxy);

    printf("cocancel demo, part 3: asynchronous calls on a standard proxy (client MTA, server STA)\n");
    QueryPerformanceCounter(&started);
    if (!proxy || !(call1 = new_call(proxy)) || !(call2 = new_call(proxy)))
    {
        stop_host(&server);
        return 1;
    }

    printf("  Begin_Slow(600) = %#lx, returned at %.1f ms\n", AsyncICcAsyncTest_Begin_Slow(call1, 600), ms());
    while (ms() < 400)
    {
        Sleep(100);
        printf("  client: other work, step %u at %.1f ms\n", ++steps, ms());
    }
    hr = AsyncICcAsyncTest_Finish_Slow(call1, &seen);
    printf("  Finish_Slow = %#lx at %.1f ms (the server's own result)\n", hr, ms());

    QueryPerformanceCounter(&started);
    printf("  a second call, cancelled:\n");
    ResetEvent(server_done);
    printf("  Begin_Slow(10000) = %#lx at %.1f ms\n", AsyncICcAsyncTest_Begin_Slow(call2, 10000), ms());
    Sleep(200);
    AsyncICcAsyncTest_QueryInterface(call2, &IID_ICancelMethodCalls, (void **)&cancel);
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    printf("  ICancelMethodCalls::Cancel(0) = %#lx at %.1f ms\n", hr, ms());
    printf("  TestCancel = %#lx (RPC_E_CALL_CANCELED)\n", ICancelMethodCalls_TestCancel(cancel));
    hr = AsyncICcAsyncTest_Begin_Add(call2, 2, 3);
    printf("  Begin_Add before Finish_ = %#lx (RPC_S_CALLPENDING: Finish_ must clean up first)\n", hr);
    hr = AsyncICcAsyncTest_Finish_Slow(call2, &seen);
    printf("  Finish_Slow = %#lx (RPC_E_CALL_CANCELED) at %.1f ms\n", hr, ms());
    WaitForSingleObject(server_done, 5000);
    hr = AsyncICcAsyncTest_Finish_Slow(call2, &seen);
    printf("  Finish_ again = %#lx (RPC_E_CALL_COMPLETE: no call in progress)\n", hr);
    AsyncICcAsyncTest_Begin_Add(call2, 2, 3);
    hr = AsyncICcAsyncTest_Finish_Add(call2, &sum);
    printf("  the call object is reusable: Begin_Add(2, 3) + Finish_Add = %#lx, %d\n", hr, sum);

    ICancelMethodCalls_Release(cancel);
    AsyncICcAsyncTest_Release(call1);
    AsyncICcAsyncTest_Release(call2);
    ICcAsyncTest_Release(proxy);
    stop_host(&server);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}
