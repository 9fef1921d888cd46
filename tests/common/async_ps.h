/*
 * What the programs using the conformance test's interfaces
 * (dlls/ole32/tests/asynccall_ps.idl) share - the benchmark, the demo and the
 * stress test: proxy/stub registration, the server object, a thread hosting
 * it, and call-object creation.  The conformance test carries its own copy,
 * as Wine's tests must stand alone.
 *
 * A program defines obj_Add and obj_Slow, the two methods it serves; every
 * other method answers E_NOTIMPL.
 *
 * Wine's NdrDllGetClassObject fills the zeroed slots of the async stub
 * vtable, which widl emits const, so a writable copy of the tables is
 * registered.  Include once per program, after asynccall_ps.h.
 */

#ifndef COCANCEL_ASYNC_PS_H
#define COCANCEL_ASYNC_PS_H

extern const ExtendedProxyFileInfo asynccall_ps_ProxyFileInfo;

static const CLSID CLSID_AsyncTestPS = {0x2c3e5a1f, 0x7c4b, 0x4e8e, {0x9a, 0x51, 0x1f, 0x0d, 0x6b, 0x2a, 0x9c, 0x01}};

static CStdPSFactoryBuffer ps_factory;
static ProxyFileInfo ps_file;
static CInterfaceStubVtbl ps_stubs[3];
static const CInterfaceStubVtbl *ps_stub_list[4];
static const ProxyFileInfo *ps_files[2];
static IPSFactoryBuffer *ps;

ULONG STDMETHODCALLTYPE CStdStubBuffer_Release(IRpcStubBuffer *iface)
{
    return NdrCStdStubBuffer_Release(iface, (IPSFactoryBuffer *)&ps_factory);
}

static void init_ps(void)
{
    unsigned int i;

    memcpy(&ps_file, &asynccall_ps_ProxyFileInfo, sizeof(ps_file));
    for (i = 0; i < ps_file.TableSize && i < ARRAYSIZE(ps_stubs); i++)
    {
        memcpy(&ps_stubs[i], ps_file.pStubVtblList[i], sizeof(ps_stubs[i]));
        ps_stub_list[i] = &ps_stubs[i];
    }
    *(const PCInterfaceStubVtblList **)&ps_file.pStubVtblList = (const PCInterfaceStubVtblList *)ps_stub_list;
    ps_files[0] = &ps_file;
    NdrDllGetClassObject(&CLSID_AsyncTestPS, &IID_IPSFactoryBuffer, (void **)&ps, ps_files, &CLSID_AsyncTestPS,
                         &ps_factory);
}

static DWORD register_ps(void)
{
    DWORD cookie = 0;

    CoRegisterClassObject(&CLSID_AsyncTestPS, (IUnknown *)ps, CLSCTX_INPROC_SERVER, REGCLS_MULTIPLEUSE, &cookie);
    CoRegisterPSClsid(&IID_ICcAsyncTest, &CLSID_AsyncTestPS);
    CoRegisterPSClsid(&IID_AsyncICcAsyncTest, &CLSID_AsyncTestPS);
    return cookie;
}

static HRESULT WINAPI obj_Add(ICcAsyncTest *iface, int a, int b, int *sum);
static HRESULT WINAPI obj_Slow(ICcAsyncTest *iface, DWORD ms, DWORD *seen);

static HRESULT WINAPI obj_QueryInterface(ICcAsyncTest *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_ICcAsyncTest))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI obj_AddRef(ICcAsyncTest *iface) { return 2; }
static ULONG WINAPI obj_Release(ICcAsyncTest *iface) { return 1; }

static HRESULT WINAPI obj_NotImpl(void)
{
    return E_NOTIMPL;
}

static const ICcAsyncTestVtbl obj_vtbl =
{
    obj_QueryInterface, obj_AddRef, obj_Release, obj_Add, obj_Slow,
    (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl,
    (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl, (void *)obj_NotImpl,
};

static ICcAsyncTest obj = { &obj_vtbl };

/* The class object of obj, for a local server. */
static HRESULT WINAPI obj_factory_QueryInterface(IClassFactory *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IClassFactory))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI obj_factory_AddRef(IClassFactory *iface) { return 2; }
static ULONG WINAPI obj_factory_Release(IClassFactory *iface) { return 1; }

static HRESULT WINAPI obj_factory_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    *ppv = NULL;
    if (outer) return CLASS_E_NOAGGREGATION;
    return ICcAsyncTest_QueryInterface(&obj, riid, ppv);
}

static HRESULT WINAPI obj_factory_LockServer(IClassFactory *iface, BOOL lock) { return S_OK; }

static const IClassFactoryVtbl obj_factory_vtbl =
{
    obj_factory_QueryInterface, obj_factory_AddRef, obj_factory_Release, obj_factory_CreateInstance,
    obj_factory_LockServer,
};

