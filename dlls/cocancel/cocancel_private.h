/*
 * cocancel engine: declarations shared between its source files.
 *
 * The files form layers; each calls only into the layers below it (a layer
 * above is reached only through a callback it handed down, wired by main.c;
 * tools/engine_deps.sh checks this on the built objects):
 *
 *   main.c                     wires the layers together (DllMain)
 *   api.c                      the exported functions
 *   callfactory.c              ICallFactory on proxies
 *   asyncstub.c                incoming calls through the server's call objects
 *   synccall.c asynccall.c     the synchronous call policy; call objects, Begin_/Finish_
 *   syncobj.c                  CLSID_StdEvent, CLSID_SynchronizeContainer
 *   apiroute.c                 getting the API into programs
 *   msgfilter.c orpchook.c     the message-filter wrapper; the ORPC channel hook
 *   uninit.c                   CoUninitialize finishes the thread's abandoned calls
 *   cancelobj.c runner.c       cancel objects and stacks; fibers and engine threads
 *   transport.c cancelring.c   the RPC transport; cancelled call ids across processes
 *   discovery.c                finding Wine's client channel
 *   winepatch.c                every patch point into Wine
 *   pe.c                       reading and writing loaded images
 *   core.c fmt.c debug.c       platform-free core, format strings, debug output
 *
 * This header follows the same order, bottom up.
 */

#ifndef COCANCEL_PRIVATE_H
#define COCANCEL_PRIVATE_H

#define COBJMACROS
#define CONST_VTABLE
#define _OLE32_
#include <windows.h>
#include <objbase.h>
#include <objidl.h>
#include <rpcdcep.h>

#include "cocancel.h"
#include "core.h"
#include "debug.h"
#include "fmt.h"

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

struct tagProxyFileInfo;

/* pe.c */
BOOL pe_readable(const void *ptr, SIZE_T size);
BOOL pe_string_equals(const char *str, const char *expected, BOOL ignore_case);
IMAGE_NT_HEADERS *pe_headers(HMODULE module);
void *pe_rva(HMODULE module, IMAGE_NT_HEADERS *nt, DWORD rva, DWORD size);
BOOL pe_in_module(HMODULE module, const void *ptr, SIZE_T size);
SIZE_T pe_extent(const void *ptr);
BOOL pe_module_is(HMODULE module, const WCHAR *name);
const IMAGE_EXPORT_DIRECTORY *pe_export_directory(HMODULE module, IMAGE_NT_HEADERS *nt, DWORD *rva, DWORD *size);
void pe_for_each_import(HMODULE module, BOOL (*visit)(void *ctx, const char *dll, const char *name, void **slot),
                        void *ctx);
void **pe_find_import(HMODULE module, const char *dll, const char *name);
BYTE *pe_alloc_near(HMODULE module, IMAGE_NT_HEADERS *nt, SIZE_T size);
BOOL pe_write(void *dest, const void *src, SIZE_T size, BOOL code);
BOOL pe_write_pointer(void **slot, void *value);

/* winepatch.c */
struct wine_functions
{
    /* combase's client channel */
    HRESULT (WINAPI *GetBuffer)(IRpcChannelBuffer *, RPCOLEMESSAGE *, REFIID);
    HRESULT (WINAPI *SendReceive)(IRpcChannelBuffer *, RPCOLEMESSAGE *, ULONG *);
    HRESULT (WINAPI *FreeBuffer)(IRpcChannelBuffer *, RPCOLEMESSAGE *);
    /* combase's imports */
    RPC_STATUS (WINAPI *I_RpcSendReceive)(RPC_MESSAGE *);
    RPC_STATUS (WINAPI *I_RpcGetBuffer)(RPC_MESSAGE *);
    RPC_STATUS (WINAPI *RpcServerUnregisterIf)(RPC_IF_HANDLE, UUID *, UINT);
    DWORD (WINAPI *WaitForMultipleObjectsEx)(DWORD, const HANDLE *, BOOL, DWORD, BOOL);
    DWORD (WINAPI *MsgWaitForMultipleObjectsEx)(DWORD, const HANDLE *, DWORD, DWORD, DWORD);
    BOOL (WINAPI *SetEvent)(HANDLE);
    void (WINAPI *RpcRaiseException)(RPC_STATUS);
    /* rpcrt4's standard proxy/stub factory and combase's proxy manager */
    HRESULT (WINAPI *CreateProxy)(IPSFactoryBuffer *, IUnknown *, REFIID, IRpcProxyBuffer **, void **);
    HRESULT (WINAPI *CreateStub)(IPSFactoryBuffer *, REFIID, IUnknown *, IRpcStubBuffer **);
    HRESULT (WINAPI *manager_QueryInterface)(IUnknown *, REFIID, void **);
    /* rpcrt4's winebuild stubs */
    void *NdrDcomAsyncClientCall;
    void *NdrDcomAsyncStubCall;
};

