/*
 * Finding Wine's client channel.
 *
 * Every client IRpcChannelBuffer in Wine shares one vtable in combase.
 * Owns the probe that finds it, once per process: a private interface whose
 * proxy/stub factory the engine supplies, marshaled from one STA thread and
 * unmarshaled in another, whose proxy's Connect then receives a
 * genuine client channel (handed to winepatch_channel).
 *
 * Usually it never runs: the first standard proxy connected in the process
 * hands its channel over (callfactory.c), with nothing exported.  The probe
 * is for a first proxied call made through another kind of proxy.
 *
 * It runs when it is first needed, so that a program that makes no proxied
 * call never sees it: at the first proxied call of the process, whose thread
 * waits (in the channel hook's ClientGetSize, before its request is built)
 * until the vtable is patched, so that this very call is intercepted - a
 * call made at any moment of a process's life can be cancelled.  Wine calls
 * channel hooks holding its channel-hook lock, so the wait ends as soon as
 * the probe's proxy is connected and the vtable patched, before the probe
 * makes any proxied call of its own; the probe's own threads never wait,
 * and neither does a thread holding the loader lock (the probe's threads
 * could not start).
 */

#include "cocancel_private.h"
#include <winternl.h>

/* The longest a first proxied call waits for the discovery (a safety valve: it takes 30-200 ms). */
#define DISCOVERY_TIMEOUT 10000

/* The private interface and proxy/stub class used to find the channel vtable. */
static const IID IID_ICocancelProbe = {0x9d3f1b22, 0x6c1e, 0x4f7a, {0xa4, 0x0b, 0x2c, 0x61, 0x5e, 0x90, 0x13, 0x7d}};
static const CLSID CLSID_CocancelProbePS = {0x9d3f1b23, 0x6c1e, 0x4f7a, {0xa4, 0x0b, 0x2c, 0x61, 0x5e, 0x90, 0x13, 0x7d}};

static LONG discovery_started;
static LONG discovery_settled;      /* the channel was patched, or the discovery gave up */
static HANDLE discovery_done;       /* set when it settles */
static DWORD discovery_tls = TLS_OUT_OF_INDEXES;    /* set on the discovery's own threads */

static void settle(void)
{
    InterlockedExchange(&discovery_settled, 1);
    SetEvent(discovery_done);
}

struct probe_proxy
{
    IRpcProxyBuffer IRpcProxyBuffer_iface;
    IUnknown IUnknown_iface;    /* the proxied ICocancelProbe, delegating to the proxy manager */
    LONG refcount;
    IUnknown *outer;
};

static inline struct probe_proxy *impl_from_probe_IRpcProxyBuffer(IRpcProxyBuffer *iface)
{
    return CONTAINING_RECORD(iface, struct probe_proxy, IRpcProxyBuffer_iface);
}

static inline struct probe_proxy *impl_from_probe_IUnknown(IUnknown *iface)
{
    return CONTAINING_RECORD(iface, struct probe_proxy, IUnknown_iface);
}

static HRESULT WINAPI probe_proxy_buffer_QueryInterface(IRpcProxyBuffer *iface, REFIID riid, void **ppv)
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

static ULONG WINAPI probe_proxy_buffer_AddRef(IRpcProxyBuffer *iface)
{
    return InterlockedIncrement(&impl_from_probe_IRpcProxyBuffer(iface)->refcount);
}

static ULONG WINAPI probe_proxy_buffer_Release(IRpcProxyBuffer *iface)
{
    struct probe_proxy *proxy = impl_from_probe_IRpcProxyBuffer(iface);
    ULONG refcount = InterlockedDecrement(&proxy->refcount);

    if (!refcount) HeapFree(GetProcessHeap(), 0, proxy);
    return refcount;
}

static HRESULT WINAPI probe_proxy_buffer_Connect(IRpcProxyBuffer *iface, IRpcChannelBuffer *chan)
{
    winepatch_channel(chan);
    /* A first proxied call waiting for this goes on now (see the top of the file). */
    settle();
    return S_OK;
}

static void WINAPI probe_proxy_buffer_Disconnect(IRpcProxyBuffer *iface)
{
}

static const IRpcProxyBufferVtbl probe_proxy_buffer_vtbl =
{
    probe_proxy_buffer_QueryInterface,
    probe_proxy_buffer_AddRef,
    probe_proxy_buffer_Release,
    probe_proxy_buffer_Connect,
    probe_proxy_buffer_Disconnect,
};

