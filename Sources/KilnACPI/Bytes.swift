// ACPI structures are little-endian throughout (ACPI 6.4 §5.2: "All numeric
// values in ACPI-defined tables ... are stored in little-endian format"):
// KilnBytes writes their integers.
extension Array where Element == UInt8 {
    /// Appends `text` as exactly `width` ASCII bytes, padded with `pad`.
    /// Callers pass validated ASCII that fits (signatures, OEM ids).
    mutating func appendFixedASCII(_ text: String, width: Int, pad: UInt8 = 0x20) {
        let bytes = Array(text.utf8.prefix(width))
        append(contentsOf: bytes)
        append(contentsOf: repeatElement(pad, count: width - bytes.count))
    }
}

/// The byte that makes `bytes` sum to zero modulo 256 (ACPI 6.4 §5.2.5.3 and
/// §5.2.6: "the entire table, including the checksum field, must add to zero").
func acpiChecksum<C: Collection>(_ bytes: C) -> UInt8 where C.Element == UInt8 {
    0 &- bytes.reduce(0, &+)
}
