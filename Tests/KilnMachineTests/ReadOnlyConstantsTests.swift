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
