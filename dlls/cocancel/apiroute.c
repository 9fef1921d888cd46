/*
 * Getting the cancellation API into unmodified programs.
 *
 * Owns the routes by which a program reaches CoCancelCall, CoTestCancel,
 * CoGetCancelObject and CoSetCancelObject, which Wine 8.0 leaves out of
 * ole32 and has as winebuild stubs in combase:
 *
 *  - each combase stub becomes a jump to the engine (winepatch_stub, which
 *    decodes the stub and reads back the name it carries first);
 *  - the four names are grafted onto ole32's export table, so GetProcAddress
 *    and delay-loaded imports find them (unless ole32 exports them already,
 *    as the carrier ole32.dll does);
 *  - import slots that the loader bound to its "unimplemented function"
 *    stubs are redirected, after reading the stub's names back, in every
 *    loaded module and, through LdrRegisterDllNotification, in every later
 *    one.  The same is done for functions another DLL of Wine lacks whose
 *    replacements a layer above supplies (apiroute_supply_imports: rpcrt4's
 *    CStdAsyncStubBuffer_*, which MIDL's async stub vtables import), also
 *    when combase implements the API.
 *
 * Nothing is written unless the bytes are exactly what is expected; a
 * mismatch is counted as refused and left alone.  If combase implements any
 * of the four itself, the engine routes none of them: a second stack of
 * cancel objects beside Wine's would disagree with it.  Its own exports
 * then hand over to combase's, and its proxied calls push no cancel object
 * (synccall.c).
 */

#include <string.h>
#include "cocancel_private.h"
#include <psapi.h>

static const struct api_export *routed_api;
static unsigned int routed_count;

static LONG routes;
static BOOL wine_has_api;                           /* combase implements part of the API itself */
static void *wine_api[COCANCEL_API_EXPORTS];        /* ... its functions, by enum api_index */
static LONG repaired_imports;
static HMODULE engine_module;

static void route_add(DWORD route)
{
    InterlockedOr(&routes, route);
}

void apiroute_get_status(struct cocancel_status *status)
{
    status->routes |= (DWORD)InterlockedCompareExchange(&routes, 0, 0);
    status->repaired_imports = (DWORD)InterlockedCompareExchange(&repaired_imports, 0, 0);
}

/* Functions another DLL of Wine lacks altogether, supplied to the imports that name them. */
static const char *supplied_dll;
static const struct api_export *supplied;
static unsigned int supplied_count;

static const struct api_export *find_in(const struct api_export *exports, unsigned int count, const char *name)
{
    unsigned int i;

    for (i = 0; i < count; i++)
        if (!strcmp(exports[i].name, name)) return &exports[i];
    return NULL;
}

static const struct api_export *find_api(const char *name)
{
    return find_in(routed_api, routed_count, name);
}

void apiroute_supply_imports(const char *dll, const struct api_export *exports, unsigned int count)
{
    supplied_dll = dll;
    supplied = exports;
    supplied_count = count;
}

BOOL apiroute_wine_has_api(void)
{
    return wine_has_api;
}

/* combase's own function when it implements part of the API (then all four are its), else NULL. */
void *apiroute_wine_function(enum api_index index)
{
    return wine_has_api ? wine_api[index] : NULL;
}

