import KilnBytes

/// A small encoder for the ACPI Machine Language terms a microVM's DSDT needs
/// (ACPI 6.4 §20, "ACPI Machine Language (AML) Specification").
///
/// Every function returns the complete encoding of one term as bytes, so terms
/// compose by nesting calls: `AML.scope("\\_SB_", AML.device("COM1", ...))`.
/// Names are validated when they are built, so a bad name is a programming
/// error in the caller (a precondition), never malformed AML in the guest.
public enum AML {
    // MARK: Opcodes (ACPI 6.4 §20.3, "AML Byte Stream Byte Values")
    static let zeroOp: UInt8 = 0x00
    static let oneOp: UInt8 = 0x01
    static let nameOp: UInt8 = 0x08
    static let bytePrefix: UInt8 = 0x0A
    static let wordPrefix: UInt8 = 0x0B
    static let dwordPrefix: UInt8 = 0x0C
    static let stringPrefix: UInt8 = 0x0D
    static let qwordPrefix: UInt8 = 0x0E
    static let scopeOp: UInt8 = 0x10
    static let bufferOp: UInt8 = 0x11
    static let packageOp: UInt8 = 0x12
    static let methodOp: UInt8 = 0x14
    static let dualNamePrefix: UInt8 = 0x2E
    static let multiNamePrefix: UInt8 = 0x2F
    static let extOpPrefix: UInt8 = 0x5B
    static let rootChar: UInt8 = 0x5C // '\'
    static let parentPrefixChar: UInt8 = 0x5E // '^'
    static let deviceOp: UInt8 = 0x82 // after extOpPrefix
    static let returnOp: UInt8 = 0xA4
    static let onesOp: UInt8 = 0xFF

    // MARK: Data objects (§20.2.3)

    /// An integer in its shortest encoding: ZeroOp, OneOp, OnesOp, or a
    /// Byte/Word/DWord/QWord constant (§20.2.3, ComputationalData and ConstObj).
    /// OnesOp means all ones at the DSDT's integer width, which is 64 bits for
    /// the revision-2 DSDT this module builds (§5.2.11.1).
    public static func integer(_ value: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        switch value {
        case 0: bytes = [zeroOp]
        case 1: bytes = [oneOp]
        case UInt64.max: bytes = [onesOp]
        case 2...0xFF: bytes = [bytePrefix, UInt8(value)]
        case 0x100...0xFFFF: bytes = [wordPrefix]; bytes.appendLittleEndian(UInt16(value))
        case 0x1_0000...0xFFFF_FFFF: bytes = [dwordPrefix]; bytes.appendLittleEndian(UInt32(value))
        default: bytes = [qwordPrefix]; bytes.appendLittleEndian(value)
        }
        return bytes
    }

    /// A null-terminated ASCII string constant (§20.2.3, String). AML strings
    /// hold ASCII characters 0x01-0x7F only.
    public static func string(_ text: String) -> [UInt8] {
        let utf8 = Array(text.utf8)
        precondition(utf8.allSatisfy { (0x01...0x7F).contains($0) }, "AML strings are ASCII without NUL: \(text)")
        return [stringPrefix] + utf8 + [0x00]
    }

    /// DefBuffer: BufferOp PkgLength BufferSize ByteList (§20.2.5.4).
    public static func buffer(_ contents: [UInt8]) -> [UInt8] {
        [bufferOp] + packageLengthPrefixed(integer(UInt64(contents.count)) + contents)
    }

    /// DefPackage: PackageOp PkgLength NumElements PackageElementList
    /// (§20.2.5.4). NumElements is one byte, so at most 255 elements.
    public static func package(_ elements: [[UInt8]]) -> [UInt8] {
        precondition(elements.count <= 0xFF, "an AML package holds at most 255 elements")
        return [packageOp] + packageLengthPrefixed([UInt8(elements.count)] + concatenated(elements))
    }

