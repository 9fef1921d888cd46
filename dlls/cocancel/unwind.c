/*
 * Giving back what a frame holds when an exception unwinds it.
 *
 * Owns the exception handler of unwind_guarded (the thunks): mingw's C has
 * no __finally, so a function that must give something back even when code
 * it calls raises an exception that is handled further up runs that code
 * through unwind_guarded, whose frame's handler calls the guard's function
 * while the frame is being unwound, and does nothing otherwise (the search
 * for a handler goes on past it, as past any frame without __except).
 */

#include "cocancel_private.h"

#define UNWIND_FLAGS (EXCEPTION_UNWINDING | EXCEPTION_EXIT_UNWIND)

EXCEPTION_DISPOSITION CDECL unwind_guard_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *context,
                                                 void *dispatch);

EXCEPTION_DISPOSITION CDECL unwind_guard_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *context,
                                                 void *dispatch)
{
    struct unwind_guard *guard;

    if (!(rec->ExceptionFlags & UNWIND_FLAGS)) return ExceptionContinueSearch;
#ifdef __x86_64__
    /* The frame is unwind_guarded's frame pointer; the guard is kept just below it. */
    guard = *(struct unwind_guard **)((char *)frame - 8);
#else
    /* The frame is the registration record {prev, handler, guard}. */
    guard = ((struct unwind_guard **)frame)[2];
#endif
    guard->on_unwind(guard->arg);
    return ExceptionContinueSearch;
}