/* Turns combase's stubs for the API into jumps to the engine, unless it implements one of them. */
static void patch_combase(HMODULE combase)
{
    unsigned int i;

    for (i = 0; i < routed_count; i++)
    {
        /* The test knob api_one makes CoSetCancelObject alone look implemented. */
        DWORD point = WINEPATCH_API_STUBS | (i == API_SET_CANCEL_OBJECT ? WINEPATCH_API_ONE : 0);

        if (winepatch_stub(point, combase, routed_api[i].name, NULL) == STUB_NOT_A_STUB) wine_has_api = TRUE;
    }
    if (wine_has_api)
    {
        /* api_exports is in enum api_index order. */
        for (i = 0; i < routed_count; i++) wine_api[i] = (void *)GetProcAddress(combase, routed_api[i].name);
        WARN("combase implements part of the cancellation API: Wine's is used, the engine adds none\n");
        route_add(COCANCEL_ROUTE_COMBASE_REAL);
        return;
    }
    for (i = 0; i < routed_count; i++)
    {
        switch (winepatch_stub(WINEPATCH_API_STUBS, combase, routed_api[i].name, routed_api[i].function))
        {
        case STUB_PATCHED:
            route_add(COCANCEL_ROUTE_COMBASE_STUBS);
            break;
        case STUB_NOT_A_STUB:
            /* Changed since it was looked at: hands off. */
            route_add(COCANCEL_ROUTE_COMBASE_REAL);
            break;
        case STUB_REFUSED:
            return;
        case STUB_ABSENT:
        case STUB_FOUND:
            break;
        }
    }
}

/* ---------------------------------------------------------------------
 * The ole32 export graft.
 */

struct graft_name
{
    const char *name;
    WORD index;   /* into AddressOfFunctions */
};

static int __cdecl compare_graft_names(const void *a, const void *b)
{
    return strcmp(((const struct graft_name *)a)->name, ((const struct graft_name *)b)->name);
}

/* What a new export directory for ole32 is made of. */
struct graft
{
    HMODULE module;
    const IMAGE_EXPORT_DIRECTORY *old;
    DWORD old_rva, old_size;
    const char *dll_name;
    unsigned int missing[COCANCEL_API_EXPORTS], missing_count;
    BYTE *block;            /* the jumps, then the directory */
    SIZE_T total;
    IMAGE_EXPORT_DIRECTORY *dir;
    DWORD dir_size;
};

static BOOL is_forwarder(const struct graft *graft, DWORD rva)
{
    return rva >= graft->old_rva && rva < graft->old_rva + graft->old_size;
}

/* Sizes the new directory and allocates it near the image. */
static BOOL graft_layout(struct graft *graft, IMAGE_NT_HEADERS *nt)
{
    const DWORD *old_funcs = (const DWORD *)((BYTE *)graft->module + graft->old->AddressOfFunctions);
    DWORD strings_size = strlen(graft->dll_name) + 1, nfuncs, nnames, i;

    for (i = 0; i < graft->old->NumberOfFunctions; i++)
        if (is_forwarder(graft, old_funcs[i])) strings_size += strlen((char *)graft->module + old_funcs[i]) + 1;
    for (i = 0; i < graft->missing_count; i++) strings_size += strlen(routed_api[graft->missing[i]].name) + 1;
    nfuncs = graft->old->NumberOfFunctions + graft->missing_count;
    nnames = graft->old->NumberOfNames + graft->missing_count;
    graft->dir_size = sizeof(*graft->dir) + nfuncs * 4 + nnames * 4 + nnames * 2 + strings_size;
    /* The jumps come first: an export inside the directory would read as a forwarder. */
    graft->total = graft->missing_count * 16 + graft->dir_size;
    if (!(graft->block = pe_alloc_near(graft->module, nt, graft->total))) return FALSE;
    graft->dir = (IMAGE_EXPORT_DIRECTORY *)(graft->block + graft->missing_count * 16);
    return TRUE;
}

