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

    /* A program built against the first version of the structure. */
    status.size = COCANCEL_STATUS_V1_SIZE;
    status.abandoned_calls = 0xdeadbeef;
    hr = CocancelGetStatus(&status);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(status.abandoned_calls == 0xdeadbeef, "a field past the given size was written\n");

    /* The second version: abandoned_calls, no patch_points. */
    status.size = COCANCEL_STATUS_V2_SIZE;
    status.patch_points = 0xdeadbeef;
    hr = CocancelGetStatus(&status);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(!status.abandoned_calls, "%lu abandoned calls in a program that made no call\n", status.abandoned_calls);
    ok(status.patch_points == 0xdeadbeef, "a field past the given size was written\n");

    /* The third version: patch_points, no leaked_calls. */
    status.size = COCANCEL_STATUS_V3_SIZE;
    status.leaked_calls = 0xdeadbeef;
    hr = CocancelGetStatus(&status);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(status.leaked_calls == 0xdeadbeef, "a field past the given size was written\n");

    status.size = sizeof(status);
    status.leaked_calls = 0xdeadbeef;
    hr = CocancelGetStatus(&status);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(!status.abandoned_calls, "%lu abandoned calls in a program that made no call\n", status.abandoned_calls);
    /* Calls given up by ended threads of tests that ran before in this process, if any: a count. */
    ok(status.leaked_calls < 100, "leaked_calls is %lu\n", status.leaked_calls);
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
    /* Already cancelled. */
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == RPC_E_CALL_CANCELED, "got %#lx\n", hr);
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

/*
 * Bad input to every entry point cocancel.dll exports and every method of
 * the objects it hands out directly, and the documented answer: this table
 * is the spec.  (Call objects, ICallFactory and misuse of Begin_/Finish_
 * have theirs in dlls/ole32/tests/asynccall.c; the synchronization objects'
 * normal use is in syncobjects.c.)
 */
enum bad_case
{
    GET_NULL_IID, GET_NULL_PPV, GET_UNKNOWN_TID, GET_EXITED_TID, GET_NONE_HERE, GET_WRONG_IID,
    CANCEL_UNKNOWN_TID, CANCEL_EXITED_TID, CANCEL_NONE_HERE, SET_NOT_CANCEL_OBJECT, SET_POP_EMPTY,
    TEST_OUTSIDE_CALL, CREATE_NULL, COMPLETE_NULL, COMPLETE_FOREIGN, COMPLETE_TWICE, WAIT_NULL,
    WAIT_FOREIGN, STATUS_NULL, STATUS_SIZE, WAIT_CHANNEL, OBJ_QI_NULL, OBJ_QI_WRONG, OBJ_CANCEL_COMPLETE,
    OBJ_CANCEL_DISABLED, OBJ_CANCEL_TWICE, OBJ_TEST_COMPLETE, CLASS_UNKNOWN, CLASS_NULL_PPV,
    CLASS_WRONG_IID, FACTORY_AGGREGATE, FACTORY_NULL_PPV, FACTORY_WRONG_IID, EVENT_QI_NULL,
    EVENT_GETHANDLE_NULL, EVENT_SETHANDLE_NULL, CONTAINER_ADD_NULL, CONTAINER_ADD_NO_HANDLE,
    CONTAINER_WAIT_NULL, CONTAINER_WAIT_EMPTY, CAN_UNLOAD,
};

