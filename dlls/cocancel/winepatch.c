/*
 * Every place where the engine changes Wine's code or data.
 *
 * Owns the patch points, each one checked before it is written and applied
 * at most once, under one lock:
 *
 *  - a winebuild stub of an unimplemented export, turned into a jump (the
 *    stub is decoded and the function name it carries read back first);
 *  - combase's client channel vtable: GetBuffer, SendReceive and FreeBuffer (every slot
 *    must lie in combase and the object must answer as a channel);
 *  - combase's imports of rpcrt4!I_RpcSendReceive, I_RpcGetBuffer,
 *    RpcServerUnregisterIf, RpcRaiseException, kernel32!SetEvent,
 *    WaitForMultipleObjectsEx and user32!MsgWaitForMultipleObjectsEx (each
 *    slot must hold the export);
 *  - rpcrt4's standard proxy/stub factory: CreateProxy and CreateStub (the
 *    vtable and its methods must lie in rpcrt4);
 *  - combase's proxy manager: QueryInterface (vtable and methods in combase,
 *    and the object behaves as a COM identity);
 *  - rpcrt4!NdrDcomAsyncClientCall (x86_64) and NdrDcomAsyncStubCall,
 *    winebuild stubs.
 *
 * The replacements come from the layers above, handed in once by
 * winepatch_init(); Wine's originals are published in wine_real as each
 * point is applied.  Whatever does not match is left alone, counted as
 * refused and reported with a warn+cocancel line.
 */

#include <string.h>
#include "cocancel_private.h"

#define USE_STUBLESS_PROXY
#include <rpcproxy.h>

struct wine_functions wine_real;
static struct wine_functions hooks;
static SRWLOCK patch_lock = SRWLOCK_INIT;
static LONG applied;
static LONG refused;

/*
 * COCANCEL_TEST_MISMATCH (a test knob, documented in the README) names
 * patch points, comma-separated, whose checks look at ntdll instead of the
 * module they expect: each then finds what another Wine version might give
 * it (a vtable outside combase, an import that is not there, an export that
 * is not the stub) and goes through its real refusal.
 */
static DWORD forced_mismatch;

static const struct
{
    const char *name;
    DWORD point;
}
point_names[] =
{
    { "channel", WINEPATCH_CHANNEL },
    { "transport", WINEPATCH_TRANSPORT },
    { "getbuffer", WINEPATCH_GETBUFFER },
    { "unregister", WINEPATCH_UNREGISTER },
    { "waits", WINEPATCH_WAITS },
    { "factory", WINEPATCH_FACTORY },
    { "manager", WINEPATCH_MANAGER },
    { "ndr_async", WINEPATCH_NDR_ASYNC },
    { "ndr_async_stub", WINEPATCH_NDR_ASYNC_STUB },
    { "dispatch", WINEPATCH_DISPATCH },
    { "api_stubs", WINEPATCH_API_STUBS },
    { "api_one", WINEPATCH_API_ONE },
};

static void read_forced_mismatch(void)
{
    char value[256], *name, *next;
    DWORD len = GetEnvironmentVariableA("COCANCEL_TEST_MISMATCH", value, sizeof(value));
    unsigned int i;

    if (!len || len >= sizeof(value)) return;
    for (name = value; name; name = next)
    {
        if ((next = strchr(name, ','))) *next++ = 0;
        for (i = 0; i < ARRAY_SIZE(point_names); i++)
            if (!strcmp(name, point_names[i].name)) forced_mismatch |= point_names[i].point;
    }
    if (forced_mismatch) WARN("COCANCEL_TEST_MISMATCH: patch points %#lx check the wrong module\n",
                              (unsigned long)forced_mismatch);
}

HMODULE winepatch_module(DWORD point, const WCHAR *name)
{
    return GetModuleHandleW(forced_mismatch & point ? L"ntdll.dll" : name);
}

