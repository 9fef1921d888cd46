/*
 * cocancel.dll entry point: wires the layers together.
 *
 * Owns the order of set-up at process attach and the clean-up at thread
 * detach, and the one table that hands each layer's replacement functions
 * down to winepatch.c, so that no lower layer names a higher one.
 */

#include "cocancel_private.h"

static void wire_layers(void)
{
    struct wine_functions hooks = { 0 };

    hooks.GetBuffer = synccall_GetBuffer;
    hooks.SendReceive = synccall_SendReceive;
    hooks.FreeBuffer = synccall_FreeBuffer;
    hooks.I_RpcSendReceive = transport_I_RpcSendReceive;
    hooks.I_RpcGetBuffer = transport_I_RpcGetBuffer;
    hooks.RpcServerUnregisterIf = transport_RpcServerUnregisterIf;
    hooks.WaitForMultipleObjectsEx = runner_WaitForMultipleObjectsEx;
    hooks.MsgWaitForMultipleObjectsEx = runner_MsgWaitForMultipleObjectsEx;
    hooks.SetEvent = orpchook_SetEvent;
    hooks.RpcRaiseException = orpchook_RpcRaiseException;
    hooks.CreateProxy = callfactory_CreateProxy;
    hooks.CreateStub = asyncstub_CreateStub;
    hooks.manager_QueryInterface = callfactory_manager_QueryInterface;
#ifdef __x86_64__
    hooks.NdrDcomAsyncClientCall = (void *)dcom_entry;
#endif
    hooks.NdrDcomAsyncStubCall = (void *)asyncstub_NdrDcomAsyncStubCall;
    winepatch_init(&hooks);
}

static void process_attach(HINSTANCE instance)
{
    wire_layers();
    apiroute_on_unload(asynccall_module_unloaded);
    cancelobj_init();
    api_init();
    apiroute_supply_imports("rpcrt4.dll", asyncstub_rpcrt4_exports, ARRAY_SIZE(asyncstub_rpcrt4_exports));
    apiroute_install(instance, api_exports, ARRAY_SIZE(api_exports));
    /* On i386 everything below has run under Wine 10.0's WoW64 (make
     * check-matrix, column wow64); only NdrDcomAsyncClientCall is taken over
     * on x86_64 alone (see wire_layers). */
    if (!GetModuleHandleW(L"combase.dll")) return;

    /* Proxied calls: the channel hook, the transport, the channel itself (found by discovery). */
    transport_init();
    synccall_init(asynccall_send_receive);
    /* Nothing starts here: the channel is found at the first proxied call (discovery.c). */
    if (discovery_init() && orpchook_init(asynccall_request_filled))
    {
        winepatch_transport_imports();
        winepatch_dispatch_imports();
    }

    /* Worker fibers, call objects, ICallFactory on proxies. */
    asynccall_init();
    asyncstub_init();
    uninit_init();
    if (!runner_init(uninit_watch_thread)) return;
    winepatch_wait_imports();
    winepatch_proxy_factory();
    winepatch_ndr_async();
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, void *reserved)
{
    switch (reason)
    {
    case DLL_PROCESS_ATTACH:
        cc_debug_init();
        TRACE("%p, attach\n", instance);
        process_attach(instance);
        break;
    case DLL_THREAD_DETACH:
        cancelobj_thread_detach();
        synccall_thread_detach();
        runner_thread_detach();
        transport_thread_detach();
        break;
    }
    return TRUE;
}
