/* A device's interrupt for the UDP echo service (UDPEcho.swift): one more
 * gate in the IDT that entry.S loaded, found with sidt and written by
 * entry.S's set_gate. The handler only ends the interrupt at both 8259s (a
 * non-specific EOI to a slave with nothing in service does nothing); the
 * service reads the rings after every wake-up. */
    .text
    .code64

/* void guest_install_device_interrupt(uint8_t vector) */
    .globl guest_install_device_interrupt
guest_install_device_interrupt:
    sub     $16, %rsp
    sidt    (%rsp)
    mov     2(%rsp), %rdx           /* the IDT's base */
    add     $16, %rsp
    movzbl  %dil, %edi
    shl     $4, %rdi                /* 16-byte gates (Intel SDM Vol. 3A §6.14.1) */
    add     %rdi, %rdx
    lea     device_isr(%rip), %rax
    jmp     set_gate                /* entry.S's 64-bit interrupt gate writer */

device_isr:
    push    %rax
    mov     $0x20, %al              /* non-specific EOI: slave, then master */
    outb    %al, $0xa0
    outb    %al, $0x20
    pop     %rax
    iretq
