/*
 * Code that runs while an STA thread waits in a proxied call.
 *
 * While an STA thread waits for the reply of a call, COM's modal loop
 * processes sent messages (and incoming calls): window procedures run on
 * that thread, on its own stack (the caller's), and a wait they make is
 * their own - a call that is cancelled meanwhile returns only once the
 * handler has returned.  The server here sends the client's window a
 * message while it runs the call.  Every case runs with cancellation
 * enabled and disabled; the cancelled case needs CoCancelCall.  A thread
 * that is not a fiber stays one that is not, during the call (where the
 * handler and the message filter run) and after it, as on stock Wine, and
 * the handler has the thread's whole stack: it recurses deeper than any
 * private stack an implementation might lend it.  An exception raised in
 * code the modal loop runs goes where it goes on stock Wine.
 */

#include <stdarg.h>

#define COBJMACROS
#define CONST_VTABLE
#include "windef.h"
#include "winbase.h"
#include "winuser.h"
#include "winternl.h"
#include "objbase.h"

#include "wine/test.h"

#define WM_PROBE (WM_USER + 7)

static HRESULT (WINAPI *pCoCancelCall)(DWORD, ULONG);
static HRESULT (WINAPI *pCoGetCancelObject)(DWORD, REFIID, void **);
static BOOL (WINAPI *pIsThreadAFiber)(void);

/* Wine's headers do not declare IsThreadAFiber; kernel32 exports it. */
static BOOL is_fiber(void)
{
    return pIsThreadAFiber && pIsThreadAFiber();
}

static struct
{
    HWND client_window;
    HANDLE in_call, release;        /* the server is in the call; lets it return */
    HANDLE handler_waiting, handler_event;
    BOOL handler_waits;             /* the window procedure waits for handler_event */
    BOOL handler_raises;            /* the window procedure raises HANDLER_EXCEPTION */
    BOOL filter_raises;             /* the message filter's MessagePending raises it, once */
    LONG raised_at;
    LONG raised;                    /* times HANDLER_EXCEPTION was raised */
    DWORD raised_tid;               /* ... on this thread */
    void *raised_stack_base;        /* ... on the stack with this base */
    void *handler_stack_base, *handler_local;
    HRESULT handler_wait_hr;
    DWORD handler_index;
    BOOL handler_is_fiber, filter_is_fiber;
    LONG filter_calls;
    unsigned int handler_depth;     /* how deep the handler recursed, in 4 KiB frames */
    LONG sequence, handler_done_at, call_returned_at;
} test;

/* gcc misreads mingw's inline TEB access as an array overrun. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
static void * __attribute__((noinline)) stack_base(void)
{
    return ((NT_TIB *)NtCurrentTeb())->StackBase;
}
#pragma GCC diagnostic pop

static HRESULT WINAPI factory_QueryInterface(IClassFactory *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IClassFactory))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI factory_AddRef(IClassFactory *iface) { return 2; }
static ULONG WINAPI factory_Release(IClassFactory *iface) { return 1; }

/* Sends the client's window a message, then runs until released (10 s at most). */
static HRESULT WINAPI factory_CreateInstance(IClassFactory *iface, IUnknown *outer, REFIID riid, void **ppv)
{
    *ppv = NULL;
    SetEvent(test.in_call);
    SendNotifyMessageW(test.client_window, WM_PROBE, 0, 0);
    WaitForSingleObject(test.release, 10000);
    return S_FALSE;
}

static HRESULT WINAPI factory_LockServer(IClassFactory *iface, BOOL lock) { return S_OK; }

static const IClassFactoryVtbl factory_vtbl =
{
    factory_QueryInterface, factory_AddRef, factory_Release, factory_CreateInstance, factory_LockServer,
};

static IClassFactory factory = { &factory_vtbl };

/*
 * A frame with an exception handler, as a caller's __try/__except makes one:
 * guarded_call(func, arg, &code) runs func(arg) and returns 0; if an
 * exception reaches the frame, the frames above it are unwound (their
 * termination handlers run) and it returns 1 with the exception's code.
 * mingw's C has no __try, so the frame is written out here.
 */
