/*
 * Call objects: asynchronous calls on standard proxies, Begin_ and Finish_.
 *
 * Owns the call objects that ICallFactory::CreateCall hands out (callfactory.c
 * finds the proxies that have them) and the generic Begin_/Finish_ engine.
 *
 * How a call runs.  Begin_X starts the synchronous method X of the proxy's
 * own interface proxy, with Wine's NDR engine and channel, on a worker fiber
 * of the calling thread (runner.c).  Everything that needs the caller's
 * apartment - marshaling the [in] parameters, GetBuffer, posting the
 * request, later unmarshaling the reply - so runs on the caller's thread,
 * as for a synchronous call.  When Wine's SendReceive first blocks waiting
 * for the reply, the fiber parks and Begin_ returns: the request is on its
 * way and the [in] parameters are no longer needed.  Finish_X resumes the
 * fiber, which waits for the reply itself (pumping in an STA), unmarshals it
 * into storage the call object owns and returns the method's HRESULT;
 * Finish_ copies the [out] values to its own arguments.  A thread-pool wait
 * watches the reply only when something other than Finish_ needs it (the
 * event handle, an aggregating object, ISynchronize::Wait, a cancel with
 * grace, an abandoned call).  On the wire it is the synchronous call.
 *
 * The Begin_/Finish_ methods are not code per interface: every async vtable
 * slot is a small thunk (thunks_*.S) that passes its slot number to one
 * dispatcher, which reads the proxy DLL's procedure format strings (fmt.c)
 * to know where each argument is and how large each [out] value is.
 *
 * Cancelling marks the call: its reply, whenever it comes, is discarded
 * (SendReceive reports RPC_E_CALL_CANCELED to the NDR engine, which frees it)
 * when the fiber is resumed on its thread - at Finish_, or, for calls whose
 * object is gone, at the thread's next use of the engine.
 */

#include "cocancel_private.h"

#define USE_STUBLESS_PROXY
#include <rpcproxy.h>

#include "fmt.h"

extern const BYTE async_thunks[];
#ifdef __x86_64__
static HRESULT CDECL async_dispatch(IUnknown *iface, unsigned int index, BYTE *frame, const double *fregs);
static LONG_PTR CDECL async_dcom_dispatch(const MIDL_STUB_DESC *stub_desc, const BYTE *format, BYTE *frame);
extern HRESULT (CDECL *async_dispatch_target)(IUnknown *, unsigned int, BYTE *, const double *);
extern LONG_PTR (CDECL *async_dcom_target)(const MIDL_STUB_DESC *, const BYTE *, BYTE *);
#else
static ULONGLONG CDECL async_dispatch_i386(IUnknown *iface, unsigned int index, BYTE *frame);
extern ULONGLONG (CDECL *async_dispatch_target)(IUnknown *, unsigned int, BYTE *);
#endif

/* ---------------------------------------------------------------------
 * Async interface descriptions, built from the proxy file's tables.
 */

static SRWLOCK desc_lock = SRWLOCK_INIT;
static struct async_desc *descs;
static struct async_desc *retired_descs;    /* of unloaded DLLs: kept, never found again */

