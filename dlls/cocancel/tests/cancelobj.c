/*
 * Tests of cocancel's own entry points (cocancel.h): its cancel object,
 * CocancelCompleteCall / CocancelWaitCall, CocancelGetStatus, and the bad
 * input the cancellation API must answer with documented HRESULTs.
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdarg.h>

#include "windef.h"
#include "winbase.h"
#include "objbase.h"
#include "objidl.h"
#include "cocancel.h"

#include "wine/test.h"

static void test_status(void)
{
    struct cocancel_status status;
    HRESULT hr;

    hr = CocancelGetStatus(NULL);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);
    memset(&status, 0, sizeof(status));
    status.size = sizeof(status) - 1;
    hr = CocancelGetStatus(&status);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);

    status.size = sizeof(status);
    hr = CocancelGetStatus(&status);
    ok(hr == S_OK, "got %#lx\n", hr);
    /* This program imports cocancel directly, so the engine was loaded at start-up. */
    ok(status.routes & COCANCEL_ROUTE_DLL_NOTIFY, "routes %#lx\n", status.routes);
    ok(status.routes & (COCANCEL_ROUTE_COMBASE_STUBS | COCANCEL_ROUTE_COMBASE_REAL), "routes %#lx\n", status.routes);
    ok(status.routes & (COCANCEL_ROUTE_OLE32_GRAFT | COCANCEL_ROUTE_OLE32_NATIVE), "routes %#lx\n", status.routes);
    ok(!status.refused_patches, "%lu patches refused\n", status.refused_patches);
    trace("routes %#lx, %lu imports repaired\n", status.routes, status.repaired_imports);
}

static void test_lifecycle(void)
{
    ICancelMethodCalls *cancel;
    IUnknown *unk;
    ULONG refcount;
    HRESULT hr;

    hr = CocancelCreateCancelObject(TRUE, NULL);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);

    hr = CocancelCreateCancelObject(TRUE, &cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = ICancelMethodCalls_QueryInterface(cancel, &IID_IUnknown, (void **)&unk);
    ok(hr == S_OK && unk == (IUnknown *)cancel, "got %#lx, %p\n", hr, unk);
    IUnknown_Release(unk);
    hr = ICancelMethodCalls_QueryInterface(cancel, &IID_IMarshal, (void **)&unk);
    ok(hr == E_NOINTERFACE && !unk, "got %#lx, %p\n", hr, unk);

    /* Pending; completes normally. */
    hr = ICancelMethodCalls_TestCancel(cancel);
    ok(hr == RPC_S_CALLPENDING, "got %#lx\n", hr);
    hr = CocancelWaitCall(cancel, 0);
    ok(hr == RPC_S_CALLPENDING, "got %#lx\n", hr);
    hr = CocancelCompleteCall(cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = CocancelWaitCall(cancel, 0);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = CocancelCompleteCall(cancel);
    ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);
    /* Cancel after completion. */
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);
    hr = ICancelMethodCalls_TestCancel(cancel);
    ok(hr == RPC_S_CALLPENDING, "got %#lx\n", hr);
    refcount = ICancelMethodCalls_Release(cancel);
    ok(!refcount, "got refcount %lu\n", refcount);

    /* Cancelled at once: the late completion is to be discarded. */
    hr = CocancelCreateCancelObject(TRUE, &cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = ICancelMethodCalls_TestCancel(cancel);
    ok(hr == RPC_E_CALL_CANCELED, "got %#lx\n", hr);
    hr = CocancelWaitCall(cancel, 0);
    ok(hr == RPC_E_CALL_CANCELED, "got %#lx\n", hr);
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = CocancelCompleteCall(cancel);
    ok(hr == RPC_E_CALL_CANCELED, "got %#lx\n", hr);
    ICancelMethodCalls_Release(cancel);

    /* Made without cancellation enabled. */
    hr = CocancelCreateCancelObject(FALSE, &cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == CO_E_CANCEL_DISABLED, "got %#lx\n", hr);
    hr = ICancelMethodCalls_Cancel(cancel, 3);
    ok(hr == CO_E_CANCEL_DISABLED, "got %#lx\n", hr);
    hr = ICancelMethodCalls_TestCancel(cancel);
    ok(hr == RPC_S_CALLPENDING, "got %#lx\n", hr);
    hr = CocancelCompleteCall(cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    ICancelMethodCalls_Release(cancel);
}

struct completer
{
    ICancelMethodCalls *cancel;
    DWORD delay;
    HRESULT hr;
};

static DWORD WINAPI complete_later(void *arg)
{
    struct completer *completer = arg;

    Sleep(completer->delay);
    completer->hr = CocancelCompleteCall(completer->cancel);
    return 0;
}

static void test_grace(void)
{
    struct completer completer;
    ICancelMethodCalls *cancel;
    DWORD start, elapsed;
    HANDLE thread;
    HRESULT hr;

    /* The call finishes within the grace period: Cancel reports completion. */
    CocancelCreateCancelObject(TRUE, &cancel);
    completer.cancel = cancel;
    completer.delay = 200;
    thread = CreateThread(NULL, 0, complete_later, &completer, 0, NULL);
    start = GetTickCount();
    hr = ICancelMethodCalls_Cancel(cancel, 5);
    elapsed = GetTickCount() - start;
    ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);
    ok(elapsed < 4000, "Cancel waited %lu ms\n", elapsed);
    ok(WaitForSingleObject(thread, 5000) == WAIT_OBJECT_0, "completer hung\n");
    CloseHandle(thread);
    ok(completer.hr == S_OK, "got %#lx\n", completer.hr);
    hr = CocancelWaitCall(cancel, 0);
    ok(hr == S_OK, "got %#lx\n", hr);
    ICancelMethodCalls_Release(cancel);

    /* It does not: the call is abandoned when the grace period ends. */
    CocancelCreateCancelObject(TRUE, &cancel);
    start = GetTickCount();
    hr = ICancelMethodCalls_Cancel(cancel, 1);
    elapsed = GetTickCount() - start;
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(elapsed >= 900 && elapsed < 3000, "Cancel waited %lu ms\n", elapsed);
    hr = CocancelWaitCall(cancel, 0);
    ok(hr == RPC_E_CALL_CANCELED, "got %#lx\n", hr);
    hr = CocancelCompleteCall(cancel);
    ok(hr == RPC_E_CALL_CANCELED, "got %#lx\n", hr);
    ICancelMethodCalls_Release(cancel);
}

