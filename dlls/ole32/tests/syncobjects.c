/*
 * Conformance tests for the COM synchronization objects used with
 * asynchronous calls: CLSID_StdEvent (auto-reset) and
 * CLSID_SynchronizeContainer.
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdarg.h>

#include "windef.h"
#include "winbase.h"
#include "objbase.h"
#include "objidl.h"

#include "wine/test.h"

static const CLSID CLSID_StdEvent_ = {0x0000032b, 0, 0, {0xc0, 0, 0, 0, 0, 0, 0, 0x46}};
static const CLSID CLSID_SynchronizeContainer_ = {0x0000032d, 0, 0, {0xc0, 0, 0, 0, 0, 0, 0, 0x46}};

static ISynchronize *create_event(void)
{
    ISynchronize *sync = NULL;
    HRESULT hr;

    hr = CoCreateInstance(&CLSID_StdEvent_, NULL, CLSCTX_INPROC_SERVER, &IID_ISynchronize, (void **)&sync);
    ok(hr == S_OK, "CoCreateInstance(CLSID_StdEvent) got %#lx\n", hr);
    return sync;
}

static void test_std_event(void)
{
    ISynchronizeHandle *handle;
    ISynchronizeEvent *event;
    ISynchronize *sync;
    HANDLE h = NULL, own;
    IUnknown *unk;
    HRESULT hr;

    if (!(sync = create_event())) return;

    hr = ISynchronize_Wait(sync, 0, 0);
    ok(hr == RPC_S_CALLPENDING, "Wait on a new event got %#lx\n", hr);
    hr = ISynchronize_Signal(sync);
    ok(hr == S_OK, "Signal got %#lx\n", hr);
    hr = ISynchronize_Wait(sync, 0, 0);
    ok(hr == S_OK, "Wait after Signal got %#lx\n", hr);
    /* Auto-reset: the wait consumed the signal. */
    hr = ISynchronize_Wait(sync, 0, 0);
    ok(hr == RPC_S_CALLPENDING, "second Wait got %#lx\n", hr);
    ISynchronize_Signal(sync);
    hr = ISynchronize_Reset(sync);
    ok(hr == S_OK, "Reset got %#lx\n", hr);
    hr = ISynchronize_Wait(sync, 0, 0);
    ok(hr == RPC_S_CALLPENDING, "Wait after Reset got %#lx\n", hr);

    hr = ISynchronize_QueryInterface(sync, &IID_ISynchronizeHandle, (void **)&handle);
    ok(hr == S_OK, "QueryInterface(ISynchronizeHandle) got %#lx\n", hr);
    if (SUCCEEDED(hr))
    {
        hr = ISynchronizeHandle_GetHandle(handle, &h);
        ok(hr == S_OK && h, "GetHandle got %#lx, %p\n", hr, h);
        hr = ISynchronizeHandle_GetHandle(handle, NULL);
        ok(hr == E_INVALIDARG, "GetHandle(NULL) got %#lx\n", hr);
        /* The handle is the event itself. */
        SetEvent(h);
        ok(ISynchronize_Wait(sync, 0, 0) == S_OK, "SetEvent on the handle did not signal the object\n");
        hr = ISynchronizeHandle_QueryInterface(handle, &IID_IUnknown, (void **)&unk);
        ok(hr == S_OK && unk == (IUnknown *)sync, "IUnknown %p, expected %p\n", unk, sync);
        if (SUCCEEDED(hr)) IUnknown_Release(unk);
        ISynchronizeHandle_Release(handle);
    }

    hr = ISynchronize_QueryInterface(sync, &IID_ISynchronizeEvent, (void **)&event);
    ok(hr == S_OK, "QueryInterface(ISynchronizeEvent) got %#lx\n", hr);
    if (SUCCEEDED(hr))
    {
        own = CreateEventW(NULL, TRUE, TRUE, NULL);
        hr = ISynchronizeEvent_SetEventHandle(event, &own);
        ok(hr == S_OK, "SetEventHandle got %#lx\n", hr);
        /* The object now waits on the manual-reset event it was given. */
        ok(ISynchronize_Wait(sync, 0, 0) == S_OK, "Wait on the given event failed\n");
        ok(ISynchronize_Wait(sync, 0, 0) == S_OK, "the given manual-reset event was reset\n");
        hr = ISynchronizeEvent_SetEventHandle(event, NULL);
        ok(hr == E_INVALIDARG, "SetEventHandle(NULL) got %#lx\n", hr);
        ISynchronizeEvent_Release(event);
    }

    hr = ISynchronize_QueryInterface(sync, &IID_ISynchronizeContainer, (void **)&unk);
    ok(hr == E_NOINTERFACE, "QueryInterface(ISynchronizeContainer) got %#lx\n", hr);
    ok(!ISynchronize_Release(sync), "object still referenced\n");

    hr = CoCreateInstance(&CLSID_StdEvent_, (IUnknown *)0xdeadbeef, CLSCTX_INPROC_SERVER, &IID_IUnknown,
                          (void **)&unk);
    ok(hr == CLASS_E_NOAGGREGATION, "aggregation got %#lx\n", hr);
}

