/*
 * Asynchronous calls on standard proxies: ICallFactory, call objects and the
 * generic Begin_/Finish_ engine.
 *
 * How a call runs.  Begin_X starts the synchronous method X of the proxy's
 * own interface proxy, with Wine's NDR engine and channel, on a fiber of the
 * calling thread.  Everything that needs the caller's apartment - marshaling
 * the [in] parameters, GetBuffer, posting the request, later unmarshaling
 * the reply - so runs on the caller's thread, as for a synchronous call.
 * When Wine's SendReceive first blocks waiting for the reply (combase's
 * imports of WaitForMultipleObjectsEx and MsgWaitForMultipleObjectsEx are
 * redirected for that), the fiber parks and Begin_ returns: the request is
 * on its way and the [in] parameters are no longer needed.  A thread-pool
 * wait takes over Wine's event and notes the reply.  Finish_X waits (pumping
 * in an STA), switches back to the fiber, which returns from the wait,
 * unmarshals the reply into storage the call object owns, and returns the
 * method's HRESULT; Finish_ copies the [out] values to its own arguments.
 * On the wire it is the synchronous call.
 *
 * The Begin_/Finish_ methods are not code per interface: every async vtable
 * slot is a small thunk that passes its slot number to one dispatcher, which
 * reads the proxy DLL's procedure format strings (fmt.c) to know where each
 * argument is and how large each [out] value is.
 *
 * Cancelling marks the call: its reply, whenever it comes, is discarded
 * (SendReceive reports RPC_E_CALL_CANCELED to the NDR engine, which frees it)
 * when the fiber is resumed on its thread - at Finish_, or, for calls whose
 * object is gone, at the thread's next use of the engine.
 *
 * ICallFactory: rpcrt4's standard proxy/stub factory is watched when it
 * creates interface proxies; those whose proxy file names an async interface
 * are recorded, and the proxy manager's QueryInterface answers ICallFactory
 * for them.  Both vtable slots are checked before they are replaced.
 */

#include "cocancel_private.h"

#define USE_STUBLESS_PROXY
#include <rpcproxy.h>

#include "fmt.h"

#ifdef __x86_64__
#define PTR_SIZE 8
#else
#define PTR_SIZE 4
#endif

#define MAX_THUNKS 512
#define FRAME_BYTES 1024
#define FIBER_STACK (256 * 1024)

/* ---------------------------------------------------------------------
 * Thunks: slot n of every generated async vtable jumps to async_entry with n.
 */

HRESULT CDECL async_dispatch(IUnknown *iface, unsigned int index, BYTE *frame, const double *fregs);

#ifdef __x86_64__
__asm__(
    ".text\n"
    ".balign 16\n"
    "async_entry:\n"
    ".seh_proc async_entry\n"
    "\tmovq %rcx, 8(%rsp)\n"
    "\tmovq %rdx, 16(%rsp)\n"
    "\tmovq %r8, 24(%rsp)\n"
    "\tmovq %r9, 32(%rsp)\n"
    "\tsubq $0x48, %rsp\n"
    ".seh_stackalloc 0x48\n"
    ".seh_endprologue\n"
    /* Floating-point arguments 1-3 arrive in xmm1-xmm3 only. */
    "\tmovsd %xmm1, 0x20(%rsp)\n"
    "\tmovsd %xmm2, 0x28(%rsp)\n"
    "\tmovsd %xmm3, 0x30(%rsp)\n"
    "\tmovl %r10d, %edx\n"
    "\tleaq 0x50(%rsp), %r8\n"
    "\tleaq 0x20(%rsp), %r9\n"
    "\tcall async_dispatch\n"
    "\taddq $0x48, %rsp\n"
    "\tret\n"
    ".seh_endproc\n"
    ".balign 16\n"
    "async_thunks:\n"
    ".set async_n, 0\n"
    ".rept 512\n"
    "\tmovl $async_n, %r10d\n"
    "\tjmp async_entry\n"
    "\t.balign 16, 0xcc\n"
    ".set async_n, async_n + 1\n"
    ".endr\n"

    /* NdrDcomAsyncClientCall(stub_desc, format, this, ...): the arguments from
     * 'this' on form a frame like the one of the method itself. */
    ".balign 16\n"
    "dcom_entry:\n"
    ".seh_proc dcom_entry\n"
    "\tmovq %rcx, 8(%rsp)\n"
    "\tmovq %rdx, 16(%rsp)\n"
    "\tmovq %r8, 24(%rsp)\n"
    "\tmovq %r9, 32(%rsp)\n"
    "\tsubq $0x28, %rsp\n"
    ".seh_stackalloc 0x28\n"
    ".seh_endprologue\n"
    "\tleaq 0x40(%rsp), %r8\n"
    "\tcall async_dcom_dispatch\n"
    "\taddq $0x28, %rsp\n"
    "\tret\n"
    ".seh_endproc\n"

    /* ULONG_PTR call_frame(void *func, const ULONG_PTR *args, unsigned int count) */
    ".balign 16\n"
    "call_frame:\n"
    ".seh_proc call_frame\n"
    "\tpushq %rbp\n"
    ".seh_pushreg %rbp\n"
    "\tpushq %rsi\n"
    ".seh_pushreg %rsi\n"
    "\tpushq %rdi\n"
    ".seh_pushreg %rdi\n"
    "\tmovq %rsp, %rbp\n"
    ".seh_setframe %rbp, 0\n"
    ".seh_endprologue\n"
    "\tmovq %rcx, %rax\n"
    "\tmovq %rdx, %rsi\n"
    "\tmovl %r8d, %ecx\n"
    "\tcmpl $4, %ecx\n"
    "\tjae 1f\n"
    "\tmovl $4, %ecx\n"
    "1:\tleaq 15(,%rcx,8), %rdx\n"
    "\tandq $-16, %rdx\n"
    "\tsubq %rdx, %rsp\n"
    "\tmovq %rsp, %rdi\n"
    "\tcld\n"
    "\trep movsq\n"
    "\tmovq 0(%rsp), %rcx\n"
    "\tmovq 8(%rsp), %rdx\n"
    "\tmovq 16(%rsp), %r8\n"
    "\tmovq 24(%rsp), %r9\n"
    "\tmovq %rcx, %xmm0\n"
    "\tmovq %rdx, %xmm1\n"
    "\tmovq %r8, %xmm2\n"
    "\tmovq %r9, %xmm3\n"
    "\tcall *%rax\n"
    "\tmovq %rbp, %rsp\n"
    "\tpopq %rdi\n"
    "\tpopq %rsi\n"
    "\tpopq %rbp\n"
    "\tret\n"
    ".seh_endproc\n"
);
#define THUNK_SIZE 16
#else
/* i386: stdcall; the dispatcher returns the HRESULT in eax and the bytes to pop in edx. */
ULONGLONG CDECL async_dispatch_i386(IUnknown *iface, unsigned int index, BYTE *frame);
__asm__(
    ".text\n"
    ".balign 16\n"
    "_async_entry:\n"
    "\tpushl %ebp\n"
    "\tmovl %esp, %ebp\n"
    "\tsubl $16, %esp\n"
    "\tleal 8(%ebp), %ecx\n"
    "\tmovl %ecx, 8(%esp)\n"
    "\tmovl %eax, 4(%esp)\n"
    "\tmovl 8(%ebp), %ecx\n"
    "\tmovl %ecx, 0(%esp)\n"
    "\tcall _async_dispatch_i386\n"
    "\tmovl %ebp, %esp\n"
    "\tpopl %ebp\n"
    "\tpopl %ecx\n"
    "\taddl %edx, %esp\n"
    "\tjmp *%ecx\n"
    ".balign 16\n"
    "_async_thunks:\n"
    ".set async_n, 0\n"
    ".rept 512\n"
    "\tmovl $async_n, %eax\n"
    "\tjmp _async_entry\n"
    "\t.balign 16, 0xcc\n"
    ".set async_n, async_n + 1\n"
    ".endr\n"

    ".balign 16\n"
    "_call_frame:\n"
    "\tpushl %ebp\n"
    "\tmovl %esp, %ebp\n"
    "\tpushl %esi\n"
    "\tpushl %edi\n"
    "\tmovl 16(%ebp), %ecx\n"
    "\tmovl 12(%ebp), %esi\n"
    "\tleal 0(,%ecx,4), %edx\n"
    "\tsubl %edx, %esp\n"
    "\tandl $-16, %esp\n"
    "\tmovl %esp, %edi\n"
    "\tcld\n"
    "\trep movsl\n"
    "\tcall *8(%ebp)\n"
    "\tleal -8(%ebp), %esp\n"
    "\tpopl %edi\n"
    "\tpopl %esi\n"
    "\tpopl %ebp\n"
    "\tret\n"
);
#define THUNK_SIZE 16
#endif

extern const BYTE async_thunks[];
#ifdef __x86_64__
extern const BYTE dcom_entry[];
LONG_PTR CDECL async_dcom_dispatch(const MIDL_STUB_DESC *stub_desc, const BYTE *format, BYTE *frame);
#endif
ULONG_PTR CDECL call_frame(void *func, const ULONG_PTR *args, unsigned int count);

/* ---------------------------------------------------------------------
 * Async interface descriptions, built from the proxy file's tables.
 */

struct async_method
{
    struct cc_fmt_proc sync, begin, finish;
    struct cc_fmt_split split;
    unsigned int begin_pop, finish_pop;     /* i386: argument bytes the callee pops */
};

struct async_desc
{
    struct async_desc *next;
    const CInterfaceProxyVtbl *async_proxy;     /* the key */
    IID async_iid, sync_iid;
    unsigned int vtbl_count;
    const BYTE *types;
    size_t types_len;
    const MIDL_STUBLESS_PROXY_INFO *async_info;
    void **vtbl;
    struct async_method *methods;               /* (vtbl_count - 3) / 2 */
};

static SRWLOCK desc_lock = SRWLOCK_INIT;
static struct async_desc *descs;

