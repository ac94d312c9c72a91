/*
 * Entry and machine-level helpers of the Kiln test guest.
 *
 * Two ways in, so kiln and QEMU boot the same file:
 * - `_start`, the ELF entry, in 64-bit mode through the Linux 64-bit boot
 *   protocol (Documentation/arch/x86/boot.rst): paging on an identity map,
 *   flat segments, interrupts off, %rsi = the zero page.
 * - `pvh_start`, named by a Xen PHYS32_ENTRY note: 32-bit protected mode,
 *   paging off, %ebx = hvm_start_info (Xen docs/misc/pvh.pandoc). It builds
 *   its own identity map and GDT and enters long mode.
 * The Swift code does the rest; what Swift cannot say (port I/O, volatile
 * MMIO, lidt, sti/hlt, an interrupt handler, the few runtime symbols
 * Embedded Swift needs) is here.
 * No int3 anywhere: kvm-pvm cannot emulate it.
 */
    .section .text.start, "ax"
    .globl _start
_start:
    lea     stack_top(%rip), %rsp
    xor     %ebp, %ebp
    mov     %rsi, %rdi              /* guest_main(zeroPage, 0) */
    xor     %esi, %esi
    call    guest_main
1:  cli
    hlt
    jmp     1b

/* XEN_ELFNOTE_PHYS32_ENTRY (18). The descriptor is 8 bytes: QEMU reads a
 * 64-bit address from an ELF64 note; kiln takes 4 or 8. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long   4, 8, 18
    .asciz  "Xen"
    .quad   pvh_start
    .popsection

    .code32
pvh_start:
    cli
    cld
    /* PML4[0] -> PDPT; PDPT[0..3] -> four PDs of 2 MiB pages: 0-4 GiB,
     * which holds RAM below the hole and the MMIO devices (1 GiB pages
     * fault on kvm-pvm). The tables are in .bss, below 4 GiB. */
    mov     $pvh_pml4, %edi
    movl    $(pvh_pdpt + 3), (%edi)
    movl    $0, 4(%edi)
    mov     $pvh_pdpt, %edi
    mov     $(pvh_pd + 3), %eax
    xor     %ecx, %ecx
2:  mov     %eax, (%edi,%ecx,8)
    movl    $0, 4(%edi,%ecx,8)
    add     $4096, %eax
    inc     %ecx
    cmp     $4, %ecx
    jb      2b
    mov     $pvh_pd, %edi
    xor     %ecx, %ecx
3:  mov     %ecx, %eax
    shl     $21, %eax
    or      $0x83, %eax             /* present, writable, 2 MiB page */
    mov     %eax, (%edi,%ecx,8)
    movl    $0, 4(%edi,%ecx,8)
    inc     %ecx
    cmp     $2048, %ecx
    jb      3b

    lgdt    pvh_gdt_descriptor
    mov     $0x620, %eax            /* PAE, OSFXSR, OSXMMEXCPT */
    mov     %eax, %cr4
    mov     $pvh_pml4, %eax
    mov     %eax, %cr3
    mov     $0xc0000080, %ecx       /* EFER.LME */
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     $0x80000033, %eax       /* PE, MP, ET, NE, PG */
    mov     %eax, %cr0
    ljmp    $0x08, $pvh_long

    .code64
pvh_long:
    mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     %eax, %fs
    mov     %eax, %gs
    lea     stack_top(%rip), %rsp
    xor     %ebp, %ebp
    mov     %ebx, %edi              /* guest_main(startInfo, 1) */
    mov     $1, %esi
    call    guest_main
4:  cli
    hlt
    jmp     4b

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

/* Volatile MMIO and shared-ring accesses: one plain mov each, so the
 * compiler neither merges, splits nor elides them (virtio 1.2 §4.2.2:
 * registers are 32 bits wide; §4.2.2.2: config fields by their width). */
    .globl guest_read32
guest_read32:
    mov     (%rdi), %eax
    ret

    .globl guest_write32
guest_write32:
    mov     %esi, (%rdi)
    ret

    .globl guest_read16
guest_read16:
    movzwl  (%rdi), %eax
    ret

    .globl guest_write16
guest_write16:
    mov     %si, (%rdi)
    ret

    .globl guest_read8
guest_read8:
    movzbl  (%rdi), %eax
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

/* gate at %rdx -> handler %rax (device_interrupt.S uses it too) */
    .globl set_gate
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

/* The PVH entry's GDT: selector 0x08 is 64-bit code, as in kiln's boot
 * GDT, so the IDT gates work after either entry. */
    .balign 16
pvh_gdt:
    .quad   0
    .quad   0x00af9a000000ffff      /* 0x08: 64-bit code */
    .quad   0x00cf92000000ffff      /* 0x10: flat data */
pvh_gdt_descriptor:
    .word   3 * 8 - 1
    .long   pvh_gdt

    .balign 16
idt_descriptor:
    .word   256 * 16 - 1
    .quad   idt

    .bss
    .balign 4096
pvh_pml4:
    .skip   4096
pvh_pdpt:
    .skip   4096
pvh_pd:
    .skip   4 * 4096
idt:
    .skip   256 * 16
    .balign 16
stack:
    .skip   16384
stack_top:
