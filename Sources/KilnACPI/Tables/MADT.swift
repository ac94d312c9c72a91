import KilnBytes

/// Multiple APIC Description Table (ACPI 6.4 §5.2.12): the local APIC of
/// every vCPU, the IOAPIC, the PC's interrupt source overrides and the LINT1
/// NMI. Linux with CONFIG_X86_MPPARSE off learns its CPUs only from here.
func multipleAPICDescriptionTable(platform: ACPIPlatform) -> [UInt8] {
    var body: [UInt8] = []
    body.appendLittleEndian(MADTLayout.localAPICAddress)
    body.appendLittleEndian(platform.legacy.pic ? MADTLayout.pcatCompatible : 0)

    // Processor Local APIC (§5.2.12.2, Table 5.23): type 0, length 8,
    // processor UID, APIC id, flags (bit 0 enabled).
    for index in 0..<platform.vcpuCount {
        body += [MADTLayout.localAPICType, 8, UInt8(index), UInt8(index)]
        body.appendLittleEndian(UInt32(1))
    }

    // I/O APIC (§5.2.12.3, Table 5.25): type 1, length 12, id, reserved,
    // address, GSI base.
    body += [MADTLayout.ioAPICType, 12, platform.ioapic.id, 0]
    body.appendLittleEndian(platform.ioapic.address)
    body.appendLittleEndian(UInt32(0))

    // Interrupt Source Override (§5.2.12.5, Table 5.26): type 2, length 10,
    // bus 0 (ISA), source IRQ, GSI, MPS INTI flags. As on every PC the PIT's
    // IRQ 0 arrives on IOAPIC pin 2; flags 0 = bus-conforming (edge, high).
    if platform.legacy.pit {
        body += [MADTLayout.interruptSourceOverrideType, 10, 0, 0]
        body.appendLittleEndian(UInt32(2))
        body.appendLittleEndian(UInt16(0))
    }

    // Local APIC NMI (§5.2.12.7, Table 5.30): type 4, length 6, processor UID
    // 0xFF = all processors, flags 0 = conforming, LINT1.
    body += [MADTLayout.localAPICNMIType, 6, 0xFF]
    body.appendLittleEndian(UInt16(0))
    body.append(1)

    return systemDescriptionTable(signature: "APIC", revision: MADTLayout.revision, body: body)
}

enum MADTLayout {
    /// ACPI 6.4 MADT revision.
    static let revision: UInt8 = 5
    static let localAPICAddress: UInt32 = 0xFEE0_0000
    /// Flags bit 0: the system also has dual 8259s (Table 5.20).
    static let pcatCompatible: UInt32 = 1
    static let localAPICType: UInt8 = 0
    static let ioAPICType: UInt8 = 1
    static let interruptSourceOverrideType: UInt8 = 2
    static let localAPICNMIType: UInt8 = 4
    /// Offset of the first interrupt controller structure (Table 5.19).
    static let firstEntryOffset = 44
}
