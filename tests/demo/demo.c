/*
 * cocancel demo: a watchdog cancels a long operation on another thread
 * through the standard COM cancellation API (statically imported from ole32,
 * as any Windows program does).  On stock Wine this program dies with
 * "unimplemented function ole32.dll.CoSetCancelObject"; with cocancel it
 * prints the timings of a real cancellation.
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

int main(void)
{
    HANDLE thread;
    DWORD tid;
    HRESULT hr;

    setvbuf(stdout, NULL, _IONBF, 0);
    QueryPerformanceFrequency(&frequency);
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
    return op.cancelled ? 0 : 1;
}
