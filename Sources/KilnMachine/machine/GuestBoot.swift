import KilnMemory

/// What the boot vCPU needs after the guest image is in memory.
public struct BootPlan: Equatable, Sendable {
    public let entry: UInt64
    public let mode: EntryMode
    /// The zero page (64-bit entry) or hvm_start_info (PVH): %rsi or %ebx.
    public let bootInfo: UInt64
    public let kernel: LoadedKernel
    public let initrd: (address: UInt64, size: UInt64)?
    public let rsdpAddress: UInt64?

    public static func == (lhs: BootPlan, rhs: BootPlan) -> Bool {
        lhs.entry == rhs.entry && lhs.mode == rhs.mode && lhs.bootInfo == rhs.bootInfo && lhs.kernel == rhs.kernel
            && lhs.initrd?.address == rhs.initrd?.address && lhs.initrd?.size == rhs.initrd?.size
            && lhs.rsdpAddress == rhs.rsdpAddress
    }
}

/// Why the boot inputs were refused (besides kernel image errors).
public struct BootInputError: Error, Equatable, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Puts a guest's boot image into memory: kernel, initrd, command line,
/// firmware tables, zero page, page tables and GDT. Needs no KVM, so every
/// bad input is refused before a VM exists, and tests run it on heap memory.
public enum GuestBoot {
    public static func prepare(
        memory: GuestMemory, kernelImage: [UInt8], initrd: [UInt8]?, commandLine: String,
        platform: PlatformDescription, firmware: FirmwareTableBuilder?
    ) throws -> BootPlan {
        let ram = memory.regions.map { GuestRange(address: $0.guestAddress, size: $0.size) }
        let lowEnd = X86Layout.lowMemoryEnd(ram: ram)

        // Check the command line against the kernel's own limit first: it
        // costs nothing and must not leave a half-loaded guest.
        let commandLineBytes = Array(commandLine.utf8)
        guard !commandLineBytes.contains(0) else { throw BootInputError("the kernel command line contains a NUL byte") }

        let kernel = try KernelLoader.load(kernelImage, into: memory, lowMemoryEnd: lowEnd)
        guard commandLineBytes.count <= kernel.commandLineLimit else {
            throw BootInputError("the kernel command line is \(commandLineBytes.count) bytes; this kernel accepts at most \(kernel.commandLineLimit)")
        }
        try memory.write(commandLineBytes + [0], at: X86Layout.commandLine)

        var initrdPlacement: (address: UInt64, size: UInt64)?
        if let initrd {
            let address = try KernelLoader.placeInitrd(size: initrd.count, kernel: kernel)
            try memory.write(initrd, at: address)
            initrdPlacement = (address, UInt64(initrd.count))
        }

        let rsdp = try writeFirmwareTables(into: memory, platform: platform, builder: firmware)

        let e820 = X86Layout.e820Map(ram: ram)
        // An ELF kernel with a PVH note is entered there (Linux's own
        // preference as a guest); every other image through the 64-bit protocol.
        if let pvhEntry = kernel.pvhEntry {
            let startInfo = PVHStartInfo(address: X86Layout.pvhStartInfo, commandLine: X86Layout.commandLine,
                                         initrd: initrdPlacement, e820: e820, acpiRSDP: rsdp)
            guard startInfo.bytes.count <= Int(X86Layout.zeroPage - X86Layout.pvhStartInfo) else {
                throw BootInputError("the PVH memory map has too many entries")
            }
            try memory.write(startInfo.bytes, at: X86Layout.pvhStartInfo)
            try BootGDT.write(into: memory, mode: .pvh32)
            return BootPlan(entry: pvhEntry, mode: .pvh32, bootInfo: X86Layout.pvhStartInfo, kernel: kernel,
                            initrd: initrdPlacement, rsdpAddress: rsdp)
        }
        let zeroPage = try ZeroPage(
            header: kernel.setupHeader, commandLine: X86Layout.commandLine, initrd: initrdPlacement,
            e820: e820, acpiRSDP: rsdp)
        try memory.write(zeroPage.bytes, at: X86Layout.zeroPage)
        try IdentityPageTables.write(into: memory)
        try BootGDT.write(into: memory)
        return BootPlan(entry: kernel.entry, mode: .long64, bootInfo: X86Layout.zeroPage, kernel: kernel,
                        initrd: initrdPlacement, rsdpAddress: rsdp)
    }

    // MARK: - ACPI tables: the one place the machine writes them.
    //
    // KilnACPI builds RSDP/XSDT/FADT/MADT/DSDT from the platform description;
    // the machine only checks that each blob lies in the reserved window and
    // copies it in. Without a builder the guest boots without ACPI (the test
    // guest, or `acpi=off` kernels).
    static func writeFirmwareTables(into memory: GuestMemory, platform: PlatformDescription,
                                    builder: FirmwareTableBuilder?) throws -> UInt64? {
        guard let builder else { return nil }
        let tables = try builder(platform)
        for blob in tables.blobs {
            let (end, overflow) = blob.address.addingReportingOverflow(UInt64(blob.bytes.count))
            guard !overflow, blob.address >= platform.tableWindow.lowerBound, end <= platform.tableWindow.upperBound else {
                throw BootInputError("firmware table at 0x\(String(blob.address, radix: 16)) (\(blob.bytes.count) bytes) is outside the ACPI window")
            }
            try memory.write(blob.bytes, at: blob.address)
        }
        guard platform.tableWindow.contains(tables.rsdpAddress) else {
            throw BootInputError("the RSDP address 0x\(String(tables.rsdpAddress, radix: 16)) is outside the ACPI window")
        }
        return tables.rsdpAddress
    }
}