/* Bytes readable from ptr to the end of the module image that holds it. */
static size_t image_extent(const void *ptr)
{
    HMODULE module;
    const IMAGE_DOS_HEADER *dos;
    const IMAGE_NT_HEADERS *nt;
    const BYTE *end;

    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            ptr, &module))
        return 0;
    dos = (const IMAGE_DOS_HEADER *)module;
    nt = (const IMAGE_NT_HEADERS *)((const BYTE *)module + dos->e_lfanew);
    end = (const BYTE *)module + nt->OptionalHeader.SizeOfImage;
    return (const BYTE *)ptr < end ? end - (const BYTE *)ptr : 0;
}

static BOOL read_proc(const MIDL_STUBLESS_PROXY_INFO *info, unsigned int method, struct cc_fmt_proc *proc)
{
    unsigned short offset;
    size_t len;

    if (!image_extent(&info->FormatStringOffset[method])) return FALSE;
    offset = info->FormatStringOffset[method];
    if (offset == 0xffff || !(len = image_extent(info->ProcFormatString + offset))) return FALSE;
    return cc_fmt_read_proc(info->ProcFormatString + offset, len, PTR_SIZE, proc) == CC_FMT_OK;
}

static unsigned int pop_bytes(const struct cc_fmt_proc *proc)
{
    /* The return value's slot follows the arguments. */
    if (proc->param_count && (proc->params[proc->param_count - 1].attr & CC_PARAM_IS_RETURN))
        return proc->params[proc->param_count - 1].stack_offset;
    return proc->stack_size;
}

static HRESULT WINAPI async_iface_QueryInterface(IUnknown *iface, REFIID riid, void **ppv);
static ULONG WINAPI async_iface_AddRef(IUnknown *iface);
static ULONG WINAPI async_iface_Release(IUnknown *iface);

/* Builds (once) the description of the async interface at file->pProxyVtblList[async_index]. */
static struct async_desc *get_desc(const ProxyFileInfo *file, int sync_index, int async_index)
{
    const CInterfaceProxyVtbl *sync_proxy = file->pProxyVtblList[sync_index];
    const CInterfaceProxyVtbl *async_proxy = file->pProxyVtblList[async_index];
    const MIDL_STUBLESS_PROXY_INFO *sync_info, *async_info;
    struct async_desc *desc;
    unsigned int sync_count, async_count, i;

    AcquireSRWLockShared(&desc_lock);
    for (desc = descs; desc; desc = desc->next) if (desc->async_proxy == async_proxy) break;
    ReleaseSRWLockShared(&desc_lock);
    if (desc) return desc;

    sync_info = sync_proxy->header.pStublessProxyInfo;
    async_info = async_proxy->header.pStublessProxyInfo;
    sync_count = file->pStubVtblList[sync_index]->header.DispatchTableCount;
    async_count = file->pStubVtblList[async_index]->header.DispatchTableCount;
    if (!sync_info || !async_info || sync_count < 3 || async_count != 3 + 2 * (sync_count - 3) ||
        async_count > MAX_THUNKS || !sync_info->pStubDesc || sync_info->pStubDesc != async_info->pStubDesc)
    {
        FIXME("async interface %s: tables not understood\n", cc_debugstr_guid(async_proxy->header.piid));
        return NULL;
    }
    if (!(desc = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*desc)))) return NULL;
    desc->async_proxy = async_proxy;
    desc->async_iid = *async_proxy->header.piid;
    desc->sync_iid = *sync_proxy->header.piid;
    desc->vtbl_count = async_count;
    desc->async_info = async_info;
    desc->types = sync_info->pStubDesc->pFormatTypes;
    desc->types_len = image_extent(desc->types);
    desc->vtbl = HeapAlloc(GetProcessHeap(), 0, async_count * sizeof(void *));
    desc->methods = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, (sync_count - 3) * sizeof(*desc->methods) + 1);
    if (!desc->vtbl || !desc->methods || !desc->types_len) goto refuse;

    for (i = 3; i < sync_count; i++)
    {
        struct async_method *method = &desc->methods[i - 3];
        unsigned int b = 3 + 2 * (i - 3);

        if (!read_proc(sync_info, i, &method->sync) || !read_proc(async_info, b, &method->begin) ||
            !read_proc(async_info, b + 1, &method->finish) ||
            cc_fmt_split_async(&method->sync, &method->begin, &method->finish, &method->split) != CC_FMT_OK ||
            method->sync.stack_size > FRAME_BYTES)
        {
            FIXME("async interface %s: method %u not understood\n", cc_debugstr_guid(&desc->async_iid), i);
            goto refuse;
        }
        method->begin_pop = pop_bytes(&method->begin);
        method->finish_pop = pop_bytes(&method->finish);
    }
    desc->vtbl[0] = async_iface_QueryInterface;
    desc->vtbl[1] = async_iface_AddRef;
    desc->vtbl[2] = async_iface_Release;
    for (i = 3; i < async_count; i++) desc->vtbl[i] = (void *)(async_thunks + i * THUNK_SIZE);

    AcquireSRWLockExclusive(&desc_lock);
    desc->next = descs;
    descs = desc;
    ReleaseSRWLockExclusive(&desc_lock);
    TRACE("async interface %s: %u methods\n", cc_debugstr_guid(&desc->async_iid), async_count);
    return desc;

refuse:
    HeapFree(GetProcessHeap(), 0, desc->vtbl);
    HeapFree(GetProcessHeap(), 0, desc->methods);
    HeapFree(GetProcessHeap(), 0, desc);
    return NULL;
}

/* ---------------------------------------------------------------------
 * Proxies with an async counterpart.
 */

struct proxy_record
{
    IRpcProxyBuffer IRpcProxyBuffer_iface;
    LONG refcount;
    IRpcProxyBuffer *inner;
    IUnknown *manager;              /* the proxy manager (not referenced) */
    const ProxyFileInfo *file;
    int sync_index, async_index;
    struct proxy_record *next;
};

static SRWLOCK record_lock = SRWLOCK_INIT;
static struct proxy_record *records;
static HRESULT (WINAPI *real_CreateProxy)(IPSFactoryBuffer *, IUnknown *, REFIID, IRpcProxyBuffer **, void **);
static HRESULT (WINAPI *real_manager_QueryInterface)(IUnknown *, REFIID, void **);
static const void *manager_vtbl;
static LONG async_refused;

static inline struct proxy_record *impl_from_IRpcProxyBuffer(IRpcProxyBuffer *iface)
{
    return CONTAINING_RECORD(iface, struct proxy_record, IRpcProxyBuffer_iface);
}

static HRESULT WINAPI record_QueryInterface(IRpcProxyBuffer *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IRpcProxyBuffer))
    {
        *ppv = iface;
        IRpcProxyBuffer_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI record_AddRef(IRpcProxyBuffer *iface)
{
    return InterlockedIncrement(&impl_from_IRpcProxyBuffer(iface)->refcount);
}

static ULONG WINAPI record_Release(IRpcProxyBuffer *iface)
{
    struct proxy_record *record = impl_from_IRpcProxyBuffer(iface), **link;
    ULONG ref = InterlockedDecrement(&record->refcount);

    if (ref) return ref;
    AcquireSRWLockExclusive(&record_lock);
    for (link = &records; *link; link = &(*link)->next)
    {
        if (*link != record) continue;
        *link = record->next;
        break;
    }
    ReleaseSRWLockExclusive(&record_lock);
    IRpcProxyBuffer_Release(record->inner);
    HeapFree(GetProcessHeap(), 0, record);
    return 0;
}

static HRESULT WINAPI record_Connect(IRpcProxyBuffer *iface, IRpcChannelBuffer *chan)
{
    return IRpcProxyBuffer_Connect(impl_from_IRpcProxyBuffer(iface)->inner, chan);
}

static void WINAPI record_Disconnect(IRpcProxyBuffer *iface)
{
    IRpcProxyBuffer_Disconnect(impl_from_IRpcProxyBuffer(iface)->inner);
}

static const IRpcProxyBufferVtbl record_vtbl =
{
    record_QueryInterface,
    record_AddRef,
    record_Release,
    record_Connect,
    record_Disconnect,
};

static HRESULT WINAPI hook_manager_QueryInterface(IUnknown *iface, REFIID riid, void **ppv);

/*
 * The proxy manager is Wine's: its IUnknown vtable and methods are in
 * combase, and it behaves as a COM identity.  Its QueryInterface slot is
 * redirected once.
 */
static void patch_manager(IUnknown *manager)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");
    void **vtbl = *(void ***)manager;
    IUnknown *unk = NULL;
    unsigned int i;

    if (InterlockedCompareExchangePointer((void **)&manager_vtbl, NULL, NULL)) return;
    if (!combase || !in_module(combase, vtbl, 3 * sizeof(void *))) goto refuse;
    for (i = 0; i < 3; i++) if (!in_module(combase, vtbl[i], 1)) goto refuse;
    if (FAILED(((HRESULT (WINAPI *)(IUnknown *, REFIID, void **))vtbl[0])(manager, &IID_IUnknown, (void **)&unk)) ||
        unk != manager)
    {
        if (unk) IUnknown_Release(unk);
        goto refuse;
    }
    IUnknown_Release(unk);
    real_manager_QueryInterface = vtbl[0];
    if (!write_pointer(&vtbl[0], (void *)hook_manager_QueryInterface))
    {
        real_manager_QueryInterface = NULL;
        goto refuse;
    }
    InterlockedExchangePointer((void **)&manager_vtbl, vtbl);
    TRACE("proxy manager vtable %p patched\n", vtbl);
    return;

refuse:
    WARN("proxy manager %p not recognised; no ICallFactory on proxies\n", manager);
    InterlockedIncrement(&async_refused);
}

/* Where riid is in the factory's proxy files, and whether it has an async interface. */
static BOOL find_async(const CStdPSFactoryBuffer *factory, REFIID riid, const ProxyFileInfo **file,
                       int *sync_index, int *async_index)
{
    const ProxyFileInfo **list = factory->pProxyFileList;
    int i, j;

    for (i = 0; list && list[i]; i++)
    {
        const ProxyFileInfo *info = list[i];

        if (info->TableVersion < 6 || !info->pAsyncIIDLookup) continue;
        for (j = 0; j < (int)info->TableSize; j++)
        {
            const IID *async_iid = info->pAsyncIIDLookup[j];
            int k;

            if (!IsEqualIID(info->pProxyVtblList[j]->header.piid, riid)) continue;
            if (!async_iid || async_iid == (const IID *)(LONG_PTR)-1) return FALSE;
            for (k = 0; k < (int)info->TableSize; k++)
            {
                if (!IsEqualIID(info->pProxyVtblList[k]->header.piid, async_iid)) continue;
                *file = info;
                *sync_index = j;
                *async_index = k;
                return TRUE;
            }
            return FALSE;
        }
    }
    return FALSE;
}