/* An ISynchronize without ISynchronizeHandle. */
static HRESULT WINAPI bare_QueryInterface(ISynchronize *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ISynchronize))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI bare_AddRef(ISynchronize *iface) { return 2; }
static ULONG WINAPI bare_Release(ISynchronize *iface) { return 1; }
static HRESULT WINAPI bare_Wait(ISynchronize *iface, DWORD flags, DWORD timeout) { return E_NOTIMPL; }
static HRESULT WINAPI bare_Signal(ISynchronize *iface) { return E_NOTIMPL; }
static HRESULT WINAPI bare_Reset(ISynchronize *iface) { return E_NOTIMPL; }

static const ISynchronizeVtbl bare_vtbl = { bare_QueryInterface, bare_AddRef, bare_Release, bare_Wait, bare_Signal, bare_Reset };
static ISynchronize bare = { &bare_vtbl };

static void test_container(void)
{
    ISynchronizeContainer *container;
    ISynchronize *first, *second, *got;
    HRESULT hr;

    hr = CoCreateInstance(&CLSID_SynchronizeContainer_, NULL, CLSCTX_INPROC_SERVER, &IID_ISynchronizeContainer,
                          (void **)&container);
    ok(hr == S_OK, "CoCreateInstance(CLSID_SynchronizeContainer) got %#lx\n", hr);
    if (FAILED(hr)) return;

    got = (ISynchronize *)0xdeadbeef;
    hr = ISynchronizeContainer_WaitMultiple(container, 0, 0, &got);
    ok(hr == RPC_E_NO_SYNC, "WaitMultiple on an empty container got %#lx\n", hr);
    hr = ISynchronizeContainer_AddSynchronize(container, &bare);
    ok(hr == E_NOINTERFACE, "adding an object without a handle got %#lx\n", hr);

    first = create_event();
    second = create_event();
    if (!first || !second) goto done;
    ok(ISynchronizeContainer_AddSynchronize(container, first) == S_OK, "AddSynchronize failed\n");
    ok(ISynchronizeContainer_AddSynchronize(container, second) == S_OK, "AddSynchronize failed\n");

    got = (ISynchronize *)0xdeadbeef;
    hr = ISynchronizeContainer_WaitMultiple(container, 0, 0, &got);
    ok(hr == RPC_S_CALLPENDING, "WaitMultiple with nothing signalled got %#lx\n", hr);
    ok(!got, "got %p\n", got);

    ISynchronize_Signal(second);
    hr = ISynchronizeContainer_WaitMultiple(container, 0, 1000, &got);
    ok(hr == S_OK, "WaitMultiple got %#lx\n", hr);
    ok(got == second, "got %p, expected the second object %p\n", got, second);
    if (got) ISynchronize_Release(got);

    ISynchronize_Signal(first);
    ISynchronize_Signal(second);
    hr = ISynchronizeContainer_WaitMultiple(container, COWAIT_WAITALL, 1000, &got);
    ok(hr == S_OK, "WaitMultiple(COWAIT_WAITALL) got %#lx\n", hr);
    hr = ISynchronizeContainer_WaitMultiple(container, 0, 0, NULL);
    ok(hr == E_POINTER, "WaitMultiple(NULL) got %#lx\n", hr);

    ISynchronize_Release(first);
    ISynchronize_Release(second);
done:
    ISynchronizeContainer_Release(container);
}

START_TEST(syncobjects)
{
    IUnknown *unk;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    if (CoCreateInstance(&CLSID_StdEvent_, NULL, CLSCTX_INPROC_SERVER, &IID_IUnknown, (void **)&unk) ==
        REGDB_E_CLASSNOTREG)
    {
        /* Registered on Windows; in a Wine prefix only by a prefix-wide cocancel install. */
        skip("CLSID_StdEvent is not registered\n");
        CoUninitialize();
        return;
    }
    IUnknown_Release(unk);
    test_std_event();
    test_container();
    CoUninitialize();
}
