/*
 * Server-side asynchronous processing: incoming calls served through the
 * server object's own call objects.
 *
 * Owns what stands between Wine's standard stubs and a server object that
 * implements ICallFactory.  rpcrt4's standard proxy/stub factory is watched
 * when it creates interface stubs (its CreateStub, replaced by winepatch.c).
 * For an interface whose proxy file names an async interface, and a server
 * object that answers ICallFactory, the stub's server pointer
 * (CStdStubBuffer.pvServerObject, which NdrStubCall2 and MIDL's stub routines
 * read at every call) is replaced by a small object whose vtable slots are
 * thunks (thunks_*.S).  Wine's stub still unmarshals the [in] arguments and
 * marshals the reply; in between, the thunk hands the call to serve():
 *
 *  - the server's ICallFactory::CreateCall makes a call object that
 *    aggregates one of ours (struct stub_call: ISynchronize, and
 *    ICancelMethodCalls for the server to test the call's cancellation);
 *  - Begin_X gets the [in] arguments, the thread waits until the server
 *    calls Signal (an STA pumps meanwhile: CoWaitForMultipleHandles), and
 *    Finish_X fills the [out] arguments; its HRESULT is the method's.
 *
 * When CreateCall fails, or gives no object of the async interface, the
 * synchronous method runs as before.  A client that cancels (its call id
 * comes with the call, orpchook.c) or whose process ends ends the wait: the
 * server sees the cancel through TestCancel on its call object, Finish_
 * still runs so that the server cleans up, and the reply (which the client
 * no longer waits for) says RPC_E_CALL_CANCELED.
 *
 * Wine's dispatch sends the reply when the stub returns, so the thread that
 * dispatched the call waits for the server: an MTA keeps taking other calls
 * on rpcrt4's other threads meanwhile, an STA takes them nested in that
 * wait, as in any wait of an STA.
 */

#include <string.h>
#include "cocancel_private.h"

#define USE_STUBLESS_PROXY
#include <rpcproxy.h>

/* How often a call that can be cancelled looks at its client's cancel ring. */
#define CANCEL_POLL_MS 20

#ifdef __x86_64__
static HRESULT CDECL stub_dispatch(IUnknown *iface, unsigned int index, BYTE *frame, const double *fregs);
extern HRESULT (CDECL *stub_dispatch_target)(IUnknown *, unsigned int, BYTE *, const double *);
#else
static ULONGLONG CDECL stub_dispatch_i386(IUnknown *iface, unsigned int index, BYTE *frame);
extern ULONGLONG (CDECL *stub_dispatch_target)(IUnknown *, unsigned int, BYTE *);
#endif
extern const BYTE stub_thunks[];

/* ---------------------------------------------------------------------
 * Our part of the server's call object: the outer object it aggregates.
 */

struct stub_call
{
    IUnknown IUnknown_iface;
    ISynchronize ISynchronize_iface;
    ICancelMethodCalls ICancelMethodCalls_iface;
    LONG refcount;
    IUnknown *inner;                /* the server's call object (its own IUnknown) */
    LONG forwarding;                /* a QueryInterface is being asked of the inner object */
    /*
     * Manual reset, set once the server signalled or the call was cancelled.
     * Made only when somebody has to wait (most servers signal from Begin_:
     * then no kernel object is needed); whoever changes signalled or
     * cancelled looks for it afterwards, whoever makes it looks at them
     * afterwards, so one of the two always sets it.
     */
    HANDLE done;
    LONG signalled, cancelled, finished;
    ICancelMethodCalls *context;    /* the incoming call's cancel state (orpchook.c), or NULL */
};

static inline struct stub_call *impl_from_IUnknown(IUnknown *iface)
{
    return CONTAINING_RECORD(iface, struct stub_call, IUnknown_iface);
}

static inline struct stub_call *impl_from_ISynchronize(ISynchronize *iface)
{
    return CONTAINING_RECORD(iface, struct stub_call, ISynchronize_iface);
}

static inline struct stub_call *impl_from_ICancelMethodCalls(ICancelMethodCalls *iface)
{
    return CONTAINING_RECORD(iface, struct stub_call, ICancelMethodCalls_iface);
}

