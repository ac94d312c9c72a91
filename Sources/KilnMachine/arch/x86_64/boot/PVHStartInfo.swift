/// The PVH boot ABI's start-of-day structures (Xen public header
/// arch-x86/hvm/start_info.h, version 1; Linux arch/x86/platform/pvh):
/// `hvm_start_info`, its module list (the initrd) and its memory map, laid
/// out contiguously at one guest address. The kernel gets their address in
/// %ebx at its 32-bit PVH entry point.
public struct PVHStartInfo: Sendable {
    public static let magic: UInt32 = 0x336e_c578
    static let version: UInt32 = 1
    static let headerSize = 56
    static let moduleEntrySize = 32
    static let memoryMapEntrySize = 24

    /// The bytes to write at `address`.
    public let bytes: [UInt8]

    public init(
        address: UInt64, commandLine: UInt64, initrd: (address: UInt64, size: UInt64)?,
        e820: [E820Entry], acpiRSDP: UInt64?
    ) {
        let modules = initrd == nil ? 0 : 1
        let moduleList = address + UInt64(PVHStartInfo.headerSize)
        let memoryMap = moduleList + UInt64(modules * PVHStartInfo.moduleEntrySize)
        var bytes: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        put(PVHStartInfo.magic)
        put(PVHStartInfo.version)
        put(UInt32(0)) // flags
        put(UInt32(modules)) // nr_modules
        put(modules == 0 ? 0 : moduleList) // modlist_paddr
        put(commandLine) // cmdline_paddr
        put(acpiRSDP ?? 0) // rsdp_paddr
        put(memoryMap) // memmap_paddr
        put(UInt32(e820.count)) // memmap_entries
        put(UInt32(0)) // reserved
        if let initrd {
            put(initrd.address); put(initrd.size); put(UInt64(0)); put(UInt64(0))
        }
        for entry in e820 {
            // XEN_HVM_MEMMAP_TYPE_* share the e820 type numbers.
            put(entry.address); put(entry.size); put(entry.kind.rawValue); put(UInt32(0))
        }
        self.bytes = bytes
    }
}