static const struct
{
    enum bad_case id;
    const char *what;
    HRESULT expect;
}
bad_cases[] =
{
    { GET_NULL_IID,            "CoGetCancelObject(0, NULL, &p)",                           E_INVALIDARG },
    { GET_NULL_PPV,            "CoGetCancelObject(0, &IID_ICancelMethodCalls, NULL)",      E_INVALIDARG },
    { GET_UNKNOWN_TID,         "CoGetCancelObject(no such thread)",                        E_NOINTERFACE },
    { GET_EXITED_TID,          "CoGetCancelObject(a thread that has exited)",              E_NOINTERFACE },
    { GET_NONE_HERE,           "CoGetCancelObject(0) with nothing registered",             E_NOINTERFACE },
    { GET_WRONG_IID,           "CoGetCancelObject(0, IID_IMarshal), object registered",    E_NOINTERFACE },
    { CANCEL_UNKNOWN_TID,      "CoCancelCall(no such thread)",                             E_NOINTERFACE },
    { CANCEL_EXITED_TID,       "CoCancelCall(a thread that has exited)",                   E_NOINTERFACE },
    { CANCEL_NONE_HERE,        "CoCancelCall(0) with nothing registered",                  E_NOINTERFACE },
    { SET_NOT_CANCEL_OBJECT,   "CoSetCancelObject(object without ICancelMethodCalls)",     E_NOINTERFACE },
    { SET_POP_EMPTY,           "CoSetCancelObject(NULL) with nothing registered",          S_OK },
    { TEST_OUTSIDE_CALL,       "CoTestCancel() outside a method call",                     RPC_E_CALL_COMPLETE },
    { CREATE_NULL,             "CocancelCreateCancelObject(TRUE, NULL)",                   E_INVALIDARG },
    { COMPLETE_NULL,           "CocancelCompleteCall(NULL)",                               E_INVALIDARG },
    { COMPLETE_FOREIGN,        "CocancelCompleteCall(someone else's cancel object)",       E_INVALIDARG },
    { COMPLETE_TWICE,          "CocancelCompleteCall() a second time",                     RPC_E_CALL_COMPLETE },
    { WAIT_NULL,               "CocancelWaitCall(NULL, 0)",                                E_INVALIDARG },
    { WAIT_FOREIGN,            "CocancelWaitCall(someone else's cancel object, 0)",        E_INVALIDARG },
    { STATUS_NULL,             "CocancelGetStatus(NULL)",                                  E_INVALIDARG },
    { STATUS_SIZE,             "CocancelGetStatus(size field wrong)",                      E_INVALIDARG },
    { WAIT_CHANNEL,            "CocancelWaitChannel(0) in a program that made no call",    S_OK },
    { OBJ_QI_NULL,             "cancel object: QueryInterface(IID_IUnknown, NULL)",        E_POINTER },
    { OBJ_QI_WRONG,            "cancel object: QueryInterface(IID_IMarshal)",              E_NOINTERFACE },
    { OBJ_CANCEL_COMPLETE,     "cancel object: Cancel(0) after completion",                RPC_E_CALL_COMPLETE },
    { OBJ_CANCEL_DISABLED,     "cancel object: Cancel(0) when not cancellable",            CO_E_CANCEL_DISABLED },
    { OBJ_CANCEL_TWICE,        "cancel object: Cancel(0) when already cancelled",          RPC_E_CALL_CANCELED },
    { OBJ_TEST_COMPLETE,       "cancel object: TestCancel() after completion",            RPC_S_CALLPENDING },
    { CLASS_UNKNOWN,           "DllGetClassObject(unknown class)",                         CLASS_E_CLASSNOTAVAILABLE },
    { CLASS_NULL_PPV,          "DllGetClassObject(CLSID_StdEvent, IID_IClassFactory, NULL)", E_POINTER },
    { CLASS_WRONG_IID,         "DllGetClassObject(CLSID_StdEvent, IID_IMarshal)",          E_NOINTERFACE },
    { FACTORY_AGGREGATE,       "IClassFactory::CreateInstance(outer, IID_IUnknown)",       CLASS_E_NOAGGREGATION },
    { FACTORY_NULL_PPV,        "IClassFactory::CreateInstance(NULL, IID_ISynchronize, NULL)", E_POINTER },
    { FACTORY_WRONG_IID,       "IClassFactory::CreateInstance(NULL, IID_IMarshal)",        E_NOINTERFACE },
    { EVENT_QI_NULL,           "StdEvent: QueryInterface(IID_ISynchronize, NULL)",         E_POINTER },
    { EVENT_GETHANDLE_NULL,    "StdEvent: ISynchronizeHandle::GetHandle(NULL)",            E_INVALIDARG },
    { EVENT_SETHANDLE_NULL,    "StdEvent: ISynchronizeEvent::SetEventHandle(NULL)",        E_INVALIDARG },
    { CONTAINER_ADD_NULL,      "SynchronizeContainer: AddSynchronize(NULL)",               E_POINTER },
    { CONTAINER_ADD_NO_HANDLE, "SynchronizeContainer: AddSynchronize(object without handle)", E_NOINTERFACE },
    { CONTAINER_WAIT_NULL,     "SynchronizeContainer: WaitMultiple(0, 0, NULL)",           E_POINTER },
    { CONTAINER_WAIT_EMPTY,    "SynchronizeContainer: WaitMultiple on an empty container", RPC_E_NO_SYNC },
    /* The engine patches the process: it never asks to be unloaded. */
    { CAN_UNLOAD,              "DllCanUnloadNow()",                                        S_FALSE },
};

