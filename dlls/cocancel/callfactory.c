/*
 * ICallFactory on standard proxies.
 *
 * Owns the link between Wine's proxies and the call objects of
 * asynccall.c.  rpcrt4's standard proxy/stub factory is watched when it
 * creates interface proxies (its CreateProxy, replaced by winepatch.c): those
 * whose proxy file names an async interface for the proxied one
 * (ProxyFileInfo.pAsyncIIDLookup, MIDL's or widl's tables) are recorded, and
 * the proxy manager's QueryInterface answers ICallFactory for them, through
 * a tear-off whose CreateCall makes the call object.  Other proxies still
 * answer E_NOINTERFACE.
 */

#include "cocancel_private.h"

#define USE_STUBLESS_PROXY
#include <rpcproxy.h>

/* ---------------------------------------------------------------------
 * Proxies with an async counterpart.
 */

struct proxy_record
{
    IRpcProxyBuffer IRpcProxyBuffer_iface;
    LONG refcount;
    IRpcProxyBuffer *inner;
    IUnknown *manager;              /* the proxy manager (not referenced) */
    const ProxyFileInfo *file;
    int sync_index, async_index;
    struct proxy_record *next;
};

static SRWLOCK record_lock = SRWLOCK_INIT;
static struct proxy_record *records;

static inline struct proxy_record *impl_from_record_IRpcProxyBuffer(IRpcProxyBuffer *iface)
{
    return CONTAINING_RECORD(iface, struct proxy_record, IRpcProxyBuffer_iface);
}

static HRESULT WINAPI record_QueryInterface(IRpcProxyBuffer *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IRpcProxyBuffer))
    {
        *ppv = iface;
        IRpcProxyBuffer_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI record_AddRef(IRpcProxyBuffer *iface)
{
    return InterlockedIncrement(&impl_from_record_IRpcProxyBuffer(iface)->refcount);
}

static ULONG WINAPI record_Release(IRpcProxyBuffer *iface)
{
    struct proxy_record *record = impl_from_record_IRpcProxyBuffer(iface), **link;
    ULONG ref = InterlockedDecrement(&record->refcount);

    if (ref) return ref;
    AcquireSRWLockExclusive(&record_lock);
    for (link = &records; *link; link = &(*link)->next)
    {
        if (*link != record) continue;
        *link = record->next;
        break;
    }
    ReleaseSRWLockExclusive(&record_lock);
    IRpcProxyBuffer_Release(record->inner);
    HeapFree(GetProcessHeap(), 0, record);
    return 0;
}

/*
 * The first standard proxy connected in the process hands over the client
 * channel that the engine intercepts (all of Wine's client channels share
 * one vtable), so that finding it needs no object of the engine's own to be
 * exported (discovery.c keeps that way only for a first proxied call made
 * through another kind of proxy).
 */
static LONG channel_offered;     /* a channel went to winepatch_channel (patched or refused) */

static HRESULT WINAPI record_Connect(IRpcProxyBuffer *iface, IRpcChannelBuffer *chan)
{
    if (chan && !InterlockedCompareExchange(&channel_offered, 0, 0))
    {
        winepatch_channel(chan);
        InterlockedExchange(&channel_offered, 1);
    }
    return IRpcProxyBuffer_Connect(impl_from_record_IRpcProxyBuffer(iface)->inner, chan);
}

static void WINAPI record_Disconnect(IRpcProxyBuffer *iface)
{
    IRpcProxyBuffer_Disconnect(impl_from_record_IRpcProxyBuffer(iface)->inner);
}

static const IRpcProxyBufferVtbl record_vtbl =
{
    record_QueryInterface,
    record_AddRef,
    record_Release,
    record_Connect,
    record_Disconnect,
};

/* Stands a record in front of the interface proxy *proxy (NULL, and *proxy unchanged, without memory). */
static struct proxy_record *wrap_proxy(IRpcProxyBuffer **proxy)
{
    struct proxy_record *record;

    if (!(record = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*record)))) return NULL;
    record->IRpcProxyBuffer_iface.lpVtbl = &record_vtbl;
    record->refcount = 1;
    record->inner = *proxy;
    *proxy = &record->IRpcProxyBuffer_iface;
    return record;
}

