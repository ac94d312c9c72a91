/// How much a finding matters. `info` explains a deliberate choice and never
/// fails `kiln-policy check`.
public enum Severity: String, CaseIterable, Comparable, Sendable {
    case info, low, medium, high, critical

    private var rank: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs.rank < rhs.rank }
}

public struct AuditFinding: Sendable, CustomStringConvertible {
    public var severity: Severity
    /// The system call concerned, or nil for a finding about the whole role.
    public var syscall: String?
    public var message: String
    public var location: SourceLocation?

    public var description: String {
        let place = location.map { " (\($0))" } ?? ""
        return "[\(severity.rawValue)] \(syscall ?? "-"): \(message)\(place)"
    }
}

/// The system calls that hand a sandboxed process a way out or a large
/// kernel attack surface, with the reason given in reports.
enum DangerousSyscalls {
    static let table: [String: (Severity, String)] = [
        "execve": (.critical, "runs a new program, shedding the VMM's own restrictions on its code"),
        "execveat": (.critical, "runs a new program, shedding the VMM's own restrictions on its code"),
        "ptrace": (.critical, "controls other processes: reads and writes their memory and registers"),
        "process_vm_readv": (.critical, "reads another process's memory"),
        "process_vm_writev": (.critical, "writes another process's memory"),
        "mount": (.critical, "changes the file system view"),
        "umount2": (.critical, "changes the file system view"),
        "pivot_root": (.critical, "changes the root file system"),
        "chroot": (.critical, "changes the root directory; with an open fd, a classic jail escape"),
        "setns": (.critical, "joins another namespace"),
        "unshare": (.high, "creates namespaces: user namespaces open kernel attack surface"),
        "bpf": (.critical, "loads eBPF programs into the kernel"),
        "perf_event_open": (.high, "a large kernel attack surface and side channels"),
        "kexec_load": (.critical, "replaces the running kernel"),
        "kexec_file_load": (.critical, "replaces the running kernel"),
        "init_module": (.critical, "loads kernel code"),
        "finit_module": (.critical, "loads kernel code"),
        "delete_module": (.critical, "unloads kernel modules"),
        "keyctl": (.high, "the kernel keyring: shared state and a history of vulnerabilities"),
        "add_key": (.high, "the kernel keyring: shared state and a history of vulnerabilities"),
        "request_key": (.high, "the kernel keyring: shared state and a history of vulnerabilities"),
        "io_uring_setup": (.high, "io_uring performs system calls the seccomp filter never sees"),
        "io_uring_enter": (.high, "io_uring performs system calls the seccomp filter never sees"),
        "io_uring_register": (.high, "io_uring performs system calls the seccomp filter never sees"),
        "personality": (.medium, "changes the execution domain (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE)"),
        "userfaultfd": (.high, "lets a thread stall kernel accesses to its memory, widening race windows"),
    ]

    /// Calls that need argument conditions to be safe at all.
    static let needConditions: [String: Severity] = [
        "ioctl": .high, "prctl": .high, "socket": .medium, "open": .medium, "openat": .medium, "openat2": .medium,
        "clone": .high, "clone3": .high, "fcntl": .low,
    ]

    /// Calls that can make memory executable; `protectionArgument` holds the PROT_* bits.
    static let mappingCalls: [(syscall: String, protectionArgument: Int)] = [
        ("mmap", 2), ("mprotect", 2), ("pkey_mprotect", 2),
    ]
}