/* Wine's originals, each valid once its patch point is applied (winepatch_applied). */
extern struct wine_functions wine_real;

#define WINEPATCH_CHANNEL    COCANCEL_PATCH_CHANNEL
#define WINEPATCH_TRANSPORT  COCANCEL_PATCH_TRANSPORT
#define WINEPATCH_GETBUFFER  COCANCEL_PATCH_GETBUFFER
#define WINEPATCH_UNREGISTER COCANCEL_PATCH_UNREGISTER
#define WINEPATCH_WAITS      COCANCEL_PATCH_WAITS
#define WINEPATCH_FACTORY    COCANCEL_PATCH_FACTORY
#define WINEPATCH_MANAGER    COCANCEL_PATCH_MANAGER
#define WINEPATCH_NDR_ASYNC  COCANCEL_PATCH_NDR_ASYNC
#define WINEPATCH_DISPATCH   COCANCEL_PATCH_DISPATCH
#define WINEPATCH_NDR_ASYNC_STUB COCANCEL_PATCH_NDR_ASYNC_STUB
/* Not a patch point of its own: combase's stubs of the API (apiroute.c). */
#define WINEPATCH_API_STUBS  0x10000
/* A test knob only: CoSetCancelObject alone looks implemented by combase. */
#define WINEPATCH_API_ONE    0x20000

/* The module whose contents a patch point checks (see winepatch_init). */
HMODULE winepatch_module(DWORD point, const WCHAR *name);

#ifdef __x86_64__
#define WINEPATCH_JUMP_SIZE 14
#else
#define WINEPATCH_JUMP_SIZE 7
#endif

enum stub_result
{
    STUB_ABSENT,        /* no such export */
    STUB_PATCHED,       /* it runs the engine now (or already did) */
    STUB_NOT_A_STUB,    /* not a winebuild stub (Wine implements it, or an unknown layout): left alone */
    STUB_REFUSED,       /* a stub that could not be written */
    STUB_FOUND,         /* (function NULL: only looked) a winebuild stub of that name */
};

void winepatch_init(const struct wine_functions *replacements);
DWORD winepatch_applied(void);
DWORD winepatch_refused(void);
void winepatch_refuse(const char *what, const void *where);
void winepatch_make_jump(BYTE *code, const void *target);
BOOL winepatch_is_jump_to(const BYTE *code, const void *target);
enum stub_result winepatch_stub(DWORD point, HMODULE module, const char *name, void *function);
void winepatch_channel(IRpcChannelBuffer *chan);
void winepatch_transport_imports(void);
void winepatch_dispatch_imports(void);
void winepatch_wait_imports(void);
void winepatch_proxy_factory(void);
void winepatch_proxy_manager(IUnknown *manager);
void winepatch_ndr_async(void);

/* discovery.c */
/* Does this thread hold the loader lock?  TRUE when that cannot be told. */
BOOL discovery_holding_loader_lock(void);
BOOL discovery_init(void);
void discovery_start(void);
void discovery_before_call(void);
BOOL discovery_wait(DWORD timeout);

/* cancelring.c */
void cancelring_prepare(void);
void cancelring_publish(ULONGLONG call_id);
int cancelring_cancelled(ULONGLONG call_id);

