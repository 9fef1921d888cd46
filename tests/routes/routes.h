/*
 * Shared checks of the loading-route programs (tests/routes): each program
 * reaches the cancellation API in one way an unmodified program would, and
 * runs the same checks on what it got.  Each program is one test, run with
 * the conformance harness.
 */

#ifndef COCANCEL_ROUTES_H
#define COCANCEL_ROUTES_H

#define COBJMACROS
#define CONST_VTABLE
#define STANDALONE
#include <windows.h>
#include <objbase.h>
#include <objidl.h>
#include "wine/test.h"

struct cancel_api
{
    HRESULT (WINAPI *cancel_call)(DWORD, ULONG);
    HRESULT (WINAPI *test_cancel)(void);
    HRESULT (WINAPI *get_cancel_object)(DWORD, REFIID, void **);
    HRESULT (WINAPI *set_cancel_object)(IUnknown *);
};

struct route_cancel
{
    ICancelMethodCalls ICancelMethodCalls_iface;
    LONG refcount;
    LONG cancelled;
};

static HRESULT WINAPI route_cancel_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
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

static ULONG WINAPI route_cancel_AddRef(ICancelMethodCalls *iface)
{
    return InterlockedIncrement(&CONTAINING_RECORD(iface, struct route_cancel, ICancelMethodCalls_iface)->refcount);
}

static ULONG WINAPI route_cancel_Release(ICancelMethodCalls *iface)
{
    return InterlockedDecrement(&CONTAINING_RECORD(iface, struct route_cancel, ICancelMethodCalls_iface)->refcount);
}

static HRESULT WINAPI route_cancel_Cancel(ICancelMethodCalls *iface, ULONG timeout)
{
    InterlockedExchange(&CONTAINING_RECORD(iface, struct route_cancel, ICancelMethodCalls_iface)->cancelled, 1);
    return S_OK;
}

static HRESULT WINAPI route_cancel_TestCancel(ICancelMethodCalls *iface)
{
    return CONTAINING_RECORD(iface, struct route_cancel, ICancelMethodCalls_iface)->cancelled
           ? RPC_E_CALL_CANCELED : RPC_S_CALLPENDING;
}

static const ICancelMethodCallsVtbl route_cancel_vtbl =
{
    route_cancel_QueryInterface,
    route_cancel_AddRef,
    route_cancel_Release,
    route_cancel_Cancel,
    route_cancel_TestCancel,
};

/* Runs every function of the API once; a missing or stubbed function fails (or aborts). */
static void check_cancel_api(const char *route, const struct cancel_api *api)
{
    struct route_cancel cancel = { { &route_cancel_vtbl }, 1, 0 };
    ICancelMethodCalls *got;
    HRESULT hr;

    winetest_push_context("%s", route);
    ok(api->cancel_call && api->test_cancel && api->get_cancel_object && api->set_cancel_object,
       "functions missing: %p %p %p %p\n", api->cancel_call, api->test_cancel,
       api->get_cancel_object, api->set_cancel_object);
    if (!api->cancel_call || !api->test_cancel || !api->get_cancel_object || !api->set_cancel_object)
    {
        winetest_pop_context();
        return;
    }

    hr = api->cancel_call(0, 0);
    ok(hr == E_NOINTERFACE, "CoCancelCall got %#lx\n", hr);
    hr = api->test_cancel();
    ok(hr == RPC_E_CALL_COMPLETE, "CoTestCancel got %#lx\n", hr);
    hr = api->get_cancel_object(0, &IID_ICancelMethodCalls, (void **)&got);
    ok(hr == E_NOINTERFACE, "CoGetCancelObject got %#lx\n", hr);

    hr = api->set_cancel_object((IUnknown *)&cancel.ICancelMethodCalls_iface);
    ok(hr == S_OK, "CoSetCancelObject got %#lx\n", hr);
    hr = api->get_cancel_object(GetCurrentThreadId(), &IID_ICancelMethodCalls, (void **)&got);
    ok(hr == S_OK && got == &cancel.ICancelMethodCalls_iface, "CoGetCancelObject got %#lx, %p\n", hr, got);
    if (hr == S_OK) ICancelMethodCalls_Release(got);
    hr = api->cancel_call(0, 0);
    ok(hr == S_OK, "CoCancelCall got %#lx\n", hr);
    ok(cancel.cancelled, "the cancel object was not cancelled\n");
    hr = api->set_cancel_object(NULL);
    ok(hr == S_OK, "CoSetCancelObject(NULL) got %#lx\n", hr);
    ok(cancel.refcount == 1, "got refcount %ld\n", cancel.refcount);
    winetest_pop_context();
}

#define ROUTE_TEST(name) \
    void func_##name(void); \
    const struct test winetest_testlist[] = { { #name, func_##name }, { 0, 0 } }; \
    START_TEST(name)

#endif /* COCANCEL_ROUTES_H */