static HRESULT WINAPI hook_CreateProxy(IPSFactoryBuffer *iface, IUnknown *outer, REFIID riid,
                                       IRpcProxyBuffer **proxy, void **ppv)
{
    const ProxyFileInfo *file;
    struct proxy_record *record;
    int sync_index, async_index;
    HRESULT hr;

    hr = real_CreateProxy(iface, outer, riid, proxy, ppv);
    if (FAILED(hr) || !outer || !proxy || !*proxy) return hr;
    if (!find_async((const CStdPSFactoryBuffer *)iface, riid, &file, &sync_index, &async_index)) return hr;
    patch_manager(outer);
    if (!(record = HeapAlloc(GetProcessHeap(), 0, sizeof(*record)))) return hr;
    record->IRpcProxyBuffer_iface.lpVtbl = &record_vtbl;
    record->refcount = 1;
    record->inner = *proxy;
    record->manager = outer;
    record->file = file;
    record->sync_index = sync_index;
    record->async_index = async_index;
    AcquireSRWLockExclusive(&record_lock);
    record->next = records;
    records = record;
    ReleaseSRWLockExclusive(&record_lock);
    *proxy = &record->IRpcProxyBuffer_iface;
    TRACE("proxy %p of %s has an async interface\n", outer, cc_debugstr_guid(riid));
    return hr;
}

/* The record for manager and async_iid (NULL: any async interface). */
static BOOL find_record(IUnknown *manager, const IID *async_iid, const ProxyFileInfo **file,
                        int *sync_index, int *async_index)
{
    struct proxy_record *record;
    BOOL found = FALSE;

    AcquireSRWLockShared(&record_lock);
    for (record = records; record; record = record->next)
    {
        if (record->manager != manager) continue;
        if (async_iid && !IsEqualIID(async_iid, record->file->pProxyVtblList[record->async_index]->header.piid))
            continue;
        *file = record->file;
        *sync_index = record->sync_index;
        *async_index = record->async_index;
        found = TRUE;
        break;
    }
    ReleaseSRWLockShared(&record_lock);
    return found;
}

/* ---------------------------------------------------------------------
 * Call objects.
 */

struct wine_wait;

enum fiber_phase
{
    PHASE_MARSHALING,   /* the fiber runs the proxy method up to its GetBuffer */
    PHASE_BUFFERED,     /* the request's buffer was filled: the next SendReceive is ours */
    PHASE_SENDING,      /* in Wine's SendReceive */
    PHASE_PARKED,       /* waiting for the reply, Begin_ has returned */
    PHASE_WAITING,      /* Finish_ resumed it to wait for the reply itself */
    PHASE_RECEIVED,     /* SendReceive returned */
    PHASE_DONE,         /* the proxy method returned */
};

struct call_object;

struct fiber_call
{
    struct call_object *obj;        /* NULL once the call object is gone (under call_lock) */
    DWORD owner_tid;
    struct worker_fiber *worker;    /* the fiber running the call */
    void *return_fiber;
    const struct async_desc *desc;
    const struct async_method *method;
    void *proc;                     /* the synchronous proxy method */
    LONG phase;
    HRESULT result;
    LONG discard;                   /* cancelled: the reply is not delivered */
    LONG replied;
    BOOL sent;                      /* the request went out (our SendReceive ran) */
    BOOL parked;                    /* Begin_ has returned while the fiber waits */
    BOOL inline_wait;               /* Finish_ resumed it before the reply */
    BOOL watch;                     /* the pool watches for the reply from the start (aggregated) */
    BOOL running;                   /* switched to, not yet back */
    HANDLE done_event;              /* the call object's ISynchronize event */
    BOOL notifying;                 /* the completion notification is running */
    HANDLE wine_event;
    HANDLE pool_wait;
    ULONGLONG call_id;
    BYTE *scratch;
    BYTE *out_ptr[CC_FMT_MAX_PARAMS];
    SIZE_T out_size[CC_FMT_MAX_PARAMS];
    struct fiber_call *next_orphan;
    /* A task (a synchronous call of channel.c) instead of a proxy method. */
    void (*task)(void *);
    void *task_arg;
    const struct wine_wait *task_wait; /* how Wine asked to wait, while the task is parked */
    DWORD task_timeout;
    DWORD task_wake;                /* what Wine's wait returns when the task is resumed */
    ULONG_PTR frame[FRAME_BYTES / sizeof(ULONG_PTR)];
};

struct call_object
{
    IUnknown IUnknown_inner;
    struct { const void *lpVtbl; } async_iface;
    ISynchronize ISynchronize_iface;
    ISynchronizeHandle ISynchronizeHandle_iface;
    ICancelMethodCalls ICancelMethodCalls_iface;
    LONG refcount;
    IUnknown *outer;
    const struct async_desc *desc;
    IUnknown *sync;                 /* the proxy's synchronous interface */
    struct cc_call state;
    HANDLE event;                   /* manual reset: the call completed or was cancelled */
    HANDLE wake_event;              /* manual reset: wakes Finish_'s wait: a cancel, or a reply the pool took */
    BOOL watched;                   /* the event handle was handed out */
    /*
     * The event is set only once somebody may wait on it (event_needed:
     * ISynchronize::Wait, the handle, a cancel with grace, Finish_ without
     * its fiber); until then a completion is only noted (lazy_signal) and
     * set by whoever comes to need it.  A Begin_/Finish_ round trip thus
     * costs no event operation.
     */
    LONG event_needed;
    LONG lazy_signal;
    LONG event_maybe_set;           /* to reset at the next Begin_ */
    LONG wake_event_set;
    struct fiber_call *call;
};

static CRITICAL_SECTION call_lock;
static DWORD fiber_tls = TLS_OUT_OF_INDEXES;   /* the fiber_call running on this thread */
static DWORD convert_tls = TLS_OUT_OF_INDEXES; /* the thread's struct thread_fibers */
static struct fiber_call *orphans;
static LONG orphan_count;

/*
 * Fibers are kept per thread and reused: a worker fiber runs one call after
 * another.  The thread is converted to a fiber by the first asynchronous
 * call and stays one while it keeps idle workers; it is converted back when
 * it exits, or when no worker is left.
 */
struct worker_fiber
{
    void *fiber;
    struct fiber_call *fc;          /* the call it runs now */
    struct worker_fiber *next;      /* in the thread's idle list */
};

struct thread_fibers
{
    struct worker_fiber *idle;
    unsigned int idle_count;
    unsigned int live;
    BOOL converted;                 /* by the engine (not a program's own fiber thread) */
};

#define MAX_IDLE_FIBERS 8

static void WINAPI worker_main(void *arg)
{
    struct worker_fiber *worker = arg;

    for (;;)
    {
        struct fiber_call *fc = worker->fc;

        if (fc->task) fc->task(fc->task_arg);
        else fc->result = (HRESULT)call_frame(fc->proc, fc->frame, fc->method->sync.stack_size / PTR_SIZE);
        InterlockedExchange(&fc->phase, PHASE_DONE);
        TlsSetValue(fiber_tls, NULL);
        /* Back to the thread; resumed only with a new call. */
        SwitchToFiber(fc->return_fiber);
    }
}

/* gcc misreads mingw's inline TEB access in GetCurrentFiber as an array overrun. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
static void * __attribute__((noinline)) current_fiber(void)
{
    return GetCurrentFiber();
}
#pragma GCC diagnostic pop

/* Runs the fiber until it parks or finishes. */
static void run_fiber(struct fiber_call *fc)
{
    void *previous = TlsGetValue(fiber_tls);

    fc->return_fiber = current_fiber();
    TlsSetValue(fiber_tls, fc);
    fc->running = TRUE;
    SwitchToFiber(fc->worker->fiber);
    fc->running = FALSE;
    TlsSetValue(fiber_tls, previous);
}

static struct thread_fibers *thread_fibers(BOOL create)
{
    struct thread_fibers *fibers = TlsGetValue(convert_tls);

    if (!fibers && create && (fibers = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*fibers))))
        TlsSetValue(convert_tls, fibers);
    return fibers;
}

static BOOL acquire_worker(struct fiber_call *fc)
{
    struct thread_fibers *fibers = thread_fibers(TRUE);
    struct worker_fiber *worker;

    if (!fibers) return FALSE;
    if (!fibers->live && !fibers->idle_count && !IsThreadAFiber())
    {
        if (!ConvertThreadToFiberEx(NULL, FIBER_FLAG_FLOAT_SWITCH)) return FALSE;
        fibers->converted = TRUE;
    }
    if ((worker = fibers->idle))
    {
        fibers->idle = worker->next;
        fibers->idle_count--;
    }
    else if (!(worker = HeapAlloc(GetProcessHeap(), 0, sizeof(*worker))) ||
             !(worker->fiber = CreateFiberEx(0, FIBER_STACK, FIBER_FLAG_FLOAT_SWITCH, worker_main, worker)))
    {
        HeapFree(GetProcessHeap(), 0, worker);
        if (!fibers->live && !fibers->idle_count && fibers->converted)
        {
            ConvertFiberToThread();
            fibers->converted = FALSE;
        }
        return FALSE;
    }
    worker->fc = fc;
    fc->worker = worker;
    fibers->live++;
    return TRUE;
}

/* Gives back the worker of a call that finished (or never ran); its thread only. */
static void release_worker(struct fiber_call *fc)
{
    struct thread_fibers *fibers = thread_fibers(FALSE);
    struct worker_fiber *worker = fc->worker;

    fc->worker = NULL;
    if (!fibers) return;
    fibers->live--;
    if (fibers->idle_count < MAX_IDLE_FIBERS)
    {
        worker->fc = NULL;
        worker->next = fibers->idle;
        fibers->idle = worker;
        fibers->idle_count++;
        return;
    }
    DeleteFiber(worker->fiber);
    HeapFree(GetProcessHeap(), 0, worker);
}