    /// A compressed EISA id such as "PNP0501", the DWord form of a _HID
    /// (§6.1.5): three letters in five bits each, then four hex digits, stored
    /// most significant byte first.
    public static func eisaID(_ id: String) -> [UInt8] {
        let chars = Array(id.utf8)
        precondition(
            chars.count == 7
                && chars[0..<3].allSatisfy { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) }
                && chars[3..<7].allSatisfy { hexValue($0) != nil },
            "an EISA id is three capital letters and four hex digits: \(id)")
        let letter = { (c: UInt8) -> UInt32 in UInt32(c - 0x40) }
        let hex = { (c: UInt8) -> UInt32 in UInt32(hexValue(c)!) }
        let packed =
            letter(chars[0]) << 26 | letter(chars[1]) << 21 | letter(chars[2]) << 16
            | hex(chars[3]) << 12 | hex(chars[4]) << 8 | hex(chars[5]) << 4 | hex(chars[6])
        // The id's bytes are big-endian in memory; the DWord constant is read
        // little-endian, so store the byte-swapped value.
        var bytes: [UInt8] = [dwordPrefix]
        bytes.appendLittleEndian(packed.byteSwapped)
        return bytes
    }

    // MARK: Named objects and namespace modifiers (§20.2.5.1, §20.2.5.2)

    /// DefName: NameOp NameString DataRefObject.
    public static func name(_ path: String, _ value: [UInt8]) -> [UInt8] {
        [nameOp] + nameString(path) + value
    }

    /// DefScope: ScopeOp PkgLength NameString TermList.
    public static func scope(_ path: String, _ terms: [UInt8]...) -> [UInt8] {
        [scopeOp] + packageLengthPrefixed(nameString(path) + concatenated(terms))
    }

    /// DefDevice: ExtOpPrefix DeviceOp PkgLength NameString TermList.
    public static func device(_ path: String, _ terms: [UInt8]...) -> [UInt8] {
        [extOpPrefix, deviceOp] + packageLengthPrefixed(nameString(path) + concatenated(terms))
    }

    /// DefMethod: MethodOp PkgLength NameString MethodFlags TermList. The
    /// flags hold ArgCount in bits 0-2 and SerializeFlag in bit 3.
    public static func method(
        _ path: String, argumentCount: Int = 0, serialized: Bool = false,
        _ terms: [UInt8]...
    ) -> [UInt8] {
        precondition((0...7).contains(argumentCount), "an AML method takes 0 to 7 arguments")
        let flags = UInt8(argumentCount) | (serialized ? 0x08 : 0)
        return [methodOp] + packageLengthPrefixed(nameString(path) + [flags] + concatenated(terms))
    }

    /// DefReturn: ReturnOp ArgObject (§20.2.5.3).
    public static func `return`(_ value: [UInt8]) -> [UInt8] {
        [returnOp] + value
    }

    // MARK: Encoding rules

    /// The parts one after another. Not `joined()`: unspecialized, as in the
    /// debug builds the tests run, its iterator asks the runtime for generic
    /// metadata at every byte, which made building a DSDT cost milliseconds.
    static func concatenated(_ parts: [[UInt8]]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for part in parts { bytes.append(contentsOf: part) }
        return bytes
    }

    /// PkgLength followed by `body` (§20.2.4). The length counts itself: one
    /// byte holds up to 63; otherwise bits 7-6 of the lead byte give how many
    /// bytes follow (1-3), its bits 3-0 hold the low nibble and each following
    /// byte the next eight bits, for a maximum of 2^28 - 1.
    static func packageLengthPrefixed(_ body: [UInt8]) -> [UInt8] {
        for extraBytes in 0...3 {
            let total = body.count + 1 + extraBytes
            let limit = extraBytes == 0 ? 0x40 : 1 << (4 + 8 * extraBytes)
            guard total < limit else { continue }
            if extraBytes == 0 { return [UInt8(total)] + body }
            var encoded = [UInt8(extraBytes << 6) | UInt8(total & 0x0F)]
            for index in 0..<extraBytes { encoded.append(UInt8((total >> (4 + 8 * index)) & 0xFF)) }
            return encoded + body
        }
        preconditionFailure("an AML package is limited to 2^28 - 1 bytes")
    }

    /// NameString (§20.2.2): an optional root '\' or parent '^' prefixes, then
    /// one NameSeg, a DualNamePath, or a MultiNamePath. Segments are written
    /// "_SB" or "_SB_" and padded with '_' to four characters.
    static func nameString(_ path: String) -> [UInt8] {
        var rest = Substring(path)
        var prefix: [UInt8] = []
        if rest.first == "\\" {
            prefix.append(rootChar); rest = rest.dropFirst()
        } else {
            while rest.first == "^" { prefix.append(parentPrefixChar); rest = rest.dropFirst() }
        }
        let segments = rest.isEmpty ? [] : rest.split(separator: ".", omittingEmptySubsequences: false).map(nameSegment)
        switch segments.count {
        case 0: return prefix + [zeroOp] // NullName, only valid after a prefix.
        case 1: return prefix + segments[0]
        case 2: return prefix + [dualNamePrefix] + concatenated(segments)
        default:
            precondition(segments.count <= 0xFF, "an AML name path has at most 255 segments")
            return prefix + [multiNamePrefix, UInt8(segments.count)] + concatenated(segments)
        }
    }

    /// NameSeg (§20.2.2): a LeadNameChar ('A'-'Z' or '_') then three NameChars
    /// (also '0'-'9'); shorter segments are padded with '_'.
    static func nameSegment(_ text: Substring) -> [UInt8] {
        let chars = Array(text.utf8)
        let isLead = { (c: UInt8) in (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c) || c == UInt8(ascii: "_") }
        let isChar = { (c: UInt8) in isLead(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) }
        precondition(
            (1...4).contains(chars.count) && isLead(chars[0]) && chars.allSatisfy(isChar),
            "invalid AML name segment \"\(text)\"")
        return chars + Array(repeating: UInt8(ascii: "_"), count: 4 - chars.count)
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