#if defined(__x86_64__) || defined(__i386__)
#define HAVE_GUARDED_CALL
/* ntdll's unwinder, found at run time: Wine's headers declare it in different places from one version to the next. */
static void *pUnwind;
#define GUARD_UNWIND_FLAGS 0x06     /* EXCEPTION_UNWINDING | EXCEPTION_EXIT_UNWIND (not in Wine's headers) */
LONG guarded_call(void (*func)(void *), void *arg, DWORD *code);
void guard_landing(void);

#ifdef __x86_64__
/* The frame's pointer is its establisher frame; the code's address is kept just below it. */
EXCEPTION_DISPOSITION guard_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *context,
                                    DISPATCHER_CONTEXT *dispatch);

__asm__(
    ".text\n"
    ".globl guarded_call\n"
    ".def guarded_call; .scl 2; .type 32; .endef\n"
    ".seh_proc guarded_call\n"
    "guarded_call:\n\t"
    "pushq %rbp\n\t"
    ".seh_pushreg %rbp\n\t"
    "movq %rsp, %rbp\n\t"
    ".seh_setframe %rbp, 0\n\t"
    "subq $48, %rsp\n\t"
    ".seh_stackalloc 48\n\t"
    ".seh_endprologue\n\t"
    ".seh_handler guard_handler, @except\n\t"
    "movq %r8, -8(%rbp)\n\t"
    "movq %rcx, %rax\n\t"
    "movq %rdx, %rcx\n\t"
    "callq *%rax\n\t"
    "xorl %eax, %eax\n\t"
    "nop\n"
    ".globl guard_landing\n"
    "guard_landing:\n\t"
    "movq %rbp, %rsp\n\t"
    "popq %rbp\n\t"
    "ret\n\t"
    ".seh_endproc\n");

EXCEPTION_DISPOSITION guard_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *context,
                                    DISPATCHER_CONTEXT *dispatch)
{
    void (WINAPI *unwind_ex)(void *, void *, EXCEPTION_RECORD *, void *, CONTEXT *, void *) = pUnwind;

    if (rec->ExceptionFlags & GUARD_UNWIND_FLAGS) return ExceptionContinueSearch;
    **(DWORD **)((char *)frame - 8) = rec->ExceptionCode;
    /* Unwinds to the frame and resumes at guard_landing with 1 in rax. */
    unwind_ex(frame, (void *)guard_landing, rec, (void *)1, context, dispatch->HistoryTable);
    return ExceptionContinueSearch;
}
#else
/* The registration record is {prev, handler, code address}, 24 bytes below the saved ebp. */
EXCEPTION_DISPOSITION __cdecl guard_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *context, void *dispatch);
void guard_resume(void *frame);

__asm__(
    ".text\n"
    ".globl _guarded_call\n"
    "_guarded_call:\n\t"
    "pushl %ebp\n\t"
    "movl %esp, %ebp\n\t"
    "pushl %ebx\n\t"
    "pushl %esi\n\t"
    "pushl %edi\n\t"
    "pushl 16(%ebp)\n\t"
    "pushl $_guard_handler\n\t"
    "pushl %fs:0\n\t"
    "movl %esp, %fs:0\n\t"
    "pushl 12(%ebp)\n\t"
    "call *8(%ebp)\n\t"
    "addl $4, %esp\n\t"
    "xorl %eax, %eax\n"
    ".globl _guard_landing\n"
    "_guard_landing:\n\t"
    "movl -24(%ebp), %ecx\n\t"
    "movl %ecx, %fs:0\n\t"
    "leal -12(%ebp), %esp\n\t"
    "popl %edi\n\t"
    "popl %esi\n\t"
    "popl %ebx\n\t"
    "popl %ebp\n\t"
    "ret\n"
    ".globl _guard_resume\n"
    "_guard_resume:\n\t"
    "movl 4(%esp), %ebp\n\t"
    "addl $24, %ebp\n\t"
    "movl $1, %eax\n\t"
    "jmp _guard_landing\n");