static BOOL read_proc(const MIDL_STUBLESS_PROXY_INFO *info, unsigned int method, struct cc_fmt_proc *proc)
{
    unsigned short offset;
    size_t len;

    if (!pe_extent(&info->FormatStringOffset[method])) return FALSE;
    offset = info->FormatStringOffset[method];
    if (offset == 0xffff || !(len = pe_extent(info->ProcFormatString + offset))) return FALSE;
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

BOOL asynccall_find(const ProxyFileInfo *const *list, REFIID riid, const ProxyFileInfo **file, int *sync_index,
                    int *async_index)
{
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

/* Builds (once) the description of the async interface at file->pProxyVtblList[async_index]. */
const struct async_desc *asynccall_describe(const ProxyFileInfo *file, int sync_index, int async_index)
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
    desc->types_len = pe_extent(desc->types);
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
        method->sync_pop = pop_bytes(&method->sync);
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

/*
 * A DLL was unloaded: the descriptions read from its tables are keyed by
 * addresses in it, which a DLL loaded later may reuse for other tables.
 * They are taken out of the lookup (their memory stays: no call object of
 * a proxy of that DLL can outlive it, COM keeps a proxy/stub DLL loaded
 * while it has proxies, but nothing here relies on that).
 */
void asynccall_module_unloaded(const void *base, SIZE_T size)
{
    struct async_desc **link, *desc;

    AcquireSRWLockExclusive(&desc_lock);
    for (link = &descs; (desc = *link);)
    {
        if ((ULONG_PTR)desc->async_proxy - (ULONG_PTR)base >= size)
        {
            link = &desc->next;
            continue;
        }
        TRACE("async interface %s: its DLL is unloaded\n", cc_debugstr_guid(&desc->async_iid));
        *link = desc->next;
        desc->next = retired_descs;
        retired_descs = desc;
    }
    ReleaseSRWLockExclusive(&desc_lock);
}

/* ---------------------------------------------------------------------
 * Call objects and their calls.
 */

struct call_object;

/* One call of a call object: a run of the proxy's synchronous method. */
struct fiber_call
{
    struct run run;
    struct call_object *obj;        /* NULL once the call object is gone (under call_lock) */
    const struct async_desc *desc;
    const struct async_method *method;
    void *proc;                     /* the synchronous proxy method */
    HRESULT result;
    ULONGLONG call_id;
    BYTE *scratch;
    BYTE *out_ptr[CC_FMT_MAX_PARAMS];
    SIZE_T out_size[CC_FMT_MAX_PARAMS];
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
    /*
     * Finish_ waits on its fiber (wait_inline) with the wake event: only
     * then does a cancel or a reply taken by the pool set it.  Finish_ sets
     * this before it looks at the call's state, the waker after changing
     * it, so one of them always sees the other.
     */
    LONG finish_waits;
    struct fiber_call *call;
};

static CRITICAL_SECTION call_lock;

static inline struct fiber_call *fiber_call_from_run(struct run *run)
{
    return CONTAINING_RECORD(run, struct fiber_call, run);
}

static void set_event(struct call_object *obj)
{
    InterlockedExchange(&obj->event_maybe_set, 1);
    SetEvent(obj->event);
}

/* Wakes a Finish_ that waits for the reply itself. */
static void wake_finish(struct call_object *obj)
{
    if (!InterlockedCompareExchange(&obj->finish_waits, 0, 0)) return;
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

/* A reference on obj, unless its last one is gone already (it is being destroyed then). */
static BOOL call_object_try_addref(struct call_object *obj)
{
    LONG ref = InterlockedCompareExchange(&obj->refcount, 0, 0), seen;

    while (ref)
    {
        if ((seen = InterlockedCompareExchange(&obj->refcount, ref + 1, ref)) == ref) return TRUE;
        ref = seen;
    }
    return FALSE;
}

/*
 * The reply of fc arrived: complete its call object's call, unless it was
 * cancelled.  The object is kept alive while whoever waits is told: an
 * aggregating object may release it from inside its Signal.
 */
static void note_reply(struct fiber_call *fc)
{
    struct call_object *obj;
    BOOL deliver = FALSE;

    TRACE("call %p: reply\n", fc);
    EnterCriticalSection(&call_lock);
    if ((obj = fc->obj) && call_object_try_addref(obj)) deliver = cc_call_complete(&obj->state) == CC_OK;
    else obj = NULL;
    cc_run_set(&fc->run.state, CC_RUN_REPLIED);
    LeaveCriticalSection(&call_lock);
    if (!obj) return;
    if (deliver) signal_done(obj);
    IUnknown_Release(&obj->IUnknown_inner);
}

/* The run's body: the synchronous proxy method with the frame Begin_ built. */
static void call_run_body(struct run *run)
{
    struct fiber_call *fc = fiber_call_from_run(run);

    fc->result = (HRESULT)call_frame(fc->proc, fc->frame, fc->method->sync.stack_size / PTR_SIZE);
}

/* The reply came: noted by the fiber's own wait, or by the pool (then a Finish_ waiting for it is woken). */
static void call_run_reply(struct run *run, BOOL from_pool)
{
    struct fiber_call *fc = fiber_call_from_run(run);
    struct call_object *obj;

    note_reply(fc);
    if (!from_pool) return;
    /* A Finish_ waiting for the same event would never see it now. */
    EnterCriticalSection(&call_lock);
    if ((obj = fc->obj)) wake_finish(obj);
    LeaveCriticalSection(&call_lock);
}

/* Finish_'s own wait was woken: it gives up only if the call was cancelled. */
static BOOL call_run_give_up(struct run *run)
{
    struct fiber_call *fc = fiber_call_from_run(run);
    enum cc_state state = CC_PENDING;

    EnterCriticalSection(&call_lock);
    if (fc->obj) state = cc_call_state(&fc->obj->state);
    LeaveCriticalSection(&call_lock);
    return state == CC_CANCELLED;
}

static void call_run_destroy(struct run *run)
{
    struct fiber_call *fc = fiber_call_from_run(run);

    HeapFree(GetProcessHeap(), 0, fc->scratch);
    HeapFree(GetProcessHeap(), 0, fc);
}

static const struct run_ops call_run_ops = { call_run_body, call_run_reply, call_run_give_up, call_run_destroy };

/* The call object of fc has no more use for it: it is left to the runner until its reply comes. */
static void abandon_call(struct fiber_call *fc)
{
    EnterCriticalSection(&call_lock);
    fc->obj = NULL;
    LeaveCriticalSection(&call_lock);
    runner_abandon(&fc->run);
}

/* The call of this fiber, if the run on it is a call object's. */
static struct fiber_call *current_call(void)
{
    struct run *run = runner_current();

    return run && run->ops == &call_run_ops ? fiber_call_from_run(run) : NULL;
}

/* The channel hook filled a request's buffer on this thread (orpchook.c). */
void asynccall_request_filled(REFIID riid)
{
    struct fiber_call *fc = current_call();

    if (fc && IsEqualIID(riid, &fc->desc->sync_iid))
        cc_run_move(&fc->run.state, CC_RUN_BIT(CC_RUN_MARSHALING), CC_RUN_BUFFERED);
}

/*
 * The channel's SendReceive (synccall.c): TRUE if msg is the request of the
 * call running on this fiber, which is then sent here.  Wine's SendReceive
 * parks the fiber when it waits for the reply (runner.c), and Begin_
 * returns; it returns here when the fiber is resumed with the reply.
 */
BOOL asynccall_send_receive(IRpcChannelBuffer *chan, RPCOLEMESSAGE *msg, ULONG *status, ULONGLONG call_id,
                            HRESULT *hr)
{
    struct fiber_call *fc = current_call();
    const RPC_CLIENT_INTERFACE *cif;
    unsigned int i;

    if (!fc || cc_run_phase(&fc->run.state) != CC_RUN_BUFFERED) return FALSE;
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
    cc_run_set(&fc->run.state, CC_RUN_SENT);
    cc_run_move(&fc->run.state, CC_RUN_BIT(CC_RUN_BUFFERED), CC_RUN_SENDING);
    *hr = wine_real.SendReceive(chan, msg, status);
    if (!cc_run_test(&fc->run.state, CC_RUN_HAS_PARKED))
    {
        /* The reply was there before Wine waited: Begin_ returns all the
         * same, and the reply is unmarshaled by Finish_ like any other. */
        cc_run_set(&fc->run.state, CC_RUN_HAS_PARKED);
        cc_run_move(&fc->run.state, CC_RUN_BIT(CC_RUN_SENDING), CC_RUN_PARKED);
        note_reply(fc);
        runner_yield(&fc->run);
    }
    cc_run_move(&fc->run.state, CC_RUN_BIT(CC_RUN_SENDING) | CC_RUN_BIT(CC_RUN_PARKED) | CC_RUN_BIT(CC_RUN_WAITING),
                CC_RUN_RECEIVED);
    if (cc_run_test(&fc->run.state, CC_RUN_DISCARD))
    {
        /* The NDR engine frees the reply and clears the [out] storage. */
        if (status) *status = RPC_S_CALL_CANCELLED;
        *hr = RPC_E_CALL_CANCELED;
    }
    return TRUE;
}

/* Someone other than Finish_ needs to know when obj's reply arrives. */
static void watch_call(struct call_object *obj)
{
    EnterCriticalSection(&call_lock);
    if (obj->call) runner_watch(&obj->call->run);
    LeaveCriticalSection(&call_lock);
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

SIZE_T asynccall_arg_size(const struct cc_fmt_proc *proc, unsigned int i)
{
#ifdef __x86_64__
    return 8;
#else
    return (i + 1 < proc->param_count ? proc->params[i + 1].stack_offset : proc->stack_size) -
           proc->params[i].stack_offset;
#endif
}

/* The frame of the synchronous call: the proxy, then each [in] argument from Begin_'s frame. */
static void build_frame(struct fiber_call *fc, const BYTE *frame, const double *fregs, BOOL promoted)
{
    const struct async_method *method = fc->method;
    unsigned int i;

    fc->frame[0] = (ULONG_PTR)fc->obj->sync;
    for (i = 0; i < method->split.count; i++)
    {
        unsigned int p = method->split.index[i];
        const struct cc_fmt_param *param = &method->sync.params[p];
        uint16_t from = method->split.begin_offset[i];
        const BYTE *src;

        if (!(param->attr & CC_PARAM_IS_IN) || (param->attr & CC_PARAM_IS_OUT)) continue;
        src = frame + from;
#ifdef __x86_64__
        if (fregs && from / 8 >= 1 && from / 8 <= 3 && cc_fmt_param_is_floating(param))
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
        memcpy((BYTE *)fc->frame + param->stack_offset, src, asynccall_arg_size(&method->sync, p));
    }
}

/* [out] and [in,out] parameters point to storage of the call object, sized from the format strings. */
static HRESULT build_out_storage(struct fiber_call *fc, const BYTE *frame)
{
    const struct async_method *method = fc->method;
    struct arg_reader_ctx reader;
    SIZE_T total = 0;
    unsigned int i;

    reader.proc = &method->sync;
    reader.frame = (const BYTE *)fc->frame;
    for (i = 0; i < method->split.count; i++)
    {
        const struct cc_fmt_param *param = &method->sync.params[method->split.index[i]];
        uint64_t size;

        if (!(param->attr & CC_PARAM_IS_OUT)) continue;
        if (cc_fmt_out_size(param, fc->desc->types, fc->desc->types_len, PTR_SIZE, read_sync_arg, &reader,
                            &size) != CC_FMT_OK || size > 0x1000000)
        {
            FIXME("parameter %u of method %u: size not understood\n", i, method->sync.proc_num);
            return E_NOTIMPL;
        }
        fc->out_size[i] = (SIZE_T)size;
        total += ((SIZE_T)size + 15) & ~(SIZE_T)15;
    }
    if (!(fc->scratch = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, total + 16))) return E_OUTOFMEMORY;
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
            if (!in) return HRESULT_FROM_WIN32(RPC_X_NULL_REF_POINTER);
            memcpy(fc->out_ptr[i], in, fc->out_size[i]);
        }
        *(BYTE **)((BYTE *)fc->frame + param->stack_offset) = fc->out_ptr[i];
    }
    return S_OK;
}

static HRESULT begin_call(struct call_object *obj, unsigned int k, const BYTE *frame, const double *fregs,
                          BOOL promoted)
{
    struct fiber_call *fc;
    HRESULT hr;
    int flags;

    runner_reap();
    if (cc_call_begin(&obj->state, TRUE) != CC_OK) return RPC_S_CALLPENDING;
    /* The server looks for the ring of a call that can be cancelled: it exists before the call goes. */
    cancelring_prepare();
    runner_expect_abandon();
    InterlockedExchange(&obj->lazy_signal, 0);
    if (InterlockedExchange(&obj->event_maybe_set, 0)) ResetEvent(obj->event);
    if (InterlockedExchange(&obj->wake_event_set, 0)) ResetEvent(obj->wake_event);

    if (!(fc = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*fc))))
    {
        hr = E_OUTOFMEMORY;
        goto failed;
    }
    fc->run.ops = &call_run_ops;
    fc->run.release = obj->wake_event;
    fc->obj = obj;
    fc->desc = obj->desc;
    fc->method = &obj->desc->methods[k];
    fc->proc = (*(void ***)obj->sync)[fc->method->sync.proc_num];
    build_frame(fc, frame, fregs, promoted);
    if (FAILED(hr = build_out_storage(fc, frame))) goto failed;

    /* An aggregating object is told of the completion as it happens, and
     * so is whoever holds the event handle. */
    flags = obj->watched || obj->outer != &obj->IUnknown_inner ? CC_RUN_WATCH : 0;
    if (!runner_start(&fc->run, &call_run_ops, CC_RUN_MARSHALING, flags))
    {
        hr = E_OUTOFMEMORY;
        goto failed;
    }
    EnterCriticalSection(&call_lock);
    obj->call = fc;
    LeaveCriticalSection(&call_lock);
    if (!runner_resume(&fc->run))
    {
        hr = E_OUTOFMEMORY;
        EnterCriticalSection(&call_lock);
        obj->call = NULL;
        LeaveCriticalSection(&call_lock);
        goto failed;
    }

    if (cc_run_phase(&fc->run.state) != CC_RUN_DONE || cc_run_test(&fc->run.state, CC_RUN_SENT)) return S_OK;
    if (SUCCEEDED(fc->result))
    {
        /* The request was not seen by the channel hooks (they are not in
         * place): it ran to its end as a synchronous call.  Its results are
         * in the call object's storage, for Finish_. */
        WARN("call %p ran synchronously\n", fc);
        note_reply(fc);
        return S_OK;
    }
    /* Nothing went out (marshaling failed, say): Begin_ reports it and no call is pending. */
    hr = fc->result;
    EnterCriticalSection(&call_lock);
    obj->call = NULL;
    LeaveCriticalSection(&call_lock);

