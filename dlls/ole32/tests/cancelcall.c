/*
 * Conformance tests for cancelling proxied calls: CoCancelCall against a
 * thread blocked in a standard-marshaled call, CoTestCancel and
 * CoGetCallContext(IID_ICancelMethodCalls) inside the server method.
 *
 * The server object implements IClassFactory (standard-marshaled by COM):
 * CreateInstance for IID_IUnknown is the slow call, for IID_IPersist the
 * quick one.
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

#include "winreg.h"

#include "wine/test.h"

/* The class of the local server: this test program, started by COM with -Embedding. */
/* The local server's class, made anew by each run; its text also names the
 * run's shared events, so that two runs at once in one prefix never meet. */
static CLSID CLSID_CancelServer;
static WCHAR run_tag[40];

static HRESULT (WINAPI *pCoCancelCall)(DWORD, ULONG);
static HRESULT (WINAPI *pCoTestCancel)(void);
static HRESULT (WINAPI *pCoGetCancelObject)(DWORD, REFIID, void **);
static HRESULT (WINAPI *pCoSetCancelObject)(IUnknown *);

#define SLOW_RESULT  ((HRESULT)0x8004c0de)  /* CreateInstance's own result when nobody cancels */
#define ABORT_RESULT E_ABORT       /* ... when it saw the cancel and stopped */

/* What the server saw; written by the server thread, read after the call. */
static struct
{
    HANDLE in_call;          /* set when CreateInstance starts */
    HANDLE release;          /* set to let CreateInstance return */
    HANDLE done;             /* set when CreateInstance returns */
    HANDLE ignore;           /* set: a local server ignores the cancel */
    BOOL poll_cancel;        /* CreateInstance stops when CoTestCancel reports the cancel */
    HRESULT test_cancel_first, test_cancel_last, call_context;
    HRESULT quick_test_cancel, quick_call_context;
} server;

static IDispatch dispatch;

/* Set in a local server started to die: IID_IStorage kills it mid-call. */
static BOOL doomed_server;

static HRESULT WINAPI factory_QueryInterface(IClassFactory *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IClassFactory))
    {
        *ppv = iface;
        return S_OK;
    }
    if (IsEqualIID(riid, &IID_IDispatch))
    {
        *ppv = &dispatch;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI factory_AddRef(IClassFactory *iface)
{
    return 2;
}

static ULONG WINAPI factory_Release(IClassFactory *iface)
{
    return 1;
}

/* The slow job: runs until released, or until it sees the cancel when it polls. */
static HRESULT slow_job(void)
{
    ICancelMethodCalls *cancel;
    DWORD start = GetTickCount();
    HRESULT hr = SLOW_RESULT;

    server.call_context = CoGetCallContext(&IID_ICancelMethodCalls, (void **)&cancel);
    if (SUCCEEDED(server.call_context)) ICancelMethodCalls_Release(cancel);
    server.test_cancel_first = server.test_cancel_last = pCoTestCancel();
    SetEvent(server.in_call);
    while (WaitForSingleObject(server.release, 5) == WAIT_TIMEOUT && GetTickCount() - start < 10000)
    {
        server.test_cancel_last = pCoTestCancel();
        if (server.poll_cancel && server.test_cancel_last == RPC_E_CALL_CANCELED &&
            WaitForSingleObject(server.ignore, 0) == WAIT_TIMEOUT)
        {
            hr = ABORT_RESULT;
            break;
        }
    }
    /* What the method sees as it ends, whether it was let go or gave up. */
    server.test_cancel_last = pCoTestCancel();
    SetEvent(server.done);
    return hr;
}

static HRESULT WINAPI factory_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    ICancelMethodCalls *cancel;

    *ppv = NULL;
    /* The server process dies while the client waits for the reply. */
    if (doomed_server && IsEqualIID(riid, &IID_IStorage))
    {
        SetEvent(server.in_call);
        Sleep(200);
        TerminateProcess(GetCurrentProcess(), 3);
    }
    /* The method faults: COM's stub catches the exception and the call fails. */
    if (IsEqualIID(riid, &IID_IOleObject)) RaiseException(0xe0c0c0de, 0, 0, NULL);
    /* Asked from another process: what did the last slow call see at its end? */
    if (IsEqualIID(riid, &IID_IPersistStream)) return server.test_cancel_last;
    if (IsEqualIID(riid, &IID_IPersist))
    {
        server.quick_call_context = CoGetCallContext(&IID_ICancelMethodCalls, (void **)&cancel);
        if (SUCCEEDED(server.quick_call_context)) ICancelMethodCalls_Release(cancel);
        server.quick_test_cancel = pCoTestCancel();
        return S_FALSE;
    }
    return slow_job();
}

static HRESULT WINAPI factory_LockServer(IClassFactory *iface, BOOL lock)
{
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

static IClassFactory factory = { &factory_vtbl };

/*
 * The same object's IDispatch (marshaled by oleaut32), for calls with BSTRs,
 * an [in, out] argument and an interface pointer.  DISPID_SLOW is the slow
 * job; DISPID_ECHO(in, [in, out] inout, callback) answers "echo:" + in,
 * turns inout into "inout:" + inout, and calls back the client's IErrorLog.
 */
#define DISPID_SLOW 1
#define DISPID_ECHO 2

static HRESULT WINAPI dispatch_QueryInterface(IDispatch *iface, REFIID riid, void **ppv)
{
    return factory_QueryInterface(&factory, riid, ppv);
}

static ULONG WINAPI dispatch_AddRef(IDispatch *iface) { return 2; }
static ULONG WINAPI dispatch_Release(IDispatch *iface) { return 1; }

static HRESULT WINAPI dispatch_GetTypeInfoCount(IDispatch *iface, UINT *count)
{
    *count = 0;
    return S_OK;
}

static HRESULT WINAPI dispatch_GetTypeInfo(IDispatch *iface, UINT index, LCID lcid, ITypeInfo **info)
{
    return E_NOTIMPL;
}

static HRESULT WINAPI dispatch_GetIDsOfNames(IDispatch *iface, REFIID riid, LPOLESTR *names, UINT count,
                                             LCID lcid, DISPID *ids)
{
    return E_NOTIMPL;
}

static BSTR concat(const WCHAR *prefix, const WCHAR *text)
{
    WCHAR buffer[64];

    lstrcpynW(buffer, prefix, ARRAY_SIZE(buffer));
    lstrcpynW(buffer + wcslen(buffer), text ? text : L"", ARRAY_SIZE(buffer) - wcslen(buffer));
    return SysAllocString(buffer);
}

static HRESULT WINAPI dispatch_Invoke(IDispatch *iface, DISPID id, REFIID riid, LCID lcid, WORD flags,
                                      DISPPARAMS *params, VARIANT *result, EXCEPINFO *excep, UINT *arg_err)
{
    IErrorLog *log;
    EXCEPINFO info;
    HRESULT hr;
    BSTR old;

    if (id == DISPID_SLOW)
    {
        hr = slow_job();
        /* A reply the client must never see if it cancelled. */
        if (result)
        {
            V_VT(result) = VT_BSTR;
            V_BSTR(result) = SysAllocString(L"late reply");
        }
        return hr;
    }
    if (id != DISPID_ECHO || params->cArgs != 3 || !result) return DISP_E_MEMBERNOTFOUND;
    if (V_VT(&params->rgvarg[2]) != VT_BSTR || V_VT(&params->rgvarg[1]) != (VT_BYREF | VT_BSTR) ||
        V_VT(&params->rgvarg[0]) != VT_UNKNOWN)
        return DISP_E_TYPEMISMATCH;
    if (SUCCEEDED(IUnknown_QueryInterface(V_UNKNOWN(&params->rgvarg[0]), &IID_IErrorLog, (void **)&log)))
    {
        memset(&info, 0, sizeof(info));
        IErrorLog_AddError(log, L"echo", &info);
        IErrorLog_Release(log);
    }
    old = *V_BSTRREF(&params->rgvarg[1]);
    *V_BSTRREF(&params->rgvarg[1]) = concat(L"inout:", old);
    SysFreeString(old);
    V_VT(result) = VT_BSTR;
    V_BSTR(result) = concat(L"echo:", V_BSTR(&params->rgvarg[2]));
    return S_OK;
}

static const IDispatchVtbl dispatch_vtbl =
{
    dispatch_QueryInterface, dispatch_AddRef, dispatch_Release, dispatch_GetTypeInfoCount,
    dispatch_GetTypeInfo, dispatch_GetIDsOfNames, dispatch_Invoke,
};

static IDispatch dispatch = { &dispatch_vtbl };

/* The client's error log: the server calls back into it during "echo". */
static LONG error_log_calls;

static HRESULT WINAPI log_QueryInterface(IErrorLog *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IErrorLog))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI log_AddRef(IErrorLog *iface) { return 2; }
static ULONG WINAPI log_Release(IErrorLog *iface) { return 1; }