static DWORD WINAPI cancel_later(void *arg)
{
    ICancelMethodCalls *cancel = arg;

    Sleep(100);
    ICancelMethodCalls_Cancel(cancel, 0);
    return 0;
}

static void test_wait_released_by_cancel(void)
{
    ICancelMethodCalls *cancel;
    DWORD start, elapsed, tid;
    HANDLE thread;
    HRESULT hr;

    /* A thread waits for its call; a watchdog cancels it through CoCancelCall. */
    CocancelCreateCancelObject(TRUE, &cancel);
    hr = CoSetCancelObject((IUnknown *)cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    thread = CreateThread(NULL, 0, cancel_later, cancel, 0, &tid);
    start = GetTickCount();
    hr = CocancelWaitCall(cancel, 10000);
    elapsed = GetTickCount() - start;
    ok(hr == RPC_E_CALL_CANCELED, "got %#lx\n", hr);
    ok(elapsed < 2000, "released after %lu ms\n", elapsed);
    ok(WaitForSingleObject(thread, 5000) == WAIT_OBJECT_0, "canceller hung\n");
    CloseHandle(thread);
    hr = CoSetCancelObject(NULL);
    ok(hr == S_OK, "got %#lx\n", hr);
    ICancelMethodCalls_Release(cancel);
}

static void test_bad_input(void)
{
    struct { ICancelMethodCalls iface; } fake = { { NULL } };
    void *obj = (void *)0xdeadbeef;
    HRESULT hr;

    hr = CoGetCancelObject(0, NULL, &obj);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);
    ok(!obj, "got %p\n", obj);
    hr = CoGetCancelObject(0xfffffffc, &IID_ICancelMethodCalls, &obj);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    hr = CoCancelCall(0xfffffffc, 0);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    hr = CocancelCompleteCall(NULL);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);
    hr = CocancelWaitCall(NULL, 0);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);
    /* Not one of cocancel's objects: recognised by its vtable and refused. */
    hr = CocancelCompleteCall(&fake.iface);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);
    hr = CocancelWaitCall(&fake.iface, 0);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);
}

struct churn
{
    ICancelMethodCalls *cancel;
    HANDLE stop;
    LONG pushes;
};

/* Pushes and pops while another thread looks up and cancels. */
static DWORD WINAPI churn_thread(void *arg)
{
    struct churn *churn = arg;

    while (WaitForSingleObject(churn->stop, 0) == WAIT_TIMEOUT)
    {
        CoSetCancelObject((IUnknown *)churn->cancel);
        CoSetCancelObject(NULL);
        InterlockedIncrement(&churn->pushes);
    }
    return 0;
}

static void test_concurrent_lookup(void)
{
    struct churn churn;
    ICancelMethodCalls *got;
    unsigned int i, found = 0, wrong = 0;
    HANDLE thread;
    DWORD tid;
    HRESULT hr;

    CocancelCreateCancelObject(TRUE, &churn.cancel);
    churn.stop = CreateEventW(NULL, TRUE, FALSE, NULL);
    churn.pushes = 0;
    thread = CreateThread(NULL, 0, churn_thread, &churn, 0, &tid);
    for (i = 0; i < 20000; i++)
    {
        hr = CoGetCancelObject(tid, &IID_ICancelMethodCalls, (void **)&got);
        if (hr == S_OK)
        {
            if (got != churn.cancel) wrong++;
            ICancelMethodCalls_Release(got);
            found++;
        }
        else if (hr != E_NOINTERFACE) wrong++;
        if (i % 1000 == 0) Sleep(0);
    }
    SetEvent(churn.stop);
    ok(WaitForSingleObject(thread, 5000) == WAIT_OBJECT_0, "churn thread hung\n");
    CloseHandle(thread);
    CloseHandle(churn.stop);
    ok(!wrong, "%u lookups answered something else than the object or E_NOINTERFACE\n", wrong);
    trace("%lu pushes, found the object %u times out of 20000\n", churn.pushes, found);
    ok(ICancelMethodCalls_Release(churn.cancel) == 0, "references leaked\n");
}

START_TEST(cancelobj)
{
    test_status();
    test_lifecycle();
    test_grace();
    test_wait_released_by_cancel();
    test_bad_input();
    test_concurrent_lookup();
}
