/*
 * Getting the cancellation API into unmodified programs.
 *
 * Wine 8.0 leaves CoCancelCall, CoTestCancel, CoGetCancelObject and
 * CoSetCancelObject out of ole32 and has them as winebuild stubs in combase.
 * At start-up the engine
 *
 *  - rewrites each combase stub into a jump to the engine, after decoding the
 *    stub and reading back the function name it carries;
 *  - grafts the four names onto ole32's export table, so GetProcAddress and
 *    delay-loaded imports find them (unless ole32 exports them already, as
 *    the carrier ole32.dll does);
 *  - redirects import slots that the loader bound to its "unimplemented
 *    function" stubs, after reading the stub's name back, in every loaded
 *    module and, through LdrRegisterDllNotification, in every later one.
 *
 * Nothing is written unless the bytes are exactly what is expected; a
 * mismatch is counted as refused and left alone.  Where combase implements a
 * function itself, the engine leaves it in place and forwards to it.
 */

#include <string.h>
#include "cocancel_private.h"
#include <psapi.h>

HRESULT WINAPI CoCancelCall(DWORD tid, ULONG timeout);
HRESULT WINAPI CoTestCancel(void);
HRESULT WINAPI CoGetCancelObject(DWORD tid, REFIID riid, void **ppv);
HRESULT WINAPI CoSetCancelObject(IUnknown *unk);

const struct api_export api_exports[] =
{
    { "CoCancelCall",      CoCancelCall },
    { "CoGetCancelObject", CoGetCancelObject },
    { "CoSetCancelObject", CoSetCancelObject },
    { "CoTestCancel",      CoTestCancel },
};
const unsigned int api_export_count = ARRAY_SIZE(api_exports);

static struct cocancel_status status;
static HMODULE engine_module;

static void status_add(DWORD routes)
{
    InterlockedOr((LONG *)&status.routes, routes);
}

void patch_get_status(struct cocancel_status *out)
{
    out->routes = status.routes;
    out->repaired_imports = status.repaired_imports;
    out->refused_patches = status.refused_patches;
}

static void refuse(const char *what, const void *where)
{
    WARN("refusing to patch %s at %p: not what was expected\n", what, where);
    InterlockedIncrement((LONG *)&status.refused_patches);
}

/* Is [ptr, ptr + size) committed, readable memory within one region? */
static BOOL readable(const void *ptr, SIZE_T size)
{
    MEMORY_BASIC_INFORMATION info;
    const BYTE *start = ptr, *end;

    if (!ptr || !VirtualQuery(ptr, &info, sizeof(info))) return FALSE;
    if (info.State != MEM_COMMIT || (info.Protect & (PAGE_NOACCESS | PAGE_GUARD))) return FALSE;
    end = (const BYTE *)info.BaseAddress + info.RegionSize;
    return start + size >= start && start + size <= end;
}

static BOOL string_equals(const char *str, const char *expected, BOOL ignore_case)
{
    SIZE_T len = strlen(expected) + 1;

    if (!readable(str, len)) return FALSE;
    return ignore_case ? !_stricmp(str, expected) : !strcmp(str, expected);
}

/* The NT headers of a mapped image, checked against its own size; NULL if malformed. */
static IMAGE_NT_HEADERS *image_headers(HMODULE module)
{
    IMAGE_DOS_HEADER *dos = (IMAGE_DOS_HEADER *)module;
    IMAGE_NT_HEADERS *nt;

    if (!readable(dos, sizeof(*dos)) || dos->e_magic != IMAGE_DOS_SIGNATURE) return NULL;
    if (dos->e_lfanew <= 0 || dos->e_lfanew > 0x10000) return NULL;
    nt = (IMAGE_NT_HEADERS *)((BYTE *)module + dos->e_lfanew);
    if (!readable(nt, sizeof(*nt)) || nt->Signature != IMAGE_NT_SIGNATURE) return NULL;
    if (nt->OptionalHeader.Magic != IMAGE_NT_OPTIONAL_HDR_MAGIC) return NULL;
    return nt;
}

