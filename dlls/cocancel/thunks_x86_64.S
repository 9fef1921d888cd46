/*
 * x86_64 code of the asynchronous-call engine (Microsoft x64 calling convention).
 *
 *  - async_thunks: slot n of every generated async vtable is a 16-byte thunk
 *    that passes n in r10 to async_entry, which spills the register
 *    arguments to their home slots and calls
 *    async_dispatch_target(this, n, frame, fregs), where frame is the caller's
 *    argument area and fregs the floating-point arguments 1-3;
 *  - dcom_entry: rpcrt4!NdrDcomAsyncClientCall(stub_desc, format, this, ...)
 *    taken over: calls async_dcom_target(stub_desc, format, frame), the
 *    frame from 'this' on having the method's own layout;
 *  - call_frame(func, args, count): calls func with count pointer-sized
 *    arguments (the first four also in xmm0-3, for floating-point ones).
 *
 * MAX_THUNKS in asynccall.c must match the .rept count below (both tables).
 */

	.globl async_dispatch_target
	.globl async_dcom_target
	.globl stub_dispatch_target
	.data
	.balign 8
/* Set by asynccall.c: where the thunks hand their calls over. */
async_dispatch_target:
	.quad 0
async_dcom_target:
	.quad 0
stub_dispatch_target:
	.quad 0

	.globl async_thunks
	.globl stub_thunks
	.globl dcom_entry
	.globl call_frame
.text
/* A dispatcher entry and its table of 16-byte thunks, one per vtable slot. */
.macro THUNK_TABLE entry, table, target
.balign 16
\entry:
.seh_proc \entry
	movq %rcx, 8(%rsp)
	movq %rdx, 16(%rsp)
	movq %r8, 24(%rsp)
	movq %r9, 32(%rsp)
	subq $0x48, %rsp
.seh_stackalloc 0x48
.seh_endprologue
/* Floating-point arguments 1-3 arrive in xmm1-xmm3 only. */
	movsd %xmm1, 0x20(%rsp)
	movsd %xmm2, 0x28(%rsp)
	movsd %xmm3, 0x30(%rsp)
	movl %r10d, %edx
	leaq 0x50(%rsp), %r8
	leaq 0x20(%rsp), %r9
	call *\target(%rip)
	addq $0x48, %rsp
	ret
.seh_endproc
.balign 16
\table:
.set thunk_n, 0
.rept 512
	movl $thunk_n, %r10d
	jmp \entry
	.balign 16, 0xcc
.set thunk_n, thunk_n + 1
.endr
.endm

	THUNK_TABLE async_entry, async_thunks, async_dispatch_target
	THUNK_TABLE stub_entry, stub_thunks, stub_dispatch_target

/* NdrDcomAsyncClientCall(stub_desc, format, this, ...): the arguments from
 * 'this' on form a frame like the one of the method itself. */
.balign 16
dcom_entry:
.seh_proc dcom_entry
	movq %rcx, 8(%rsp)
	movq %rdx, 16(%rsp)
	movq %r8, 24(%rsp)
	movq %r9, 32(%rsp)
	subq $0x28, %rsp
.seh_stackalloc 0x28
.seh_endprologue
	leaq 0x40(%rsp), %r8
	call *async_dcom_target(%rip)
	addq $0x28, %rsp
	ret
.seh_endproc
/* ULONG_PTR call_frame(void *func, const ULONG_PTR *args, unsigned int count) */
.balign 16
call_frame:
.seh_proc call_frame
	pushq %rbp
.seh_pushreg %rbp
	pushq %rsi
.seh_pushreg %rsi
	pushq %rdi
.seh_pushreg %rdi
	movq %rsp, %rbp
.seh_setframe %rbp, 0
.seh_endprologue
	movq %rcx, %rax
	movq %rdx, %rsi
	movl %r8d, %ecx
	cmpl $4, %ecx
	jae 1f
	movl $4, %ecx
1:	leaq 15(,%rcx,8), %rdx
	andq $-16, %rdx
	subq %rdx, %rsp
	movq %rsp, %rdi
	cld
	rep movsq
	movq 0(%rsp), %rcx
	movq 8(%rsp), %rdx
	movq 16(%rsp), %r8
	movq 24(%rsp), %r9
	movq %rcx, %xmm0
	movq %rdx, %xmm1
	movq %r8, %xmm2
	movq %r9, %xmm3
	call *%rax
	movq %rbp, %rsp
	popq %rdi
	popq %rsi
	popq %rbp
	ret
.seh_endproc

/*
 * unwind_guarded(func, arg, guard): calls func(arg) in a frame whose
 * exception handler (unwind_guard_handler, C) runs only when an exception
 * unwinds the frame, a __finally for code that mingw's C cannot write: the
 * guard pointer is kept just below the frame pointer, where the handler
 * finds it from the establisher frame.
 */
	.globl unwind_guarded
.balign 16
unwind_guarded:
.seh_proc unwind_guarded
	pushq %rbp
.seh_pushreg %rbp
	movq %rsp, %rbp
.seh_setframe %rbp, 0
	subq $48, %rsp
.seh_stackalloc 48
.seh_endprologue
.seh_handler unwind_guard_handler, @unwind
	movq %r8, -8(%rbp)
	movq %rcx, %rax
	movq %rdx, %rcx
	call *%rax
	nop
	movq %rbp, %rsp
	popq %rbp
	ret
.seh_endproc
