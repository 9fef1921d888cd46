/*
 * Conformance tests for the COM call-cancellation API:
 * CoEnableCallCancellation, CoDisableCallCancellation, CoCancelCall,
 * CoTestCancel, CoGetCancelObject, CoSetCancelObject.
 *
 * The functions are looked up at run time, as older ole32 versions lack some.
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdarg.h>

#include "windef.h"
#include "winbase.h"
#include "objbase.h"
#include "objidl.h"

#include "wine/test.h"

static HRESULT (WINAPI *pCoCancelCall)(DWORD, ULONG);
static HRESULT (WINAPI *pCoTestCancel)(void);
static HRESULT (WINAPI *pCoGetCancelObject)(DWORD, REFIID, void **);
static HRESULT (WINAPI *pCoSetCancelObject)(IUnknown *);
static HRESULT (WINAPI *pCoEnableCallCancellation)(void *);
static HRESULT (WINAPI *pCoDisableCallCancellation)(void *);

static const IID IID_unrelated = {0x2b0e1a52, 0x5fd3, 0x4d63, {0x9f, 0x6e, 0x11, 0x80, 0x3a, 0x42, 0xd7, 0x5c}};

/* A cancel object that records what it is asked. */
struct test_cancel
{
    ICancelMethodCalls ICancelMethodCalls_iface;
    LONG refcount;
    LONG cancel_calls;
    ULONG last_timeout;
    LONG cancelled;
    HRESULT cancel_result;
};

static inline struct test_cancel *impl_from_ICancelMethodCalls(ICancelMethodCalls *iface)
{
    return CONTAINING_RECORD(iface, struct test_cancel, ICancelMethodCalls_iface);
}

static HRESULT WINAPI test_cancel_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
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

static ULONG WINAPI test_cancel_AddRef(ICancelMethodCalls *iface)
{
    return InterlockedIncrement(&impl_from_ICancelMethodCalls(iface)->refcount);
}

static ULONG WINAPI test_cancel_Release(ICancelMethodCalls *iface)
{
    return InterlockedDecrement(&impl_from_ICancelMethodCalls(iface)->refcount);
}

static HRESULT WINAPI test_cancel_Cancel(ICancelMethodCalls *iface, ULONG timeout)
{
    struct test_cancel *cancel = impl_from_ICancelMethodCalls(iface);

    cancel->last_timeout = timeout;
    InterlockedIncrement(&cancel->cancel_calls);
    if (SUCCEEDED(cancel->cancel_result)) InterlockedExchange(&cancel->cancelled, 1);
    return cancel->cancel_result;
}

static HRESULT WINAPI test_cancel_TestCancel(ICancelMethodCalls *iface)
{
    struct test_cancel *cancel = impl_from_ICancelMethodCalls(iface);

    return cancel->cancelled ? RPC_E_CALL_CANCELED : RPC_S_CALLPENDING;
}

static const ICancelMethodCallsVtbl test_cancel_vtbl =
{
    test_cancel_QueryInterface,
    test_cancel_AddRef,
    test_cancel_Release,
    test_cancel_Cancel,
    test_cancel_TestCancel,
};

static void init_test_cancel(struct test_cancel *cancel, HRESULT cancel_result)
{
    memset(cancel, 0, sizeof(*cancel));
    cancel->ICancelMethodCalls_iface.lpVtbl = &test_cancel_vtbl;
    cancel->refcount = 1;
    cancel->cancel_result = cancel_result;
}

/* An object that is not a cancel object. */
struct plain_unknown
{
    IUnknown IUnknown_iface;
    LONG refcount;
};

