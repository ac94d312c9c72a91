import KilnBytes

/// The identity every table carries in its header (ACPI 6.4 §5.2.6).
enum TableIdentity {
    static let oemID = "KILN" // 6 bytes, space-padded
    static let oemTableID = "KILNVM" // 8 bytes, space-padded
    static let oemRevision: UInt32 = 1
    static let creatorID = "KILN"
    static let creatorRevision: UInt32 = 1
}

/// A System Description Table: the 36-byte header (ACPI 6.4 §5.2.6, Table
/// 5.4) followed by `body`, with the length and checksum filled in.
func systemDescriptionTable(signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
    var table: [UInt8] = []
    table.reserveCapacity(SDTHeader.size + body.count)
    table.appendFixedASCII(signature, width: 4)
    table.appendLittleEndian(UInt32(0)) // length, below
    table.append(revision)
    table.append(0) // checksum, below
    table.appendFixedASCII(TableIdentity.oemID, width: 6)
    table.appendFixedASCII(TableIdentity.oemTableID, width: 8)
    table.appendLittleEndian(TableIdentity.oemRevision)
    table.appendFixedASCII(TableIdentity.creatorID, width: 4)
    table.appendLittleEndian(TableIdentity.creatorRevision)
    table += body
    table.storeLittleEndian(UInt32(table.count), at: SDTHeader.lengthOffset)
    table[SDTHeader.checksumOffset] = acpiChecksum(table)
    return table
}

/// Field offsets of the common header (ACPI 6.4 Table 5.4).
enum SDTHeader {
    static let size = 36
    static let lengthOffset = 4
    static let revisionOffset = 8
    static let checksumOffset = 9
}