static IClassFactory obj_factory = { &obj_factory_vtbl };

/* Registers this program as the local server of clsid, started as "<exe><args>". */
static inline BOOL register_local_server(const CLSID *clsid, const WCHAR *args)
{
    WCHAR key[128] = L"CLSID\\", exe[MAX_PATH], command[MAX_PATH + 128] = L"\"";
    HKEY hkey;
    LONG ret;

    GetModuleFileNameW(NULL, exe, MAX_PATH);
    wcscat(command, exe);
    wcscat(command, L"\"");
    wcscat(command, args);
    StringFromGUID2(clsid, key + wcslen(key), 64);
    wcscat(key, L"\\LocalServer32");
    if (RegCreateKeyExW(HKEY_CLASSES_ROOT, key, 0, NULL, 0, KEY_WRITE, NULL, &hkey, NULL)) return FALSE;
    ret = RegSetValueExW(hkey, NULL, 0, REG_SZ, (BYTE *)command, (wcslen(command) + 1) * sizeof(WCHAR));
    RegCloseKey(hkey);
    return !ret;
}

static inline void unregister_local_server(const CLSID *clsid)
{
    WCHAR key[128] = L"CLSID\\";

    StringFromGUID2(clsid, key + wcslen(key), 64);
    RegDeleteTreeW(HKEY_CLASSES_ROOT, key);
}

/* Serves obj as clsid from the process's MTA until the named event is set or timeout ms pass. */
static inline void serve_local(const CLSID *clsid, const WCHAR *quit_name, DWORD timeout)
{
    HANDLE quit = CreateEventW(NULL, TRUE, FALSE, quit_name);
    DWORD cookie, ps_cookie;

    CoInitializeEx(NULL, COINIT_MULTITHREADED);
    ps_cookie = register_ps();
    if (SUCCEEDED(CoRegisterClassObject(clsid, (IUnknown *)&obj_factory, CLSCTX_LOCAL_SERVER, REGCLS_MULTIPLEUSE,
                                        &cookie)))
    {
        WaitForSingleObject(quit, timeout);
        CoRevokeClassObject(cookie);
    }
    CoRevokeClassObject(ps_cookie);
    CoUninitialize();
    CloseHandle(quit);
}

/* A thread of the given apartment type owning obj (or another object); its stream carries it to one client. */
struct host
{
    DWORD model;
    IUnknown *object;
    IStream *stream;
    HANDLE ready, quit, thread;
};

static DWORD WINAPI host_thread(void *arg)
{
    struct host *host = arg;
    DWORD cookie;
    MSG msg;

    CoInitializeEx(NULL, host->model);
    cookie = register_ps();
    CoMarshalInterThreadInterfaceInStream(&IID_ICcAsyncTest, host->object, &host->stream);
    SetEvent(host->ready);
    while (MsgWaitForMultipleObjects(1, &host->quit, FALSE, INFINITE, QS_ALLINPUT) != WAIT_OBJECT_0)
        while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
    CoRevokeClassObject(cookie);
    CoUninitialize();
    return 0;
}

/* Starts a host of object; FALSE if it did not come up within 10 seconds. */
static BOOL start_host_of(struct host *host, DWORD model, IUnknown *object)
{
    memset(host, 0, sizeof(*host));
    host->model = model;
    host->object = object;
    host->ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    host->quit = CreateEventW(NULL, TRUE, FALSE, NULL);
    host->thread = CreateThread(NULL, 0, host_thread, host, 0, NULL);
    return !WaitForSingleObject(host->ready, 10000);
}

/* Starts a host of obj. */
static BOOL start_host(struct host *host, DWORD model)
{
    return start_host_of(host, model, (IUnknown *)&obj);
}

/* Stops the host; FALSE if it did not end within 10 seconds. */
static BOOL stop_host(struct host *host)
{
    BOOL stopped;

    SetEvent(host->quit);
    stopped = !WaitForSingleObject(host->thread, 10000);
    CloseHandle(host->thread);
    CloseHandle(host->ready);
    CloseHandle(host->quit);
    return stopped;
}

/* A call object for the proxy's async interface, or NULL. */
static AsyncICcAsyncTest *create_call(ICcAsyncTest *proxy)
{
    AsyncICcAsyncTest *call = NULL;
    ICallFactory *factory;

    if (FAILED(ICcAsyncTest_QueryInterface(proxy, &IID_ICallFactory, (void **)&factory))) return NULL;
    ICallFactory_CreateCall(factory, &IID_AsyncICcAsyncTest, NULL, &IID_AsyncICcAsyncTest, (IUnknown **)&call);
    ICallFactory_Release(factory);
    return call;
}

#endif /* COCANCEL_ASYNC_PS_H */
