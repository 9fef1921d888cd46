/*
 * The message-filter wrapper.
 *
 * While an STA thread waits for a call, Wine asks the apartment's
 * IMessageFilter what to do with incoming messages but ignores
 * PENDINGMSG_CANCELCALL.  For the duration of each call from an STA with a
 * filter, the engine stands in front of it: the program's answers go back
 * to Wine unchanged, except that a cancel cancels the call (through its
 * cancel object, as CoCancelCall would) and Wine is told to keep waiting.
 */

#include "cocancel_private.h"

struct filter_wrapper
{
    IMessageFilter IMessageFilter_iface;
    LONG refcount;
    IMessageFilter *filter;         /* the program's */
    ICancelMethodCalls *cancel;     /* the call's, while it runs; NULL after */
};

static inline struct filter_wrapper *impl_from_IMessageFilter(IMessageFilter *iface)
{
    return CONTAINING_RECORD(iface, struct filter_wrapper, IMessageFilter_iface);
}

static HRESULT WINAPI filter_QueryInterface(IMessageFilter *iface, REFIID riid, void **ppv)
{
    if (!ppv) return E_POINTER;
    if (IsEqualIID(riid, &IID_IUnknown) || IsEqualIID(riid, &IID_IMessageFilter))
    {
        *ppv = iface;
        IMessageFilter_AddRef(iface);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}

/*
 * The wrapper is a heap object with a reference count, not a frame of the
 * call: a handler that registers another filter during the call receives
 * the wrapper as the previous filter, and may register it again long after
 * the call (it then simply passes everything on to the program's filter).
 */
static ULONG WINAPI filter_AddRef(IMessageFilter *iface)
{
    return InterlockedIncrement(&impl_from_IMessageFilter(iface)->refcount);
}

static ULONG WINAPI filter_Release(IMessageFilter *iface)
{
    struct filter_wrapper *wrapper = impl_from_IMessageFilter(iface);
    ULONG refcount = InterlockedDecrement(&wrapper->refcount);

    if (!refcount)
    {
        IMessageFilter_Release(wrapper->filter);
        HeapFree(GetProcessHeap(), 0, wrapper);
    }
    return refcount;
}

static DWORD WINAPI filter_HandleInComingCall(IMessageFilter *iface, DWORD type, HTASK caller, DWORD ticks,
                                              INTERFACEINFO *info)
{
    return IMessageFilter_HandleInComingCall(impl_from_IMessageFilter(iface)->filter, type, caller, ticks, info);
}

static DWORD WINAPI filter_RetryRejectedCall(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    return IMessageFilter_RetryRejectedCall(impl_from_IMessageFilter(iface)->filter, callee, ticks, type);
}

static DWORD WINAPI filter_MessagePending(IMessageFilter *iface, HTASK callee, DWORD ticks, DWORD type)
{
    struct filter_wrapper *wrapper = impl_from_IMessageFilter(iface);
    DWORD answer = IMessageFilter_MessagePending(wrapper->filter, callee, ticks, type);
    ICancelMethodCalls *cancel = InterlockedCompareExchangePointer((void **)&wrapper->cancel, NULL, NULL);

    if (answer != PENDINGMSG_CANCELCALL || !cancel) return answer;
    TRACE("the message filter cancels the call\n");
    cancelobj_abort(cancel);
    return PENDINGMSG_WAITDEFPROCESS;
}

static const IMessageFilterVtbl filter_vtbl =
{
    filter_QueryInterface,
    filter_AddRef,
    filter_Release,
    filter_HandleInComingCall,
    filter_RetryRejectedCall,
    filter_MessagePending,
};

/* Puts a wrapper in front of this STA's filter for one call; NULL when it has none. */
struct filter_wrapper *msgfilter_wrap(ICancelMethodCalls *cancel)
{
    IMessageFilter *previous = NULL;
    struct filter_wrapper *wrapper;

    if (!(wrapper = HeapAlloc(GetProcessHeap(), 0, sizeof(*wrapper)))) return NULL;
    wrapper->IMessageFilter_iface.lpVtbl = &filter_vtbl;
    wrapper->refcount = 1;
    wrapper->cancel = cancel;
    wrapper->filter = NULL;
    if (CoRegisterMessageFilter(&wrapper->IMessageFilter_iface, &previous) != S_OK)
    {
        HeapFree(GetProcessHeap(), 0, wrapper);
        return NULL;
    }
    if (!previous)
    {
        /* No filter to stand in front of: COM drops its reference, then ours goes. */
        CoRegisterMessageFilter(NULL, NULL);
        HeapFree(GetProcessHeap(), 0, wrapper);
        return NULL;
    }
    wrapper->filter = previous;
    return wrapper;
}

/* Ends the call's wrapper: the program's filter is registered again, unless it registered another meanwhile. */
void msgfilter_unwrap(struct filter_wrapper *wrapper)
{
    IMessageFilter *current = NULL;

    InterlockedExchangePointer((void **)&wrapper->cancel, NULL);
    CoRegisterMessageFilter(wrapper->filter, &current);
    if (current == &wrapper->IMessageFilter_iface) IMessageFilter_Release(current);
    else
    {
        /* The program registered another filter (or none) during the call: that stays. */
        CoRegisterMessageFilter(current, NULL);
        if (current) IMessageFilter_Release(current);
    }
    IMessageFilter_Release(&wrapper->IMessageFilter_iface);
}
