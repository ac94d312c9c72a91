/*
 * Entry and machine-level helpers of the Kiln test guest.
 *
 * Two ways in, so kiln and QEMU boot the same file:
 * - `_start`, the ELF entry, in 64-bit mode through the Linux 64-bit boot
 *   protocol (Documentation/arch/x86/boot.rst): paging on an identity map,
 *   flat segments, interrupts off, %rsi = the zero page.
 * - `pvh_start`, named by a Xen PHYS32_ENTRY note: 32-bit protected mode,
 *   paging off, %ebx = hvm_start_info (Xen docs/misc/pvh.pandoc). It enters
 *   long mode on this file's own identity map and GDT.
 * Both then set up ring 0 (GDT, TSS, IDT, 8259s masked) and run the Swift
 * code in ring 3 with IOPL 3 (port I/O allowed) and interrupts on. A
 * paravirtual KVM (kvm-pvm) runs guest user mode natively but emulates a
 * guest kernel that is not written for it instruction by instruction
 * (measured: 0.5 us an instruction in ring 0, native speed in ring 3), so
 * only the interrupt handlers and the halt run in ring 0. An interrupt in
 * ring 3 switches to the TSS's RSP0 stack, so the Swift code's red zone is
 * never overwritten.
 * What Swift cannot say (port I/O, volatile MMIO, the halt, the interrupt
 * handlers, the few runtime symbols Embedded Swift needs) is here.
 * No int3 anywhere: kvm-pvm cannot emulate it.
 */
    .section .text.start, "ax"
    .globl _start
_start:
    lea     kernel_stack_top(%rip), %rsp
    mov     %rsi, %rdi              /* guest_main(zeroPage, 0) */
    xor     %esi, %esi
    jmp     enter_ring3

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
    lgdt    gdt_descriptor
    mov     $0x620, %eax            /* PAE, OSFXSR, OSXMMEXCPT */
    mov     %eax, %cr4
    mov     $pml4, %eax
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
    lea     kernel_stack_top(%rip), %rsp
    mov     %ebx, %edi              /* guest_main(startInfo, 1) */
    mov     $1, %esi
    jmp     enter_ring3

/* Ring 0's set-up, then guest_main(%rdi, %rsi) in ring 3. */
enter_ring3:
    lgdt    gdt_descriptor(%rip)
    pushq   $0x08                   /* CS from this GDT (kiln's has the same 0x08) */
    lea     1f(%rip), %rax
    push    %rax
    lretq
1:  mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     %eax, %fs
    mov     %eax, %gs
    lea     pml4(%rip), %rax        /* this file's map: user pages */
    mov     %rax, %cr3
    /* The TSS descriptor's base, split over its fields (Intel SDM Vol. 3A
     * §8.2.3, the 16-byte system descriptor of 64-bit mode). */
    lea     tss(%rip), %rax
    lea     (gdt + 0x28)(%rip), %rdx
    mov     %ax, 2(%rdx)
    shr     $16, %rax
    mov     %al, 4(%rdx)
    mov     %ah, 7(%rdx)
    shr     $16, %rax
    mov     %eax, 8(%rdx)
    mov     $0x28, %ax
    ltr     %ax
    call    install_interrupt_handlers
    /* Both 8259s remapped to vectors 0x20/0x28 with every line masked
     * before interrupts go on (Intel 8259A datasheet, ICW1-ICW4, OCW1). */
    mov     $0x11, %al              /* ICW1: edge, cascade, ICW4 */
    out     %al, $0x20
    out     %al, $0xa0
    mov     $0x20, %al              /* ICW2: vector bases */
    out     %al, $0x21
    mov     $0x28, %al
    out     %al, $0xa1
    mov     $0x04, %al              /* ICW3: the slave on IRQ 2 */
    out     %al, $0x21
    mov     $0x02, %al
    out     %al, $0xa1
    mov     $0x01, %al              /* ICW4: 8086 mode */
    out     %al, $0x21
    out     %al, $0xa1
    mov     $0xff, %al              /* OCW1: all masked */
    out     %al, $0x21
    out     %al, $0xa1
    pushq   $0x1b                   /* SS: user data, RPL 3 */
    lea     user_stack_top(%rip), %rax
    push    %rax
    pushq   $0x3202                 /* RFLAGS: IOPL 3, IF */
    pushq   $0x23                   /* CS: user code, RPL 3 */
    lea     ring3_entry(%rip), %rax
    push    %rax
    iretq
ring3_entry:
    call    guest_main
    jmp     guest_halt_forever

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

/* Points IDT vectors 0x20, 0x21 and 0x24 (the 8259's IRQ 0, 1 and 4 after
 * remapping) and 13 (#GP: ring 3's halts) at their handlers and loads the IDT (Intel SDM Vol. 3A
 * §6.14.1, 64-bit gate layout). */
install_interrupt_handlers:
    lea     (idt + 0x20 * 16)(%rip), %rdx
    lea     timer_isr(%rip), %rax
    call    set_gate
    lea     (idt + 0x21 * 16)(%rip), %rdx
    lea     keyboard_isr(%rip), %rax
    call    set_gate
    lea     (idt + 0x24 * 16)(%rip), %rdx
    lea     serial_isr(%rip), %rax
    call    set_gate
    lea     (idt + 13 * 16)(%rip), %rdx
    lea     general_protection_isr(%rip), %rax
    call    set_gate
    lidt    idt_descriptor(%rip)
    ret