static HRESULT WINAPI stub_call_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    struct stub_call *call = impl_from_IUnknown(iface);
    IUnknown *inner;
    HRESULT hr;

    if (!ppv) return E_POINTER;
    *ppv = NULL;
    if (!riid) return E_INVALIDARG;
    if (IsEqualIID(riid, &IID_IUnknown)) *ppv = &call->IUnknown_iface;
    else if (IsEqualIID(riid, &IID_ISynchronize)) *ppv = &call->ISynchronize_iface;
    else if (IsEqualIID(riid, &IID_ICancelMethodCalls)) *ppv = &call->ICancelMethodCalls_iface;
    if (*ppv)
    {
        IUnknown_AddRef((IUnknown *)*ppv);
        return S_OK;
    }
    /* The rest is the server's call object's; an inner object that asks back (it should not) gets nothing. */
    inner = call->inner;
    if (!inner || InterlockedCompareExchange(&call->forwarding, 1, 0)) return E_NOINTERFACE;
    hr = IUnknown_QueryInterface(inner, riid, ppv);
    InterlockedExchange(&call->forwarding, 0);
    return hr;
}

static ULONG WINAPI stub_call_AddRef(IUnknown *iface)
{
    return InterlockedIncrement(&impl_from_IUnknown(iface)->refcount);
}

static ULONG WINAPI stub_call_Release(IUnknown *iface)
{
    struct stub_call *call = impl_from_IUnknown(iface);
    ULONG ref = InterlockedDecrement(&call->refcount);

    if (!ref)
    {
        if (call->context) ICancelMethodCalls_Release(call->context);
        if (call->done) CloseHandle(call->done);
        HeapFree(GetProcessHeap(), 0, call);
    }
    return ref;
}

static const IUnknownVtbl stub_call_vtbl =
{
    stub_call_QueryInterface,
    stub_call_AddRef,
    stub_call_Release,
};

static BOOL call_over(struct stub_call *call)
{
    return InterlockedCompareExchange(&call->signalled, 0, 0) || InterlockedCompareExchange(&call->cancelled, 0, 0);
}

static void set_done(struct stub_call *call)
{
    HANDLE done = InterlockedCompareExchangePointer(&call->done, NULL, NULL);

    if (done) SetEvent(done);
}

/* The event to wait on (NULL without memory). */
static HANDLE done_event(struct stub_call *call)
{
    HANDLE done = InterlockedCompareExchangePointer(&call->done, NULL, NULL), made;

    if (done) return done;
    if (!(made = CreateEventW(NULL, TRUE, FALSE, NULL))) return NULL;
    if ((done = InterlockedCompareExchangePointer(&call->done, made, NULL))) CloseHandle(made);
    else done = made;
    if (call_over(call)) SetEvent(done);
    return done;
}

static void mark_cancelled(struct stub_call *call)
{
    if (!InterlockedExchange(&call->cancelled, 1)) set_done(call);
}

static HRESULT WINAPI stub_sync_QueryInterface(ISynchronize *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(&impl_from_ISynchronize(iface)->IUnknown_iface, riid, ppv);
}

static ULONG WINAPI stub_sync_AddRef(ISynchronize *iface)
{
    return IUnknown_AddRef(&impl_from_ISynchronize(iface)->IUnknown_iface);
}

static ULONG WINAPI stub_sync_Release(ISynchronize *iface)
{
    return IUnknown_Release(&impl_from_ISynchronize(iface)->IUnknown_iface);
}

/* S_OK once the server signalled; RPC_E_CALL_CANCELED once the call was cancelled first; RPC_S_CALLPENDING on timeout. */
static HRESULT WINAPI stub_sync_Wait(ISynchronize *iface, DWORD flags, DWORD timeout)
{
    struct stub_call *call = impl_from_ISynchronize(iface);
    HANDLE done;
    DWORD index;
    HRESULT hr;

    if (call_over(call)) hr = S_OK;
    else if (!(done = done_event(call))) return E_OUTOFMEMORY;
    else hr = CoWaitForMultipleHandles(flags, timeout, 1, &done, &index);
    if (hr == S_OK && !InterlockedCompareExchange(&call->signalled, 0, 0) &&
        InterlockedCompareExchange(&call->cancelled, 0, 0))
        hr = RPC_E_CALL_CANCELED;
    return hr;
}

/* The server's work is done: Finish_ may run.  A second Signal changes nothing. */
static HRESULT WINAPI stub_sync_Signal(ISynchronize *iface)
{
    struct stub_call *call = impl_from_ISynchronize(iface);

    TRACE("%p\n", call);
    if (!InterlockedExchange(&call->signalled, 1)) set_done(call);
    return S_OK;
}

static HRESULT WINAPI stub_sync_Reset(ISynchronize *iface)
{
    struct stub_call *call = impl_from_ISynchronize(iface);

    if (InterlockedExchange(&call->signalled, 0) && !InterlockedCompareExchange(&call->cancelled, 0, 0))
    {
        HANDLE done = InterlockedCompareExchangePointer(&call->done, NULL, NULL);

        if (done) ResetEvent(done);
    }
    return S_OK;
}

static const ISynchronizeVtbl stub_sync_vtbl =
{
    stub_sync_QueryInterface,
    stub_sync_AddRef,
    stub_sync_Release,
    stub_sync_Wait,
    stub_sync_Signal,
    stub_sync_Reset,
};

