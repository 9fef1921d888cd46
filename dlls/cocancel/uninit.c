/*
 * A thread's last CoUninitialize finishes the calls it abandoned.
 *
 * Owns the engine's IInitializeSpy (CoRegisterInitializeSpy, a public
 * mechanism Wine implements), registered on a thread the first time it
 * abandons a call (runner.c tells).  An abandoned call holds Wine's state of
 * the call on its parked fiber: the apartment, the channel and its binding,
 * the raised count of calls in progress.  Left alone until the thread's next
 * call, it would keep the apartment alive past CoUninitialize.  So when the
 * thread leaves its apartment, the calls whose replies came are finished
 * there, and the others are waited for a short while (the transport aborts
 * that a cancel starts end them within milliseconds as a rule); a call that
 * has still not ended stays as before, finished at the thread's next call
 * or left at its exit.
 */

#include "cocancel_private.h"

#define UNINIT_WAIT_MS 1000

static DWORD spy_tls = TLS_OUT_OF_INDEXES;      /* this thread's spy is registered */
static HRESULT (WINAPI *p_CoRegisterInitializeSpy)(IInitializeSpy *, ULARGE_INTEGER *);

struct uninit_spy
{
    IInitializeSpy IInitializeSpy_iface;
    LONG refcount;
};

static inline struct uninit_spy *impl_from_IInitializeSpy(IInitializeSpy *iface)
{
    return CONTAINING_RECORD(iface, struct uninit_spy, IInitializeSpy_iface);
}

static HRESULT WINAPI spy_QueryInterface(IInitializeSpy *iface, REFIID riid, void **ppv)
{
    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IInitializeSpy))
    {
        *ppv = iface;
        IInitializeSpy_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI spy_AddRef(IInitializeSpy *iface)
{
    return InterlockedIncrement(&impl_from_IInitializeSpy(iface)->refcount);
}

static ULONG WINAPI spy_Release(IInitializeSpy *iface)
{
    struct uninit_spy *spy = impl_from_IInitializeSpy(iface);
    ULONG refcount = InterlockedDecrement(&spy->refcount);

    if (!refcount) HeapFree(GetProcessHeap(), 0, spy);
    return refcount;
}

static HRESULT WINAPI spy_PreInitialize(IInitializeSpy *iface, DWORD coinit, DWORD refs)
{
    return S_OK;
}

static HRESULT WINAPI spy_PostInitialize(IInitializeSpy *iface, HRESULT hr, DWORD coinit, DWORD refs)
{
    return hr;
}

static HRESULT WINAPI spy_PreUninitialize(IInitializeSpy *iface, DWORD refs)
{
    /* Only the call that leaves the apartment. */
    if (refs == 1 && runner_abandoned()) runner_reap_wait(UNINIT_WAIT_MS);
    return S_OK;
}

static HRESULT WINAPI spy_PostUninitialize(IInitializeSpy *iface, DWORD refs)
{
    return S_OK;
}

static const IInitializeSpyVtbl spy_vtbl =
{
    spy_QueryInterface,
    spy_AddRef,
    spy_Release,
    spy_PreInitialize,
    spy_PostInitialize,
    spy_PreUninitialize,
    spy_PostUninitialize,
};

/* This thread abandoned a call (runner.c): its CoUninitialize will look for it. */
void uninit_watch_thread(void)
{
    ULARGE_INTEGER cookie;
    struct uninit_spy *spy;

    if (spy_tls == TLS_OUT_OF_INDEXES || !p_CoRegisterInitializeSpy || TlsGetValue(spy_tls)) return;
    if (!(spy = HeapAlloc(GetProcessHeap(), 0, sizeof(*spy)))) return;
    spy->IInitializeSpy_iface.lpVtbl = &spy_vtbl;
    spy->refcount = 1;
    /* COM keeps its own reference until the thread's COM state goes. */
    if (SUCCEEDED(p_CoRegisterInitializeSpy(&spy->IInitializeSpy_iface, &cookie))) TlsSetValue(spy_tls, (void *)1);
    else WARN("no initialize spy: abandoned calls wait for the thread's next call\n");
    IInitializeSpy_Release(&spy->IInitializeSpy_iface);
}

void uninit_init(void)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");

    spy_tls = TlsAlloc();
    if (combase) p_CoRegisterInitializeSpy = (void *)GetProcAddress(combase, "CoRegisterInitializeSpy");
}
