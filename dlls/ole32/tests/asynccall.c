/*
 * Conformance tests for asynchronous calls on standard proxies:
 * ICallFactory::CreateCall, the call object's Begin_/Finish_ methods,
 * ISynchronize, and cancellation through ICancelMethodCalls ("Canceling an
 * Asynchronous Call" in the COM documentation).
 *
 * The interfaces are in asynccall_ps.idl; this program carries their
 * proxy/stub code and registers it in every apartment it uses.
 *
 * Bad input and misuse, and what each returns (the spec these tests hold):
 *
 *   QueryInterface(IID_ICallFactory), no async interface    E_NOINTERFACE
 *   CreateCall(..., ppv = NULL)                              E_INVALIDARG (Windows may say E_POINTER)
 *   CreateCall(synchronous or unrelated IID)                 E_NOINTERFACE, *ppv = NULL
 *   CreateCall(outer, riid2 != IID_IUnknown)                 a failure, *ppv = NULL
 *   Finish_ with no call begun, or a second time             RPC_E_CALL_COMPLETE
 *   Begin_ while a call is pending, or cancelled and not
 *     yet finished                                           RPC_S_CALLPENDING
 *   Finish_ of another method than the one begun            E_INVALIDARG (the call stays pending)
 *   Finish_ with a NULL [out] pointer                        HRESULT_FROM_WIN32(RPC_X_NULL_REF_POINTER)
 *                                                            (the call stays pending)
 *   Cancel with no call, or after Finish_ / completion       RPC_E_CALL_COMPLETE
 *   TestCancel: pending / cancelled                          RPC_S_CALLPENDING / RPC_E_CALL_CANCELED
 *   Finish_ after Cancel                                     RPC_E_CALL_CANCELED, [out] values zeroed
 *   Release without Finish_ (pending, complete, cancelled,
 *     on another thread)                                     no leak, no crash; the proxy keeps working
 *   CoCreateInstance(CLSID_StdEvent, outer)                  CLASS_E_NOAGGREGATION (syncobjects.c)
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdarg.h>

#include "windef.h"
#include "winbase.h"
#include "winuser.h"
#include "objbase.h"
#include "objidl.h"
#include "oaidl.h"
#include "oleauto.h"
#define USE_STUBLESS_PROXY
#include "rpcproxy.h"

#include "asynccall_ps.h"

#include "wine/test.h"

extern const ExtendedProxyFileInfo asynccall_ps_ProxyFileInfo;

static const CLSID CLSID_AsyncTestPS = {0x2c3e5a1f, 0x7c4b, 0x4e8e, {0x9a, 0x51, 0x1f, 0x0d, 0x6b, 0x2a, 0x9c, 0x01}};

static HRESULT (WINAPI *pCoTestCancel)(void);
static HRESULT (WINAPI *pCoCancelCall)(DWORD, ULONG);

/* Stock Wine has neither the call-cancellation API nor ICallFactory on its
 * proxies; a Wine that exports CoCancelCall is expected to have both. */
static BOOL wine_lacks_async;

/* rpcrt4 exports it; Wine's import library does not have it (a stub). */
static CLIENT_CALL_RETURN (RPC_VAR_ENTRY *pNdrDcomAsyncClientCall)(PMIDL_STUB_DESC desc, PFORMAT_STRING format, ...);

/* ---------------------------------------------------------------------
 * Proxy/stub registration.  Wine's NdrDllGetClassObject fills the zeroed
 * slots of the async stub vtable, which widl emits const: a writable copy
 * of the proxy file is registered instead.
 */

/* The factory of the dlldata.c widl writes for asynccall_ps.idl: its
 * CStdStubBuffer_Release hands a stub's last reference back to it. */
extern CStdPSFactoryBuffer gPFactory;
static ProxyFileInfo ps_file;
static CInterfaceStubVtbl ps_stubs[3];
static const CInterfaceStubVtbl *ps_stub_list[4];
static const ProxyFileInfo *ps_files[2];
static IPSFactoryBuffer *ps;

static BOOL init_ps(void)
{
    unsigned int i;
    HRESULT hr;

    memcpy(&ps_file, &asynccall_ps_ProxyFileInfo, sizeof(ps_file));
    for (i = 0; i < ps_file.TableSize && i < ARRAY_SIZE(ps_stubs); i++)
    {
        memcpy(&ps_stubs[i], ps_file.pStubVtblList[i], sizeof(ps_stubs[i]));
        ps_stub_list[i] = &ps_stubs[i];
    }
    *(const PCInterfaceStubVtblList **)&ps_file.pStubVtblList = (const PCInterfaceStubVtblList *)ps_stub_list;
    ps_files[0] = &ps_file;
    hr = NdrDllGetClassObject(&CLSID_AsyncTestPS, &IID_IPSFactoryBuffer, (void **)&ps, ps_files,
                              &CLSID_AsyncTestPS, &gPFactory);
    ok(hr == S_OK, "NdrDllGetClassObject got %#lx\n", hr);
    return hr == S_OK;
}

/*
 * The same proxy file as MIDL lays out a stub that serves calls through
 * call objects: the synchronous interface's stub dispatches every method
 * to rpcrt4's NdrDcomAsyncStubCall (a dispatch table instead of "pure
 * interpreted").  Registered under a class of its own, in the apartment of
 * a server only (the wire format is the same).
 */
static const CLSID CLSID_AsyncTestMidlPS = {0x2c3e5a1e, 0x7c4b, 0x4e8e, {0x9a, 0x51, 0x1f, 0x0d, 0x6b, 0x2a, 0x9c, 0x01}};
static CStdPSFactoryBuffer midl_factory;
static ProxyFileInfo midl_file;
static CInterfaceStubVtbl midl_stubs[3];
static const CInterfaceStubVtbl *midl_stub_list[4];
static const ProxyFileInfo *midl_files[2];
static PRPC_STUB_FUNCTION midl_table[16];
static IPSFactoryBuffer *midl_ps;

static BOOL init_midl_ps(void)
{
    PRPC_STUB_FUNCTION stub_call = (void *)GetProcAddress(GetModuleHandleA("rpcrt4.dll"), "NdrDcomAsyncStubCall");
    unsigned int i;
    HRESULT hr;

    if (!stub_call) return FALSE;
    for (i = 0; i < ARRAY_SIZE(midl_table); i++) midl_table[i] = stub_call;
    memcpy(&midl_file, &asynccall_ps_ProxyFileInfo, sizeof(midl_file));
    for (i = 0; i < midl_file.TableSize && i < ARRAY_SIZE(midl_stubs); i++)
    {
        memcpy(&midl_stubs[i], asynccall_ps_ProxyFileInfo.pStubVtblList[i], sizeof(midl_stubs[i]));
        if (IsEqualIID(midl_stubs[i].header.piid, &IID_ICcAsyncTest))
        {
            ok(midl_stubs[i].header.DispatchTableCount <= ARRAY_SIZE(midl_table), "%lu methods\n",
               midl_stubs[i].header.DispatchTableCount);
            midl_stubs[i].header.pDispatchTable = midl_table;
        }
        midl_stub_list[i] = &midl_stubs[i];
    }
    *(const PCInterfaceStubVtblList **)&midl_file.pStubVtblList = (const PCInterfaceStubVtblList *)midl_stub_list;
    midl_files[0] = &midl_file;
    hr = NdrDllGetClassObject(&CLSID_AsyncTestMidlPS, &IID_IPSFactoryBuffer, (void **)&midl_ps, midl_files,
                              &CLSID_AsyncTestMidlPS, &midl_factory);
    ok(hr == S_OK, "NdrDllGetClassObject got %#lx\n", hr);
    return hr == S_OK;
}

static DWORD register_midl_ps(void)
{
    DWORD cookie = 0;
    HRESULT hr;

    hr = CoRegisterClassObject(&CLSID_AsyncTestMidlPS, (IUnknown *)midl_ps, CLSCTX_INPROC_SERVER,
                               REGCLS_MULTIPLEUSE, &cookie);
    ok(hr == S_OK, "CoRegisterClassObject got %#lx\n", hr);
    CoRegisterPSClsid(&IID_ICcAsyncTest, &CLSID_AsyncTestMidlPS);
    CoRegisterPSClsid(&IID_AsyncICcAsyncTest, &CLSID_AsyncTestMidlPS);
    CoRegisterPSClsid(&IID_ICcSyncOnly, &CLSID_AsyncTestMidlPS);
    return cookie;
}

/* Makes the proxy/stub code known to the calling thread's apartment. */
static DWORD register_ps(void)
{
    DWORD cookie = 0;
    HRESULT hr;

    hr = CoRegisterClassObject(&CLSID_AsyncTestPS, (IUnknown *)ps, CLSCTX_INPROC_SERVER, REGCLS_MULTIPLEUSE, &cookie);
    ok(hr == S_OK, "CoRegisterClassObject got %#lx\n", hr);
    CoRegisterPSClsid(&IID_ICcAsyncTest, &CLSID_AsyncTestPS);
    CoRegisterPSClsid(&IID_AsyncICcAsyncTest, &CLSID_AsyncTestPS);
    CoRegisterPSClsid(&IID_ICcSyncOnly, &CLSID_AsyncTestPS);
    return cookie;
}

/* ---------------------------------------------------------------------
 * The server objects.
 */

/* Named, so that a local server process signals them too. */
static struct
{
    HANDLE slow_started;        /* auto-reset: a Slow call started */
    HANDLE saw_cancel;          /* auto-reset: a Slow call's CoTestCancel reported the cancel */
    HANDLE finish_ran;          /* auto-reset: a server call object's Finish_Slow or Finish_Fail ran */
} server;

/* The local server's class, made anew by each run; its text also names the
 * run's shared events, so that two runs at once in one prefix never meet. */
static CLSID CLSID_AsyncServer;
static WCHAR run_tag[40];

static HANDLE open_run_event(const WCHAR *name, BOOL manual)
{
    WCHAR full[96];

    wcscpy(full, name);
    wcscat(full, run_tag);
    return CreateEventW(NULL, manual, FALSE, full);
}

static HRESULT WINAPI test_QueryInterface(ICcAsyncTest *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICcAsyncTest))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI test_AddRef(ICcAsyncTest *iface)
{
    return 2;
}

static ULONG WINAPI test_Release(ICcAsyncTest *iface)
{
    return 1;
}

static HRESULT WINAPI test_Add(ICcAsyncTest *iface, int a, int b, int *sum)
{
    *sum = a + b;
    return S_OK;
}

#define SLOW_IGNORE_CANCEL 0x80000000

/* Runs for ms milliseconds unless the client cancels (and the caller allows
 * looking); reports whether it saw the cancel. */
static HRESULT WINAPI test_Slow(ICcAsyncTest *iface, DWORD ms, DWORD *seen_cancel)
{
    DWORD start = GetTickCount();
    BOOL look = !(ms & SLOW_IGNORE_CANCEL);

    ms &= ~SLOW_IGNORE_CANCEL;
    SetEvent(server.slow_started);
    *seen_cancel = 0;
    while (GetTickCount() - start < ms)
    {
        if (look && pCoTestCancel && pCoTestCancel() == RPC_E_CALL_CANCELED)
        {
            *seen_cancel = 1;
            SetEvent(server.saw_cancel);
            return E_ABORT;
        }
        Sleep(5);
    }
    return S_OK;
}

static HRESULT WINAPI test_Mix(ICcAsyncTest *iface, double d, float f, BSTR s, int *io, BSTR *out, double *dout)
{
    WCHAR buffer[64];

    *dout = d * 2 + f;
    *io = *io * 10 + SysStringLen(s);
    wcscpy(buffer, L"got ");
    if (s) wcscat(buffer, s);
    *out = SysAllocString(buffer);
    return S_OK;
}

static HRESULT WINAPI test_Struct(ICcAsyncTest *iface, const cc_point *in, cc_point *out)
{
    out->x = in->x + 1;
    out->y = in->y * 2;
    out->z = in->z - 1;
    return S_OK;
}

static HRESULT WINAPI test_Array(ICcAsyncTest *iface, int n, const int *in, int *out, int *total)
{
    int i;

    *total = 0;
    for (i = 0; i < n; i++) *total += in[i];
    for (i = 0; i < 4; i++) out[i] = i < n ? in[i] * in[i] : -1;
    return S_OK;
}

static HRESULT WINAPI test_Str(ICcAsyncTest *iface, const WCHAR *s, int *len, BSTR *doubled)
{
    WCHAR buffer[64];

    *len = wcslen(s);
    wcscpy(buffer, s);
    wcscat(buffer, s);
    *doubled = SysAllocString(buffer);
    return S_OK;
}

static HRESULT WINAPI test_Iface(ICcAsyncTest *iface, IUnknown *in, IUnknown **out)
{
    if (!in) return E_POINTER;
    *out = in;
    IUnknown_AddRef(in);
    return S_OK;
}

static HRESULT WINAPI test_Many(ICcAsyncTest *iface, int a1, double a2, int a3, float a4, int a5, double a6,
                                int a7, hyper a8, int a9, double *sum)
{
    *sum = a1 + a2 + a3 + a4 + a5 + a6 + a7 + (double)a8 + a9;
    return S_OK;
}

static HRESULT WINAPI test_Swap(ICcAsyncTest *iface, BSTR *s, cc_point *p)
{
    BSTR old = *s;
    int x = p->x;

    *s = SysAllocString(L"swapped");
    SysFreeString(old);
    p->x = p->z;
    p->z = x;
    p->y = -p->y;
    return S_OK;
}

#define FAIL_DIE 0x8badf00d   /* Fail(FAIL_DIE): the server process dies in the middle of the call */

static HRESULT WINAPI test_Fail(ICcAsyncTest *iface, HRESULT hr, int *out)
{
    *out = 7;
    if (hr == (HRESULT)FAIL_DIE)
    {
        Sleep(200);
        TerminateProcess(GetCurrentProcess(), 3);
    }
    return hr;
}

static const ICcAsyncTestVtbl test_vtbl =
{
    test_QueryInterface, test_AddRef, test_Release, test_Add, test_Slow, test_Mix, test_Struct,
    test_Array, test_Str, test_Iface, test_Many, test_Swap, test_Fail,
};