static HRESULT WINAPI stub_cancel_QueryInterface(ICancelMethodCalls *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(&impl_from_ICancelMethodCalls(iface)->IUnknown_iface, riid, ppv);
}

static ULONG WINAPI stub_cancel_AddRef(ICancelMethodCalls *iface)
{
    return IUnknown_AddRef(&impl_from_ICancelMethodCalls(iface)->IUnknown_iface);
}

static ULONG WINAPI stub_cancel_Release(ICancelMethodCalls *iface)
{
    return IUnknown_Release(&impl_from_ICancelMethodCalls(iface)->IUnknown_iface);
}

/* The server gives up its own call: the wait ends, Finish_ runs. */
static HRESULT WINAPI stub_cancel_Cancel(ICancelMethodCalls *iface, ULONG seconds)
{
    struct stub_call *call = impl_from_ICancelMethodCalls(iface);

    if (InterlockedCompareExchange(&call->finished, 0, 0)) return RPC_E_CALL_COMPLETE;
    mark_cancelled(call);
    return S_OK;
}

/* RPC_E_CALL_CANCELED once the client cancelled (or went away), RPC_S_CALLPENDING before, RPC_E_CALL_COMPLETE after Finish_. */
static HRESULT WINAPI stub_cancel_TestCancel(ICancelMethodCalls *iface)
{
    struct stub_call *call = impl_from_ICancelMethodCalls(iface);

    if (InterlockedCompareExchange(&call->cancelled, 0, 0)) return RPC_E_CALL_CANCELED;
    if (InterlockedCompareExchange(&call->finished, 0, 0)) return RPC_E_CALL_COMPLETE;
    if (call->context && ICancelMethodCalls_TestCancel(call->context) == RPC_E_CALL_CANCELED)
    {
        mark_cancelled(call);
        return RPC_E_CALL_CANCELED;
    }
    return RPC_S_CALLPENDING;
}

static const ICancelMethodCallsVtbl stub_cancel_vtbl =
{
    stub_cancel_QueryInterface,
    stub_cancel_AddRef,
    stub_cancel_Release,
    stub_cancel_Cancel,
    stub_cancel_TestCancel,
};

static struct stub_call *create_stub_call(ICancelMethodCalls *context)
{
    struct stub_call *call;

    if (!(call = HeapAlloc(GetProcessHeap(), HEAP_ZERO_MEMORY, sizeof(*call)))) return NULL;
    call->IUnknown_iface.lpVtbl = &stub_call_vtbl;
    call->ISynchronize_iface.lpVtbl = &stub_sync_vtbl;
    call->ICancelMethodCalls_iface.lpVtbl = &stub_cancel_vtbl;
    call->refcount = 1;
    call->context = context;
    return call;
}

/*
 * Waits until the server signals, or the call is cancelled: by the client
 * (its cancel ring, looked at every CANCEL_POLL_MS), by the end of the
 * client's process, or by the server itself.
 */
static void wait_for_server(struct stub_call *call, ULONGLONG call_id)
{
    DWORD pid = (DWORD)(call_id >> 32), count = 1, index;
    HANDLE handles[2];
    HRESULT hr;

    if (call_over(call)) return;
    if (!(handles[0] = done_event(call)))
    {
        /* Without an event, the server's call object cannot be waited for: given up as if cancelled. */
        mark_cancelled(call);
        return;
    }
    if (pid && pid != GetCurrentProcessId() && (handles[1] = OpenProcess(SYNCHRONIZE, FALSE, pid))) count = 2;
    for (;;)
    {
        hr = CoWaitForMultipleHandles(0, call->context ? CANCEL_POLL_MS : INFINITE, count, handles, &index);
        if (hr == S_OK && index == 0) break;
        if (hr == RPC_S_CALLPENDING)
        {
            if (call_over(call) ||
                ICancelMethodCalls_TestCancel(&call->ICancelMethodCalls_iface) == RPC_E_CALL_CANCELED)
                break;
            continue;
        }
        /* The client's process ended, or the wait failed: nobody is left to reply to. */
        WARN("%p: ending the wait (%#lx, %lu)\n", call, (unsigned long)hr, (unsigned long)index);
        mark_cancelled(call);
        break;
    }
    if (count == 2) CloseHandle(handles[1]);
}

/* ---------------------------------------------------------------------
 * What Wine's stub calls instead of the server object.
 */

struct server_shim
{
    IUnknown IUnknown_iface;        /* its vtable: slots, below */
    LONG refcount;
    IUnknown *server;               /* the interface pointer the stub held (its reference) */
    ICallFactory *factory;          /* the server object's */
    const struct async_desc *desc;
    unsigned int method_count;      /* of the synchronous interface, IUnknown's included */
    void *slots[1];
};

