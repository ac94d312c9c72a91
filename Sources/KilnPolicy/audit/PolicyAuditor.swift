import KilnSeccomp

/// One role as the audit sees it: its rules, the compiled program and the
/// findings.
public struct RoleAudit: Sendable {
    public var policy: Policy
    public var program: [BPFInstruction]
    public var findings: [AuditFinding]
    public var comparison: FirecrackerComparison?

    public var role: String { policy.role }
    public var allowedSyscalls: [String] { policy.allowedSyscalls }
    public var ruleCount: Int { policy.rules.count }
}

/// Reviews compiled policies for risky rules, proving what it can with the
/// BPF interpreter on the compiled program rather than trusting syntax.
public enum PolicyAuditor {
    public static func audit(policies: [Policy], firecracker: FirecrackerFilter?) throws -> AuditReport {
        var roles: [RoleAudit] = []
        for policy in try PolicyBundleBuilder.resolvedRoles(policies) {
            let program = try PolicyCompiler.compile(policy)
            let interpreter = try BPFInterpreter(program)
            let comparison = firecracker?.role(policy.role).map { FirecrackerComparison(ours: policy, theirs: $0) }
            // How the rules are written is judged on the role's own files (the
            // jailer's union would blur it); what they allow, on the compiled role.
            let written = policies.first { $0.role == policy.role } ?? policy
            let found = riskFindings(for: policy, interpreter: interpreter) + writingFindings(for: written)
            roles.append(RoleAudit(policy: policy, program: program, findings: sorted(found), comparison: comparison))
        }
        return AuditReport(roles: roles.sorted { $0.role < $1.role })
    }

    /// What the compiled role lets through: dangerous calls, calls that
    /// need conditions and have none, executable mappings.
    static func riskFindings(for policy: Policy, interpreter: BPFInterpreter) -> [AuditFinding] {
        var findings: [AuditFinding] = []
        let isJailer = policy.role == SeccompBundle.jailerRole
        if policy.defaultAction.letsCallThrough {
            findings.append(
                AuditFinding(
                    severity: .critical, syscall: nil,
                    message:
                        "the default action \(policy.defaultAction.policyText) lets every unlisted system call through",
                    location: nil))
        }
        for rule in policy.rules {
            func add(_ severity: Severity, _ message: String) {
                findings.append(
                    AuditFinding(severity: severity, syscall: rule.syscall, message: message, location: rule.location))
            }
            let passes = rule.action.letsCallThrough
            if passes, let (severity, reason) = DangerousSyscalls.table[rule.syscall] {
                if isJailer && rule.syscall == "execve" {
                    add(
                        .info,
                        "allowed by design: the jailer execs the VMM under this filter; each thread's own filter, stacked on top, must deny it"
                    )
                } else {
                    add(severity, "dangerous system call allowed: \(reason)")
                }
            }
            if passes && rule.isUnconditional, let severity = DangerousSyscalls.needConditions[rule.syscall] {
                add(severity, "allowed with no argument conditions")
            }
        }
        for (syscall, argument) in DangerousSyscalls.mappingCalls {
            guard let rule = policy.rule(for: syscall),
                let witness = executableWitness(rule, protectionArgument: argument, interpreter: interpreter)
            else { continue }
            let shown = witness.enumerated().map { "arg\($0.offset)=0x\(String($0.element, radix: 16))" }.joined(
                separator: ", ")
            findings.append(
                AuditFinding(
                    severity: .critical, syscall: syscall,
                    message: "can map executable memory: the compiled filter allows \(syscall)(\(shown))",
                    location: rule.location))
        }
        return findings
    }

    /// How the role's rules are written: justifications, rules that change
    /// nothing, duplicated and shadowed alternatives.
    static func writingFindings(for policy: Policy) -> [AuditFinding] {
        var findings: [AuditFinding] = []
        for rule in policy.rules {
            func add(_ severity: Severity, _ message: String) {
                findings.append(
                    AuditFinding(severity: severity, syscall: rule.syscall, message: message, location: rule.location))
            }
            if rule.justification == nil {
                add(.low, "rule has no justification comment")
            }
            if rule.action == policy.defaultAction {
                add(.low, "rule has the default action (\(rule.action.policyText)) and changes nothing")
            }
            for (position, alternative) in rule.alternatives.enumerated() {
                let earlier = rule.alternatives[..<position]
                if earlier.contains(where: { JailerUnion.same($0, alternative) }) {
                    add(.low, "alternative '\(describe(alternative))' is duplicated")
                } else if let wider = rule.alternatives.enumerated().first(where: { other in
                    other.offset != position && !JailerUnion.same(other.element, alternative)
                        && implies(alternative, other.element)
                }) {
                    add(.low, "alternative '\(describe(alternative))' is shadowed by '\(describe(wider.element))'")
                }
            }
        }
        return findings
    }

    /// Most severe first, then by system call.
    static func sorted(_ findings: [AuditFinding]) -> [AuditFinding] {
        findings.sorted { ($0.severity, $1.syscall ?? "") > ($1.severity, $0.syscall ?? "") }
    }

    static func describe(_ alternative: RuleAlternative) -> String {
        alternative.map(\.description).joined(separator: " && ")
    }

    /// Whether every call that satisfies `narrow` also satisfies `wide`:
    /// here, whether each test of `wide` appears in `narrow`.
    static func implies(_ narrow: RuleAlternative, _ wide: RuleAlternative) -> Bool {
        wide.allSatisfy { test in narrow.contains { $0.sameTest(as: test) } }
    }

    /// Searches for arguments that the compiled program lets through with
    /// PROT_EXEC set. Candidates come from the rule's own comparisons (a
    /// value satisfying each alternative), combined with every executable
    /// protection; the interpreter on the compiled BPF decides. A witness is
    /// proof that the filter allows executable memory; finding none among
    /// these candidates is strong evidence, not a proof for all 2^64 values.
    static func executableWitness(_ rule: PolicyRule, protectionArgument: Int, interpreter: BPFInterpreter) -> [UInt64]?
    {
        guard let number = SyscallTable.number(of: rule.syscall) else { return nil }
        func constant(_ name: String) -> UInt64 { UInt64(bitPattern: PolicyConstants.value(named: name)!) }
        let exec = constant("PROT_EXEC"), read = constant("PROT_READ"), write = constant("PROT_WRITE")
        let protections = [exec, read | exec, write | exec, read | write | exec, exec | constant("PROT_GROWSDOWN")]
        var bases: [[UInt64]] = [[UInt64](repeating: 0, count: 6)]
        for alternative in rule.alternatives {
            var arguments = [UInt64](repeating: 0, count: 6)
            for test in alternative { arguments[test.argument] = satisfyingValue(test) }
            bases.append(arguments)
        }
        for base in bases {
            for protection in protections {
                for existing in [0, base[protectionArgument]] {
                    var arguments = base
                    arguments[protectionArgument] = existing | protection
                    let input = SeccompInput(
                        architecture: PolicyCompiler.architecture, syscallNumber: number, arguments: arguments)
                    if interpreter.evaluate(input).letsCallThrough { return arguments }
                }
            }
        }
        return nil
    }

    static func satisfyingValue(_ test: ArgumentComparison) -> UInt64 {
        switch test.op {
        case .equal, .lessOrEqual, .greaterOrEqual: return test.value
        case .less: return test.value &- 1
        case .greater, .notEqual: return test.value &+ 1
        }
    }
}