static void *image_rva(HMODULE module, IMAGE_NT_HEADERS *nt, DWORD rva, DWORD size)
{
    if (!rva || rva >= nt->OptionalHeader.SizeOfImage || size > nt->OptionalHeader.SizeOfImage - rva)
        return NULL;
    return (BYTE *)module + rva;
}

static BOOL write_memory(void *dest, const void *src, SIZE_T size, BOOL code)
{
    DWORD old;

    if (!VirtualProtect(dest, size, code ? PAGE_EXECUTE_READWRITE : PAGE_READWRITE, &old)) return FALSE;
    memcpy(dest, src, size);
    VirtualProtect(dest, size, old, &old);
    if (code) FlushInstructionCache(GetCurrentProcess(), dest, size);
    return TRUE;
}

#ifdef __x86_64__

/* jmp qword ptr [rip+0]; dq target */
#define JUMP_SIZE 14
static void make_jump(BYTE *code, const void *target)
{
    static const BYTE prefix[6] = { 0xff, 0x25, 0, 0, 0, 0 };
    ULONG_PTR address = (ULONG_PTR)target;

    memcpy(code, prefix, sizeof(prefix));
    memcpy(code + 6, &address, sizeof(address));
}

static INT32 read_rel32(const BYTE *p)
{
    INT32 value;

    memcpy(&value, p, sizeof(value));
    return value;
}

/*
 * A winebuild x86_64 stub for an unimplemented export:
 *   48 83 ec 28        sub  rsp, 0x28
 *   48 8d 0d rel32     lea  rcx, [rip + descriptor]
 *   48 8d 15 rel32     lea  rdx, [rip + "FunctionName"]
 *   e8 rel32           call __wine_spec_unimplemented_stub
 * Returns TRUE only if all of it is there and the name is 'name'.
 */
static BOOL is_wine_stub(HMODULE module, IMAGE_NT_HEADERS *nt, const BYTE *code, const char *name)
{
    const BYTE *end = (BYTE *)module + nt->OptionalHeader.SizeOfImage;
    const char *str;

    if (!readable(code, 23)) return FALSE;
    if (memcmp(code, "\x48\x83\xec\x28\x48\x8d\x0d", 7)) return FALSE;
    if (memcmp(code + 11, "\x48\x8d\x15", 3) || code[18] != 0xe8) return FALSE;
    str = (const char *)code + 18 + read_rel32(code + 14);
    if ((const BYTE *)str < (const BYTE *)module || (const BYTE *)str + strlen(name) + 1 > end) return FALSE;
    return string_equals(str, name, FALSE);
}

static BOOL is_jump_to(const BYTE *code, const void *target)
{
    BYTE expected[JUMP_SIZE];

    make_jump(expected, target);
    return readable(code, JUMP_SIZE) && !memcmp(code, expected, JUMP_SIZE);
}

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

    if (!readable(code, 36)) return FALSE;
    if (!VirtualQuery(code, &info, sizeof(info)) || info.Type != MEM_PRIVATE) return FALSE;
    if (memcmp(code, "\x48\xb9", 2) || memcmp(code + 10, "\x48\xba", 2)) return FALSE;
    if (memcmp(code + 20, "\x4c\x8b\x04\x24\x48\xb8", 6) || memcmp(code + 34, "\xff\xe0", 2)) return FALSE;
    memcpy(&str, code + 2, sizeof(str));
    if (!string_equals(str, dll, TRUE)) return FALSE;
    memcpy(&str, code + 12, sizeof(str));
    return string_equals(str, name, FALSE);
}

#else  /* i386: the stub layouts were not verified, so nothing is patched. */

#define JUMP_SIZE 7
/* mov eax, target; jmp eax */
static void make_jump(BYTE *code, const void *target)
{
    ULONG_PTR address = (ULONG_PTR)target;

    code[0] = 0xb8;
    memcpy(code + 1, &address, sizeof(address));
    code[5] = 0xff;
    code[6] = 0xe0;
}