static void reap_orphans(void);
static void unwatch_reply(struct fiber_call *fc);

/*
 * The thread ends: abandoned calls whose replies came are finished; the
 * others can never be (their state is the thread's), so they leave the
 * list, where a later thread with the same id would otherwise find them,
 * and are leaked.
 */
static void drop_orphans(void)
{
    DWORD tid = GetCurrentThreadId();
    struct fiber_call *fc, **link;

    reap_orphans();
    for (;;)
    {
        EnterCriticalSection(&call_lock);
        for (link = &orphans; (fc = *link); link = &fc->next_orphan)
            if (fc->owner_tid == tid) break;
        if (fc)
        {
            *link = fc->next_orphan;
            InterlockedDecrement(&orphan_count);
        }
        LeaveCriticalSection(&call_lock);
        if (!fc) return;
        unwatch_reply(fc);
        if (fc->task && fc->worker)
        {
            /* A task's messages and Wine's state of the call are on the
             * heap, where the late reply goes: only its records leak, and
             * the fiber, which nothing will resume, is freed. */
            struct thread_fibers *fibers = thread_fibers(FALSE);

            WARN("thread ends before the reply of abandoned call %p: its records are leaked\n", fc);
            DeleteFiber(fc->worker->fiber);
            HeapFree(GetProcessHeap(), 0, fc->worker);
            fc->worker = NULL;
            if (fibers) fibers->live--;
        }
        /* A proxy method's message is on the fiber's stack: all of it stays. */
        else WARN("thread ends before the reply of abandoned call %p: its state is leaked\n", fc);
    }
}

void async_thread_detach(void)
{
    struct thread_fibers *fibers = thread_fibers(FALSE);
    struct worker_fiber *worker;

    if (!fibers) return;
    if (InterlockedCompareExchange(&orphan_count, 0, 0)) drop_orphans();
    while ((worker = fibers->idle))
    {
        fibers->idle = worker->next;
        DeleteFiber(worker->fiber);
        HeapFree(GetProcessHeap(), 0, worker);
    }
    /* Calls still parked on this thread can never finish now: their state is leaked. */
    if (fibers->live) WARN("thread exits with %u asynchronous calls unfinished\n", fibers->live);
    else if (fibers->converted) ConvertFiberToThread();
    TlsSetValue(convert_tls, NULL);
    HeapFree(GetProcessHeap(), 0, fibers);
}

static void free_fiber_call(struct fiber_call *fc)
{
    if (fc->pool_wait) UnregisterWaitEx(fc->pool_wait, INVALID_HANDLE_VALUE);
    if (fc->worker) release_worker(fc);
    HeapFree(GetProcessHeap(), 0, fc->scratch);
    HeapFree(GetProcessHeap(), 0, fc);
}

/* Lets a parked call whose reply has arrived run to its end and frees it (its thread only). */
static void orphan(struct fiber_call *fc);

static void finish_fiber(struct fiber_call *fc)
{
    if (fc->phase != PHASE_DONE) run_fiber(fc);
    if (fc->phase != PHASE_DONE && fc->task)
    {
        /* The task waited for something else on its way: watch that too. */
        TRACE("task %p waits again\n", fc);
        InterlockedExchange(&fc->replied, FALSE);
        orphan(fc);
        return;
    }
    if (fc->phase != PHASE_DONE)
    {
        ERR("call %p did not finish\n", fc);
        return;
    }
    free_fiber_call(fc);
}

/* Finishes this thread's abandoned calls whose replies have arrived. */
static void reap_orphans(void)
{
    DWORD tid = GetCurrentThreadId();
    struct fiber_call *fc, **link;

    if (!InterlockedCompareExchange(&orphan_count, 0, 0)) return;
    for (;;)
    {
        EnterCriticalSection(&call_lock);
        for (link = &orphans; (fc = *link); link = &fc->next_orphan)
            if (fc->owner_tid == tid && fc->replied) break;
        if (fc)
        {
            *link = fc->next_orphan;
            InterlockedDecrement(&orphan_count);
        }
        LeaveCriticalSection(&call_lock);
        if (!fc) return;
        finish_fiber(fc);
    }
}

/* Finishes this thread's abandoned calls whose replies have come (any proxied call does). */
void async_reap(void)
{
    if (InterlockedCompareExchange(&orphan_count, 0, 0)) reap_orphans();
}

static void watch_reply(struct fiber_call *fc);

/* Hands a call that still waits for its reply to its thread's clean-up. */
static void orphan(struct fiber_call *fc)
{
    InterlockedExchange(&fc->discard, TRUE);
    watch_reply(fc);
    EnterCriticalSection(&call_lock);
    fc->obj = NULL;
    fc->next_orphan = orphans;
    orphans = fc;
    InterlockedIncrement(&orphan_count);
    LeaveCriticalSection(&call_lock);
}

static void set_event(struct call_object *obj)
{
    InterlockedExchange(&obj->event_maybe_set, 1);
    SetEvent(obj->event);
}

/* Wakes a Finish_ that waits for the reply itself. */
static void wake_finish(struct call_object *obj)
{
    InterlockedExchange(&obj->wake_event_set, 1);
    SetEvent(obj->wake_event);
}

/* Somebody is about to wait on the event, or to hand it out: it must tell the truth from now on. */
static void need_event(struct call_object *obj)
{
    InterlockedExchange(&obj->event_needed, 1);
    if (InterlockedExchange(&obj->lazy_signal, 0)) set_event(obj);
}

/* Marks the call object's call done (completed or cancelled) and tells whoever waits. */
static void signal_done(struct call_object *obj)
{
    ISynchronize *sync = NULL;

    /* Published before need_event() looks, or seen by it: one of the two sets the event. */
    if (InterlockedCompareExchange(&obj->event_needed, 0, 0)) set_event(obj);
    else
    {
        InterlockedExchange(&obj->lazy_signal, 1);
        if (InterlockedCompareExchange(&obj->event_needed, 0, 0) && InterlockedExchange(&obj->lazy_signal, 0))
            set_event(obj);
    }
    /* An aggregated call object tells its outer object, as on Windows. */
    if (obj->outer != &obj->IUnknown_inner &&
        SUCCEEDED(IUnknown_QueryInterface(obj->outer, &IID_ISynchronize, (void **)&sync)))
    {
        ISynchronize_Signal(sync);
        ISynchronize_Release(sync);
    }
}

/* The reply of fc arrived: complete its call object's call, unless it was cancelled. */
static void note_reply(struct fiber_call *fc)
{
    struct call_object *obj;
    BOOL deliver = FALSE;

    TRACE("call %p: reply\n", fc);
    EnterCriticalSection(&call_lock);
    if ((obj = fc->obj))
    {
        deliver = cc_call_complete(&obj->state) == CC_OK;
        if (deliver) fc->notifying = TRUE;
    }
    InterlockedExchange(&fc->replied, TRUE);
    LeaveCriticalSection(&call_lock);
    if (deliver)
    {
        signal_done(obj);
        EnterCriticalSection(&call_lock);
        fc->notifying = FALSE;
        LeaveCriticalSection(&call_lock);
    }
}

/* Thread pool: Wine's event for the parked call was signalled (and is taken). */
static void CALLBACK reply_arrived(void *arg, BOOLEAN timeout)
{
    struct fiber_call *fc = arg;
    struct call_object *obj;

    note_reply(fc);
    /* A Finish_ waiting for the same event would never see it now. */
    EnterCriticalSection(&call_lock);
    if ((obj = fc->obj)) wake_finish(obj);
    LeaveCriticalSection(&call_lock);
}

/* ---------------------------------------------------------------------
 * The hooks the fiber runs into: channel hook, SendReceive, waits.
 */

void async_client_fill(REFIID riid)
{
    struct fiber_call *fc = TlsGetValue(fiber_tls);

    if (fc && fc->phase == PHASE_MARSHALING && IsEqualIID(riid, &fc->desc->sync_iid))
        InterlockedExchange(&fc->phase, PHASE_BUFFERED);
}

BOOL async_send_receive(IRpcChannelBuffer *chan, RPCOLEMESSAGE *msg, ULONG *status, ULONGLONG call_id,
                        HRESULT *hr)
{
    struct fiber_call *fc = TlsGetValue(fiber_tls);
    const RPC_CLIENT_INTERFACE *cif;
    unsigned int i;

    if (!fc || fc->phase != PHASE_BUFFERED) return FALSE;
    cif = ((RPC_MESSAGE *)msg)->RpcInterfaceInformation;
    if ((msg->iMethod & ~RPC_FLAGS_VALID_BIT) != fc->method->sync.proc_num || !cif ||
        !IsEqualIID(&cif->InterfaceId.SyntaxGUID, &fc->desc->sync_iid))
        return FALSE;

    fc->call_id = call_id;
    /* The [in] values of [in,out] parameters are marshaled: what the reply
     * brings is unmarshaled into clean storage, never into the caller's. */
    for (i = 0; i < fc->method->split.count; i++)
    {
        const struct cc_fmt_param *param = &fc->method->sync.params[fc->method->split.index[i]];

        if ((param->attr & CC_PARAM_IS_IN) && fc->out_ptr[i]) memset(fc->out_ptr[i], 0, fc->out_size[i]);
    }
    fc->sent = TRUE;
    InterlockedExchange(&fc->phase, PHASE_SENDING);
    *hr = channel_send_receive(chan, msg, status);
    if (!fc->parked)
    {
        /* The reply was there before Wine waited: Begin_ returns all the
         * same, and the reply is unmarshaled by Finish_ like any other. */
        fc->parked = TRUE;
        InterlockedExchange(&fc->phase, PHASE_PARKED);
        note_reply(fc);
        TlsSetValue(fiber_tls, NULL);
        SwitchToFiber(fc->return_fiber);
        TlsSetValue(fiber_tls, fc);
    }
    InterlockedExchange(&fc->phase, PHASE_RECEIVED);
    if (fc->discard)
    {
        /* The NDR engine frees the reply and clears the [out] storage. */
        if (status) *status = RPC_S_CALL_CANCELLED;
        *hr = RPC_E_CALL_CANCELED;
    }
    return TRUE;
}

