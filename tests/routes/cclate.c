/* A DLL that imports the API statically, loaded by route_lateload.exe after start-up. */

#include <windows.h>
#include <objbase.h>

__declspec(dllexport) void WINAPI cclate_get_api(void **functions)
{
    functions[0] = CoCancelCall;
    functions[1] = CoTestCancel;
    functions[2] = CoGetCancelObject;
    functions[3] = CoSetCancelObject;
}

/* Runs the API from DllMain: the imports must already work there. */
__declspec(dllexport) HRESULT cclate_attach_result = E_FAIL;

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, void *reserved)
{
    if (reason == DLL_PROCESS_ATTACH) cclate_attach_result = CoCancelCall(0, 0);
    return TRUE;
}