static ICcAsyncTest test_object = { &test_vtbl };

static HRESULT WINAPI synconly_QueryInterface(ICcSyncOnly *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICcSyncOnly))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI synconly_AddRef(ICcSyncOnly *iface)
{
    return 2;
}

static ULONG WINAPI synconly_Release(ICcSyncOnly *iface)
{
    return 1;
}

static HRESULT WINAPI synconly_Ping(ICcSyncOnly *iface, int *value)
{
    *value = 42;
    return S_OK;
}

static const ICcSyncOnlyVtbl synconly_vtbl = { synconly_QueryInterface, synconly_AddRef, synconly_Release, synconly_Ping };
static ICcSyncOnly synconly_object = { &synconly_vtbl };

/* A local object passed to and returned by Iface. */
static LONG local_refs;

static HRESULT WINAPI local_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
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

static ULONG WINAPI local_AddRef(IUnknown *iface)
{
    return InterlockedIncrement(&local_refs);
}

static ULONG WINAPI local_Release(IUnknown *iface)
{
    return InterlockedDecrement(&local_refs);
}

static const IUnknownVtbl local_vtbl = { local_QueryInterface, local_AddRef, local_Release };
static IUnknown local_object = { &local_vtbl };

/* ---------------------------------------------------------------------
 * Server objects that process their calls asynchronously ("Server-Side
 * Asynchronous Processing"): they implement ICallFactory, and the stub
 * serves an incoming call through the call object CreateCall makes, which
 * aggregates the stub's own object (ISynchronize, ICancelMethodCalls).
 * The call object's results differ from the synchronous method's, so that
 * the client can tell which one served it.
 */

#define ASYNC_BONUS 1000            /* what the call objects add to Add's and Many's results */
#define FAIL_BEGIN  0x80041001      /* Fail(): Begin_ fails with it */
#define FAIL_NEVER  0x80041002      /* Fail(): the call object never signals (it returns it from Finish_) */
#define FAIL_TWICE  0x80041003      /* Fail(): the call object signals twice and returns S_OK */
#define FAIL_RAISE  0x80041004      /* Fail(): Begin_ raises an exception */

static LONG srv_calls_alive;        /* server call objects not released yet */

/* What this process's server objects did. */
static struct
{
    LONG syncs;                     /* synchronous methods of the async servers */
    LONG creates, begins, finishes;
    char order[64];                 /* 'B'egin_, 'F'inish_, 'S'ynchronous, in order */
    LONG order_len;
} served;

static void served_note(char what, LONG *count)
{
    LONG i = InterlockedIncrement(&served.order_len) - 1;

    if (i < (LONG)sizeof(served.order) - 1) served.order[i] = what;
    if (count) InterlockedIncrement(count);
}

static void served_reset(void)
{
    memset(&served, 0, sizeof(served));
}

struct srv_call
{
    IUnknown IUnknown_inner;
    AsyncICcAsyncTest AsyncICcAsyncTest_iface;
    LONG refcount;
    IUnknown *outer;
    HRESULT hr;
    int sum, io;
    double dsum;
    BSTR text;
    DWORD ms, seen_cancel;
    HANDLE worker;
    ISynchronize *sync;             /* the outer object's, for the worker */
    ICancelMethodCalls *cancel;
};

static inline struct srv_call *srv_call_from_inner(IUnknown *iface)
{
    return CONTAINING_RECORD(iface, struct srv_call, IUnknown_inner);
}

static inline struct srv_call *srv_call_from_async(AsyncICcAsyncTest *iface)
{
    return CONTAINING_RECORD(iface, struct srv_call, AsyncICcAsyncTest_iface);
}

static HRESULT WINAPI srv_inner_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    struct srv_call *call = srv_call_from_inner(iface);

    if (IsEqualIID(riid, &IID_IUnknown)) *ppv = &call->IUnknown_inner;
    else if (IsEqualIID(riid, &IID_AsyncICcAsyncTest)) *ppv = &call->AsyncICcAsyncTest_iface;
    else
    {
        *ppv = NULL;
        return E_NOINTERFACE;
    }
    IUnknown_AddRef((IUnknown *)*ppv);
    return S_OK;
}

static ULONG WINAPI srv_inner_AddRef(IUnknown *iface)
{
    return InterlockedIncrement(&srv_call_from_inner(iface)->refcount);
}

static ULONG WINAPI srv_inner_Release(IUnknown *iface)
{
    struct srv_call *call = srv_call_from_inner(iface);
    ULONG ref = InterlockedDecrement(&call->refcount);

    if (!ref)
    {
        InterlockedDecrement(&srv_calls_alive);
        if (call->worker)
        {
            WaitForSingleObject(call->worker, 10000);
            CloseHandle(call->worker);
        }
        SysFreeString(call->text);
        HeapFree(GetProcessHeap(), 0, call);
    }
    return ref;
}

static const IUnknownVtbl srv_inner_vtbl = { srv_inner_QueryInterface, srv_inner_AddRef, srv_inner_Release };

static HRESULT WINAPI srv_QueryInterface(AsyncICcAsyncTest *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(srv_call_from_async(iface)->outer, riid, ppv);
}

static ULONG WINAPI srv_AddRef(AsyncICcAsyncTest *iface)
{
    return IUnknown_AddRef(srv_call_from_async(iface)->outer);
}

static ULONG WINAPI srv_Release(AsyncICcAsyncTest *iface)
{
    return IUnknown_Release(srv_call_from_async(iface)->outer);
}

/* Tells the stub that the call's results are ready, through the aggregating object. */
static void srv_signal(struct srv_call *call)
{
    ISynchronize *sync;
    HRESULT hr;

    hr = IUnknown_QueryInterface(call->outer, &IID_ISynchronize, (void **)&sync);
    ok(hr == S_OK, "the outer object's ISynchronize got %#lx\n", hr);
    if (FAILED(hr)) return;
    hr = ISynchronize_Signal(sync);
    ok(hr == S_OK, "Signal got %#lx\n", hr);
    ISynchronize_Release(sync);
}

static HRESULT WINAPI srv_Begin_Add(AsyncICcAsyncTest *iface, int a, int b)
{
    struct srv_call *call = srv_call_from_async(iface);

    served_note('B', &served.begins);
    call->sum = a + b + ASYNC_BONUS;
    srv_signal(call);
    return S_OK;
}

static HRESULT WINAPI srv_Finish_Add(AsyncICcAsyncTest *iface, int *sum)
{
    served_note('F', &served.finishes);
    *sum = srv_call_from_async(iface)->sum;
    return S_OK;
}

/* Slow's work runs on a thread of the server's: it looks at the call's cancellation, then signals. */
static DWORD WINAPI srv_slow_worker(void *arg)
{
    struct srv_call *call = arg;
    DWORD start = GetTickCount();

    while (GetTickCount() - start < call->ms)
    {
        if (ICancelMethodCalls_TestCancel(call->cancel) == RPC_E_CALL_CANCELED)
        {
            call->seen_cancel = 1;
            SetEvent(server.saw_cancel);
            break;
        }
        Sleep(5);
    }
    ISynchronize_Signal(call->sync);
    ISynchronize_Release(call->sync);
    ICancelMethodCalls_Release(call->cancel);
    return 0;
}

static HRESULT WINAPI srv_Begin_Slow(AsyncICcAsyncTest *iface, DWORD ms)
{
    struct srv_call *call = srv_call_from_async(iface);
    HRESULT hr;

    served_note('B', &served.begins);
    hr = IUnknown_QueryInterface(call->outer, &IID_ICancelMethodCalls, (void **)&call->cancel);
    ok(hr == S_OK, "the outer object's ICancelMethodCalls got %#lx\n", hr);
    if (FAILED(hr)) return hr;
    hr = ICancelMethodCalls_TestCancel(call->cancel);
    ok(hr == RPC_S_CALLPENDING, "TestCancel in Begin_ got %#lx\n", hr);
    IUnknown_QueryInterface(call->outer, &IID_ISynchronize, (void **)&call->sync);
    call->ms = ms;
    call->seen_cancel = 0;
    call->worker = CreateThread(NULL, 0, srv_slow_worker, call, 0, NULL);
    SetEvent(server.slow_started);
    return S_OK;
}

static HRESULT WINAPI srv_Finish_Slow(AsyncICcAsyncTest *iface, DWORD *seen_cancel)
{
    struct srv_call *call = srv_call_from_async(iface);

    served_note('F', &served.finishes);
    /* The server's clean-up: its worker is done. */
    ok(!WaitForSingleObject(call->worker, 10000), "the worker did not end\n");
    *seen_cancel = call->seen_cancel;
    SetEvent(server.finish_ran);
    return S_OK;
}

static HRESULT WINAPI srv_Begin_Mix(AsyncICcAsyncTest *iface, double d, float f, BSTR s, int *io)
{
    struct srv_call *call = srv_call_from_async(iface);

    served_note('B', &served.begins);
    call->dsum = d * 2 + f + ASYNC_BONUS;
    call->io = *io * 10 + SysStringLen(s);
    call->text = SysAllocString(s);
    srv_signal(call);
    return S_OK;
}

static HRESULT WINAPI srv_Finish_Mix(AsyncICcAsyncTest *iface, int *io, BSTR *out, double *dout)
{
    struct srv_call *call = srv_call_from_async(iface);
    WCHAR buffer[64];

    served_note('F', &served.finishes);
    *io = call->io;
    *dout = call->dsum;
    wcscpy(buffer, L"async ");
    if (call->text) wcscat(buffer, call->text);
    *out = SysAllocString(buffer);
    return S_OK;
}

static HRESULT WINAPI srv_Begin_Struct(AsyncICcAsyncTest *iface, const cc_point *in)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Finish_Struct(AsyncICcAsyncTest *iface, cc_point *out)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Begin_Array(AsyncICcAsyncTest *iface, int n, const int *in)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Finish_Array(AsyncICcAsyncTest *iface, int *out, int *total)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Begin_Str(AsyncICcAsyncTest *iface, const WCHAR *s)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Finish_Str(AsyncICcAsyncTest *iface, int *len, BSTR *doubled)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Begin_Iface(AsyncICcAsyncTest *iface, IUnknown *in)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Finish_Iface(AsyncICcAsyncTest *iface, IUnknown **out)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Begin_Many(AsyncICcAsyncTest *iface, int a1, double a2, int a3, float a4, int a5,
                                    double a6, int a7, hyper a8, int a9)
{
    struct srv_call *call = srv_call_from_async(iface);

    served_note('B', &served.begins);
    call->dsum = a1 + a2 + a3 + a4 + a5 + a6 + a7 + (double)a8 + a9 + ASYNC_BONUS;
    srv_signal(call);
    return S_OK;
}

static HRESULT WINAPI srv_Finish_Many(AsyncICcAsyncTest *iface, double *sum)
{
    served_note('F', &served.finishes);
    *sum = srv_call_from_async(iface)->dsum;
    return S_OK;
}

static HRESULT WINAPI srv_Begin_Swap(AsyncICcAsyncTest *iface, BSTR *s, cc_point *p)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Finish_Swap(AsyncICcAsyncTest *iface, BSTR *s, cc_point *p)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI srv_Begin_Fail(AsyncICcAsyncTest *iface, HRESULT hr)
{
    struct srv_call *call = srv_call_from_async(iface);

    served_note('B', &served.begins);
    call->hr = hr;
    if (hr == (HRESULT)FAIL_BEGIN) return hr;
    if (hr == (HRESULT)FAIL_RAISE) RaiseException(0xe0c0ffee, 0, 0, NULL);
    if (hr == (HRESULT)FAIL_NEVER)
    {
        SetEvent(server.slow_started);
        return S_OK;
    }
    srv_signal(call);
    if (hr == (HRESULT)FAIL_TWICE)
    {
        srv_signal(call);
        call->hr = S_OK;
    }
    return S_OK;
}

static HRESULT WINAPI srv_Finish_Fail(AsyncICcAsyncTest *iface, int *out)
{
    served_note('F', &served.finishes);
    *out = 42;
    SetEvent(server.finish_ran);
    return srv_call_from_async(iface)->hr;
}

static const AsyncICcAsyncTestVtbl srv_call_vtbl =
{
    srv_QueryInterface, srv_AddRef, srv_Release,
    srv_Begin_Add, srv_Finish_Add, srv_Begin_Slow, srv_Finish_Slow, srv_Begin_Mix, srv_Finish_Mix,
    srv_Begin_Struct, srv_Finish_Struct, srv_Begin_Array, srv_Finish_Array, srv_Begin_Str, srv_Finish_Str,
    srv_Begin_Iface, srv_Finish_Iface, srv_Begin_Many, srv_Finish_Many, srv_Begin_Swap, srv_Finish_Swap,
    srv_Begin_Fail, srv_Finish_Fail,
};

/* The server objects: one whose CreateCall makes call objects, one whose CreateCall fails. */
struct async_server
{
    ICcAsyncTest ICcAsyncTest_iface;
    ICallFactory ICallFactory_iface;
    BOOL no_calls;
};

static inline struct async_server *async_server_from_ICcAsyncTest(ICcAsyncTest *iface)
{
    return CONTAINING_RECORD(iface, struct async_server, ICcAsyncTest_iface);
}

static inline struct async_server *async_server_from_ICallFactory(ICallFactory *iface)
{
    return CONTAINING_RECORD(iface, struct async_server, ICallFactory_iface);
}

static HRESULT WINAPI asrv_QueryInterface(ICcAsyncTest *iface, REFIID riid, void **ppv)
{
    struct async_server *srv = async_server_from_ICcAsyncTest(iface);

    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICcAsyncTest)) *ppv = &srv->ICcAsyncTest_iface;
    else if (IsEqualIID(riid, &IID_ICallFactory)) *ppv = &srv->ICallFactory_iface;
    else
    {
        *ppv = NULL;
        return E_NOINTERFACE;
    }
    return S_OK;
}

static HRESULT WINAPI asrv_Add(ICcAsyncTest *iface, int a, int b, int *sum)
{
    served_note('S', &served.syncs);
    return test_Add(iface, a, b, sum);
}

static const ICcAsyncTestVtbl asrv_vtbl =
{
    asrv_QueryInterface, test_AddRef, test_Release, asrv_Add, test_Slow, test_Mix, test_Struct,
    test_Array, test_Str, test_Iface, test_Many, test_Swap, test_Fail,
};

