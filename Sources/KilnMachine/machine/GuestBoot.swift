import KilnMemory
import KilnSystem

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

/// Why the boot inputs were refused, before any vCPU runs: the boot source,
/// the files it names, the devices' host side and the firmware tables.
public enum BootInputError: Error, Equatable, CustomStringConvertible, Sendable {
    case noBootSource
    /// `image` is "kernel" or "initrd".
    case imagePathContainsNUL(image: String)
    case imageNotRegularFile(image: String, path: String, fileType: String)
    case imageTooLarge(image: String, path: String, bytes: Int, limit: String)
    case kernelImage(path: String, KernelImageError)
    case initrdPlacement(path: String, InitrdPlacementError)
    case commandLineContainsNUL
    case commandLineTooLong(bytes: Int, limit: Int)
    case pvhMemoryMapTooLarge
    case firmwareTableOutsideWindow(address: UInt64, bytes: Int)
    case rsdpOutsideWindow(address: UInt64)
    case platformNotDescribable
    case sleepTypeMismatch(UInt8)
    case tooManyDevices(configured: Int, capacity: Int)
    case drivePathMissing(driveID: String)
    case driveNotFileOrBlockDevice(driveID: String, path: String)
    case driveUnopenable(driveID: String, path: String, SystemError)
    case driveSmallerThanSector(driveID: String, path: String)
    case driveVhostUser(driveID: String)
    /// ENODEV from TUNSETIFF: the orchestrator has not made the TAP.
    case tapMissing(name: String)
    case tapUnavailable(name: String, SystemError)
    case vsockPathTaken(path: String)
    case vsockListen(path: String, SystemError)

    public var description: String {
        switch self {
        case .noBootSource: "no boot source: set boot-source.kernel_image_path"
        case .imagePathContainsNUL(let image): "\(image) path contains a NUL byte"
        case .imageNotRegularFile(let image, let path, let fileType):
            "\(image) \(path): \(fileType), not a regular file; not read"
        case .imageTooLarge(let image, let path, let bytes, let limit):
            "\(image) \(path): \(bytes) bytes (\(bytes >> 20) MiB), larger than \(limit); not read"
        case .kernelImage(let path, let error): "kernel \(path): \(error)"
        case .initrdPlacement(let path, let error): "initrd \(path): \(error)"
        case .commandLineContainsNUL: "the kernel command line contains a NUL byte"
        case .commandLineTooLong(let bytes, let limit):
            "the kernel command line is \(bytes) bytes; this kernel accepts at most \(limit)"
        case .pvhMemoryMapTooLarge: "the PVH memory map has too many entries"
        case .firmwareTableOutsideWindow(let address, let bytes):
            "firmware table at 0x\(String(address, radix: 16)) (\(bytes) bytes) is outside the ACPI window"
        case .rsdpOutsideWindow(let address):
            "the RSDP address 0x\(String(address, radix: 16)) is outside the ACPI window"
        case .platformNotDescribable: "the platform's IOAPIC or serial port cannot be described to KilnACPI"
        case .sleepTypeMismatch(let type): "the sleep control device's S5 type \(type) differs from the DSDT's"
        case .tooManyDevices(let configured, let capacity):
            "\(configured) virtio devices configured; kiln has interrupt lines for \(capacity)"
        case .drivePathMissing(let driveID): "drive \(driveID): path_on_host is required"
        case .driveNotFileOrBlockDevice(let driveID, let path):
            "drive \(driveID): \(path) is not a regular file or block device"
        case .driveUnopenable(let driveID, let path, let error):
            "drive \(driveID): \(error.subject == path ? "" : "\(path): ")\(error)"
        case .driveSmallerThanSector(let driveID, let path):
            "drive \(driveID): \(path) is smaller than one 512-byte sector"
        case .driveVhostUser(let driveID): "drive \(driveID): vhost-user block devices (socket) are not supported"
        case .tapMissing(let name):
            "network interface: cannot open TAP \(name): no such persistent TAP in kiln's network namespace "
                + "(the orchestrator makes it: ip tuntap add \(name) mode tap)"
        case .tapUnavailable(let name, let error): "network interface: cannot open TAP \(name): \(error)"
        case .vsockPathTaken(let path):
            "vsock: uds_path \(path): a file already exists there (another VMM's socket, or a stale one to remove)"
        case .vsockListen(let path, let error): "vsock: cannot listen on uds_path \(path): \(error)"
        }
    }
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
        guard !commandLineBytes.contains(0) else { throw BootInputError.commandLineContainsNUL }

        let kernel = try KernelLoader.load(kernelImage, into: memory, lowMemoryEnd: lowEnd)
        guard commandLineBytes.count <= kernel.commandLineLimit else {
            throw BootInputError.commandLineTooLong(bytes: commandLineBytes.count, limit: kernel.commandLineLimit)
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
            let startInfo = PVHStartInfo(
                address: X86Layout.pvhStartInfo, commandLine: X86Layout.commandLine,
                initrd: initrdPlacement, e820: e820, acpiRSDP: rsdp)
            guard startInfo.bytes.count <= Int(X86Layout.zeroPage - X86Layout.pvhStartInfo) else {
                throw BootInputError.pvhMemoryMapTooLarge
            }
            try memory.write(startInfo.bytes, at: X86Layout.pvhStartInfo)
            try BootGDT.write(into: memory, mode: .pvh32)
            return BootPlan(
                entry: pvhEntry, mode: .pvh32, bootInfo: X86Layout.pvhStartInfo, kernel: kernel,
                initrd: initrdPlacement, rsdpAddress: rsdp)
        }
        let zeroPage = try ZeroPage(
            header: kernel.setupHeader, commandLine: X86Layout.commandLine, initrd: initrdPlacement,
            e820: e820, acpiRSDP: rsdp)
        try memory.write(zeroPage.bytes, at: X86Layout.zeroPage)
        try IdentityPageTables.write(into: memory)
        try BootGDT.write(into: memory)
        return BootPlan(
            entry: kernel.entry, mode: .long64, bootInfo: X86Layout.zeroPage, kernel: kernel,
            initrd: initrdPlacement, rsdpAddress: rsdp)
    }

    // MARK: - ACPI tables: the one place the machine writes them.
    //
    // KilnACPI builds RSDP/XSDT/FADT/MADT/DSDT from the platform description;
    // the machine only checks that each blob lies in the reserved window and
    // copies it in. Without a builder the guest boots without ACPI (the test
    // guest, or `acpi=off` kernels).
    static func writeFirmwareTables(
        into memory: GuestMemory, platform: PlatformDescription,
        builder: FirmwareTableBuilder?
    ) throws -> UInt64? {
        guard let builder else { return nil }
        let tables = try builder(platform)
        for blob in tables.blobs {
            let (end, overflow) = blob.address.addingReportingOverflow(UInt64(blob.bytes.count))
            guard !overflow, blob.address >= platform.tableWindow.lowerBound, end <= platform.tableWindow.upperBound
            else {
                throw BootInputError.firmwareTableOutsideWindow(address: blob.address, bytes: blob.bytes.count)
            }
            try memory.write(blob.bytes, at: blob.address)
        }
        guard platform.tableWindow.contains(tables.rsdpAddress) else {
            throw BootInputError.rsdpOutsideWindow(address: tables.rsdpAddress)
        }
        return tables.rsdpAddress
    }
}