failed:
    if (fc) runner_free(&fc->run);
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

    /* No reaping of this thread's abandoned calls here: that waits for the
     * next Begin_, so that a cancelled call's Finish_ returns at once. */
    EnterCriticalSection(&call_lock);
    fc = obj->call;
    LeaveCriticalSection(&call_lock);
    if (!fc || cc_call_state(&obj->state) == CC_IDLE) return RPC_E_CALL_COMPLETE;
    if (fc->run.owner_tid != GetCurrentThreadId()) return RPC_E_WRONG_THREAD;
    if (fc->method != method) return E_INVALIDARG;
    for (i = 0; i < method->split.count; i++)
        if (method->split.finish_offset[i] != CC_FMT_NONE && !*(void **)(frame + method->split.finish_offset[i]))
            return HRESULT_FROM_WIN32(RPC_X_NULL_REF_POINTER);

    if (cc_run_test(&fc->run.state, CC_RUN_ACTIVE)) return RPC_S_CALLPENDING;  /* Finish_ from inside its own wait's message pump */
    InterlockedExchange(&obj->finish_waits, 1);
    if (cc_run_test(&fc->run.state, CC_RUN_HAS_PARKED) && !cc_run_test(&fc->run.state, CC_RUN_REPLIED) &&
        cc_call_state(&obj->state) == CC_PENDING)
    {
        /* The reply is still to come: the fiber waits for it itself. */
        cc_run_set(&fc->run.state, CC_RUN_INLINE);
        runner_resume(&fc->run);
    }
    InterlockedExchange(&obj->finish_waits, 0);
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
        if (cc_run_phase(&fc->run.state) != CC_RUN_DONE) runner_resume(&fc->run);
        hr = fc->result;
        for (i = 0; i < method->split.count; i++)
        {
            uint16_t to = method->split.finish_offset[i];

            if (to == CC_FMT_NONE) continue;
            memcpy(*(void **)(frame + to), fc->out_ptr[i], fc->out_size[i]);
        }
        runner_free(&fc->run);
    }
    else
    {
        /* Cancelled: the [out] values are cleared and the reply, if it has
         * not come yet, is discarded when it does. */
        cc_run_set(&fc->run.state, CC_RUN_DISCARD);
        for (i = 0; i < method->split.count; i++)
        {
            uint16_t to = method->split.finish_offset[i];

            if (to != CC_FMT_NONE) memset(*(void **)(frame + to), 0, fc->out_size[i]);
        }
        if (cc_run_test(&fc->run.state, CC_RUN_REPLIED)) runner_finish(&fc->run);
        else abandon_call(fc);
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
static HRESULT CDECL async_dispatch(IUnknown *iface, unsigned int index, BYTE *frame, const double *fregs)
{
    return dispatch(iface, index, frame, fregs, FALSE);
}

/*
 * rpcrt4!NdrDcomAsyncClientCall, a stub in Wine, taken over: proxy code that
 * calls it with a Begin_ or Finish_ procedure of an async interface and one
 * of our call objects as 'this' gets the same call as through the vtable.
 */
static LONG_PTR CDECL async_dcom_dispatch(const MIDL_STUB_DESC *stub_desc, const BYTE *format, BYTE *frame)
{
    IUnknown *iface = *(IUnknown **)frame;
    const struct async_desc *desc;
    struct cc_fmt_proc *proc;
    unsigned int index;
    size_t len;

    TRACE("%p, %p, %p\n", stub_desc, format, iface);
    if (!iface || !format || !(len = pe_extent(format))) return E_INVALIDARG;
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
static ULONGLONG CDECL async_dispatch_i386(IUnknown *iface, unsigned int index, BYTE *frame)
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
        /* Released without Finish_: the reply is dropped (the NDR engine frees it). */
        cc_run_set(&fc->run.state, CC_RUN_DISCARD);
        /* Finished here only by its own thread, and not from the call's own fiber. */
        if (fc->run.owner_tid == GetCurrentThreadId() && cc_run_test(&fc->run.state, CC_RUN_REPLIED) &&
            runner_current() != &fc->run)
            runner_finish(&fc->run);
        else runner_abandon(&fc->run);
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
    runner_reap();
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
    if (call_id) cancelring_publish(call_id);
    if (seconds)
    {
        /* A completion within the grace period sets the event (a cancel does not, yet). */
        need_event(obj);
        watch_call(obj);
        WaitForSingleObject(obj->event, cc_seconds_to_ms(seconds));
        if ((status = cc_call_expire(&obj->state)) != CC_OK) return hresult_from_status(status);
    }
    EnterCriticalSection(&call_lock);
    if (obj->call) cc_run_set(&obj->call->run.state, CC_RUN_DISCARD);
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

/* A call object for the async interface at file's async_index, on the proxy's synchronous interface. */
HRESULT asynccall_create(const ProxyFileInfo *file, int sync_index, int async_index, IUnknown *manager,
                         IUnknown *outer, REFIID riid, IUnknown **ppv)
{
    const struct async_desc *desc;
    IUnknown *sync;
    HRESULT hr;

    /* Begin_'s request is intercepted: if it is the process's first proxied call, it finds the channel first. */
    if (!(desc = asynccall_describe(file, sync_index, async_index))) return E_NOTIMPL;
    if (FAILED(hr = IUnknown_QueryInterface(manager, &desc->sync_iid, (void **)&sync))) return hr;
    hr = create_call_object(desc, sync, outer, riid, (void **)ppv);
    IUnknown_Release(sync);
    return hr;
}

void asynccall_init(void)
{
    InitializeCriticalSection(&call_lock);
#ifdef __x86_64__
    async_dispatch_target = async_dispatch;
    async_dcom_target = async_dcom_dispatch;
#else
    async_dispatch_target = async_dispatch_i386;
#endif
}
