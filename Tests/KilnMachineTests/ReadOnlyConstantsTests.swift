import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Once glibc's static-pie start-up has relocated the executable, only
/// mutable data stays writable: constants lie in a read-only segment or in
/// PT_GNU_RELRO, which the start-up makes read-only (linker/relro.ld,
/// docs/platform.md "Read-only constants").
@Suite(.enabled(if: BuiltStaticExecutables.missing.isEmpty, BuiltStaticExecutables.skipReason))
struct ReadOnlyConstantsTests {
    /// Sections that hold data written at run time, writable by design:
    /// `swift5_backtrace` holds the Swift runtime's backtracer settings,
    /// which it fills in at start-up; `__libc_freeres_ptrs` holds glibc's
    /// buffers to free at exit; `.tbss` is a template whose addresses
    /// overlap the sections after it.
    static let mutableSections: Set<String> = [
        ".data", ".bss", ".tbss", ".tm_clone_table", "swift5_backtrace", "__libc_freeres_ptrs",
    ]

    @Test(arguments: BuiltStaticExecutables.paths)
    func everyConstantSectionIsReadOnlyOrRelro(_ path: String) throws {
        let layout = try ExecutableLayout(ChildProcess.readBytes(path))
        let relro = try #require(layout.relro, "\(path) has no PT_GNU_RELRO")
        #expect(layout.sections.contains { $0.name == ".rodata" }, "\(path) has no .rodata")
        let writable = layout.sections.filter { section in
            section.allocated && section.size > 0 && !Self.mutableSections.contains(section.name)
                && !relro.contains(section.addresses)
                && !layout.readOnlySegments.contains { $0.contains(section.addresses) }
        }
        #expect(writable.isEmpty, "\(path): writable after start-up: \(writable.map(\.name))")
    }

    /// The same seen from a running kiln: the pages of `.rodata` and of the
    /// RELRO range are mapped without write permission.
    @Test(.enabled(if: Lane1.ready, Lane1.skipReason)) func runningKilnMapsItsConstantsReadOnly() throws {
        let layout = try ExecutableLayout(ChildProcess.readBytes(Lane1.kiln))
        let rodata = try #require(layout.sections.first { $0.name == ".rodata" }, "kiln has no .rodata")
        let relro = try #require(layout.relro, "kiln has no PT_GNU_RELRO")
        let mappings = try Lane1.mapsOfServingKiln().filter { $0.hasSuffix("/kiln") }.map(ProcMapsLine.init)
        let base = try #require(
            mappings.first { $0.offset == 0 }?.range.lowerBound, "kiln's first mapping: \(mappings)")
        for range in [rodata.addresses, relro] {
            let pages = (base + range.lowerBound) / 4096 * 4096..<(base + range.upperBound)
            let covering = mappings.filter { $0.range.overlaps(pages) }
            #expect(
                !covering.isEmpty && covering.allSatisfy { !$0.writable },
                "kiln's pages \(pages) are mapped \(covering.map(\.permissions))")
        }
    }
}

/// The static executables SwiftPM built beside the test bundle.
enum BuiltStaticExecutables {
    static let paths = ["kiln", "kiln-jailer", "kiln-policy"].map { ChildProcess.buildFolder + "/" + $0 }
    static let missing = paths.filter { access($0, R_OK) != 0 }
    static let skipReason = Comment(rawValue: "not built: " + missing.joined(separator: ", "))
}

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

        let programHeaders = try integer(32, 8), programHeaderSize = try integer(54, 2)
        var readOnly: [Range<UInt64>] = []
        var relro: Range<UInt64>?
        for index in 0..<(try integer(56, 2)) {
            let header = try range(programHeaders, index * programHeaderSize).upperBound
            let type = try integer(header, 4), flags = try integer(header + 4, 4)
            let addresses = try range(try integer(header + 16, 8), try integer(header + 40, 8))
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
        readOnlySegments = readOnly
        self.relro = relro
    }
}
