import KilnBytes

/// The Linux x86 boot protocol's setup header (Documentation/arch/x86/boot.rst,
/// "The Real-Mode Kernel Header"), as found at offset 0x1f1 of a bzImage and
/// copied into boot_params at the same offset. Offsets below are absolute in
/// the file and in the zero page alike.
public struct SetupHeader: Equatable, Sendable {
    public enum Offset {
        public static let setupSectors = 0x1f1
        public static let bootFlag = 0x1fe
        public static let jump = 0x200
        public static let header = 0x202
        public static let version = 0x206
        public static let typeOfLoader = 0x210
        public static let loadFlags = 0x211
        public static let code32Start = 0x214
        public static let ramdiskImage = 0x218
        public static let ramdiskSize = 0x21c
        public static let heapEndPointer = 0x224
        public static let commandLinePointer = 0x228
        public static let initrdAddressMax = 0x22c
        public static let kernelAlignment = 0x230
        public static let relocatableKernel = 0x234
        public static let xloadFlags = 0x236
        public static let commandLineSize = 0x238
        public static let prefAddress = 0x258
        public static let initSize = 0x260
    }

    public static let magic: UInt32 = 0x5372_6448 // "HdrS"
    public static let bootFlagValue: UInt16 = 0xaa55
    /// xloadflags (2.12+) is needed for the 64-bit entry point.
    public static let minimumVersion: UInt16 = 0x020c
    static let loadedHigh: UInt8 = 0x01
    static let canUseHeap: UInt8 = 0x80
    static let kernel64: UInt16 = 0x0001

    /// The header bytes from 0x1f1 to its end (0x202 + the jump's offset byte).
    public let bytes: [UInt8]
    public let setupSectors: Int
    public let version: UInt16
    public let loadFlags: UInt8
    public let initrdAddressMax: UInt32
    public let kernelAlignment: UInt32
    public let relocatable: Bool
    public let xloadFlags: UInt16
    public let commandLineSize: UInt32
    public let prefAddress: UInt64
    public let initSize: UInt32

    /// Parses and checks the header of a bzImage; refuses images that are
    /// not bzImages, too old for the 64-bit entry, or truncated.
    public init(image: [UInt8]) throws {
        let reader = KernelImageReader(image)
        guard image.count >= 0x268 else {
            throw KernelImageError.truncated("bzImage of \(image.count) bytes has no complete setup header")
        }
        guard try reader.u16(Offset.bootFlag) == SetupHeader.bootFlagValue,
            try reader.u32(Offset.header) == SetupHeader.magic
        else { throw KernelImageError.notAKernel("no bzImage setup header (boot_flag 0xAA55 and \"HdrS\")") }
        version = try reader.u16(Offset.version)
        guard version >= SetupHeader.minimumVersion else {
            throw KernelImageError.unsupported(
                "boot protocol \(version >> 8).\(version & 0xff) is older than 2.12 (no 64-bit entry)")
        }
        let end = 0x202 + Int(try reader.u8(0x201))
        guard end > Offset.initSize + 4, end <= image.count else {
            throw KernelImageError.truncated("setup header ends at 0x\(String(end, radix: 16)), outside the image")
        }
        bytes = Array(image[Offset.setupSectors..<end])
        let sectors = Int(try reader.u8(Offset.setupSectors))
        setupSectors = sectors == 0 ? 4 : sectors // boot.rst: 0 means 4
        loadFlags = try reader.u8(Offset.loadFlags)
        initrdAddressMax = try reader.u32(Offset.initrdAddressMax)
        kernelAlignment = try reader.u32(Offset.kernelAlignment)
        relocatable = try reader.u8(Offset.relocatableKernel) != 0
        xloadFlags = try reader.u16(Offset.xloadFlags)
        commandLineSize = try reader.u32(Offset.commandLineSize)
        prefAddress = try reader.u64(Offset.prefAddress)
        initSize = try reader.u32(Offset.initSize)
        guard loadFlags & SetupHeader.loadedHigh != 0 else {
            throw KernelImageError.unsupported("zImage (not loaded high) is not supported")
        }
        guard xloadFlags & SetupHeader.kernel64 != 0 else {
            throw KernelImageError.unsupported("the kernel has no 64-bit entry point (XLF_KERNEL_64 clear)")
        }
        guard kernelAlignment != 0, kernelAlignment & (kernelAlignment - 1) == 0 else {
            throw KernelImageError.malformed(
                "kernel_alignment 0x\(String(kernelAlignment, radix: 16)) is not a power of two")
        }
    }

    /// File offset of the protected-mode kernel.
    public var protectedModeOffset: Int { (setupSectors + 1) * 512 }
}

/// Why a kernel image was refused. Raised before any vCPU runs.
public enum KernelImageError: Error, Equatable, CustomStringConvertible, Sendable {
    case notAKernel(String)
    case truncated(String)
    case malformed(String)
    case unsupported(String)
    case doesNotFit(String)

    public var description: String {
        switch self {
        case .notAKernel(let detail): return "not a kernel image: \(detail)"
        case .truncated(let detail): return "truncated kernel image: \(detail)"
        case .malformed(let detail): return "malformed kernel image: \(detail)"
        case .unsupported(let detail): return "unsupported kernel image: \(detail)"
        case .doesNotFit(let detail): return "kernel does not fit in guest memory: \(detail)"
        }
    }
}

/// Little-endian reads from a kernel image (KilnBytes' bounds-checked
/// decoding), reporting a short image as truncated instead of trapping.
struct KernelImageReader {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    func integer<T: FixedWidthInteger>(_ offset: Int, as type: T.Type) throws -> T {
        guard let value = bytes.littleEndian(T.self, at: offset) else {
            let size = MemoryLayout<T>.size
            throw KernelImageError.truncated(
                "read of \(size) bytes at offset \(offset) past the end (\(bytes.count) bytes)")
        }
        return value
    }

    func u8(_ offset: Int) throws -> UInt8 { try integer(offset, as: UInt8.self) }
    func u16(_ offset: Int) throws -> UInt16 { try integer(offset, as: UInt16.self) }
    func u32(_ offset: Int) throws -> UInt32 { try integer(offset, as: UInt32.self) }
    func u64(_ offset: Int) throws -> UInt64 { try integer(offset, as: UInt64.self) }
}