static inline struct server_shim *impl_from_shim(IUnknown *iface)
{
    return CONTAINING_RECORD(iface, struct server_shim, IUnknown_iface);
}

static HRESULT WINAPI shim_QueryInterface(IUnknown *iface, REFIID riid, void **ppv)
{
    return IUnknown_QueryInterface(impl_from_shim(iface)->server, riid, ppv);
}

static ULONG WINAPI shim_AddRef(IUnknown *iface)
{
    return InterlockedIncrement(&impl_from_shim(iface)->refcount);
}

static ULONG WINAPI shim_Release(IUnknown *iface)
{
    struct server_shim *shim = impl_from_shim(iface);
    ULONG ref = InterlockedDecrement(&shim->refcount);

    if (!ref)
    {
        ICallFactory_Release(shim->factory);
        IUnknown_Release(shim->server);
        HeapFree(GetProcessHeap(), 0, shim);
    }
    return ref;
}

/* Copies the arguments of one half (Begin_ or Finish_) from the synchronous frame. */
static void build_half(const struct async_method *method, const uint16_t *offsets, const BYTE *frame,
                       IUnknown *async, ULONG_PTR *args)
{
    unsigned int i;

    args[0] = (ULONG_PTR)async;
    for (i = 0; i < method->split.count; i++)
    {
        unsigned int p = method->split.index[i];

        if (offsets[i] == CC_FMT_NONE) continue;
        memcpy((BYTE *)args + offsets[i], frame + method->sync.params[p].stack_offset,
               asynccall_arg_size(&method->sync, p));
    }
}

static HRESULT call_half(IUnknown *async, unsigned int slot, const struct cc_fmt_proc *proc, const ULONG_PTR *args)
{
    return (HRESULT)call_frame((*(void ***)async)[slot], args, proc->stack_size / PTR_SIZE);
}

static HRESULT serve_sync(struct server_shim *shim, unsigned int index, const BYTE *frame)
{
    const struct async_method *method = &shim->desc->methods[index - 3];
    ULONG_PTR args[FRAME_BYTES / sizeof(ULONG_PTR)];

    memcpy(args, frame, method->sync.stack_size);
    args[0] = (ULONG_PTR)shim->server;
    return (HRESULT)call_frame((*(void ***)shim->server)[index], args, method->sync.stack_size / PTR_SIZE);
}

/* One call served through the server's call object. */
struct serving
{
    struct server_shim *shim;
    unsigned int index;
    BYTE *frame;
    struct stub_call *call;
    IUnknown *inner, *async;
    ULONGLONG call_id;
    HRESULT hr;
};

static void CDECL run_halves(void *arg)
{
    struct serving *serving = arg;
    const struct async_method *method = &serving->shim->desc->methods[serving->index - 3];
    unsigned int begin = 3 + 2 * (serving->index - 3);
    ULONG_PTR args[FRAME_BYTES / sizeof(ULONG_PTR)];
    HRESULT hr;

    TRACE("%p: Begin_ of method %u\n", serving->call, serving->index);
    build_half(method, method->split.begin_offset, serving->frame, serving->async, args);
    hr = call_half(serving->async, begin, &method->begin, args);
    /* A Begin_ that fails starts nothing: its error is the method's result, and there is no Finish_. */
    if (SUCCEEDED(hr))
    {
        wait_for_server(serving->call, serving->call_id);
        TRACE("%p: Finish_ of method %u\n", serving->call, serving->index);
        build_half(method, method->split.finish_offset, serving->frame, serving->async, args);
        hr = call_half(serving->async, begin + 1, &method->finish, args);
        if (InterlockedCompareExchange(&serving->call->cancelled, 0, 0)) hr = RPC_E_CALL_CANCELED;
    }
    serving->hr = hr;
}

/* The call is over (also when an exception from the server's Begin_ or Finish_ unwinds it). */
static void end_serving(void *arg)
{
    struct serving *serving = arg;

    InterlockedExchange(&serving->call->finished, 1);
    IUnknown_Release(serving->async);
    serving->call->inner = NULL;
    IUnknown_Release(serving->inner);
    IUnknown_Release(&serving->call->IUnknown_iface);
}

