/// Little-endian integers in byte arrays: the one encoding of the formats
/// Kiln writes and parses (the seccomp bundle, ACPI tables, virtio headers
/// and config spaces, ELF headers). Reads are bounds-checked, so a short or
/// hostile input is a nil, never a trap.
extension Array where Element == UInt8 {
    public mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    /// Overwrites the `T` at `offset`, for length and checksum fields known
    /// only once the whole structure is built. The caller owns the layout:
    /// `offset` must leave room for `T`.
    public mutating func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset <= count - MemoryLayout<T>.size, "store past the end of a built structure")
        Swift.withUnsafeBytes(of: value.littleEndian) { raw in
            for (index, byte) in raw.enumerated() { self[offset + index] = byte }
        }
    }

    /// The `T` stored at `offset`, or nil when the array ends before it.
    public func littleEndian<T: FixedWidthInteger>(_: T.Type = T.self, at offset: Int) -> T? {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset <= count - size else { return nil }
        var value: T = 0
        for index in 0..<size { value |= T(truncatingIfNeeded: self[offset + index]) << (8 * index) }
        return value
    }
}