static BOOL is_wine_stub(HMODULE module, IMAGE_NT_HEADERS *nt, const BYTE *code, const char *name)
{
    return FALSE;
}

static BOOL is_jump_to(const BYTE *code, const void *target)
{
    return FALSE;
}

static BOOL is_loader_stub(const BYTE *code, const char *dll, const char *name)
{
    return FALSE;
}

#endif

/* Turns module's winebuild stub for name into a jump to function, after
 * decoding it; anything else (a real implementation) is left alone. */
BOOL patch_wine_stub(HMODULE module, const char *name, void *function)
{
    IMAGE_NT_HEADERS *nt;
    BYTE jump[JUMP_SIZE];
    BYTE *code;

    if (!module || !(nt = image_headers(module))) return FALSE;
    if (!(code = (BYTE *)GetProcAddress(module, name))) return FALSE;
    if (is_jump_to(code, function)) return TRUE;
    if (!is_wine_stub(module, nt, code, name))
    {
        TRACE("%s at %p is not a known stub; left alone\n", name, code);
        return FALSE;
    }
    make_jump(jump, function);
    if (!write_memory(code, jump, sizeof(jump), TRUE))
    {
        refuse("stub (protect)", code);
        return FALSE;
    }
    TRACE("%s at %p now runs cocancel\n", name, code);
    return TRUE;
}

/* Turns combase's stubs for the API into jumps to the engine. */
static void patch_combase(HMODULE combase)
{
    IMAGE_NT_HEADERS *nt;
    BYTE jump[JUMP_SIZE];
    unsigned int i;

    if (!(nt = image_headers(combase))) return refuse("combase headers", combase);
    for (i = 0; i < api_export_count; i++)
    {
        BYTE *code = (BYTE *)GetProcAddress(combase, api_exports[i].name);

        if (!code) continue;
        if (is_jump_to(code, api_exports[i].function)) continue;
        if (!is_wine_stub(combase, nt, code, api_exports[i].name))
        {
            /* Either Wine implements it now (then it is left alone), or this
             * is a layout we do not know; in both cases hands off. */
            TRACE("combase.%s at %p is not a known stub; left alone\n", api_exports[i].name, code);
            status_add(COCANCEL_ROUTE_COMBASE_REAL);
            continue;
        }
        make_jump(jump, api_exports[i].function);
        if (!write_memory(code, jump, sizeof(jump), TRUE)) return refuse("combase stub (protect)", code);
        TRACE("combase.%s at %p now runs cocancel\n", api_exports[i].name, code);
        status_add(COCANCEL_ROUTE_COMBASE_STUBS);
    }
}

static const IMAGE_EXPORT_DIRECTORY *export_directory(HMODULE module, IMAGE_NT_HEADERS *nt, DWORD *rva, DWORD *size)
{
    IMAGE_DATA_DIRECTORY *dir = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXPORT];
    const IMAGE_EXPORT_DIRECTORY *exports;

    if (!(exports = image_rva(module, nt, dir->VirtualAddress, dir->Size))) return NULL;
    if (dir->Size < sizeof(*exports)) return NULL;
    if (!image_rva(module, nt, exports->AddressOfFunctions, exports->NumberOfFunctions * 4)) return NULL;
    if (exports->NumberOfNames &&
        (!image_rva(module, nt, exports->AddressOfNames, exports->NumberOfNames * 4) ||
         !image_rva(module, nt, exports->AddressOfNameOrdinals, exports->NumberOfNames * 2)))
        return NULL;
    *rva = dir->VirtualAddress;
    *size = dir->Size;
    return exports;
}

struct graft_name
{
    const char *name;
    WORD index;   /* into AddressOfFunctions */
};

