/*
 * The COM synchronization objects asynchronous callers use and Wine lacks:
 * CLSID_StdEvent (an auto-reset event: ISynchronize, ISynchronizeHandle,
 * ISynchronizeEvent) and CLSID_SynchronizeContainer (ISynchronizeContainer,
 * waiting for any of several ISynchronize objects, call objects included).
 * The installer registers cocancel.dll as their InprocServer32 when the
 * prefix has no server for them.
 */

#include "cocancel_private.h"

static const CLSID CLSID_CocancelStdEvent =
    {0x0000032b, 0x0000, 0x0000, {0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46}};
static const CLSID CLSID_CocancelSynchronizeContainer =
    {0x0000032d, 0x0000, 0x0000, {0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46}};

static LONG server_locks, live_objects;

/* ---------------------------------------------------------------------
 * StdEvent.
 */

struct std_event
{
    ISynchronize ISynchronize_iface;
    ISynchronizeHandle ISynchronizeHandle_iface;
    ISynchronizeEvent ISynchronizeEvent_iface;
    LONG refcount;
    HANDLE event;
};

static inline struct std_event *impl_from_ISynchronize(ISynchronize *iface)
{
    return CONTAINING_RECORD(iface, struct std_event, ISynchronize_iface);
}

static HRESULT WINAPI std_event_QueryInterface(ISynchronize *iface, REFIID riid, void **ppv)
{
    struct std_event *event = impl_from_ISynchronize(iface);

    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ISynchronize)) *ppv = &event->ISynchronize_iface;
    else if (IsEqualIID(riid, &IID_ISynchronizeHandle)) *ppv = &event->ISynchronizeHandle_iface;
    else if (IsEqualIID(riid, &IID_ISynchronizeEvent)) *ppv = &event->ISynchronizeEvent_iface;
    else
    {
        *ppv = NULL;
        return E_NOINTERFACE;
    }
    IUnknown_AddRef((IUnknown *)*ppv);
    return S_OK;
}

static ULONG WINAPI std_event_AddRef(ISynchronize *iface)
{
    return InterlockedIncrement(&impl_from_ISynchronize(iface)->refcount);
}

static ULONG WINAPI std_event_Release(ISynchronize *iface)
{
    struct std_event *event = impl_from_ISynchronize(iface);
    ULONG ref = InterlockedDecrement(&event->refcount);

    if (!ref)
    {
        CloseHandle(event->event);
        HeapFree(GetProcessHeap(), 0, event);
        InterlockedDecrement(&live_objects);
    }
    return ref;
}

static HRESULT WINAPI std_event_Wait(ISynchronize *iface, DWORD flags, DWORD timeout)
{
    struct std_event *event = impl_from_ISynchronize(iface);
    DWORD index;

    TRACE("%p, %#lx, %lu\n", iface, flags, timeout);
    return CoWaitForMultipleHandles(flags, timeout, 1, &event->event, &index);
}

static HRESULT WINAPI std_event_Signal(ISynchronize *iface)
{
    return SetEvent(impl_from_ISynchronize(iface)->event) ? S_OK : HRESULT_FROM_WIN32(GetLastError());
}

static HRESULT WINAPI std_event_Reset(ISynchronize *iface)
{
    return ResetEvent(impl_from_ISynchronize(iface)->event) ? S_OK : HRESULT_FROM_WIN32(GetLastError());
}

static const ISynchronizeVtbl std_event_vtbl =
{
    std_event_QueryInterface,
    std_event_AddRef,
    std_event_Release,
    std_event_Wait,
    std_event_Signal,
    std_event_Reset,
};

static inline struct std_event *impl_from_ISynchronizeHandle(ISynchronizeHandle *iface)
{
    return CONTAINING_RECORD(iface, struct std_event, ISynchronizeHandle_iface);
}

static HRESULT WINAPI std_event_handle_QueryInterface(ISynchronizeHandle *iface, REFIID riid, void **ppv)
{
    return std_event_QueryInterface(&impl_from_ISynchronizeHandle(iface)->ISynchronize_iface, riid, ppv);
}

static ULONG WINAPI std_event_handle_AddRef(ISynchronizeHandle *iface)
{
    return std_event_AddRef(&impl_from_ISynchronizeHandle(iface)->ISynchronize_iface);
}

static ULONG WINAPI std_event_handle_Release(ISynchronizeHandle *iface)
{
    return std_event_Release(&impl_from_ISynchronizeHandle(iface)->ISynchronize_iface);
}

static HRESULT WINAPI std_event_handle_GetHandle(ISynchronizeHandle *iface, HANDLE *handle)
{
    if (!handle) return E_INVALIDARG;
    *handle = impl_from_ISynchronizeHandle(iface)->event;
    return S_OK;
}

static const ISynchronizeHandleVtbl std_event_handle_vtbl =
{
    std_event_handle_QueryInterface,
    std_event_handle_AddRef,
    std_event_handle_Release,
    std_event_handle_GetHandle,
};

static inline struct std_event *impl_from_ISynchronizeEvent(ISynchronizeEvent *iface)
{
    return CONTAINING_RECORD(iface, struct std_event, ISynchronizeEvent_iface);
}

