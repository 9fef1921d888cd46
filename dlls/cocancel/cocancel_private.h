/*
 * cocancel engine: declarations shared between its source files.
 */

#ifndef COCANCEL_PRIVATE_H
#define COCANCEL_PRIVATE_H

#define COBJMACROS
#define CONST_VTABLE
#define _OLE32_
#include <windows.h>
#include <objbase.h>
#include <objidl.h>

#include "cocancel.h"
#include "core.h"
#include "debug.h"

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#endif

/* cancel.c */
HRESULT hresult_from_status(enum cc_status status);
BOOL cancellation_enabled(void);
void cancel_thread_detach(void);
void cancel_init(void);
HRESULT cancel_object_create(BOOL cancellable, ULONGLONG call_id, ICancelMethodCalls **cancel);
HANDLE cancel_object_event(ICancelMethodCalls *cancel);
HANDLE cancel_object_cancelled_event(ICancelMethodCalls *cancel);
void cancel_object_wait(ICancelMethodCalls *cancel);
void cancel_object_abort(ICancelMethodCalls *cancel);
enum cc_state cancel_object_state(ICancelMethodCalls *cancel);
HRESULT cancel_object_push(ICancelMethodCalls *cancel);
void cancel_object_pop(ICancelMethodCalls *cancel);
HRESULT WINAPI CocancelCompleteCall(ICancelMethodCalls *cancel);

/* channel.c */
void channel_init(void);
void channel_mark_cancelled(ULONGLONG call_id);
void channel_abort_call(ULONGLONG call_id);
void channel_get_status(struct cocancel_status *status);
BOOL channel_wait_ready(DWORD timeout);

HRESULT channel_send_receive(IRpcChannelBuffer *chan, RPCOLEMESSAGE *msg, ULONG *status);

/* async.c */
void async_init(void);
void async_thread_detach(void);
void async_client_fill(REFIID riid);
BOOL async_send_receive(IRpcChannelBuffer *chan, RPCOLEMESSAGE *msg, ULONG *status, ULONGLONG call_id,
                        HRESULT *hr);
void async_get_status(struct cocancel_status *status);
HRESULT async_run_task(void (*task)(void *), void *arg, HANDLE release);
void async_reap(void);

/* patch.c */
struct api_export
{
    const char *name;
    void *function;
};
extern const struct api_export api_exports[];
extern const unsigned int api_export_count;

void patch_install(HMODULE engine);
void **find_import_slot(HMODULE module, const char *dll, const char *name);
BOOL write_pointer(void **slot, void *value);
BOOL redirect_import(HMODULE module, const char *dll, const char *name, void *hook, void **real);
BOOL in_module(HMODULE module, const void *ptr, SIZE_T size);
BOOL patch_wine_stub(HMODULE module, const char *name, void *function);
void patch_get_status(struct cocancel_status *status);

/* Resolved from combase at start-up (never imported: the carrier ole32 loads us). */
extern HRESULT (WINAPI *p_CoGetCallContext)(REFIID riid, void **ppv);
extern HRESULT (WINAPI *p_CoEnableCallCancellation)(void *reserved);
extern HRESULT (WINAPI *p_CoDisableCallCancellation)(void *reserved);

#endif /* COCANCEL_PRIVATE_H */