static HRESULT WINAPI asrv_factory_QueryInterface(ICallFactory *iface, REFIID riid, void **ppv)
{
    return asrv_QueryInterface(&async_server_from_ICallFactory(iface)->ICcAsyncTest_iface, riid, ppv);
}

static ULONG WINAPI asrv_factory_AddRef(ICallFactory *iface)
{
    return 2;
}

static ULONG WINAPI asrv_factory_Release(ICallFactory *iface)
{
    return 1;
}

static HRESULT WINAPI asrv_factory_CreateCall(ICallFactory *iface, REFIID riid, IUnknown *outer, REFIID riid2,
                                              IUnknown **ppv)
{
    struct async_server *srv = async_server_from_ICallFactory(iface);
    struct srv_call *call;
    HRESULT hr;

    *ppv = NULL;
    InterlockedIncrement(&served.creates);
    if (srv->no_calls || !IsEqualIID(riid, &IID_AsyncICcAsyncTest)) return E_NOINTERFACE;
    if (outer && !IsEqualIID(riid2, &IID_IUnknown)) return CLASS_E_NOAGGREGATION;
    if (!(call = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*call)))) return E_OUTOFMEMORY;
    call->IUnknown_inner.lpVtbl = &srv_inner_vtbl;
    call->AsyncICcAsyncTest_iface.lpVtbl = &srv_call_vtbl;
    call->refcount = 1;
    call->outer = outer ? outer : &call->IUnknown_inner;
    InterlockedIncrement(&srv_calls_alive);
    hr = IUnknown_QueryInterface(&call->IUnknown_inner, riid2, (void **)ppv);
    IUnknown_Release(&call->IUnknown_inner);
    return hr;
}

static const ICallFactoryVtbl asrv_factory_vtbl =
{
    asrv_factory_QueryInterface, asrv_factory_AddRef, asrv_factory_Release, asrv_factory_CreateCall,
};

static struct async_server async_server = { { &asrv_vtbl }, { &asrv_factory_vtbl }, FALSE };
static struct async_server sync_server = { { &asrv_vtbl }, { &asrv_factory_vtbl }, TRUE };

/* ---------------------------------------------------------------------
 * The host: a thread of the given apartment type owning the server objects.
 */

struct host
{
    DWORD model;
    BOOL midl;                  /* the server's stubs are MIDL-style (register_midl_ps) */
    HANDLE thread, ready, quit;
    IStream *stream, *stream2;
    IStream *async_stream, *sync_stream;    /* async_server and sync_server */
};