/* Fills the new directory: old exports (forwarder strings copied along), the jumps, sorted names. */
static BOOL graft_fill(struct graft *graft)
{
    BYTE *base = (BYTE *)graft->module;
    const IMAGE_EXPORT_DIRECTORY *old = graft->old;
    const DWORD *old_funcs = (const DWORD *)(base + old->AddressOfFunctions);
    const DWORD *old_names = (const DWORD *)(base + old->AddressOfNames);
    const WORD *old_ords = (const WORD *)(base + old->AddressOfNameOrdinals);
    DWORD nfuncs = old->NumberOfFunctions + graft->missing_count;
    DWORD nnames = old->NumberOfNames + graft->missing_count, i;
    IMAGE_EXPORT_DIRECTORY *dir = graft->dir;
    DWORD *funcs = (DWORD *)(dir + 1), *names = funcs + nfuncs;
    WORD *ords = (WORD *)(names + nnames);
    char *strings = (char *)(ords + nnames);
    struct graft_name *sorted;

    if (!(sorted = HeapAlloc(GetProcessHeap(), 0, nnames * sizeof(*sorted)))) return FALSE;
    *dir = *old;
    dir->NumberOfFunctions = nfuncs;
    dir->NumberOfNames = nnames;
    dir->AddressOfFunctions = (DWORD)((BYTE *)funcs - base);
    dir->AddressOfNames = (DWORD)((BYTE *)names - base);
    dir->AddressOfNameOrdinals = (DWORD)((BYTE *)ords - base);
    strcpy(strings, graft->dll_name);
    dir->Name = (DWORD)((BYTE *)strings - base);
    strings += strlen(strings) + 1;

    for (i = 0; i < old->NumberOfFunctions; i++)
    {
        funcs[i] = old_funcs[i];
        if (!is_forwarder(graft, old_funcs[i])) continue;
        strcpy(strings, (char *)base + old_funcs[i]);
        funcs[i] = (DWORD)((BYTE *)strings - base);
        strings += strlen(strings) + 1;
    }
    for (i = 0; i < old->NumberOfNames; i++)
    {
        sorted[i].name = (char *)base + old_names[i];
        sorted[i].index = old_ords[i];
    }
    for (i = 0; i < graft->missing_count; i++)
    {
        const struct api_export *api = &routed_api[graft->missing[i]];
        BYTE *jump = graft->block + 16 * i;

        winepatch_make_jump(jump, api->function);
        funcs[old->NumberOfFunctions + i] = (DWORD)(jump - base);
        /* Names are RVAs too, so they are copied next to the directory. */
        strcpy(strings, api->name);
        sorted[old->NumberOfNames + i].name = strings;
        sorted[old->NumberOfNames + i].index = old->NumberOfFunctions + i;
        strings += strlen(strings) + 1;
    }
    /* The loader looks names up by binary search. */
    qsort(sorted, nnames, sizeof(*sorted), compare_graft_names);
    for (i = 0; i < nnames; i++)
    {
        names[i] = (DWORD)((const BYTE *)sorted[i].name - base);
        ords[i] = sorted[i].index;
    }
    HeapFree(GetProcessHeap(), 0, sorted);
    return TRUE;
}

/*
 * Gives ole32 a new export directory with a jump for each API function it
 * lacks, then repoints DataDirectory[EXPORT] to it.
 */
static void graft_ole32(HMODULE ole32)
{
    struct graft graft = { ole32 };
    IMAGE_DATA_DIRECTORY new_entry, *entry;
    IMAGE_NT_HEADERS *nt;
    DWORD protect;
    unsigned int i;

    /* The builtin ole32 behind cocancel's carrier is grafted too: Wine's loader
     * may answer GetModuleHandle("ole32.dll") with it (it answers a lookup by
     * name with the module it matched last). */
    for (i = 0; i < routed_count; i++)
        if (!GetProcAddress(ole32, routed_api[i].name)) graft.missing[graft.missing_count++] = i;
    if (!graft.missing_count)
    {
        route_add(COCANCEL_ROUTE_OLE32_NATIVE);
        return;
    }
    if (!(nt = pe_headers(ole32))) return winepatch_refuse("ole32 headers", ole32);
    if (!(graft.old = pe_export_directory(ole32, nt, &graft.old_rva, &graft.old_size)))
        return winepatch_refuse("ole32 exports", ole32);
    if (!(graft.dll_name = pe_rva(ole32, nt, graft.old->Name, 1)) || !pe_string_equals(graft.dll_name, "ole32.dll", TRUE))
        return winepatch_refuse("ole32 export name", ole32);
    if (graft.old->NumberOfFunctions > 0xfff0 || graft.old->NumberOfNames > graft.old->NumberOfFunctions)
        return winepatch_refuse("ole32 export counts", ole32);
    if (!graft_layout(&graft, nt)) return winepatch_refuse("ole32 export graft (no memory near the image)", ole32);
    if (!graft_fill(&graft))
    {
        VirtualFree(graft.block, 0, MEM_RELEASE);
        return;
    }
    VirtualProtect(graft.block, graft.total, PAGE_EXECUTE_READ, &protect);
    FlushInstructionCache(GetCurrentProcess(), graft.block, graft.total);

    entry = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXPORT];
    new_entry.VirtualAddress = (DWORD)((BYTE *)graft.dir - (BYTE *)ole32);
    new_entry.Size = graft.dir_size;
    if (!pe_write(entry, &new_entry, sizeof(new_entry), FALSE))
        return winepatch_refuse("ole32 export directory entry (protect)", entry);
    TRACE("ole32 export table grafted at %p with %u functions\n", graft.dir, graft.missing_count);
    route_add(COCANCEL_ROUTE_OLE32_GRAFT);
}

