/*
 * cocancel.dll entry point.
 */

#include "cocancel_private.h"

/***********************************************************************
 *           CocancelGetStatus    (cocancel.@)
 */
HRESULT WINAPI CocancelGetStatus(struct cocancel_status *status)
{
    if (!status || status->size != sizeof(*status)) return E_INVALIDARG;
    patch_get_status(status);
    channel_get_status(status);
    async_get_status(status);
    return S_OK;
}

/***********************************************************************
 *           CocancelWaitChannel    (cocancel.@)
 */
HRESULT WINAPI CocancelWaitChannel(DWORD timeout)
{
    return channel_wait_ready(timeout) ? S_OK : RPC_S_CALLPENDING;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, void *reserved)
{
    switch (reason)
    {
    case DLL_PROCESS_ATTACH:
        cc_debug_init();
        TRACE("%p, attach\n", instance);
        cancel_init();
        patch_install(instance);
        channel_init();
        async_init();
        break;
    case DLL_THREAD_DETACH:
        cancel_thread_detach();
        async_thread_detach();
        break;
    }
    return TRUE;
}