static HRESULT WINAPI probe_iface_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(impl_from_probe_IUnknown(iface)->outer, riid, ppv);
}

static ULONG WINAPI probe_iface_AddRef(IUnknown *iface)
{
    return IUnknown_AddRef(impl_from_probe_IUnknown(iface)->outer);
}

static ULONG WINAPI probe_iface_Release(IUnknown *iface)
{
    return IUnknown_Release(impl_from_probe_IUnknown(iface)->outer);
}

static const IUnknownVtbl probe_iface_vtbl = { probe_iface_QueryInterface, probe_iface_AddRef, probe_iface_Release };

/* The stub side of the probe interface: it has no methods to dispatch. */
struct probe_stub
{
    IRpcStubBuffer IRpcStubBuffer_iface;
    LONG refcount;
    IUnknown *server;
};

static inline struct probe_stub *impl_from_probe_IRpcStubBuffer(IRpcStubBuffer *iface)
{
    return CONTAINING_RECORD(iface, struct probe_stub, IRpcStubBuffer_iface);
}

static HRESULT WINAPI probe_stub_QueryInterface(IRpcStubBuffer *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IRpcStubBuffer))
    {
        *ppv = iface;
        IRpcStubBuffer_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI probe_stub_AddRef(IRpcStubBuffer *iface)
{
    return InterlockedIncrement(&impl_from_probe_IRpcStubBuffer(iface)->refcount);
}

static ULONG WINAPI probe_stub_Release(IRpcStubBuffer *iface)
{
    struct probe_stub *stub = impl_from_probe_IRpcStubBuffer(iface);
    ULONG refcount = InterlockedDecrement(&stub->refcount);

    if (!refcount)
    {
        if (stub->server) IUnknown_Release(stub->server);
        HeapFree(GetProcessHeap(), 0, stub);
    }
    return refcount;
}

static HRESULT WINAPI probe_stub_Connect(IRpcStubBuffer *iface, IUnknown *server)
{
    struct probe_stub *stub = impl_from_probe_IRpcStubBuffer(iface);

    IUnknown_AddRef(server);
    if (stub->server) IUnknown_Release(stub->server);
    stub->server = server;
    return S_OK;
}

static void WINAPI probe_stub_Disconnect(IRpcStubBuffer *iface)
{
    struct probe_stub *stub = impl_from_probe_IRpcStubBuffer(iface);

    if (stub->server) IUnknown_Release(stub->server);
    stub->server = NULL;
}

static HRESULT WINAPI probe_stub_Invoke(IRpcStubBuffer *iface, RPCOLEMESSAGE *msg, IRpcChannelBuffer *chan)
{
    return RPC_E_UNEXPECTED;
}

static IRpcStubBuffer * WINAPI probe_stub_IsIIDSupported(IRpcStubBuffer *iface, REFIID riid)
{
    return NULL;
}

static ULONG WINAPI probe_stub_CountRefs(IRpcStubBuffer *iface)
{
    return impl_from_probe_IRpcStubBuffer(iface)->refcount;
}

static HRESULT WINAPI probe_stub_DebugServerQueryInterface(IRpcStubBuffer *iface, void **ppv)
{
    *ppv = NULL;
    return E_NOTIMPL;
}

static void WINAPI probe_stub_DebugServerRelease(IRpcStubBuffer *iface, void *pv)
{
}

static const IRpcStubBufferVtbl probe_stub_vtbl =
{
    probe_stub_QueryInterface,
    probe_stub_AddRef,
    probe_stub_Release,
    probe_stub_Connect,
    probe_stub_Disconnect,
    probe_stub_Invoke,
    probe_stub_IsIIDSupported,
    probe_stub_CountRefs,
    probe_stub_DebugServerQueryInterface,
    probe_stub_DebugServerRelease,
};

static HRESULT WINAPI probe_factory_QueryInterface(IPSFactoryBuffer *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IPSFactoryBuffer))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI probe_factory_AddRef(IPSFactoryBuffer *iface)
{
    return 2;
}

static ULONG WINAPI probe_factory_Release(IPSFactoryBuffer *iface)
{
    return 1;
}