static HRESULT WINAPI log_AddError(IErrorLog *iface, LPCOLESTR name, EXCEPINFO *info)
{
    InterlockedIncrement(&error_log_calls);
    return S_OK;
}

static const IErrorLogVtbl log_vtbl = { log_QueryInterface, log_AddRef, log_Release, log_AddError };

static IErrorLog error_log = { &log_vtbl };

/* A cancel object of the client's own, registered around a call (a scope). */
static LONG scope_cancels;

static HRESULT WINAPI scope_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICancelMethodCalls))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI scope_AddRef(ICancelMethodCalls *iface) { return 2; }
static ULONG WINAPI scope_Release(ICancelMethodCalls *iface) { return 1; }

static HRESULT WINAPI scope_Cancel(ICancelMethodCalls *iface, ULONG seconds)
{
    InterlockedIncrement(&scope_cancels);
    return S_OK;
}

static HRESULT WINAPI scope_TestCancel(ICancelMethodCalls *iface) { return RPC_S_CALLPENDING; }

static const ICancelMethodCallsVtbl scope_vtbl =
{
    scope_QueryInterface, scope_AddRef, scope_Release, scope_Cancel, scope_TestCancel,
};

static ICancelMethodCalls scope = { &scope_vtbl };

/* The apartment that hosts the object: a thread that pumps messages (STA) or just waits (MTA). */
struct host
{
    DWORD model;
    IStream *stream;
    HANDLE ready, quit;
    HANDLE thread;
};

static DWORD WINAPI host_thread(void *arg)
{
    struct host *host = arg;
    MSG msg;

    CoInitializeEx(NULL, host->model);
    CoMarshalInterThreadInterfaceInStream(&IID_IClassFactory, (IUnknown *)&factory, &host->stream);
    SetEvent(host->ready);
    while (MsgWaitForMultipleObjects(1, &host->quit, FALSE, INFINITE, QS_ALLINPUT) != WAIT_OBJECT_0)
        while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
    CoUninitialize();
    return 0;
}

static void start_host(struct host *host, DWORD model)
{
    host->model = model;
    host->ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    host->quit = CreateEventW(NULL, TRUE, FALSE, NULL);
    host->thread = CreateThread(NULL, 0, host_thread, host, 0, NULL);
    ok(WaitForSingleObject(host->ready, 10000) == WAIT_OBJECT_0, "host did not start\n");
}

static void stop_host(struct host *host)
{
    SetEvent(host->quit);
    ok(WaitForSingleObject(host->thread, 10000) == WAIT_OBJECT_0, "host did not stop\n");
    CloseHandle(host->thread);
    CloseHandle(host->ready);
    CloseHandle(host->quit);
}

/* A message filter that cancels the call in progress once asked to. */
static LONG filter_cancel, filter_pending_calls;

static HRESULT WINAPI filter_QueryInterface(IMessageFilter *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IMessageFilter))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI filter_AddRef(IMessageFilter *iface)
{
    return 2;
}

static ULONG WINAPI filter_Release(IMessageFilter *iface)
{
    return 1;
}

static DWORD WINAPI filter_HandleInComingCall(IMessageFilter *iface, DWORD type, HTASK caller, DWORD ticks,
                                              INTERFACEINFO *info)
{
    return SERVERCALL_ISHANDLED;
}

static DWORD WINAPI filter_RetryRejectedCall(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    return ~0u;
}

/* Another filter, which the first registers in its place when asked (as a handler may during a call). */
static LONG filter_swap, other_pending_calls;
static IMessageFilter *swapped_out;     /* what CoRegisterMessageFilter handed back then */
static IMessageFilter other_filter;

static DWORD WINAPI filter_MessagePending(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    InterlockedIncrement(&filter_pending_calls);
    if (InterlockedExchange(&filter_swap, 0))
        ok(CoRegisterMessageFilter(&other_filter, &swapped_out) == S_OK, "CoRegisterMessageFilter failed\n");
    return filter_cancel ? PENDINGMSG_CANCELCALL : PENDINGMSG_WAITDEFPROCESS;
}

static DWORD WINAPI other_filter_MessagePending(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    InterlockedIncrement(&other_pending_calls);
    return PENDINGMSG_WAITDEFPROCESS;
}

static const IMessageFilterVtbl filter_vtbl =
{
    filter_QueryInterface,
    filter_AddRef,
    filter_Release,
    filter_HandleInComingCall,
    filter_RetryRejectedCall,
    filter_MessagePending,
};

static IMessageFilter message_filter = { &filter_vtbl };

static const IMessageFilterVtbl other_filter_vtbl =
{
    filter_QueryInterface,
    filter_AddRef,
    filter_Release,
    filter_HandleInComingCall,
    filter_RetryRejectedCall,
    other_filter_MessagePending,
};

static IMessageFilter other_filter = { &other_filter_vtbl };

/* A client thread in its own apartment making calls on request. */
struct client
{
    DWORD model;
    BOOL enable;
    BOOL filter;
    IStream *stream;
    IClassFactory *proxy;
    HANDLE go, finished, thread;
    DWORD tid;
    BOOL exit_after_call;       /* the thread ends as soon as its call returns */
    BOOL keep_proxy;            /* ... without releasing its proxy (the host's CoUninitialize does) */
    BOOL scribble;              /* overwrites the stack its calls used once each returns */
    IUnknown *scope;            /* a cancel object the thread registers around each call */
    enum { CALL_SLOW, CALL_QUICK, CALL_QUERY, CALL_DIE, CALL_FAULT, CALL_DISP_SLOW, CALL_DISP_SLOW_PROXY,
           CALL_DISP_ECHO, CALL_EXIT } what;
    WCHAR echo[64], inout[64];  /* what a CALL_DISP_* call got back */
    HRESULT hr;
    DWORD elapsed;
};