static int __cdecl compare_graft_names(const void *a, const void *b)
{
    return strcmp(((const struct graft_name *)a)->name, ((const struct graft_name *)b)->name);
}

/* Memory for the new export table: above the image and within 2 GB of it, so every RVA fits. */
static BYTE *alloc_near_image(HMODULE module, IMAGE_NT_HEADERS *nt, SIZE_T size)
{
    ULONG_PTR base = (ULONG_PTR)module, addr;
    ULONG_PTR granularity = 0x10000;
    void *block;

    addr = (base + nt->OptionalHeader.SizeOfImage + granularity - 1) & ~(granularity - 1);
    for (; addr - base < 0x7fff0000 - size; addr += granularity)
        if ((block = VirtualAlloc((void *)addr, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE))) return block;
    return NULL;
}

static BOOL module_is(HMODULE module, const WCHAR *name);

/* Is this the builtin ole32 that cocancel's carrier loaded to forward to?
 * Programs never bind to it by name, so it is left as it is. */
static BOOL behind_carrier(HMODULE ole32)
{
    HMODULE modules[1024];
    DWORD needed = 0, i;

    if (!K32EnumProcessModules(GetCurrentProcess(), modules, sizeof(modules), &needed)) return FALSE;
    for (i = 0; i < min(needed / sizeof(HMODULE), ARRAY_SIZE(modules)); i++)
        if (modules[i] != ole32 && module_is(modules[i], L"ole32.dll") &&
            GetProcAddress(modules[i], "CocancelCarrierVersion"))
            return TRUE;
    return FALSE;
}

/*
 * Gives ole32 a new export directory: every existing export (forwarder
 * strings copied along, since a forwarder is recognised by lying inside the
 * directory), plus a jump for each API function ole32 lacks, names sorted
 * for the loader's binary search.  Then DataDirectory[EXPORT] is repointed.
 */