/* transport.c */

/* A call in the RPC transport that a cancel may abort (transport_abort). */
struct transport_call
{
    struct transport_call *next;
    RPCOLEMESSAGE *msg;
    ULONGLONG call_id;
    HANDLE thread;          /* the pool thread in I_RpcSendReceive, while it is there */
    BOOL entered, left;
    BOOL receiving;         /* sent; waiting in I_RpcReceive (only then may it be aborted) */
};

void transport_init(void);
void transport_thread_detach(void);
void transport_new_request(void);
BOOL transport_request_uses_rpc(void);
void transport_watch(struct transport_call *call, RPCOLEMESSAGE *msg, ULONGLONG call_id);
void transport_unwatch(struct transport_call *call);
void transport_abort(ULONGLONG call_id);
RPC_STATUS WINAPI transport_I_RpcSendReceive(RPC_MESSAGE *msg);
RPC_STATUS WINAPI transport_I_RpcGetBuffer(RPC_MESSAGE *msg);
RPC_STATUS WINAPI transport_RpcServerUnregisterIf(RPC_IF_HANDLE spec, UUID *type, UINT wait);

/* uninit.c */
void uninit_init(void);
void uninit_watch_thread(void);

/* orpchook.c */
BOOL orpchook_init(void (*on_request_filled)(REFIID riid));
BOOL WINAPI orpchook_SetEvent(HANDLE event);
void WINAPI orpchook_RpcRaiseException(RPC_STATUS status);
ULONGLONG orpchook_take_call_id(void);
ICancelMethodCalls *orpchook_server_call(ULONGLONG *call_id);

/* runner.c */
struct run;

/* How Wine asked to wait, for the thread to wait the same way. */
struct wine_wait
{
    BOOL pump;                      /* MsgWaitForMultipleObjectsEx (an STA) */
    DWORD mask, flags;
    BOOL alertable;
};

struct run_ops
{
    void (*body)(struct run *run);                  /* what the worker fiber runs */
    /* What the parked wait waited for came (from_pool: the pool took it); NULL: only marked. */
    void (*reply)(struct run *run, BOOL from_pool);
    /* The release handle woke the run's own wait: stop waiting (park again)? */
    BOOL (*give_up)(struct run *run);
    void (*destroy)(struct run *run);               /* frees the container (the run's thread) */
};

struct run
{
    const struct run_ops *ops;
    struct cc_run state;            /* phase and flags, see core.h */
    DWORD owner_tid;
    struct worker_fiber *worker;    /* the fiber running it */
    void *return_fiber;
    BOOL task;                      /* the thread waits in its place (runner_run_task) */
    HANDLE wine_event;              /* what Wine's parked wait waits for */
    HANDLE release;                 /* the run's own wait also ends on this */
    HANDLE pool_wait;
    struct deferred_watch *deferred;    /* the pool wait is yet to be registered (runner_abandon) */
    const struct wine_wait *wait;   /* a task's parked wait, */
    DWORD timeout;                  /* ... its timeout, */
    DWORD wake;                     /* ... and what it returns when resumed */
    struct run *next_abandoned;
};

/* A job for an engine thread. */
struct thread_job
{
    SLIST_ENTRY entry;
    void (*run)(struct thread_job *job);
};

BOOL runner_init(void (*on_abandon)(void));
void runner_thread_detach(void);
struct run *runner_current(void);
BOOL runner_start(struct run *run, const struct run_ops *ops, enum cc_run_phase phase, int flags);
BOOL runner_resume(struct run *run);
void runner_yield(struct run *run);
void runner_free(struct run *run);
void runner_watch(struct run *run);
void runner_unwatch(struct run *run);
void runner_abandon(struct run *run);
void runner_wake_registrar(void);
BOOL runner_later(void (*func)(void *), void *arg);
void runner_finish(struct run *run);
void runner_reap(void);
/* Finishes this thread's abandoned runs, waiting up to timeout ms for the replies still to come. */
void runner_reap_wait(DWORD timeout);
/* How many runs are abandoned and not finished yet (all threads). */
DWORD runner_abandoned(void);
HRESULT runner_run_task(void (*func)(void *), void *arg, HANDLE release, BOOL quiet, struct run **waiting);

