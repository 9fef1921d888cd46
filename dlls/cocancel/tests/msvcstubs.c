/*
 * Tests of the async stub buffer entry points MIDL's code imports.
 *
 * The async stub vtables of proxy/stub code built with the SDK's
 * rpcproxy.h name rpcrt4's CStdAsyncStubBuffer_* functions
 * (CStdAsyncStubBuffer_METHODS), which Wine's rpcrt4 does not export: its
 * loader binds each import to a stub that reports an unimplemented function
 * and ends the process when called.  This file carries the tables of
 * asynccall_ps.idl laid out that way (widl's own output, with the SDK's
 * macro in place of mingw's zeros), and checks that with cocancel the
 * imports work and a stub built from that vtable - the stub of the async
 * interface itself - behaves as rpcrt4's standard stub.
 */

#define COBJMACROS
#define CONST_VTABLE

#include <stdarg.h>
#include <windows.h>
#include <objbase.h>
#define USE_STUBLESS_PROXY
#include <rpcproxy.h>
#include "mingw_proxy.h"

/* The SDK's definition of the macro (mingw's rpcproxy.h has zeros). */
#undef CStdAsyncStubBuffer_METHODS
HRESULT WINAPI CStdAsyncStubBuffer_QueryInterface(IRpcStubBuffer *iface, REFIID riid, void **ppv);
ULONG WINAPI CStdAsyncStubBuffer_AddRef(IRpcStubBuffer *iface);
ULONG WINAPI CStdAsyncStubBuffer_Release(IRpcStubBuffer *iface);
HRESULT WINAPI CStdAsyncStubBuffer_Connect(IRpcStubBuffer *iface, IUnknown *server);
void WINAPI CStdAsyncStubBuffer_Disconnect(IRpcStubBuffer *iface);
HRESULT WINAPI CStdAsyncStubBuffer_Invoke(IRpcStubBuffer *iface, RPCOLEMESSAGE *msg, IRpcChannelBuffer *channel);
IRpcStubBuffer * WINAPI CStdAsyncStubBuffer_IsIIDSupported(IRpcStubBuffer *iface, REFIID riid);
ULONG WINAPI CStdAsyncStubBuffer_CountRefs(IRpcStubBuffer *iface);
HRESULT WINAPI CStdAsyncStubBuffer_DebugServerQueryInterface(IRpcStubBuffer *iface, void **ppv);
void WINAPI CStdAsyncStubBuffer_DebugServerRelease(IRpcStubBuffer *iface, void *pv);
#define CStdAsyncStubBuffer_METHODS CStdAsyncStubBuffer_QueryInterface, CStdAsyncStubBuffer_AddRef, \
    CStdAsyncStubBuffer_Release, CStdAsyncStubBuffer_Connect, CStdAsyncStubBuffer_Disconnect, \
    CStdAsyncStubBuffer_Invoke, CStdAsyncStubBuffer_IsIIDSupported, CStdAsyncStubBuffer_CountRefs, \
    CStdAsyncStubBuffer_DebugServerQueryInterface, CStdAsyncStubBuffer_DebugServerRelease

/* widl's tables under a name of their own (the program links widl's own layout too). */
#define asynccall_ps_ProxyFileInfo msvc_ps_ProxyFileInfo
#include "asynccall_ps_p.c"
#undef asynccall_ps_ProxyFileInfo

#include "wine/test.h"

static const CLSID CLSID_MsvcLayoutPS = {0x2c3e5a1b, 0x7c4b, 0x4e8e, {0x9a, 0x51, 0x1f, 0x0d, 0x6b, 0x2a, 0x9c, 0x01}};

/* An object that answers the async interface, as a call object does. */
static LONG object_refs = 1;

static HRESULT WINAPI object_QueryInterface(AsyncICcAsyncTest *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_AsyncICcAsyncTest))
    {
        *ppv = iface;
        InterlockedIncrement(&object_refs);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI object_AddRef(AsyncICcAsyncTest *iface)
{
    return InterlockedIncrement(&object_refs);
}

static ULONG WINAPI object_Release(AsyncICcAsyncTest *iface)
{
    return InterlockedDecrement(&object_refs);
}

static const AsyncICcAsyncTestVtbl object_vtbl = { object_QueryInterface, object_AddRef, object_Release };
static AsyncICcAsyncTest object = { &object_vtbl };

/* What an import thunk (jmp through the import slot) jumps to. */
static const void *import_target(const BYTE *thunk)
{
    const void *const *slot;

    if (thunk[0] != 0xff || thunk[1] != 0x25) return NULL;
#ifdef __x86_64__
    slot = (const void *const *)(thunk + 6 + *(const INT32 *)(thunk + 2));
#else
    slot = *(const void *const *const *)(thunk + 2);
#endif
    return *slot;
}

/* Whether a function lies in cocancel.dll. */
static BOOL in_cocancel(const void *function)
{
    HMODULE module = NULL;

    GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                       function, &module);
    return module && module == GetModuleHandleW(L"cocancel.dll");
}