/* gate at %rdx -> handler %rax (device_interrupt.S uses it too) */
    .globl set_gate
set_gate:
    mov     %ax, (%rdx)             /* offset 15:0 */
    movw    $0x08, 2(%rdx)          /* ring 0's code selector */
    movw    $0x8e00, 4(%rdx)        /* present, DPL 0, 64-bit interrupt gate */
    shr     $16, %rax
    mov     %ax, 6(%rdx)            /* offset 31:16 */
    shr     $16, %rax
    mov     %eax, 8(%rdx)           /* offset 63:32 */
    movl    $0, 12(%rdx)
    ret

/* Waits for an interrupt, unless one arrived since the last wait returned:
 * callers test their condition with interrupts on, so an interrupt between
 * that test and the halt must not be slept through. hlt is ring 0's: in
 * ring 3 it raises #GP, and general_protection_isr does the wait. (kvm-pvm
 * runs neither `int n` nor syscall from ring 3 into ring 0 for a guest not
 * written for it; #GP it delivers.) */
    .globl guest_wait_for_interrupt
guest_wait_for_interrupt:
wait_halt:
    hlt
    ret

/* halts with interrupts off, for the "all vCPUs halted" test */
    .globl guest_halt_forever
guest_halt_forever:
    hlt
    jmp     guest_halt_forever

/* #GP, on the TSS's RSP0 stack: the error code, then RIP, CS, RFLAGS, RSP,
 * SS (Intel SDM Vol. 3A §6.14.2). At wait_halt: the wait, entered with IF
 * clear (an interrupt gate); every handler sets interrupt_seen, and sti's
 * shadow makes an interrupt pending here arrive at hlt, not before it;
 * iretq gives ring 3 back its IF. Any other #GP (guest_halt_forever's, or
 * a fault) halts for good with interrupts off. */
general_protection_isr:
    push    %rax
    lea     wait_halt(%rip), %rax
    cmp     %rax, 16(%rsp)
    jne     2f
    incq    16(%rsp)                /* resume after the one-byte hlt */
    cmpb    $0, interrupt_seen(%rip)
    jne     1f
    sti
    hlt
    cli
1:  movb    $0, interrupt_seen(%rip)
    pop     %rax
    add     $8, %rsp                /* the error code */
    iretq
2:  cli
3:  hlt
    jmp     3b

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
    movb    $1, interrupt_seen(%rip)
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
    movb    $1, interrupt_seen(%rip)
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
    movb    $1, interrupt_seen(%rip)
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
    .globl interrupt_seen
interrupt_seen:                     /* set by every handler (guest_wait_for_interrupt) */
    .byte   0

/* One GDT for both entries: 0x08/0x10 ring 0's code and data (0x08 as in
 * kiln's boot GDT), 0x18/0x20 ring 3's data and code, 0x28 the TSS
 * (its base filled in by enter_ring3). */
    .balign 16
gdt:
    .quad   0
    .quad   0x00af9a000000ffff      /* 0x08: 64-bit code, DPL 0 */
    .quad   0x00cf92000000ffff      /* 0x10: flat data, DPL 0 */
    .quad   0x00cff2000000ffff      /* 0x18: flat data, DPL 3 */
    .quad   0x00affa000000ffff      /* 0x20: 64-bit code, DPL 3 */
    .quad   0x0000890000002068      /* 0x28: available 64-bit TSS, its I/O bitmap's end */
    .quad   0
gdt_descriptor:
    .word   7 * 8 - 1
    .quad   gdt

/* The 64-bit TSS (Intel SDM Vol. 3A §8.7): RSP0, the stack an interrupt in
 * ring 3 switches to, and an I/O permission bitmap allowing every port
 * (§20.5.2). IOPL 3 alone should allow them; kvm-pvm's emulator looks at
 * the bitmap all the same (#GP at the first `in` without one). */
    .balign 16
tss:
    .long   0
    .quad   kernel_stack_top        /* RSP0 */
    .skip   102 - 12
    .word   104                     /* I/O map base: right after */
    .skip   65536 / 8               /* every port allowed */
    .byte   0xff                    /* the bitmap's end marker */

    .balign 16
idt_descriptor:
    .word   256 * 16 - 1
    .quad   idt

/* Identity map of 0-4 GiB in 2 MiB user pages (RAM below the hole and the
 * MMIO devices; 1 GiB pages fault on kvm-pvm), built by the assembler so
 * that no ring-0 loop fills it at boot. */
    .balign 4096
pml4:
    .quad   pdpt + 7                /* present, writable, user */
    .skip   4096 - 8
pdpt:
    .quad   pd + 7, pd + 0x1007, pd + 0x2007, pd + 0x3007
    .skip   4096 - 32
pd:
    .set    page, 0
    .rept   2048
    .quad   page + 0x87             /* present, writable, user, 2 MiB */
    .set    page, page + 0x200000
    .endr

    .bss
    .balign 4096
    .globl idt
idt:                                /* device_interrupt.S adds a gate */
    .skip   256 * 16
    .balign 16
kernel_stack:                       /* handlers and the wait */
    .skip   8192
kernel_stack_top:
user_stack:                         /* the Swift code */
    .skip   16384
user_stack_top:
