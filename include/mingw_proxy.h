/*
 * What widl's proxy code expects from rpcproxy.h and mingw-w64's lacks:
 * the prototypes of rpcrt4's IUnknown proxy methods.  Forced into the
 * build of widl output with -include; Wine's own headers have them.
 */

#ifndef COCANCEL_MINGW_PROXY_H
#define COCANCEL_MINGW_PROXY_H

#include <objbase.h>

HRESULT STDMETHODCALLTYPE IUnknown_QueryInterface_Proxy(IUnknown *This, REFIID riid, void **ppv);
ULONG STDMETHODCALLTYPE IUnknown_AddRef_Proxy(IUnknown *This);
ULONG STDMETHODCALLTYPE IUnknown_Release_Proxy(IUnknown *This);

#endif