START_TEST(msvcstubs)
{
    static CStdPSFactoryBuffer factory;
    static ProxyFileInfo file;
    static CInterfaceStubVtbl stubs[3];
    static const CInterfaceStubVtbl *stub_list[4];
    static const ProxyFileInfo *files[2];
    HMODULE rpcrt4 = GetModuleHandleW(L"rpcrt4.dll");
    IRpcStubBuffer *stub = NULL, *found;
    IPSFactoryBuffer *ps = NULL;
    unsigned int i;
    HRESULT hr;
    void *ptr;
    ULONG ref;

    if (GetProcAddress(rpcrt4, "CStdAsyncStubBuffer_Release"))
    {
        skip("rpcrt4 exports the async stub buffer functions itself\n");
        return;
    }
    /* The loader bound the imports to its stubs; the engine put its own functions there. */
    ok(in_cocancel(import_target((const BYTE *)CStdAsyncStubBuffer_Release)), "the import is bound to %p\n",
       import_target((const BYTE *)CStdAsyncStubBuffer_Release));

    memcpy(&file, &msvc_ps_ProxyFileInfo, sizeof(file));
    for (i = 0; i < file.TableSize && i < ARRAY_SIZE(stubs); i++)
    {
        memcpy(&stubs[i], file.pStubVtblList[i], sizeof(stubs[i]));
        stub_list[i] = &stubs[i];
    }
    *(const PCInterfaceStubVtblList **)&file.pStubVtblList = (const PCInterfaceStubVtblList *)stub_list;
    files[0] = &file;
    hr = NdrDllGetClassObject(&CLSID_MsvcLayoutPS, &IID_IPSFactoryBuffer, (void **)&ps, files, &CLSID_MsvcLayoutPS,
                              &factory);
    ok(hr == S_OK, "NdrDllGetClassObject got %#lx\n", hr);
    if (FAILED(hr)) return;

    /* The async interface's own stub is built from the vtable that imports them. */
    hr = IPSFactoryBuffer_CreateStub(ps, &IID_AsyncICcAsyncTest, (IUnknown *)&object, &stub);
    ok(hr == S_OK, "CreateStub got %#lx\n", hr);
    if (FAILED(hr)) return;
    ok(stub->lpVtbl->Release == (void *)CStdAsyncStubBuffer_Release, "the stub's vtable is not the async one\n");
    ok(object_refs == 2, "the stub holds %ld references on the object\n", object_refs - 1);

    /* Each method answers as rpcrt4's standard stub's. */
    hr = IRpcStubBuffer_QueryInterface(stub, &IID_IRpcStubBuffer, &ptr);
    ok(hr == S_OK && ptr == stub, "QueryInterface got %#lx, %p\n", hr, ptr);
    ref = IRpcStubBuffer_AddRef(stub);
    ok(ref == 3, "AddRef got %lu\n", ref);
    ref = IRpcStubBuffer_CountRefs(stub);
    ok(ref == 3, "CountRefs got %lu\n", ref);
    found = IRpcStubBuffer_IsIIDSupported(stub, &IID_AsyncICcAsyncTest);
    ok(found == stub, "IsIIDSupported got %p\n", found);
    found = IRpcStubBuffer_IsIIDSupported(stub, &IID_ICcAsyncTest);
    ok(!found, "IsIIDSupported of another interface got %p\n", found);
    ref = IRpcStubBuffer_Release(stub);
    ok(ref == 2, "Release got %lu\n", ref);
    ref = IRpcStubBuffer_Release(stub);
    ok(ref == 1, "Release got %lu\n", ref);
    IRpcStubBuffer_Disconnect(stub);
    ok(object_refs == 1, "after Disconnect the object has %ld references\n", object_refs);
    hr = IRpcStubBuffer_Connect(stub, (IUnknown *)&object);
    ok(hr == S_OK, "Connect got %#lx\n", hr);
    ok(object_refs == 2, "after Connect the object has %ld references\n", object_refs);
    /* The last release frees the stub and lets the object go. */
    ref = IRpcStubBuffer_Release(stub);
    ok(!ref, "the last Release got %lu\n", ref);
    ok(object_refs == 1, "after the last Release the object has %ld references\n", object_refs);
    IPSFactoryBuffer_Release(ps);
}
