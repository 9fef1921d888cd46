/*
 * i386 code of the asynchronous-call engine (stdcall).
 *
 *  - async_thunks: slot n of every generated async vtable is a 16-byte thunk
 *    that passes n in eax to async_entry, which calls
 *    async_dispatch_target(this, n, frame); that returns the HRESULT in eax
 *    and the argument bytes the callee pops in edx;
 *  - stub_thunks: the same for the vtables that stand in front of server
 *    objects (asyncstub.c), through stub_dispatch_target;
 *  - call_frame(func, args, count): calls func with count 4-byte arguments.
 *
 * MAX_THUNKS in asynccall.c must match the .rept count below (both tables).
 */

	.globl _async_dispatch_target
	.globl _stub_dispatch_target
	.data
	.balign 4
/* Set by asynccall.c: where the thunks hand their calls over. */
_async_dispatch_target:
	.long 0
_stub_dispatch_target:
	.long 0

	.globl _async_thunks
	.globl _stub_thunks
	.globl _call_frame
.text
/* A dispatcher entry and its table of 16-byte thunks, one per vtable slot. */
.macro THUNK_TABLE entry, table, target
.balign 16
\entry:
	pushl %ebp
	movl %esp, %ebp
	subl $16, %esp
	leal 8(%ebp), %ecx
	movl %ecx, 8(%esp)
	movl %eax, 4(%esp)
	movl 8(%ebp), %ecx
	movl %ecx, 0(%esp)
	call *\target
	movl %ebp, %esp
	popl %ebp
	popl %ecx
	addl %edx, %esp
	jmp *%ecx
.balign 16
\table:
.set thunk_n, 0
.rept 512
	movl $thunk_n, %eax
	jmp \entry
	.balign 16, 0xcc
.set thunk_n, thunk_n + 1
.endr
.endm

	THUNK_TABLE _async_entry, _async_thunks, _async_dispatch_target
	THUNK_TABLE _stub_entry, _stub_thunks, _stub_dispatch_target

.balign 16
_call_frame:
	pushl %ebp
	movl %esp, %ebp
	pushl %esi
	pushl %edi
	movl 16(%ebp), %ecx
	movl 12(%ebp), %esi
	leal 0(,%ecx,4), %edx
	subl %edx, %esp
	andl $-16, %esp
	movl %esp, %edi
	cld
	rep movsl
	call *8(%ebp)
	leal -8(%ebp), %esp
	popl %edi
	popl %esi
	popl %ebp
	ret

/*
 * unwind_guarded(func, arg, guard): calls func(arg) under an exception
 * registration record {prev, unwind_guard_handler, guard}, whose handler
 * (C) acts only when an exception unwinds the frame: a __finally for code
 * that mingw's C cannot write.
 */
	.globl _unwind_guarded
.balign 16
_unwind_guarded:
	pushl %ebp
	movl %esp, %ebp
	pushl 16(%ebp)
	pushl $_unwind_guard_handler
	pushl %fs:0
	movl %esp, %fs:0
	pushl 12(%ebp)
	call *8(%ebp)
	addl $4, %esp
	movl -12(%ebp), %ecx
	movl %ecx, %fs:0
	leave
	ret