static HRESULT dispatch_call(struct client *client)
{
    VARIANT args[3], result;
    DISPPARAMS params = { args, NULL, 3, 0 };
    BSTR inout = SysAllocString(L"pong");
    IDispatch *disp;
    HRESULT hr;

    client->echo[0] = client->inout[0] = 0;
    if (FAILED(hr = IClassFactory_QueryInterface(client->proxy, &IID_IDispatch, (void **)&disp))) return hr;
    V_VT(&args[2]) = VT_BSTR;
    V_BSTR(&args[2]) = SysAllocString(L"ping");
    V_VT(&args[1]) = VT_BYREF | VT_BSTR;
    V_BSTRREF(&args[1]) = &inout;
    V_VT(&args[0]) = VT_UNKNOWN;
    V_UNKNOWN(&args[0]) = client->what == CALL_DISP_SLOW_PROXY ? (IUnknown *)client->proxy : (IUnknown *)&error_log;
    VariantInit(&result);
    hr = IDispatch_Invoke(disp, client->what == CALL_DISP_ECHO ? DISPID_ECHO : DISPID_SLOW, &IID_NULL, 0,
                          DISPATCH_METHOD, &params, &result, NULL, NULL);
    if (V_VT(&result) == VT_BSTR && V_BSTR(&result)) lstrcpynW(client->echo, V_BSTR(&result), ARRAY_SIZE(client->echo));
    if (inout) lstrcpynW(client->inout, inout, ARRAY_SIZE(client->inout));
    VariantClear(&result);
    SysFreeString(V_BSTR(&args[2]));
    SysFreeString(inout);
    IDispatch_Release(disp);
    return hr;
}

/* Fills the stack below the caller with a pattern: whatever a finished call left there is gone. */
static void __attribute__((noinline)) scribble_stack(void)
{
    volatile BYTE area[32768];

    memset((BYTE *)area, 0xcc, sizeof(area));
}

static DWORD WINAPI client_thread(void *arg)
{
    struct client *client = arg;
    BOOL scoped = FALSE;        /* client->scope is registered until the next request */
    HRESULT hr;
    void *unk;

    CoInitializeEx(NULL, client->model);
    hr = CoGetInterfaceAndReleaseStream(client->stream, &IID_IClassFactory, (void **)&client->proxy);
    ok(hr == S_OK, "unmarshal got %#lx\n", hr);
    if (client->enable) CoEnableCallCancellation(NULL);
    if (client->filter) CoRegisterMessageFilter(&message_filter, NULL);
    SetEvent(client->finished);
    for (;;)
    {
        MSG msg;
        DWORD start;

        while (MsgWaitForMultipleObjects(1, &client->go, FALSE, INFINITE, QS_ALLINPUT) != WAIT_OBJECT_0)
            while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
        if (scoped) pCoSetCancelObject(NULL);
        scoped = FALSE;
        if (client->what == CALL_EXIT) break;
        start = GetTickCount();
        if (client->scope) scoped = pCoSetCancelObject(client->scope) == S_OK;
        if (client->what == CALL_SLOW)
            client->hr = IClassFactory_CreateInstance(client->proxy, NULL, &IID_IUnknown, &unk);
        else if (client->what == CALL_QUERY)
            client->hr = IClassFactory_CreateInstance(client->proxy, NULL, &IID_IPersistStream, &unk);
        else if (client->what == CALL_DIE)
            client->hr = IClassFactory_CreateInstance(client->proxy, NULL, &IID_IStorage, &unk);
        else if (client->what == CALL_FAULT)
            client->hr = IClassFactory_CreateInstance(client->proxy, NULL, &IID_IOleObject, &unk);
        else if (client->what == CALL_DISP_SLOW || client->what == CALL_DISP_SLOW_PROXY ||
                 client->what == CALL_DISP_ECHO)
            client->hr = dispatch_call(client);
        else
            client->hr = IClassFactory_CreateInstance(client->proxy, NULL, &IID_IPersist, &unk);
        client->elapsed = GetTickCount() - start;
        if (client->scribble) scribble_stack();
        SetEvent(client->finished);
        if (client->exit_after_call) break;
    }
    if (scoped) pCoSetCancelObject(NULL);
    if (client->enable) CoDisableCallCancellation(NULL);
    if (client->filter) CoRegisterMessageFilter(NULL, NULL);
    if (!client->keep_proxy) IClassFactory_Release(client->proxy);
    CoUninitialize();
    return 0;
}

static void start_client_ex(struct client *client, struct host *host, DWORD model, BOOL enable, BOOL filter)
{
    memset(client, 0, sizeof(*client));
    client->model = model;
    client->enable = enable;
    client->filter = filter;
    client->stream = host->stream;
    host->stream = NULL;
    client->go = CreateEventW(NULL, FALSE, FALSE, NULL);
    client->finished = CreateEventW(NULL, FALSE, FALSE, NULL);
    client->thread = CreateThread(NULL, 0, client_thread, client, 0, &client->tid);
    ok(WaitForSingleObject(client->finished, 10000) == WAIT_OBJECT_0, "client did not start\n");
}

static void start_client(struct client *client, struct host *host, DWORD model, BOOL enable)
{
    start_client_ex(client, host, model, enable, FALSE);
}

static void client_call(struct client *client, int what)
{
    client->what = what;
    SetEvent(client->go);
}

static BOOL client_wait(struct client *client, DWORD timeout)
{
    return WaitForSingleObject(client->finished, timeout) == WAIT_OBJECT_0;
}

static void stop_client(struct client *client)
{
    client_call(client, CALL_EXIT);
    ok(WaitForSingleObject(client->thread, 10000) == WAIT_OBJECT_0, "client did not stop\n");
    CloseHandle(client->thread);
    CloseHandle(client->go);
    CloseHandle(client->finished);
}

static void reset_server(BOOL poll_cancel)
{
    ResetEvent(server.in_call);
    ResetEvent(server.release);
    ResetEvent(server.done);
    server.poll_cancel = poll_cancel;
    server.test_cancel_first = server.test_cancel_last = server.call_context = 0xdeadbeef;
}

/* Starts the slow call and waits until the server is inside it. */
static BOOL begin_slow_call(struct client *client)
{
    client_call(client, CALL_SLOW);
    return WaitForSingleObject(server.in_call, 10000) == WAIT_OBJECT_0;
}

/*
 * Windows gives every proxied call a cancel object from the start; an
 * implementation that has to find its way into the channel first may need a
 * moment after the process starts.  Waits (at most 5 s) for that.
 */
static BOOL wait_for_interception(void)
{
    struct host host;
    struct client client;
    BOOL found = FALSE;
    unsigned int i;
    void *cancel;

    start_host(&host, COINIT_APARTMENTTHREADED);
    start_client(&client, &host, COINIT_MULTITHREADED, FALSE);
    for (i = 0; i < 100 && !found; i++)
    {
        reset_server(FALSE);
        if (!begin_slow_call(&client)) break;
        if (pCoGetCancelObject(client.tid, &IID_ICancelMethodCalls, &cancel) == S_OK)
        {
            IUnknown_Release((IUnknown *)cancel);
            found = TRUE;
        }
        SetEvent(server.release);
        client_wait(&client, 10000);
        if (!found) Sleep(50);
    }
    stop_client(&client);
    stop_host(&host);
    return found;
}

static const char *model_name(DWORD model)
{
    return model == COINIT_MULTITHREADED ? "MTA" : "STA";
}