static HRESULT WINAPI plain_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown))
    {
        *ppv = iface;
        IUnknown_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI plain_AddRef(IUnknown *iface)
{
    return InterlockedIncrement(&CONTAINING_RECORD(iface, struct plain_unknown, IUnknown_iface)->refcount);
}

static ULONG WINAPI plain_Release(IUnknown *iface)
{
    return InterlockedDecrement(&CONTAINING_RECORD(iface, struct plain_unknown, IUnknown_iface)->refcount);
}

static const IUnknownVtbl plain_vtbl = { plain_QueryInterface, plain_AddRef, plain_Release };

static BOOL init_functions(void)
{
    HMODULE ole32 = GetModuleHandleA("ole32.dll");

    pCoCancelCall = (void *)GetProcAddress(ole32, "CoCancelCall");
    pCoTestCancel = (void *)GetProcAddress(ole32, "CoTestCancel");
    pCoGetCancelObject = (void *)GetProcAddress(ole32, "CoGetCancelObject");
    pCoSetCancelObject = (void *)GetProcAddress(ole32, "CoSetCancelObject");
    pCoEnableCallCancellation = (void *)GetProcAddress(ole32, "CoEnableCallCancellation");
    pCoDisableCallCancellation = (void *)GetProcAddress(ole32, "CoDisableCallCancellation");
    return pCoCancelCall && pCoTestCancel && pCoGetCancelObject && pCoSetCancelObject &&
           pCoEnableCallCancellation && pCoDisableCallCancellation;
}

static void test_enable_disable(void)
{
    HRESULT hr;

    hr = pCoDisableCallCancellation(NULL);
    ok(hr == CO_E_CANCEL_DISABLED, "got %#lx\n", hr);

    hr = pCoEnableCallCancellation(NULL);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = pCoEnableCallCancellation(NULL);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = pCoDisableCallCancellation(NULL);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = pCoDisableCallCancellation(NULL);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = pCoDisableCallCancellation(NULL);
    ok(hr == CO_E_CANCEL_DISABLED, "got %#lx\n", hr);
}

static DWORD WINAPI exit_at_once(void *arg)
{
    return 0;
}

/* The id of a thread that existed and has exited. */
static DWORD exited_thread_id(void)
{
    DWORD tid;
    HANDLE thread = CreateThread(NULL, 0, exit_at_once, NULL, 0, &tid);

    ok(WaitForSingleObject(thread, 5000) == WAIT_OBJECT_0, "thread did not exit\n");
    CloseHandle(thread);
    return tid;
}

static void test_no_cancel_object(void)
{
    void *obj;
    HRESULT hr;

    obj = (void *)0xdeadbeef;
    hr = pCoGetCancelObject(0, &IID_ICancelMethodCalls, &obj);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    ok(!obj, "got %p\n", obj);

    obj = (void *)0xdeadbeef;
    hr = pCoGetCancelObject(GetCurrentThreadId(), &IID_IUnknown, &obj);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    ok(!obj, "got %p\n", obj);

    hr = pCoGetCancelObject(exited_thread_id(), &IID_ICancelMethodCalls, &obj);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);

    hr = pCoGetCancelObject(0, &IID_ICancelMethodCalls, NULL);
    ok(hr == E_INVALIDARG, "got %#lx\n", hr);

    hr = pCoCancelCall(0, 0);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    hr = pCoCancelCall(GetCurrentThreadId(), 5);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    hr = pCoCancelCall(exited_thread_id(), 0);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);

    /* Popping with nothing registered is harmless. */
    hr = pCoSetCancelObject(NULL);
    ok(hr == S_OK, "got %#lx\n", hr);
}