static HRESULT serve(struct server_shim *shim, unsigned int index, BYTE *frame)
{
    struct serving serving = { shim, index, frame };
    struct unwind_guard guard = { end_serving, &serving };
    ICancelMethodCalls *context;
    HRESULT hr;

    context = orpchook_server_call(&serving.call_id);
    if (!(serving.call = create_stub_call(context)))
    {
        if (context) ICancelMethodCalls_Release(context);
        return serve_sync(shim, index, frame);
    }
    hr = ICallFactory_CreateCall(shim->factory, &shim->desc->async_iid, &serving.call->IUnknown_iface,
                                 &IID_IUnknown, &serving.inner);
    if (SUCCEEDED(hr) && serving.inner)
        hr = IUnknown_QueryInterface(serving.inner, &shim->desc->async_iid, (void **)&serving.async);
    if (FAILED(hr) || !serving.inner || !serving.async)
    {
        TRACE("no call object for %s (%#lx): method %u runs synchronously\n",
              cc_debugstr_guid(&shim->desc->async_iid), (unsigned long)hr, index);
        if (serving.inner) IUnknown_Release(serving.inner);
        IUnknown_Release(&serving.call->IUnknown_iface);
        return serve_sync(shim, index, frame);
    }
    serving.call->inner = serving.inner;
    unwind_guarded(run_halves, &serving, &guard);
    end_serving(&serving);
    return serving.hr;
}

static struct server_shim *shim_checked(IUnknown *iface, unsigned int index)
{
    struct server_shim *shim = impl_from_shim(iface);

    if (index < 3 || index >= shim->method_count) return NULL;
    return shim;
}

#ifdef __x86_64__
static HRESULT CDECL stub_dispatch(IUnknown *iface, unsigned int index, BYTE *frame, const double *fregs)
{
    struct server_shim *shim = shim_checked(iface, index);
    const struct async_method *method;
    unsigned int i;

    if (!shim) return E_UNEXPECTED;
    /* Floating-point arguments 1-3 came in xmm registers: they go into their slots. */
    method = &shim->desc->methods[index - 3];
    for (i = 0; i < method->sync.param_count; i++)
    {
        const struct cc_fmt_param *param = &method->sync.params[i];
        unsigned int slot = param->stack_offset / 8;

        if (slot >= 1 && slot <= 3 && !(param->attr & CC_PARAM_IS_RETURN) && cc_fmt_param_is_floating(param))
            memcpy(frame + param->stack_offset, &fregs[slot - 1], 8);
    }
    return serve(shim, index, frame);
}
#else
static ULONGLONG CDECL stub_dispatch_i386(IUnknown *iface, unsigned int index, BYTE *frame)
{
    struct server_shim *shim = shim_checked(iface, index);
    HRESULT hr;

    /* Nothing else can be popped: the slot is not one of ours. */
    if (!shim) return (ULONG)E_UNEXPECTED;
    hr = serve(shim, index, frame);
    return ((ULONGLONG)shim->desc->methods[index - 3].sync_pop << 32) | (ULONG)hr;
}
#endif

/* ---------------------------------------------------------------------
 * rpcrt4's CreateStub, watched.
 */

/* A shim in front of server (taking over a reference to it and factory's). */
static struct server_shim *create_shim(IUnknown *server, ICallFactory *factory, const struct async_desc *desc)
{
    unsigned int count = 3 + (desc->vtbl_count - 3) / 2, i;
    struct server_shim *shim;

    if (!(shim = HeapAlloc(GetProcessHeap(), 0, FIELD_OFFSET(struct server_shim, slots[count])))) return NULL;
    shim->IUnknown_iface.lpVtbl = (const IUnknownVtbl *)shim->slots;
    shim->refcount = 1;
    shim->server = server;
    shim->factory = factory;
    shim->desc = desc;
    shim->method_count = count;
    shim->slots[0] = shim_QueryInterface;
    shim->slots[1] = shim_AddRef;
    shim->slots[2] = shim_Release;
    for (i = 3; i < count; i++) shim->slots[i] = (void *)(stub_thunks + i * THUNK_SIZE);
    return shim;
}

/* Whether two interface pointers belong to the same COM object. */
static BOOL same_object(IUnknown *a, IUnknown *b)
{
    IUnknown *ua = NULL, *ub = NULL;
    BOOL same;

    IUnknown_QueryInterface(a, &IID_IUnknown, (void **)&ua);
    IUnknown_QueryInterface(b, &IID_IUnknown, (void **)&ub);
    same = ua && ua == ub;
    if (ua) IUnknown_Release(ua);
    if (ub) IUnknown_Release(ub);
    return same;
}

/*
 * Puts a shim where the stub keeps its server pointer.  The stub must be
 * what rpcrt4's CStdStubBuffer_Construct makes for that entry of the proxy
 * file - its vtable, its factory, one reference, and a server pointer on
 * the very object being marshaled - or it is left alone.
 */