static void test_cancel_object_during_call(DWORD client_model, DWORD host_model)
{
    ICancelMethodCalls *cancel, *cancel2;
    struct client client;
    struct host host;
    HRESULT hr;

    winetest_push_context("%s client, %s object", model_name(client_model), model_name(host_model));
    start_host(&host, host_model);
    start_client(&client, &host, client_model, FALSE);

    /* Not enabled: the call has a cancel object, but it cannot be cancelled. */
    reset_server(TRUE);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    hr = pCoGetCancelObject(client.tid, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == S_OK, "got %#lx\n", hr);
    hr = pCoGetCancelObject(client.tid, &IID_ICancelMethodCalls, (void **)&cancel2);
    ok(hr == S_OK && cancel2 == cancel, "got %#lx, %p vs %p\n", hr, cancel2, cancel);
    if (hr == S_OK) ICancelMethodCalls_Release(cancel2);
    hr = pCoCancelCall(client.tid, 0);
    ok(hr == CO_E_CANCEL_DISABLED, "got %#lx\n", hr);
    if (cancel)
    {
        hr = ICancelMethodCalls_TestCancel(cancel);
        ok(hr == RPC_S_CALLPENDING, "got %#lx\n", hr);
    }
    ok(!client_wait(&client, 100), "the call returned early\n");
    SetEvent(server.release);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == SLOW_RESULT, "got %#lx\n", client.hr);
    ok(server.test_cancel_last == RPC_S_CALLPENDING, "server saw %#lx\n", server.test_cancel_last);
    ok(server.call_context == S_OK, "CoGetCallContext in the method got %#lx\n", server.call_context);

    /* After the call: no cancel object; the old one reports the call complete. */
    hr = pCoGetCancelObject(client.tid, &IID_ICancelMethodCalls, (void **)&cancel2);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);
    if (cancel)
    {
        hr = ICancelMethodCalls_Cancel(cancel, 0);
        ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);
        ICancelMethodCalls_Release(cancel);
    }

    /*
     * A call inside a scope of the thread's own cancel object: while it
     * runs, the call's object is the innermost one and a cancel goes to it;
     * after it, the thread's own is found again.
     */
    client.scope = (IUnknown *)&scope;
    scope_cancels = 0;
    reset_server(TRUE);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    hr = pCoGetCancelObject(client.tid, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == S_OK && cancel != &scope, "got %#lx, %p (the thread's own: %p)\n", hr, cancel, &scope);
    if (hr == S_OK) ICancelMethodCalls_Release(cancel);
    hr = pCoCancelCall(client.tid, 0);
    ok(hr == CO_E_CANCEL_DISABLED, "got %#lx\n", hr);
    ok(!scope_cancels, "the thread's own object was cancelled\n");
    SetEvent(server.release);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == SLOW_RESULT, "got %#lx\n", client.hr);
    hr = pCoGetCancelObject(client.tid, &IID_ICancelMethodCalls, (void **)&cancel);
    ok(hr == S_OK && cancel == &scope, "after the call got %#lx, %p (the thread's own: %p)\n", hr, cancel, &scope);
    client.scope = NULL;

    /* The quick method sees a call context, and no cancel. */
    client_call(&client, CALL_QUICK);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == S_FALSE, "got %#lx\n", client.hr);
    ok(server.quick_call_context == S_OK, "got %#lx\n", server.quick_call_context);
    ok(server.quick_test_cancel == RPC_S_CALLPENDING, "got %#lx\n", server.quick_test_cancel);

    stop_client(&client);
    stop_host(&host);
    winetest_pop_context();
}

static void test_cancel_call(DWORD client_model, DWORD host_model, BOOL server_cooperates)
{
    struct client client;
    struct host host;
    DWORD start, elapsed;
    HRESULT hr;

    winetest_push_context("%s client, %s object%s", model_name(client_model), model_name(host_model),
                          server_cooperates ? "" : ", server ignores the cancel");
    start_host(&host, host_model);
    start_client(&client, &host, client_model, TRUE);

    reset_server(server_cooperates);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    start = GetTickCount();
    hr = pCoCancelCall(client.tid, 0);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(client_wait(&client, 2000), "the caller was not released within 2 s\n");
    elapsed = GetTickCount() - start;
    ok(client.hr == RPC_E_CALL_CANCELED, "got %#lx\n", client.hr);
    trace("released %lu ms after CoCancelCall\n", elapsed);

    /* The server saw the cancel (it may run on, as on Windows). */
    if (!server_cooperates) SetEvent(server.release);
    ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");
    ok(server.test_cancel_first == RPC_S_CALLPENDING, "server first saw %#lx\n", server.test_cancel_first);
    if (server_cooperates)
        ok(server.test_cancel_last == RPC_E_CALL_CANCELED, "server last saw %#lx\n", server.test_cancel_last);

    hr = pCoCancelCall(client.tid, 0);
    ok(hr == E_NOINTERFACE, "got %#lx\n", hr);

    /* The next call on the same proxy gets its own result. */
    client_call(&client, CALL_QUICK);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == S_FALSE, "got %#lx\n", client.hr);
    ok(server.quick_test_cancel == RPC_S_CALLPENDING, "got %#lx\n", server.quick_test_cancel);

    stop_client(&client);
    stop_host(&host);
    winetest_pop_context();
}

/*
 * A proxy passed as an [in] argument is marshaled after the request's
 * buffer is made; once the proxy has given away its public references
 * that marshaling makes a call of its own (IRemUnknown::RemAddRef) before
 * the request is sent.  The cancel still reaches the server every time.
 */
static void test_cancel_with_proxy_argument(DWORD client_model)
{
    struct client client;
    struct host host;
    unsigned int i, seen = 0;

    winetest_push_context("%s client, proxy argument", model_name(client_model));
    start_host(&host, client_model == COINIT_MULTITHREADED ? COINIT_APARTMENTTHREADED : COINIT_MULTITHREADED);
    start_client(&client, &host, client_model, TRUE);
    for (i = 0; i < 12; i++)
    {
        reset_server(TRUE);
        client_call(&client, CALL_DISP_SLOW_PROXY);
        if (WaitForSingleObject(server.in_call, 10000))
        {
            if (client_wait(&client, 0)) trace("call %u got %#lx\n", i, client.hr);
            break;
        }
        ok(pCoCancelCall(client.tid, 0) == S_OK, "CoCancelCall failed\n");
        ok(client_wait(&client, 10000), "the call did not return\n");
        ok(client.hr == RPC_E_CALL_CANCELED, "call %u got %#lx\n", i, client.hr);
        ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");
        if (server.test_cancel_last == RPC_E_CALL_CANCELED) seen++;
        else trace("call %u: the server saw %#lx\n", i, server.test_cancel_last);
    }
    ok(i == 12, "call %u did not reach the server\n", i);
    ok(seen == i, "the server saw %u of %u cancels\n", seen, i);
    stop_client(&client);
    stop_host(&host);
    winetest_pop_context();
}

/*
 * A thread that was released from a call by a cancel and then leaves its
 * apartment without another call, while the server runs on: CoUninitialize
 * returns, and the server's late reply harms nobody.  (That cocancel has
 * then finished with the call is checked by its own tests.)
 */
static void test_uninitialize_after_cancel(void)
{
    struct client client;
    struct host host;

    winetest_push_context("STA client, MTA object, CoUninitialize after a cancel");
    start_host(&host, COINIT_MULTITHREADED);
    start_client(&client, &host, COINIT_APARTMENTTHREADED, TRUE);
    /* No call at all after the cancel: the proxy is left to the host's CoUninitialize. */
    client.keep_proxy = TRUE;
    /* The server ignores the cancel and runs on. */
    reset_server(FALSE);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    ok(pCoCancelCall(client.tid, 0) == S_OK, "CoCancelCall failed\n");
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == RPC_E_CALL_CANCELED, "got %#lx\n", client.hr);
    stop_client(&client);
    SetEvent(server.release);
    ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");
    stop_host(&host);
    winetest_pop_context();
}