static HRESULT WINAPI probe_factory_CreateProxy(IPSFactoryBuffer *iface, IUnknown *outer, REFIID riid,
                                                IRpcProxyBuffer **proxy_buffer, void **ppv)
{
    struct probe_proxy *proxy;

    *proxy_buffer = NULL;
    *ppv = NULL;
    if (!IsEqualIID(riid, &IID_ICocancelProbe)) return E_NOINTERFACE;
    if (!(proxy = HeapAlloc(GetProcessHeap(), 0, sizeof(*proxy)))) return E_OUTOFMEMORY;
    proxy->IRpcProxyBuffer_iface.lpVtbl = &probe_proxy_buffer_vtbl;
    proxy->IUnknown_iface.lpVtbl = &probe_iface_vtbl;
    proxy->refcount = 1;
    proxy->outer = outer;
    *proxy_buffer = &proxy->IRpcProxyBuffer_iface;
    *ppv = &proxy->IUnknown_iface;
    IUnknown_AddRef(outer);
    return S_OK;
}

static HRESULT WINAPI probe_factory_CreateStub(IPSFactoryBuffer *iface, REFIID riid, IUnknown *server,
                                               IRpcStubBuffer **ppstub)
{
    struct probe_stub *stub;

    *ppstub = NULL;
    if (!IsEqualIID(riid, &IID_ICocancelProbe)) return E_NOINTERFACE;
    if (!(stub = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*stub)))) return E_OUTOFMEMORY;
    stub->IRpcStubBuffer_iface.lpVtbl = &probe_stub_vtbl;
    stub->refcount = 1;
    if (server) probe_stub_Connect(&stub->IRpcStubBuffer_iface, server);
    *ppstub = &stub->IRpcStubBuffer_iface;
    return S_OK;
}

static const IPSFactoryBufferVtbl probe_factory_vtbl =
{
    probe_factory_QueryInterface,
    probe_factory_AddRef,
    probe_factory_Release,
    probe_factory_CreateProxy,
    probe_factory_CreateStub,
};

static IPSFactoryBuffer probe_factory = { &probe_factory_vtbl };

/* The object marshaled for the probe: it only answers IUnknown and ICocancelProbe. */
static HRESULT WINAPI probe_object_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICocancelProbe))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI probe_object_AddRef(IUnknown *iface)
{
    return 2;
}

static ULONG WINAPI probe_object_Release(IUnknown *iface)
{
    return 1;
}

static const IUnknownVtbl probe_object_vtbl = { probe_object_QueryInterface, probe_object_AddRef, probe_object_Release };
static IUnknown probe_object = { &probe_object_vtbl };

struct discovery
{
    IStream *stream;
};

