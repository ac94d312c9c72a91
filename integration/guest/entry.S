/*
 * Entry and machine-level helpers of the Kiln test guest.
 *
 * kiln enters `_start` in 64-bit mode through the Linux 64-bit boot protocol
 * (Documentation/arch/x86/boot.rst): paging on an identity map, flat
 * segments, interrupts off, %rsi = the zero page. The Swift code does the
 * rest; what Swift cannot say (port I/O, lidt, sti/hlt, an interrupt
 * handler, the few runtime symbols Embedded Swift needs) is here.
 * No int3 anywhere: kvm-pvm cannot emulate it.
 */
    .section .text.start, "ax"
    .globl _start
_start:
    lea     stack_top(%rip), %rsp
    xor     %ebp, %ebp
    mov     %rsi, %rdi              /* guest_main(zeroPage) */
    call    guest_main
1:  cli
    hlt
    jmp     1b

    .text
/* void guest_outb(uint16_t port, uint8_t value) */
    .globl guest_outb
guest_outb:
    mov     %edi, %edx
    mov     %esi, %eax
    outb    %al, %dx
    ret

/* uint8_t guest_inb(uint16_t port) */
    .globl guest_inb
guest_inb:
    mov     %edi, %edx
    xor     %eax, %eax
    inb     %dx, %al
    ret

/* Points IDT vectors 0x20, 0x21 and 0x24 (the PIC's IRQ 0, 1 and 4 after
 * remapping) at their handlers and loads the IDT (Intel SDM Vol. 3A
 * §6.14.1, 64-bit gate layout). */
    .globl guest_install_interrupt_handlers
guest_install_interrupt_handlers:
    lea     (idt + 0x20 * 16)(%rip), %rdx
    lea     timer_isr(%rip), %rax
    call    set_gate
    lea     (idt + 0x21 * 16)(%rip), %rdx
    lea     keyboard_isr(%rip), %rax
    call    set_gate
    lea     (idt + 0x24 * 16)(%rip), %rdx
    lea     serial_isr(%rip), %rax
    call    set_gate
    lidt    idt_descriptor(%rip)
    ret

/* gate at %rdx -> handler %rax */
set_gate:
    mov     %ax, (%rdx)             /* offset 15:0 */
    movw    $0x08, 2(%rdx)          /* code selector of kiln's boot GDT */
    movw    $0x8e00, 4(%rdx)        /* present, DPL 0, 64-bit interrupt gate */
    shr     $16, %rax
    mov     %ax, 6(%rdx)            /* offset 31:16 */
    shr     $16, %rax
    mov     %eax, 8(%rdx)           /* offset 63:32 */
    movl    $0, 12(%rdx)
    ret

/* Enables interrupts for exactly one halt: sti's shadow makes the interrupt
 * arrive at hlt, and Swift code never runs with IF set (no red zone worry). */
    .globl guest_wait_for_interrupt
guest_wait_for_interrupt:
    sti
    hlt
    cli
    ret

/* halts with interrupts off, for the "all vCPUs halted" test */
    .globl guest_halt_forever
guest_halt_forever:
    cli
2:  hlt
    jmp     2b

/* uint32_t guest_timer_ticks(void) */
    .globl guest_timer_ticks
guest_timer_ticks:
    mov     timer_ticks(%rip), %eax
    ret

/* uint32_t guest_keyboard_byte_count(void) */
    .globl guest_keyboard_byte_count
guest_keyboard_byte_count:
    mov     keyboard_count(%rip), %eax
    ret

/* uint8_t guest_keyboard_byte(uint32_t index): bytes received on IRQ 1 */
    .globl guest_keyboard_byte
guest_keyboard_byte:
    and     $15, %edi
    lea     keyboard_bytes(%rip), %rax
    movzbl  (%rax,%rdi), %eax
    ret

/* uint32_t guest_serial_interrupts(void) */
    .globl guest_serial_interrupts
guest_serial_interrupts:
    mov     serial_interrupts(%rip), %eax
    ret

timer_isr:
    push    %rax
    incl    timer_ticks(%rip)
    mov     $0x20, %al              /* non-specific EOI to the master 8259 */
    outb    %al, $0x20
    pop     %rax
    iretq

/* The i8042's IRQ 1: one byte from the data port per interrupt, kept in a
 * 16-byte ring (IBM PC/AT technical reference, keyboard controller). */
keyboard_isr:
    push    %rax
    push    %rcx
    push    %rdx
    in      $0x60, %al
    mov     keyboard_count(%rip), %ecx
    and     $15, %ecx
    lea     keyboard_bytes(%rip), %rdx
    mov     %al, (%rdx,%rcx)
    incl    keyboard_count(%rip)
    mov     $0x20, %al
    outb    %al, $0x20
    pop     %rdx
    pop     %rcx
    pop     %rax
    iretq

/* The UART's IRQ 4: reading IIR acknowledges a THR-empty interrupt. */
serial_isr:
    push    %rax
    push    %rdx
    incl    serial_interrupts(%rip)
    mov     $0x3fa, %dx
    inb     %dx, %al
    mov     $0x20, %al
    outb    %al, $0x20
    pop     %rdx
    pop     %rax
    iretq

/* Runtime symbols Embedded Swift may reference. */
    .globl memset
memset:
    mov     %rdi, %r9
    mov     %esi, %eax
    mov     %rdx, %rcx
    rep stosb
    mov     %r9, %rax
    ret

    .globl memcpy
    .globl memmove
memcpy:
memmove:
    mov     %rdi, %rax
    mov     %rdx, %rcx
    cmp     %rsi, %rdi
    ja      3f
    rep movsb
    ret
3:  lea     -1(%rsi,%rdx), %rsi
    lea     -1(%rdi,%rdx), %rdi
    std
    rep movsb
    cld
    ret

    .globl posix_memalign
posix_memalign:                     /* the guest never allocates */
    mov     $12, %eax               /* ENOMEM */
    ret

    .globl free
free:
    ret

    .globl __stack_chk_fail
__stack_chk_fail:
    jmp     guest_halt_forever

    .data
    .globl __stack_chk_guard
    .balign 8
__stack_chk_guard:
    .quad   0x5a17c0ffee5a17c0
timer_ticks:
    .long   0
serial_interrupts:
    .long   0
keyboard_count:
    .long   0
keyboard_bytes:
    .skip   16

    .balign 16
idt_descriptor:
    .word   256 * 16 - 1
    .quad   idt

    .bss
    .balign 4096
idt:
    .skip   256 * 16
    .balign 16
stack:
    .skip   16384
stack_top:
