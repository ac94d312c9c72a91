/* A device's interrupt for the UDP echo service (UDPEcho.swift): one more
 * gate in entry.S's IDT, written by entry.S's set_gate from ring 3 (the IDT
 * is in user pages; no sidt, which UMIP keeps from ring 3). The handler
 * marks the wake-up for guest_wait_for_interrupt and ends the interrupt at
 * both 8259s (a non-specific EOI to a slave with nothing in service does
 * nothing); the service reads the rings after every wake-up. */
    .text
    .code64

/* void guest_install_device_interrupt(uint8_t vector) */
    .globl guest_install_device_interrupt
guest_install_device_interrupt:
    lea     idt(%rip), %rdx
    movzbl  %dil, %edi
    shl     $4, %rdi                /* 16-byte gates (Intel SDM Vol. 3A §6.14.1) */
    add     %rdi, %rdx
    lea     device_isr(%rip), %rax
    jmp     set_gate                /* entry.S's 64-bit interrupt gate writer */

device_isr:
    push    %rax
    movb    $1, interrupt_seen(%rip)
    mov     $0x20, %al              /* non-specific EOI: slave, then master */
    outb    %al, $0xa0
    outb    %al, $0x20
    pop     %rax
    iretq
