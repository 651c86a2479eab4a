@ Micro-benchmarks that validate the cycle estimate (xtask/src/cycles/validate.rs holds each
@ one's cycle count worked out from the Cortex-M4 TRM). A bare mps2-an386 image with a marker
@ table like the firmware's (firmware/app/src/marks.rs): benchmark k runs its loop of ITERATIONS
@ iterations between marker k and marker GAP; benchmark 0 is empty, so it measures what the
@ markers themselves cost. Then it exits through semihosting.
    .syntax unified
    .cpu cortex-m4
    .fpu fpv4-sp-d16
    .thumb

    .equ ITERATIONS, 100
    .equ GAP, 10
    .equ BUFFER, 0x20000000

    .section .vectors, "a"
    .word 0x20010000
    .word reset

    .text
    .global l1sparse_mark
    .thumb_func
l1sparse_mark:
    lsls r0, r0, #1
    add pc, r0
    nop
    .global l1sparse_marks
l1sparse_marks:
    .rept 11
    bx lr
    .endr

@ Sets up, starts marker k, and leaves the loop's label for the body.
    .macro start k
    movs r4, #ITERATIONS
    ldr r7, =BUFFER
    movs r0, #\k
    bl l1sparse_mark
    .endm

    .macro end
    movs r0, #GAP
    bl l1sparse_mark
    .endm

    .thumb_func
    .global reset
reset:
    @ The FPU on (CPACR: full access to CP10 and CP11).
    ldr r0, =0xE000ED88
    ldr r1, [r0]
    orr r1, r1, #(0xF << 20)
    str r1, [r0]
    dsb
    isb
    @ The buffer: word 0 holds its own address (for the dependent load), words 1-7 zero.
    ldr r7, =BUFFER
    str r7, [r7]
    movs r8, #0

    start 0                 @ empty: the markers' own cost
    end

    start 1                 @ data processing
1:  adds r5, #1
    eors r6, r5
    subs r4, #1
    bne 1b
    end

    start 2                 @ independent loads pipeline
1:  ldr r5, [r7]
    ldr r6, [r7, #4]
    ldr r8, [r7, #8]
    subs r4, #1
    bne 1b
    end

    start 3                 @ a load taking its address from the load before it
1:  ldr r5, [r7]
    ldr r6, [r5]
    subs r4, #1
    bne 1b
    end

    start 4                 @ a load taking its address from the instruction before it
1:  adds r7, r7, #0
    ldr r5, [r7]
    subs r4, #1
    bne 1b
    end

    start 5                 @ the int8 kernels' MACs
1:  ldr r5, [r7]
    ldr r6, [r7, #4]
    smlad r8, r5, r6, r8
    smlad r9, r5, r6, r9
    subs r4, #1
    bne 1b
    end

    start 6                 @ the f32 kernels' MACs
1:  vldmia r7, {s0-s7}
    vmla.f32 s8, s0, s1
    vmla.f32 s9, s2, s3
    vmla.f32 s10, s4, s5
    vmla.f32 s11, s6, s7
    subs r4, #1
    bne 1b
    end

    start 7                 @ calls: push and pop with the PC
1:  bl leaf
    subs r4, #1
    bne 1b
    end

    movs r8, #0
    start 8                 @ stores: immediate offset and register offset
1:  str r5, [r7, #4]
    str r5, [r7, r8]
    subs r4, #1
    bne 1b
    end

    start 9                 @ a conditional branch not taken
1:  cmp r4, #200
    bhi 2f
2:  subs r4, #1
    bne 1b
    end

    @ Semihosting SYS_EXIT with ADP_Stopped_ApplicationExit: QEMU exits with status 0.
    movs r0, #0x18
    ldr r1, =0x20026
    bkpt #0xab
    b .

    .thumb_func
leaf:
    push {r4, r5, r6, r7, lr}
    pop {r4, r5, r6, r7, pc}

    .pool