static DWORD (WINAPI *real_WaitForMultipleObjectsEx)(DWORD, const HANDLE *, BOOL, DWORD, BOOL);
static DWORD (WINAPI *real_MsgWaitForMultipleObjectsEx)(DWORD, const HANDLE *, DWORD, DWORD, DWORD);

/* The wait Wine asked for, to be made by the fiber itself. */
struct wine_wait
{
    BOOL pump;                      /* MsgWaitForMultipleObjectsEx (an STA) */
    DWORD mask, flags;
    BOOL alertable;
};

/*
 * Who waits for Wine's event of a parked call.  Wine's event is auto-reset
 * and a thread-pool wait cannot be withdrawn without the risk of losing a
 * signal it already took, so the pool is asked to watch only when something
 * needs the reply noticed without Finish_ (an ISynchronize wait, the event
 * handle, an aggregating object, a cancel with grace, an abandoned call);
 * otherwise Finish_ lets the fiber wait for it itself.  Both may wait at
 * once: whichever takes the signal notes the reply for the other.
 */
static void watch_reply(struct fiber_call *fc)
{
    EnterCriticalSection(&call_lock);
    if (fc->parked && !fc->replied && !fc->pool_wait &&
        !RegisterWaitForSingleObject(&fc->pool_wait, fc->wine_event, reply_arrived, fc, INFINITE,
                                     WT_EXECUTEONLYONCE | WT_EXECUTEINWAITTHREAD))
    {
        ERR("cannot watch the reply of call %p\n", fc);
        fc->pool_wait = NULL;
    }
    LeaveCriticalSection(&call_lock);
}

static void unwatch_reply(struct fiber_call *fc)
{
    HANDLE wait;

    EnterCriticalSection(&call_lock);
    wait = fc->pool_wait;
    fc->pool_wait = NULL;
    LeaveCriticalSection(&call_lock);
    if (wait) UnregisterWaitEx(wait, INVALID_HANDLE_VALUE);
}

/* Someone other than Finish_ needs to know when obj's reply arrives. */
static void watch_call(struct call_object *obj)
{
    EnterCriticalSection(&call_lock);
    if (obj->call) watch_reply(obj->call);
    LeaveCriticalSection(&call_lock);
}

/* Back to the thread until resumed. */
static void park(struct fiber_call *fc)
{
    InterlockedExchange(&fc->phase, PHASE_PARKED);
    TlsSetValue(fiber_tls, NULL);
    SwitchToFiber(fc->return_fiber);
    TlsSetValue(fiber_tls, fc);
}

/*
 * Finish_ resumed the fiber before the reply: it waits for Wine's event (the
 * reply) or the call object's event (a cancel, or the reply taken by the
 * pool).  Window messages go back to Wine, which pumps and waits again.
 */
static DWORD wait_inline(struct fiber_call *fc, const struct wine_wait *wait)
{
    HANDLE handles[2] = { fc->wine_event, fc->done_event };
    DWORD ret;

    for (;;)
    {
        if (fc->replied)
        {
            unwatch_reply(fc);
            return WAIT_OBJECT_0;
        }
        if (wait->pump)
            ret = real_MsgWaitForMultipleObjectsEx(2, handles, INFINITE, wait->mask, wait->flags & ~MWMO_WAITALL);
        else
            ret = real_WaitForMultipleObjectsEx(2, handles, FALSE, INFINITE, wait->alertable);
        if (ret == WAIT_OBJECT_0)
        {
            note_reply(fc);
            unwatch_reply(fc);
            return WAIT_OBJECT_0;
        }
        if (ret == WAIT_OBJECT_0 + 1)
        {
            enum cc_state state = CC_PENDING;

            if (fc->replied) continue;
            EnterCriticalSection(&call_lock);
            if (fc->obj) state = cc_call_state(&fc->obj->state);
            LeaveCriticalSection(&call_lock);
            if (state == CC_CANCELLED)
            {
                /* Finish_ returns now; the pool notes the reply when it comes. */
                fc->inline_wait = FALSE;
                watch_reply(fc);
                park(fc);
                unwatch_reply(fc);
                return WAIT_OBJECT_0;
            }
            /* Signalled by hand (ISynchronize::Signal): only the reply ends this wait. */
            handles[1] = handles[0];
            continue;
        }
        if (ret == WAIT_OBJECT_0 + 2) return WAIT_OBJECT_0 + 1;
        return ret;
    }
}

/* Wine waits for the reply of an asynchronous call. */
static BOOL fiber_wait(DWORD count, const HANDLE *handles, DWORD timeout, const struct wine_wait *wait, DWORD *ret)
{
    struct fiber_call *fc = TlsGetValue(fiber_tls);

    if (!fc || !timeout || count != 1) return FALSE;
    if (fc->task)
    {
        if (fc->phase != PHASE_SENDING) return FALSE;
        /* The thread waits in the task's place (see async_run_task). */
        fc->wine_event = handles[0];
        fc->task_wait = wait;
        fc->task_timeout = timeout;
        fc->parked = TRUE;
        park(fc);
        fc->task_wait = NULL;
        InterlockedExchange(&fc->phase, PHASE_SENDING);
        if (fc->replied)
        {
            /* Abandoned, and resumed once the pool saw the event (which it consumed). */
            unwatch_reply(fc);
            *ret = WAIT_OBJECT_0;
        }
        else *ret = fc->task_wake;
        return TRUE;
    }
    if (fc->phase == PHASE_WAITING && handles[0] == fc->wine_event)
    {
        *ret = wait_inline(fc, wait);
        return TRUE;
    }
    if (fc->phase != PHASE_SENDING) return FALSE;
    fc->wine_event = handles[0];
    fc->parked = TRUE;
    TRACE("call %p parked, event %p\n", fc, fc->wine_event);
    if (fc->watch) watch_reply(fc);
    park(fc);
    if (fc->inline_wait)
    {
        InterlockedExchange(&fc->phase, PHASE_WAITING);
        *ret = wait_inline(fc, wait);
        return TRUE;
    }
    /* Resumed once the pool saw the event (which it consumed). */
    unwatch_reply(fc);
    InterlockedExchange(&fc->phase, PHASE_SENDING);
    *ret = WAIT_OBJECT_0;
    return TRUE;
}

static DWORD WINAPI hook_WaitForMultipleObjectsEx(DWORD count, const HANDLE *handles, BOOL all, DWORD timeout,
                                                  BOOL alertable)
{
    struct wine_wait wait = { FALSE, 0, 0, alertable };
    DWORD ret;

    if (TlsGetValue(fiber_tls) && fiber_wait(count, handles, timeout, &wait, &ret)) return ret;
    return real_WaitForMultipleObjectsEx(count, handles, all, timeout, alertable);
}

static DWORD WINAPI hook_MsgWaitForMultipleObjectsEx(DWORD count, const HANDLE *handles, DWORD timeout,
                                                     DWORD mask, DWORD flags)
{
    struct wine_wait wait = { TRUE, mask, flags, FALSE };
    DWORD ret;

    if (TlsGetValue(fiber_tls) && fiber_wait(count, handles, timeout, &wait, &ret)) return ret;
    return real_MsgWaitForMultipleObjectsEx(count, handles, timeout, mask, flags);
}

/*
 * Runs task(arg) on a worker fiber of this thread.  Each time Wine's code in
 * the task waits (for a reply), the thread waits instead, the same way, and
 * also for 'release'.  S_OK: the task ran to its end.  S_FALSE: 'release'
 * was signalled first; the task is left parked, the pool notes when what it
 * waits for is signalled, and the thread finishes it the next time it comes
 * through the engine.  E_NOTIMPL: tasks cannot run here (nothing was run).
 */
HRESULT async_run_task(void (*task)(void *), void *arg, HANDLE release)
{
    struct fiber_call *fc;

    if (!real_WaitForMultipleObjectsEx || !real_MsgWaitForMultipleObjectsEx || fiber_tls == TLS_OUT_OF_INDEXES)
        return E_NOTIMPL;
    reap_orphans();
    if (!(fc = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*fc)))) return E_NOTIMPL;
    fc->owner_tid = GetCurrentThreadId();
    fc->task = task;
    fc->task_arg = arg;
    fc->phase = PHASE_SENDING;
    if (!acquire_worker(fc))
    {
        HeapFree(GetProcessHeap(), 0, fc);
        return E_NOTIMPL;
    }

    for (;;)
    {
        HANDLE handles[2];
        const struct wine_wait *wait;
        DWORD ret;

        run_fiber(fc);
        if (fc->phase == PHASE_DONE)
        {
            free_fiber_call(fc);
            return S_OK;
        }
        wait = fc->task_wait;
        handles[0] = fc->wine_event;
        handles[1] = release;
        if (wait->pump)
            ret = real_MsgWaitForMultipleObjectsEx(2, handles, fc->task_timeout, wait->mask, wait->flags & ~MWMO_WAITALL);
        else
            ret = real_WaitForMultipleObjectsEx(2, handles, FALSE, fc->task_timeout, wait->alertable);
        if (ret == WAIT_OBJECT_0 + 1)
        {
            TRACE("task %p released, left parked\n", fc);
            orphan(fc);
            return S_FALSE;
        }
        /* Window messages: Wine's code pumps them and waits again. */
        fc->task_wake = ret == WAIT_OBJECT_0 + 2 ? WAIT_OBJECT_0 + 1 : ret;
    }
}

/* ---------------------------------------------------------------------
 * Begin_ and Finish_.
 */

struct arg_reader_ctx
{
    const struct cc_fmt_proc *proc;
    const BYTE *frame;
};

