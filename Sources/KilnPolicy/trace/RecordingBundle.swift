import KilnSeccomp

/// The roles of a policy folder as `kiln-policy trace` runs them: each real
/// program (to recognise it when a traced process installs it) beside its
/// recording variant, which the tracer puts in its place.
///
/// A recording variant keeps every rule of its role but answers
/// SECCOMP_RET_TRACE for everything: `trace(code << 8 | 1)` where a rule
/// matches, `trace(code << 8)` where the role's default would have acted.
/// The tracer is stopped at every call (PTRACE_EVENT_SECCOMP) and reads
/// which role answered and whether by a rule from the return data; the
/// architecture check stays as it is. Among stacked filters returning
/// the same action, the kernel keeps the newest filter's data
/// (kernel/seccomp.c, seccomp_run_filters), so the data names the thread's
/// innermost role.
public struct RecordingBundle: Sendable {
    /// Every role as compiled (the jailer and launch roles as unions).
    public let policies: [Policy]
    public let realPrograms: [String: [BPFInstruction]]
    public let recordingPrograms: [String: [BPFInstruction]]
    /// What the tracer installs on the traced command before its exec:
    /// SECCOMP_RET_TRACE with data 0 for every call, so the tracer sees a
    /// role's program before the kernel does (`seccomp`, `prctl`) and the
    /// calls a program makes before its first role (its start-up).
    public let base: [BPFInstruction]

    /// `installed`: the policies the traced binaries were built with, when
    /// they are not `folder` (a role's program is recognised by them, and
    /// replaced by the recording variant of `folder`'s role of that name);
    /// so a changed policy can be traced before the binaries are rebuilt.
    public init(policies folder: [Policy], installed: [Policy]? = nil) throws {
        let resolved = try PolicyBundleBuilder.resolvedRoles(folder).sorted { $0.role < $1.role }
        var real: [String: [BPFInstruction]] = [:], recording: [String: [BPFInstruction]] = [:]
        for (index, policy) in resolved.enumerated() {
            recording[policy.role] = try PolicyCompiler.compile(
                Self.recordingVariant(of: policy, code: UInt16(index + 1)))
        }
        for policy in try installed.map(PolicyBundleBuilder.resolvedRoles) ?? resolved
        where recording[policy.role] != nil {
            real[policy.role] = try PolicyCompiler.compile(policy)
        }
        policies = resolved
        realPrograms = real
        recordingPrograms = recording
        base = try PolicyCompiler.compile(Self.basePolicy)
    }

    /// `policy` with every rule answering `trace(code << 8 | 1)` and the
    /// default `trace(code << 8)`.
    public static func recordingVariant(of policy: Policy, code: UInt16) -> Policy {
        var variant = policy
        variant.defaultAction = .trace(code << 8)
        for index in variant.rules.indices { variant.rules[index].action = .trace(code << 8 | 1) }
        return variant
    }

    static var basePolicy: Policy {
        Policy(role: "trace-base", defaultAction: .trace(0), rules: [])
    }

    /// The role whose real program is exactly `program`.
    public func role(installing program: [BPFInstruction]) -> String? {
        realPrograms.first { $0.value == program }?.key
    }

    /// A role's program as a process installs it, with any value only the
    /// installing process knows (its own pid) written over a placeholder
    /// when it loads the program: which role it is, and the placeholder so
    /// resolved, if any. Only the operands of equality jumps (`jeq #k`, how
    /// libseccomp compares) may differ, and all of them to `processID`.
    public func role(installing program: [BPFInstruction], processID: UInt32) -> (role: String, placeholder: UInt32?)? {
        if let role = role(installing: program) { return (role, nil) }
        for (role, real) in realPrograms where real.count == program.count {
            var placeholder: UInt32?
            let resolved = zip(real, program).allSatisfy { known, installed in
                if known == installed { return true }
                guard known.code == Self.equalityJump, installed.code == known.code, installed.jt == known.jt,
                    installed.jf == known.jf, installed.k == processID, placeholder ?? known.k == known.k
                else { return false }
                placeholder = known.k
                return true
            }
            if resolved, let placeholder { return (role, placeholder) }
        }
        return nil
    }

    /// BPF_JMP | BPF_JEQ | BPF_K (linux/bpf_common.h).
    static let equalityJump: UInt16 = 0x05 | 0x10 | 0x00

    /// `role`'s recording variant with `placeholder` resolved as the
    /// process resolved it in the real program.
    public func recordingProgram(for role: String, placeholder: UInt32?, processID: UInt32) -> [BPFInstruction]? {
        guard let program = recordingPrograms[role] else { return nil }
        guard let placeholder else { return program }
        return program.map { instruction in
            var instruction = instruction
            if instruction.code == Self.equalityJump && instruction.k == placeholder { instruction.k = processID }
            return instruction
        }
    }

    /// What the return data of a seccomp stop says: which role answered (nil
    /// for the base filter) and whether one of its rules matched.
    public func decode(data: UInt16) -> (role: String?, byRule: Bool)? {
        let code = Int(data >> 8)
        guard code <= policies.count, data & 0xFF <= 1 else { return nil }
        return (code == 0 ? nil : policies[code - 1].role, data & 1 == 1)
    }
}