EXCEPTION_DISPOSITION __cdecl guard_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *context, void *dispatch)
{
    void (WINAPI *unwind)(void *, void *, EXCEPTION_RECORD *, void *) = pUnwind;

    if (rec->ExceptionFlags & GUARD_UNWIND_FLAGS) return ExceptionContinueSearch;
    *((DWORD **)frame)[2] = rec->ExceptionCode;
    /* Unwinds the frames registered above this one, then leaves through guarded_call's epilogue. */
    unwind(frame, NULL, rec, NULL);
    guard_resume(frame);
    return ExceptionContinueSearch;
}
#endif
#endif

/* Uses about 4 KiB of stack a level; returns how many levels it went. */
static unsigned int __attribute__((noinline)) recurse(unsigned int levels)
{
    volatile char frame[4000];
    unsigned int depth;

    frame[0] = (char)levels;
    frame[sizeof(frame) - 1] = frame[0];
    depth = levels ? recurse(levels - 1) + 1 : 0;
    return depth + (frame[sizeof(frame) - 1] != (char)levels);
}

#define HANDLER_EXCEPTION 0xe0c0ca11

#define HANDLER_LEVELS 96   /* 384 KiB: more than a 256 KiB worker stack, far less than the thread's */

static LRESULT CALLBACK client_wndproc(HWND hwnd, UINT msg, WPARAM wparam, LPARAM lparam)
{
    int local;

    if (msg != WM_PROBE) return DefWindowProcW(hwnd, msg, wparam, lparam);
    test.handler_stack_base = stack_base();
    test.handler_local = &local;
    test.handler_is_fiber = is_fiber();
    test.handler_depth = recurse(HANDLER_LEVELS);
    if (test.handler_raises)
    {
        test.raised_at = InterlockedIncrement(&test.sequence);
        SetEvent(test.release);
        RaiseException(HANDLER_EXCEPTION, 0, 0, NULL);
        ok(0, "RaiseException returned\n");
    }
    if (test.handler_waits)
    {
        SetEvent(test.handler_waiting);
        test.handler_wait_hr = CoWaitForMultipleHandles(0, 5000, 1, &test.handler_event, &test.handler_index);
    }
    test.handler_done_at = InterlockedIncrement(&test.sequence);
    if (!test.handler_waits) SetEvent(test.release);
    return 0;
}

struct host
{
    IStream *stream;
    HANDLE ready, quit, thread;
};

static DWORD WINAPI host_thread(void *arg)
{
    struct host *host = arg;
    MSG msg;

    CoInitializeEx(NULL, COINIT_APARTMENTTHREADED);
    CoMarshalInterThreadInterfaceInStream(&IID_IClassFactory, (IUnknown *)&factory, &host->stream);
    SetEvent(host->ready);
    while (MsgWaitForMultipleObjects(1, &host->quit, FALSE, 30000, QS_ALLINPUT) == WAIT_OBJECT_0 + 1)
        while (PeekMessageW(&msg, NULL, 0, 0, PM_REMOVE)) DispatchMessageW(&msg);
    CoUninitialize();
    return 0;
}