static DWORD WINAPI host_thread(void *arg)
{
    struct host *host = arg;
    DWORD cookie;
    HRESULT hr;

    CoInitializeEx(NULL, host->model);
    cookie = host->midl ? register_midl_ps() : register_ps();
    hr = CoMarshalInterThreadInterfaceInStream(&IID_ICcAsyncTest, (IUnknown *)&test_object, &host->stream);
    ok(hr == S_OK, "marshal got %#lx\n", hr);
    hr = CoMarshalInterThreadInterfaceInStream(&IID_ICcSyncOnly, (IUnknown *)&synconly_object, &host->stream2);
    ok(hr == S_OK, "marshal got %#lx\n", hr);
    hr = CoMarshalInterThreadInterfaceInStream(&IID_ICcAsyncTest, (IUnknown *)&async_server.ICcAsyncTest_iface,
                                               &host->async_stream);
    ok(hr == S_OK, "marshal got %#lx\n", hr);
    hr = CoMarshalInterThreadInterfaceInStream(&IID_ICcAsyncTest, (IUnknown *)&sync_server.ICcAsyncTest_iface,
                                               &host->sync_stream);
    ok(hr == S_OK, "marshal got %#lx\n", hr);
    SetEvent(host->ready);
    if (host->model == COINIT_APARTMENTTHREADED)
    {
        MSG msg;

        while (MsgWaitForMultipleObjects(1, &host->quit, FALSE, 60000, QS_ALLINPUT) == WAIT_OBJECT_0 + 1)
            while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
    }
    else WaitForSingleObject(host->quit, 60000);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void start_host_of(struct host *host, DWORD model, BOOL midl)
{
    memset(host, 0, sizeof(*host));
    host->model = model;
    host->midl = midl;
    host->ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    host->quit = CreateEventW(NULL, TRUE, FALSE, NULL);
    host->thread = CreateThread(NULL, 0, host_thread, host, 0, NULL);
    ok(!WaitForSingleObject(host->ready, 10000), "host did not start\n");
}

static void start_host(struct host *host, DWORD model)
{
    start_host_of(host, model, FALSE);
}

static void stop_host(struct host *host)
{
    SetEvent(host->quit);
    ok(!WaitForSingleObject(host->thread, 20000), "host did not stop\n");
    CloseHandle(host->thread);
    CloseHandle(host->ready);
    CloseHandle(host->quit);
}

/* ---------------------------------------------------------------------
 * The tests, run on a client thread of each apartment type.
 */

static HRESULT create_call(ICcAsyncTest *proxy, AsyncICcAsyncTest **call)
{
    ICallFactory *factory;
    HRESULT hr;

    *call = NULL;
    hr = ICcAsyncTest_QueryInterface(proxy, &IID_ICallFactory, (void **)&factory);
    if (FAILED(hr)) return hr;
    hr = ICallFactory_CreateCall(factory, &IID_AsyncICcAsyncTest, NULL, &IID_AsyncICcAsyncTest, (IUnknown **)call);
    ICallFactory_Release(factory);
    return hr;
}

/* Whether the proxy has ICallFactory; the tests of call objects need it. */
static BOOL have_call_factory(ICcAsyncTest *proxy)
{
    ICallFactory *factory;
    HRESULT hr;

    hr = ICcAsyncTest_QueryInterface(proxy, &IID_ICallFactory, (void **)&factory);
    todo_wine_if(wine_lacks_async) ok(hr == S_OK, "QueryInterface(ICallFactory) got %#lx\n", hr);
    if (FAILED(hr))
    {
        skip("the proxy has no ICallFactory\n");
        return FALSE;
    }
    ICallFactory_Release(factory);
    return TRUE;
}

static void test_call_factory(ICcAsyncTest *proxy, ICcSyncOnly *synconly)
{
    IUnknown *unk, *unk2, *call;
    ICallFactory *factory, *factory2;
    void *ptr;
    HRESULT hr;

    hr = ICcAsyncTest_QueryInterface(proxy, &IID_ICallFactory, (void **)&factory);
    ok(hr == S_OK, "QueryInterface(ICallFactory) got %#lx\n", hr);
    if (FAILED(hr)) return;

    /* The proxy manager's IUnknown answers it too; identity holds. */
    hr = ICcAsyncTest_QueryInterface(proxy, &IID_IUnknown, (void **)&unk);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = IUnknown_QueryInterface(unk, &IID_ICallFactory, (void **)&factory2);
    ok(hr == S_OK, "QueryInterface(ICallFactory) on the proxy's IUnknown got %#lx\n", hr);
    hr = ICallFactory_QueryInterface(factory, &IID_IUnknown, (void **)&unk2);
    ok(hr == S_OK && unk2 == unk, "factory's IUnknown %p, proxy's %p\n", unk2, unk);
    if (SUCCEEDED(hr)) IUnknown_Release(unk2);
    hr = ICallFactory_QueryInterface(factory, &IID_ICcAsyncTest, &ptr);
    ok(hr == S_OK && ptr == proxy, "factory's ICcAsyncTest %p, proxy %p\n", ptr, proxy);
    if (SUCCEEDED(hr)) IUnknown_Release((IUnknown *)ptr);
    if (factory2) ICallFactory_Release(factory2);
    IUnknown_Release(unk);

    /* Bad arguments. */
    hr = ICallFactory_CreateCall(factory, &IID_AsyncICcAsyncTest, NULL, &IID_IUnknown, NULL);
    /* The documented standard value for a bad argument. */
    ok(hr == E_INVALIDARG, "NULL out pointer got %#lx\n", hr);
    call = (IUnknown *)0xdeadbeef;
    hr = ICallFactory_CreateCall(factory, &IID_ICcAsyncTest, NULL, &IID_IUnknown, &call);
    ok(hr == E_NOINTERFACE, "synchronous IID got %#lx\n", hr);
    ok(!call, "got %p\n", call);
    call = (IUnknown *)0xdeadbeef;
    hr = ICallFactory_CreateCall(factory, &IID_IDispatch, NULL, &IID_IUnknown, &call);
    ok(hr == E_NOINTERFACE, "unrelated IID got %#lx\n", hr);
    ok(!call, "got %p\n", call);
    call = (IUnknown *)0xdeadbeef;
    hr = ICallFactory_CreateCall(factory, &IID_AsyncICcAsyncTest, &local_object, &IID_AsyncICcAsyncTest, &call);
    ok(FAILED(hr), "aggregation asking for a non-IUnknown interface got %#lx\n", hr);
    ok(!call, "got %p\n", call);

    /* The call object's interfaces. */
    hr = ICallFactory_CreateCall(factory, &IID_AsyncICcAsyncTest, NULL, &IID_IUnknown, &call);
    ok(hr == S_OK, "CreateCall got %#lx\n", hr);
    if (SUCCEEDED(hr))
    {
        static const IID *iids[] = { &IID_AsyncICcAsyncTest, &IID_ISynchronize, &IID_ISynchronizeHandle,
                                     &IID_ICancelMethodCalls };
        unsigned int i;

        for (i = 0; i < ARRAY_SIZE(iids); i++)
        {
            hr = IUnknown_QueryInterface(call, iids[i], &ptr);
            ok(hr == S_OK, "call object interface %u got %#lx\n", i, hr);
            if (FAILED(hr)) continue;
            hr = IUnknown_QueryInterface((IUnknown *)ptr, &IID_IUnknown, (void **)&unk);
            ok(hr == S_OK && unk == call, "interface %u: IUnknown %p, expected %p\n", i, unk, call);
            if (SUCCEEDED(hr)) IUnknown_Release(unk);
            IUnknown_Release((IUnknown *)ptr);
        }
        hr = IUnknown_QueryInterface(call, &IID_ICcAsyncTest, &ptr);
        ok(hr == E_NOINTERFACE, "the synchronous interface got %#lx\n", hr);
        IUnknown_Release(call);
    }
    ICallFactory_Release(factory);

    /* No async interface, no call factory. */
    factory = (ICallFactory *)0xdeadbeef;
    hr = ICcSyncOnly_QueryInterface(synconly, &IID_ICallFactory, (void **)&factory);
    ok(hr == E_NOINTERFACE, "QueryInterface(ICallFactory) without an async interface got %#lx\n", hr);
    ok(!factory, "got %p\n", factory);
}

static void test_basic_call(ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call;
    ISynchronize *sync;
    int sum = 0;
    HRESULT hr;

    hr = create_call(proxy, &call);
    ok(hr == S_OK, "create_call got %#lx\n", hr);
    if (FAILED(hr)) return;

    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == RPC_E_CALL_COMPLETE, "Finish_ without Begin_ got %#lx\n", hr);

    hr = AsyncICcAsyncTest_Begin_Add(call, 40, 2);
    ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Begin_Add(call, 1, 1);
    ok(hr == RPC_S_CALLPENDING, "Begin_ while pending got %#lx\n", hr);
    hr = AsyncICcAsyncTest_QueryInterface(call, &IID_ISynchronize, (void **)&sync);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = ISynchronize_Wait(sync, 0, 5000);
    ok(hr == S_OK, "Wait got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == S_OK, "Finish_Add got %#lx\n", hr);
    ok(sum == 42, "sum %d\n", sum);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == RPC_E_CALL_COMPLETE, "second Finish_ got %#lx\n", hr);

    /* The call object is reusable, for another method too. */
    hr = AsyncICcAsyncTest_Begin_Add(call, -5, 3);
    ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == S_OK && sum == -2, "Finish_Add got %#lx, %d\n", hr, sum);

    /* Misuse leaves the call pending: Finish_ of another method, a NULL [out] pointer. */
    hr = AsyncICcAsyncTest_Begin_Add(call, 1, 2);
    ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Fail(call, &sum);
    ok(hr == E_INVALIDARG, "Finish_ of another method got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Add(call, NULL);
    ok(hr == HRESULT_FROM_WIN32(RPC_X_NULL_REF_POINTER), "Finish_ with a NULL [out] pointer got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == S_OK && sum == 3, "Finish_Add got %#lx, %d\n", hr, sum);

    /* The server's failure comes back through Finish_. */
    sum = 0;
    hr = AsyncICcAsyncTest_Begin_Fail(call, E_OUTOFMEMORY);
    ok(hr == S_OK, "Begin_Fail got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Fail(call, &sum);
    ok(hr == E_OUTOFMEMORY, "Finish_Fail got %#lx\n", hr);

    ISynchronize_Release(sync);
    AsyncICcAsyncTest_Release(call);
}

static void test_pending_state(ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call;
    ISynchronize *sync;
    ISynchronizeHandle *handle;
    HANDLE event = NULL;
    DWORD seen = 0xdead, start;
    HRESULT hr;

    if (FAILED(create_call(proxy, &call))) return;
    AsyncICcAsyncTest_QueryInterface(call, &IID_ISynchronize, (void **)&sync);
    AsyncICcAsyncTest_QueryInterface(call, &IID_ISynchronizeHandle, (void **)&handle);

    start = GetTickCount();
    hr = AsyncICcAsyncTest_Begin_Slow(call, 1500);
    ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
    /* Begin_ does not wait for the server. */
    ok(GetTickCount() - start < 1000, "Begin_ took %lu ms\n", GetTickCount() - start);
    hr = ISynchronize_Wait(sync, 0, 0);
    ok(hr == RPC_S_CALLPENDING, "Wait(0) while pending got %#lx\n", hr);
    hr = ISynchronizeHandle_GetHandle(handle, &event);
    ok(hr == S_OK && event, "GetHandle got %#lx, %p\n", hr, event);
    ok(WaitForSingleObject(event, 0) == WAIT_TIMEOUT, "handle signalled while pending\n");
    hr = ISynchronize_Wait(sync, 0, 10000);
    ok(hr == S_OK, "Wait got %#lx\n", hr);
    ok(GetTickCount() - start >= 1400, "completed after %lu ms\n", GetTickCount() - start);
    hr = ISynchronize_Wait(sync, 0, 0);
    ok(hr == S_OK, "Wait(0) after completion got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Slow(call, &seen);
    ok(hr == S_OK && seen == 0, "Finish_Slow got %#lx, %lu\n", hr, seen);

    ISynchronizeHandle_Release(handle);
    ISynchronize_Release(sync);
    AsyncICcAsyncTest_Release(call);
}

static void test_parameters(ICcAsyncTest *proxy)
{
    static const int numbers[3] = { 3, 4, 5 };
    AsyncICcAsyncTest *call;
    cc_point point = { 7, 1.5, 9 }, point_out = { 0 };
    int io = 4, out_array[4] = { 0 }, total = 0, *in_array;
    IUnknown *unk_out = NULL;
    WCHAR *str_in;
    int len = 0;
    BSTR bstr, bstr_out = NULL;
    double dout = 0, sum = 0;
    HRESULT hr;

    if (FAILED(create_call(proxy, &call))) return;

    /* The [in] values may be freed as soon as Begin_ returns. */
    bstr = SysAllocString(L"abc");
    hr = AsyncICcAsyncTest_Begin_Mix(call, 1.25, 0.5f, bstr, &io);
    ok(hr == S_OK, "Begin_Mix got %#lx\n", hr);
    SysFreeString(bstr);
    io = -1;
    hr = AsyncICcAsyncTest_Finish_Mix(call, &io, &bstr_out, &dout);
    ok(hr == S_OK, "Finish_Mix got %#lx\n", hr);
    ok(io == 43, "[in,out] int %d\n", io);
    ok(dout == 3.0, "double %f\n", dout);
    ok(bstr_out && !wcscmp(bstr_out, L"got abc"), "BSTR %s\n", wine_dbgstr_w(bstr_out));
    SysFreeString(bstr_out);

    hr = AsyncICcAsyncTest_Begin_Struct(call, &point);
    ok(hr == S_OK, "Begin_Struct got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Struct(call, &point_out);
    ok(hr == S_OK, "Finish_Struct got %#lx\n", hr);
    ok(point_out.x == 8 && point_out.y == 3.0 && point_out.z == 8, "struct %d %f %d\n",
       point_out.x, point_out.y, point_out.z);

    in_array = HeapAlloc(GetProcessHeap(), 0, sizeof(numbers));
    memcpy(in_array, numbers, sizeof(numbers));
    hr = AsyncICcAsyncTest_Begin_Array(call, 3, in_array);
    ok(hr == S_OK, "Begin_Array got %#lx\n", hr);
    HeapFree(GetProcessHeap(), 0, in_array);
    hr = AsyncICcAsyncTest_Finish_Array(call, out_array, &total);
    ok(hr == S_OK, "Finish_Array got %#lx\n", hr);
    ok(total == 12, "total %d\n", total);
    ok(out_array[0] == 9 && out_array[1] == 16 && out_array[2] == 25 && out_array[3] == -1,
       "array %d %d %d %d\n", out_array[0], out_array[1], out_array[2], out_array[3]);

    /* The synchronous method of the same interface, for comparison. */
    hr = ICcAsyncTest_Str(proxy, L"ab", &len, &bstr_out);
    ok(hr == S_OK, "Str got %#lx\n", hr);
    ok(len == 2 && bstr_out && !wcscmp(bstr_out, L"abab"), "synchronous: %d, %s\n", len, wine_dbgstr_w(bstr_out));
    SysFreeString(bstr_out);
    bstr_out = NULL;

    str_in = HeapAlloc(GetProcessHeap(), 0, 16 * sizeof(WCHAR));
    wcscpy(str_in, L"xyz");
    hr = AsyncICcAsyncTest_Begin_Str(call, str_in);
    ok(hr == S_OK, "Begin_Str got %#lx\n", hr);
    HeapFree(GetProcessHeap(), 0, str_in);
    hr = AsyncICcAsyncTest_Finish_Str(call, &len, &bstr_out);
    ok(hr == S_OK, "Finish_Str got %#lx\n", hr);
    ok(len == 3 && bstr_out && !wcscmp(bstr_out, L"xyzxyz"), "got %d, %s\n", len, wine_dbgstr_w(bstr_out));
    SysFreeString(bstr_out);

    /* An interface pointer goes out and comes back. */
    local_refs = 1;
    hr = AsyncICcAsyncTest_Begin_Iface(call, &local_object);
    ok(hr == S_OK, "Begin_Iface got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Iface(call, &unk_out);
    ok(hr == S_OK, "Finish_Iface got %#lx\n", hr);
    ok(unk_out == &local_object, "got %p, expected the object itself %p\n", unk_out, &local_object);
    if (unk_out) IUnknown_Release(unk_out);

    /* More than eight parameters, floating point among the first four and on the stack. */
    hr = AsyncICcAsyncTest_Begin_Many(call, 1, 2.5, 3, 4.25f, 5, 6.5, 7, (hyper)1 << 33, 9);
    ok(hr == S_OK, "Begin_Many got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Many(call, &sum);
    ok(hr == S_OK, "Finish_Many got %#lx\n", hr);
    ok(sum == 1 + 2.5 + 3 + 4.25 + 5 + 6.5 + 7 + 8589934592.0 + 9, "sum %f\n", sum);

    /* [in,out]: Begin_ takes the [in] value, Finish_ gives the [out] value. */
    bstr = SysAllocString(L"before");
    point.x = 1; point.y = 2.0; point.z = 3;
    hr = AsyncICcAsyncTest_Begin_Swap(call, &bstr, &point);
    ok(hr == S_OK, "Begin_Swap got %#lx\n", hr);
    ok(!wcscmp(bstr, L"before"), "Begin_ changed its [in] BSTR to %s\n", wine_dbgstr_w(bstr));
    SysFreeString(bstr);
    bstr_out = NULL;
    memset(&point_out, 0, sizeof(point_out));
    hr = AsyncICcAsyncTest_Finish_Swap(call, &bstr_out, &point_out);
    ok(hr == S_OK, "Finish_Swap got %#lx\n", hr);
    ok(bstr_out && !wcscmp(bstr_out, L"swapped"), "BSTR %s\n", wine_dbgstr_w(bstr_out));
    ok(point_out.x == 3 && point_out.y == -2.0 && point_out.z == 1, "struct %d %f %d\n",
       point_out.x, point_out.y, point_out.z);
    SysFreeString(bstr_out);

    AsyncICcAsyncTest_Release(call);
}

struct late_cancel
{
    ICancelMethodCalls *cancel;
    HANDLE go;
    HRESULT hr;
};

/* Cancels the call once Finish_ has had the time to start waiting for it. */
static DWORD WINAPI late_cancel_thread(void *arg)
{
    struct late_cancel *late = arg;

    WaitForSingleObject(late->go, 10000);
    Sleep(100);
    late->hr = ICancelMethodCalls_Cancel(late->cancel, 0);
    return 0;
}

static void test_cancel(ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call;
    ICancelMethodCalls *cancel;
    ISynchronize *sync;
    DWORD seen = 0xdead, start, elapsed;
    APTTYPEQUALIFIER apt_qualifier;
    APTTYPE apt_type;
    int sum = 0;
    HRESULT hr;

    if (FAILED(create_call(proxy, &call))) return;
    AsyncICcAsyncTest_QueryInterface(call, &IID_ICancelMethodCalls, (void **)&cancel);
    AsyncICcAsyncTest_QueryInterface(call, &IID_ISynchronize, (void **)&sync);

    hr = ICancelMethodCalls_TestCancel(cancel);
    /* TestCancel answers RPC_E_CALL_CANCELED for a cancelled call, RPC_S_CALLPENDING otherwise. */
    ok(hr == RPC_S_CALLPENDING, "TestCancel with no call got %#lx\n", hr);
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == RPC_E_CALL_COMPLETE, "Cancel with no call got %#lx\n", hr);

    /* Cancel(0) while the server runs: Finish_ reports it at once. */
    ResetEvent(server.saw_cancel);
    ResetEvent(server.slow_started);
    hr = AsyncICcAsyncTest_Begin_Slow(call, 5000);
    ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
    ok(!WaitForSingleObject(server.slow_started, 5000), "the server did not start\n");
    hr = ICancelMethodCalls_TestCancel(cancel);
    ok(hr == RPC_S_CALLPENDING, "TestCancel while pending got %#lx\n", hr);
    start = GetTickCount();
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == S_OK, "Cancel got %#lx\n", hr);
    hr = ICancelMethodCalls_TestCancel(cancel);
    ok(hr == RPC_E_CALL_CANCELED, "TestCancel after Cancel got %#lx\n", hr);
    /* CoCancelCall's documentation: "the call was already canceled". */
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == RPC_E_CALL_CANCELED, "second Cancel got %#lx\n", hr);
    /* Cancelled but not finished: Begin_ fails until Finish_. */
    hr = AsyncICcAsyncTest_Begin_Add(call, 1, 2);
    ok(hr == RPC_S_CALLPENDING, "Begin_ after Cancel got %#lx\n", hr);
    hr = ISynchronize_Wait(sync, 0, 2000);
    ok(hr == S_OK, "Wait after Cancel got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Slow(call, &seen);
    elapsed = GetTickCount() - start;
    ok(hr == RPC_E_CALL_CANCELED, "Finish_ after Cancel got %#lx\n", hr);
    ok(elapsed < 2000, "released after %lu ms\n", elapsed);
    ok(seen == 0, "[out] value %lu after a cancel\n", seen);
    hr = AsyncICcAsyncTest_Finish_Slow(call, &seen);
    ok(hr == RPC_E_CALL_COMPLETE, "second Finish_ got %#lx\n", hr);
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == RPC_E_CALL_COMPLETE, "Cancel after Finish_ got %#lx\n", hr);

    /* The server saw it. */
    ok(!WaitForSingleObject(server.saw_cancel, 5000), "the server did not see the cancel\n");

    /* The call object works again, and the late reply of the cancelled call is not delivered to it. */
    hr = AsyncICcAsyncTest_Begin_Add(call, 20, 22);
    ok(hr == S_OK, "Begin_ after Finish_ got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == S_OK && sum == 42, "Finish_Add got %#lx, %d\n", hr, sum);

    /* Cancel with a grace period the server makes: the real result. */
    hr = AsyncICcAsyncTest_Begin_Add(call, 2, 3);
    ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
    hr = ICancelMethodCalls_Cancel(cancel, 5);
    ok(hr == RPC_E_CALL_COMPLETE, "Cancel(5) of a quick call got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == S_OK && sum == 5, "Finish_Add got %#lx, %d\n", hr, sum);

    /* Cancel after completion, before Finish_. */
    hr = AsyncICcAsyncTest_Begin_Add(call, 3, 3);
    ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
    ISynchronize_Wait(sync, 0, 5000);
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == RPC_E_CALL_COMPLETE, "Cancel of a completed call got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == S_OK && sum == 6, "Finish_Add got %#lx, %d\n", hr, sum);

    /* A server that ignores the cancel: the caller is released all the
     * same, and once the server is done the proxy works normally. */
    hr = AsyncICcAsyncTest_Begin_Slow(call, 3000 | SLOW_IGNORE_CANCEL);
    ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
    start = GetTickCount();
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == S_OK, "Cancel got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Slow(call, &seen);
    ok(hr == RPC_E_CALL_CANCELED, "Finish_ got %#lx\n", hr);
    ok(GetTickCount() - start < 2000, "released after %lu ms\n", GetTickCount() - start);
    Sleep(3500);
    hr = AsyncICcAsyncTest_Begin_Add(call, 7, 8);
    ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == S_OK && sum == 15, "Finish_Add after an ignored cancel got %#lx, %d\n", hr, sum);

    /* Finish_ already waiting for the reply when another thread of its
     * apartment (the MTA) cancels: the cancel wakes it. */
    if (SUCCEEDED(CoGetApartmentType(&apt_type, &apt_qualifier)) && apt_type == APTTYPE_MTA)
    {
        struct late_cancel late = { cancel, CreateEventW(NULL, TRUE, FALSE, NULL), E_FAIL };
        HANDLE thread;

        ResetEvent(server.slow_started);
        hr = AsyncICcAsyncTest_Begin_Slow(call, 5000);
        ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
        ok(!WaitForSingleObject(server.slow_started, 5000), "the server did not start\n");
        thread = CreateThread(NULL, 0, late_cancel_thread, &late, 0, NULL);
        start = GetTickCount();
        SetEvent(late.go);
        seen = 0xdead;
        hr = AsyncICcAsyncTest_Finish_Slow(call, &seen);
        elapsed = GetTickCount() - start;
        ok(hr == RPC_E_CALL_CANCELED, "Finish_ woken by a cancel got %#lx\n", hr);
        ok(elapsed < 2000, "Finish_ returned after %lu ms\n", elapsed);
        ok(seen == 0, "[out] value %lu after a cancel\n", seen);
        ok(!WaitForSingleObject(thread, 5000), "the cancelling thread did not end\n");
        ok(late.hr == S_OK, "Cancel got %#lx\n", late.hr);
        CloseHandle(thread);
        CloseHandle(late.go);
    }

    /* Cancel right after Begin_. */
    hr = AsyncICcAsyncTest_Begin_Slow(call, 3000);
    ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
    hr = ICancelMethodCalls_Cancel(cancel, 0);
    ok(hr == S_OK, "Cancel got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Finish_Slow(call, &seen);
    ok(hr == RPC_E_CALL_CANCELED, "Finish_ got %#lx\n", hr);

    ISynchronize_Release(sync);
    ICancelMethodCalls_Release(cancel);
    AsyncICcAsyncTest_Release(call);
}

static DWORD WINAPI release_thread(void *arg)
{
    IUnknown_Release((IUnknown *)arg);
    return 0;
}

/* Call objects released without Finish_: pending, completed and cancelled. */
static void test_release_without_finish(ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call;
    ICancelMethodCalls *cancel;
    ISynchronize *sync;
    unsigned int i;
    int sum = 0;
    HRESULT hr;

    if (SUCCEEDED(create_call(proxy, &call)))
    {
        hr = AsyncICcAsyncTest_Begin_Slow(call, 300);
        ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
        AsyncICcAsyncTest_Release(call);
    }
    if (SUCCEEDED(create_call(proxy, &call)))
    {
        hr = AsyncICcAsyncTest_Begin_Add(call, 1, 1);
        ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
        AsyncICcAsyncTest_QueryInterface(call, &IID_ISynchronize, (void **)&sync);
        ISynchronize_Wait(sync, 0, 5000);
        ISynchronize_Release(sync);
        AsyncICcAsyncTest_Release(call);
    }
    if (SUCCEEDED(create_call(proxy, &call)))
    {
        hr = AsyncICcAsyncTest_Begin_Slow(call, 300);
        ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
        AsyncICcAsyncTest_QueryInterface(call, &IID_ICancelMethodCalls, (void **)&cancel);
        ICancelMethodCalls_Cancel(cancel, 0);
        ICancelMethodCalls_Release(cancel);
        AsyncICcAsyncTest_Release(call);
    }
    /* The last release on another thread, the call still pending. */
    if (SUCCEEDED(create_call(proxy, &call)))
    {
        HANDLE thread;

        hr = AsyncICcAsyncTest_Begin_Slow(call, 300);
        ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
        thread = CreateThread(NULL, 0, release_thread, call, 0, NULL);
        ok(!WaitForSingleObject(thread, 5000), "the release did not return\n");
        CloseHandle(thread);
    }
    /* The proxy works while the abandoned calls run and after their replies
     * came (cocancel's own tests check that it lets them go then). */
    for (i = 0; i < 10; i++, Sleep(50))
    {
        if (FAILED(create_call(proxy, &call))) break;
        hr = AsyncICcAsyncTest_Begin_Add(call, 4, 5);
        ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
        hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
        ok(hr == S_OK && sum == 9, "Finish_Add got %#lx, %d\n", hr, sum);
        AsyncICcAsyncTest_Release(call);
    }
}

/* Waiting for whichever of several calls completes first: a SynchronizeContainer of call objects. */
static void test_container_of_calls(ICcAsyncTest *proxy)
{
    static const CLSID CLSID_SynchronizeContainer_ = {0x0000032d, 0, 0, {0xc0, 0, 0, 0, 0, 0, 0, 0x46}};
    AsyncICcAsyncTest *slow, *quick;
    ISynchronizeContainer *container;
    ISynchronize *sync, *got = NULL;
    DWORD seen;
    int sum = 0;
    HRESULT hr;

    hr = CoCreateInstance(&CLSID_SynchronizeContainer_, NULL, CLSCTX_INPROC_SERVER, &IID_ISynchronizeContainer,
                          (void **)&container);
    if (hr == REGDB_E_CLASSNOTREG)
    {
        skip("CLSID_SynchronizeContainer is not registered\n");
        return;
    }
    ok(hr == S_OK, "CoCreateInstance(CLSID_SynchronizeContainer) got %#lx\n", hr);
    if (FAILED(hr)) return;
    if (FAILED(create_call(proxy, &slow)))
    {
        ISynchronizeContainer_Release(container);
        return;
    }
    if (FAILED(create_call(proxy, &quick)))
    {
        AsyncICcAsyncTest_Release(slow);
        ISynchronizeContainer_Release(container);
        return;
    }
    AsyncICcAsyncTest_QueryInterface(slow, &IID_ISynchronize, (void **)&sync);
    hr = ISynchronizeContainer_AddSynchronize(container, sync);
    ok(hr == S_OK, "AddSynchronize got %#lx\n", hr);
    ISynchronize_Release(sync);
    AsyncICcAsyncTest_QueryInterface(quick, &IID_ISynchronize, (void **)&sync);
    hr = ISynchronizeContainer_AddSynchronize(container, sync);
    ok(hr == S_OK, "AddSynchronize got %#lx\n", hr);

    /* The quick call goes first: an STA server runs them one after the other. */
    hr = AsyncICcAsyncTest_Begin_Add(quick, 1, 2);
    ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
    hr = AsyncICcAsyncTest_Begin_Slow(slow, 1500);
    ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
    hr = ISynchronizeContainer_WaitMultiple(container, 0, 5000, &got);
    ok(hr == S_OK, "WaitMultiple got %#lx\n", hr);
    ok(got == sync, "got %p, expected the quick call's %p\n", got, sync);
    if (got) ISynchronize_Release(got);
    ISynchronize_Release(sync);
    hr = AsyncICcAsyncTest_Finish_Add(quick, &sum);
    ok(hr == S_OK && sum == 3, "Finish_Add got %#lx, %d\n", hr, sum);
    hr = AsyncICcAsyncTest_Finish_Slow(slow, &seen);
    ok(hr == S_OK, "Finish_Slow got %#lx\n", hr);

    ISynchronizeContainer_Release(container);
    AsyncICcAsyncTest_Release(slow);
    AsyncICcAsyncTest_Release(quick);
}

/* Proxy code may run Begin_/Finish_ itself through rpcrt4's NdrDcomAsyncClientCall. */
static void test_dcom_async_client_call(ICcAsyncTest *proxy)
{
#ifdef __x86_64__
    const MIDL_STUBLESS_PROXY_INFO *info = NULL;
    AsyncICcAsyncTest *call;
    CLIENT_CALL_RETURN ret;
    double sum = 0;
    int isum = 0;
    unsigned int i;

    for (i = 0; i < ps_file.TableSize; i++)
        if (IsEqualIID(ps_file.pProxyVtblList[i]->header.piid, &IID_AsyncICcAsyncTest))
            info = ps_file.pProxyVtblList[i]->header.pStublessProxyInfo;
    if (!pNdrDcomAsyncClientCall)
    {
        win_skip("NdrDcomAsyncClientCall is not available\n");
        return;
    }
    if (!info || FAILED(create_call(proxy, &call))) return;

    /* Slots 3 and 4: Begin_Add and Finish_Add. */
    ret = pNdrDcomAsyncClientCall((MIDL_STUB_DESC *)info->pStubDesc,
                                  (PFORMAT_STRING)info->ProcFormatString + info->FormatStringOffset[3], call, 40, 2);
    ok(ret.Simple == S_OK, "Begin_Add through NdrDcomAsyncClientCall got %#Ix\n", ret.Simple);
    ret = pNdrDcomAsyncClientCall((MIDL_STUB_DESC *)info->pStubDesc,
                                  (PFORMAT_STRING)info->ProcFormatString + info->FormatStringOffset[4], call, &isum);
    ok(ret.Simple == S_OK && isum == 42, "Finish_Add got %#Ix, %d\n", ret.Simple, isum);

    /* A float passed through the variadic call arrives as a double. */
    ret = pNdrDcomAsyncClientCall((MIDL_STUB_DESC *)info->pStubDesc,
                                  (PFORMAT_STRING)info->ProcFormatString + info->FormatStringOffset[3 + 2 * 7],
                                  call, 1, 2.5, 3, 4.25f, 5, 6.5, 7, (hyper)8, 9);
    ok(ret.Simple == S_OK, "Begin_Many got %#Ix\n", ret.Simple);
    ret = pNdrDcomAsyncClientCall((MIDL_STUB_DESC *)info->pStubDesc,
                                  (PFORMAT_STRING)info->ProcFormatString + info->FormatStringOffset[4 + 2 * 7],
                                  call, &sum);
    ok(ret.Simple == S_OK && sum == 1 + 2.5 + 3 + 4.25 + 5 + 6.5 + 7 + 8 + 9, "Finish_Many got %#Ix, %f\n",
       ret.Simple, sum);

    /* Finish_ with no call in progress, through the same route. */
    ret = pNdrDcomAsyncClientCall((MIDL_STUB_DESC *)info->pStubDesc,
                                  (PFORMAT_STRING)info->ProcFormatString + info->FormatStringOffset[4], call, &isum);
    ok(ret.Simple == RPC_E_CALL_COMPLETE, "Finish_ without Begin_ got %#Ix\n", ret.Simple);
    AsyncICcAsyncTest_Release(call);
#else
    skip("NdrDcomAsyncClientCall is taken over on x86_64 only\n");
#endif
}

/* A thread that uninitializes COM and exits with a call outstanding. */
static DWORD WINAPI uninit_thread(void *arg)
{
    IStream *stream = arg;
    AsyncICcAsyncTest *call;
    ICcAsyncTest *proxy;
    DWORD cookie;
    HRESULT hr;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    cookie = register_ps();
    hr = CoGetInterfaceAndReleaseStream(stream, &IID_ICcAsyncTest, (void **)&proxy);
    ok(hr == S_OK, "unmarshal got %#lx\n", hr);
    if (SUCCEEDED(hr) && SUCCEEDED(create_call(proxy, &call)))
    {
        hr = AsyncICcAsyncTest_Begin_Slow(call, 300);
        ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
        ICcAsyncTest_Release(proxy);
        CoRevokeClassObject(cookie);
        CoUninitialize();
        /* The call object outlives the apartment; its release must not crash. */
        AsyncICcAsyncTest_Release(call);
        return 0;
    }
    if (SUCCEEDED(hr)) ICcAsyncTest_Release(proxy);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void test_uninitialize_outstanding(ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call;
    IStream *stream;
    HANDLE thread;
    int sum = 0;
    HRESULT hr;

    hr = CoMarshalInterThreadInterfaceInStream(&IID_ICcAsyncTest, (IUnknown *)proxy, &stream);
    ok(hr == S_OK, "marshal got %#lx\n", hr);
    if (FAILED(hr)) return;
    thread = CreateThread(NULL, 0, uninit_thread, stream, 0, NULL);
    ok(!WaitForSingleObject(thread, 10000), "the thread did not exit\n");
    CloseHandle(thread);
    Sleep(500);
    /* This thread's calls are not disturbed. */
    if (SUCCEEDED(create_call(proxy, &call)))
    {
        hr = AsyncICcAsyncTest_Begin_Add(call, 5, 6);
        ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
        hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
        ok(hr == S_OK && sum == 11, "Finish_Add got %#lx, %d\n", hr, sum);
        AsyncICcAsyncTest_Release(call);
    }
}

/* Many calls outstanding from one thread at once. */
static void test_outstanding(ICcAsyncTest *proxy, unsigned int count)
{
    AsyncICcAsyncTest **calls;
    unsigned int i, begun = 0, right = 0;
    int sum;
    HRESULT hr;

    calls = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, count * sizeof(*calls));
    for (i = 0; i < count; i++)
    {
        if (FAILED(create_call(proxy, &calls[i]))) break;
        if (AsyncICcAsyncTest_Begin_Add(calls[i], i, 1000) == S_OK) begun++;
    }
    ok(begun == count, "%u of %u calls begun\n", begun, count);
    for (i = count; i-- > 0;)
    {
        if (!calls[i]) continue;
        sum = -1;
        hr = AsyncICcAsyncTest_Finish_Add(calls[i], &sum);
        if (hr == S_OK && sum == (int)i + 1000) right++;
        AsyncICcAsyncTest_Release(calls[i]);
    }
    ok(right == count, "%u of %u calls gave their own result\n", right, count);
    HeapFree(GetProcessHeap(), 0, calls);
}

/* An outer object aggregating a call object: completion calls its ISynchronize::Signal. */
struct outer
{
    IUnknown IUnknown_iface;
    ISynchronize ISynchronize_iface;
    LONG refcount, signals;
    IUnknown *inner;
    BOOL release_in_signal;     /* Signal lets the call object go ... */
    HANDLE may_release;         /* ... once the test has let go of its pointers into it */
    HANDLE signal_returned;
    HWND notify;                /* Signal sends this window (of the caller's thread) a message */
    BOOL sent;                  /* ... and it was delivered */
};

static inline struct outer *outer_from_IUnknown(IUnknown *iface)
{
    return CONTAINING_RECORD(iface, struct outer, IUnknown_iface);
}

static inline struct outer *outer_from_ISynchronize(ISynchronize *iface)
{
    return CONTAINING_RECORD(iface, struct outer, ISynchronize_iface);
}

static HRESULT WINAPI outer_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    struct outer *outer = outer_from_IUnknown(iface);

    if (IsEqualIID(riid, &IID_IUnknown)) *ppv = &outer->IUnknown_iface;
    else if (IsEqualIID(riid, &IID_ISynchronize)) *ppv = &outer->ISynchronize_iface;
    else if (outer->inner) return IUnknown_QueryInterface(outer->inner, riid, ppv);
    else
    {
        *ppv = NULL;
        return E_NOINTERFACE;
    }
    IUnknown_AddRef((IUnknown *)*ppv);
    return S_OK;
}

static ULONG WINAPI outer_AddRef(IUnknown *iface)
{
    return InterlockedIncrement(&outer_from_IUnknown(iface)->refcount);
}

static ULONG WINAPI outer_Release(IUnknown *iface)
{
    return InterlockedDecrement(&outer_from_IUnknown(iface)->refcount);
}

static const IUnknownVtbl outer_vtbl = { outer_QueryInterface, outer_AddRef, outer_Release };

static HRESULT WINAPI outer_sync_QueryInterface(ISynchronize *iface, REFIID riid, void **ppv)
{
    return outer_QueryInterface(&outer_from_ISynchronize(iface)->IUnknown_iface, riid, ppv);
}

static ULONG WINAPI outer_sync_AddRef(ISynchronize *iface)
{
    return outer_AddRef(&outer_from_ISynchronize(iface)->IUnknown_iface);
}

static ULONG WINAPI outer_sync_Release(ISynchronize *iface)
{
    return outer_Release(&outer_from_ISynchronize(iface)->IUnknown_iface);
}

static HRESULT WINAPI outer_sync_Wait(ISynchronize *iface, DWORD flags, DWORD timeout)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI outer_sync_Signal(ISynchronize *iface)
{
    struct outer *outer = outer_from_ISynchronize(iface);
    IUnknown *inner;

    InterlockedIncrement(&outer->signals);
    if (outer->notify)
    {
        DWORD_PTR result;

        outer->sent = SendMessageTimeoutW(outer->notify, WM_USER, 0, 0, SMTO_NORMAL, 3000, &result) != 0;
    }
    if (outer->release_in_signal && !WaitForSingleObject(outer->may_release, 5000) &&
        (inner = InterlockedExchangePointer((void **)&outer->inner, NULL)))
        IUnknown_Release(inner);
    if (outer->signal_returned) SetEvent(outer->signal_returned);
    return S_OK;
}

static HRESULT WINAPI outer_sync_Reset(ISynchronize *iface)
{
    return S_OK;
}

static const ISynchronizeVtbl outer_sync_vtbl =
{
    outer_sync_QueryInterface, outer_sync_AddRef, outer_sync_Release,
    outer_sync_Wait, outer_sync_Signal, outer_sync_Reset,
};

/* A call object aggregated by outer, its inner IUnknown in outer->inner. */
static BOOL create_aggregated_call(ICcAsyncTest *proxy, struct outer *outer)
{
    ICallFactory *factory;
    HRESULT hr;

    hr = ICcAsyncTest_QueryInterface(proxy, &IID_ICallFactory, (void **)&factory);
    if (FAILED(hr)) return FALSE;
    hr = ICallFactory_CreateCall(factory, &IID_AsyncICcAsyncTest, &outer->IUnknown_iface, &IID_IUnknown, &outer->inner);
    ok(hr == S_OK, "aggregated CreateCall got %#lx\n", hr);
    ICallFactory_Release(factory);
    return SUCCEEDED(hr);
}

static void test_aggregation(ICcAsyncTest *proxy)
{
    struct outer outer = { { &outer_vtbl }, { &outer_sync_vtbl }, 1, 0, NULL };
    AsyncICcAsyncTest *call;
    IUnknown *unk;
    DWORD start;
    int sum = 0;
    HRESULT hr;

    if (!create_aggregated_call(proxy, &outer)) return;
    ok(outer.inner != &outer.IUnknown_iface, "got the outer object\n");

    hr = IUnknown_QueryInterface(&outer.IUnknown_iface, &IID_AsyncICcAsyncTest, (void **)&call);
    ok(hr == S_OK, "got %#lx\n", hr);
    if (FAILED(hr)) goto done;
    /* The call object's interfaces delegate to the outer object. */
    hr = AsyncICcAsyncTest_QueryInterface(call, &IID_IUnknown, (void **)&unk);
    ok(hr == S_OK && unk == &outer.IUnknown_iface, "IUnknown %p, outer %p\n", unk, &outer.IUnknown_iface);
    if (SUCCEEDED(hr)) IUnknown_Release(unk);

    hr = AsyncICcAsyncTest_Begin_Add(call, 30, 12);
    ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
    start = GetTickCount();
    while (!outer.signals && GetTickCount() - start < 5000) Sleep(10);
    ok(outer.signals == 1, "the outer object was signalled %ld times\n", outer.signals);
    hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
    ok(hr == S_OK && sum == 42, "Finish_Add got %#lx, %d\n", hr, sum);
    AsyncICcAsyncTest_Release(call);
done:
    IUnknown_Release(outer.inner);
    ok(outer.refcount == 1, "outer object has %ld references\n", outer.refcount);
}

/* The outer object releases the call object from inside Signal, its last reference with it. */
static void test_release_in_signal(ICcAsyncTest *proxy)
{
    struct outer outer = { { &outer_vtbl }, { &outer_sync_vtbl }, 1, 0, NULL };
    AsyncICcAsyncTest *call;
    DWORD start;
    HRESULT hr;

    if (!create_aggregated_call(proxy, &outer)) return;
    outer.release_in_signal = TRUE;
    outer.may_release = CreateEventW(NULL, TRUE, FALSE, NULL);
    outer.signal_returned = CreateEventW(NULL, TRUE, FALSE, NULL);
    hr = IUnknown_QueryInterface(&outer.IUnknown_iface, &IID_AsyncICcAsyncTest, (void **)&call);
    ok(hr == S_OK, "got %#lx\n", hr);
    if (SUCCEEDED(hr))
    {
        /* The reply comes after Begin_ returned, so Signal runs on the pool's wait thread. */
        hr = AsyncICcAsyncTest_Begin_Slow(call, 200);
        ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
        /* Only the outer object holds the call object now. */
        AsyncICcAsyncTest_Release(call);
        SetEvent(outer.may_release);
        ok(!WaitForSingleObject(outer.signal_returned, 5000), "Signal did not return\n");
        ok(outer.signals == 1, "the outer object was signalled %ld times\n", outer.signals);
        ok(outer.inner == NULL, "the call object was not released\n");
    }
    if (outer.inner) IUnknown_Release(outer.inner);
    /* The caller of Signal lets go of the ISynchronize it passed in just after. */
    for (start = GetTickCount(); outer.refcount != 1 && GetTickCount() - start < 5000;) Sleep(10);
    ok(outer.refcount == 1, "outer object has %ld references\n", outer.refcount);
    CloseHandle(outer.may_release);
    CloseHandle(outer.signal_returned);
}

/*
 * The outer object's Signal sends a message to a window of the thread that
 * made the call, while that thread is busy: once the thread calls Finish_
 * (or anything that waits for the reply's notification to end) it takes
 * the message, and neither waits for the other.
 */
static void test_signal_sends_message(ICcAsyncTest *proxy)
{
    struct outer outer = { { &outer_vtbl }, { &outer_sync_vtbl }, 1, 0, NULL };
    AsyncICcAsyncTest *call;
    DWORD start, elapsed;
    int sum = 0;
    HRESULT hr;

    if (!create_aggregated_call(proxy, &outer)) return;
    outer.notify = CreateWindowExW(0, L"static", NULL, 0, 0, 0, 0, 0, HWND_MESSAGE, NULL, NULL, NULL);
    ok(outer.notify != NULL, "no window\n");
    outer.signal_returned = CreateEventW(NULL, TRUE, FALSE, NULL);
    hr = IUnknown_QueryInterface(&outer.IUnknown_iface, &IID_AsyncICcAsyncTest, (void **)&call);
    ok(hr == S_OK, "got %#lx\n", hr);
    if (SUCCEEDED(hr) && outer.notify)
    {
        hr = AsyncICcAsyncTest_Begin_Add(call, 1, 2);
        ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
        /* The reply comes and Signal runs while this thread looks at no message. */
        Sleep(500);
        start = GetTickCount();
        hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
        elapsed = GetTickCount() - start;
        ok(hr == S_OK && sum == 3, "Finish_Add got %#lx, %d\n", hr, sum);
        ok(elapsed < 2000, "Finish_ took %lu ms\n", elapsed);
        ok(!WaitForSingleObject(outer.signal_returned, 5000), "Signal did not return\n");
        ok(outer.sent, "the message Signal sent was not taken\n");
        AsyncICcAsyncTest_Release(call);
    }
    IUnknown_Release(outer.inner);
    if (outer.notify) DestroyWindow(outer.notify);
    CloseHandle(outer.signal_returned);
}

/* ---------------------------------------------------------------------
 * Calls served through the server's call objects.
 */

/*
 * A call object's async interface can be marshaled: its stub is built from
 * the proxy file's async stub vtable, which MIDL and widl leave to be filled
 * at run time (CStdAsyncStubBuffer_METHODS).  Releasing it must not crash.
 */
static void test_marshal_call_object(void)
{
    IUnknown *call = NULL;
    LARGE_INTEGER zero = {{0}};
    IStream *stream;
    HRESULT hr;

    if (wine_lacks_async)
    {
        /* Wine fills the async stub vtable but its Release: the process dies at address 0. */
        skip("releasing an async stub crashes stock Wine\n");
        return;
    }
    hr = ICallFactory_CreateCall(&async_server.ICallFactory_iface, &IID_AsyncICcAsyncTest, NULL,
                                 &IID_AsyncICcAsyncTest, &call);
    ok(hr == S_OK, "CreateCall got %#lx\n", hr);
    if (FAILED(hr)) return;
    hr = CreateStreamOnHGlobal(NULL, TRUE, &stream);
    ok(hr == S_OK, "CreateStreamOnHGlobal got %#lx\n", hr);
    hr = CoMarshalInterface(stream, &IID_AsyncICcAsyncTest, call, MSHCTX_INPROC, NULL, MSHLFLAGS_NORMAL);
    ok(hr == S_OK, "marshaling the call object got %#lx\n", hr);
    IStream_Seek(stream, zero, STREAM_SEEK_SET, NULL);
    hr = CoReleaseMarshalData(stream);
    ok(hr == S_OK, "CoReleaseMarshalData got %#lx\n", hr);
    hr = CoDisconnectObject(call, 0);
    ok(hr == S_OK, "CoDisconnectObject got %#lx\n", hr);
    IStream_Release(stream);
    IUnknown_Release(call);
}

struct slow_caller
{
    IStream *stream;
    HRESULT hr;
    DWORD seen;
};

/* A second client whose Slow call stays pending in the server's call object (an STA: never the server's apartment). */
static DWORD WINAPI slow_caller_thread(void *arg)
{
    struct slow_caller *caller = arg;
    ICcAsyncTest *proxy = NULL;

    DWORD cookie;

    CoInitializeEx(NULL, COINIT_APARTMENTTHREADED);
    cookie = register_ps();
    caller->hr = CoGetInterfaceAndReleaseStream(caller->stream, &IID_ICcAsyncTest, (void **)&proxy);
    if (SUCCEEDED(caller->hr))
    {
        caller->hr = ICcAsyncTest_Slow(proxy, 2000, &caller->seen);
        ICcAsyncTest_Release(proxy);
    }
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

struct canceller
{
    DWORD tid;
    HRESULT hr;
};

/* Cancels the calls of thread tid once the server call object has begun. */
static DWORD WINAPI canceller_thread(void *arg)
{
    struct canceller *canceller = arg;

    canceller->hr = E_UNEXPECTED;
    if (WaitForSingleObject(server.slow_started, 10000)) return 0;
    Sleep(50);
    canceller->hr = pCoCancelCall(canceller->tid, 0);
    return 0;
}

/* A synchronous call that another thread cancels: the client is released, the server's Finish_ still runs. */
static void cancel_served_call(ICcAsyncTest *proxy, BOOL never_signals)
{
    struct canceller canceller;
    DWORD seen = 0xdead, start, elapsed;
    HANDLE thread;
    int out;
    HRESULT hr;

    ResetEvent(server.slow_started);
    ResetEvent(server.saw_cancel);
    ResetEvent(server.finish_ran);
    canceller.tid = GetCurrentThreadId();
    thread = CreateThread(NULL, 0, canceller_thread, &canceller, 0, NULL);
    start = GetTickCount();
    if (never_signals) hr = ICcAsyncTest_Fail(proxy, (HRESULT)FAIL_NEVER, &out);
    else hr = ICcAsyncTest_Slow(proxy, 10000, &seen);
    elapsed = GetTickCount() - start;
    ok(!WaitForSingleObject(thread, 10000), "the cancelling thread did not end\n");
    CloseHandle(thread);
    ok(canceller.hr == S_OK, "CoCancelCall got %#lx\n", canceller.hr);
    ok(hr == RPC_E_CALL_CANCELED, "the cancelled call got %#lx\n", hr);
    ok(elapsed < 5000, "released after %lu ms\n", elapsed);
    if (!never_signals)
        ok(!WaitForSingleObject(server.saw_cancel, 5000), "the server call object did not see the cancel\n");
    ok(!WaitForSingleObject(server.finish_ran, 5000), "the server call object's Finish_ did not run\n");
}

/*
 * proxy: on a server object with call objects; plain (or NULL): on one
 * whose CreateCall fails.  local: the server objects are in this process;
 * capable: the server's process processes calls asynchronously (Windows
 * does; stock Wine has no such thing); mta: the server is in an MTA.
 */
static void test_server_call_objects(ICcAsyncTest *proxy, ICcAsyncTest *plain, BOOL local, BOOL mta, BOOL capable)
{
    LONG begins, finishes, syncs, creates;
    struct slow_caller caller;
    AsyncICcAsyncTest *call;
    DWORD start, elapsed, seen;
    BSTR out = NULL, text;
    double dout = 0;
    int sum = 0, io;
    HANDLE thread;
    HRESULT hr;

    if (local) served_reset();
    hr = ICcAsyncTest_Add(proxy, 2, 3, &sum);
    ok(hr == S_OK, "Add got %#lx\n", hr);
    todo_wine_if(!capable) ok(sum == 5 + ASYNC_BONUS, "the synchronous client got %d\n", sum);
    if (local)
    {
        todo_wine_if(!capable) ok(served.creates == 1 && served.begins == 1 && served.finishes == 1 &&
                                  !served.syncs, "CreateCall %ld, Begin_ %ld, Finish_ %ld, synchronous %ld\n",
                                  served.creates, served.begins, served.finishes, served.syncs);
        todo_wine_if(!capable) ok(!strcmp(served.order, "BF"), "the server ran \"%s\"\n", served.order);
    }
    if (!capable)
    {
        ok(sum == 5, "the synchronous method got %d\n", sum);
        skip("no server-side asynchronous processing here\n");
        return;
    }

    /* Floating-point arguments in registers and on the stack, strings, [in, out]. */
    io = 3;
    text = SysAllocString(L"ab");
    hr = ICcAsyncTest_Mix(proxy, 1.5, 0.25f, text, &io, &out, &dout);
    SysFreeString(text);
    ok(hr == S_OK, "Mix got %#lx\n", hr);
    ok(dout == 1.5 * 2 + 0.25 + ASYNC_BONUS, "Mix's double is %f\n", dout);
    ok(io == 32, "Mix's [in, out] value is %d\n", io);
    ok(out && !wcscmp(out, L"async ab"), "Mix's string is %s\n", wine_dbgstr_w(out));
    SysFreeString(out);
    dout = 0;
    hr = ICcAsyncTest_Many(proxy, 1, 2.5, 3, 4.5f, 5, 6.5, 7, 8, 9, &dout);
    ok(hr == S_OK && dout == 46.5 + ASYNC_BONUS, "Many got %#lx, %f\n", hr, dout);

    /* An asynchronous client: its call object's call is served by the server's. */
    if (SUCCEEDED(create_call(proxy, &call)))
    {
        hr = AsyncICcAsyncTest_Begin_Add(call, 4, 5);
        ok(hr == S_OK, "Begin_Add got %#lx\n", hr);
        hr = AsyncICcAsyncTest_Finish_Add(call, &sum);
        ok(hr == S_OK && sum == 9 + ASYNC_BONUS, "the asynchronous client got %#lx, %d\n", hr, sum);
        hr = AsyncICcAsyncTest_Begin_Fail(call, 0x80041234);
        ok(hr == S_OK, "Begin_Fail got %#lx\n", hr);
        hr = AsyncICcAsyncTest_Finish_Fail(call, &io);
        ok(hr == (HRESULT)0x80041234 && io == 42, "the asynchronous client's Fail got %#lx, %d\n", hr, io);
        AsyncICcAsyncTest_Release(call);
    }

    /* Failures: the client gets Finish_'s result, or Begin_'s when Begin_ fails (and then no Finish_ runs). */
    if (local)
    {
        begins = served.begins;
        finishes = served.finishes;
    }
    io = 0;
    hr = ICcAsyncTest_Fail(proxy, 0x80041234, &io);
    ok(hr == (HRESULT)0x80041234 && io == 42, "Finish_'s failure got %#lx, %d\n", hr, io);
    hr = ICcAsyncTest_Fail(proxy, (HRESULT)FAIL_BEGIN, &io);
    ok(hr == (HRESULT)FAIL_BEGIN, "Begin_'s failure got %#lx\n", hr);
    io = 0;
    hr = ICcAsyncTest_Fail(proxy, (HRESULT)FAIL_TWICE, &io);
    ok(hr == S_OK && io == 42, "a call object that signals twice got %#lx, %d\n", hr, io);
    if (local)
        ok(served.begins == begins + 3 && served.finishes == finishes + 2, "Begin_ %ld times, Finish_ %ld times\n",
           served.begins - begins, served.finishes - finishes);
    /* An exception out of Begin_ fails the call (the stub catches it) and leaks no call object. */
    hr = ICcAsyncTest_Fail(proxy, (HRESULT)FAIL_RAISE, &io);
    ok(FAILED(hr), "Begin_'s exception got %#lx\n", hr);
    if (local) ok(!srv_calls_alive, "%ld server call objects left\n", srv_calls_alive);

    /* CreateCall fails: the synchronous method serves the call. */
    if (plain)
    {
        if (local)
        {
            syncs = served.syncs;
            creates = served.creates;
            begins = served.begins;
        }
        hr = ICcAsyncTest_Add(plain, 2, 3, &sum);
        ok(hr == S_OK && sum == 5, "without a call object got %#lx, %d\n", hr, sum);
        if (local)
            ok(served.syncs == syncs + 1 && served.creates == creates + 1 && served.begins == begins,
               "synchronous %ld, CreateCall %ld, Begin_ %ld\n", served.syncs - syncs, served.creates - creates,
               served.begins - begins);
    }

    /* The server is not held while its call object works: a second call is answered meanwhile. */
    ResetEvent(server.slow_started);
    ResetEvent(server.finish_ran);
    hr = CoMarshalInterThreadInterfaceInStream(&IID_ICcAsyncTest, (IUnknown *)proxy, &caller.stream);
    ok(hr == S_OK, "marshal got %#lx\n", hr);
    caller.seen = 0xdead;
    thread = CreateThread(NULL, 0, slow_caller_thread, &caller, 0, NULL);
    ok(!WaitForSingleObject(server.slow_started, 10000), "the first call did not begin\n");
    start = GetTickCount();
    hr = ICcAsyncTest_Add(proxy, 10, 20, &sum);
    elapsed = GetTickCount() - start;
    ok(hr == S_OK && sum == 30 + ASYNC_BONUS, "the second call got %#lx, %d\n", hr, sum);
    /* The first call's object works for 2 s after its Begin_: the second call is answered meanwhile. */
    ok(WaitForSingleObject(thread, 0) == WAIT_TIMEOUT, "the first call ended before the second (%lu ms, %s server)\n",
       elapsed, mta ? "MTA" : "STA");
    ok(!WaitForSingleObject(thread, 10000), "the first call did not end\n");
    CloseHandle(thread);
    ok(caller.hr == S_OK && !caller.seen, "the first call got %#lx, %lu\n", caller.hr, caller.seen);
    ok(!WaitForSingleObject(server.finish_ran, 0), "Finish_Slow did not run\n");

    /* Cancels reach the server call object, whose Finish_ still runs. */
    if (!pCoCancelCall)
    {
        skip("no CoCancelCall\n");
        return;
    }
    CoEnableCallCancellation(NULL);
    cancel_served_call(proxy, FALSE);
    cancel_served_call(proxy, TRUE);
    CoDisableCallCancellation(NULL);
    if (SUCCEEDED(create_call(proxy, &call)))
    {
        ICancelMethodCalls *cancel;

        ResetEvent(server.slow_started);
        ResetEvent(server.saw_cancel);
        ResetEvent(server.finish_ran);
        AsyncICcAsyncTest_QueryInterface(call, &IID_ICancelMethodCalls, (void **)&cancel);
        hr = AsyncICcAsyncTest_Begin_Slow(call, 10000);
        ok(hr == S_OK, "Begin_Slow got %#lx\n", hr);
        ok(!WaitForSingleObject(server.slow_started, 10000), "the server call object did not begin\n");
        hr = ICancelMethodCalls_Cancel(cancel, 0);
        ok(hr == S_OK, "Cancel got %#lx\n", hr);
        seen = 0xdead;
        hr = AsyncICcAsyncTest_Finish_Slow(call, &seen);
        ok(hr == RPC_E_CALL_CANCELED, "Finish_ after Cancel got %#lx\n", hr);
        ok(!WaitForSingleObject(server.saw_cancel, 5000), "the server call object did not see the cancel\n");
        ok(!WaitForSingleObject(server.finish_ran, 5000), "the server call object's Finish_ did not run\n");
        ICancelMethodCalls_Release(cancel);
        AsyncICcAsyncTest_Release(call);
    }

    /* The server works on. */
    hr = ICcAsyncTest_Add(proxy, 20, 22, &sum);
    ok(hr == S_OK && sum == 42 + ASYNC_BONUS, "after the cancels got %#lx, %d\n", hr, sum);
    /* Every Begin_ had its Finish_ but the one that failed and the one that raised. */
    if (local) ok(served.begins == served.finishes + 2, "Begin_ %ld times, Finish_ %ld times\n", served.begins,
                  served.finishes);
}

struct client
{
    DWORD model;
    struct host *host;
};

static DWORD WINAPI client_thread(void *arg)
{
    struct client *client = arg;
    ICcAsyncTest *proxy = NULL, *async_proxy = NULL, *sync_proxy = NULL;
    ICcSyncOnly *synconly = NULL;
    DWORD cookie;
    HRESULT hr;

    CoInitializeEx(NULL, client->model);
    cookie = register_ps();
    hr = CoGetInterfaceAndReleaseStream(client->host->stream, &IID_ICcAsyncTest, (void **)&proxy);
    ok(hr == S_OK, "unmarshal got %#lx\n", hr);
    hr = CoGetInterfaceAndReleaseStream(client->host->stream2, &IID_ICcSyncOnly, (void **)&synconly);
    ok(hr == S_OK, "unmarshal got %#lx\n", hr);
    if (proxy && synconly && have_call_factory(proxy))
    {
        test_call_factory(proxy, synconly);
        test_basic_call(proxy);
        test_pending_state(proxy);
        test_parameters(proxy);
        test_cancel(proxy);
        test_release_without_finish(proxy);
        test_aggregation(proxy);
        test_release_in_signal(proxy);
        test_signal_sends_message(proxy);
        test_container_of_calls(proxy);
        test_dcom_async_client_call(proxy);
        test_uninitialize_outstanding(proxy);
        /* Each outstanding call holds one of Wine's RPC connections, and
         * rpcrt4 serves each connection of this process with a thread of its
         * own: a 32-bit process runs out of address space for their stacks
         * at about 600 calls under Wine. */
        test_outstanding(proxy, sizeof(void *) == 8 ? 1000 : 300);
    }
    hr = CoGetInterfaceAndReleaseStream(client->host->async_stream, &IID_ICcAsyncTest, (void **)&async_proxy);
    ok(hr == S_OK, "unmarshal got %#lx\n", hr);
    hr = CoGetInterfaceAndReleaseStream(client->host->sync_stream, &IID_ICcAsyncTest, (void **)&sync_proxy);
    ok(hr == S_OK, "unmarshal got %#lx\n", hr);
    test_marshal_call_object();
    if (async_proxy && sync_proxy)
        test_server_call_objects(async_proxy, sync_proxy, TRUE, client->host->model == COINIT_MULTITHREADED,
                                 !wine_lacks_async);
    if (async_proxy) ICcAsyncTest_Release(async_proxy);
    if (sync_proxy) ICcAsyncTest_Release(sync_proxy);
    if (proxy) ICcAsyncTest_Release(proxy);
    if (synconly) ICcSyncOnly_Release(synconly);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

/* A client of the MIDL-style stubs (test_midl_stubs). */
static DWORD WINAPI midl_client_thread(void *arg)
{
    struct host *host = arg;
    ICcAsyncTest *plain = NULL, *async_proxy = NULL, *sync_proxy = NULL;
    ICcSyncOnly *synconly = NULL;
    double dout = 0;
    DWORD cookie;
    int sum = 0;
    HRESULT hr;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    cookie = register_ps();
    CoGetInterfaceAndReleaseStream(host->stream, &IID_ICcAsyncTest, (void **)&plain);
    CoGetInterfaceAndReleaseStream(host->stream2, &IID_ICcSyncOnly, (void **)&synconly);
    CoGetInterfaceAndReleaseStream(host->async_stream, &IID_ICcAsyncTest, (void **)&async_proxy);
    CoGetInterfaceAndReleaseStream(host->sync_stream, &IID_ICcAsyncTest, (void **)&sync_proxy);
    ok(plain && synconly && async_proxy && sync_proxy, "unmarshaling failed\n");
    if (plain && async_proxy && sync_proxy)
    {
        served_reset();
        /* A server with call objects: served through one. */
        hr = ICcAsyncTest_Add(async_proxy, 2, 3, &sum);
        ok(hr == S_OK && sum == 5 + ASYNC_BONUS, "Add got %#lx, %d\n", hr, sum);
        hr = ICcAsyncTest_Many(async_proxy, 1, 2.5, 3, 4.5f, 5, 6.5, 7, 8, 9, &dout);
        ok(hr == S_OK && dout == 46.5 + ASYNC_BONUS, "Many got %#lx, %f\n", hr, dout);
        ok(served.begins == 2 && served.finishes == 2 && !served.syncs, "Begin_ %ld, Finish_ %ld, synchronous %ld\n",
           served.begins, served.finishes, served.syncs);
        /* A server whose CreateCall fails, and one without ICallFactory: the synchronous method. */
        hr = ICcAsyncTest_Add(sync_proxy, 2, 3, &sum);
        ok(hr == S_OK && sum == 5, "without a call object got %#lx, %d\n", hr, sum);
        ok(served.syncs == 1, "synchronous %ld\n", served.syncs);
        hr = ICcAsyncTest_Add(plain, 2, 3, &sum);
        ok(hr == S_OK && sum == 5, "without ICallFactory got %#lx, %d\n", hr, sum);
        dout = 0;
        hr = ICcAsyncTest_Many(plain, 1, 2.5, 3, 4.5f, 5, 6.5, 7, 8, 9, &dout);
        ok(hr == S_OK && dout == 46.5, "Many without ICallFactory got %#lx, %f\n", hr, dout);
    }
    if (plain) ICcAsyncTest_Release(plain);
    if (synconly) ICcSyncOnly_Release(synconly);
    if (async_proxy) ICcAsyncTest_Release(async_proxy);
    if (sync_proxy) ICcAsyncTest_Release(sync_proxy);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

/* A server whose stubs are laid out as MIDL's for async interfaces: their calls go through NdrDcomAsyncStubCall. */
static void test_midl_stubs(void)
{
    struct host host;
    HANDLE thread;

    if (wine_lacks_async)
    {
        /* NdrDcomAsyncStubCall is a stub there: the server process dies of the first call. */
        skip("stock Wine has no NdrDcomAsyncStubCall\n");
        return;
    }
    if (!init_midl_ps())
    {
        skip("no NdrDcomAsyncStubCall\n");
        return;
    }
    winetest_push_context("MIDL-style stubs");
    start_host_of(&host, COINIT_APARTMENTTHREADED, TRUE);
    thread = CreateThread(NULL, 0, midl_client_thread, &host, 0, NULL);
    ok(!WaitForSingleObject(thread, 60000), "client did not finish\n");
    CloseHandle(thread);
    stop_host(&host);
    winetest_pop_context();
}

static const char *model_name(DWORD model)
{
    return model == COINIT_MULTITHREADED ? "MTA" : "STA";
}

static void test_topology(DWORD client_model, DWORD host_model)
{
    struct client client;
    struct host host;
    HANDLE thread;

    winetest_push_context("%s client, %s server", model_name(client_model), model_name(host_model));
    start_host(&host, host_model);
    client.model = client_model;
    client.host = &host;
    thread = CreateThread(NULL, 0, client_thread, &client, 0, NULL);
    ok(!WaitForSingleObject(thread, 120000), "client did not finish\n");
    CloseHandle(thread);
    stop_host(&host);
    winetest_pop_context();
}

/* ---------------------------------------------------------------------
 * Across processes: this program, started by COM as a local server.
 */

static HRESULT WINAPI server_factory_QueryInterface(IClassFactory *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IClassFactory))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI server_factory_AddRef(IClassFactory *iface)
{
    return 2;
}

static ULONG WINAPI server_factory_Release(IClassFactory *iface)
{
    return 1;
}

static IClassFactory async_server_factory;

static HRESULT WINAPI server_factory_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    if (outer) return CLASS_E_NOAGGREGATION;
    if (iface == &async_server_factory)
        return ICcAsyncTest_QueryInterface(&async_server.ICcAsyncTest_iface, riid, ppv);
    return ICcAsyncTest_QueryInterface(&test_object, riid, ppv);
}

static HRESULT WINAPI server_factory_LockServer(IClassFactory *iface, BOOL lock)
{
    return S_OK;
}

static const IClassFactoryVtbl server_factory_vtbl =
{
    server_factory_QueryInterface, server_factory_AddRef, server_factory_Release,
    server_factory_CreateInstance, server_factory_LockServer,
};

static IClassFactory server_factory = { &server_factory_vtbl };
static IClassFactory async_server_factory = { &server_factory_vtbl };

/* The local server's second class: its objects process calls through call objects. */
static void get_async_class(const CLSID *clsid, CLSID *async_clsid)
{
    *async_clsid = *clsid;
    async_clsid->Data4[7] ^= 0x5a;
}

static void run_local_server(const CLSID *clsid)
{
    HANDLE quit = open_run_event(L"cocancel_async_quit", TRUE);
    DWORD cookie, async_cookie, ps_cookie;
    CLSID async_clsid;
    HRESULT hr;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    /* Tell the client whether this process can see cancels at all. */
    if (pCoTestCancel)
    {
        HANDLE capable = open_run_event(L"cocancel_async_server_cancellable", TRUE);
        SetEvent(capable);
    }
    ps_cookie = register_ps();
    hr = CoRegisterClassObject(clsid, (IUnknown *)&server_factory, CLSCTX_LOCAL_SERVER,
                               REGCLS_MULTIPLEUSE, &cookie);
    ok(hr == S_OK, "CoRegisterClassObject got %#lx\n", hr);
    get_async_class(clsid, &async_clsid);
    hr = CoRegisterClassObject(&async_clsid, (IUnknown *)&async_server_factory, CLSCTX_LOCAL_SERVER,
                               REGCLS_MULTIPLEUSE, &async_cookie);
    ok(hr == S_OK, "CoRegisterClassObject got %#lx\n", hr);
    WaitForSingleObject(quit, 60000);
    CoRevokeClassObject(async_cookie);
    CoRevokeClassObject(cookie);
    CoRevokeClassObject(ps_cookie);
    CoUninitialize();
    CloseHandle(quit);
}

static BOOL register_local_server(const CLSID *clsid, const WCHAR *args)
{
    WCHAR key[128], exe[MAX_PATH], command[MAX_PATH + 32];
    HKEY hkey;
    LONG ret;

    GetModuleFileNameW(NULL, exe, MAX_PATH);
    wcscpy(command, L"\"");
    wcscat(command, exe);
    wcscat(command, L"\" asynccall");
    wcscat(command, args);
    StringFromGUID2(clsid, key + wcslen(wcscpy(key, L"CLSID\\")), 64);
    wcscat(key, L"\\LocalServer32");
    ret = RegCreateKeyExW(HKEY_CLASSES_ROOT, key, 0, NULL, 0, KEY_WRITE, NULL, &hkey, NULL);
    if (ret) return FALSE;
    ret = RegSetValueExW(hkey, NULL, 0, REG_SZ, (BYTE *)command, (wcslen(command) + 1) * sizeof(WCHAR));
    RegCloseKey(hkey);
    return !ret;
}

static void unregister_local_server(const CLSID *clsid)
{
    WCHAR key[128];

    StringFromGUID2(clsid, key + wcslen(wcscpy(key, L"CLSID\\")), 64);
    RegDeleteTreeW(HKEY_CLASSES_ROOT, key);
}

/* The server process dies while a call is in flight: Finish_ reports an RPC
 * error within a few seconds and later calls fail cleanly. */
static void test_server_dies(ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call;
    DWORD start;
    int out = 0;
    HRESULT hr;

    if (FAILED(create_call(proxy, &call))) return;
    hr = AsyncICcAsyncTest_Begin_Fail(call, (HRESULT)FAIL_DIE);
    ok(hr == S_OK, "Begin_Fail got %#lx\n", hr);
    start = GetTickCount();
    hr = AsyncICcAsyncTest_Finish_Fail(call, &out);
    ok(FAILED(hr) && hr != (HRESULT)FAIL_DIE, "Finish_ after the server died got %#lx\n", hr);
    ok(GetTickCount() - start < 10000, "released after %lu ms\n", GetTickCount() - start);
    start = GetTickCount();
    hr = AsyncICcAsyncTest_Begin_Add(call, 1, 2);
    if (SUCCEEDED(hr)) hr = AsyncICcAsyncTest_Finish_Add(call, &out);
    ok(FAILED(hr), "a call to the dead server got %#lx\n", hr);
    ok(GetTickCount() - start < 10000, "the failure took %lu ms\n", GetTickCount() - start);
    AsyncICcAsyncTest_Release(call);
}

/* A server of its own (a new class each run: Wine keeps a dead server's
 * registration), killed in the middle of a call. */
static DWORD WINAPI dying_client_thread(void *arg)
{
    const CLSID *clsid = arg;
    ICcAsyncTest *proxy = NULL;
    DWORD cookie;
    HRESULT hr;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    cookie = register_ps();
    hr = CoCreateInstance(clsid, NULL, CLSCTX_LOCAL_SERVER, &IID_ICcAsyncTest, (void **)&proxy);
    ok(hr == S_OK, "CoCreateInstance of the doomed server got %#lx\n", hr);
    if (proxy)
    {
        test_server_dies(proxy);
        ICcAsyncTest_Release(proxy);
    }
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

static void test_dying_server(void)
{
    WCHAR args[96];
    HANDLE thread;
    CLSID clsid;

    CoCreateGuid(&clsid);
    wcscpy(args, L" dying ");
    wcscat(args, run_tag);
    wcscat(args, L" ");
    StringFromGUID2(&clsid, args + wcslen(args), 40);
    if (!register_local_server(&clsid, args))
    {
        skip("cannot register the local server\n");
        return;
    }
    winetest_push_context("local server killed mid-call");
    thread = CreateThread(NULL, 0, dying_client_thread, &clsid, 0, NULL);
    ok(!WaitForSingleObject(thread, 60000), "client did not finish\n");
    CloseHandle(thread);
    winetest_pop_context();
    unregister_local_server(&clsid);
}

static DWORD WINAPI remote_client_thread(void *arg)
{
    DWORD model = (DWORD)(ULONG_PTR)arg;
    ICcAsyncTest *proxy = NULL;
    CLSID async_clsid;
    DWORD cookie;
    HRESULT hr;

    CoInitializeEx(NULL, model);
    cookie = register_ps();
    hr = CoCreateInstance(&CLSID_AsyncServer, NULL, CLSCTX_LOCAL_SERVER, &IID_ICcAsyncTest, (void **)&proxy);
    ok(hr == S_OK, "CoCreateInstance of the local server got %#lx\n", hr);
    if (proxy && have_call_factory(proxy))
    {
        HANDLE capable = open_run_event(L"cocancel_async_server_cancellable", TRUE);

        test_basic_call(proxy);
        test_parameters(proxy);
        /* COM starts the server without cocancel when only this program was
         * given it (cocancel-run): cancelling calls into it is not tested. */
        if (!WaitForSingleObject(capable, 0)) test_cancel(proxy);
        else skip("the local server has no call cancellation\n");
        CloseHandle(capable);
        test_release_without_finish(proxy);
        test_outstanding(proxy, 200);
    }
    if (proxy) ICcAsyncTest_Release(proxy);

    get_async_class(&CLSID_AsyncServer, &async_clsid);
    hr = CoCreateInstance(&async_clsid, NULL, CLSCTX_LOCAL_SERVER, &IID_ICcAsyncTest, (void **)&proxy);
    ok(hr == S_OK, "CoCreateInstance of the local server's second class got %#lx\n", hr);
    if (proxy)
    {
        HANDLE capable = open_run_event(L"cocancel_async_server_cancellable", TRUE);

        test_server_call_objects(proxy, NULL, FALSE, TRUE, !WaitForSingleObject(capable, 0));
        CloseHandle(capable);
        ICcAsyncTest_Release(proxy);
    }
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

/* The child of test_dying_client: a call its server's call object never finishes, until the parent kills it. */
static void run_dying_client(void)
{
    ICcAsyncTest *proxy = NULL;
    CLSID async_clsid;
    DWORD cookie;
    int out;

    /* Without call ids (no cocancel here) the server cannot tell who its client is: nothing to test. */
    if (!pCoCancelCall) return;
    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    cookie = register_ps();
    get_async_class(&CLSID_AsyncServer, &async_clsid);
    if (SUCCEEDED(CoCreateInstance(&async_clsid, NULL, CLSCTX_LOCAL_SERVER, &IID_ICcAsyncTest, (void **)&proxy)))
    {
        ICcAsyncTest_Fail(proxy, (HRESULT)FAIL_NEVER, &out);
        ICcAsyncTest_Release(proxy);
    }
    CoRevokeClassObject(cookie);
    CoUninitialize();
}

/* The client's process ends while the server's call object works: the stub's wait ends, Finish_ runs. */
static void test_dying_client(void)
{
    WCHAR exe[MAX_PATH], command[MAX_PATH + 96];
    PROCESS_INFORMATION info;
    STARTUPINFOW startup = { sizeof(startup) };
    HANDLE capable = open_run_event(L"cocancel_async_server_cancellable", TRUE), handles[2];
    DWORD ret;

    if (WaitForSingleObject(capable, 0))
    {
        skip("the local server processes calls synchronously\n");
        CloseHandle(capable);
        return;
    }
    CloseHandle(capable);
    ResetEvent(server.slow_started);
    ResetEvent(server.finish_ran);
    GetModuleFileNameW(NULL, exe, MAX_PATH);
    wcscpy(command, L"\"");
    wcscat(command, exe);
    wcscat(command, L"\" asynccall dyingclient ");
    wcscat(command, run_tag);
    if (!CreateProcessW(exe, command, NULL, NULL, FALSE, 0, NULL, NULL, &startup, &info))
    {
        skip("cannot start the client: %lu\n", GetLastError());
        return;
    }
    handles[0] = server.slow_started;
    handles[1] = info.hProcess;
    ret = WaitForMultipleObjects(2, handles, FALSE, 20000);
    if (ret == WAIT_OBJECT_0)
    {
        Sleep(100);
        TerminateProcess(info.hProcess, 1);
        ok(!WaitForSingleObject(server.finish_ran, 5000), "Finish_ did not run after the client died\n");
    }
    else if (ret == WAIT_OBJECT_0 + 1) skip("the client has no call cancellation\n");
    else
    {
        ok(0, "the client's call did not begin\n");
        TerminateProcess(info.hProcess, 1);
    }
    ok(!WaitForSingleObject(info.hProcess, 10000), "the client did not end\n");
    CloseHandle(info.hProcess);
    CloseHandle(info.hThread);
}

static void test_cross_process(DWORD model)
{
    HANDLE thread;

    winetest_push_context("%s client, local server", model_name(model));
    thread = CreateThread(NULL, 0, remote_client_thread, (void *)(ULONG_PTR)model, 0, NULL);
    ok(!WaitForSingleObject(thread, 120000), "client did not finish\n");
    CloseHandle(thread);
    winetest_pop_context();
}

START_TEST(asynccall)
{
    WCHAR server_args[64];
    CLSID async_clsid;
    char **argv;
    int argc = winetest_get_mainargs(&argv);

    pCoTestCancel = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoTestCancel");
    pCoCancelCall = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoCancelCall");
    wine_lacks_async = !GetProcAddress(GetModuleHandleA("ole32.dll"), "CoCancelCall");
    pNdrDcomAsyncClientCall = (void *)GetProcAddress(GetModuleHandleA("rpcrt4.dll"), "NdrDcomAsyncClientCall");
    if (!init_ps()) return;
    if (argc > 3 && !_stricmp(argv[2], "dyingclient"))
    {
        MultiByteToWideChar(CP_ACP, 0, argv[3], -1, run_tag, ARRAY_SIZE(run_tag));
        CLSIDFromString(run_tag, &CLSID_AsyncServer);
        run_dying_client();
        return;
    }
    /* The local servers: "server <tag>" and "dying <tag> <class>" (COM adds -Embedding). */
    if (argc > 3 && (!_stricmp(argv[2], "server") || !_stricmp(argv[2], "dying")))
    {
        WCHAR text[64];
        CLSID clsid;

        MultiByteToWideChar(CP_ACP, 0, argv[3], -1, run_tag, ARRAY_SIZE(run_tag));
        server.slow_started = open_run_event(L"cocancel_async_slow_started", FALSE);
        server.saw_cancel = open_run_event(L"cocancel_async_saw_cancel", FALSE);
    server.finish_ran = open_run_event(L"cocancel_async_finish_ran", FALSE);
        if (!_stricmp(argv[2], "server")) lstrcpynW(text, run_tag, ARRAY_SIZE(text));
        else if (argc > 4) MultiByteToWideChar(CP_ACP, 0, argv[4], -1, text, ARRAY_SIZE(text));
        else return;
        if (SUCCEEDED(CLSIDFromString(text, &clsid))) run_local_server(&clsid);
        return;
    }
    CoCreateGuid(&CLSID_AsyncServer);
    StringFromGUID2(&CLSID_AsyncServer, run_tag, ARRAY_SIZE(run_tag));
    server.slow_started = open_run_event(L"cocancel_async_slow_started", FALSE);
    server.saw_cancel = open_run_event(L"cocancel_async_saw_cancel", FALSE);
    server.finish_ran = open_run_event(L"cocancel_async_finish_ran", FALSE);

    test_topology(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED);
    test_topology(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED);
    test_topology(COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED);
    test_midl_stubs();

    wcscpy(server_args, L" server ");
    wcscat(server_args, run_tag);
    get_async_class(&CLSID_AsyncServer, &async_clsid);
    if (register_local_server(&CLSID_AsyncServer, server_args) && register_local_server(&async_clsid, server_args))
    {
        HANDLE quit = open_run_event(L"cocancel_async_quit", TRUE);

        test_cross_process(COINIT_MULTITHREADED);
        test_cross_process(COINIT_APARTMENTTHREADED);
        test_dying_server();
        test_dying_client();
        SetEvent(quit);
        CloseHandle(quit);
        unregister_local_server(&CLSID_AsyncServer);
        unregister_local_server(&async_clsid);
    }
    else skip("cannot register the local server\n");

    CloseHandle(server.slow_started);
    CloseHandle(server.saw_cancel);
    CloseHandle(server.finish_ran);
}
