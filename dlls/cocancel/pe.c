/*
 * Reading loaded PE images, and writing one value into them.
 *
 * Owns: bounds checks (is this memory readable, does this pointer lie in
 * that image), the export directory, the import table (one iterator for
 * every walk), memory near an image, and the protect/write/restore of a
 * single pointer or a few bytes.  Everything that patches Wine goes through
 * here, so that no other file reads a header or changes a protection.
 */

#include <string.h>
#include "cocancel_private.h"

/* Is [ptr, ptr + size) committed, readable memory within one region? */
BOOL pe_readable(const void *ptr, SIZE_T size)
{
    MEMORY_BASIC_INFORMATION info;
    const BYTE *start = ptr, *end;

    if (!ptr || !VirtualQuery(ptr, &info, sizeof(info))) return FALSE;
    if (info.State != MEM_COMMIT || (info.Protect & (PAGE_NOACCESS | PAGE_GUARD))) return FALSE;
    end = (const BYTE *)info.BaseAddress + info.RegionSize;
    return start + size >= start && start + size <= end;
}

BOOL pe_string_equals(const char *str, const char *expected, BOOL ignore_case)
{
    SIZE_T len = strlen(expected) + 1;

    if (!pe_readable(str, len)) return FALSE;
    return ignore_case ? !_stricmp(str, expected) : !strcmp(str, expected);
}

/* The NT headers of a mapped image, checked against its own size; NULL if malformed. */
IMAGE_NT_HEADERS *pe_headers(HMODULE module)
{
    IMAGE_DOS_HEADER *dos = (IMAGE_DOS_HEADER *)module;
    IMAGE_NT_HEADERS *nt;

    if (!pe_readable(dos, sizeof(*dos)) || dos->e_magic != IMAGE_DOS_SIGNATURE) return NULL;
    if (dos->e_lfanew <= 0 || dos->e_lfanew > 0x10000) return NULL;
    nt = (IMAGE_NT_HEADERS *)((BYTE *)module + dos->e_lfanew);
    if (!pe_readable(nt, sizeof(*nt)) || nt->Signature != IMAGE_NT_SIGNATURE) return NULL;
    if (nt->OptionalHeader.Magic != IMAGE_NT_OPTIONAL_HDR_MAGIC) return NULL;
    return nt;
}

void *pe_rva(HMODULE module, IMAGE_NT_HEADERS *nt, DWORD rva, DWORD size)
{
    if (!rva || rva >= nt->OptionalHeader.SizeOfImage || size > nt->OptionalHeader.SizeOfImage - rva)
        return NULL;
    return (BYTE *)module + rva;
}

/* Does [ptr, ptr + size) lie in the image of module? */
BOOL pe_in_module(HMODULE module, const void *ptr, SIZE_T size)
{
    IMAGE_NT_HEADERS *nt = pe_headers(module);
    const BYTE *base = (const BYTE *)module;

    return nt && (const BYTE *)ptr >= base && (const BYTE *)ptr + size <= base + nt->OptionalHeader.SizeOfImage;
}

/* Bytes readable from ptr to the end of the module image that holds it (0: in no image). */
SIZE_T pe_extent(const void *ptr)
{
    IMAGE_NT_HEADERS *nt;
    HMODULE module;
    const BYTE *end;

    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            ptr, &module) || !(nt = pe_headers(module)))
        return 0;
    end = (const BYTE *)module + nt->OptionalHeader.SizeOfImage;
    return (const BYTE *)ptr < end ? end - (const BYTE *)ptr : 0;
}

/* Is module's file name (without its directory) 'name'? */
BOOL pe_module_is(HMODULE module, const WCHAR *name)
{
    WCHAR path[MAX_PATH];
    const WCHAR *base;
    DWORD len = GetModuleFileNameW(module, path, ARRAY_SIZE(path));

    if (!len || len >= ARRAY_SIZE(path)) return FALSE;
    base = wcsrchr(path, '\\');
    return !_wcsicmp(base ? base + 1 : path, name);
}

const IMAGE_EXPORT_DIRECTORY *pe_export_directory(HMODULE module, IMAGE_NT_HEADERS *nt, DWORD *rva, DWORD *size)
{
    IMAGE_DATA_DIRECTORY *dir = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXPORT];
    const IMAGE_EXPORT_DIRECTORY *exports;

    if (!(exports = pe_rva(module, nt, dir->VirtualAddress, dir->Size))) return NULL;
    if (dir->Size < sizeof(*exports)) return NULL;
    if (!pe_rva(module, nt, exports->AddressOfFunctions, exports->NumberOfFunctions * 4)) return NULL;
    if (exports->NumberOfNames &&
        (!pe_rva(module, nt, exports->AddressOfNames, exports->NumberOfNames * 4) ||
         !pe_rva(module, nt, exports->AddressOfNameOrdinals, exports->NumberOfNames * 2)))
        return NULL;
    *rva = dir->VirtualAddress;
    *size = dir->Size;
    return exports;
}

