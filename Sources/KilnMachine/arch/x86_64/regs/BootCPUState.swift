import CKiln

/// The register state of a vCPU at the 64-bit kernel entry (Linux boot.rst
/// "64-bit Boot Protocol"): long mode with paging on an identity map, flat
/// segments from the boot GDT, interrupts off, rsi at the zero page.
public enum BootCPUState {
    enum CR0 {
        static let protectionEnable: UInt64 = 1 << 0
        static let monitorCoprocessor: UInt64 = 1 << 1
        static let extensionType: UInt64 = 1 << 4
        static let numericError: UInt64 = 1 << 5
        static let paging: UInt64 = 1 << 31
    }

    enum CR4 {
        static let pae: UInt64 = 1 << 5
        static let osfxsr: UInt64 = 1 << 9
        static let osxmmexcpt: UInt64 = 1 << 10
    }

    enum EFER {
        static let longModeEnable: UInt64 = 1 << 8
        static let longModeActive: UInt64 = 1 << 10
    }

    /// 0x80000033: the value measured to work on kvm-pvm and on hardware KVM.
    public static let cr0 =
        CR0.protectionEnable | CR0.monitorCoprocessor | CR0.extensionType | CR0.numericError | CR0.paging
    /// 0x620: PAE for long mode, SSE enabled (compiled guests use it).
    public static let cr4 = CR4.pae | CR4.osfxsr | CR4.osxmmexcpt
    public static let efer = EFER.longModeEnable | EFER.longModeActive
    /// RFLAGS bit 1 is reserved and always set; IF is clear.
    public static let rflags: UInt64 = 0x2

    static func segment(_ descriptor: SegmentDescriptor, selector: UInt16) -> kvm_segment {
        var segment = kvm_segment()
        segment.base = UInt64(descriptor.base)
        segment.limit = descriptor.byteLimit
        segment.selector = selector
        segment.type = descriptor.type
        segment.present = descriptor.present ? 1 : 0
        segment.dpl = descriptor.dpl
        segment.db = descriptor.defaultBig ? 1 : 0
        segment.s = descriptor.isSystem ? 0 : 1
        segment.l = descriptor.long ? 1 : 0
        segment.g = descriptor.granular ? 1 : 0
        segment.avl = descriptor.available ? 1 : 0
        return segment
    }

    /// Applies the long-mode state to sregs read from the vCPU (keeping the
    /// fields KVM owns, such as the APIC base).
    public static func specialRegisters(from current: kvm_sregs) -> kvm_sregs {
        var sregs = current
        let data = segment(BootGDT.data, selector: BootGDT.dataSelector)
        sregs.cs = segment(BootGDT.code64, selector: BootGDT.codeSelector)
        sregs.ds = data
        sregs.es = data
        sregs.fs = data
        sregs.gs = data
        sregs.ss = data
        sregs.tr = segment(BootGDT.tss, selector: BootGDT.tssSelector)
        sregs.gdt.base = X86Layout.gdt
        sregs.gdt.limit = BootGDT.limit
        sregs.idt.base = X86Layout.idt
        sregs.idt.limit = 7
        sregs.cr0 = cr0
        sregs.cr3 = X86Layout.pml4
        sregs.cr4 = cr4
        sregs.efer = efer
        return sregs
    }

    /// The PVH entry state (Xen docs/misc/pvh.pandoc): 32-bit protected
    /// mode with paging off, flat 4 GiB code and data segments, a TSS, and
    /// CR4 and EFER clear.
    public static func pvhSpecialRegisters(from current: kvm_sregs) -> kvm_sregs {
        var sregs = specialRegisters(from: current)
        sregs.cs = segment(BootGDT.code32, selector: BootGDT.codeSelector)
        sregs.cr0 = CR0.protectionEnable | CR0.extensionType
        sregs.cr3 = 0
        sregs.cr4 = 0
        sregs.efer = 0
        return sregs
    }

    public static func specialRegisters(for mode: EntryMode, from current: kvm_sregs) -> kvm_sregs {
        mode == .long64 ? specialRegisters(from: current) : pvhSpecialRegisters(from: current)
    }

    /// %rsi carries the zero page (64-bit protocol), %rbx hvm_start_info (PVH).
    public static func registers(entry: UInt64, mode: EntryMode = .long64, bootInfo: UInt64) -> kvm_regs {
        var regs = kvm_regs()
        regs.rflags = rflags
        regs.rip = entry
        regs.rsp = X86Layout.bootStackTop
        regs.rbp = X86Layout.bootStackTop
        if mode == .long64 { regs.rsi = bootInfo } else { regs.rbx = bootInfo }
        return regs
    }

    /// x87 control word 0x37F (all exceptions masked) and MXCSR 0x1F80, the
    /// power-on values (Intel SDM Vol. 1 §8.1.5, §10.2.3.1).
    public static func fpu() -> kvm_fpu {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37f
        fpu.mxcsr = 0x1f80
        return fpu
    }

    /// LAPIC LVT LINT0 as ExtINT (the 8259 PIC's output) and LINT1 as NMI,
    /// the virtual-wire mode Linux expects at boot (Intel MP spec §3.6.2.2;
    /// SDM Vol. 3A §10.5.1 for the LVT layout).
    public static func lapic(from current: kvm_lapic_state) -> kvm_lapic_state {
        var state = current
        withUnsafeMutableBytes(of: &state.regs) { registers in
            func setDeliveryMode(_ offset: Int, _ mode: UInt32) {
                let value = registers.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                let updated = (value & ~0x0001_0700) | (mode << 8) // clear mask and delivery mode
                registers.storeBytes(of: updated, toByteOffset: offset, as: UInt32.self)
            }
            setDeliveryMode(lvtLINT0, deliveryModeExtINT)
            setDeliveryMode(lvtLINT1, deliveryModeNMI)
        }
        return state
    }

    static let lvtLINT0 = 0x350
    static let lvtLINT1 = 0x360
    static let deliveryModeNMI: UInt32 = 4
    static let deliveryModeExtINT: UInt32 = 7
}