/* Reads a synchronous argument for a size_is: the count is an [in] argument already in the frame. */
static int read_sync_arg(void *ctx, uint16_t offset, uint8_t basetype, int deref, uint64_t *value)
{
    const struct arg_reader_ctx *reader = ctx;
    unsigned int size = cc_fmt_basetype_size(basetype, PTR_SIZE);
    const BYTE *p;
    unsigned int i;

    for (i = 0; i < reader->proc->param_count; i++)
        if (reader->proc->params[i].stack_offset == offset) break;
    if (i == reader->proc->param_count || !(reader->proc->params[i].attr & CC_PARAM_IS_IN)) return 0;
    if (offset + PTR_SIZE > FRAME_BYTES) return 0;
    p = reader->frame + offset;
    if (deref && !(p = *(const BYTE **)p)) return 0;
    *value = 0;
    switch (size)
    {
    case 1: *value = *(const BYTE *)p; break;
    case 2: *value = *(const WORD *)p; break;
    case 4: *value = *(const DWORD *)p; break;
    case 8: *value = *(const ULONG64 *)p; break;
    default: return 0;
    }
    return *value <= 0x1000000;
}

static SIZE_T arg_size(const struct cc_fmt_proc *proc, unsigned int i)
{
#ifdef __x86_64__
    return 8;
#else
    return (i + 1 < proc->param_count ? proc->params[i + 1].stack_offset : proc->stack_size) -
           proc->params[i].stack_offset;
#endif
}

static HRESULT begin_call(struct call_object *obj, unsigned int k, const BYTE *frame, const double *fregs,
                          BOOL promoted)
{
    const struct async_method *method = &obj->desc->methods[k];
    struct arg_reader_ctx reader;
    struct fiber_call *fc;
    SIZE_T total = 0;
    unsigned int i;
    HRESULT hr;

    reap_orphans();
    if (cc_call_begin(&obj->state, TRUE) != CC_OK) return RPC_S_CALLPENDING;
    InterlockedExchange(&obj->lazy_signal, 0);
    if (InterlockedExchange(&obj->event_maybe_set, 0)) ResetEvent(obj->event);
    if (InterlockedExchange(&obj->wake_event_set, 0)) ResetEvent(obj->wake_event);

    if (!(fc = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*fc))))
    {
        hr = E_OUTOFMEMORY;
        goto failed;
    }
    fc->obj = obj;
    fc->done_event = obj->wake_event;
    /* An aggregating object is told of the completion as it happens, and
     * so is whoever holds the event handle. */
    fc->watch = obj->watched || obj->outer != &obj->IUnknown_inner;
    fc->owner_tid = GetCurrentThreadId();
    fc->desc = obj->desc;
    fc->method = method;
    fc->proc = (*(void ***)obj->sync)[method->sync.proc_num];

    /* The frame of the synchronous call: the proxy, then each argument. */
    fc->frame[0] = (ULONG_PTR)obj->sync;
    for (i = 0; i < method->split.count; i++)
    {
        unsigned int p = method->split.index[i];
        const struct cc_fmt_param *param = &method->sync.params[p];
        uint16_t from = method->split.begin_offset[i];
        const BYTE *src;

        if (!(param->attr & CC_PARAM_IS_IN) || (param->attr & CC_PARAM_IS_OUT)) continue;
        src = frame + from;
#ifdef __x86_64__
        if (fregs && from / 8 >= 1 && from / 8 <= 3 && (param->attr & CC_PARAM_IS_BASETYPE) &&
            !(param->attr & CC_PARAM_IS_SIMPLE_REF) && (param->type == 0x0a || param->type == 0x0c))
            src = (const BYTE *)&fregs[from / 8 - 1];
#endif
        if (promoted && (param->attr & CC_PARAM_IS_BASETYPE) && !(param->attr & CC_PARAM_IS_SIMPLE_REF) &&
            param->type == 0x0a)
        {
            /* Through a variadic function a float arrives as a double. */
            float value = (float)*(const double *)src;

            memcpy((BYTE *)fc->frame + param->stack_offset, &value, sizeof(value));
            continue;
        }
        memcpy((BYTE *)fc->frame + param->stack_offset, src, arg_size(&method->sync, p));
    }

    /* [out] and [in,out] parameters point to storage of the call object. */
    reader.proc = &method->sync;
    reader.frame = (const BYTE *)fc->frame;
    for (i = 0; i < method->split.count; i++)
    {
        const struct cc_fmt_param *param = &method->sync.params[method->split.index[i]];
        uint64_t size;

        if (!(param->attr & CC_PARAM_IS_OUT)) continue;
        if (cc_fmt_out_size(param, obj->desc->types, obj->desc->types_len, PTR_SIZE, read_sync_arg, &reader,
                            &size) != CC_FMT_OK || size > 0x1000000)
        {
            FIXME("parameter %u of method %u: size not understood\n", i, method->sync.proc_num);
            hr = E_NOTIMPL;
            goto failed;
        }
        fc->out_size[i] = (SIZE_T)size;
        total += ((SIZE_T)size + 15) & ~(SIZE_T)15;
    }
    if (!(fc->scratch = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, total + 16)))
    {
        hr = E_OUTOFMEMORY;
        goto failed;
    }
    total = 0;
    for (i = 0; i < method->split.count; i++)
    {
        const struct cc_fmt_param *param = &method->sync.params[method->split.index[i]];

        if (!(param->attr & CC_PARAM_IS_OUT)) continue;
        fc->out_ptr[i] = fc->scratch + total;
        total += (fc->out_size[i] + 15) & ~(SIZE_T)15;
        if (param->attr & CC_PARAM_IS_IN)
        {
            const BYTE *in = *(const BYTE **)(frame + method->split.begin_offset[i]);

            /* The [in] half: what Begin_ was given, marshaled from a copy. */
            if (!in)
            {
                hr = HRESULT_FROM_WIN32(RPC_X_NULL_REF_POINTER);
                goto failed;
            }
            memcpy(fc->out_ptr[i], in, fc->out_size[i]);
        }
        *(BYTE **)((BYTE *)fc->frame + param->stack_offset) = fc->out_ptr[i];
    }

    if (!acquire_worker(fc))
    {
        hr = E_OUTOFMEMORY;
        goto failed;
    }

    EnterCriticalSection(&call_lock);
    obj->call = fc;
    LeaveCriticalSection(&call_lock);
    fc->phase = PHASE_MARSHALING;
    run_fiber(fc);

    if (fc->phase == PHASE_DONE && !fc->sent && SUCCEEDED(fc->result))
    {
        /* The request was not seen by the channel hooks (they are not in
         * place): it ran to its end as a synchronous call.  Its results are
         * in the call object's storage, for Finish_. */
        WARN("call %p ran synchronously\n", fc);
        note_reply(fc);
        return S_OK;
    }
    if (fc->phase == PHASE_DONE && !fc->sent)
    {
        /* Nothing went out (marshaling failed, say): Begin_ reports it and no call is pending. */
        hr = fc->result;
        EnterCriticalSection(&call_lock);
        obj->call = NULL;
        LeaveCriticalSection(&call_lock);
        free_fiber_call(fc);
        cc_call_complete(&obj->state);
        cc_call_finish(&obj->state);
        return hr;
    }
    return S_OK;

failed:
    if (fc) free_fiber_call(fc);
    cc_call_complete(&obj->state);
    cc_call_finish(&obj->state);
    return hr;
}

static HRESULT wait_event(HANDLE event, DWORD timeout)
{
    DWORD index;

    return CoWaitForMultipleHandles(0, timeout, 1, &event, &index);
}

static HRESULT finish_call(struct call_object *obj, unsigned int k, const BYTE *frame)
{
    const struct async_method *method = &obj->desc->methods[k];
    struct fiber_call *fc;
    enum cc_state state;
    unsigned int i;
    HRESULT hr;

    reap_orphans();
    EnterCriticalSection(&call_lock);
    fc = obj->call;
    LeaveCriticalSection(&call_lock);
    if (!fc || cc_call_state(&obj->state) == CC_IDLE) return RPC_E_CALL_COMPLETE;
    if (fc->owner_tid != GetCurrentThreadId()) return RPC_E_WRONG_THREAD;
    if (fc->method != method) return E_INVALIDARG;
    for (i = 0; i < method->split.count; i++)
        if (method->split.finish_offset[i] != CC_FMT_NONE && !*(void **)(frame + method->split.finish_offset[i]))
            return HRESULT_FROM_WIN32(RPC_X_NULL_REF_POINTER);

    if (fc->running) return RPC_S_CALLPENDING;  /* Finish_ from inside its own wait's message pump */
    if (fc->parked && !fc->replied && cc_call_state(&obj->state) == CC_PENDING)
    {
        /* The reply is still to come: the fiber waits for it itself. */
        fc->inline_wait = TRUE;
        run_fiber(fc);
    }
    state = cc_call_state(&obj->state);
    if (state != CC_COMPLETE && state != CC_CANCELLED)
    {
        need_event(obj);
        if (FAILED(hr = wait_event(obj->event, INFINITE))) return hr;
        state = cc_call_state(&obj->state);
    }

    EnterCriticalSection(&call_lock);
    obj->call = NULL;
    LeaveCriticalSection(&call_lock);

    if (state == CC_COMPLETE)
    {
        if (fc->phase != PHASE_DONE) run_fiber(fc);
        hr = fc->result;
        for (i = 0; i < method->split.count; i++)
        {
            uint16_t to = method->split.finish_offset[i];

            if (to == CC_FMT_NONE) continue;
            memcpy(*(void **)(frame + to), fc->out_ptr[i], fc->out_size[i]);
        }
        free_fiber_call(fc);
    }
    else
    {
        /* Cancelled: the [out] values are cleared and the reply, if it has
         * not come yet, is discarded when it does. */
        InterlockedExchange(&fc->discard, TRUE);
        for (i = 0; i < method->split.count; i++)
        {
            uint16_t to = method->split.finish_offset[i];

            if (to != CC_FMT_NONE) memset(*(void **)(frame + to), 0, fc->out_size[i]);
        }
        if (fc->replied) finish_fiber(fc);
        else orphan(fc);
        hr = RPC_E_CALL_CANCELED;
    }
    /* The event stays signalled until the next Begin_. */
    cc_call_finish(&obj->state);
    return hr;
}

static inline struct call_object *impl_from_async_iface(IUnknown *iface)
{
    return CONTAINING_RECORD(iface, struct call_object, async_iface);
}

