/// What the binary-layout tests (StaticPIETests, ReadOnlyConstantsTests)
/// read from an executable and from a running process's maps.

/// A line of /proc/PID/maps: `start-end perms offset ...`.
struct ProcMapsLine {
    let range: Range<UInt64>
    let permissions: String
    let offset: UInt64
    var writable: Bool { permissions.contains("w") }

    init(_ line: Substring) throws {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        let bounds = fields.first?.split(separator: "-") ?? []
        guard fields.count >= 3, bounds.count == 2, let start = UInt64(bounds[0], radix: 16),
            let end = UInt64(bounds[1], radix: 16), start <= end, let offset = UInt64(fields[2], radix: 16)
        else { throw ExecutableLayout.Malformed("a maps line: \(line)") }
        range = start..<end
        permissions = String(fields[1])
        self.offset = offset
    }
}

/// The program and section headers of an ELF64 little-endian executable
/// (System V gABI, "ELF Header", "Sections", "Program Header").
struct ExecutableLayout {
    struct Section {
        let name: String
        let flags: UInt64
        let addresses: Range<UInt64>
        var allocated: Bool { flags & 0x2 != 0 } // SHF_ALLOC
        var size: UInt64 { addresses.upperBound - addresses.lowerBound }
    }

    struct Malformed: Error, CustomStringConvertible {
        let description: String
        init(_ what: String) { description = "malformed: " + what }
    }

    /// e_type: 2 ET_EXEC, 3 ET_DYN (position-independent).
    let type: UInt64
    /// p_type of every program header, in order.
    let programHeaderTypes: [UInt64]
    let sections: [Section]
    /// PT_LOAD segments without PF_W.
    let readOnlySegments: [Range<UInt64>]
    let relro: Range<UInt64>?

    init(_ image: [UInt8]) throws {
        func integer(_ offset: UInt64, _ size: Int) throws -> UInt64 {
            let (end, overflow) = offset.addingReportingOverflow(UInt64(size))
            guard !overflow, end <= UInt64(image.count) else { throw Malformed("field at \(offset) past the end") }
            return (0..<size).reduce(0) { $0 | UInt64(image[Int(offset) + $1]) << (8 * $1) }
        }
        func range(_ start: UInt64, _ size: UInt64) throws -> Range<UInt64> {
            let (end, overflow) = start.addingReportingOverflow(size)
            guard !overflow else { throw Malformed("range \(start)+\(size)") }
            return start..<end
        }
        guard image.starts(with: [0x7F, 0x45, 0x4C, 0x46, 2, 1]) else { throw Malformed("not an ELF64 LSB file") }

        type = try integer(16, 2)
        let programHeaders = try integer(32, 8), programHeaderSize = try integer(54, 2)
        var types: [UInt64] = [], readOnly: [Range<UInt64>] = []
        var relro: Range<UInt64>?
        for index in 0..<(try integer(56, 2)) {
            let header = try range(programHeaders, index * programHeaderSize).upperBound
            let type = try integer(header, 4), flags = try integer(header + 4, 4)
            let addresses = try range(try integer(header + 16, 8), try integer(header + 40, 8))
            types.append(type)
            if type == 1 && flags & 0x2 == 0 { readOnly.append(addresses) } // PT_LOAD without PF_W
            if type == 0x6474_E552 { relro = addresses } // PT_GNU_RELRO
        }

        let sectionHeaders = try integer(40, 8), sectionHeaderSize = try integer(58, 2)
        let count = try integer(60, 2), namesIndex = try integer(62, 2)
        let namesOffset = try integer(try range(sectionHeaders, namesIndex * sectionHeaderSize + 24).upperBound, 8)
        func name(_ offset: UInt64) throws -> String {
            let start = try range(namesOffset, offset).upperBound
            _ = try integer(start, 1) // inside the file
            guard let end = image[Int(start)...].firstIndex(of: 0) else {
                throw Malformed("a section name at \(start)")
            }
            return String(decoding: image[Int(start)..<end], as: UTF8.self)
        }
        sections = try (0..<count).map { index in
            let header = try range(sectionHeaders, index * sectionHeaderSize).upperBound
            return Section(
                name: try name(try integer(header, 4)), flags: try integer(header + 8, 8),
                addresses: try range(try integer(header + 16, 8), try integer(header + 32, 8)))
        }
        programHeaderTypes = types
        readOnlySegments = readOnly
        self.relro = relro
    }
}
