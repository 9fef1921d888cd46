/*
 * cocancel: COM call cancellation and asynchronous COM calls for Wine.
 *
 * The engine (cocancel.dll) implements the cancellation API that Windows
 * programs import from ole32.dll:
 *
 *   CoCancelCall, CoTestCancel, CoGetCancelObject, CoSetCancelObject
 *
 * (CoEnableCallCancellation / CoDisableCallCancellation are Wine's own; the
 * engine reads the count they keep).  Programs need not link against this
 * header: installed into a prefix, the engine makes ole32's and combase's
 * entry points work.  The functions below are cocancel's own, for programs
 * and tests that want to know what the engine did or drive a cancel object
 * themselves.  Link with -lcocancel.
 */

#ifndef COCANCEL_H
#define COCANCEL_H

#include <objbase.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COCANCEL_VERSION_MAJOR 0
#define COCANCEL_VERSION_MINOR 1

/* Bits of CocancelGetStatus()'s routes: how the API reached this process. */
#define COCANCEL_ROUTE_COMBASE_STUBS 0x0001 /* combase's unimplemented stubs now run cocancel */
#define COCANCEL_ROUTE_OLE32_GRAFT   0x0002 /* ole32's export table was extended with the API */
#define COCANCEL_ROUTE_OLE32_NATIVE  0x0004 /* ole32 already exports the API (the carrier, or Windows) */
#define COCANCEL_ROUTE_DLL_NOTIFY    0x0008 /* DLLs loaded later get their imports repaired */
#define COCANCEL_ROUTE_CARRIER       0x0010 /* loaded by cocancel's carrier ole32.dll */
#define COCANCEL_ROUTE_COMBASE_REAL  0x0020 /* combase implements the API itself: left alone */
#define COCANCEL_ROUTE_CHANNEL       0x0040 /* proxied calls are intercepted (cancellable) */
#define COCANCEL_ROUTE_ASYNC         0x0080 /* proxies answer ICallFactory (asynchronous calls) */
#define COCANCEL_ROUTE_CALLS_REFUSED 0x0100 /* a proxied call showed Wine's channel works otherwise than
                                               the engine relies on: calls run as Wine runs them, and
                                               cannot be cancelled (ROUTE_CHANNEL is then clear) */

/*
 * Bits of CocancelGetStatus()'s patch_points: the places in Wine the engine
 * changed after checking that they are what it expects.  A place that
 * differs (another Wine version) is left alone and counted in
 * refused_patches, with a warn+cocancel line saying what stays off.
 */
#define COCANCEL_PATCH_CHANNEL      0x0001 /* combase's client channel vtable: calls are cancellable */
#define COCANCEL_PATCH_TRANSPORT    0x0002 /* combase's import of I_RpcSendReceive: aborts in the transport */
#define COCANCEL_PATCH_GETBUFFER    0x0004 /* combase's import of I_RpcGetBuffer: MTA calls stay on their thread */
#define COCANCEL_PATCH_UNREGISTER   0x0008 /* combase's import of RpcServerUnregisterIf */
#define COCANCEL_PATCH_WAITS        0x0010 /* combase's wait imports: Begin_ returns before the reply */
#define COCANCEL_PATCH_FACTORY      0x0020 /* rpcrt4's standard proxy factory vtable */
#define COCANCEL_PATCH_MANAGER      0x0040 /* combase's proxy manager vtable: ICallFactory on proxies */
#define COCANCEL_PATCH_NDR_ASYNC    0x0080 /* rpcrt4's NdrDcomAsyncClientCall stub (x86_64) */
#define COCANCEL_PATCH_DISPATCH     0x0100 /* combase's imports that end an incoming call */
#define COCANCEL_PATCH_NDR_ASYNC_STUB 0x0200 /* rpcrt4's NdrDcomAsyncStubCall stub */

struct cocancel_status
{
    DWORD size;              /* set to sizeof(struct cocancel_status) before the call */
    DWORD routes;            /* COCANCEL_ROUTE_* */
    DWORD repaired_imports;  /* import slots redirected from "unimplemented function" stubs */
    DWORD refused_patches;   /* places that did not match what was expected and were left alone */
    /* Since version 2 of the structure (a size of 16 bytes is version 1): */
    DWORD abandoned_calls;   /* calls whose caller was let go (cancelled, or released without Finish_)
                                and whose reply the engine has not finished with yet */
    /* Since version 3 (a size of 20 bytes is version 2): */
    DWORD patch_points;      /* COCANCEL_PATCH_* applied so far (some wait for the first proxied call) */
    /* Since version 4 (a size of 24 bytes is version 3): */
    DWORD leaked_calls;      /* abandoned calls given up because their thread ended before their reply
                                came: Wine's state of each (and its apartment) stays allocated */
};
#define COCANCEL_STATUS_V1_SIZE 16
#define COCANCEL_STATUS_V2_SIZE 20
#define COCANCEL_STATUS_V3_SIZE 24

/* E_INVALIDARG for NULL or a size that is no version's. */
HRESULT WINAPI CocancelGetStatus(struct cocancel_status *status);

/*
 * A cancel object for a call of your own: it starts pending; Cancel(0) marks
 * it cancelled, Cancel(n) waits up to n seconds for CocancelCompleteCall();
 * TestCancel reports RPC_E_CALL_CANCELED once cancelled, else RPC_S_CALLPENDING.
 * cancellable = FALSE makes Cancel answer CO_E_CANCEL_DISABLED.
 * Push it with CoSetCancelObject() so that CoCancelCall(tid) reaches it.
 */
HRESULT WINAPI CocancelCreateCancelObject(BOOL cancellable, ICancelMethodCalls **cancel);

/*
 * Reports that the call behind a cocancel cancel object has finished:
 * S_OK if its result is to be used, RPC_E_CALL_CANCELED if it was cancelled
 * first (discard the result), RPC_E_CALL_COMPLETE if it was already complete,
 * E_INVALIDARG if the object is not one of cocancel's.
 */
HRESULT WINAPI CocancelCompleteCall(ICancelMethodCalls *cancel);

/*
 * Waits until the call behind a cocancel cancel object is complete or
 * cancelled, at most timeout ms: S_OK when complete, RPC_E_CALL_CANCELED when
 * cancelled, RPC_S_CALLPENDING on timeout, E_INVALIDARG for a foreign object.
 */
HRESULT WINAPI CocancelWaitCall(ICancelMethodCalls *cancel, DWORD timeout);

/*
 * Finds Wine's client channel now, if no proxied call has done so yet, and
 * waits for that at most timeout ms: S_OK once calls are intercepted,
 * RPC_S_CALLPENDING otherwise.  Programs never need it: the first proxied
 * call of a process does the same before it goes out, so every call can be
 * cancelled.  It is kept for diagnostics (and for programs written against
 * cocancel 0.1).
 */
HRESULT WINAPI CocancelWaitChannel(DWORD timeout);

#ifdef __cplusplus
}
#endif

#endif /* COCANCEL_H */