static const CLSID CLSID_StdEvent_ = {0x0000032b, 0, 0, {0xc0, 0, 0, 0, 0, 0, 0, 0x46}};
static const CLSID CLSID_SynchronizeContainer_ = {0x0000032d, 0, 0, {0xc0, 0, 0, 0, 0, 0, 0, 0x46}};

static HRESULT (WINAPI *pDllGetClassObject)(REFCLSID, REFIID, void **);
static HRESULT (WINAPI *pDllCanUnloadNow)(void);

/* Someone else's cancel object: same interface, not cocancel's. */
static HRESULT WINAPI foreign_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICancelMethodCalls))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}
static ULONG WINAPI foreign_AddRef(ICancelMethodCalls *iface) { return 2; }
static ULONG WINAPI foreign_Release(ICancelMethodCalls *iface) { return 1; }
static HRESULT WINAPI foreign_Cancel(ICancelMethodCalls *iface, ULONG seconds) { return S_OK; }
static HRESULT WINAPI foreign_TestCancel(ICancelMethodCalls *iface) { return RPC_S_CALLPENDING; }
static const ICancelMethodCallsVtbl foreign_vtbl =
{
    foreign_QueryInterface, foreign_AddRef, foreign_Release, foreign_Cancel, foreign_TestCancel,
};
static ICancelMethodCalls foreign = { &foreign_vtbl };

/* An object that is neither a cancel object nor has a handle to wait on. */
static HRESULT WINAPI plain_QueryInterface(ISynchronize *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ISynchronize))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}
static ULONG WINAPI plain_AddRef(ISynchronize *iface) { return 2; }
static ULONG WINAPI plain_Release(ISynchronize *iface) { return 1; }
static HRESULT WINAPI plain_Wait(ISynchronize *iface, DWORD flags, DWORD timeout) { return S_OK; }
static HRESULT WINAPI plain_Signal(ISynchronize *iface) { return S_OK; }
static HRESULT WINAPI plain_Reset(ISynchronize *iface) { return S_OK; }
static const ISynchronizeVtbl plain_vtbl =
{
    plain_QueryInterface, plain_AddRef, plain_Release, plain_Wait, plain_Signal, plain_Reset,
};
static ISynchronize plain = { &plain_vtbl };

static DWORD WINAPI short_thread(void *arg)
{
    return 0;
}

/* The id of a thread that has come and gone. */
static DWORD exited_thread_id(void)
{
    HANDLE thread;
    DWORD tid = 0;

    if ((thread = CreateThread(NULL, 0, short_thread, NULL, 0, &tid)))
    {
        WaitForSingleObject(thread, 5000);
        CloseHandle(thread);
    }
    return tid;
}

static HRESULT create_sync_object(const CLSID *clsid, REFIID riid, void **ppv)
{
    IClassFactory *factory;
    HRESULT hr;

    *ppv = NULL;
    if (FAILED(hr = pDllGetClassObject(clsid, &IID_IClassFactory, (void **)&factory))) return hr;
    hr = IClassFactory_CreateInstance(factory, NULL, riid, ppv);
    IClassFactory_Release(factory);
    return hr;
}

