import KilnMemory

/// Where and how the boot vCPU enters a loaded kernel.
public struct LoadedKernel: Equatable, Sendable {
    /// The 64-bit entry point, entered in long mode with rsi at the zero page.
    public let entry: UInt64
    /// bzImage only: the setup header to copy into boot_params.
    public let setupHeader: SetupHeader?
    /// First byte after everything the kernel occupies (init_size included).
    public let end: UInt64
    /// The largest command line the kernel accepts, NUL excluded.
    public let commandLineLimit: Int
    /// The highest address the initrd may end at (exclusive).
    public let initrdLimit: UInt64
    /// The 32-bit PVH entry an ELF kernel advertises; preferred when present.
    public let pvhEntry: UInt64?
}

/// Loads a kernel image into guest memory, checking every segment against
/// the RAM below the MMIO hole before writing a byte.
public enum KernelLoader {
    /// Linux's x86 COMMAND_LINE_SIZE when the image does not say.
    static let defaultCommandLineLimit = 2047
    /// bzImage: the 64-bit entry is 0x200 past the protected-mode kernel's
    /// load address (boot.rst, "64-bit Boot Protocol").
    static let entry64Offset: UInt64 = 0x200

    public static func load(_ image: [UInt8], into memory: GuestMemory, lowMemoryEnd: UInt64) throws -> LoadedKernel {
        if ELFImage.isELF(image) {
            return try loadELF(try ELFImage(image: image), image: image, into: memory, lowMemoryEnd: lowMemoryEnd)
        }
        return try loadBzImage(try SetupHeader(image: image), image: image, into: memory, lowMemoryEnd: lowMemoryEnd)
    }

    static func loadELF(_ elf: ELFImage, image: [UInt8], into memory: GuestMemory, lowMemoryEnd: UInt64) throws
        -> LoadedKernel
    {
        var end: UInt64 = 0
        for (index, segment) in elf.segments.enumerated() {
            let segmentEnd = segment.physicalAddress + segment.memorySize
            guard segment.physicalAddress >= X86Layout.highMemory, segmentEnd <= lowMemoryEnd else {
                throw KernelImageError.doesNotFit(
                    "segment \(index) at 0x\(String(segment.physicalAddress, radix: 16)) + 0x\(String(segment.memorySize, radix: 16)) "
                        + "is outside RAM 0x100000..0x\(String(lowMemoryEnd, radix: 16))")
            }
            end = max(end, segmentEnd)
        }
        for (name, address) in [("entry", elf.entry), ("PVH entry", elf.pvhEntry)] {
            guard let address else { continue }
            guard
                elf.segments.contains(where: {
                    address >= $0.physicalAddress && address < $0.physicalAddress + $0.memorySize
                })
            else {
                throw KernelImageError.malformed("\(name) 0x\(String(address, radix: 16)) is in no PT_LOAD segment")
            }
        }
        for segment in elf.segments {
            try memory.write(
                image[segment.fileOffset..<segment.fileOffset + segment.fileSize], at: segment.physicalAddress)
            let bss = Int(segment.memorySize) - segment.fileSize
            if bss > 0 { try memory.fill(0, at: segment.physicalAddress + UInt64(segment.fileSize), count: bss) }
        }
        return LoadedKernel(
            entry: elf.entry, setupHeader: nil, end: end, commandLineLimit: defaultCommandLineLimit,
            initrdLimit: lowMemoryEnd, pvhEntry: elf.pvhEntry)
    }

    static func loadBzImage(_ header: SetupHeader, image: [UInt8], into memory: GuestMemory, lowMemoryEnd: UInt64)
        throws -> LoadedKernel
    {
        let offset = header.protectedModeOffset
        guard offset < image.count else {
            throw KernelImageError.truncated("setup_sects \(header.setupSectors) points past the end of the image")
        }
        let payload = image[offset...]
        // A relocatable kernel goes to pref_address (2.10+), which must be
        // kernel_alignment aligned; others to 1 MiB.
        let alignment = UInt64(header.kernelAlignment)
        var address = X86Layout.highMemory
        if header.relocatable, header.prefAddress >= X86Layout.highMemory, header.prefAddress % alignment == 0 {
            address = header.prefAddress
        }
        let footprint = max(UInt64(payload.count), UInt64(header.initSize))
        // pref_address is the image's word: the sum may wrap (found by fuzz-kernel-image).
        let (end, wrapped) = address.addingReportingOverflow(footprint)
        guard !wrapped, end <= lowMemoryEnd else {
            throw KernelImageError.doesNotFit(
                "needs 0x\(String(address, radix: 16)) + \(footprint >> 20) MiB (init_size), RAM ends at \(lowMemoryEnd >> 20) MiB"
            )
        }
        try memory.write(payload, at: address)
        let commandLineLimit =
            header.version >= 0x0206 && header.commandLineSize > 0
            ? Int(min(header.commandLineSize, UInt32(X86Layout.commandLineLimit - 1)))
            : 255
        // initrd_addr_max is the highest byte the initrd may occupy.
        let initrdLimit = min(UInt64(header.initrdAddressMax) + 1, lowMemoryEnd)
        return LoadedKernel(
            entry: address + entry64Offset, setupHeader: header, end: end,
            commandLineLimit: commandLineLimit, initrdLimit: initrdLimit, pvhEntry: nil)
    }

    /// Places the initrd as high as allowed, page aligned, above the kernel
    /// (boot.rst: "as high as possible" below initrd_addr_max).
    public static func placeInitrd(size: Int, kernel: LoadedKernel) throws -> UInt64 {
        let length = UInt64(size)
        guard length > 0 else { throw InitrdPlacementError.empty }
        guard length <= kernel.initrdLimit else {
            throw InitrdPlacementError.tooLarge(bytes: size, limit: kernel.initrdLimit)
        }
        let address = (kernel.initrdLimit - length) & ~(X86Layout.pageSize - 1)
        let floor = (kernel.end + X86Layout.pageSize - 1) & ~(X86Layout.pageSize - 1)
        guard address >= floor else {
            throw InitrdPlacementError.belowKernelEnd(bytes: size, kernelEnd: kernel.end, limit: kernel.initrdLimit)
        }
        return address
    }
}

/// Why an initrd cannot be placed in guest memory.
public enum InitrdPlacementError: Error, Equatable, CustomStringConvertible, Sendable {
    case empty
    /// Larger than the space below the kernel's and RAM's limit.
    case tooLarge(bytes: Int, limit: UInt64)
    /// Placed as high as allowed, it would still overlap the kernel.
    case belowKernelEnd(bytes: Int, kernelEnd: UInt64, limit: UInt64)

    public var description: String {
        switch self {
        case .empty: "it is empty"
        case .tooLarge(let bytes, let limit): "\(bytes) bytes exceed the \(limit >> 20) MiB the kernel and RAM allow"
        case .belowKernelEnd(let bytes, let kernelEnd, let limit):
            "\(bytes >> 10) KiB do not fit between the kernel end (0x\(String(kernelEnd, radix: 16))) "
                + "and 0x\(String(limit, radix: 16))"
        }
    }
}