static void test_cancel_timeout(void)
{
    struct client client;
    struct host host;
    DWORD start, elapsed;
    HRESULT hr;

    start_host(&host, COINIT_APARTMENTTHREADED);
    start_client(&client, &host, COINIT_MULTITHREADED, TRUE);

    /* The server finishes within the grace period: the caller gets its result. */
    reset_server(TRUE);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    hr = pCoCancelCall(client.tid, 5);
    ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);
    ok(client_wait(&client, 5000), "the call did not return\n");
    ok(client.hr == ABORT_RESULT, "got %#lx\n", client.hr);

    /* It does not: the caller is released when the grace period ends. */
    reset_server(FALSE);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    start = GetTickCount();
    hr = pCoCancelCall(client.tid, 1);
    elapsed = GetTickCount() - start;
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(elapsed >= 900 && elapsed < 3000, "CoCancelCall took %lu ms\n", elapsed);
    ok(client_wait(&client, 2000), "the caller was not released\n");
    ok(client.hr == RPC_E_CALL_CANCELED, "got %#lx\n", client.hr);
    SetEvent(server.release);
    ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");

    stop_client(&client);
    stop_host(&host);
}

/*
 * The handles open in this process, counted one by one (GetProcessHandleCount
 * answers 0 in Wine 8.0): a count does not depend on which values a new
 * handle gets.
 */
static unsigned int count_handles(void)
{
    unsigned int count = 0;
    ULONG_PTR value;
    DWORD flags;

    for (value = 4; value < 0x10000; value += 4)
        if (GetHandleInformation((HANDLE)value, &flags)) count++;
    return count;
}

/* Many cancelled calls leave no threads or handles behind. */
static void test_repeated_cancel(DWORD client_model, DWORD host_model)
{
    struct client client;
    struct host host;
    unsigned int handles_before, handles_after;
    unsigned int i, released = 0;

    winetest_push_context("%s client, %s object", model_name(client_model), model_name(host_model));
    start_host(&host, host_model);
    start_client(&client, &host, client_model, TRUE);

    /* Warm up, so that lazily created per-process state is not counted. */
    for (i = 0; i < 5; i++)
    {
        reset_server(TRUE);
        if (!begin_slow_call(&client)) break;
        pCoCancelCall(client.tid, 0);
        client_wait(&client, 5000);
        WaitForSingleObject(server.done, 5000);
    }
    handles_before = count_handles();

    for (i = 0; i < 200; i++)
    {
        reset_server(TRUE);
        if (!begin_slow_call(&client)) break;
        pCoCancelCall(client.tid, 0);
        if (client_wait(&client, 5000) && client.hr == RPC_E_CALL_CANCELED) released++;
        WaitForSingleObject(server.done, 5000);
    }
    ok(released == 200, "%u of 200 calls were released by the cancel\n", released);
    client_call(&client, CALL_QUICK);
    ok(client_wait(&client, 10000) && client.hr == S_FALSE, "got %#lx\n", client.hr);

    /* A handle leaked a cancel would show as 200 more; a few come and go with the pools. */
    Sleep(100);
    handles_after = count_handles();
    ok(handles_after <= handles_before + 16, "handles grew from %u to %u over 200 cancels\n",
       handles_before, handles_after);
    trace("handles: %u before, %u after 200 cancels\n", handles_before, handles_after);

    stop_client(&client);
    stop_host(&host);
    winetest_pop_context();
}

static HANDLE open_run_event(const WCHAR *name)
{
    WCHAR full[96];

    wcscpy(full, name);
    wcscat(full, run_tag);
    return CreateEventW(NULL, TRUE, FALSE, full);
}

static void open_server_events(void)
{
    server.in_call = open_run_event(L"cocancel_test_in_call");
    server.release = open_run_event(L"cocancel_test_release");
    server.done = open_run_event(L"cocancel_test_done");
    server.ignore = open_run_event(L"cocancel_test_ignore");
}

/* The local server: runs until the client lets it go (or 60 s pass). */
static void run_local_server(const CLSID *clsid)
{
    HANDLE quit = open_run_event(L"cocancel_test_quit");
    DWORD cookie;
    HRESULT hr;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    hr = CoRegisterClassObject(clsid, (IUnknown *)&factory, CLSCTX_LOCAL_SERVER,
                               REGCLS_MULTIPLEUSE, &cookie);
    ok(hr == S_OK, "CoRegisterClassObject got %#lx\n", hr);
    WaitForSingleObject(quit, 60000);
    CoRevokeClassObject(cookie);
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
    wcscat(command, L"\" cancelcall");
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

/* A host whose object lives in a local server process started by COM. */
static BOOL start_remote_host(struct host *host, const CLSID *clsid)
{
    IClassFactory *proxy;
    HRESULT hr;

    memset(host, 0, sizeof(*host));
    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    hr = CoGetClassObject(clsid, CLSCTX_LOCAL_SERVER, NULL, &IID_IClassFactory, (void **)&proxy);
    ok(hr == S_OK, "CoGetClassObject got %#lx\n", hr);
    if (FAILED(hr))
    {
        CoUninitialize();
        return FALSE;
    }
    /* Hand the proxy to the client thread's apartment. */
    hr = CoMarshalInterThreadInterfaceInStream(&IID_IClassFactory, (IUnknown *)proxy, &host->stream);
    ok(hr == S_OK, "marshal got %#lx\n", hr);
    IClassFactory_Release(proxy);
    return SUCCEEDED(hr);
}

static void test_cross_process(DWORD client_model, BOOL server_cooperates)
{
    struct client client;
    struct host host;
    DWORD start;
    HRESULT hr;

    winetest_push_context("%s client, local server%s", model_name(client_model),
                          server_cooperates ? "" : " ignoring the cancel");
    if (!start_remote_host(&host, &CLSID_CancelServer))
    {
        winetest_pop_context();
        return;
    }
    start_client(&client, &host, client_model, TRUE);

    reset_server(TRUE);
    if (server_cooperates) ResetEvent(server.ignore);
    else SetEvent(server.ignore);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    start = GetTickCount();
    hr = pCoCancelCall(client.tid, 0);
    ok(hr == S_OK, "got %#lx\n", hr);
    ok(client_wait(&client, 2000), "the caller was not released within 2 s\n");
    ok(client.hr == RPC_E_CALL_CANCELED, "got %#lx\n", client.hr);
    trace("released %lu ms after CoCancelCall\n", GetTickCount() - start);
    if (!server_cooperates) SetEvent(server.release);
    ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");

    /* The next call gets its own result, and the server saw the cancel. */
    client_call(&client, CALL_QUICK);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == S_FALSE, "got %#lx\n", client.hr);
    client_call(&client, CALL_QUERY);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == RPC_E_CALL_CANCELED, "the server's CoTestCancel last said %#lx\n", client.hr);

    stop_client(&client);
    CoUninitialize();
    winetest_pop_context();
}

/* Not an apartment type (COINIT_MULTITHREADED is 0): the object lives in the local server. */
#define LOCAL_SERVER 0xffffffffu

/* A cancelled call with BSTRs, an [in, out] argument and an interface
 * pointer; the next call gets its own reply, never the abandoned one. */
