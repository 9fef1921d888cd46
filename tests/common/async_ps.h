/*
 * Proxy/stub registration for the programs (benchmark, demo) that use the
 * conformance test's interfaces (dlls/ole32/tests/asynccall_ps.idl).  The
 * conformance test carries its own copy, as Wine's tests must stand alone.
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

#endif /* COCANCEL_ASYNC_PS_H */
