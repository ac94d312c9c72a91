/// The ACPI tables of one platform, laid out in guest-physical memory: the
/// RSDP at its own address, and the DSDT, FADT, MADT and XSDT one after
/// another from `tablesAddress`. Pure: the VMM copies each blob into guest
/// memory and, if it likes, puts `rsdpAddress` in boot_params.acpi_rsdp_addr.
public struct ACPITables: Equatable, Sendable {
    public struct Blob: Equatable, Sendable {
        /// The table's signature ("RSD PTR " for the RSDP), for logs and tests.
        public let signature: String
        public let address: UInt64
        public let bytes: [UInt8]
    }

    public let rsdpAddress: UInt64
    /// In address order after the RSDP: RSDP, DSDT, FADT, MADT, XSDT.
    public let blobs: [Blob]

    /// Tables start on 8-byte boundaries. ACPI asks no alignment of them (only
    /// of the FACS, which a hardware-reduced platform may omit); this keeps
    /// every 64-bit field naturally aligned.
    static let tableAlignment: UInt64 = 8

    public init(platform: ACPIPlatform) throws {
        try platform.validate()

        var blobs: [Blob] = []
        var next = platform.tablesAddress
        func place(_ signature: String, _ bytes: [UInt8]) -> UInt64 {
            let address = next
            blobs.append(Blob(signature: signature, address: address, bytes: bytes))
            // Validation bounded the whole region, so this cannot overflow.
            next = (address + UInt64(bytes.count) + Self.tableAlignment - 1) & ~(Self.tableAlignment - 1)
            return address
        }

        let dsdt = place("DSDT", differentiatedSystemDescriptionTable(platform: platform))
        let fadt = place("FACP", fixedACPIDescriptionTable(platform: platform, dsdtAddress: dsdt))
        let madt = place("APIC", multipleAPICDescriptionTable(platform: platform))
        let xsdt = place("XSDT", extendedSystemDescriptionTable(entries: [fadt, madt]))

        let tablesEnd = next
        let rsdpEnd = platform.rsdpAddress + UInt64(RSDPLayout.size)
        if platform.rsdpAddress < tablesEnd && platform.tablesAddress < rsdpEnd {
            throw ACPIError.rsdpOverlapsTables(rsdp: platform.rsdpAddress, tables: platform.tablesAddress..<tablesEnd)
        }
        let rsdp = Blob(
            signature: "RSD PTR ", address: platform.rsdpAddress,
            bytes: rootSystemDescriptionPointer(xsdtAddress: xsdt))
        self.rsdpAddress = platform.rsdpAddress
        self.blobs = [rsdp] + blobs
    }
}

/// What the tables cannot express about a platform. `owner` names a user
/// of interrupt lines or address space ("virtio-mmio device 1", "the IOAPIC").
public enum ACPIError: Error, Equatable, CustomStringConvertible, Sendable {
    case vcpuCount(Int, maximum: Int)
    case ioapicPinCount(Int)
    case ioapicAddress(UInt32)
    case tooManyVirtioDevices(Int, maximum: Int)
    case rsdpMisaligned(UInt64)
    case tablesAboveTop
    case rsdpOverlapsTables(rsdp: UInt64, tables: Range<UInt64>)
    case gsiOutsideIOAPIC(owner: String, gsi: UInt32, pinCount: Int)
    case gsiShared(owner: String, other: String, gsi: UInt32)
    case serialIRQNotISA(UInt8)
    case windowEmptyOrWrapping(owner: String, base: UInt64, size: UInt64)
    case windowOverlaps(owner: String, window: Range<UInt64>, other: String)
    /// `role` is "sleep control" or "sleep status".
    case registerAbsent(role: String)
    case registerPortAbove64K(role: String, address: UInt64)

    public var description: String {
        switch self {
        case .vcpuCount(let count, let maximum): "vCPU count \(count) is outside 1...\(maximum)"
        case .ioapicPinCount(let count): "IOAPIC pin count \(count) is outside 1...256"
        case .ioapicAddress(let address): "IOAPIC address \(hex(address)) is not a non-zero 1 KiB-aligned address"
        case .tooManyVirtioDevices(let count, let maximum):
            "\(count) virtio-mmio devices exceed the maximum of \(maximum)"
        case .rsdpMisaligned(let address): "RSDP address \(hex(address)) is not 16-byte aligned"
        case .tablesAboveTop: "the ACPI tables do not fit below the top of the address space"
        case .rsdpOverlapsTables(let rsdp, let tables):
            "the RSDP at \(hex(rsdp)) overlaps the tables at \(hex(tables.lowerBound))..<\(hex(tables.upperBound))"
        case .gsiOutsideIOAPIC(let owner, let gsi, let pinCount):
            "\(owner) uses GSI \(gsi), but the IOAPIC has GSIs 0..<\(pinCount)"
        case .gsiShared(let owner, let other, let gsi): "\(owner) and \(other) both use GSI \(gsi)"
        case .serialIRQNotISA(let irq): "serial port IRQ \(irq) is not an ISA IRQ (0-15)"
        case .windowEmptyOrWrapping(let owner, let base, let size):
            "\(owner) has an empty or wrapping window \(hex(base)) + \(hex(size))"
        case .windowOverlaps(let owner, let window, let other):
            "\(owner) window \(hex(window.lowerBound))..<\(hex(window.upperBound)) overlaps \(other)"
        case .registerAbsent(let role): "the \(role) register address is 0, which ACPI reads as \"not present\""
        case .registerPortAbove64K(let role, let address): "the \(role) register port \(hex(address)) is above 0xffff"
        }
    }
}

func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

extension ACPIPlatform {
    /// Generous bound on the tables' total size, used to reject a
    /// `tablesAddress` so high that the tables would wrap around.
    var tablesSizeBound: UInt64 {
        UInt64(4096 + 16 * vcpuCount + 128 * virtioDevices.count)
    }

    /// Checks everything the tables encode against what ACPI and the guest
    /// can represent, so that building them cannot trap or emit nonsense.
    func validate() throws {
        guard (1...Self.maximumVCPUCount).contains(vcpuCount) else {
            throw ACPIError.vcpuCount(vcpuCount, maximum: Self.maximumVCPUCount)
        }
        // The IOAPIC's maximum redirection entry is an 8-bit field.
        guard (1...256).contains(ioapic.pinCount) else {
            throw ACPIError.ioapicPinCount(ioapic.pinCount)
        }
        guard ioapic.address != 0, ioapic.address % 0x400 == 0 else {
            throw ACPIError.ioapicAddress(ioapic.address)
        }
        guard virtioDevices.count <= Self.maximumVirtioDeviceCount else {
            throw ACPIError.tooManyVirtioDevices(virtioDevices.count, maximum: Self.maximumVirtioDeviceCount)
        }
        guard rsdpAddress % 16 == 0 else {
            throw ACPIError.rsdpMisaligned(rsdpAddress)
        }
        guard rsdpAddress <= UInt64.max - UInt64(RSDPLayout.size),
            tablesAddress <= UInt64.max - tablesSizeBound
        else {
            throw ACPIError.tablesAboveTop
        }

        // Interrupt lines: each has one owner (the virtio devices are declared
        // exclusive), and all are IOAPIC inputs.
        var owners: [UInt32: String] = [:]
        func claim(_ gsi: UInt32, _ owner: String) throws {
            guard gsi < UInt32(ioapic.pinCount) else {
                throw ACPIError.gsiOutsideIOAPIC(owner: owner, gsi: gsi, pinCount: ioapic.pinCount)
            }
            if let other = owners[gsi] { throw ACPIError.gsiShared(owner: owner, other: other, gsi: gsi) }
            owners[gsi] = owner
        }
        if legacy.pit { try claim(2, "the PIT (ISA IRQ 0)") }
        if let serial {
            guard serial.irq < 16 else { throw ACPIError.serialIRQNotISA(serial.irq) }
            try claim(UInt32(serial.irq), "the serial port")
        }

        // The interrupt controllers' register pages are no place for a device.
        var windows: [(range: Range<UInt64>, name: String)] = [
            (UInt64(ioapic.address)..<(UInt64(ioapic.address) + 0x1000), "the IOAPIC"),
            (UInt64(MADTLayout.localAPICAddress)..<(UInt64(MADTLayout.localAPICAddress) + 0x1000), "the local APIC"),
        ]
        for (index, device) in virtioDevices.enumerated() {
            let name = "virtio-mmio device \(index)"
            guard device.size > 0, device.base <= UInt64.max - device.size else {
                throw ACPIError.windowEmptyOrWrapping(owner: name, base: device.base, size: device.size)
            }
            let range = device.base..<(device.base + device.size)
            if let other = windows.first(where: { $0.range.overlaps(range) }) {
                throw ACPIError.windowOverlaps(owner: name, window: range, other: other.name)
            }
            windows.append((range, name))
            try claim(device.gsi, name)
        }

        for (register, role) in [(sleepControlRegister, "sleep control"), (sleepStatusRegister, "sleep status")] {
            guard register.address != 0 else {
                throw ACPIError.registerAbsent(role: role)
            }
            if register.space == .systemIO && register.address > 0xFFFF {
                throw ACPIError.registerPortAbove64K(role: role, address: register.address)
            }
        }
    }
}
