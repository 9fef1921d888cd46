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

static inline struct filter_wrapper *impl_from_IMessageFilter(IMessageFilter *iface)
{
    return CONTAINING_RECORD(iface, struct filter_wrapper, IMessageFilter_iface);
}

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

/* The wrapper lives on the caller's stack for exactly the call. */
static ULONG WINAPI filter_AddRef(IMessageFilter *iface)
{
    return 2;
}

static ULONG WINAPI filter_Release(IMessageFilter *iface)
{
    return 1;
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

    if (answer != PENDINGMSG_CANCELCALL) return answer;
    TRACE("the message filter cancels the call\n");
    cancelobj_abort(wrapper->cancel);
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

BOOL msgfilter_wrap(struct filter_wrapper *wrapper, ICancelMethodCalls *cancel)
{
    IMessageFilter *previous = NULL;

    wrapper->IMessageFilter_iface.lpVtbl = &filter_vtbl;
    wrapper->cancel = cancel;
    if (CoRegisterMessageFilter(&wrapper->IMessageFilter_iface, &previous) != S_OK) return FALSE;
    if (!previous)
    {
        /* No filter to stand in front of. */
        CoRegisterMessageFilter(NULL, NULL);
        return FALSE;
    }
    wrapper->filter = previous;
    return TRUE;
}

void msgfilter_unwrap(struct filter_wrapper *wrapper)
{
    IMessageFilter *current = NULL;

    CoRegisterMessageFilter(wrapper->filter, &current);
    /* The program registered another filter during the call: that one stays. */
    if (current && current != &wrapper->IMessageFilter_iface)
    {
        CoRegisterMessageFilter(current, NULL);
        IMessageFilter_Release(current);
    }
    IMessageFilter_Release(wrapper->filter);
}

