import CSeccomp
import KilnSeccomp
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Compiles roles into seccomp BPF with libseccomp, for x86_64 only.
///
/// - Every other architecture, and the x32 ABI (x86_64 numbers with bit 30
///   set, which share AUDIT_ARCH_X86_64), get kill-process: libseccomp's
///   "bad architecture" action covers both.
/// - The syscall dispatch is a binary tree (SCMP_FLTATR_CTL_OPTIMIZE = 2),
///   so a lookup costs O(log n) comparisons rather than a linear scan.
/// - The output is deterministic: rules are handed to libseccomp in a fixed
///   order (syscall number, then comparisons), so the same policy gives the
///   same bytes.
public enum PolicyCompiler {
    /// AUDIT_ARCH_X86_64 (linux/audit.h): EM_X86_64 | 64BIT | LE.
    public static let architecture: UInt32 = 0xC000_003E
    /// Bit 30 marks an x32 system call number (asm/unistd.h, __X32_SYSCALL_BIT).
    public static let x32SyscallBit: Int32 = 0x4000_0000

    /// One libseccomp rule: a syscall, one conjunction of comparisons, an action.
    struct Entry: Comparable {
        var number: Int32
        var syscall: String
        var comparisons: [ArgumentComparison]
        var action: SeccompAction

        var key: String {
            comparisons.map { "\($0.argument):\($0.width):\($0.mask ?? 0):\($0.op.rawValue):\($0.value)" }.joined(
                separator: ",")
        }

        static func < (lhs: Entry, rhs: Entry) -> Bool {
            (lhs.number, lhs.key, lhs.action.rawValue) < (rhs.number, rhs.key, rhs.action.rawValue)
        }

        static func == (lhs: Entry, rhs: Entry) -> Bool {
            lhs.number == rhs.number && lhs.key == rhs.key && lhs.action == rhs.action
        }
    }

    /// The rules libseccomp gets for `policy`: one per alternative, without
    /// repeats and without rules whose action is the default (libseccomp
    /// refuses those, and they change nothing).
    static func entries(of policy: Policy) -> [Entry] {
        var entries: [Entry] = []
        var seen: Set<String> = []
        for rule in policy.rules where rule.action != policy.defaultAction {
            for alternative in rule.alternatives.isEmpty ? [[]] : rule.alternatives {
                let entry = Entry(
                    number: rule.number, syscall: rule.syscall, comparisons: alternative, action: rule.action)
                if seen.insert("\(entry.number)/\(entry.key)").inserted { entries.append(entry) }
            }
        }
        return entries.sorted()
    }

    /// Compiles one role to BPF.
    public static func compile(_ policy: Policy) throws -> [BPFInstruction] {
        guard let context = seccomp_init(policy.defaultAction.rawValue) else {
            throw PolicyError("role \(policy.role): seccomp_init failed", at: nil)
        }
        defer { seccomp_release(context) }
        try libseccomp(
            seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, SeccompAction.killProcess.rawValue),
            "set the bad-architecture action", policy)
        try libseccomp(seccomp_attr_set(context, SCMP_FLTATR_CTL_OPTIMIZE, 2), "select the binary-tree layout", policy)
        for entry in entries(of: policy) {
            let comparisons = entry.comparisons.map(libseccompComparison)
            let rc = comparisons.withUnsafeBufferPointer { buffer in
                seccomp_rule_add_exact_array(
                    context, entry.action.rawValue, entry.number,
                    UInt32(buffer.count), buffer.baseAddress)
            }
            try libseccomp(rc, "add the rule for \(entry.syscall) \(entry.comparisons)", policy)
        }
        let program = try export(context, policy)
        guard program.count <= BPF.maximumInstructions else {
            throw PolicyError(
                "role \(policy.role): the compiled filter has \(program.count) BPF instructions, over the kernel's limit of \(BPF.maximumInstructions); remove rules or alternatives",
                at: nil)
        }
        return program
    }

    /// The libseccomp form of one comparison. A 32-bit argument is compared
    /// through a mask that ignores the upper half, as the kernel does; `<`
    /// and `<=` compare all 64 bits, which refuses a non-zero upper half
    /// (the parser refuses `!=`, `>` and `>=` on 32-bit arguments).
    static func libseccompComparison(_ c: ArgumentComparison) -> scmp_arg_cmp {
        func make(_ op: scmp_compare, _ a: UInt64, _ b: UInt64 = 0) -> scmp_arg_cmp {
            scmp_arg_cmp(arg: UInt32(c.argument), op: op, datum_a: a, datum_b: b)
        }
        switch c.op {
        case .equal:
            if c.width == 32 || c.mask != nil {
                return make(SCMP_CMP_MASKED_EQ, (c.mask ?? .max) & c.widthMask, c.value)
            }
            return make(SCMP_CMP_EQ, c.value)
        case .notEqual: return make(SCMP_CMP_NE, c.value)
        case .less: return make(SCMP_CMP_LT, c.value)
        case .lessOrEqual: return make(SCMP_CMP_LE, c.value)
        case .greater: return make(SCMP_CMP_GT, c.value)
        case .greaterOrEqual: return make(SCMP_CMP_GE, c.value)
        }
    }

    private static func libseccomp(_ rc: Int32, _ what: String, _ policy: Policy) throws {
        guard rc == 0 else {
            let reason = String(cString: strerror(-rc))
            throw PolicyError("role \(policy.role): libseccomp could not \(what): \(reason)", at: nil)
        }
    }

    /// seccomp_export_bpf writes to a file descriptor (libseccomp 2.5 has no
    /// in-memory export): an anonymous temporary file, read back.
    private static func export(_ context: scmp_filter_ctx, _ policy: Policy) throws -> [BPFInstruction] {
        guard let file = tmpfile() else { throw SystemError.current("tmpfile", subject: "BPF export") }
        defer { fclose(file) }
        let fd = fileno(file)
        try libseccomp(seccomp_export_bpf(context, fd), "export the BPF", policy)
        try check("lseek", subject: "BPF export") { lseek(fd, 0, SEEK_SET) }
        let bytes = try FileDescriptor(rawValue: fd).readAll(
            limit: (BPF.maximumInstructions * 4) * BPFInstruction.encodedSize)
        guard bytes.count % BPFInstruction.encodedSize == 0, !bytes.isEmpty else {
            throw PolicyError(
                "role \(policy.role): libseccomp exported \(bytes.count) bytes, not whole instructions", at: nil)
        }
        return stride(from: 0, to: bytes.count, by: BPFInstruction.encodedSize).map {
            BPFInstruction(decoding: bytes[$0..<$0 + BPFInstruction.encodedSize])
        }
    }
}
