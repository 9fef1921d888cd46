/*
 * The functions cocancel.dll exports.
 *
 * Owns the entry points: the COM cancellation API that Windows programs
 * import from ole32 (CoCancelCall, CoTestCancel, CoGetCancelObject,
 * CoSetCancelObject) and cocancel's own Cocancel* functions.  Each one
 * checks its arguments and hands over to the layer that does the work.
 */

#include "cocancel_private.h"

static HRESULT (WINAPI *p_CoGetCallContext)(REFIID riid, void **ppv);

/* What apiroute.c puts where Wine lacks it, in enum api_index order. */
const struct api_export api_exports[COCANCEL_API_EXPORTS] =
{
    { "CoCancelCall",      CoCancelCall },
    { "CoGetCancelObject", CoGetCancelObject },
    { "CoSetCancelObject", CoSetCancelObject },
    { "CoTestCancel",      CoTestCancel },
};

/***********************************************************************
 *           CoGetCancelObject    (cocancel.@)
 *
 * The innermost cancel object of thread tid (0: this thread), as riid.
 * E_INVALIDARG for NULL riid/ppv; E_NOINTERFACE when the thread has none
 * (also for unknown or exited threads) or the object lacks riid.
 */
HRESULT WINAPI CoGetCancelObject(DWORD tid, REFIID riid, void **ppv)
{
    HRESULT (WINAPI *wine)(DWORD, REFIID, void **) = apiroute_wine_function(API_GET_CANCEL_OBJECT);
    IUnknown *unk;
    HRESULT hr;

    TRACE("%04lx, %s, %p\n", tid, cc_debugstr_guid(riid), ppv);

    if (wine) return wine(tid, riid, ppv);
    if (!ppv) return E_INVALIDARG;
    *ppv = NULL;
    if (!riid) return E_INVALIDARG;
    if (!(unk = cancelobj_stack_top(tid))) return E_NOINTERFACE;
    hr = IUnknown_QueryInterface(unk, riid, ppv);
    IUnknown_Release(unk);
    return hr;
}

/***********************************************************************
 *           CoSetCancelObject    (cocancel.@)
 *
 * Pushes unk on this thread's stack of cancel objects (adding a reference),
 * or with NULL pops the innermost one.  E_NOINTERFACE if unk has no
 * ICancelMethodCalls; E_OUTOFMEMORY.  Popping an empty stack is S_OK.
 */
HRESULT WINAPI CoSetCancelObject(IUnknown *unk)
{
    HRESULT (WINAPI *wine)(IUnknown *) = apiroute_wine_function(API_SET_CANCEL_OBJECT);
    ICancelMethodCalls *cancel;
    IUnknown *popped;

    TRACE("%p\n", unk);

    if (wine) return wine(unk);
    if (!unk)
    {
        /* Released outside the stack's lock: the object's destructor is foreign code. */
        if ((popped = cancelobj_stack_pop())) IUnknown_Release(popped);
        return S_OK;
    }

    if (FAILED(IUnknown_QueryInterface(unk, &IID_ICancelMethodCalls, (void **)&cancel)))
        return E_NOINTERFACE;
    ICancelMethodCalls_Release(cancel);

    return cancelobj_stack_push(unk);
}

/***********************************************************************
 *           CoCancelCall    (cocancel.@)
 *
 * Cancels the innermost call of thread tid (0: this thread) through its
 * cancel object: E_NOINTERFACE without one, otherwise what Cancel answers
 * (S_OK, CO_E_CANCEL_DISABLED, RPC_E_CALL_COMPLETE).
 */
HRESULT WINAPI CoCancelCall(DWORD tid, ULONG timeout)
{
    HRESULT (WINAPI *wine)(DWORD, ULONG) = apiroute_wine_function(API_CANCEL_CALL);

    TRACE("%04lx, %lu\n", tid, timeout);

    if (wine) return wine(tid, timeout);
    return cancelobj_cancel_thread(tid, timeout);
}