void winepatch_init(const struct wine_functions *replacements)
{
    hooks = *replacements;
    read_forced_mismatch();
}

DWORD winepatch_applied(void)
{
    return (DWORD)InterlockedCompareExchange(&applied, 0, 0);
}

DWORD winepatch_refused(void)
{
    return (DWORD)InterlockedCompareExchange(&refused, 0, 0);
}

void winepatch_refuse(const char *what, const void *where)
{
    WARN("refusing to patch %s at %p: not what was expected\n", what, where);
    InterlockedIncrement(&refused);
}

static void mark_applied(DWORD point)
{
    InterlockedOr(&applied, point);
}

/* Takes the lock unless point was applied already (then FALSE, nothing held). */
static BOOL begin_patch(DWORD point)
{
    if (winepatch_applied() & point) return FALSE;
    AcquireSRWLockExclusive(&patch_lock);
    if (!(winepatch_applied() & point)) return TRUE;
    ReleaseSRWLockExclusive(&patch_lock);
    return FALSE;
}

static void end_patch(void)
{
    ReleaseSRWLockExclusive(&patch_lock);
}

/* ---------------------------------------------------------------------
 * winebuild stubs.
 */

#ifdef __x86_64__

/* jmp qword ptr [rip+0]; dq target */
void winepatch_make_jump(BYTE *code, const void *target)
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
 * TRUE only if all of it is there and the name is 'name'.
 */
static BOOL is_wine_stub(HMODULE module, IMAGE_NT_HEADERS *nt, const BYTE *code, const char *name)
{
    const BYTE *end = (BYTE *)module + nt->OptionalHeader.SizeOfImage;
    const char *str;

    if (!pe_readable(code, 23)) return FALSE;
    if (memcmp(code, "\x48\x83\xec\x28\x48\x8d\x0d", 7)) return FALSE;
    if (memcmp(code + 11, "\x48\x8d\x15", 3) || code[18] != 0xe8) return FALSE;
    str = (const char *)code + 18 + read_rel32(code + 14);
    if ((const BYTE *)str < (const BYTE *)module || (const BYTE *)str + strlen(name) + 1 > end) return FALSE;
    return pe_string_equals(str, name, FALSE);
}

BOOL winepatch_is_jump_to(const BYTE *code, const void *target)
{
    BYTE expected[WINEPATCH_JUMP_SIZE];

    winepatch_make_jump(expected, target);
    return pe_readable(code, WINEPATCH_JUMP_SIZE) && !memcmp(code, expected, WINEPATCH_JUMP_SIZE);
}

#else

/* mov eax, target; jmp eax */
void winepatch_make_jump(BYTE *code, const void *target)
{
    ULONG_PTR address = (ULONG_PTR)target;

    code[0] = 0xb8;
    memcpy(code + 1, &address, sizeof(address));
    code[5] = 0xff;
    code[6] = 0xe0;
}

static BOOL in_module(HMODULE module, IMAGE_NT_HEADERS *nt, ULONG_PTR address, SIZE_T size)
{
    ULONG_PTR start = (ULONG_PTR)module, end = start + nt->OptionalHeader.SizeOfImage;

    return address >= start && address < end && size <= end - address;
}

/*
 * A winebuild i386 stub for an unimplemented export (as Wine 10.0 builds
 * it, run under WoW64), after a few nops of padding:
 *   83 ec 0c                 sub  esp, 0xc
 *   c7 44 24 04 imm32        mov  dword [esp+4], "FunctionName"
 *   c7 04 24 imm32           mov  dword [esp], descriptor
 *   e8 rel32                 call __wine_spec_unimplemented_stub
 * TRUE only if all of it is there, every address lies in the module and the
 * name is 'name'.
 */
static BOOL is_wine_stub(HMODULE module, IMAGE_NT_HEADERS *nt, const BYTE *code, const char *name)
{
    static const BYTE sub_esp[] = { 0x83, 0xec, 0x0c, 0xc7, 0x44, 0x24, 0x04 };
    static const BYTE mov_esp[] = { 0xc7, 0x04, 0x24 };
    ULONG_PTR string, descriptor, target;
    unsigned int pad = 0;
    INT32 rel;

    if (!pe_readable(code, 16 + 24)) return FALSE;
    while (pad < 16 && code[pad] == 0x90) pad++;
    code += pad;
    if (memcmp(code, sub_esp, sizeof(sub_esp)) || memcmp(code + 11, mov_esp, sizeof(mov_esp)) || code[18] != 0xe8)
        return FALSE;
    memcpy(&string, code + 7, sizeof(DWORD));
    memcpy(&descriptor, code + 14, sizeof(DWORD));
    memcpy(&rel, code + 19, sizeof(rel));
    target = (ULONG_PTR)code + 23 + rel;
    if (!in_module(module, nt, string, strlen(name) + 1) || !in_module(module, nt, descriptor, 1) ||
        !in_module(module, nt, target, 1))
        return FALSE;
    return pe_string_equals((const char *)string, name, FALSE);
}

BOOL winepatch_is_jump_to(const BYTE *code, const void *target)
{
    BYTE expected[WINEPATCH_JUMP_SIZE];

    winepatch_make_jump(expected, target);
    return pe_readable(code, WINEPATCH_JUMP_SIZE) && !memcmp(code, expected, WINEPATCH_JUMP_SIZE);
}

#endif

/*
 * Turns module's winebuild stub for name into a jump to function, after
 * decoding it.  Anything else (a real implementation) is left alone.  With
 * function NULL it only looks (STUB_FOUND for the stub).
 */
enum stub_result winepatch_stub(DWORD point, HMODULE module, const char *name, void *function)
{
    BYTE jump[WINEPATCH_JUMP_SIZE];
    enum stub_result result;
    IMAGE_NT_HEADERS *nt;
    BYTE *code;

    if (!module || !(nt = pe_headers(module))) return STUB_ABSENT;
    if (!(code = (BYTE *)GetProcAddress(module, name))) return STUB_ABSENT;
    AcquireSRWLockExclusive(&patch_lock);
    if (function && winepatch_is_jump_to(code, function)) result = STUB_PATCHED;
    /* A forced mismatch looks for the stub of no function at all. */
    else if (!is_wine_stub(module, nt, code, forced_mismatch & point ? "" : name))
    {
        TRACE("%s at %p is not a known stub; left alone\n", name, code);
        result = STUB_NOT_A_STUB;
    }
    else if (!function) result = STUB_FOUND;
    else
    {
        winepatch_make_jump(jump, function);
        if (pe_write(code, jump, sizeof(jump), TRUE))
        {
            TRACE("%s at %p now runs cocancel\n", name, code);
            result = STUB_PATCHED;
        }
        else
        {
            winepatch_refuse("stub (protect)", code);
            result = STUB_REFUSED;
        }
    }
    end_patch();
    return result;
}

/* An rpcrt4 stub of Wine's runs the engine's function instead (point: its patch point). */
static void take_over_rpcrt4_stub(DWORD point, const char *name, void *function, void **real)
{
    if (!function) return;
    switch (winepatch_stub(point, GetModuleHandleW(L"rpcrt4.dll"), name, function))
    {
    case STUB_PATCHED:
        *real = function;
        mark_applied(point);
        break;
    case STUB_NOT_A_STUB:
        WARN("rpcrt4's %s is not the stub expected; left as it is\n", name);
        break;
    default:
        WARN("rpcrt4's %s not found as expected; code that calls it gets Wine's stub\n", name);
        InterlockedIncrement(&refused);
        break;
    }
}