/* unwind.c and the thunks: func(arg) in a frame that calls guard->on_unwind(guard->arg) if an exception unwinds it. */
struct unwind_guard
{
    void (*on_unwind)(void *arg);
    void *arg;
};
void CDECL unwind_guarded(void (*func)(void *), void *arg, struct unwind_guard *guard);
DWORD runner_leaked(void);
BOOL runner_submit_job(struct thread_job *job);
void runner_expect_abandon(void);
DWORD WINAPI runner_WaitForMultipleObjectsEx(DWORD count, const HANDLE *handles, BOOL all, DWORD timeout,
                                             BOOL alertable);
DWORD WINAPI runner_MsgWaitForMultipleObjectsEx(DWORD count, const HANDLE *handles, DWORD timeout,
                                                DWORD mask, DWORD flags);

/* cancelobj.c */
HRESULT hresult_from_status(enum cc_status status);
void cancelobj_init(void);
void cancelobj_thread_detach(void);
BOOL cancelobj_enabled(void);
IUnknown *cancelobj_stack_top(DWORD tid);
HRESULT cancelobj_cancel_thread(DWORD tid, ULONG seconds);
HRESULT cancelobj_stack_push(IUnknown *unk);
IUnknown *cancelobj_stack_pop(void);
HRESULT cancelobj_create(BOOL cancellable, ULONGLONG call_id, ICancelMethodCalls **cancel);
HRESULT cancelobj_push(ICancelMethodCalls *cancel);
void cancelobj_pop(ICancelMethodCalls *cancel);
HANDLE cancelobj_cancelled_event(ICancelMethodCalls *cancel);
void cancelobj_wait(ICancelMethodCalls *cancel);
void cancelobj_abort(ICancelMethodCalls *cancel);
enum cc_state cancelobj_state(ICancelMethodCalls *cancel);
HRESULT cancelobj_complete(ICancelMethodCalls *cancel);
HRESULT cancelobj_wait_settled(ICancelMethodCalls *cancel, DWORD timeout);

/* msgfilter.c */

/* Stands in front of an STA's message filter for one call (a COM object: it may outlive the call). */
struct filter_wrapper;
struct filter_wrapper *msgfilter_wrap(ICancelMethodCalls *cancel);
void msgfilter_unwrap(struct filter_wrapper *wrapper);

/* apiroute.c */
struct api_export
{
    const char *name;
    void *function;
};
#define COCANCEL_API_EXPORTS 4
void apiroute_on_unload(void (*hook)(const void *base, SIZE_T size));

void apiroute_install(HMODULE engine, const struct api_export *exports, unsigned int count);
/* Import slots naming these functions of dll, bound to the loader's "unimplemented function" stubs, get them. */
void apiroute_supply_imports(const char *dll, const struct api_export *exports, unsigned int count);
void apiroute_get_status(struct cocancel_status *status);
enum api_index { API_CANCEL_CALL, API_GET_CANCEL_OBJECT, API_SET_CANCEL_OBJECT, API_TEST_CANCEL };
void *apiroute_wine_function(enum api_index index);
BOOL apiroute_wine_has_api(void);

/* synccall.c */
void synccall_init(BOOL (*route)(IRpcChannelBuffer *, RPCOLEMESSAGE *, ULONG *, ULONGLONG, HRESULT *));
HRESULT WINAPI synccall_GetBuffer(IRpcChannelBuffer *iface, RPCOLEMESSAGE *msg, REFIID riid);
HRESULT WINAPI synccall_SendReceive(IRpcChannelBuffer *iface, RPCOLEMESSAGE *msg, ULONG *status);
void synccall_thread_detach(void);
BOOL synccall_refused(void);
HRESULT WINAPI synccall_FreeBuffer(IRpcChannelBuffer *iface, RPCOLEMESSAGE *msg);

