/* Route: the program looks the API up with GetProcAddress, in ole32 and in combase. */

#include "routes.h"

static void lookup(HMODULE module, struct cancel_api *api)
{
    api->cancel_call = (void *)GetProcAddress(module, "CoCancelCall");
    api->test_cancel = (void *)GetProcAddress(module, "CoTestCancel");
    api->get_cancel_object = (void *)GetProcAddress(module, "CoGetCancelObject");
    api->set_cancel_object = (void *)GetProcAddress(module, "CoSetCancelObject");
}

ROUTE_TEST(route_getproc)
{
    struct cancel_api api;
    HMODULE module;

    module = LoadLibraryA("ole32.dll");
    ok(module != NULL, "ole32 not loaded\n");
    lookup(module, &api);
    check_cancel_api("GetProcAddress(ole32)", &api);

    /* The other names ole32 exports are still there. */
    ok(GetProcAddress(module, "CoInitializeEx") != NULL, "CoInitializeEx lost\n");
    ok(GetProcAddress(module, "OleInitialize") != NULL, "OleInitialize lost\n");
    ok(GetProcAddress(module, "CoEnableCallCancellation") != NULL, "CoEnableCallCancellation lost\n");

    /* Found by name, as GetModuleHandle finds a DLL the program imports. */
    module = GetModuleHandleA("ole32.dll");
    ok(module != NULL, "ole32 not found\n");
    lookup(module, &api);
    check_cancel_api("GetProcAddress(GetModuleHandle(ole32))", &api);

    module = LoadLibraryA("combase.dll");
    ok(module != NULL, "combase not loaded\n");
    lookup(module, &api);
    check_cancel_api("GetProcAddress(combase)", &api);
}
