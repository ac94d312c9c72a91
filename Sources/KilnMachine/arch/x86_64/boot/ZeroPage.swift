/// The zero page: Linux's `struct boot_params` (Documentation/arch/x86/zero-page.rst),
/// built as bytes so it can be checked without a guest.
public struct ZeroPage: Sendable {
    public enum Offset {
        public static let acpiRSDPAddress = 0x070
        public static let extRamdiskImage = 0x0c0
        public static let extRamdiskSize = 0x0c4
        public static let extCommandLinePointer = 0x0c8
        public static let e820Entries = 0x1e8
        public static let e820Table = 0x2d0
    }

    public static let size = 4096
    /// boot.rst: type_of_loader 0xFF means "undefined" loader, no version.
    static let undefinedLoader: UInt8 = 0xff

    public private(set) var bytes = [UInt8](repeating: 0, count: ZeroPage.size)

    /// - Parameters:
    ///   - header: the bzImage's setup header, copied in first (nil for ELF:
    ///     a minimal header is synthesized, as the 64-bit protocol allows).
    public init(
        header: SetupHeader?, commandLine: UInt64,
        initrd: (address: UInt64, size: UInt64)?, e820: [E820Entry], acpiRSDP: UInt64?
    ) throws {
        typealias H = SetupHeader.Offset
        if let header {
            replace(at: H.setupSectors, with: header.bytes)
        } else {
            put(SetupHeader.bootFlagValue, at: H.bootFlag)
            put(SetupHeader.magic, at: H.header)
            put(SetupHeader.minimumVersion, at: H.version)
        }
        bytes[H.typeOfLoader] = ZeroPage.undefinedLoader
        bytes[H.loadFlags] |= SetupHeader.canUseHeap | SetupHeader.loadedHigh
        // heap_end_ptr: offset from the real-mode segment, as other loaders set it.
        put(UInt16(0xfe00), at: H.heapEndPointer)
        put(UInt32(truncatingIfNeeded: commandLine), at: H.commandLinePointer)
        put(UInt32(truncatingIfNeeded: commandLine >> 32), at: Offset.extCommandLinePointer)
        if let initrd {
            put(UInt32(truncatingIfNeeded: initrd.address), at: H.ramdiskImage)
            put(UInt32(truncatingIfNeeded: initrd.size), at: H.ramdiskSize)
            put(UInt32(truncatingIfNeeded: initrd.address >> 32), at: Offset.extRamdiskImage)
            put(UInt32(truncatingIfNeeded: initrd.size >> 32), at: Offset.extRamdiskSize)
        }
        if let acpiRSDP { put(acpiRSDP, at: Offset.acpiRSDPAddress) }
        guard e820.count <= E820Entry.zeroPageCapacity else {
            throw KernelImageError.doesNotFit(
                "\(e820.count) e820 entries exceed the zero page's \(E820Entry.zeroPageCapacity)")
        }
        bytes[Offset.e820Entries] = UInt8(e820.count)
        for (index, entry) in e820.enumerated() {
            replace(at: Offset.e820Table + index * E820Entry.encodedSize, with: entry.encoded)
        }
    }

    private mutating func replace(at offset: Int, with source: [UInt8]) {
        bytes.replaceSubrange(offset..<offset + source.count, with: source)
    }

    private mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { replace(at: offset, with: Array($0)) }
    }
}
