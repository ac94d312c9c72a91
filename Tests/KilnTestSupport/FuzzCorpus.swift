import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// The committed libFuzzer seeds (fuzz/corpus/<name>/), so the seeded tests
/// and the fuzzers start from the same valid inputs.
public enum FuzzCorpus {
    public static func folder(_ name: String) -> String { ChildProcess.packageRoot() + "/fuzz/corpus/" + name }

    public static func seeds(_ name: String) throws -> [[UInt8]] {
        try FileSystem.listDirectory(folder(name)).sorted().map { try FileSystem.readFile(folder(name) + "/" + $0) }
    }

    /// The seeds of `name` that differ from `programs` (file name, bytes),
    /// which are their source. With KILN_WRITE_FUZZ_SEEDS=1 in the
    /// environment it writes them first: that is how they are made.
    public static func stale(_ name: String, _ programs: [(name: String, bytes: [UInt8])]) throws -> [String] {
        if getenv("KILN_WRITE_FUZZ_SEEDS") != nil {
            if !FileSystem.isDirectory(folder(name)) { mkdir(folder(name), 0o755) }
            for program in programs { try FileSystem.writeAtomically(folder(name) + "/" + program.name, program.bytes) }
        }
        let committed = try FileSystem.listDirectory(folder(name))
        return programs.filter { program in
            !committed.contains(program.name)
                || (try? FileSystem.readFile(folder(name) + "/" + program.name)) != program.bytes
        }.map(\.name)
    }
}
