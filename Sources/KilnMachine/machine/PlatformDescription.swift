/// What the firmware tables must describe, handed to the ACPI builder
/// (module KilnACPI) at the one place the machine writes tables: see
/// `GuestBoot.writeFirmwareTables`. Addresses are guest-physical.
public struct PlatformDescription: Equatable, Sendable {
    public struct VirtioMMIOPlacement: Equatable, Sendable {
        public let base: UInt64
        public let size: UInt64
        public let gsi: UInt32
        public init(base: UInt64, size: UInt64, gsi: UInt32) {
            self.base = base
            self.size = size
            self.gsi = gsi
        }
    }

    public let vcpuCount: Int
    public let lapicAddress: UInt64
    public let ioapicAddress: UInt64
    /// The IOAPIC's first GSI; ISA IRQs 0-15 map 1:1 except IRQ0 -> GSI 2.
    public let ioapicGSIBase: UInt32
    public let serial: (port: UInt16, gsi: UInt32)
    public let virtioDevices: [VirtioMMIOPlacement]
    /// The hardware-reduced sleep control register (FADT SLEEP_CONTROL_REG,
    /// an I/O port, one byte) and the SLP_TYP value that means S5.
    public let sleepControlPort: UInt16
    /// The sleep status register (WAK_STS reads clear), the next port.
    public let sleepStatusPort: UInt16
    public let s5SleepType: UInt8
    /// Where the tables must go; reserved in e820.
    public let tableWindow: Range<UInt64>

    public static func == (lhs: PlatformDescription, rhs: PlatformDescription) -> Bool {
        lhs.vcpuCount == rhs.vcpuCount && lhs.lapicAddress == rhs.lapicAddress && lhs.ioapicAddress == rhs.ioapicAddress
            && lhs.ioapicGSIBase == rhs.ioapicGSIBase && lhs.serial == rhs.serial
            && lhs.virtioDevices == rhs.virtioDevices && lhs.sleepControlPort == rhs.sleepControlPort
            && lhs.sleepStatusPort == rhs.sleepStatusPort
            && lhs.s5SleepType == rhs.s5SleepType && lhs.tableWindow == rhs.tableWindow
    }

    public init(vcpuCount: Int, virtioDevices: [VirtioMMIOPlacement] = []) {
        self.vcpuCount = vcpuCount
        lapicAddress = X86Layout.lapic
        ioapicAddress = X86Layout.ioapic
        ioapicGSIBase = 0
        serial = (X86Layout.serialPort, X86Layout.serialIRQ)
        self.virtioDevices = virtioDevices
        sleepControlPort = X86Layout.sleepControlPort
        sleepStatusPort = X86Layout.sleepControlPort + 1
        s5SleepType = SleepControlDevice.s5SleepType
        tableWindow = X86Layout.acpiTables
    }
}

/// Bytes to place in guest memory at an address (an ACPI table, the RSDP).
public struct FirmwareBlob: Equatable, Sendable {
    public let address: UInt64
    public let bytes: [UInt8]
    public init(address: UInt64, bytes: [UInt8]) {
        self.address = address
        self.bytes = bytes
    }
}

/// Firmware tables for a platform: the blobs and the RSDP's address, which
/// goes into boot_params.acpi_rsdp_addr.
public struct FirmwareTables: Equatable, Sendable {
    public let blobs: [FirmwareBlob]
    public let rsdpAddress: UInt64
    public init(blobs: [FirmwareBlob], rsdpAddress: UInt64) {
        self.blobs = blobs
        self.rsdpAddress = rsdpAddress
    }
}

/// The seam for KilnACPI: a pure builder from a platform to its tables.
public typealias FirmwareTableBuilder = (PlatformDescription) throws -> FirmwareTables