static DWORD WINAPI discovery_sta_thread(void *arg)
{
    struct discovery *discovery = arg;
    IUnknown *proxy = NULL;
    DWORD cookie = 0;

    TlsSetValue(discovery_tls, (void *)1);
    if (FAILED(CoInitializeEx(NULL, COINIT_APARTMENTTHREADED))) return 0;
    CoRegisterClassObject(&CLSID_CocancelProbePS, (IUnknown *)&probe_factory, CLSCTX_INPROC_SERVER,
                          REGCLS_MULTIPLEUSE, &cookie);
    CoRegisterPSClsid(&IID_ICocancelProbe, &CLSID_CocancelProbePS);
    if (SUCCEEDED(CoGetInterfaceAndReleaseStream(discovery->stream, &IID_ICocancelProbe, (void **)&proxy)))
        IUnknown_Release(proxy);
    if (cookie) CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

/* Serves the STA's incoming calls (the proxy's release) until the thread ends or the deadline passes. */
static BOOL pump_until(HANDLE thread, DWORD timeout)
{
    DWORD start = GetTickCount(), elapsed;
    MSG msg;

    for (;;)
    {
        elapsed = GetTickCount() - start;
        if (elapsed >= timeout) return FALSE;
        switch (MsgWaitForMultipleObjects(1, &thread, FALSE, timeout - elapsed, QS_ALLINPUT))
        {
        case WAIT_OBJECT_0:
            return TRUE;
        case WAIT_OBJECT_0 + 1:
            while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
            break;
        default:
            return FALSE;
        }
    }
}

/*
 * Runs once per process on its own thread: marshals the probe object from an
 * STA of its own and unmarshals it in another STA, whose proxy is then
 * connected to a genuine client channel.  Both apartments end with the
 * discovery, and with them what exporting the probe registered with rpcrt4
 * (the probe's interface and the apartment's IRemUnknown, both
 * RPC_IF_AUTOLISTEN): a process that listens for RPC calls of its own, or
 * stops listening, sees the same as on stock Wine.  (Exported from the MTA,
 * which lives as long as any thread of the process is in it, the
 * registrations stayed, and RpcMgmtStopServerListening no longer stopped
 * the process listening: Wine's rpcrt4 server test.)
 */
static DWORD WINAPI discovery_thread(void *arg)
{
    struct discovery discovery = { NULL };
    DWORD cookie = 0;
    HANDLE sta;

    TlsSetValue(discovery_tls, (void *)1);
    if (SUCCEEDED(CoInitializeEx(NULL, COINIT_APARTMENTTHREADED)))
    {
        CoRegisterClassObject(&CLSID_CocancelProbePS, (IUnknown *)&probe_factory, CLSCTX_INPROC_SERVER,
                              REGCLS_MULTIPLEUSE, &cookie);
        CoRegisterPSClsid(&IID_ICocancelProbe, &CLSID_CocancelProbePS);
        if (SUCCEEDED(CoMarshalInterThreadInterfaceInStream(&IID_ICocancelProbe, &probe_object, &discovery.stream)))
        {
            if ((sta = CreateThread(NULL, 0, discovery_sta_thread, &discovery, 0, NULL)))
            {
                if (!pump_until(sta, 30000)) ERR("channel discovery did not finish\n");
                CloseHandle(sta);
            }
        }
        if (cookie) CoRevokeClassObject(cookie);
        CoUninitialize();
    }
    if (!(winepatch_applied() & WINEPATCH_CHANNEL)) WARN("the client channel was not found: calls are not cancellable\n");
    settle();
    return 0;
}

void discovery_start(void)
{
    HANDLE thread;

    if (InterlockedCompareExchange(&discovery_started, 1, 0)) return;
    if ((thread = CreateThread(NULL, 0, discovery_thread, NULL, 0, NULL))) CloseHandle(thread);
    else settle();
}

/* gcc misreads mingw's inline TEB access as an array overrun. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
static BYTE * __attribute__((noinline)) current_peb(void)
{
    return (BYTE *)NtCurrentTeb()->ProcessEnvironmentBlock;
}
#pragma GCC diagnostic pop

/* Does this thread hold the loader lock (PEB->LoaderLock)?  TRUE when that cannot be told. */
BOOL discovery_holding_loader_lock(void)
{
#ifdef _WIN64
    const SIZE_T offset = 0x110;
#else
    const SIZE_T offset = 0xa0;
#endif
    BYTE *peb = current_peb();
    RTL_CRITICAL_SECTION *lock;

    if (!pe_readable(peb + offset, sizeof(lock))) return TRUE;
    lock = *(RTL_CRITICAL_SECTION **)(peb + offset);
    if (!pe_readable(lock, sizeof(*lock))) return TRUE;
    return (DWORD)(ULONG_PTR)lock->OwningThread == GetCurrentThreadId();
}

/*
 * Before every proxied call (the channel hook's ClientGetSize): the first
 * one finds the channel, and waits until the call it makes is intercepted.
 */
void discovery_before_call(void)
{
    if (*(volatile LONG *)&discovery_settled) return;
    /* Found already, through the first standard proxy's Connect (callfactory.c). */
    if (winepatch_applied() & WINEPATCH_CHANNEL) return;
    if (TlsGetValue(discovery_tls)) return;
    discovery_start();
    if (discovery_holding_loader_lock())
    {
        WARN("a proxied call under the loader lock: it is not cancellable\n");
        return;
    }
    if (WaitForSingleObject(discovery_done, DISCOVERY_TIMEOUT))
        WARN("the channel discovery did not finish in time; this call is not cancellable\n");
}

/* Waits for the discovery, at most timeout ms: is the channel intercepted? */
BOOL discovery_wait(DWORD timeout)
{
    if (winepatch_applied() & WINEPATCH_CHANNEL) return TRUE;
    discovery_start();
    WaitForSingleObject(discovery_done, timeout);
    return (winepatch_applied() & WINEPATCH_CHANNEL) != 0;
}

BOOL discovery_init(void)
{
    discovery_tls = TlsAlloc();
    discovery_done = CreateEventW(NULL, TRUE, FALSE, NULL);
    return discovery_tls != TLS_OUT_OF_INDEXES && discovery_done;
}