/*
 * Calls visit(ctx, dll, name, slot) for each import by name of module whose
 * descriptor has a name table (without one, bound slots cannot be matched to
 * names), until visit returns FALSE.
 */
void pe_for_each_import(HMODULE module, BOOL (*visit)(void *ctx, const char *dll, const char *name, void **slot),
                        void *ctx)
{
    const IMAGE_IMPORT_DESCRIPTOR *desc;
    IMAGE_DATA_DIRECTORY *dir;
    IMAGE_NT_HEADERS *nt;

    if (!(nt = pe_headers(module))) return;
    dir = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_IMPORT];
    if (!(desc = pe_rva(module, nt, dir->VirtualAddress, dir->Size))) return;
    for (; pe_rva(module, nt, (DWORD)((BYTE *)desc - (BYTE *)module), sizeof(*desc)) && desc->Name; desc++)
    {
        const IMAGE_THUNK_DATA *names;
        IMAGE_THUNK_DATA *slots;
        const char *dll;

        if (!(dll = pe_rva(module, nt, desc->Name, 1))) return;
        if (!desc->OriginalFirstThunk) continue;
        if (!(names = pe_rva(module, nt, desc->OriginalFirstThunk, sizeof(*names)))) continue;
        if (!(slots = pe_rva(module, nt, desc->FirstThunk, sizeof(*slots)))) continue;
        for (; pe_readable(names, sizeof(*names)) && names->u1.AddressOfData; names++, slots++)
        {
            const IMAGE_IMPORT_BY_NAME *import;

            if (IMAGE_SNAP_BY_ORDINAL(names->u1.Ordinal)) continue;
            if (!(import = pe_rva(module, nt, (DWORD)names->u1.AddressOfData, sizeof(*import)))) continue;
            if (!pe_readable(slots, sizeof(*slots))) break;
            if (!visit(ctx, dll, (const char *)import->Name, (void **)&slots->u1.Function)) return;
        }
    }
}

struct import_query
{
    const char *dll, *name;
    void **slot;
};

static BOOL match_import(void *ctx, const char *dll, const char *name, void **slot)
{
    struct import_query *query = ctx;

    if (_stricmp(dll, query->dll) || strcmp(name, query->name)) return TRUE;
    query->slot = slot;
    return FALSE;
}

/* The import slot of module for dll!name (by name), or NULL. */
void **pe_find_import(HMODULE module, const char *dll, const char *name)
{
    struct import_query query = { dll, name, NULL };

    pe_for_each_import(module, match_import, &query);
    return query.slot;
}

/* Memory for new image data: above the image and within 2 GB of it, so every RVA fits. */
BYTE *pe_alloc_near(HMODULE module, IMAGE_NT_HEADERS *nt, SIZE_T size)
{
    ULONG_PTR base = (ULONG_PTR)module, addr;
    ULONG_PTR granularity = 0x10000;
    void *block;

    addr = (base + nt->OptionalHeader.SizeOfImage + granularity - 1) & ~(granularity - 1);
    for (; addr - base < 0x7fff0000 - size; addr += granularity)
        if ((block = VirtualAlloc((void *)addr, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE))) return block;
    return NULL;
}

/*
 * Writes size bytes at dest, which may be read-only.  Callers that may race
 * on the same page serialise through winepatch's lock; the pointer itself
 * is stored atomically, so a reader sees the old or the new value.
 */
BOOL pe_write(void *dest, const void *src, SIZE_T size, BOOL code)
{
    DWORD old;

    if (!VirtualProtect(dest, size, code ? PAGE_EXECUTE_READWRITE : PAGE_READWRITE, &old)) return FALSE;
    if (size == sizeof(void *) && !((ULONG_PTR)dest % sizeof(void *)))
        InterlockedExchangePointer(dest, *(void *const *)src);
    else
        memcpy(dest, src, size);
    VirtualProtect(dest, size, old, &old);
    if (code) FlushInstructionCache(GetCurrentProcess(), dest, size);
    return TRUE;
}

BOOL pe_write_pointer(void **slot, void *value)
{
    return pe_write(slot, &value, sizeof(value), FALSE);
}