/* A message filter as MFC's AfxOleInit registers one: it never cancels. */
static HRESULT WINAPI filter_QueryInterface(IMessageFilter *iface, REFIID riid, void **ppv)
{
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IMessageFilter))
    {
        *ppv = iface;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

static ULONG WINAPI filter_AddRef(IMessageFilter *iface) { return 2; }
static ULONG WINAPI filter_Release(IMessageFilter *iface) { return 1; }

static DWORD WINAPI filter_HandleInComingCall(IMessageFilter *iface, DWORD type, HTASK caller, DWORD ticks,
                                              INTERFACEINFO *info)
{
    return SERVERCALL_ISHANDLED;
}

static DWORD WINAPI filter_RetryRejectedCall(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    return ~0u;
}

static DWORD WINAPI filter_MessagePending(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    InterlockedIncrement(&test.filter_calls);
    if (is_fiber()) test.filter_is_fiber = TRUE;
    if (test.filter_raises && !test.raised_at)
    {
        test.raised_at = InterlockedIncrement(&test.sequence);
        SetEvent(test.release);
        RaiseException(HANDLER_EXCEPTION, 0, 0, NULL);
        ok(0, "RaiseException returned\n");
    }
    return PENDINGMSG_WAITDEFPROCESS;
}

static const IMessageFilterVtbl filter_vtbl =
{
    filter_QueryInterface, filter_AddRef, filter_Release, filter_HandleInComingCall, filter_RetryRejectedCall,
    filter_MessagePending,
};

static IMessageFilter filter = { &filter_vtbl };

struct client
{
    struct host *host;
    BOOL enable, filter;
    DWORD tid;
    HANDLE ready, thread;
    void *stack_base;
    HRESULT hr;
    HRESULT hr_next;                /* a second call's, after the window procedure of the first raised */
    LONG guard_hit;                 /* an exception reached the caller's handler around the call ... */
    DWORD guard_code;               /* ... with this code */
    IMessageFilter *filter_after;   /* the message filter registered after it */
    HRESULT cancel_object_hr;       /* CoGetCancelObject on the thread after it */
    BOOL fiber_after;               /* the thread was a fiber after the call */
};

struct first_call
{
    IClassFactory *proxy;
    HRESULT hr;
};

static void make_first_call(void *arg)
{
    struct first_call *call = arg;
    IUnknown *unk = NULL;

    call->hr = IClassFactory_CreateInstance(call->proxy, NULL, &IID_IUnknown, (void **)&unk);
}

static DWORD WINAPI client_thread(void *arg)
{
    struct client *client = arg;
    IClassFactory *proxy = NULL;
    IUnknown *unk = NULL;

    CoInitializeEx(NULL, COINIT_APARTMENTTHREADED);
    test.client_window = CreateWindowW(L"cocancel_handlers", NULL, 0, 0, 0, 0, 0, HWND_MESSAGE, NULL, NULL, NULL);
    if (client->enable) CoEnableCallCancellation(NULL);
    if (client->filter) CoRegisterMessageFilter(&filter, NULL);
    client->stack_base = stack_base();
    client->hr = CoGetInterfaceAndReleaseStream(client->host->stream, &IID_IClassFactory, (void **)&proxy);
    SetEvent(client->ready);
    if (proxy)
    {
        struct first_call call = { proxy, 0xdeadbeef };

#ifdef HAVE_GUARDED_CALL
        client->guard_hit = guarded_call(make_first_call, &call, &client->guard_code);
#else
        make_first_call(&call);
#endif
        client->hr = call.hr;
        test.call_returned_at = InterlockedIncrement(&test.sequence);
        client->fiber_after = is_fiber();
        if (test.handler_raises || test.filter_raises)
        {
            /* Something raised an exception during the first call: nothing of that call is left
             * registered on the thread, and it makes another. */
            ICancelMethodCalls *cancel = NULL;

            CoRegisterMessageFilter(&filter, &client->filter_after);
            if (pCoGetCancelObject)
                client->cancel_object_hr = pCoGetCancelObject(0, &IID_ICancelMethodCalls, (void **)&cancel);
            if (cancel) ICancelMethodCalls_Release(cancel);
            test.handler_raises = FALSE;
            client->hr_next = IClassFactory_CreateInstance(proxy, NULL, &IID_IUnknown, (void **)&unk);
        }
        IClassFactory_Release(proxy);
    }
    if (client->filter) CoRegisterMessageFilter(NULL, NULL);
    if (client->enable) CoDisableCallCancellation(NULL);
    DestroyWindow(test.client_window);
    CoUninitialize();
    return 0;
}

static void start(struct host *host, struct client *client, BOOL enable, BOOL filter, BOOL handler_waits,
                  BOOL handler_raises)
{
    host->ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    host->quit = CreateEventW(NULL, TRUE, FALSE, NULL);
    host->thread = CreateThread(NULL, 0, host_thread, host, 0, NULL);
    ok(!WaitForSingleObject(host->ready, 10000), "the host did not start\n");
    ResetEvent(test.in_call);
    ResetEvent(test.release);
    ResetEvent(test.handler_waiting);
    ResetEvent(test.handler_event);
    test.handler_waits = handler_waits;
    test.handler_raises = handler_raises;
    test.raised = 0;
    test.raised_tid = 0;
    test.raised_stack_base = NULL;
    test.raised_at = 0;
    test.handler_stack_base = test.handler_local = NULL;
    test.handler_wait_hr = 0xdeadbeef;
    test.handler_done_at = test.call_returned_at = 0;
    test.handler_is_fiber = test.filter_is_fiber = FALSE;
    test.filter_calls = 0;
    test.handler_depth = 0;
    client->host = host;
    client->enable = enable;
    client->filter = filter;
    client->ready = CreateEventW(NULL, TRUE, FALSE, NULL);
    client->thread = CreateThread(NULL, 0, client_thread, client, 0, &client->tid);
    ok(!WaitForSingleObject(client->ready, 10000), "the client did not start\n");
}

static void stop(struct host *host, struct client *client)
{
    SetEvent(test.release);
    SetEvent(test.handler_event);
    ok(!WaitForSingleObject(client->thread, 15000), "the client did not end\n");
    SetEvent(host->quit);
    ok(!WaitForSingleObject(host->thread, 10000), "the host did not end\n");
    CloseHandle(client->thread);
    CloseHandle(client->ready);
    CloseHandle(host->thread);
    CloseHandle(host->ready);
    CloseHandle(host->quit);
}

/* A window procedure that runs during the call runs on the caller's own stack. */
static void test_handler_stack(BOOL enable, BOOL filter)
{
    struct client client = { 0 };
    struct host host = { 0 };

    winetest_push_context("cancellation %s, %s", enable ? "enabled" : "disabled",
                          filter ? "a message filter" : "no message filter");
    start(&host, &client, enable, filter, FALSE, FALSE);
    ok(!WaitForSingleObject(client.thread, 15000), "the call did not end\n");
    ok(client.hr == S_FALSE, "the call got %#lx\n", client.hr);
    ok(test.handler_done_at != 0, "the window procedure did not run during the call\n");
    ok(test.handler_stack_base == client.stack_base, "the window procedure ran on stack %p, the caller's is %p\n",
       test.handler_stack_base, client.stack_base);
    ok((char *)test.handler_local < (char *)client.stack_base &&
       (char *)test.handler_local > (char *)client.stack_base - 8 * 1024 * 1024,
       "the window procedure's frame %p is not on the caller's stack (base %p)\n", test.handler_local,
       client.stack_base);
    ok(test.handler_depth == HANDLER_LEVELS, "the window procedure recursed %u levels of %u\n",
       test.handler_depth, HANDLER_LEVELS);
    ok(!test.handler_is_fiber, "the thread was a fiber in the window procedure\n");
    ok(!client.fiber_after, "the thread was a fiber after the call\n");
    if (filter)
    {
        ok(test.filter_calls > 0, "the message filter was not consulted\n");
        ok(!test.filter_is_fiber, "the thread was a fiber in the message filter\n");
    }
    stop(&host, &client);
    winetest_pop_context();
}

/*
 * The call is cancelled while a window procedure it runs waits for its own
 * event: that wait is the handler's, and ends with its event; the call
 * returns only once the handler has returned.
 */
static void test_handler_wait_cancelled(void)
{
    struct client client = { 0 };
    struct host host = { 0 };
    HRESULT hr;

    start(&host, &client, TRUE, FALSE, TRUE, FALSE);
    ok(!WaitForSingleObject(test.handler_waiting, 10000), "the window procedure did not run\n");
    hr = pCoCancelCall(client.tid, 0);
    ok(hr == S_OK, "CoCancelCall got %#lx\n", hr);
    Sleep(300);
    ok(!test.call_returned_at, "the call returned while the window procedure was waiting\n");
    SetEvent(test.handler_event);
    ok(!WaitForSingleObject(client.thread, 15000), "the call did not end\n");
    ok(test.handler_wait_hr == S_OK && test.handler_index == 0, "the handler's wait got %#lx, %lu\n",
       test.handler_wait_hr, test.handler_index);
    ok(test.handler_done_at && test.handler_done_at < test.call_returned_at,
       "the window procedure ended at %ld, the call returned at %ld\n", test.handler_done_at,
       test.call_returned_at);
    ok(client.hr == RPC_E_CALL_CANCELED, "the call got %#lx\n", client.hr);
    stop(&host, &client);
}

/* Sees every exception first; notes HANDLER_EXCEPTION and lets it go on to the frames' handlers. */
static LONG CALLBACK first_chance(EXCEPTION_POINTERS *info)
{
    if (info->ExceptionRecord->ExceptionCode == HANDLER_EXCEPTION)
    {
        InterlockedIncrement(&test.raised);
        test.raised_tid = GetCurrentThreadId();
        test.raised_stack_base = stack_base();
    }
    return EXCEPTION_CONTINUE_SEARCH;
}

/* The calls ended, and the exception was raised once, on the caller's thread and stack. */
static void check_raised(const struct client *client)
{
    ok(!WaitForSingleObject(client->thread, 15000), "the calls did not end\n");
    ok(test.raised == 1, "the exception was raised %ld times\n", test.raised);
    ok(test.raised_tid == client->tid, "the exception was raised on thread %#lx, the caller is %#lx\n",
       test.raised_tid, client->tid);
    ok(test.raised_stack_base == client->stack_base, "the exception was raised on stack %p, the caller's is %p\n",
       test.raised_stack_base, client->stack_base);
}

/*
 * An exception escapes a window procedure that a message sent to the caller
 * runs during the call.  Wine (as 64-bit Windows) delivers a sent message
 * through a user-mode callback whose dispatcher ends the exception there:
 * the call goes on and gets its server's result, and the thread's next call
 * works.  Run with cancellation enabled and disabled: the results must not
 * differ, and they are stock Wine's.
 */
static void test_handler_raises(BOOL enable, BOOL filter)
{
    struct client client = { 0 };
    struct host host = { 0 };
    void *handler;

    winetest_push_context("cancellation %s, %s", enable ? "enabled" : "disabled",
                          filter ? "a message filter" : "no message filter");
    handler = AddVectoredExceptionHandler(1, first_chance);
    start(&host, &client, enable, filter, FALSE, TRUE);
    check_raised(&client);
    ok(test.raised_at && test.raised_at < test.call_returned_at,
       "the window procedure raised at %ld, the call returned at %ld\n", test.raised_at, test.call_returned_at);
    ok(client.hr == S_FALSE, "the call got %#lx\n", client.hr);
    ok(!client.fiber_after, "the thread was a fiber after the call\n");
    ok(client.hr_next == S_FALSE, "the next call got %#lx\n", client.hr_next);
    stop(&host, &client);
    RemoveVectoredExceptionHandler(handler);
    winetest_pop_context();
}

/*
 * An exception escapes the message filter's MessagePending, which COM's
 * modal loop calls directly on the caller's stack.  It unwinds that stack up
 * to the first handler, which depends on IClassFactory's proxy: one that
 * rpcrt4 interprets (Wine 10's) handles it and ends the call with the
 * exception's code as its result; a MIDL /Oi-style one (Wine 8.0's) handles
 * only what is raised outside its SendReceive, so the exception reaches the
 * caller's own handler around the call.  Either way exactly one of the two
 * sees it, as on stock Wine of the same version.  The server is still in
 * the call; its reply comes later, to a call nobody waits for, and the
 * thread's next call works.  Not run on stock Wine: there the server's
 * thread later reads the unwound call's state (Wine 8.0: the next call
 * faults inside the proxy, 0xc0000005, and at times the process dies of a
 * page fault in combase's rpc_execute_call), so it cannot be compared
 * safely.
 */
static void test_filter_raises(BOOL enable)
{
    struct client client = { 0 };
    struct host host = { 0 };
    void *handler;

#ifdef HAVE_GUARDED_CALL
    if (!pUnwind)
#endif
    {
        skip("no exception frame for this architecture\n");
        return;
    }
    winetest_push_context("cancellation %s", enable ? "enabled" : "disabled");
    handler = AddVectoredExceptionHandler(1, first_chance);
    test.filter_raises = TRUE;
    start(&host, &client, enable, TRUE, FALSE, FALSE);
    check_raised(&client);
    if (client.guard_hit)
    {
        ok(client.guard_code == HANDLER_EXCEPTION, "the caller's handler got %#lx\n", client.guard_code);
        ok(client.hr == (HRESULT)0xdeadbeef, "the call returned %#lx as well\n", client.hr);
    }
    else ok(client.hr == (HRESULT)HANDLER_EXCEPTION, "neither the caller nor the proxy handled it: %#lx\n",
            client.hr);
    ok(test.raised_at && test.raised_at < test.call_returned_at,
       "the message filter raised at %ld, the call ended at %ld\n", test.raised_at, test.call_returned_at);
    ok(!client.fiber_after, "the thread was a fiber after the call\n");
    ok(client.filter_after == &filter, "the message filter after the exception is %p, not the program's %p\n",
       client.filter_after, &filter);
    if (pCoGetCancelObject)
        ok(client.cancel_object_hr == E_NOINTERFACE, "CoGetCancelObject after the exception got %#lx\n",
           client.cancel_object_hr);
    ok(client.hr_next == S_FALSE, "the next call got %#lx\n", client.hr_next);
    test.filter_raises = FALSE;
    stop(&host, &client);
    RemoveVectoredExceptionHandler(handler);
    winetest_pop_context();
}

START_TEST(handlers)
{
    WNDCLASSW cls = { 0 };

    pCoCancelCall = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoCancelCall");
    /* Called only where CoCancelCall is there too: a Wine that has one as a stub only lacks both. */
    if (pCoCancelCall)
        pCoGetCancelObject = (void *)GetProcAddress(GetModuleHandleA("ole32.dll"), "CoGetCancelObject");
    pIsThreadAFiber = (void *)GetProcAddress(GetModuleHandleA("kernel32.dll"), "IsThreadAFiber");
#ifdef __x86_64__
    pUnwind = (void *)GetProcAddress(GetModuleHandleA("ntdll.dll"), "RtlUnwindEx");
#elif defined(__i386__)
    pUnwind = (void *)GetProcAddress(GetModuleHandleA("ntdll.dll"), "RtlUnwind");
#endif
    ok(pIsThreadAFiber != NULL, "kernel32 lacks IsThreadAFiber\n");
    cls.lpfnWndProc = client_wndproc;
    cls.lpszClassName = L"cocancel_handlers";
    RegisterClassW(&cls);
    test.in_call = CreateEventW(NULL, TRUE, FALSE, NULL);
    test.release = CreateEventW(NULL, TRUE, FALSE, NULL);
    test.handler_waiting = CreateEventW(NULL, TRUE, FALSE, NULL);
    test.handler_event = CreateEventW(NULL, TRUE, FALSE, NULL);

    test_handler_stack(FALSE, FALSE);
    test_handler_stack(TRUE, FALSE);
    test_handler_stack(FALSE, TRUE);
    test_handler_stack(TRUE, TRUE);
    test_handler_raises(FALSE, FALSE);
    test_handler_raises(TRUE, FALSE);
    test_handler_raises(TRUE, TRUE);
    if (pCoCancelCall) test_handler_wait_cancelled();
    else skip("CoCancelCall is not available\n");
    if (pCoCancelCall)
    {
        test_filter_raises(FALSE);
        test_filter_raises(TRUE);
    }
    else skip("an exception out of MessagePending can bring stock Wine down\n");

    CloseHandle(test.in_call);
    CloseHandle(test.release);
    CloseHandle(test.handler_waiting);
    CloseHandle(test.handler_event);
}
