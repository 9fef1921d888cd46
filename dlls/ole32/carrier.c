/*
 * The carrier ole32.dll.
 *
 * Installed as a native override of ole32, it stands in for Wine's builtin
 * ole32 so that unmodified programs get the cancellation API through their
 * ordinary imports.  Its export list is generated from the builtin (see
 * tools/gen_carrier.py): forwarders to combase stay forwarders, ole32's own
 * functions are thunks into the builtin ole32.dll loaded by full path, and
 * the functions Wine lacks are forwarded to cocancel.dll.  Importing
 * cocancel makes the loader bring the engine in before the program runs.
 */

#include <windef.h>
#include <winbase.h>
#include <wchar.h>

#include "cocancel.h"

extern const unsigned int carrier_count;
extern void *carrier_targets[];
extern const char *const carrier_names[];

static HMODULE builtin_ole32;

/* Marks this ole32 as cocancel's carrier; the value is the carrier's version. */
DWORD WINAPI CocancelCarrierVersion(void)
{
    return (COCANCEL_VERSION_MAJOR << 16) | COCANCEL_VERSION_MINOR;
}

/* Where a thunk goes when the builtin lacks its function: fail the way Wine's stubs do. */
static void carrier_missing(void)
{
    RaiseException(0x80000100 /* EXCEPTION_WINE_STUB */, EXCEPTION_NONCONTINUABLE, 0, NULL);
}

#ifdef __x86_64__
#define BUILTIN_SUBDIR L"\\x86_64-windows\\ole32.dll"
#else
#define BUILTIN_SUBDIR L"\\i386-windows\\ole32.dll"
#endif

/*
 * The builtin lives at <system dir>\ole32.dll as far as Windows paths go;
 * when the carrier itself sits there, the builtin is taken from Wine's DLL
 * directory (WINEDLLDIR0, an NT path such as \??\Z:\usr\lib\...\wine).
 */
static HMODULE load_builtin(HINSTANCE self)
{
    WCHAR own[MAX_PATH], path[MAX_PATH + 64], dlldir[MAX_PATH];
    const WCHAR *dir = dlldir;
    UINT len;

    if (!GetModuleFileNameW(self, own, MAX_PATH)) return NULL;
    len = GetSystemDirectoryW(path, MAX_PATH);
    if (!len || len >= MAX_PATH) return NULL;
    wcscat(path, L"\\ole32.dll");
    if (_wcsicmp(own, path))
        return LoadLibraryW(path);

    len = GetEnvironmentVariableW(L"WINEDLLDIR0", dlldir, MAX_PATH);
    if (!len || len >= MAX_PATH) return NULL;
    if (!wcsncmp(dir, L"\\??\\", 4)) dir += 4;
    if (wcslen(dir) + wcslen(BUILTIN_SUBDIR) >= ARRAYSIZE(path)) return NULL;
    wcscpy(path, dir);
    wcscat(path, BUILTIN_SUBDIR);
    return LoadLibraryW(path);
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, void *reserved)
{
    struct cocancel_status status = { sizeof(status) };
    unsigned int i;

    if (reason != DLL_PROCESS_ATTACH) return TRUE;
    DisableThreadLibraryCalls(instance);

    if (!(builtin_ole32 = load_builtin(instance)) || builtin_ole32 == instance)
    {
        OutputDebugStringA("cocancel carrier: the builtin ole32.dll could not be loaded\n");
        return FALSE;
    }
    for (i = 0; i < carrier_count; i++)
    {
        carrier_targets[i] = (void *)GetProcAddress(builtin_ole32, carrier_names[i]);
        if (!carrier_targets[i]) carrier_targets[i] = (void *)carrier_missing;
    }
    /* The engine is initialised before us (it is our import); this call also
     * keeps the import in place. */
    CocancelGetStatus(&status);
    return TRUE;
}