HRESULT WINAPI callfactory_CreateProxy(IPSFactoryBuffer *iface, IUnknown *outer, REFIID riid,
                                       IRpcProxyBuffer **proxy, void **ppv)
{
    const ProxyFileInfo *file;
    struct proxy_record *record;
    int sync_index, async_index;
    HRESULT hr;

    hr = wine_real.CreateProxy(iface, outer, riid, proxy, ppv);
    if (FAILED(hr) || !outer || !proxy || !*proxy) return hr;
    if (!asynccall_find(((const CStdPSFactoryBuffer *)iface)->pProxyFileList, riid, &file, &sync_index, &async_index))
    {
        /* Until the channel is found, a plain proxy is watched for its Connect alone. */
        if (!InterlockedCompareExchange(&channel_offered, 0, 0)) wrap_proxy(proxy);
        return hr;
    }
    winepatch_proxy_manager(outer);
    if (!(record = wrap_proxy(proxy))) return hr;
    record->manager = outer;
    record->file = file;
    record->sync_index = sync_index;
    record->async_index = async_index;
    AcquireSRWLockExclusive(&record_lock);
    record->next = records;
    records = record;
    ReleaseSRWLockExclusive(&record_lock);
    TRACE("proxy %p of %s has an async interface\n", outer, cc_debugstr_guid(riid));
    return hr;
}

/* The record for manager and async_iid (NULL: any async interface). */
static BOOL find_proxy_record(IUnknown *manager, const IID *async_iid, const ProxyFileInfo **file,
                        int *sync_index, int *async_index)
{
    struct proxy_record *record;
    BOOL found = FALSE;

    AcquireSRWLockShared(&record_lock);
    for (record = records; record; record = record->next)
    {
        if (record->manager != manager) continue;
        if (async_iid && !IsEqualIID(async_iid, record->file->pProxyVtblList[record->async_index]->header.piid))
            continue;
        *file = record->file;
        *sync_index = record->sync_index;
        *async_index = record->async_index;
        found = TRUE;
        break;
    }
    ReleaseSRWLockShared(&record_lock);
    return found;
}

/* ---------------------------------------------------------------------
 * ICallFactory on the proxy manager (a tear-off).
 */

struct call_factory
{
    ICallFactory ICallFactory_iface;
    LONG refcount;
    IUnknown *manager;
};

static inline struct call_factory *impl_from_ICallFactory(ICallFactory *iface)
{
    return CONTAINING_RECORD(iface, struct call_factory, ICallFactory_iface);
}

static HRESULT WINAPI factory_QueryInterface(ICallFactory *iface, REFIID riid, void **ppv)
{
    struct call_factory *factory = impl_from_ICallFactory(iface);

    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_ICallFactory))
    {
        *ppv = iface;
        ICallFactory_AddRef(iface);
        return S_OK;
    }
    return IUnknown_QueryInterface(factory->manager, riid, ppv);
}

static ULONG WINAPI factory_AddRef(ICallFactory *iface)
{
    return InterlockedIncrement(&impl_from_ICallFactory(iface)->refcount);
}

static ULONG WINAPI factory_Release(ICallFactory *iface)
{
    struct call_factory *factory = impl_from_ICallFactory(iface);
    ULONG ref = InterlockedDecrement(&factory->refcount);

    if (!ref)
    {
        IUnknown_Release(factory->manager);
        HeapFree(GetProcessHeap(), 0, factory);
    }
    return ref;
}

static HRESULT WINAPI factory_CreateCall(ICallFactory *iface, REFIID riid, IUnknown *outer, REFIID riid2,
                                         IUnknown **ppv)
{
    struct call_factory *factory = impl_from_ICallFactory(iface);
    const ProxyFileInfo *file;
    int sync_index, async_index;

    TRACE("%p, %s, %p, %s, %p\n", iface, cc_debugstr_guid(riid), outer, cc_debugstr_guid(riid2), ppv);
    if (!ppv) return E_INVALIDARG;
    *ppv = NULL;
    if (!riid || !riid2) return E_INVALIDARG;
    runner_reap();
    if (!find_proxy_record(factory->manager, riid, &file, &sync_index, &async_index)) return E_NOINTERFACE;
    /* An aggregated object hands out its inner IUnknown only. */
    if (outer && !IsEqualIID(riid2, &IID_IUnknown)) return E_INVALIDARG;
    return asynccall_create(file, sync_index, async_index, factory->manager, outer, riid2, ppv);
}

static const ICallFactoryVtbl factory_vtbl =
{
    factory_QueryInterface,
    factory_AddRef,
    factory_Release,
    factory_CreateCall,
};

HRESULT WINAPI callfactory_manager_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    const ProxyFileInfo *file;
    struct call_factory *factory;
    int sync_index, async_index;

    if (riid && ppv && IsEqualIID(riid, &IID_ICallFactory) &&
        find_proxy_record(iface, NULL, &file, &sync_index, &async_index))
    {
        if (!(factory = HeapAlloc(GetProcessHeap(), 0, sizeof(*factory)))) return E_OUTOFMEMORY;
        factory->ICallFactory_iface.lpVtbl = &factory_vtbl;
        factory->refcount = 1;
        factory->manager = iface;
        IUnknown_AddRef(iface);
        *ppv = &factory->ICallFactory_iface;
        return S_OK;
    }
    return wine_real.manager_QueryInterface(iface, riid, ppv);
}

