import CKiln

/// `OWN_PID` in a policy: the process's own id (its thread-group id), which
/// only the process that installs a filter knows. The compiler writes a
/// placeholder in its place, so the bundle is the same bytes on every build;
/// `SeccompFilter.install` writes `getpid()` over it just before loading.
///
/// The placeholder is above the kernel's PID_MAX_LIMIT (2^22,
/// include/linux/threads.h), so an unresolved program can never match a real
/// process: a test of `OWN_PID` fails closed. The compiler refuses it as a
/// literal value, so in a compiled program it appears only where `OWN_PID` was
/// written, as the operand of a `jeq` (libseccomp compares equalities, masked
/// or not, with BPF_JMP|BPF_JEQ|BPF_K).
public enum OwnProcessID {
    public static let placeholder: UInt32 = 0x5049_4421
    /// The one instruction form a placeholder takes.
    public static let siteCode: UInt16 = BPF.jmp | BPF.jeq | BPF.k

    public static func isSite(code: UInt16, k: UInt32) -> Bool { code == siteCode && k == placeholder }

    /// How many comparisons with `OWN_PID` the program holds.
    public static func sites(in program: [BPFInstruction]) -> Int {
        program.filter { isSite(code: $0.code, k: $0.k) }.count
    }

    /// The program with every `OWN_PID` comparison made against `pid`.
    public static func resolve(_ program: [BPFInstruction], pid: UInt32) -> [BPFInstruction] {
        program.map {
            isSite(code: $0.code, k: $0.k) ? BPFInstruction(code: $0.code, jt: $0.jt, jf: $0.jf, k: pid) : $0
        }
    }

    /// The same, in place on a program ready for the kernel, allocating
    /// nothing: for a child between fork and exec, where only
    /// async-signal-safe work is allowed.
    public static func resolve(_ filters: UnsafeMutableBufferPointer<sock_filter>, pid: UInt32) {
        for index in filters.indices where isSite(code: filters[index].code, k: filters[index].k) {
            filters[index].k = pid
        }
    }
}