static BOOL wrap_stub(CStdStubBuffer *buffer, IPSFactoryBuffer *factory_buffer, IUnknown *server,
                      const ProxyFileInfo *file, int sync_index, const struct async_desc *desc,
                      ICallFactory *factory)
{
    struct server_shim *shim;
    IUnknown *held;

    if (!pe_readable(buffer, sizeof(*buffer)) || buffer->lpVtbl != &file->pStubVtblList[sync_index]->Vtbl ||
        (void *)buffer->pPSFactory != (void *)factory_buffer || buffer->RefCount != 1 ||
        !(held = buffer->pvServerObject) || !pe_readable(held, sizeof(void *)) || !same_object(held, server))
    {
        WARN("stub %p of %s not recognised; its calls are served synchronously\n", buffer,
             cc_debugstr_guid(&desc->sync_iid));
        return FALSE;
    }
    if (!(shim = create_shim(held, factory, desc))) return FALSE;
    if (InterlockedCompareExchangePointer((void **)&buffer->pvServerObject, &shim->IUnknown_iface, held) != held)
    {
        HeapFree(GetProcessHeap(), 0, shim);
        return FALSE;
    }
    TRACE("stub %p of %s serves through the server's call objects\n", buffer, cc_debugstr_guid(&desc->sync_iid));
    return TRUE;
}

static ULONG WINAPI async_stub_Release(IRpcStubBuffer *iface)
{
    return NdrCStdStubBuffer_Release(iface, ((CStdStubBuffer *)iface)->pPSFactory);
}

/* The entry of the proxy files (those with async tables) whose stub vtable is vtbl. */
static BOOL stub_entry(const ProxyFileInfo *const *files, const IRpcStubBufferVtbl *vtbl, const ProxyFileInfo **file,
                       int *index)
{
    int i, j;

    for (i = 0; files && files[i]; i++)
    {
        if (files[i]->TableVersion < 6 || !files[i]->pAsyncIIDLookup) continue;
        for (j = 0; j < (int)files[i]->TableSize; j++)
        {
            if (&files[i]->pStubVtblList[j]->Vtbl != vtbl) continue;
            *file = files[i];
            *index = j;
            return TRUE;
        }
    }
    return FALSE;
}

/*
 * The stub of an async interface itself (someone marshaled a call
 * object's async interface) is built from the proxy file's async stub
 * vtable: MIDL and widl leave it to be filled at run time
 * (CStdAsyncStubBuffer_METHODS), and Wine's NdrDllGetClassObject fills all
 * of it but Release, which stays NULL.  Releasing the stub would jump to 0:
 * the slot gets rpcrt4's standard release, as the synchronous stub
 * vtables have it (CStdStubBuffer_METHODS).  Only a NULL slot of the
 * vtable this very stub was built from is written.
 */
static void fill_async_stub_release(const ProxyFileInfo *const *files, IRpcStubBuffer *stub)
{
    const CStdStubBuffer *buffer = (const CStdStubBuffer *)stub;
    const ProxyFileInfo *info;
    CInterfaceStubVtbl *vtbl;
    int index;

    if (!pe_readable(buffer, sizeof(*buffer)) || !stub_entry(files, buffer->lpVtbl, &info, &index) ||
        info->pAsyncIIDLookup[index] != (const IID *)(LONG_PTR)-1)
        return;
    vtbl = (CInterfaceStubVtbl *)info->pStubVtblList[index];
    if (vtbl->Vtbl.Release) return;
    if (pe_write_pointer((void **)&vtbl->Vtbl.Release, (void *)async_stub_Release))
        TRACE("async stub vtable of %s: Release filled\n", cc_debugstr_guid(vtbl->header.piid));
}

/*
 * rpcrt4's CStdAsyncStubBuffer_* entry points, which Wine does not export:
 * the async stub vtables of MIDL's proxy/stub code import them (the SDK's
 * CStdAsyncStubBuffer_METHODS), and Wine's loader binds each to a stub that
 * reports an unimplemented function; apiroute.c puts these in those import
 * slots.  Under Wine a stub built from such a vtable is rpcrt4's standard
 * stub (its factory makes one for the async interface itself, when a call
 * object's async interface is marshaled), so each does what the standard
 * stub's method does.
 */
static HRESULT WINAPI async_buffer_QueryInterface(IRpcStubBuffer *iface, REFIID riid, void **ppv)
{
    return CStdStubBuffer_QueryInterface(iface, riid, ppv);
}

static ULONG WINAPI async_buffer_AddRef(IRpcStubBuffer *iface)
{
    return CStdStubBuffer_AddRef(iface);
}

static HRESULT WINAPI async_buffer_Connect(IRpcStubBuffer *iface, IUnknown *server)
{
    return CStdStubBuffer_Connect(iface, server);
}

static void WINAPI async_buffer_Disconnect(IRpcStubBuffer *iface)
{
    CStdStubBuffer_Disconnect(iface);
}