static void test_cancel_parameters(DWORD client_model, DWORD host_model)
{
    struct client client;
    struct host host;

    winetest_push_context("%s client, %s object", model_name(client_model),
                          host_model == LOCAL_SERVER ? "local server" : model_name(host_model));
    if (host_model == LOCAL_SERVER)
    {
        if (!start_remote_host(&host, &CLSID_CancelServer))
        {
            winetest_pop_context();
            return;
        }
    }
    else start_host(&host, host_model);
    start_client(&client, &host, client_model, TRUE);

    error_log_calls = 0;
    client_call(&client, CALL_DISP_ECHO);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == S_OK, "got %#lx\n", client.hr);
    ok(!wcscmp(client.echo, L"echo:ping"), "got %s\n", wine_dbgstr_w(client.echo));
    ok(!wcscmp(client.inout, L"inout:pong"), "got %s\n", wine_dbgstr_w(client.inout));
    ok(error_log_calls == 1, "the server called the error log %ld times\n", error_log_calls);

    reset_server(FALSE);
    client_call(&client, CALL_DISP_SLOW);
    ok(WaitForSingleObject(server.in_call, 10000) == WAIT_OBJECT_0, "the call did not reach the server\n");
    ok(pCoCancelCall(client.tid, 0) == S_OK, "CoCancelCall failed\n");
    ok(client_wait(&client, 2000), "the caller was not released within 2 s\n");
    ok(client.hr == RPC_E_CALL_CANCELED, "got %#lx\n", client.hr);
    ok(!client.echo[0], "got result %s\n", wine_dbgstr_w(client.echo));
    SetEvent(server.release);
    ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");

    client_call(&client, CALL_DISP_ECHO);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == S_OK, "got %#lx\n", client.hr);
    ok(!wcscmp(client.echo, L"echo:ping"), "got %s\n", wine_dbgstr_w(client.echo));
    ok(!wcscmp(client.inout, L"inout:pong"), "got %s\n", wine_dbgstr_w(client.inout));
    ok(error_log_calls == 2, "the server called the error log %ld times\n", error_log_calls);

    stop_client(&client);
    if (host_model == LOCAL_SERVER) CoUninitialize();
    else stop_host(&host);
    winetest_pop_context();
}

/* PENDINGMSG_CANCELCALL from the message filter of an STA caller cancels the call. */
static void test_message_filter_cancel(DWORD host_model)
{
    struct client client;
    struct host host;
    DWORD start;

    winetest_push_context("STA client, %s object", model_name(host_model));
    start_host(&host, host_model);
    /* Cancellation is not enabled: the filter cancels all the same. */
    start_client_ex(&client, &host, COINIT_APARTMENTTHREADED, FALSE, TRUE);

    filter_cancel = 0;
    filter_pending_calls = 0;
    /* The server does not look at the cancel: the caller is released all the same. */
    reset_server(FALSE);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    /* A message for the waiting thread makes COM ask its filter. */
    PostThreadMessageW(client.tid, WM_USER, 0, 0);
    ok(!client_wait(&client, 200), "the call returned early\n");
    ok(filter_pending_calls > 0, "MessagePending was not called\n");
    filter_cancel = 1;
    start = GetTickCount();
    PostThreadMessageW(client.tid, WM_USER, 0, 0);
    ok(client_wait(&client, 2000), "the caller was not released within 2 s\n");
    ok(client.hr == RPC_E_CALL_CANCELED, "got %#lx\n", client.hr);
    trace("released %lu ms after the filter cancelled\n", GetTickCount() - start);
    filter_cancel = 0;
    SetEvent(server.release);
    ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");

    client_call(&client, CALL_QUICK);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == S_FALSE, "got %#lx\n", client.hr);

    stop_client(&client);
    stop_host(&host);
    winetest_pop_context();
}

/*
 * A handler that registers another filter during a call gets the previous
 * one back from CoRegisterMessageFilter, and may register it again later:
 * that object must stay valid and act as the program's first filter after
 * the call, and the filter registered during the call stays registered.
 */
static void test_message_filter_swap(void)
{
    struct client client;
    struct host host;
    DWORD answer;
    LONG before;

    start_host(&host, COINIT_MULTITHREADED);
    start_client_ex(&client, &host, COINIT_APARTMENTTHREADED, TRUE, TRUE);
    client.scribble = TRUE;

    filter_cancel = 0;
    swapped_out = NULL;
    other_pending_calls = 0;
    filter_swap = 1;
    reset_server(FALSE);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    PostThreadMessageW(client.tid, WM_USER, 0, 0);
    ok(!client_wait(&client, 200), "the call returned early\n");
    ok(!filter_swap, "MessagePending was not called\n");
    SetEvent(server.release);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == SLOW_RESULT, "got %#lx\n", client.hr);
    ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");

    ok(swapped_out != NULL, "no previous filter\n");
    if (swapped_out)
    {
        /* The call's frames are gone (the client overwrote its stack). */
        before = filter_pending_calls;
        answer = IMessageFilter_MessagePending(swapped_out, NULL, 0, PENDINGTYPE_TOPLEVEL);
        ok(answer == PENDINGMSG_WAITDEFPROCESS, "got %lu\n", answer);
        ok(filter_pending_calls == before + 1, "the program's filter was not asked\n");
        IMessageFilter_Release(swapped_out);
    }

    /* The filter registered during the call is the apartment's filter now. */
    reset_server(FALSE);
    ok(begin_slow_call(&client), "the call did not reach the server\n");
    PostThreadMessageW(client.tid, WM_USER, 0, 0);
    ok(!client_wait(&client, 200), "the call returned early\n");
    ok(other_pending_calls > 0, "the filter registered during the call was not asked\n");
    SetEvent(server.release);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");

    stop_client(&client);
    stop_host(&host);
}

/*
 * An STA host whose message filter rejects incoming calls while asked to,
 * and which reports, between calls, what CoGetCallContext and CoTestCancel
 * answer on its thread.
 */
static LONG reject_calls;

static DWORD WINAPI rejecting_HandleInComingCall(IMessageFilter *iface, DWORD type, HTASK caller, DWORD ticks,
                                                 INTERFACEINFO *info)
{
    return reject_calls ? SERVERCALL_REJECTED : SERVERCALL_ISHANDLED;
}

static const IMessageFilterVtbl rejecting_filter_vtbl =
{
    filter_QueryInterface,
    filter_AddRef,
    filter_Release,
    rejecting_HandleInComingCall,
    filter_RetryRejectedCall,
    other_filter_MessagePending,
};

static IMessageFilter rejecting_filter = { &rejecting_filter_vtbl };

struct probe_host
{
    struct host host;
    HANDLE probe, probed;
    HRESULT context_hr, test_hr;
};

static DWORD WINAPI probe_host_thread(void *arg)
{
    struct probe_host *probe = arg;
    HANDLE handles[2] = { probe->host.quit, probe->probe };
    ICancelMethodCalls *cancel;
    DWORD ret;
    MSG msg;

    CoInitializeEx(NULL, COINIT_APARTMENTTHREADED);
    CoRegisterMessageFilter(&rejecting_filter, NULL);
    CoMarshalInterThreadInterfaceInStream(&IID_IClassFactory, (IUnknown *)&factory, &probe->host.stream);
    SetEvent(probe->host.ready);
    while ((ret = MsgWaitForMultipleObjects(2, handles, FALSE, INFINITE, QS_ALLINPUT)) != WAIT_OBJECT_0)
    {
        if (ret == WAIT_OBJECT_0 + 1)
        {
            probe->context_hr = CoGetCallContext(&IID_ICancelMethodCalls, (void **)&cancel);
            if (SUCCEEDED(probe->context_hr)) ICancelMethodCalls_Release(cancel);
            probe->test_hr = pCoTestCancel();
            SetEvent(probe->probed);
        }
        while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
    }
    CoRegisterMessageFilter(NULL, NULL);
    CoUninitialize();
    return 0;
}

