import KilnJSON
import KilnSeccomp

/// What a trace says about each role, for people (text) and tools (JSON):
/// the rules that let nothing through (candidates for removal, with their
/// justification), the calls the role would have refused (the workload
/// would have died), and the argument values of calls a rule allows
/// without conditions (candidates for one).
public struct TraceReport: Sendable {
    public struct UnusedRule: Sendable {
        public var syscall: String
        public var condition: String?
        public var justification: String?
    }

    public struct DeniedCall: Sendable {
        public var syscall: String
        public var count: Int
        public var samples: [[UInt64]]
    }

    public struct ArgumentValues: Sendable {
        public var syscall: String
        public var calls: Int
        public var values: [[UInt64]]
        public var more: [Bool]
    }

    public struct RoleSummary: Sendable {
        public var role: String
        public var threads: Int
        public var calls: Int
        public var ruleCount: Int
        public var used: [(syscall: String, calls: Int)]
        /// The argument values of every call a rule let through (conditioned or not).
        public var usedValues: [ArgumentValues]
        public var unusedRules: [UnusedRule]
        /// `syscall: alternative` for each alternative of a conditioned rule that matched nothing.
        public var unusedAlternatives: [(syscall: String, alternative: String)]
        public var denied: [DeniedCall]
        public var unconditioned: [ArgumentValues]
    }

    public var status: Int32
    public var roles: [RoleSummary]
    /// Start-up, exec to the launch role, jailed and unjailed
    /// (`TraceRecorder.startUpKinds`), checked against the pre-exec role;
    /// its unused rules are left out (that role also covers every thread).
    public var startUp: [RoleSummary]
    public var disagreements: [String]

    /// Every denied call of every role entered during the trace, and of
    /// start-up (a call there the pre-exec role lacks kills a jailed kiln).
    public var deniedCount: Int {
        (roles + startUp).reduce(0) { $0 + $1.denied.reduce(0) { $0 + $1.count } }
    }

    public init(recorder: TraceRecorder, status: Int32) {
        self.status = status
        disagreements = recorder.disagreements
        roles = recorder.policies.keys.sorted().map { role in
            Self.summary(policy: recorder.policies[role]!, trace: recorder.roles[role] ?? RoleTrace())
        }
        startUp =
            recorder.policies[SeccompBundle.jailerRole].map { policy in
                TraceRecorder.startUpKinds.map { kind in
                    var summary = Self.summary(policy: policy, trace: recorder.startUp[kind] ?? RoleTrace())
                    summary.role = kind
                    summary.unusedRules = []
                    summary.unusedAlternatives = []
                    return summary
                }
            } ?? []
    }

    static func name(_ number: Int32) -> String { SyscallTable.name(of: number) ?? "syscall \(number)" }

    static func summary(policy: Policy, trace: RoleTrace) -> RoleSummary {
        var summary = RoleSummary(
            role: policy.role, threads: trace.threads,
            calls: trace.calls.values.reduce(0) { $0 + $1.matched + $1.denied },
            ruleCount: policy.rules.count, used: [], usedValues: [], unusedRules: [], unusedAlternatives: [],
            denied: [], unconditioned: [])
        for rule in policy.rules.sorted(by: { $0.syscall < $1.syscall }) {
            let call = trace.calls[rule.number]
            guard let call, call.matched > 0 else {
                summary.unusedRules.append(
                    UnusedRule(
                        syscall: rule.syscall, condition: rule.conditionText,
                        justification: rule.justification))
                continue
            }
            summary.used.append((rule.syscall, call.matched))
            let values = ArgumentValues(
                syscall: rule.syscall, calls: call.matched, values: call.values, more: call.moreValues)
            summary.usedValues.append(values)
            if rule.isUnconditional { summary.unconditioned.append(values) }
            for (index, alternative) in rule.alternatives.enumerated()
            where index >= call.alternativeHits.count || call.alternativeHits[index] == 0 {
                summary.unusedAlternatives.append(
                    (rule.syscall, alternative.map(\.description).joined(separator: " && ")))
            }
        }
        for (number, call) in trace.calls.sorted(by: { name($0.key) < name($1.key) }) where call.denied > 0 {
            summary.denied.append(DeniedCall(syscall: name(number), count: call.denied, samples: call.deniedSamples))
        }
        return summary
    }

    static func valueText(_ value: UInt64) -> String {
        value < 4096 ? String(value) : "0x" + String(value, radix: 16)
    }

    static func valuesText(_ values: ArgumentValues) -> String {
        values.values.enumerated().map { index, seen in
            let list = seen.sorted().map(valueText).joined(separator: ", ")
            return values.more[index]
                ? "arg\(index): over \(CallTrace.distinctValueLimit) values"
                : "arg\(index) in {\(list)}"
        }.joined(separator: "; ")
    }

    // MARK: Text

