import KilnBytes

/// Checks that an exec file can run in an empty jail: an ELF executable with
/// no program interpreter (ELF64 gABI, "Program Header": PT_INTERP names the
/// dynamic loader, which the jail does not hold). Pure: takes the file's
/// first bytes, so a bad file is refused before anything is created.
public enum ExecutableCheck {
    /// Enough for the ELF header and the program headers of an ordinary
    /// binary (the linkers place them right after the 64-byte header).
    public static let inspectedBytes = 4096

    static let elfMagic: [UInt8] = [0x7F, 0x45, 0x4C, 0x46]
    static let ptInterp: UInt32 = 3
    static let etExec: UInt16 = 2, etDyn: UInt16 = 3
    /// e_machine of the host (ELF64 gABI: EM_X86_64 62, EM_AARCH64 183).
    #if arch(arm64)
        public static let hostMachine: UInt16 = 183
    #else
        public static let hostMachine: UInt16 = 62
    #endif

    /// Returns nil when `bytes` (the start of the file) is a static ELF64
    /// executable, else the reason it cannot run in the jail.
    public static func problem(in bytes: [UInt8]) -> String? {
        guard bytes.count >= 64, Array(bytes[0..<4]) == elfMagic else {
            return "is not an ELF executable (a script or other file cannot run in an empty jail)"
        }
        guard bytes[4] == 2, bytes[5] == 1 else { return "is not a 64-bit little-endian ELF file" }
        // The header's fields lie inside the 64 bytes just counted: never the 0.
        func field<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T { bytes.littleEndian(at: offset) ?? 0 }
        let type = field(16, UInt16.self)
        guard type == etExec || type == etDyn else { return "is an ELF file but not an executable (e_type \(type))" }
        let machine = field(18, UInt16.self)
        guard machine == hostMachine else {
            return "is built for another architecture (e_machine \(machine), this host is \(hostMachine))"
        }
        // e_phoff is the file's to choose, up to 2^64 - 1: compared before it
        // becomes an Int, which would trap above Int.max.
        let rawOffset = field(32, UInt64.self)
        let entrySize = Int(field(54, UInt16.self))
        let entryCount = Int(field(56, UInt16.self))
        guard entrySize >= 56 else { return "has a malformed program header table" }
        let (tableSize, overflow) = entrySize.multipliedReportingOverflow(by: entryCount)
        guard !overflow, tableSize <= bytes.count, rawOffset <= UInt64(bytes.count - tableSize) else {
            return "has its program headers outside the first \(inspectedBytes) bytes"
        }
        let programHeaderOffset = Int(rawOffset)
        for index in 0..<entryCount {
            // Inside the table, which lies inside `bytes`.
            let kind = field(programHeaderOffset + index * entrySize, UInt32.self)
            if kind == ptInterp {
                return
                    "is dynamically linked (it has a PT_INTERP program header); the jail holds no libraries, so build it static"
            }
        }
        return nil
    }
}