static void probe_between_calls(struct probe_host *probe, const char *after)
{
    probe->context_hr = probe->test_hr = 0xdeadbeef;
    SetEvent(probe->probe);
    ok(WaitForSingleObject(probe->probed, 10000) == WAIT_OBJECT_0, "the host did not answer\n");
    ok(probe->context_hr == RPC_E_CALL_COMPLETE, "CoGetCallContext after %s got %#lx\n", after, probe->context_hr);
    ok(probe->test_hr == RPC_E_CALL_COMPLETE, "CoTestCancel after %s got %#lx\n", after, probe->test_hr);
}

/* A call Wine ends without a reply (rejected by the filter, or faulted) leaves no call context behind. */
static void test_no_reply_leaves_no_context(void)
{
    struct probe_host probe;
    struct client client;

    probe.host.model = COINIT_APARTMENTTHREADED;
    probe.host.ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    probe.host.quit = CreateEventW(NULL, TRUE, FALSE, NULL);
    probe.probe = CreateEventW(NULL, FALSE, FALSE, NULL);
    probe.probed = CreateEventW(NULL, FALSE, FALSE, NULL);
    probe.host.thread = CreateThread(NULL, 0, probe_host_thread, &probe, 0, NULL);
    ok(WaitForSingleObject(probe.host.ready, 10000) == WAIT_OBJECT_0, "host did not start\n");
    start_client(&client, &probe.host, COINIT_MULTITHREADED, TRUE);

    probe_between_calls(&probe, "no call");
    client_call(&client, CALL_QUICK);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == S_FALSE, "got %#lx\n", client.hr);
    probe_between_calls(&probe, "a call");

    reject_calls = 1;
    client_call(&client, CALL_QUICK);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == RPC_E_CALL_REJECTED, "a rejected call got %#lx\n", client.hr);
    reject_calls = 0;
    probe_between_calls(&probe, "a rejected call");

    client_call(&client, CALL_FAULT);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(FAILED(client.hr), "a faulting call got %#lx\n", client.hr);
    probe_between_calls(&probe, "a faulted call");

    /* And calls go on as before. */
    client_call(&client, CALL_QUICK);
    ok(client_wait(&client, 10000), "the call did not return\n");
    ok(client.hr == S_FALSE, "got %#lx\n", client.hr);
    ok(server.quick_call_context == S_OK, "CoGetCallContext in the method got %#lx\n", server.quick_call_context);
    probe_between_calls(&probe, "a call after them");

    stop_client(&client);
    stop_host(&probe.host);
    CloseHandle(probe.probe);
    CloseHandle(probe.probed);
}

static void test_call_context_outside(void)
{
    void *cancel;
    HRESULT hr;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    hr = CoGetCallContext(&IID_ICancelMethodCalls, &cancel);
    ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);
    hr = pCoTestCancel();
    ok(hr == RPC_E_CALL_COMPLETE, "got %#lx\n", hr);
    CoUninitialize();
}

/*
 * The local server process dies in the middle of a synchronous call: the
 * caller gets an RPC error within a few seconds (never the method's own
 * result), and later calls on the proxy fail cleanly instead of hanging.
 * Each run starts a server of its own class (Wine keeps a dead server's
 * registration).
 */
static void test_server_dies(DWORD client_model, BOOL enable)
{
    struct client client;
    struct host host;
    WCHAR args[96];
    CLSID clsid;

    winetest_push_context("%s client%s, local server killed mid-call", model_name(client_model),
                          enable ? " with cancellation enabled" : "");
    CoCreateGuid(&clsid);
    wcscpy(args, L" dying ");
    wcscat(args, run_tag);
    wcscat(args, L" ");
    StringFromGUID2(&clsid, args + wcslen(args), 40);
    if (!register_local_server(&clsid, args))
    {
        skip("cannot register the local server\n");
        winetest_pop_context();
        return;
    }
    if (start_remote_host(&host, &clsid))
    {
        start_client(&client, &host, client_model, enable);
        reset_server(FALSE);
        client_call(&client, CALL_DIE);
        ok(WaitForSingleObject(server.in_call, 10000) == WAIT_OBJECT_0, "the call did not reach the server\n");
        ok(client_wait(&client, 10000), "the caller was not released within 10 s of the server's death\n");
        ok(FAILED(client.hr) && client.hr != SLOW_RESULT, "got %#lx\n", client.hr);
        trace("the call ended with %#lx after %lu ms\n", client.hr, client.elapsed);

        /* The cancel API has nothing to act on any more. */
        ok(pCoCancelCall(client.tid, 0) == E_NOINTERFACE, "CoCancelCall after the call succeeded\n");

        client_call(&client, CALL_QUICK);
        ok(client_wait(&client, 10000), "a call to the dead server hung\n");
        ok(FAILED(client.hr), "a call to the dead server got %#lx\n", client.hr);
        ok(client.elapsed < 10000, "the failure took %lu ms\n", client.elapsed);
        stop_client(&client);
        CoUninitialize();
    }
    unregister_local_server(&clsid);
    winetest_pop_context();
}

struct hammer
{
    DWORD tid;
    HANDLE stop;
    LONG calls, unexpected;
    HRESULT last_unexpected;
};

/* Cancels and looks up the calls of thread tid until told to stop. */
static DWORD WINAPI hammer_thread(void *arg)
{
    struct hammer *hammer = arg;
    ICancelMethodCalls *cancel;
    HRESULT hr;

    while (WaitForSingleObject(hammer->stop, 0) == WAIT_TIMEOUT)
    {
        hr = pCoCancelCall(hammer->tid, 0);
        /* CO_E_CANCEL_DISABLED: the proxy's release as the thread ends,
         * made after it disabled cancellation; RPC_E_CALL_CANCELED: a call
         * this thread cancelled already. */
        if (hr != S_OK && hr != E_NOINTERFACE && hr != RPC_E_CALL_COMPLETE && hr != CO_E_CANCEL_DISABLED &&
            hr != RPC_E_CALL_CANCELED)
        {
            hammer->last_unexpected = hr;
            InterlockedIncrement(&hammer->unexpected);
        }
        if (pCoGetCancelObject(hammer->tid, &IID_ICancelMethodCalls, (void **)&cancel) == S_OK)
        {
            hr = ICancelMethodCalls_TestCancel(cancel);
            if (hr != RPC_S_CALLPENDING && hr != RPC_E_CALL_CANCELED && hr != RPC_E_CALL_COMPLETE)
            {
                hammer->last_unexpected = hr;
                InterlockedIncrement(&hammer->unexpected);
            }
            ICancelMethodCalls_Release(cancel);
        }
        InterlockedIncrement(&hammer->calls);
    }
    return 0;
}

/*
 * A thread is released by a cancel and exits at once, uninitializing COM,
 * while another thread keeps cancelling and looking up its calls, and a third
 * holds the call's cancel object: nothing crashes or hangs, every answer is
 * one the API documents, and the thread's id stops finding anything.
 */
