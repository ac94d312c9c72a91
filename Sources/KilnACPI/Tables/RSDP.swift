import KilnBytes

/// Root System Description Pointer, revision 2 (ACPI 6.4 §5.2.5.3, Table
/// 5.3): 36 bytes pointing at the XSDT. The RSDT address stays 0: an ACPI 2.0+
/// OS uses the XSDT. The first checksum covers the ACPI 1.0 part (bytes 0-19),
/// the extended checksum the whole structure.
func rootSystemDescriptionPointer(xsdtAddress: UInt64) -> [UInt8] {
    var rsdp: [UInt8] = []
    rsdp.appendFixedASCII("RSD PTR ", width: 8)
    rsdp.append(0) // checksum, offset 8
    rsdp.appendFixedASCII(TableIdentity.oemID, width: 6)
    rsdp.append(2) // revision
    rsdp.appendLittleEndian(UInt32(0)) // RsdtAddress
    rsdp.appendLittleEndian(UInt32(RSDPLayout.size)) // Length
    rsdp.appendLittleEndian(xsdtAddress)
    rsdp.append(0) // extended checksum, offset 32
    rsdp += [0, 0, 0] // reserved
    rsdp[RSDPLayout.checksumOffset] = acpiChecksum(rsdp[0..<RSDPLayout.legacySize])
    rsdp[RSDPLayout.extendedChecksumOffset] = acpiChecksum(rsdp)
    return rsdp
}

enum RSDPLayout {
    static let size = 36
    static let legacySize = 20
    static let checksumOffset = 8
    static let xsdtAddressOffset = 24
    static let extendedChecksumOffset = 32
}

/// Extended System Description Table (ACPI 6.4 §5.2.8): 64-bit pointers to
/// every table but the DSDT, which the FADT points at.
func extendedSystemDescriptionTable(entries: [UInt64]) -> [UInt8] {
    var body: [UInt8] = []
    for entry in entries { body.appendLittleEndian(entry) }
    return systemDescriptionTable(signature: "XSDT", revision: 1, body: body)
}