static HRESULT dispatch(IUnknown *iface, unsigned int index, BYTE *frame, const double *fregs, BOOL promoted)
{
    struct call_object *obj = impl_from_async_iface(iface);
    unsigned int k = (index - 3) / 2;

    if (index < 3 || index >= obj->desc->vtbl_count) return E_UNEXPECTED;
    TRACE("%p, %s_%u\n", iface, (index - 3) & 1 ? "Finish" : "Begin", k + 3);
    if ((index - 3) & 1) return finish_call(obj, k, frame);
    return begin_call(obj, k, frame, fregs, promoted);
}

#ifdef __x86_64__
HRESULT CDECL async_dispatch(IUnknown *iface, unsigned int index, BYTE *frame, const double *fregs)
{
    return dispatch(iface, index, frame, fregs, FALSE);
}

/*
 * rpcrt4!NdrDcomAsyncClientCall, a stub in Wine, taken over: proxy code that
 * calls it with a Begin_ or Finish_ procedure of an async interface and one
 * of our call objects as 'this' gets the same call as through the vtable.
 */
LONG_PTR CDECL async_dcom_dispatch(const MIDL_STUB_DESC *stub_desc, const BYTE *format, BYTE *frame)
{
    IUnknown *iface = *(IUnknown **)frame;
    const struct async_desc *desc;
    struct cc_fmt_proc *proc;
    unsigned int index;
    size_t len;

    TRACE("%p, %p, %p\n", stub_desc, format, iface);
    if (!iface || !format || !(len = image_extent(format))) return E_INVALIDARG;
    AcquireSRWLockShared(&desc_lock);
    for (desc = descs; desc; desc = desc->next) if (iface->lpVtbl == (void *)desc->vtbl) break;
    ReleaseSRWLockShared(&desc_lock);
    if (!desc)
    {
        FIXME("%p is not a call object of cocancel\n", iface);
        return E_NOTIMPL;
    }
    if (!(proc = HeapAlloc(GetProcessHeap(), 0, sizeof(*proc)))) return E_OUTOFMEMORY;
    if (cc_fmt_read_proc(format, len, PTR_SIZE, proc) != CC_FMT_OK) index = 0;
    else index = proc->proc_num;
    HeapFree(GetProcessHeap(), 0, proc);
    /* The procedure must be that method's own, from the interface's tables. */
    if (index < 3 || index >= desc->vtbl_count || stub_desc != desc->async_info->pStubDesc ||
        format != desc->async_info->ProcFormatString + desc->async_info->FormatStringOffset[index])
        return E_INVALIDARG;
    return dispatch(iface, index, frame, NULL, TRUE);
}
#else
ULONGLONG CDECL async_dispatch_i386(IUnknown *iface, unsigned int index, BYTE *frame)
{
    struct call_object *obj = impl_from_async_iface(iface);
    const struct async_method *method = &obj->desc->methods[(index - 3) / 2];
    unsigned int pop = (index - 3) & 1 ? method->finish_pop : method->begin_pop;
    HRESULT hr = dispatch(iface, index, frame, NULL, FALSE);

    return ((ULONGLONG)pop << 32) | (ULONG)hr;
}
#endif

/* ---------------------------------------------------------------------
 * The call object's interfaces.
 */

static inline struct call_object *impl_from_inner(IUnknown *iface)
{
    return CONTAINING_RECORD(iface, struct call_object, IUnknown_inner);
}

static HRESULT WINAPI inner_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    struct call_object *obj = impl_from_inner(iface);

    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_IUnknown)) *ppv = &obj->IUnknown_inner;
    else if (IsEqualIID(riid, &obj->desc->async_iid)) *ppv = &obj->async_iface;
    else if (IsEqualIID(riid, &IID_ISynchronize)) *ppv = &obj->ISynchronize_iface;
    else if (IsEqualIID(riid, &IID_ISynchronizeHandle)) *ppv = &obj->ISynchronizeHandle_iface;
    else if (IsEqualIID(riid, &IID_ICancelMethodCalls)) *ppv = &obj->ICancelMethodCalls_iface;
    else if (IsEqualIID(riid, &IID_IClientSecurity))
        /* Security settings are the proxy's: they apply to the call it makes. */
        return IUnknown_QueryInterface(obj->sync, riid, ppv);
    else
    {
        *ppv = NULL;
        return E_NOINTERFACE;
    }
    IUnknown_AddRef((IUnknown *)*ppv);
    return S_OK;
}

static ULONG WINAPI inner_AddRef(IUnknown *iface)
{
    return InterlockedIncrement(&impl_from_inner(iface)->refcount);
}

static ULONG WINAPI inner_Release(IUnknown *iface)
{
    struct call_object *obj = impl_from_inner(iface);
    ULONG ref = InterlockedDecrement(&obj->refcount);
    struct fiber_call *fc;

    if (ref) return ref;
    TRACE("%p destroyed\n", obj);
    EnterCriticalSection(&call_lock);
    fc = obj->call;
    obj->call = NULL;
    if (fc) fc->obj = NULL;
    LeaveCriticalSection(&call_lock);
    if (fc)
    {
        /* A completion notification may still be running on a pool thread. */
        for (;;)
        {
            BOOL busy;

            EnterCriticalSection(&call_lock);
            busy = fc->notifying;
            LeaveCriticalSection(&call_lock);
            if (!busy) break;
            Sleep(0);
        }
        /* Released without Finish_: the reply is dropped (the NDR engine frees it). */
        InterlockedExchange(&fc->discard, TRUE);
        if (fc->owner_tid == GetCurrentThreadId() && fc->replied) finish_fiber(fc);
        else orphan(fc);
    }
    IUnknown_Release(obj->sync);
    if (obj->event) CloseHandle(obj->event);
    if (obj->wake_event) CloseHandle(obj->wake_event);
    HeapFree(GetProcessHeap(), 0, obj);
    return 0;
}

static const IUnknownVtbl inner_vtbl = { inner_QueryInterface, inner_AddRef, inner_Release };

static HRESULT WINAPI async_iface_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(impl_from_async_iface(iface)->outer, riid, ppv);
}

static ULONG WINAPI async_iface_AddRef(IUnknown *iface)
{
    return IUnknown_AddRef(impl_from_async_iface(iface)->outer);
}

static ULONG WINAPI async_iface_Release(IUnknown *iface)
{
    return IUnknown_Release(impl_from_async_iface(iface)->outer);
}

static inline struct call_object *impl_from_ISynchronize(ISynchronize *iface)
{
    return CONTAINING_RECORD(iface, struct call_object, ISynchronize_iface);
}

static HRESULT WINAPI sync_QueryInterface(ISynchronize *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(impl_from_ISynchronize(iface)->outer, riid, ppv);
}

static ULONG WINAPI sync_AddRef(ISynchronize *iface)
{
    return IUnknown_AddRef(impl_from_ISynchronize(iface)->outer);
}

static ULONG WINAPI sync_Release(ISynchronize *iface)
{
    return IUnknown_Release(impl_from_ISynchronize(iface)->outer);
}

static HRESULT WINAPI sync_Wait(ISynchronize *iface, DWORD flags, DWORD timeout)
{
    struct call_object *obj = impl_from_ISynchronize(iface);
    DWORD index;

    TRACE("%p, %#lx, %lu\n", iface, flags, timeout);
    reap_orphans();
    need_event(obj);
    watch_call(obj);
    return CoWaitForMultipleHandles(flags, timeout, 1, &obj->event, &index);
}

static HRESULT WINAPI sync_Signal(ISynchronize *iface)
{
    set_event(impl_from_ISynchronize(iface));
    return S_OK;
}

static HRESULT WINAPI sync_Reset(ISynchronize *iface)
{
    struct call_object *obj = impl_from_ISynchronize(iface);

    InterlockedExchange(&obj->lazy_signal, 0);
    ResetEvent(obj->event);
    return S_OK;
}

static const ISynchronizeVtbl sync_vtbl =
{
    sync_QueryInterface,
    sync_AddRef,
    sync_Release,
    sync_Wait,
    sync_Signal,
    sync_Reset,
};

static inline struct call_object *impl_from_ISynchronizeHandle(ISynchronizeHandle *iface)
{
    return CONTAINING_RECORD(iface, struct call_object, ISynchronizeHandle_iface);
}

static HRESULT WINAPI handle_QueryInterface(ISynchronizeHandle *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(impl_from_ISynchronizeHandle(iface)->outer, riid, ppv);
}

static ULONG WINAPI handle_AddRef(ISynchronizeHandle *iface)
{
    return IUnknown_AddRef(impl_from_ISynchronizeHandle(iface)->outer);
}

static ULONG WINAPI handle_Release(ISynchronizeHandle *iface)
{
    return IUnknown_Release(impl_from_ISynchronizeHandle(iface)->outer);
}

static HRESULT WINAPI handle_GetHandle(ISynchronizeHandle *iface, HANDLE *handle)
{
    if (!handle) return E_INVALIDARG;
    /* Whoever waits on the handle must see it signalled without Finish_,
     * for this call and every later one. */
    impl_from_ISynchronizeHandle(iface)->watched = TRUE;
    need_event(impl_from_ISynchronizeHandle(iface));
    watch_call(impl_from_ISynchronizeHandle(iface));
    *handle = impl_from_ISynchronizeHandle(iface)->event;
    return S_OK;
}

static const ISynchronizeHandleVtbl handle_vtbl =
{
    handle_QueryInterface,
    handle_AddRef,
    handle_Release,
    handle_GetHandle,
};

static inline struct call_object *impl_from_ICancelMethodCalls(ICancelMethodCalls *iface)
{
    return CONTAINING_RECORD(iface, struct call_object, ICancelMethodCalls_iface);
}

static HRESULT WINAPI cancel_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(impl_from_ICancelMethodCalls(iface)->outer, riid, ppv);
}

static ULONG WINAPI cancel_AddRef(ICancelMethodCalls *iface)
{
    return IUnknown_AddRef(impl_from_ICancelMethodCalls(iface)->outer);
}

static ULONG WINAPI cancel_Release(ICancelMethodCalls *iface)
{
    return IUnknown_Release(impl_from_ICancelMethodCalls(iface)->outer);
}