static void test_thread_exit_during_cancel(void)
{
    ICancelMethodCalls *cancel;
    struct hammer hammer;
    struct client client;
    struct host host;
    HANDLE thread;
    unsigned int i, released = 0, exited = 0;
    HRESULT hr;

    for (i = 0; i < 21; i++)
    {
        /* The exiting thread releases its proxy, a call the object's
         * apartment must serve: an STA host only can once its server
         * method has stopped (on the cancel), an MTA host at any time.
         * Every third thread ends while an STA still runs the abandoned
         * call (and leaves its proxy to the host). */
        BOOL sta_host = i % 3 != 0, busy = i % 3 == 2;

        start_host(&host, sta_host ? COINIT_APARTMENTTHREADED : COINIT_MULTITHREADED);
        start_client(&client, &host, sta_host ? COINIT_MULTITHREADED : COINIT_APARTMENTTHREADED, TRUE);
        client.exit_after_call = TRUE;
        client.keep_proxy = busy;
        reset_server(sta_host && !busy);
        if (!begin_slow_call(&client))
        {
            ok(0, "the call did not reach the server\n");
            SetEvent(server.release);
            stop_client(&client);
            stop_host(&host);
            break;
        }
        cancel = NULL;
        hr = pCoGetCancelObject(client.tid, &IID_ICancelMethodCalls, (void **)&cancel);
        ok(hr == S_OK, "CoGetCancelObject got %#lx\n", hr);

        memset(&hammer, 0, sizeof(hammer));
        hammer.tid = client.tid;
        hammer.stop = CreateEventW(NULL, TRUE, FALSE, NULL);
        thread = CreateThread(NULL, 0, hammer_thread, &hammer, 0, NULL);
        /* Let the hammer start before the call goes. */
        while (!hammer.calls && WaitForSingleObject(thread, 1) == WAIT_TIMEOUT) {}

        if (client_wait(&client, 5000) && client.hr == RPC_E_CALL_CANCELED) released++;
        if (!WaitForSingleObject(client.thread, 5000)) exited++;
        /* The id of the exited thread finds nothing. */
        hr = pCoCancelCall(client.tid, 0);
        ok(hr == E_NOINTERFACE, "CoCancelCall on the exited thread got %#lx\n", hr);
        SetEvent(hammer.stop);
        ok(!WaitForSingleObject(thread, 5000), "the cancelling thread hung\n");
        ok(!hammer.unexpected, "%ld unexpected answers, the last %#lx\n", hammer.unexpected, hammer.last_unexpected);
        CloseHandle(thread);
        CloseHandle(hammer.stop);

        /* The object of the finished call outlives its thread. */
        if (cancel)
        {
            hr = ICancelMethodCalls_TestCancel(cancel);
            ok(hr == RPC_E_CALL_CANCELED, "TestCancel after the thread exited got %#lx\n", hr);
            hr = ICancelMethodCalls_Cancel(cancel, 0);
            /* Cancelled stays cancelled: asking again answers "already cancelled". */
            ok(hr == RPC_E_CALL_CANCELED, "Cancel after the thread exited got %#lx\n", hr);
            ICancelMethodCalls_Release(cancel);
        }

        SetEvent(server.release);
        ok(WaitForSingleObject(server.done, 10000) == WAIT_OBJECT_0, "the server method did not end\n");
        CloseHandle(client.thread);
        CloseHandle(client.go);
        CloseHandle(client.finished);
        stop_host(&host);
    }
    ok(released == i, "%u of %u calls were released by the cancel\n", released, i);
    ok(exited == i, "%u of %u threads exited\n", exited, i);
}

START_TEST(cancelcall)
{
    HMODULE ole32 = GetModuleHandleA("ole32.dll");
    WCHAR server_args[64];
    BOOL available;
    char **argv;
    int argc = winetest_get_mainargs(&argv);

    pCoCancelCall = (void *)GetProcAddress(ole32, "CoCancelCall");
    pCoTestCancel = (void *)GetProcAddress(ole32, "CoTestCancel");
    pCoGetCancelObject = (void *)GetProcAddress(ole32, "CoGetCancelObject");
    pCoSetCancelObject = (void *)GetProcAddress(ole32, "CoSetCancelObject");
    available = pCoCancelCall && pCoTestCancel && pCoGetCancelObject && pCoSetCancelObject;
    /* Windows has it since Windows 2000; stock Wine's ole32 exports none of it. */
    todo_wine_if(!available) ok(available, "the call-cancellation API is not available\n");
    if (!available)
    {
        skip("the call-cancellation API is not available\n");
        return;
    }
    /* The local servers: "server <tag>" and "dying <tag> <class>" (COM adds -Embedding). */
    if (argc > 3 && (!_stricmp(argv[2], "server") || !_stricmp(argv[2], "dying")))
    {
        WCHAR text[64];
        CLSID clsid;

        MultiByteToWideChar(CP_ACP, 0, argv[3], -1, run_tag, ARRAY_SIZE(run_tag));
        open_server_events();
        if (!_stricmp(argv[2], "server"))
        {
            server.poll_cancel = TRUE;
            if (SUCCEEDED(CLSIDFromString(run_tag, &clsid))) run_local_server(&clsid);
            return;
        }
        doomed_server = TRUE;
        if (argc > 4) MultiByteToWideChar(CP_ACP, 0, argv[4], -1, text, ARRAY_SIZE(text));
        if (argc > 4 && SUCCEEDED(CLSIDFromString(text, &clsid))) run_local_server(&clsid);
        return;
    }
    CoCreateGuid(&CLSID_CancelServer);
    StringFromGUID2(&CLSID_CancelServer, run_tag, ARRAY_SIZE(run_tag));
    open_server_events();

    ok(wait_for_interception(), "proxied calls never got a cancel object\n");
    test_call_context_outside();
    test_cancel_object_during_call(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED);
    test_cancel_object_during_call(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED);
    test_cancel_object_during_call(COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED);
    test_cancel_call(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED, FALSE);
    test_cancel_call(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED, TRUE);
    test_cancel_call(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED, FALSE);
    test_cancel_call(COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED, TRUE);
    test_cancel_call(COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED, FALSE);
    test_cancel_timeout();
    test_cancel_with_proxy_argument(COINIT_MULTITHREADED);
    test_cancel_with_proxy_argument(COINIT_APARTMENTTHREADED);
    test_uninitialize_after_cancel();
    test_repeated_cancel(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED);
    test_repeated_cancel(COINIT_APARTMENTTHREADED, COINIT_APARTMENTTHREADED);
    test_repeated_cancel(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED);
    test_cancel_parameters(COINIT_MULTITHREADED, COINIT_APARTMENTTHREADED);
    test_cancel_parameters(COINIT_APARTMENTTHREADED, COINIT_MULTITHREADED);
    test_message_filter_cancel(COINIT_MULTITHREADED);
    test_message_filter_cancel(COINIT_APARTMENTTHREADED);
    test_message_filter_swap();
    test_no_reply_leaves_no_context();

    test_thread_exit_during_cancel();

    wcscpy(server_args, L" server ");
    wcscat(server_args, run_tag);
    if (register_local_server(&CLSID_CancelServer, server_args))
    {
        HANDLE quit = open_run_event(L"cocancel_test_quit");

        test_cross_process(COINIT_MULTITHREADED, TRUE);
        test_cross_process(COINIT_APARTMENTTHREADED, TRUE);
        test_cross_process(COINIT_MULTITHREADED, FALSE);
        test_cross_process(COINIT_APARTMENTTHREADED, FALSE);
        test_cancel_parameters(COINIT_MULTITHREADED, LOCAL_SERVER);
        test_cancel_parameters(COINIT_APARTMENTTHREADED, LOCAL_SERVER);
        test_server_dies(COINIT_MULTITHREADED, TRUE);
        test_server_dies(COINIT_APARTMENTTHREADED, TRUE);
        test_server_dies(COINIT_MULTITHREADED, FALSE);
        SetEvent(quit);
        CloseHandle(quit);
        unregister_local_server(&CLSID_CancelServer);
    }
    else skip("cannot register the local server\n");

    CloseHandle(server.in_call);
    CloseHandle(server.release);
    CloseHandle(server.done);
}