/* Runs one case; *clean is cleared when an out-parameter was left non-NULL on failure. */
static HRESULT run_bad_case(enum bad_case id, BOOL *clean)
{
    struct cocancel_status status;
    ICancelMethodCalls *cancel = NULL;
    IClassFactory *factory;
    ISynchronizeContainer *container;
    ISynchronizeHandle *handle_iface;
    ISynchronizeEvent *event_iface;
    ISynchronize *sync;
    void *out = (void *)0xdeadbeef;
    HRESULT hr = E_FAIL;

    *clean = TRUE;
    switch (id)
    {
    case GET_NULL_IID:
        hr = CoGetCancelObject(0, NULL, &out);
        *clean = !out;
        return hr;
    case GET_NULL_PPV:
        return CoGetCancelObject(0, &IID_ICancelMethodCalls, NULL);
    case GET_UNKNOWN_TID:
        hr = CoGetCancelObject(0xfffffffc, &IID_ICancelMethodCalls, &out);
        *clean = !out;
        return hr;
    case GET_EXITED_TID:
        hr = CoGetCancelObject(exited_thread_id(), &IID_ICancelMethodCalls, &out);
        *clean = !out;
        return hr;
    case GET_NONE_HERE:
        hr = CoGetCancelObject(0, &IID_ICancelMethodCalls, &out);
        *clean = !out;
        return hr;
    case GET_WRONG_IID:
        CocancelCreateCancelObject(TRUE, &cancel);
        CoSetCancelObject((IUnknown *)cancel);
        hr = CoGetCancelObject(GetCurrentThreadId(), &IID_IMarshal, &out);
        *clean = !out;
        CoSetCancelObject(NULL);
        ICancelMethodCalls_Release(cancel);
        return hr;
    case CANCEL_UNKNOWN_TID:
        return CoCancelCall(0xfffffffc, 0);
    case CANCEL_EXITED_TID:
        return CoCancelCall(exited_thread_id(), 0);
    case CANCEL_NONE_HERE:
        return CoCancelCall(0, 0);
    case SET_NOT_CANCEL_OBJECT:
        return CoSetCancelObject((IUnknown *)&plain);
    case SET_POP_EMPTY:
        return CoSetCancelObject(NULL);
    case TEST_OUTSIDE_CALL:
        return CoTestCancel();
    case CREATE_NULL:
        return CocancelCreateCancelObject(TRUE, NULL);
    case COMPLETE_NULL:
        return CocancelCompleteCall(NULL);
    case COMPLETE_FOREIGN:
        return CocancelCompleteCall(&foreign);
    case COMPLETE_TWICE:
        CocancelCreateCancelObject(TRUE, &cancel);
        CocancelCompleteCall(cancel);
        hr = CocancelCompleteCall(cancel);
        ICancelMethodCalls_Release(cancel);
        return hr;
    case WAIT_NULL:
        return CocancelWaitCall(NULL, 0);
    case WAIT_FOREIGN:
        return CocancelWaitCall(&foreign, 0);
    case STATUS_NULL:
        return CocancelGetStatus(NULL);
    case STATUS_SIZE:
        memset(&status, 0, sizeof(status));
        status.size = sizeof(status) + 4;
        return CocancelGetStatus(&status);
    case WAIT_CHANNEL:
        /* Not bad input: the answer is one of the two documented ones. */
        hr = CocancelWaitChannel(0);
        return hr == RPC_S_CALLPENDING ? S_OK : hr;
    case OBJ_QI_NULL:
    case OBJ_QI_WRONG:
    case OBJ_CANCEL_COMPLETE:
    case OBJ_CANCEL_DISABLED:
    case OBJ_CANCEL_TWICE:
    case OBJ_TEST_COMPLETE:
        CocancelCreateCancelObject(id != OBJ_CANCEL_DISABLED, &cancel);
        if (id == OBJ_QI_NULL) hr = ICancelMethodCalls_QueryInterface(cancel, &IID_IUnknown, NULL);
        else if (id == OBJ_QI_WRONG)
        {
            hr = ICancelMethodCalls_QueryInterface(cancel, &IID_IMarshal, &out);
            *clean = !out;
        }
        else if (id == OBJ_CANCEL_COMPLETE || id == OBJ_TEST_COMPLETE)
        {
            CocancelCompleteCall(cancel);
            hr = id == OBJ_TEST_COMPLETE ? ICancelMethodCalls_TestCancel(cancel) : ICancelMethodCalls_Cancel(cancel, 0);
        }
        else if (id == OBJ_CANCEL_TWICE)
        {
            ICancelMethodCalls_Cancel(cancel, 0);
            hr = ICancelMethodCalls_Cancel(cancel, 0);
        }
        else hr = ICancelMethodCalls_Cancel(cancel, 0);
        ICancelMethodCalls_Release(cancel);
        return hr;
    case CLASS_UNKNOWN:
        hr = pDllGetClassObject(&IID_IMarshal, &IID_IClassFactory, &out);
        *clean = !out;
        return hr;
    case CLASS_NULL_PPV:
        return pDllGetClassObject(&CLSID_StdEvent_, &IID_IClassFactory, NULL);
    case CLASS_WRONG_IID:
        hr = pDllGetClassObject(&CLSID_StdEvent_, &IID_IMarshal, &out);
        *clean = !out;
        return hr;
    case FACTORY_AGGREGATE:
    case FACTORY_NULL_PPV:
    case FACTORY_WRONG_IID:
        if (FAILED(hr = pDllGetClassObject(&CLSID_StdEvent_, &IID_IClassFactory, (void **)&factory))) return hr;
        if (id == FACTORY_AGGREGATE)
            hr = IClassFactory_CreateInstance(factory, (IUnknown *)&plain, &IID_IUnknown, &out);
        else if (id == FACTORY_NULL_PPV)
            hr = IClassFactory_CreateInstance(factory, NULL, &IID_ISynchronize, NULL);
        else
            hr = IClassFactory_CreateInstance(factory, NULL, &IID_IMarshal, &out);
        if (id != FACTORY_NULL_PPV) *clean = !out;
        IClassFactory_Release(factory);
        return hr;
    case EVENT_QI_NULL:
    case EVENT_GETHANDLE_NULL:
    case EVENT_SETHANDLE_NULL:
        if (FAILED(hr = create_sync_object(&CLSID_StdEvent_, &IID_ISynchronize, (void **)&sync))) return hr;
        if (id == EVENT_QI_NULL) hr = ISynchronize_QueryInterface(sync, &IID_ISynchronize, NULL);
        else if (id == EVENT_GETHANDLE_NULL &&
                 SUCCEEDED(hr = ISynchronize_QueryInterface(sync, &IID_ISynchronizeHandle, (void **)&handle_iface)))
        {
            hr = ISynchronizeHandle_GetHandle(handle_iface, NULL);
            ISynchronizeHandle_Release(handle_iface);
        }
        else if (id == EVENT_SETHANDLE_NULL &&
                 SUCCEEDED(hr = ISynchronize_QueryInterface(sync, &IID_ISynchronizeEvent, (void **)&event_iface)))
        {
            hr = ISynchronizeEvent_SetEventHandle(event_iface, NULL);
            ISynchronizeEvent_Release(event_iface);
        }
        ISynchronize_Release(sync);
        return hr;
    case CONTAINER_ADD_NULL:
    case CONTAINER_ADD_NO_HANDLE:
    case CONTAINER_WAIT_NULL:
    case CONTAINER_WAIT_EMPTY:
        if (FAILED(hr = create_sync_object(&CLSID_SynchronizeContainer_, &IID_ISynchronizeContainer,
                                           (void **)&container)))
            return hr;
        if (id == CONTAINER_ADD_NULL) hr = ISynchronizeContainer_AddSynchronize(container, NULL);
        else if (id == CONTAINER_ADD_NO_HANDLE) hr = ISynchronizeContainer_AddSynchronize(container, &plain);
        else if (id == CONTAINER_WAIT_NULL) hr = ISynchronizeContainer_WaitMultiple(container, 0, 0, NULL);
        else hr = ISynchronizeContainer_WaitMultiple(container, 0, 0, (ISynchronize **)&out);
        ISynchronizeContainer_Release(container);
        return hr;
    case CAN_UNLOAD:
        return pDllCanUnloadNow();
    }
    return hr;
}