/* ---------------------------------------------------------------------
 * Import repair.
 */

#ifdef __x86_64__
/*
 * The Wine 8.0 loader binds an import it cannot resolve to a 36-byte stub in
 * private memory that reports "unimplemented function dll.name":
 *   48 b9 imm64(dll)   mov rcx, dll name
 *   48 ba imm64(name)  mov rdx, function name
 *   4c 8b 04 24        mov r8, [rsp]
 *   48 b8 imm64        mov rax, handler
 *   ff e0              jmp rax
 */
static BOOL is_loader_stub(const BYTE *code, const char *dll, const char *name)
{
    MEMORY_BASIC_INFORMATION info;
    const char *str;

    if (!pe_readable(code, 36)) return FALSE;
    if (!VirtualQuery(code, &info, sizeof(info)) || info.Type != MEM_PRIVATE) return FALSE;
    if (memcmp(code, "\x48\xb9", 2) || memcmp(code + 10, "\x48\xba", 2)) return FALSE;
    if (memcmp(code + 20, "\x4c\x8b\x04\x24\x48\xb8", 6) || memcmp(code + 34, "\xff\xe0", 2)) return FALSE;
    memcpy(&str, code + 2, sizeof(str));
    if (!pe_string_equals(str, dll, TRUE)) return FALSE;
    memcpy(&str, code + 12, sizeof(str));
    return pe_string_equals(str, name, FALSE);
}
#else
/*
 * The i386 loader (Wine 10.0 under WoW64) binds such an import to a 15-byte
 * stub in private memory that calls ntdll's handler with the two names:
 *   68 imm32(name)     push function name
 *   68 imm32(dll)      push dll name
 *   e8 rel32           call handler (in ntdll)
 */
static BOOL is_loader_stub(const BYTE *code, const char *dll, const char *name)
{
    MEMORY_BASIC_INFORMATION info;
    HMODULE handler_module = NULL;
    const char *str;
    INT32 rel;

    if (!pe_readable(code, 15)) return FALSE;
    if (!VirtualQuery(code, &info, sizeof(info)) || info.Type != MEM_PRIVATE) return FALSE;
    if (code[0] != 0x68 || code[5] != 0x68 || code[10] != 0xe8) return FALSE;
    memcpy(&rel, code + 11, sizeof(rel));
    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            (const WCHAR *)(code + 15 + rel), &handler_module) ||
        handler_module != GetModuleHandleW(L"ntdll.dll"))
        return FALSE;
    memcpy(&str, code + 6, sizeof(str));
    if (!pe_string_equals(str, dll, TRUE)) return FALSE;
    memcpy(&str, code + 1, sizeof(str));
    return pe_string_equals(str, name, FALSE);
}
#endif

