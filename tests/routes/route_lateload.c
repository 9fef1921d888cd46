/* Route: a DLL loaded after start-up (LoadLibrary) imports the API statically. */

#include "routes.h"

ROUTE_TEST(route_lateload)
{
    void (WINAPI *get_api)(void **functions);
    HRESULT *attach_result;
    void *functions[4];
    struct cancel_api api;
    HMODULE module;

    module = LoadLibraryA("cclate.dll");
    ok(module != NULL, "cclate.dll not loaded: %lu\n", GetLastError());
    if (!module) return;
    get_api = (void *)GetProcAddress(module, "cclate_get_api");
    attach_result = (HRESULT *)GetProcAddress(module, "cclate_attach_result");
    ok(get_api && attach_result, "cclate exports missing\n");
    if (!get_api || !attach_result) return;

    /* No cancel object in DllMain: CoCancelCall answers E_NOINTERFACE. */
    ok(*attach_result == E_NOINTERFACE, "CoCancelCall in DllMain got %#lx\n", *attach_result);
    get_api(functions);
    api.cancel_call = functions[0];
    api.test_cancel = functions[1];
    api.get_cancel_object = functions[2];
    api.set_cancel_object = functions[3];
    check_cancel_api("LoadLibrary'd DLL", &api);
    FreeLibrary(module);
}