static HRESULT WINAPI async_buffer_Invoke(IRpcStubBuffer *iface, RPCOLEMESSAGE *msg, IRpcChannelBuffer *channel)
{
    return CStdStubBuffer_Invoke(iface, msg, channel);
}

static IRpcStubBuffer * WINAPI async_buffer_IsIIDSupported(IRpcStubBuffer *iface, REFIID riid)
{
    return CStdStubBuffer_IsIIDSupported(iface, riid);
}

static ULONG WINAPI async_buffer_CountRefs(IRpcStubBuffer *iface)
{
    return CStdStubBuffer_CountRefs(iface);
}

static HRESULT WINAPI async_buffer_DebugServerQueryInterface(IRpcStubBuffer *iface, void **ppv)
{
    return CStdStubBuffer_DebugServerQueryInterface(iface, ppv);
}

static void WINAPI async_buffer_DebugServerRelease(IRpcStubBuffer *iface, void *pv)
{
    CStdStubBuffer_DebugServerRelease(iface, pv);
}

const struct api_export asyncstub_rpcrt4_exports[ASYNCSTUB_RPCRT4_EXPORTS] =
{
    { "CStdAsyncStubBuffer_QueryInterface", async_buffer_QueryInterface },
    { "CStdAsyncStubBuffer_AddRef", async_buffer_AddRef },
    { "CStdAsyncStubBuffer_Release", async_stub_Release },
    { "CStdAsyncStubBuffer_Connect", async_buffer_Connect },
    { "CStdAsyncStubBuffer_Disconnect", async_buffer_Disconnect },
    { "CStdAsyncStubBuffer_Invoke", async_buffer_Invoke },
    { "CStdAsyncStubBuffer_IsIIDSupported", async_buffer_IsIIDSupported },
    { "CStdAsyncStubBuffer_CountRefs", async_buffer_CountRefs },
    { "CStdAsyncStubBuffer_DebugServerQueryInterface", async_buffer_DebugServerQueryInterface },
    { "CStdAsyncStubBuffer_DebugServerRelease", async_buffer_DebugServerRelease },
};

HRESULT WINAPI asyncstub_CreateStub(IPSFactoryBuffer *iface, REFIID riid, IUnknown *server, IRpcStubBuffer **stub)
{
    const struct async_desc *desc;
    const ProxyFileInfo *file;
    int sync_index, async_index;
    ICallFactory *factory;
    HRESULT hr;

    hr = wine_real.CreateStub(iface, riid, server, stub);
    if (FAILED(hr) || !riid || !server || !stub || !*stub) return hr;
    if (!asynccall_find(((const CStdPSFactoryBuffer *)iface)->pProxyFileList, riid, &file, &sync_index,
                        &async_index))
    {
        if ((*stub)->lpVtbl && !(*stub)->lpVtbl->Release)
            fill_async_stub_release(((const CStdPSFactoryBuffer *)iface)->pProxyFileList, *stub);
        return hr;
    }
    /* An interface of a base other than IUnknown has a delegating stub: not handled. */
    if (file->pDelegatedIIDs && file->pDelegatedIIDs[sync_index]) return hr;
    if (FAILED(IUnknown_QueryInterface(server, &IID_ICallFactory, (void **)&factory)) || !factory) return hr;
    if (!(desc = asynccall_describe(file, sync_index, async_index)) ||
        !wrap_stub((CStdStubBuffer *)*stub, iface, server, file, sync_index, desc, factory))
        ICallFactory_Release(factory);
    return hr;
}

/* Where the stub vtable vtbl is in the factory's proxy files: its synchronous and async entries. */
static BOOL find_stub_entry(const CStdPSFactoryBuffer *factory, const IRpcStubBufferVtbl *vtbl,
                            const ProxyFileInfo **file, int *sync_index, int *async_index)
{
    const ProxyFileInfo *const *files = factory->pProxyFileList;
    const ProxyFileInfo *info;
    const IID *iid;
    int j, k;

    if (!stub_entry(files, vtbl, &info, &j)) return FALSE;
    iid = info->pStubVtblList[j]->header.piid;
    if (info->pAsyncIIDLookup[j] != (const IID *)(LONG_PTR)-1)
        return asynccall_find(files, iid, file, sync_index, async_index);
    /* The async interface's own stub: its synchronous interface is the one that names it. */
    for (k = 0; k < (int)info->TableSize; k++)
    {
        const IID *async_iid = info->pAsyncIIDLookup[k];

        if (async_iid && async_iid != (const IID *)(LONG_PTR)-1 && IsEqualIID(async_iid, iid))
            return asynccall_find(files, info->pStubVtblList[k]->header.piid, file, sync_index, async_index);
    }
    return FALSE;
}