static void graft_ole32(HMODULE ole32)
{
    const IMAGE_EXPORT_DIRECTORY *old;
    unsigned int missing[ARRAY_SIZE(api_exports)], missing_count = 0, i, j;
    DWORD old_rva, old_size, nfuncs, nnames, dir_rva, dir_size, strings_size = 0, *funcs, *names;
    IMAGE_EXPORT_DIRECTORY *dir;
    IMAGE_DATA_DIRECTORY new_entry, *entry;
    struct graft_name *sorted;
    const DWORD *old_funcs, *old_names;
    const WORD *old_ords;
    const char *dll_name;
    IMAGE_NT_HEADERS *nt;
    SIZE_T total;
    WORD *ords;
    BYTE *block, *stubs;
    char *strings;
    DWORD protect;

    if (behind_carrier(ole32)) return;
    for (i = 0; i < api_export_count; i++)
        if (!GetProcAddress(ole32, api_exports[i].name)) missing[missing_count++] = i;
    if (!missing_count)
    {
        status_add(COCANCEL_ROUTE_OLE32_NATIVE);
        return;
    }
    if (!(nt = image_headers(ole32))) return refuse("ole32 headers", ole32);
    if (!(old = export_directory(ole32, nt, &old_rva, &old_size))) return refuse("ole32 exports", ole32);
    if (!(dll_name = image_rva(ole32, nt, old->Name, 1)) || !string_equals(dll_name, "ole32.dll", TRUE))
        return refuse("ole32 export name", ole32);
    if (old->NumberOfFunctions > 0xfff0 || old->NumberOfNames > old->NumberOfFunctions)
        return refuse("ole32 export counts", ole32);

    old_funcs = (const DWORD *)((BYTE *)ole32 + old->AddressOfFunctions);
    old_names = (const DWORD *)((BYTE *)ole32 + old->AddressOfNames);
    old_ords = (const WORD *)((BYTE *)ole32 + old->AddressOfNameOrdinals);
    for (i = 0; i < old->NumberOfFunctions; i++)
        if (old_funcs[i] >= old_rva && old_funcs[i] < old_rva + old_size)
            strings_size += strlen((char *)ole32 + old_funcs[i]) + 1;
    strings_size += strlen(dll_name) + 1;
    for (j = 0; j < missing_count; j++) strings_size += strlen(api_exports[missing[j]].name) + 1;

    nfuncs = old->NumberOfFunctions + missing_count;
    nnames = old->NumberOfNames + missing_count;
    dir_size = sizeof(*dir) + nfuncs * 4 + nnames * 4 + nnames * 2 + strings_size;
    /* The jumps come first: an export inside the directory would read as a forwarder. */
    total = missing_count * 16 + dir_size;
    if (!(sorted = HeapAlloc(GetProcessHeap(), 0, nnames * sizeof(*sorted)))) return;
    if (!(block = alloc_near_image(ole32, nt, total)))
    {
        HeapFree(GetProcessHeap(), 0, sorted);
        return refuse("ole32 export graft (no memory near the image)", ole32);
    }

    stubs = block;
    dir = (IMAGE_EXPORT_DIRECTORY *)(block + missing_count * 16);
    dir_rva = (DWORD)((BYTE *)dir - (BYTE *)ole32);
    funcs = (DWORD *)(dir + 1);
    names = funcs + nfuncs;
    ords = (WORD *)(names + nnames);
    strings = (char *)(ords + nnames);

    *dir = *old;
    dir->NumberOfFunctions = nfuncs;
    dir->NumberOfNames = nnames;
    dir->AddressOfFunctions = (DWORD)((BYTE *)funcs - (BYTE *)ole32);
    dir->AddressOfNames = (DWORD)((BYTE *)names - (BYTE *)ole32);
    dir->AddressOfNameOrdinals = (DWORD)((BYTE *)ords - (BYTE *)ole32);
    strcpy(strings, dll_name);
    dir->Name = (DWORD)((BYTE *)strings - (BYTE *)ole32);
    strings += strlen(strings) + 1;

    for (i = 0; i < old->NumberOfFunctions; i++)
    {
        funcs[i] = old_funcs[i];
        if (old_funcs[i] >= old_rva && old_funcs[i] < old_rva + old_size)
        {
            strcpy(strings, (char *)ole32 + old_funcs[i]);
            funcs[i] = (DWORD)((BYTE *)strings - (BYTE *)ole32);
            strings += strlen(strings) + 1;
        }
    }
    for (i = 0; i < old->NumberOfNames; i++)
    {
        sorted[i].name = (char *)ole32 + old_names[i];
        sorted[i].index = old_ords[i];
    }
    for (j = 0; j < missing_count; j++)
    {
        const struct api_export *api = &api_exports[missing[j]];

        make_jump(stubs + 16 * j, api->function);
        funcs[old->NumberOfFunctions + j] = (DWORD)((stubs + 16 * j) - (BYTE *)ole32);
        /* Names are RVAs too, so they are copied next to the directory. */
        strcpy(strings, api->name);
        sorted[old->NumberOfNames + j].name = strings;
        sorted[old->NumberOfNames + j].index = old->NumberOfFunctions + j;
        strings += strlen(strings) + 1;
    }
    qsort(sorted, nnames, sizeof(*sorted), compare_graft_names);
    for (i = 0; i < nnames; i++)
    {
        names[i] = (DWORD)((const BYTE *)sorted[i].name - (BYTE *)ole32);
        ords[i] = sorted[i].index;
    }
    HeapFree(GetProcessHeap(), 0, sorted);
    VirtualProtect(block, total, PAGE_EXECUTE_READ, &protect);
    FlushInstructionCache(GetCurrentProcess(), block, total);

    entry = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXPORT];
    new_entry.VirtualAddress = dir_rva;
    new_entry.Size = dir_size;
    if (!write_memory(entry, &new_entry, sizeof(new_entry), FALSE))
        return refuse("ole32 export directory entry (protect)", entry);
    TRACE("ole32 export table grafted at %p with %u functions\n", dir, missing_count);
    status_add(COCANCEL_ROUTE_OLE32_GRAFT);
}