/***********************************************************************
 *           CoTestCancel    (cocancel.@)
 *
 * Inside a server method: RPC_E_CALL_CANCELED once the client cancelled,
 * RPC_S_CALLPENDING otherwise.  Outside one, what CoGetCallContext answers
 * (RPC_E_CALL_COMPLETE).
 */
HRESULT WINAPI CoTestCancel(void)
{
    HRESULT (WINAPI *wine)(void) = apiroute_wine_function(API_TEST_CANCEL);
    ICancelMethodCalls *cancel;
    HRESULT hr;

    TRACE("\n");

    if (wine) return wine();
    if (!p_CoGetCallContext) return RPC_E_CALL_COMPLETE;
    if (FAILED(hr = p_CoGetCallContext(&IID_ICancelMethodCalls, (void **)&cancel))) return hr;
    hr = ICancelMethodCalls_TestCancel(cancel);
    ICancelMethodCalls_Release(cancel);
    return hr;
}

/***********************************************************************
 *           CocancelCreateCancelObject    (cocancel.@)
 */
HRESULT WINAPI CocancelCreateCancelObject(BOOL cancellable, ICancelMethodCalls **cancel)
{
    TRACE("%d, %p\n", cancellable, cancel);

    if (!cancel) return E_INVALIDARG;
    *cancel = NULL;
    return cancelobj_create(cancellable, 0, cancel);
}

/***********************************************************************
 *           CocancelCompleteCall    (cocancel.@)
 */
HRESULT WINAPI CocancelCompleteCall(ICancelMethodCalls *cancel)
{
    TRACE("%p\n", cancel);
    return cancelobj_complete(cancel);
}

/***********************************************************************
 *           CocancelWaitCall    (cocancel.@)
 */
HRESULT WINAPI CocancelWaitCall(ICancelMethodCalls *cancel, DWORD timeout)
{
    TRACE("%p, %lu\n", cancel, timeout);
    return cancelobj_wait_settled(cancel, timeout);
}

/***********************************************************************
 *           CocancelGetStatus    (cocancel.@)
 */
HRESULT WINAPI CocancelGetStatus(struct cocancel_status *status)
{
    DWORD applied = winepatch_applied();

    if (!status || (status->size != sizeof(*status) && status->size != COCANCEL_STATUS_V1_SIZE &&
                    status->size != COCANCEL_STATUS_V2_SIZE && status->size != COCANCEL_STATUS_V3_SIZE))
        return E_INVALIDARG;
    status->routes = 0;
    apiroute_get_status(status);
    if (synccall_refused()) status->routes |= COCANCEL_ROUTE_CALLS_REFUSED;
    else if ((applied & WINEPATCH_CHANNEL) && !apiroute_wine_has_api()) status->routes |= COCANCEL_ROUTE_CHANNEL;
    if ((applied & WINEPATCH_FACTORY) && (applied & WINEPATCH_MANAGER)) status->routes |= COCANCEL_ROUTE_ASYNC;
    status->refused_patches = winepatch_refused();
    if (status->size >= COCANCEL_STATUS_V2_SIZE) status->abandoned_calls = runner_abandoned();
    if (status->size >= COCANCEL_STATUS_V3_SIZE) status->patch_points = applied;
    if (status->size >= sizeof(*status)) status->leaked_calls = runner_leaked();
    return S_OK;
}

/***********************************************************************
 *           CocancelWaitChannel    (cocancel.@)
 */
HRESULT WINAPI CocancelWaitChannel(DWORD timeout)
{
    return discovery_wait(timeout) ? S_OK : RPC_S_CALLPENDING;
}

void api_init(void)
{
    HMODULE combase = GetModuleHandleW(L"combase.dll");

    if (combase) p_CoGetCallContext = (void *)GetProcAddress(combase, "CoGetCallContext");
}