static HRESULT WINAPI std_event_event_QueryInterface(ISynchronizeEvent *iface, REFIID riid, void **ppv)
{
    return std_event_QueryInterface(&impl_from_ISynchronizeEvent(iface)->ISynchronize_iface, riid, ppv);
}

static ULONG WINAPI std_event_event_AddRef(ISynchronizeEvent *iface)
{
    return std_event_AddRef(&impl_from_ISynchronizeEvent(iface)->ISynchronize_iface);
}

static ULONG WINAPI std_event_event_Release(ISynchronizeEvent *iface)
{
    return std_event_Release(&impl_from_ISynchronizeEvent(iface)->ISynchronize_iface);
}

static HRESULT WINAPI std_event_event_GetHandle(ISynchronizeEvent *iface, HANDLE *handle)
{
    if (!handle) return E_INVALIDARG;
    *handle = impl_from_ISynchronizeEvent(iface)->event;
    return S_OK;
}

/* The object takes the handle over; its own event is closed. */
static HRESULT WINAPI std_event_event_SetEventHandle(ISynchronizeEvent *iface, HANDLE *handle)
{
    struct std_event *event = impl_from_ISynchronizeEvent(iface);
    HANDLE old;

    if (!handle || !*handle) return E_INVALIDARG;
    old = InterlockedExchangePointer(&event->event, *handle);
    CloseHandle(old);
    return S_OK;
}

static const ISynchronizeEventVtbl std_event_event_vtbl =
{
    std_event_event_QueryInterface,
    std_event_event_AddRef,
    std_event_event_Release,
    std_event_event_GetHandle,
    std_event_event_SetEventHandle,
};

static HRESULT create_std_event(REFIID riid, void **ppv)
{
    struct std_event *event;
    HRESULT hr;

    if (!(event = HeapAlloc(GetProcessHeap(), 0, sizeof(*event)))) return E_OUTOFMEMORY;
    event->ISynchronize_iface.lpVtbl = &std_event_vtbl;
    event->ISynchronizeHandle_iface.lpVtbl = &std_event_handle_vtbl;
    event->ISynchronizeEvent_iface.lpVtbl = &std_event_event_vtbl;
    event->refcount = 1;
    if (!(event->event = CreateEventW(NULL, FALSE, FALSE, NULL)))
    {
        HeapFree(GetProcessHeap(), 0, event);
        return HRESULT_FROM_WIN32(GetLastError());
    }
    InterlockedIncrement(&live_objects);
    hr = std_event_QueryInterface(&event->ISynchronize_iface, riid, ppv);
    std_event_Release(&event->ISynchronize_iface);
    return hr;
}

/* ---------------------------------------------------------------------
 * SynchronizeContainer.
 */

struct container
{
    ISynchronizeContainer ISynchronizeContainer_iface;
    LONG refcount;
    CRITICAL_SECTION cs;
    unsigned int count;
    ISynchronize *members[MAXIMUM_WAIT_OBJECTS];
    HANDLE handles[MAXIMUM_WAIT_OBJECTS];
};

static inline struct container *impl_from_ISynchronizeContainer(ISynchronizeContainer *iface)
{
    return CONTAINING_RECORD(iface, struct container, ISynchronizeContainer_iface);
}