/* The import slot of module for dll!name (by name), or NULL. */
void **find_import_slot(HMODULE module, const char *dll, const char *name)
{
    const IMAGE_IMPORT_DESCRIPTOR *desc;
    IMAGE_DATA_DIRECTORY *dir;
    IMAGE_NT_HEADERS *nt;

    if (!(nt = image_headers(module))) return NULL;
    dir = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
    if (!(desc = image_rva(module, nt, dir->VirtualAddress, dir->Size))) return NULL;
    for (; image_rva(module, nt, (DWORD)((BYTE *)desc - (BYTE *)module), sizeof(*desc)) && desc->Name; desc++)
    {
        const IMAGE_THUNK_DATA *names;
        IMAGE_THUNK_DATA *slots;
        const char *desc_dll;

        if (!(desc_dll = image_rva(module, nt, desc->Name, 1)) || _stricmp(desc_dll, dll)) continue;
        if (!desc->OriginalFirstThunk) continue;
        if (!(names = image_rva(module, nt, desc->OriginalFirstThunk, sizeof(*names)))) continue;
        if (!(slots = image_rva(module, nt, desc->FirstThunk, sizeof(*slots)))) continue;
        for (; readable(names, sizeof(*names)) && names->u1.AddressOfData; names++, slots++)
        {
            const IMAGE_IMPORT_BY_NAME *import;

            if (IMAGE_SNAP_BY_ORDINAL(names->u1.Ordinal)) continue;
            if (!(import = image_rva(module, nt, (DWORD)names->u1.AddressOfData, sizeof(*import)))) continue;
            if (!strcmp((const char *)import->Name, name)) return (void **)&slots->u1.Function;
        }
    }
    return NULL;
}

BOOL write_pointer(void **slot, void *value)
{
    return write_memory(slot, &value, sizeof(value), FALSE);
}

/*
 * Points module's import of dll!name at hook, if the slot holds exactly what
 * dll exports under that name; *real receives the original.  Anything else
 * is left alone.
 */
BOOL redirect_import(HMODULE module, const char *dll, const char *name, void *hook, void **real)
{
    HMODULE exporter = GetModuleHandleA(dll);
    void *target = exporter ? (void *)GetProcAddress(exporter, name) : NULL;
    void **slot;

    if (!target || !(slot = find_import_slot(module, dll, name)) || *slot != target) return FALSE;
    *real = target;
    if (write_pointer(slot, hook)) return TRUE;
    *real = NULL;
    return FALSE;
}

/* Does [ptr, ptr + size) lie in the image of module? */
BOOL in_module(HMODULE module, const void *ptr, SIZE_T size)
{
    IMAGE_NT_HEADERS *nt = image_headers(module);
    const BYTE *base = (const BYTE *)module;

    return nt && (const BYTE *)ptr >= base && (const BYTE *)ptr + size <= base + nt->OptionalHeader.SizeOfImage;
}

static const struct api_export *find_api(const char *name)
{
    unsigned int i;

    for (i = 0; i < api_export_count; i++)
        if (!strcmp(api_exports[i].name, name)) return &api_exports[i];
    return NULL;
}