/* rpcrt4's NdrDcomAsyncClientCall and NdrDcomAsyncStubCall, stubs in Wine, run the engine's functions. */
void winepatch_ndr_async(void)
{
    take_over_rpcrt4_stub(WINEPATCH_NDR_ASYNC, "NdrDcomAsyncClientCall", hooks.NdrDcomAsyncClientCall,
                          &wine_real.NdrDcomAsyncClientCall);
    take_over_rpcrt4_stub(WINEPATCH_NDR_ASYNC_STUB, "NdrDcomAsyncStubCall", hooks.NdrDcomAsyncStubCall,
                          &wine_real.NdrDcomAsyncStubCall);
}

/* ---------------------------------------------------------------------
 * Vtables in Wine's images.
 */

/* Do vtbl and its first count methods all lie in module? */
static BOOL vtable_in_module(HMODULE module, void **vtbl, unsigned int count)
{
    unsigned int i;

    if (!module || !pe_in_module(module, vtbl, count * sizeof(void *))) return FALSE;
    for (i = 0; i < count; i++) if (!pe_in_module(module, vtbl[i], 1)) return FALSE;
    return TRUE;
}

/* Points vtbl[slot] at hook; *real keeps the original (NULL, and nothing changed, on failure). */
static BOOL replace_slot(void **vtbl, unsigned int slot, void *hook, void **real)
{
    *real = vtbl[slot];
    if (pe_write_pointer(&vtbl[slot], hook)) return TRUE;
    *real = NULL;
    return FALSE;
}

/* ---------------------------------------------------------------------
 * combase's client channel vtable.
 */

void winepatch_channel(IRpcChannelBuffer *chan)
{
    HMODULE combase = winepatch_module(WINEPATCH_CHANNEL, L"combase.dll");
    void **vtbl = (void **)chan->lpVtbl;
    IRpcChannelBuffer *same = NULL;

    if (!begin_patch(WINEPATCH_CHANNEL)) return;
    /* Only Wine's own channel, all of whose methods live in combase, is touched. */
    if (!vtable_in_module(combase, vtbl, 8))
    {
        WARN("client channel vtable %p or its methods are not in combase; not patched\n", vtbl);
        goto refuse;
    }
    if (IRpcChannelBuffer_QueryInterface(chan, &IID_IRpcChannelBuffer, (void **)&same) != S_OK || same != chan)
    {
        if (same) IRpcChannelBuffer_Release(same);
        WARN("object %p does not behave as a channel; not patched\n", chan);
        goto refuse;
    }
    IRpcChannelBuffer_Release(same);

    /* FreeBuffer first: it is ready for abandoned calls before any can exist;
     * then GetBuffer, which notes what SendReceive needs of each request. */
    if (!replace_slot(vtbl, 5, (void *)hooks.FreeBuffer, (void **)&wine_real.FreeBuffer)) goto refuse;
    if (!replace_slot(vtbl, 3, (void *)hooks.GetBuffer, (void **)&wine_real.GetBuffer))
    {
        pe_write_pointer(&vtbl[5], (void *)wine_real.FreeBuffer);
        goto refuse;
    }
    if (!replace_slot(vtbl, 4, (void *)hooks.SendReceive, (void **)&wine_real.SendReceive))
    {
        pe_write_pointer(&vtbl[3], (void *)wine_real.GetBuffer);
        pe_write_pointer(&vtbl[5], (void *)wine_real.FreeBuffer);
        goto refuse;
    }
    mark_applied(WINEPATCH_CHANNEL);
    end_patch();
    TRACE("client channel vtable %p patched\n", vtbl);
    return;

refuse:
    InterlockedIncrement(&refused);
    end_patch();
}

/* ---------------------------------------------------------------------
 * combase's imports.
 */

/*
 * Points module's import of dll!name at hook, if the slot holds exactly
 * what dll exports under that name; *real receives the original.
 */
static BOOL redirect_import(HMODULE module, const char *dll, const char *name, void *hook, void **real)
{
    HMODULE exporter = GetModuleHandleA(dll);
    void *target = exporter ? (void *)GetProcAddress(exporter, name) : NULL;
    void **slot;

    if (!hook || !target || !(slot = pe_find_import(module, dll, name)) || *slot != target) return FALSE;
    *real = target;
    if (pe_write_pointer(slot, hook)) return TRUE;
    *real = NULL;
    return FALSE;
}

/* rpcrt4's transport under the channel (transport.c), and the unregistration of interfaces. */
void winepatch_transport_imports(void)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");

    if (!combase || !begin_patch(WINEPATCH_UNREGISTER | WINEPATCH_TRANSPORT)) return;
    if (redirect_import(winepatch_module(WINEPATCH_UNREGISTER, L"combase.dll"), "rpcrt4.dll",
                        "RpcServerUnregisterIf", (void *)hooks.RpcServerUnregisterIf,
                        (void **)&wine_real.RpcServerUnregisterIf))
        mark_applied(WINEPATCH_UNREGISTER);
    else
    {
        WARN("combase's import of RpcServerUnregisterIf not found as expected; releasing a proxy before "
             "its cancelled call ends may hang the server\n");
        InterlockedIncrement(&refused);
    }
    if (!redirect_import(winepatch_module(WINEPATCH_TRANSPORT, L"combase.dll"), "rpcrt4.dll", "I_RpcSendReceive",
                         (void *)hooks.I_RpcSendReceive,
                         (void **)&wine_real.I_RpcSendReceive))
    {
        WARN("combase's import of I_RpcSendReceive not found as expected; STA callers are released by the "
             "server\n");
        InterlockedIncrement(&refused);
        end_patch();
        return;
    }
    mark_applied(WINEPATCH_TRANSPORT);
    if (redirect_import(winepatch_module(WINEPATCH_GETBUFFER, L"combase.dll"), "rpcrt4.dll", "I_RpcGetBuffer",
                        (void *)hooks.I_RpcGetBuffer,
                        (void **)&wine_real.I_RpcGetBuffer))
        mark_applied(WINEPATCH_GETBUFFER);
    else
    {
        WARN("combase's import of I_RpcGetBuffer not found as expected; MTA callers always use a helper "
             "thread\n");
        InterlockedIncrement(&refused);
    }
    end_patch();
}

/*
 * Where combase's dispatch of an incoming call ends without a reply: an
 * STA's dispatch sets the event its RPC thread waits on, an MTA's raises the
 * failure to rpcrt4 (orpchook.c ends the call contexts of such calls there).
 */
void winepatch_dispatch_imports(void)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");

    if (!combase || !begin_patch(WINEPATCH_DISPATCH)) return;
    combase = winepatch_module(WINEPATCH_DISPATCH, L"combase.dll");
    if (redirect_import(combase, "kernel32.dll", "SetEvent", (void *)hooks.SetEvent, (void **)&wine_real.SetEvent) &&
        redirect_import(combase, "rpcrt4.dll", "RpcRaiseException", (void *)hooks.RpcRaiseException,
                        (void **)&wine_real.RpcRaiseException))
        mark_applied(WINEPATCH_DISPATCH);
    else
    {
        /* SetEvent may have been redirected alone: it still only passes the call on. */
        WARN("combase's imports of SetEvent and RpcRaiseException not found as expected; a rejected or faulted "
             "incoming call leaves its call context behind\n");
        InterlockedIncrement(&refused);
    }
    end_patch();
}

/* The two waits combase's calls wait with (runner.c parks fibers there). */
void winepatch_wait_imports(void)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");

    if (!combase || !begin_patch(WINEPATCH_WAITS)) return;
    combase = winepatch_module(WINEPATCH_WAITS, L"combase.dll");
    if (redirect_import(combase, "kernel32.dll", "WaitForMultipleObjectsEx", (void *)hooks.WaitForMultipleObjectsEx,
                        (void **)&wine_real.WaitForMultipleObjectsEx) &&
        redirect_import(combase, "user32.dll", "MsgWaitForMultipleObjectsEx",
                        (void *)hooks.MsgWaitForMultipleObjectsEx, (void **)&wine_real.MsgWaitForMultipleObjectsEx))
        mark_applied(WINEPATCH_WAITS);
    else
    {
        WARN("combase's wait imports not found as expected; Begin_ waits for the reply\n");
        InterlockedIncrement(&refused);
    }
    end_patch();
}

/* ---------------------------------------------------------------------
 * rpcrt4's standard proxy/stub factory and combase's proxy manager.
 */

static const CLSID CLSID_CocancelNoProxies = {0x9d3f1b24, 0x6c1e, 0x4f7a, {0xa4, 0x0b, 0x2c, 0x61, 0x5e, 0x90, 0x13, 0x7d}};

/* rpcrt4's standard factory vtable, obtained from rpcrt4 itself with an empty proxy file list. */
void winepatch_proxy_factory(void)
{
    static const ProxyFileInfo *no_files[] = { NULL };
    static CStdPSFactoryBuffer factory;
    HMODULE rpcrt4 = winepatch_module(WINEPATCH_FACTORY, L"rpcrt4.dll");
    IPSFactoryBuffer *ps = NULL;
    void **vtbl;

    if (!begin_patch(WINEPATCH_FACTORY)) return;
    if (!rpcrt4 || FAILED(NdrDllGetClassObject(&CLSID_CocancelNoProxies, &IID_IPSFactoryBuffer, (void **)&ps,
                                                no_files, &CLSID_CocancelNoProxies, &factory)) ||
        (void *)ps != (void *)&factory)
        goto refuse;
    vtbl = (void **)factory.lpVtbl;
    if (!vtable_in_module(rpcrt4, vtbl, 5) ||
        !replace_slot(vtbl, 3, (void *)hooks.CreateProxy, (void **)&wine_real.CreateProxy) ||
        !replace_slot(vtbl, 4, (void *)hooks.CreateStub, (void **)&wine_real.CreateStub))
        goto refuse;
    mark_applied(WINEPATCH_FACTORY);
    end_patch();
    TRACE("standard proxy factory vtable %p hooked\n", vtbl);
    return;

refuse:
    WARN("rpcrt4's proxy factory not recognised; no asynchronous calls\n");
    InterlockedIncrement(&refused);
    end_patch();
}

/*
 * The proxy manager is Wine's: its IUnknown vtable and methods are in
 * combase, and it behaves as a COM identity.  Its QueryInterface slot is
 * redirected once; two threads creating their first proxies at once cannot
 * both read and write it (the second would take the hook for the original).
 */
void winepatch_proxy_manager(IUnknown *manager)
{
    HMODULE combase = winepatch_module(WINEPATCH_MANAGER, L"combase.dll");
    void **vtbl = *(void ***)manager;
    IUnknown *unk = NULL;

    if (!begin_patch(WINEPATCH_MANAGER)) return;
    if (!vtable_in_module(combase, vtbl, 3)) goto refuse;
    if (FAILED(((HRESULT (WINAPI *)(IUnknown *, REFIID, void **))vtbl[0])(manager, &IID_IUnknown, (void **)&unk)) ||
        unk != manager)
    {
        if (unk) IUnknown_Release(unk);
        goto refuse;
    }
    IUnknown_Release(unk);
    if (!replace_slot(vtbl, 0, (void *)hooks.manager_QueryInterface, (void **)&wine_real.manager_QueryInterface))
        goto refuse;
    mark_applied(WINEPATCH_MANAGER);
    end_patch();
    TRACE("proxy manager vtable %p patched\n", vtbl);
    return;

refuse:
    WARN("proxy manager %p not recognised; no ICallFactory on proxies\n", manager);
    InterlockedIncrement(&refused);
    end_patch();
}