static HRESULT WINAPI container_QueryInterface(ISynchronizeContainer *iface, REFIID riid, void **ppv)
{
    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ISynchronizeContainer))
    {
        *ppv = iface;
        ISynchronizeContainer_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI container_AddRef(ISynchronizeContainer *iface)
{
    return InterlockedIncrement(&impl_from_ISynchronizeContainer(iface)->refcount);
}

static ULONG WINAPI container_Release(ISynchronizeContainer *iface)
{
    struct container *container = impl_from_ISynchronizeContainer(iface);
    ULONG ref = InterlockedDecrement(&container->refcount);
    unsigned int i;

    if (!ref)
    {
        for (i = 0; i < container->count; i++) ISynchronize_Release(container->members[i]);
        DeleteCriticalSection(&container->cs);
        HeapFree(GetProcessHeap(), 0, container);
        InterlockedDecrement(&live_objects);
    }
    return ref;
}

/* Members must expose their handle (ISynchronizeHandle), as call objects and events do. */
static HRESULT WINAPI container_AddSynchronize(ISynchronizeContainer *iface, ISynchronize *sync)
{
    struct container *container = impl_from_ISynchronizeContainer(iface);
    ISynchronizeHandle *handle;
    HANDLE event;
    HRESULT hr;

    TRACE("%p, %p\n", iface, sync);
    if (!sync) return E_POINTER;
    if (FAILED(hr = ISynchronize_QueryInterface(sync, &IID_ISynchronizeHandle, (void **)&handle))) return hr;
    hr = ISynchronizeHandle_GetHandle(handle, &event);
    ISynchronizeHandle_Release(handle);
    if (FAILED(hr)) return hr;

    EnterCriticalSection(&container->cs);
    if (container->count == ARRAY_SIZE(container->members)) hr = RPC_E_OUT_OF_RESOURCES;
    else
    {
        container->members[container->count] = sync;
        container->handles[container->count] = event;
        container->count++;
        ISynchronize_AddRef(sync);
    }
    LeaveCriticalSection(&container->cs);
    return hr;
}

static HRESULT WINAPI container_WaitMultiple(ISynchronizeContainer *iface, DWORD flags, DWORD timeout,
                                             ISynchronize **signalled)
{
    struct container *container = impl_from_ISynchronizeContainer(iface);
    HANDLE handles[MAXIMUM_WAIT_OBJECTS];
    ISynchronize *members[MAXIMUM_WAIT_OBJECTS];
    unsigned int count, i;
    DWORD index;
    HRESULT hr;

    TRACE("%p, %#lx, %lu, %p\n", iface, flags, timeout, signalled);
    if (!signalled) return E_POINTER;
    *signalled = NULL;
    EnterCriticalSection(&container->cs);
    count = container->count;
    memcpy(handles, container->handles, count * sizeof(*handles));
    memcpy(members, container->members, count * sizeof(*members));
    for (i = 0; i < count; i++) ISynchronize_AddRef(members[i]);
    LeaveCriticalSection(&container->cs);
    if (!count) return RPC_E_NO_SYNC;

    hr = CoWaitForMultipleHandles(flags, timeout, count, handles, &index);
    /* With COWAIT_WAITALL every member is signalled and none is singled out. */
    if (hr == S_OK && !(flags & COWAIT_WAITALL) && index < count)
    {
        *signalled = members[index];
        ISynchronize_AddRef(*signalled);
    }
    for (i = 0; i < count; i++) ISynchronize_Release(members[i]);
    return hr;
}

static const ISynchronizeContainerVtbl container_vtbl =
{
    container_QueryInterface,
    container_AddRef,
    container_Release,
    container_AddSynchronize,
    container_WaitMultiple,
};

static HRESULT create_container(REFIID riid, void **ppv)
{
    struct container *container;
    HRESULT hr;

    if (!(container = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*container)))) return E_OUTOFMEMORY;
    container->ISynchronizeContainer_iface.lpVtbl = &container_vtbl;
    container->refcount = 1;
    InitializeCriticalSection(&container->cs);
    InterlockedIncrement(&live_objects);
    hr = container_QueryInterface(&container->ISynchronizeContainer_iface, riid, ppv);
    container_Release(&container->ISynchronizeContainer_iface);
    return hr;
}

/* ---------------------------------------------------------------------
 * Class objects.
 */

struct class_factory
{
    IClassFactory IClassFactory_iface;
    HRESULT (*create)(REFIID riid, void **ppv);
};

static inline struct class_factory *impl_from_IClassFactory(IClassFactory *iface)
{
    return CONTAINING_RECORD(iface, struct class_factory, IClassFactory_iface);
}

static HRESULT WINAPI factory_QueryInterface(IClassFactory *iface, REFIID riid, void **ppv)
{
    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IClassFactory))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI factory_AddRef(IClassFactory *iface)
{
    return 2;   /* static objects */
}

static ULONG WINAPI factory_Release(IClassFactory *iface)
{
    return 1;
}

static HRESULT WINAPI factory_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    if (!ppv) return E_POINTER;
    *ppv = NULL;
    if (outer) return CLASS_E_NOAGGREGATION;
    return impl_from_IClassFactory(iface)->create(riid, ppv);
}

static HRESULT WINAPI factory_LockServer(IClassFactory *iface, BOOL lock)
{
    if (lock) InterlockedIncrement(&server_locks);
    else InterlockedDecrement(&server_locks);
    return S_OK;
}

static const IClassFactoryVtbl factory_vtbl =
{
    factory_QueryInterface,
    factory_AddRef,
    factory_Release,
    factory_CreateInstance,
    factory_LockServer,
};

static struct class_factory std_event_factory = { { &factory_vtbl }, create_std_event };
static struct class_factory container_factory = { { &factory_vtbl }, create_container };

/***********************************************************************
 *           DllGetClassObject    (cocancel.@)
 */
HRESULT WINAPI DllGetClassObject(REFCLSID clsid, REFIID riid, void **ppv)
{
    TRACE("%s, %s, %p\n", cc_debugstr_guid(clsid), cc_debugstr_guid(riid), ppv);
    if (!ppv) return E_POINTER;
    *ppv = NULL;
    if (IsEqualCLSID(clsid, &CLSID_CocancelStdEvent))
        return factory_QueryInterface(&std_event_factory.IClassFactory_iface, riid, ppv);
    if (IsEqualCLSID(clsid, &CLSID_CocancelSynchronizeContainer))
        return factory_QueryInterface(&container_factory.IClassFactory_iface, riid, ppv);
    return CLASS_E_CLASSNOTAVAILABLE;
}

/***********************************************************************
 *           DllCanUnloadNow    (cocancel.@)
 *
 * The engine stays loaded for the life of the process (its hooks are in
 * place); it says so.
 */
HRESULT WINAPI DllCanUnloadNow(void)
{
    return S_FALSE;
}