struct stub_call_args
{
    CStdStubBuffer buffer;          /* the synchronous interface's view of the stub */
    IRpcChannelBuffer *channel;
    RPC_MESSAGE *msg;
    DWORD *phase;
    IUnknown *held;                 /* released when done, also if an exception unwinds the call */
    LONG ret;
};

static void CDECL run_stub_call(void *arg)
{
    struct stub_call_args *args = arg;

    args->ret = NdrStubCall2((IRpcStubBuffer *)&args->buffer, args->channel, args->msg, args->phase);
}

static void release_held(void *arg)
{
    struct stub_call_args *args = arg;

    if (args->held) IUnknown_Release(args->held);
    args->held = NULL;
}

/*
 * rpcrt4!NdrDcomAsyncStubCall, a stub in Wine, taken over: what MIDL's stub
 * dispatch tables of async interfaces call to serve a call through the
 * server's call objects.  The stub must be a standard stub (a factory whose
 * CreateStub is ours) built from an entry of that factory's proxy files,
 * for an interface with an async interface or for the async interface
 * itself; the call, whose wire format is the synchronous method's, is then
 * served as the synchronous interface's standard stub serves it: by
 * NdrStubCall2 with the synchronous tables, through the server's call
 * objects (synchronously when it makes none).  Anything else raises
 * RPC_S_INTERNAL_ERROR, as rpcrt4 does for a stub it cannot use.
 */
LONG WINAPI asyncstub_NdrDcomAsyncStubCall(IRpcStubBuffer *iface, IRpcChannelBuffer *channel, RPC_MESSAGE *msg,
                                           DWORD *phase)
{
    CStdStubBuffer *buffer = (CStdStubBuffer *)iface;
    struct unwind_guard guard = { release_held, NULL };
    struct stub_call_args args;
    const CStdPSFactoryBuffer *factory;
    const struct async_desc *desc = NULL;
    const ProxyFileInfo *file;
    int sync_index, async_index;
    IUnknown *server = NULL, *target;
    struct server_shim *shim = NULL;
    ICallFactory *call_factory;

    TRACE("%p, %p, %p, %p\n", iface, channel, msg, phase);
    if (!buffer || !msg || !pe_readable(buffer, sizeof(*buffer)) || !buffer->lpVtbl ||
        !(factory = (const CStdPSFactoryBuffer *)buffer->pPSFactory) || !pe_readable(factory, sizeof(*factory)) ||
        !pe_readable(factory->lpVtbl, sizeof(*factory->lpVtbl)) ||
        factory->lpVtbl->CreateStub != asyncstub_CreateStub ||
        !find_stub_entry(factory, buffer->lpVtbl, &file, &sync_index, &async_index) ||
        !(desc = asynccall_describe(file, sync_index, async_index)) || !buffer->pvServerObject ||
        msg->ProcNum < 3 || msg->ProcNum >= 3 + (desc->vtbl_count - 3) / 2)
    {
        FIXME("stub %p not understood\n", iface);
        RpcRaiseException(RPC_S_INTERNAL_ERROR);
        return RPC_S_INTERNAL_ERROR;
    }
    target = buffer->pvServerObject;
    if (target->lpVtbl != (const IUnknownVtbl *)impl_from_shim(target)->slots ||
        impl_from_shim(target)->slots[0] != shim_QueryInterface)
    {
        /* Not wrapped yet: the server's synchronous interface, behind a shim if it makes call objects. */
        if (FAILED(IUnknown_QueryInterface(target, &desc->sync_iid, (void **)&server)) || !server)
        {
            RpcRaiseException(RPC_S_INTERNAL_ERROR);
            return RPC_S_INTERNAL_ERROR;
        }
        target = server;
        if (SUCCEEDED(IUnknown_QueryInterface(server, &IID_ICallFactory, (void **)&call_factory)) && call_factory)
        {
            if ((shim = create_shim(server, call_factory, desc))) target = &shim->IUnknown_iface;
            else ICallFactory_Release(call_factory);
        }
    }
    args.buffer = *buffer;
    args.buffer.lpVtbl = &file->pStubVtblList[sync_index]->Vtbl;
    args.buffer.pvServerObject = target;
    args.channel = channel;
    args.msg = msg;
    args.phase = phase;
    /* The shim holds the server's reference. */
    args.held = shim ? &shim->IUnknown_iface : server;
    args.ret = RPC_S_INTERNAL_ERROR;
    guard.arg = &args;
    unwind_guarded(run_stub_call, &args, &guard);
    release_held(&args);
    return args.ret;
}

void asyncstub_init(void)
{
#ifdef __x86_64__
    stub_dispatch_target = stub_dispatch;
#else
    stub_dispatch_target = stub_dispatch_i386;
#endif
}