static void test_set_cancel_object(void)
{
    struct test_cancel outer, inner;
    struct plain_unknown plain = { { &plain_vtbl }, 1 };
    ICancelMethodCalls *cancel;
    IUnknown *unk;
    void *obj;
    HRESULT hr;

    hr = pCoSetCancelObject(&plain.IUnknown_iface);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    ok(plain.refcount == 1, "got refcount %ld\n", plain.refcount);
    hr = pCoGetCancelObject(0, &IID_IUnknown, &obj);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);

    init_test_cancel(&outer, S_OK);
    init_test_cancel(&inner, S_OK);

    hr = pCoSetCancelObject((IUnknown *)&outer.ICancelMethodCalls_iface);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(outer.refcount == 2, "got refcount %ld\n", outer.refcount);

    hr = pCoGetCancelObject(0, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(cancel == &outer.ICancelMethodCalls_iface, "got %p\n", cancel);
    ok(outer.refcount == 3, "got refcount %ld\n", outer.refcount);
    ICancelMethodCalls_Release(cancel);

    hr = pCoGetCancelObject(GetCurrentThreadId(), &IID_IUnknown, (void **)&unk);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(unk == (IUnknown *)&outer.ICancelMethodCalls_iface, "got %p\n", unk);
    IUnknown_Release(unk);

    obj = (void *)0xdeadbeef;
    hr = pCoGetCancelObject(0, &IID_unrelated, &obj);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    ok(!obj, "got %p\n", obj);

    /* Nested: the innermost object answers. */
    hr = pCoSetCancelObject((IUnknown *)&inner.ICancelMethodCalls_iface);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = pCoGetCancelObject(0, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(cancel == &inner.ICancelMethodCalls_iface, "got %p\n", cancel);
    ICancelMethodCalls_Release(cancel);

    hr = pCoCancelCall(0, 7);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(inner.cancel_calls == 1, "inner Cancel called %ld times\n", inner.cancel_calls);
    ok(inner.last_timeout == 7, "got timeout %lu\n", inner.last_timeout);
    ok(!outer.cancel_calls, "outer Cancel called %ld times\n", outer.cancel_calls);

    /* Popping restores the outer object and drops the reference. */
    hr = pCoSetCancelObject(NULL);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(inner.refcount == 1, "got refcount %ld\n", inner.refcount);
    hr = pCoGetCancelObject(0, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(cancel == &outer.ICancelMethodCalls_iface, "got %p\n", cancel);
    ICancelMethodCalls_Release(cancel);

    hr = pCoSetCancelObject(NULL);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(outer.refcount == 1, "got refcount %ld\n", outer.refcount);
    hr = pCoGetCancelObject(0, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
}

static void test_cancel_call_result(void)
{
    static const HRESULT results[] = { S_OK, CO_E_CANCEL_DISABLED, RPC_E_CALL_COMPLETE };
    struct test_cancel cancel;
    unsigned int i;
    HRESULT hr;

    /* CoCancelCall reports what the cancel object answers. */
    for (i = 0; i < ARRAY_SIZE(results); i++)
    {
        winetest_push_context("result %#lx", results[i]);
        init_test_cancel(&cancel, results[i]);
        hr = pCoSetCancelObject((IUnknown *)&cancel.ICancelMethodCalls_iface);
        ok(hr == S_OK, "got %#lx\n", hr);
        hr = pCoCancelCall(0, 0);
        ok(hr == results[i], "got %#lx\n", hr);
        ok(cancel.cancel_calls == 1, "Cancel called %ld times\n", cancel.cancel_calls);
        ok(!cancel.last_timeout, "got timeout %lu\n", cancel.last_timeout);
        hr = pCoSetCancelObject(NULL);
        ok(hr == S_OK, "got %#lx\n", hr);
        ok(cancel.refcount == 1, "got refcount %ld\n", cancel.refcount);
        winetest_pop_context();
    }
}

struct worker
{
    struct test_cancel cancel;
    HANDLE registered;
    HANDLE finish;
    BOOL pop;
    HRESULT set_hr, test_hr;
    DWORD polls;
};

/* Stands for a thread in a long operation that polls its cancel object. */
static DWORD WINAPI cancellable_worker(void *arg)
{
    struct worker *worker = arg;
    ICancelMethodCalls *cancel = &worker->cancel.ICancelMethodCalls_iface;
    DWORD start = GetTickCount();

    worker->set_hr = pCoSetCancelObject((IUnknown *)cancel);
    SetEvent(worker->registered);
    while ((worker->test_hr = ICancelMethodCalls_TestCancel(cancel)) == RPC_S_CALLPENDING &&
           GetTickCount() - start < 10000)
    {
        worker->polls++;
        Sleep(1);
    }
    WaitForSingleObject(worker->finish, 10000);
    if (worker->pop) pCoSetCancelObject(NULL);
    return 0;
}

static void test_cross_thread(void)
{
    ICancelMethodCalls *cancel;
    struct worker worker;
    DWORD tid, start, elapsed;
    HANDLE thread;
    HRESULT hr;

    memset(&worker, 0, sizeof(worker));
    init_test_cancel(&worker.cancel, S_OK);
    worker.registered = CreateEventW(NULL, TRUE, FALSE, NULL);
    worker.finish = CreateEventW(NULL, TRUE, FALSE, NULL);
    worker.pop = TRUE;

    thread = CreateThread(NULL, 0, cancellable_worker, &worker, 0, &tid);
    ok(WaitForSingleObject(worker.registered, 5000) == WAIT_OBJECT_0, "worker did not start\n");
    ok(worker.set_hr == S_OK, "got %#lx\n", worker.set_hr);

    hr = pCoGetCancelObject(tid, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(cancel == &worker.cancel.ICancelMethodCalls_iface, "got %p\n", cancel);
    if (SUCCEEDED(hr)) ICancelMethodCalls_Release(cancel);

    /* This thread has none of its own. */
    hr = pCoGetCancelObject(0, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);

    start = GetTickCount();
    hr = pCoCancelCall(tid, 0);
    ok(hr == S_OK, "got %#lx\n", hr);
    SetEvent(worker.finish);
    ok(WaitForSingleObject(thread, 5000) == WAIT_OBJECT_0, "worker was not released\n");
    elapsed = GetTickCount() - start;
    ok(elapsed < 2000, "worker took %lu ms to see the cancel\n", elapsed);
    ok(worker.test_hr == RPC_E_CALL_CANCELED, "got %#lx\n", worker.test_hr);
    ok(worker.cancel.cancel_calls == 1, "Cancel called %ld times\n", worker.cancel.cancel_calls);
    CloseHandle(thread);

    hr = pCoGetCancelObject(tid, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    hr = pCoCancelCall(tid, 0);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    ok(worker.cancel.refcount == 1, "got refcount %ld\n", worker.cancel.refcount);

    /* A thread that exits with its object still registered. */
    init_test_cancel(&worker.cancel, S_OK);
    worker.cancel.cancelled = 1;   /* the worker's poll loop ends at once */
    ResetEvent(worker.registered);
    worker.pop = FALSE;
    thread = CreateThread(NULL, 0, cancellable_worker, &worker, 0, &tid);
    ok(WaitForSingleObject(thread, 5000) == WAIT_OBJECT_0, "worker did not exit\n");
    CloseHandle(thread);
    hr = pCoGetCancelObject(tid, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    hr = pCoCancelCall(tid, 0);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    ok(!worker.cancel.cancel_calls, "Cancel called %ld times\n", worker.cancel.cancel_calls);
    /* The thread's end released the object it left registered. */
    ok(worker.cancel.refcount == 1, "got refcount %ld\n", worker.cancel.refcount);

    CloseHandle(worker.registered);
    CloseHandle(worker.finish);
}

struct uninit_worker
{
    struct test_cancel outer, inner;
    HANDLE uninitialized, pop, popped;
    BOOL exit_registered;   /* exit with both objects still registered */
    HRESULT init_hr, set_hr[2], pop_hr[2];
};

static DWORD WINAPI uninit_worker_thread(void *arg)
{
    struct uninit_worker *worker = arg;

    worker->init_hr = CoInitializeEx(NULL, COINIT_MULTITHREADED);
    worker->set_hr[0] = pCoSetCancelObject((IUnknown *)&worker->outer.ICancelMethodCalls_iface);
    worker->set_hr[1] = pCoSetCancelObject((IUnknown *)&worker->inner.ICancelMethodCalls_iface);
    CoUninitialize();
    SetEvent(worker->uninitialized);
    if (worker->exit_registered) return 0;
    WaitForSingleObject(worker->pop, 10000);
    worker->pop_hr[0] = pCoSetCancelObject(NULL);
    worker->pop_hr[1] = pCoSetCancelObject(NULL);
    SetEvent(worker->popped);
    WaitForSingleObject(worker->pop, 10000);
    return 0;
}

/*
 * CoUninitialize on a thread with cancel objects registered: the stack
 * belongs to the thread, not to its apartment, so the objects stay
 * registered until popped or until the thread ends, and are released then.
 */
static void test_uninitialize_with_objects(void)
{
    struct uninit_worker worker;
    ICancelMethodCalls *cancel;
    HANDLE thread;
    DWORD tid;
    HRESULT hr;
    int pass;

    for (pass = 0; pass < 2; pass++)
    {
        memset(&worker, 0, sizeof(worker));
        init_test_cancel(&worker.outer, S_OK);
        init_test_cancel(&worker.inner, S_OK);
        worker.uninitialized = CreateEventW(NULL, TRUE, FALSE, NULL);
        worker.pop = CreateEventW(NULL, FALSE, FALSE, NULL);
        worker.popped = CreateEventW(NULL, TRUE, FALSE, NULL);
        worker.exit_registered = pass;
        thread = CreateThread(NULL, 0, uninit_worker_thread, &worker, 0, &tid);
        ok(!WaitForSingleObject(worker.uninitialized, 5000), "worker did not start\n");
        ok(worker.init_hr == S_OK, "CoInitializeEx got %#lx\n", worker.init_hr);
        ok(worker.set_hr[0] == S_OK && worker.set_hr[1] == S_OK, "CoSetCancelObject got %#lx, %#lx\n",
           worker.set_hr[0], worker.set_hr[1]);

        if (pass)
        {
            /* The thread ended with both registered: both are let go. */
            ok(!WaitForSingleObject(thread, 5000), "worker did not exit\n");
            hr = pCoGetCancelObject(tid, &IID_ICancelMethodCalls, (void **)&cancel);
            ok(hr == E_NOINTERFACE, "CoGetCancelObject after the thread ended got %#lx\n", hr);
            ok(worker.outer.refcount == 1 && worker.inner.refcount == 1, "refcounts %ld, %ld\n",
               worker.outer.refcount, worker.inner.refcount);
            ok(!worker.outer.cancel_calls && !worker.inner.cancel_calls, "an object was cancelled\n");
        }
        else
        {
            hr = pCoGetCancelObject(tid, &IID_ICancelMethodCalls, (void **)&cancel);
            ok(hr == S_OK || broken(hr == E_NOINTERFACE), "CoGetCancelObject after CoUninitialize got %#lx\n", hr);
            if (hr == S_OK)
            {
                ok(cancel == &worker.inner.ICancelMethodCalls_iface, "got %p, not the innermost\n", cancel);
                ICancelMethodCalls_Release(cancel);
                hr = pCoCancelCall(tid, 0);
                ok(hr == S_OK, "CoCancelCall got %#lx\n", hr);
                ok(worker.inner.cancel_calls == 1 && !worker.outer.cancel_calls, "Cancel calls %ld, %ld\n",
                   worker.inner.cancel_calls, worker.outer.cancel_calls);
            }
            SetEvent(worker.pop);
            ok(!WaitForSingleObject(worker.popped, 5000), "worker did not pop\n");
            ok(worker.pop_hr[0] == S_OK && worker.pop_hr[1] == S_OK, "popping got %#lx, %#lx\n",
               worker.pop_hr[0], worker.pop_hr[1]);
            ok(worker.outer.refcount == 1 && worker.inner.refcount == 1, "refcounts %ld, %ld\n",
               worker.outer.refcount, worker.inner.refcount);
            hr = pCoCancelCall(tid, 0);
            ok(hr == E_NOINTERFACE, "CoCancelCall with nothing registered got %#lx\n", hr);
            SetEvent(worker.pop);
            ok(!WaitForSingleObject(thread, 5000), "worker did not exit\n");
        }
        CloseHandle(thread);
        CloseHandle(worker.uninitialized);
        CloseHandle(worker.pop);
        CloseHandle(worker.popped);
    }
}

static void test_test_cancel(void)
{
    struct test_cancel cancel;
    IUnknown *previous, *restored;
    HRESULT hr;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);

    /* Outside a method call there is no call context. */
    hr = pCoTestCancel();
    ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);

    /* Inside one, CoTestCancel asks the call context's ICancelMethodCalls. */
    init_test_cancel(&cancel, S_OK);
    hr = CoSwitchCallContext((IUnknown *)&cancel.ICancelMethodCalls_iface, &previous);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(!previous, "got %p\n", previous);
    hr = pCoTestCancel();
    ok(hr == RPC_S_CALLPENDING, "got %#lx\n", hr);
    ICancelMethodCalls_Cancel(&cancel.ICancelMethodCalls_iface, 0);
    hr = pCoTestCancel();
    ok(hr == RPC_E_CALL_CANCELED, "got %#lx\n", hr);
    hr = CoSwitchCallContext(previous, &restored);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(restored == (IUnknown *)&cancel.ICancelMethodCalls_iface, "got %p\n", restored);

    hr = pCoTestCancel();
    ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);
    ok(cancel.refcount == 1, "got refcount %ld\n", cancel.refcount);

    CoUninitialize();
}

START_TEST(cancel)
{
    BOOL available = init_functions();

    /* Windows has it since Windows 2000; stock Wine's ole32 exports none of it. */
    todo_wine_if(!available) ok(available, "the call-cancellation API is not available\n");
    if (!available)
    {
        skip("the call-cancellation API is not available\n");
        return;
    }
    test_enable_disable();
    test_no_cancel_object();
    test_set_cancel_object();
    test_cancel_call_result();
    test_cross_thread();
    test_uninitialize_with_objects();
    test_test_cancel();
}