    public func text() -> String {
        var out = "command exited with status \(status)\n"
        for disagreement in disagreements { out += "DISAGREEMENT \(disagreement)\n" }
        for summary in startUp {
            out +=
                "\n== start-up, \(summary.role) (exec to the launch role, checked against the \(SeccompBundle.jailerRole) role): "
            out +=
                summary.threads == 0
                ? "no such program during the trace\n"
                : "\(summary.threads) program(s), \(summary.calls) calls, \(summary.used.count) system calls\n"
                    + Self.details(summary, startUp: true)
        }
        for role in roles {
            out += "\n== role \(role.role): "
            out +=
                role.threads == 0
                ? "not entered during the trace\n"
                : "\(role.threads) thread(s), \(role.calls) calls, \(role.used.count) of \(role.ruleCount) rules used\n"
                    + Self.details(role)
        }
        return out
    }

    /// A role's refused calls, unused rules and alternatives, argument
    /// values and uses; for start-up, every used call's argument values and
    /// no unused rules.
    static func details(_ role: RoleSummary, startUp: Bool = false) -> String {
        var out = "  calls not allowed (the workload would have died):"
        if role.denied.isEmpty {
            out += " none\n"
        } else {
            out += "\n"
            for denied in role.denied {
                let samples = denied.samples.map { "(" + $0.map(Self.valueText).joined(separator: ", ") + ")" }
                out += "    \(denied.syscall) x\(denied.count): \(samples.joined(separator: " "))\n"
            }
        }
        if !startUp {
            out += "  rules that allowed nothing:"
            if role.unusedRules.isEmpty {
                out += " none\n"
            } else {
                out += "\n"
                for rule in role.unusedRules {
                    out += "    \(rule.syscall)\(rule.condition.map { ": " + $0 } ?? "")\n"
                    out += "      why: \(rule.justification ?? "(no justification)")\n"
                }
            }
        }
        if !role.unusedAlternatives.isEmpty {
            out += "  alternatives that matched nothing:\n"
            for (syscall, alternative) in role.unusedAlternatives { out += "    \(syscall): \(alternative)\n" }
        }
        // Calls that read no argument (getpid, gettid) have no values to show.
        let values = (startUp ? role.usedValues : role.unconditioned).filter { !$0.values.isEmpty }
        if !values.isEmpty {
            out += startUp ? "  argument values:\n" : "  argument values of calls allowed without conditions:\n"
            for values in values {
                out += "    \(values.syscall) x\(values.calls): \(Self.valuesText(values))\n"
            }
        }
        out += "  used: " + role.used.map { "\($0.syscall) x\($0.calls)" }.joined(separator: ", ") + "\n"
        return out
    }

    // MARK: JSON

    public func json() -> String {
        func numbers(_ values: [UInt64]) -> JSONValue { .array(values.map { .integer($0) }) }
        func arguments(_ values: ArgumentValues) -> JSONValue {
            .array(
                values.values.indices.map { index in
                    .object([("values", numbers(values.values[index].sorted())), ("more", .bool(values.more[index]))])
                })
        }
        func summary(_ role: RoleSummary) -> (key: String, value: JSONValue) {
            (
                role.role,
                .object([
                    ("threads", .integer(role.threads)),
                    ("calls", .integer(role.calls)),
                    ("rule_count", .integer(role.ruleCount)),
                    ("used", .object(role.used.map { ($0.syscall, .integer($0.calls)) })),
                    ("used_arguments", .object(role.usedValues.map { ($0.syscall, arguments($0)) })),
                    (
                        "unused_rules",
                        .array(
                            role.unusedRules.map { rule in
                                .object([
                                    ("syscall", .string(rule.syscall)),
                                    ("condition", rule.condition.map { .string($0) } ?? .null),
                                    ("justification", rule.justification.map { .string($0) } ?? .null),
                                ])
                            })
                    ),
                    (
                        "unused_alternatives",
                        .array(
                            role.unusedAlternatives.map {
                                .object([("syscall", .string($0.syscall)), ("alternative", .string($0.alternative))])
                            })
                    ),
                    (
                        "denied",
                        .array(
                            role.denied.map { denied in
                                .object([
                                    ("syscall", .string(denied.syscall)), ("count", .integer(denied.count)),
                                    ("samples", .array(denied.samples.map(numbers))),
                                ])
                            })
                    ),
                    (
                        "unconditioned",
                        .array(
                            role.unconditioned.map { values in
                                .object([
                                    ("syscall", .string(values.syscall)), ("calls", .integer(values.calls)),
                                    ("arguments", arguments(values)),
                                ])
                            })
                    ),
                ])
            )
        }
        return JSONValue.object([
            ("status", .integer(status)),
            ("denied_count", .integer(deniedCount)),
            ("disagreements", .array(disagreements.map { .string($0) })),
            ("start_up", .object(startUp.map(summary))),
            ("roles", .object(roles.map(summary))),
        ]).encoded(pretty: true) + "\n"
    }
}