/* asynccall.c */

/* How one method of an async interface splits its synchronous method (from the proxy file's tables). */
struct async_method
{
    struct cc_fmt_proc sync, begin, finish;
    struct cc_fmt_split split;
    unsigned int begin_pop, finish_pop, sync_pop;   /* i386: argument bytes the callee pops */
};

/* An async interface and its synchronous one, described once per proxy file. */
struct async_desc
{
    struct async_desc *next;
    const void *async_proxy;                    /* the key: its CInterfaceProxyVtbl */
    IID async_iid, sync_iid;
    unsigned int vtbl_count;
    const BYTE *types;
    size_t types_len;
    const MIDL_STUBLESS_PROXY_INFO *async_info;
    void **vtbl;
    struct async_method *methods;               /* (vtbl_count - 3) / 2 */
};

/* The thunks of thunks_*.S: MAX_THUNKS slots of THUNK_SIZE bytes per table. */
#define MAX_THUNKS 512
#define THUNK_SIZE 16
/* The largest argument frame of a method the call and stub engines take (call_frame). */
#define FRAME_BYTES 1024
#ifdef __x86_64__
#define PTR_SIZE 8
#else
#define PTR_SIZE 4
#endif

ULONG_PTR CDECL call_frame(void *func, const ULONG_PTR *args, unsigned int count);
const struct async_desc *asynccall_describe(const struct tagProxyFileInfo *file, int sync_index, int async_index);
/* Where riid is in the proxy files, and which entry is its async interface (FALSE: it has none). */
BOOL asynccall_find(const struct tagProxyFileInfo *const *files, REFIID riid, const struct tagProxyFileInfo **file,
                    int *sync_index, int *async_index);
/* Bytes argument i of proc takes in its frame. */
SIZE_T asynccall_arg_size(const struct cc_fmt_proc *proc, unsigned int i);
void asynccall_init(void);
void asynccall_module_unloaded(const void *base, SIZE_T size);
void asynccall_request_filled(REFIID riid);
BOOL asynccall_send_receive(IRpcChannelBuffer *chan, RPCOLEMESSAGE *msg, ULONG *status, ULONGLONG call_id,
                            HRESULT *hr);
HRESULT asynccall_create(const struct tagProxyFileInfo *file, int sync_index, int async_index, IUnknown *manager,
                         IUnknown *outer, REFIID riid, IUnknown **ppv);
#ifdef __x86_64__
extern const BYTE dcom_entry[];   /* thunks_x86_64.S: rpcrt4!NdrDcomAsyncClientCall's replacement */
#endif

/* callfactory.c */
HRESULT WINAPI callfactory_CreateProxy(IPSFactoryBuffer *iface, IUnknown *outer, REFIID riid,
                                       IRpcProxyBuffer **proxy, void **ppv);
HRESULT WINAPI callfactory_manager_QueryInterface(IUnknown *iface, REFIID riid, void **ppv);

/* asyncstub.c */
HRESULT WINAPI asyncstub_CreateStub(IPSFactoryBuffer *iface, REFIID riid, IUnknown *server, IRpcStubBuffer **stub);
#define ASYNCSTUB_RPCRT4_EXPORTS 10
extern const struct api_export asyncstub_rpcrt4_exports[ASYNCSTUB_RPCRT4_EXPORTS];
LONG WINAPI asyncstub_NdrDcomAsyncStubCall(IRpcStubBuffer *iface, IRpcChannelBuffer *channel, RPC_MESSAGE *msg,
                                           DWORD *phase);
void asyncstub_init(void);

/* api.c */
extern const struct api_export api_exports[COCANCEL_API_EXPORTS];

void api_init(void);
HRESULT WINAPI CoCancelCall(DWORD tid, ULONG timeout);
HRESULT WINAPI CoTestCancel(void);
HRESULT WINAPI CoGetCancelObject(DWORD tid, REFIID riid, void **ppv);
HRESULT WINAPI CoSetCancelObject(IUnknown *unk);

#endif /* COCANCEL_PRIVATE_H */