static void test_bad_input(void)
{
    HMODULE module = GetModuleHandleA("cocancel.dll");
    unsigned int i;
    BOOL clean;
    HRESULT hr;

    pDllGetClassObject = (void *)GetProcAddress(module, "DllGetClassObject");
    pDllCanUnloadNow = (void *)GetProcAddress(module, "DllCanUnloadNow");
    ok(pDllGetClassObject && pDllCanUnloadNow, "cocancel.dll lacks its class exports\n");
    if (!pDllGetClassObject || !pDllCanUnloadNow) return;

    for (i = 0; i < ARRAY_SIZE(bad_cases); i++)
    {
        winetest_push_context("%s", bad_cases[i].what);
        hr = run_bad_case(bad_cases[i].id, &clean);
        ok(hr == bad_cases[i].expect, "got %#lx, expected %#lx\n", hr, bad_cases[i].expect);
        ok(clean, "the out-parameter was not cleared\n");
        winetest_pop_context();
    }
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

/* A program's own cancel object, which counts the cancels it is asked for. */
static LONG counted_cancels;
static HRESULT WINAPI counted_Cancel(ICancelMethodCalls *iface, ULONG seconds)
{
    InterlockedIncrement(&counted_cancels);
    return S_OK;
}
static const ICancelMethodCallsVtbl counted_vtbl =
{
    foreign_QueryInterface, foreign_AddRef, foreign_Release, counted_Cancel, foreign_TestCancel,
};
static ICancelMethodCalls counted = { &counted_vtbl };

struct doomed
{
    ICancelMethodCalls *cancel;
    HANDLE registered, never;
    HRESULT set_hr;
};

/* Registers a cancel object and waits to be terminated (it never detaches). */
static DWORD WINAPI doomed_thread(void *arg)
{
    struct doomed *doomed = arg;

    doomed->set_hr = CoSetCancelObject((IUnknown *)doomed->cancel);
    SetEvent(doomed->registered);
    WaitForSingleObject(doomed->never, 30000);
    return 0;
}

/*
 * A thread terminated with a cancel object registered never runs its
 * detach: its record stays behind.  CoCancelCall for its id answers
 * E_NOINTERFACE as for any thread that is gone, whether it finds that out
 * before the cancel (a program's object is never asked) or after it (the
 * engine's own object, for an immediate cancel: the caller's release comes
 * first), and the record goes, so the next look-up is clean too.
 */
static void test_terminated_thread(void)
{
    ICancelMethodCalls *own = NULL;
    struct doomed doomed;
    unsigned int i;
    HANDLE thread;
    DWORD tid;
    HRESULT hr;

    ok(CocancelCreateCancelObject(TRUE, &own) == S_OK, "no cancel object\n");
    for (i = 0; i < 2 && own; i++)
    {
        winetest_push_context(i ? "the engine's object" : "a program's object");
        doomed.cancel = i ? own : &counted;
        doomed.registered = CreateEventW(NULL, TRUE, FALSE, NULL);
        doomed.never = CreateEventW(NULL, TRUE, FALSE, NULL);
        counted_cancels = 0;
        thread = CreateThread(NULL, 0, doomed_thread, &doomed, 0, &tid);
        ok(!WaitForSingleObject(doomed.registered, 5000), "the thread did not start\n");
        ok(doomed.set_hr == S_OK, "CoSetCancelObject got %#lx\n", doomed.set_hr);
        ok(TerminateThread(thread, 1), "TerminateThread failed\n");
        ok(!WaitForSingleObject(thread, 5000), "the thread did not end\n");
        hr = CoCancelCall(tid, 0);
        ok(hr == E_NOINTERFACE, "CoCancelCall got %#lx\n", hr);
        ok(!counted_cancels, "the program's object was asked to cancel %ld times\n", counted_cancels);
        hr = CoCancelCall(tid, 1);
        ok(hr == E_NOINTERFACE, "CoCancelCall with a grace period got %#lx\n", hr);
        ok(!counted_cancels, "the program's object was asked to cancel %ld times\n", counted_cancels);
        CloseHandle(thread);
        CloseHandle(doomed.registered);
        CloseHandle(doomed.never);
        winetest_pop_context();
    }
    if (own) ICancelMethodCalls_Release(own);
}

START_TEST(cancelobj)
{
    test_status();
    test_lifecycle();
    test_grace();
    test_wait_released_by_cancel();
    test_bad_input();
    test_concurrent_lookup();
    test_terminated_thread();
}