static BOOL repair_import(void *ctx, const char *dll, const char *name, void **slot)
{
    const struct api_export *api;
    ULONG_PTR target;

    if (!_stricmp(dll, "ole32.dll") || !_stricmp(dll, "combase.dll")) api = wine_has_api ? NULL : find_api(name);
    else if (supplied_dll && !_stricmp(dll, supplied_dll)) api = find_in(supplied, supplied_count, name);
    else return TRUE;
    if (!api) return TRUE;
    target = (ULONG_PTR)*slot;
    /* Already bound to the engine, directly or through the grafted exports. */
    if (target == (ULONG_PTR)api->function || winepatch_is_jump_to((const BYTE *)target, api->function)) return TRUE;
    if (!is_loader_stub((const BYTE *)target, dll, api->name))
    {
        TRACE("%s import in %p bound to %p: not a loader stub, left alone\n", api->name, ctx, (void *)target);
        return TRUE;
    }
    if (!pe_write_pointer(slot, (void *)api->function))
    {
        winepatch_refuse("import slot (protect)", slot);
        return TRUE;
    }
    TRACE("repaired %s!%s import of %p\n", dll, api->name, ctx);
    InterlockedIncrement(&repaired_imports);
    return TRUE;
}

/* What the engine does for every module it sees, at start-up or when loaded. */
static void handle_module(HMODULE module)
{
    if (!wine_has_api)
    {
        if (pe_module_is(module, L"combase.dll")) patch_combase(module);
        else if (pe_module_is(module, L"ole32.dll")) graft_ole32(module);
    }
    if (module != engine_module) pe_for_each_import(module, repair_import, module);
}

/* ntdll's notification interface (not in the SDK headers). */
struct dll_notification_data
{
    ULONG flags;
    const void *full_name;   /* UNICODE_STRING */
    const void *base_name;
    void *base;
    ULONG size;
};

#define DLL_NOTIFICATION_LOADED   1
#define DLL_NOTIFICATION_UNLOADED 2

/* Told of each DLL unloaded (main.c: asynccall.c forgets what it read from it). */
static void (*unload_hook)(const void *base, SIZE_T size);

void apiroute_on_unload(void (*hook)(const void *base, SIZE_T size))
{
    unload_hook = hook;
}

static void CALLBACK dll_notification(ULONG reason, const struct dll_notification_data *data, void *context)
{
    if (!data) return;
    /* Runs under the loader lock, after the DLL's imports are bound and before its DllMain. */
    if (reason == DLL_NOTIFICATION_LOADED) handle_module(data->base);
    else if (reason == DLL_NOTIFICATION_UNLOADED && unload_hook) unload_hook(data->base, data->size);
}

static void *notification_cookie;

void apiroute_install(HMODULE engine, const struct api_export *exports, unsigned int export_count)
{
    NTSTATUS (WINAPI *p_LdrRegisterDllNotification)(ULONG, void *, void *, void **);
    HMODULE modules[1024], combase, self;
    DWORD needed = 0, i, count;

    engine_module = engine;
    routed_api = exports;
    routed_count = min(export_count, COCANCEL_API_EXPORTS);
    /* The patches point into the engine, so it must never be unloaded. */
    GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_PIN | GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS,
                       (const WCHAR *)apiroute_install, &self);

    /* combase first, so that everything bound to its stubs works at once. */
    if ((combase = GetModuleHandleW(L"combase.dll"))) patch_combase(combase);

    if (K32EnumProcessModules(GetCurrentProcess(), modules, sizeof(modules), &needed))
    {
        count = min(needed / sizeof(HMODULE), ARRAY_SIZE(modules));
        for (i = 0; i < count; i++)
            if (modules[i] != combase) handle_module(modules[i]);
    }

    p_LdrRegisterDllNotification = (void *)GetProcAddress(GetModuleHandleW(L"ntdll.dll"), "LdrRegisterDllNotification");
    if (p_LdrRegisterDllNotification && !p_LdrRegisterDllNotification(0, dll_notification, NULL, &notification_cookie))
        route_add(COCANCEL_ROUTE_DLL_NOTIFY);
    else
        WARN("LdrRegisterDllNotification is unavailable; DLLs loaded later keep their stubs\n");

    /* The carrier ole32.dll announces itself with an export of its own. */
    if (GetProcAddress(GetModuleHandleW(L"ole32.dll"), "CocancelCarrierVersion")) route_add(COCANCEL_ROUTE_CARRIER);
}
