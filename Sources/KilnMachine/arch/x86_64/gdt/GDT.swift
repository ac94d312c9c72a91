import KilnMemory

/// A flat-model segment descriptor (Intel SDM Vol. 3A §3.4.5) and its
/// unpacked form for KVM's `kvm_segment`.
public struct SegmentDescriptor: Equatable, Sendable {
    /// The access byte and flags nibble as the SDM packs them: bits 0-7
    /// access (type, S, DPL, P), bits 12-15 flags (AVL, L, D/B, G).
    public let flags: UInt16
    public let base: UInt32
    public let limit: UInt32

    public init(flags: UInt16, base: UInt32 = 0, limit: UInt32 = 0xfffff) {
        self.flags = flags
        self.base = base
        self.limit = limit
    }

    /// The 8-byte GDT entry.
    public var encoded: UInt64 {
        let base = UInt64(base), limit = UInt64(limit), flags = UInt64(flags)
        return ((base & 0xff00_0000) << 32) | ((flags & 0xf0ff) << 40) | ((limit & 0xf_0000) << 32)
            | ((base & 0x00ff_ffff) << 16) | (limit & 0xffff)
    }

    public var type: UInt8 { UInt8(flags & 0xf) }
    public var isSystem: Bool { flags & 0x10 == 0 }
    public var dpl: UInt8 { UInt8((flags >> 5) & 3) }
    public var present: Bool { flags & 0x80 != 0 }
    public var available: Bool { flags & 0x1000 != 0 }
    public var long: Bool { flags & 0x2000 != 0 }
    public var defaultBig: Bool { flags & 0x4000 != 0 }
    public var granular: Bool { flags & 0x8000 != 0 }
    /// The limit in bytes, scaled by 4 KiB when G is set.
    public var byteLimit: UInt32 { granular ? (limit << 12) | 0xfff : limit }
}

/// The boot GDT: null, 64-bit code, data, TSS, at selectors 0, 8, 0x10, 0x18.
public enum BootGDT {
    public static let code64 = SegmentDescriptor(flags: 0xa09b) // G, L, P, code exec/read accessed
    /// The PVH entry runs 32-bit protected code: D/B set, L clear.
    public static let code32 = SegmentDescriptor(flags: 0xc09b)
    public static let data = SegmentDescriptor(flags: 0xc093) // G, D/B, P, data read/write accessed
    public static let tss = SegmentDescriptor(flags: 0x808b) // G, P, busy 64-bit TSS
    public static let entries: [SegmentDescriptor?] = [nil, code64, data, tss]
    /// The same selectors for a 32-bit (PVH) entry.
    public static let entries32: [SegmentDescriptor?] = [nil, code32, data, tss]

    public static let codeSelector: UInt16 = 0x08
    public static let dataSelector: UInt16 = 0x10
    public static let tssSelector: UInt16 = 0x18

    public static func write(into memory: GuestMemory, at address: UInt64 = X86Layout.gdt, mode: EntryMode = .long64)
        throws
    {
        for (index, entry) in (mode == .long64 ? entries : entries32).enumerated() {
            try memory.write(entry?.encoded ?? 0, at: address + UInt64(index * 8))
        }
        // An empty IDT: the guest installs its own before enabling interrupts.
        try memory.write(UInt64(0), at: X86Layout.idt)
    }

    public static var limit: UInt16 { UInt16(entries.count * 8 - 1) }
}

/// How the boot vCPU enters the kernel.
public enum EntryMode: Equatable, Sendable {
    /// Linux 64-bit boot protocol: long mode, paging on, %rsi = zero page.
    case long64
    /// PVH: 32-bit protected mode, paging off, %ebx = hvm_start_info.
    case pvh32
}
