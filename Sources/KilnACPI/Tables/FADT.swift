import KilnBytes

/// Fixed ACPI Description Table for a hardware-reduced platform (ACPI 6.4
/// §5.2.9, Table 5.9; hardware-reduced ACPI is §4.1): no PM1/GPE blocks, no
/// SCI, no FACS. Power management is the sleep control and status registers,
/// which the VMM implements, so `\_S5` works.
func fixedACPIDescriptionTable(platform: ACPIPlatform, dsdtAddress: UInt64) -> [UInt8] {
    // The table body as offsets from the start of the table, so the code reads
    // against the spec's offset column; the header occupies 0..<36.
    var table = [UInt8](repeating: 0, count: FADTLayout.size)
    // FIRMWARE_CTRL (36) and DSDT (40) stay 0: no FACS, and X_DSDT supersedes DSDT.
    // Preferred_PM_Profile (45) 0 = unspecified; SCI_INT (46) unused when hardware-reduced.
    table.storeLittleEndian(FADTLayout.bootArchitectureFlags(platform.legacy), at: FADTLayout.iapcBootArchOffset)
    table.storeLittleEndian(FADTLayout.hardwareReducedACPI, at: FADTLayout.flagsOffset)
    table[FADTLayout.minorVersionOffset] = FADTLayout.minorVersion
    table.storeLittleEndian(dsdtAddress, at: FADTLayout.xDSDTOffset)
    store(platform.sleepControlRegister, in: &table, at: FADTLayout.sleepControlOffset)
    store(platform.sleepStatusRegister, in: &table, at: FADTLayout.sleepStatusOffset)
    return systemDescriptionTable(
        signature: "FACP", revision: FADTLayout.majorVersion,
        body: Array(table[SDTHeader.size...]))
}

/// A Generic Address Structure for a byte register (ACPI 6.4 §5.2.3.2,
/// Table 5.1): space id, bit width 8, bit offset 0, access size 1 (byte), address.
private func store(_ register: RegisterAddress, in table: inout [UInt8], at offset: Int) {
    table[offset] = register.space.rawValue
    table[offset + 1] = 8
    table[offset + 2] = 0
    table[offset + 3] = 1
    table.storeLittleEndian(register.address, at: offset + 4)
}

enum FADTLayout {
    /// ACPI 6.4: FADT major version 6 (header revision), minor version 4.
    static let majorVersion: UInt8 = 6
    static let minorVersion: UInt8 = 4
    static let size = 276
    static let iapcBootArchOffset = 109
    static let flagsOffset = 112
    static let minorVersionOffset = 131
    static let xDSDTOffset = 140
    static let sleepControlOffset = 244
    static let sleepStatusOffset = 256
    static let hypervisorVendorOffset = 268

    /// Fixed feature flags: HW_REDUCED_ACPI is bit 20 (Table 5.10).
    static let hardwareReducedACPI: UInt32 = 1 << 20

    /// IA-PC boot architecture flags (§5.2.9.3, Table 5.11).
    static let legacyDevices: UInt16 = 1 << 0
    static let has8042: UInt16 = 1 << 1
    static let vgaNotPresent: UInt16 = 1 << 2
    static let msiNotSupported: UInt16 = 1 << 3
    static let cmosRTCNotPresent: UInt16 = 1 << 5

    static func bootArchitectureFlags(_ legacy: LegacyHardware) -> UInt16 {
        // No VGA, and no MSI: there is no PCI bus to deliver them.
        var flags = vgaNotPresent | msiNotSupported
        if legacy.i8042 { flags |= has8042 }
        if !legacy.cmosRTC { flags |= cmosRTCNotPresent }
        return flags
    }
}