/* Redirects a module's import slots that the loader bound to "unimplemented function" stubs. */
static void repair_imports(HMODULE module)
{
    const IMAGE_IMPORT_DESCRIPTOR *desc;
    IMAGE_DATA_DIRECTORY *dir;
    IMAGE_NT_HEADERS *nt;

    if (module == engine_module || !(nt = image_headers(module))) return;
    dir = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
    if (!dir->VirtualAddress) return;
    if (!(desc = image_rva(module, nt, dir->VirtualAddress, dir->Size))) return;

    for (; image_rva(module, nt, (DWORD)((BYTE *)desc - (BYTE *)module), sizeof(*desc)) && desc->Name; desc++)
    {
        const IMAGE_THUNK_DATA *names;
        IMAGE_THUNK_DATA *slots;
        const char *dll;

        if (!(dll = image_rva(module, nt, desc->Name, 1))) break;
        if (_stricmp(dll, "ole32.dll") && _stricmp(dll, "combase.dll")) continue;
        /* Without the name table the bound slots cannot be matched to names. */
        if (!desc->OriginalFirstThunk) continue;
        if (!(names = image_rva(module, nt, desc->OriginalFirstThunk, sizeof(*names)))) continue;
        if (!(slots = image_rva(module, nt, desc->FirstThunk, sizeof(*slots)))) continue;

        for (; readable(names, sizeof(*names)) && names->u1.AddressOfData; names++, slots++)
        {
            const IMAGE_IMPORT_BY_NAME *import;
            const struct api_export *api;
            ULONG_PTR target;

            if (IMAGE_SNAP_BY_ORDINAL(names->u1.Ordinal)) continue;
            if (!(import = image_rva(module, nt, (DWORD)names->u1.AddressOfData, sizeof(*import)))) continue;
            if (!(api = find_api((const char *)import->Name))) continue;
            if (!readable(slots, sizeof(*slots))) break;
            target = slots->u1.Function;
            /* Already bound to the engine, directly or through the grafted exports. */
            if (target == (ULONG_PTR)api->function || is_jump_to((const BYTE *)target, api->function)) continue;
            if (!is_loader_stub((const BYTE *)target, dll, api->name))
            {
                TRACE("%s import in %p bound to %p: not a loader stub, left alone\n", api->name, module, (void *)target);
                continue;
            }
            target = (ULONG_PTR)api->function;
            if (!write_memory(&slots->u1.Function, &target, sizeof(target), FALSE))
            {
                refuse("import slot (protect)", slots);
                continue;
            }
            TRACE("repaired %s!%s import of %p\n", dll, api->name, module);
            InterlockedIncrement((LONG *)&status.repaired_imports);
        }
    }
}

static BOOL module_is(HMODULE module, const WCHAR *name)
{
    WCHAR path[MAX_PATH];
    const WCHAR *base;
    DWORD len = GetModuleFileNameW(module, path, ARRAY_SIZE(path));

    if (!len || len >= ARRAY_SIZE(path)) return FALSE;
    base = wcsrchr(path, '\\');
    return !_wcsicmp(base ? base + 1 : path, name);
}

/* What the engine does for every module it sees, at start-up or when loaded. */
static void handle_module(HMODULE module)
{
    if (module_is(module, L"combase.dll")) patch_combase(module);
    else if (module_is(module, L"ole32.dll")) graft_ole32(module);
    repair_imports(module);
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

#define DLL_NOTIFICATION_LOADED 1

static void CALLBACK dll_notification(ULONG reason, const struct dll_notification_data *data, void *context)
{
    if (reason != DLL_NOTIFICATION_LOADED || !data) return;
    /* Runs under the loader lock, after the DLL's imports are bound and before its DllMain. */
    handle_module(data->base);
}

static void *notification_cookie;

void patch_install(HMODULE engine)
{
    NTSTATUS (WINAPI *p_LdrRegisterDllNotification)(ULONG, void *, void *, void **);
    HMODULE modules[1024], combase, self;
    DWORD needed = 0, i, count;

    engine_module = engine;
    /* The patches point into the engine, so it must never be unloaded. */
    GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_PIN | GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS,
                       (const WCHAR *)patch_install, &self);

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
        status_add(COCANCEL_ROUTE_DLL_NOTIFY);
    else
        WARN("LdrRegisterDllNotification is unavailable; DLLs loaded later keep their stubs\n");

    /* The carrier ole32.dll announces itself with an export of its own. */
    if (GetProcAddress(GetModuleHandleW(L"ole32.dll"), "CocancelCarrierVersion")) status_add(COCANCEL_ROUTE_CARRIER);
}
