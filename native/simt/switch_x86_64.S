// The fiber context switch of the SIMT emulator (x86-64 System V). It lives in an assembly file rather
// than inline asm because native/cuda/ptx.cuh is the project's only file with inline asm.
//
//   void simt_context_switch(void** save_sp, void* load_sp)
// pushes the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the
// stack pointer in *save_sp, loads load_sp and pops the same frame from there. About 10-16 ns, against
// 255-310 ns for glibc swapcontext, which makes a sigprocmask system call on every switch.
//
// Frame, from the saved stack pointer upwards:
//   +0 MXCSR (4 bytes), +4 x87 control word (2 bytes), +8 r15, r14, r13, r12, rbx, rbp, return address.
// A new fiber's stack is prepared with the same frame (fiber.cc); its return address is
// simt_context_start, which calls entry(arg) with entry in r13 and arg in r12.

        .text
        .globl  simt_context_switch
        .type   simt_context_switch, @function
        .p2align 4
simt_context_switch:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .cfi_endproc
        .size   simt_context_switch, .-simt_context_switch

// First instructions of every fiber. The return address is undefined so that debuggers and unwinders
// stop here instead of walking into whatever lies above the fiber's stack.
        .globl  simt_context_start
        .type   simt_context_start, @function
        .p2align 4
simt_context_start:
        .cfi_startproc
        .cfi_undefined rip
        movq    %r12, %rdi
        callq   *%r13
        ud2
        .cfi_endproc
        .size   simt_context_start, .-simt_context_start

        .section .note.GNU-stack, "", @progbits