static HRESULT WINAPI cancel_Cancel(ICancelMethodCalls *iface, ULONG seconds)
{
    struct call_object *obj = impl_from_ICancelMethodCalls(iface);
    ULONGLONG call_id = 0;
    enum cc_status status;

    TRACE("%p, %lu\n", iface, seconds);
    if ((status = cc_call_cancel(&obj->state, seconds != 0)) != CC_OK) return hresult_from_status(status);
    EnterCriticalSection(&call_lock);
    if (obj->call) call_id = obj->call->call_id;
    LeaveCriticalSection(&call_lock);
    /* The server sees the request at once, whatever grace it is given. */
    if (call_id) channel_mark_cancelled(call_id);
    if (seconds)
    {
        /* A completion within the grace period sets the event (a cancel does not, yet). */
        need_event(obj);
        watch_call(obj);
        WaitForSingleObject(obj->event, cc_seconds_to_ms(seconds));
        if ((status = cc_call_expire(&obj->state)) != CC_OK) return hresult_from_status(status);
    }
    EnterCriticalSection(&call_lock);
    if (obj->call) InterlockedExchange(&obj->call->discard, TRUE);
    LeaveCriticalSection(&call_lock);
    /* Finish_ returns at once; the request itself is left to end in Wine
     * (its late reply is discarded).  Aborting it in the transport, as for
     * synchronous calls, breaks the connection for the calls that follow
     * when cancels come in quick succession (found by the stress test). */
    wake_finish(obj);
    signal_done(obj);
    return S_OK;
}

static HRESULT WINAPI cancel_TestCancel(ICancelMethodCalls *iface)
{
    struct call_object *obj = impl_from_ICancelMethodCalls(iface);

    return hresult_from_status(cc_call_test(&obj->state));
}

static const ICancelMethodCallsVtbl cancel_vtbl =
{
    cancel_QueryInterface,
    cancel_AddRef,
    cancel_Release,
    cancel_Cancel,
    cancel_TestCancel,
};

static HRESULT create_call_object(const struct async_desc *desc, IUnknown *sync, IUnknown *outer,
                                  REFIID riid, void **ppv)
{
    struct call_object *obj;
    HRESULT hr;

    if (!(obj = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*obj)))) return E_OUTOFMEMORY;
    obj->IUnknown_inner.lpVtbl = &inner_vtbl;
    obj->async_iface.lpVtbl = desc->vtbl;
    obj->ISynchronize_iface.lpVtbl = &sync_vtbl;
    obj->ISynchronizeHandle_iface.lpVtbl = &handle_vtbl;
    obj->ICancelMethodCalls_iface.lpVtbl = &cancel_vtbl;
    obj->refcount = 1;
    obj->outer = outer ? outer : &obj->IUnknown_inner;
    obj->desc = desc;
    obj->sync = sync;
    IUnknown_AddRef(sync);
    cc_call_init(&obj->state);
    obj->event = CreateEventW(NULL, TRUE, FALSE, NULL);
    obj->wake_event = CreateEventW(NULL, TRUE, FALSE, NULL);
    if (!obj->event || !obj->wake_event)
    {
        IUnknown_Release(&obj->IUnknown_inner);
        return E_OUTOFMEMORY;
    }
    hr = IUnknown_QueryInterface(&obj->IUnknown_inner, riid, ppv);
    IUnknown_Release(&obj->IUnknown_inner);
    return hr;
}

/* ---------------------------------------------------------------------
 * ICallFactory on the proxy manager (a tear-off).
 */

struct call_factory
{
    ICallFactory ICallFactory_iface;
    LONG refcount;
    IUnknown *manager;
};

static inline struct call_factory *impl_from_ICallFactory(ICallFactory *iface)
{
    return CONTAINING_RECORD(iface, struct call_factory, ICallFactory_iface);
}

static HRESULT WINAPI factory_QueryInterface(ICallFactory *iface, REFIID riid, void **ppv)
{
    struct call_factory *factory = impl_from_ICallFactory(iface);

    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_ICallFactory))
    {
        *ppv = iface;
        ICallFactory_AddRef(iface);
        return S_OK;
    }
    return IUnknown_QueryInterface(factory->manager, riid, ppv);
}

static ULONG WINAPI factory_AddRef(ICallFactory *iface)
{
    return InterlockedIncrement(&impl_from_ICallFactory(iface)->refcount);
}

static ULONG WINAPI factory_Release(ICallFactory *iface)
{
    struct call_factory *factory = impl_from_ICallFactory(iface);
    ULONG ref = InterlockedDecrement(&factory->refcount);

    if (!ref)
    {
        IUnknown_Release(factory->manager);
        HeapFree(GetProcessHeap(), 0, factory);
    }
    return ref;
}

static HRESULT WINAPI factory_CreateCall(ICallFactory *iface, REFIID riid, IUnknown *outer, REFIID riid2,
                                         IUnknown **ppv)
{
    struct call_factory *factory = impl_from_ICallFactory(iface);
    const struct async_desc *desc;
    const ProxyFileInfo *file;
    int sync_index, async_index;
    IUnknown *sync;
    HRESULT hr;

    TRACE("%p, %s, %p, %s, %p\n", iface, cc_debugstr_guid(riid), outer, cc_debugstr_guid(riid2), ppv);
    if (!ppv) return E_INVALIDARG;
    *ppv = NULL;
    if (!riid || !riid2) return E_INVALIDARG;
    reap_orphans();
    if (!find_record(factory->manager, riid, &file, &sync_index, &async_index)) return E_NOINTERFACE;
    /* An aggregated object hands out its inner IUnknown only. */
    if (outer && !IsEqualIID(riid2, &IID_IUnknown)) return E_INVALIDARG;
    if (!(desc = get_desc(file, sync_index, async_index))) return E_NOTIMPL;
    /* Begin_ returns before the reply only once the channel is intercepted. */
    if (!channel_wait_ready(5000)) WARN("the channel is not intercepted: Begin_ will wait for the server\n");
    if (FAILED(hr = IUnknown_QueryInterface(factory->manager, &desc->sync_iid, (void **)&sync))) return hr;
    hr = create_call_object(desc, sync, outer, riid2, (void **)ppv);
    IUnknown_Release(sync);
    return hr;
}

static const ICallFactoryVtbl factory_vtbl =
{
    factory_QueryInterface,
    factory_AddRef,
    factory_Release,
    factory_CreateCall,
};

static HRESULT WINAPI hook_manager_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    const ProxyFileInfo *file;
    struct call_factory *factory;
    int sync_index, async_index;

    if (riid && ppv && IsEqualIID(riid, &IID_ICallFactory) &&
        find_record(iface, NULL, &file, &sync_index, &async_index))
    {
        if (!(factory = HeapAlloc(GetProcessHeap(), 0, sizeof(*factory)))) return E_OUTOFMEMORY;
        factory->ICallFactory_iface.lpVtbl = &factory_vtbl;
        factory->refcount = 1;
        factory->manager = iface;
        IUnknown_AddRef(iface);
        *ppv = &factory->ICallFactory_iface;
        return S_OK;
    }
    return real_manager_QueryInterface(iface, riid, ppv);
}

/* ---------------------------------------------------------------------
 * Set-up.
 */

static const CLSID CLSID_CocancelNoProxies = {0x9d3f1b24, 0x6c1e, 0x4f7a, {0xa4, 0x0b, 0x2c, 0x61, 0x5e, 0x90, 0x13, 0x7d}};

/* rpcrt4's standard factory vtable, obtained from rpcrt4 itself with an empty proxy file list. */
static void hook_factory(void)
{
    static const ProxyFileInfo *no_files[] = { NULL };
    static CStdPSFactoryBuffer factory;
    HMODULE rpcrt4 = GetModuleHandleW(L"rpcrt4.dll");
    IPSFactoryBuffer *ps = NULL;
    void **vtbl;
    unsigned int i;

    if (!rpcrt4 || FAILED(NdrDllGetClassObject(&CLSID_CocancelNoProxies, &IID_IPSFactoryBuffer, (void **)&ps,
                                                no_files, &CLSID_CocancelNoProxies, &factory)) ||
        (void *)ps != (void *)&factory)
        goto refuse;
    vtbl = (void **)factory.lpVtbl;
    if (!in_module(rpcrt4, vtbl, 5 * sizeof(void *))) goto refuse;
    for (i = 0; i < 5; i++) if (!in_module(rpcrt4, vtbl[i], 1)) goto refuse;
    real_CreateProxy = vtbl[3];
    if (!write_pointer(&vtbl[3], (void *)hook_CreateProxy))
    {
        real_CreateProxy = NULL;
        goto refuse;
    }
    TRACE("standard proxy factory vtable %p hooked\n", vtbl);
    return;

refuse:
    WARN("rpcrt4's proxy factory not recognised; no asynchronous calls\n");
    InterlockedIncrement(&async_refused);
}

static void hook_waits(HMODULE combase)
{
    if (!redirect_import(combase, "kernel32.dll", "WaitForMultipleObjectsEx", (void *)hook_WaitForMultipleObjectsEx,
                         (void **)&real_WaitForMultipleObjectsEx) ||
        !redirect_import(combase, "user32.dll", "MsgWaitForMultipleObjectsEx",
                         (void *)hook_MsgWaitForMultipleObjectsEx, (void **)&real_MsgWaitForMultipleObjectsEx))
    {
        WARN("combase's wait imports not found as expected; Begin_ waits for the reply\n");
        InterlockedIncrement(&async_refused);
    }
}

void async_get_status(struct cocancel_status *status)
{
    if (real_CreateProxy && manager_vtbl) status->routes |= COCANCEL_ROUTE_ASYNC;
    status->refused_patches += async_refused;
}

void async_init(void)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");

    if (!combase) return;
    InitializeCriticalSection(&call_lock);
    fiber_tls = TlsAlloc();
    convert_tls = TlsAlloc();
    if (fiber_tls == TLS_OUT_OF_INDEXES || convert_tls == TLS_OUT_OF_INDEXES) return;
    hook_waits(combase);
    hook_factory();
#ifdef __x86_64__
    if (!patch_wine_stub(GetModuleHandleW(L"rpcrt4.dll"), "NdrDcomAsyncClientCall", (void *)dcom_entry))
        TRACE("rpcrt4's NdrDcomAsyncClientCall left as it is\n");
#endif
}
