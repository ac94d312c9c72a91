import KilnSeccomp

/// What one role saw of one system call during a trace.
public struct CallTrace: Sendable, Equatable {
    public static let distinctValueLimit = 16
    public static let deniedSampleLimit = 8

    /// Calls a rule of the role let through (or answered with its errno).
    public var matched = 0
    /// Calls the role's default would have acted on.
    public var denied = 0
    /// Per alternative of the role's rule (`||`), how many calls it matched
    /// first; empty for an unconditional rule or none.
    public var alternativeHits: [Int] = []
    /// Per argument the kernel reads, the distinct values seen (up to
    /// `distinctValueLimit`), and whether there were more.
    public var values: [[UInt64]] = []
    public var moreValues: [Bool] = []
    /// The first few denied calls' arguments.
    public var deniedSamples: [[UInt64]] = []

    /// How many of a call's arguments the kernel reads (none for the calls
    /// that take none: their registers hold whatever the caller left).
    static func argumentCount(_ name: String, _ arguments: [UInt64]) -> Int {
        TraceRecorder.argumentless.contains(name) ? 0 : min(SyscallTable.argumentCounts[name] ?? 6, arguments.count)
    }

    /// Counts one call as `verdict` (of `policy`) answered it.
    mutating func note(_ call: (number: Int32, arguments: [UInt64]), verdict: RoleVerdict, policy: Policy) {
        let count = Self.argumentCount(SyscallTable.name(of: call.number) ?? "", call.arguments)
        if verdict.byRule {
            matched += 1
            if let alternative = verdict.alternative {
                let total = policy.rules.first { $0.number == call.number }?.alternatives.count ?? 0
                if alternativeHits.count < total { alternativeHits = Array(repeating: 0, count: total) }
                alternativeHits[alternative] += 1
            }
        } else {
            denied += 1
            if deniedSamples.count < Self.deniedSampleLimit {
                deniedSamples.append(Array(call.arguments.prefix(count)))
            }
        }
        note(arguments: call.arguments, count: count)
    }

    mutating func note(arguments: [UInt64], count: Int) {
        if values.isEmpty {
            values = Array(repeating: [], count: count)
            moreValues = Array(repeating: false, count: count)
        }
        for index in 0..<count where !values[index].contains(arguments[index]) {
            if values[index].count < Self.distinctValueLimit {
                values[index].append(arguments[index])
            } else {
                moreValues[index] = true
            }
        }
    }
}

/// One role's calls, by system call number.
public struct RoleTrace: Sendable, Equatable {
    public var calls: [Int32: CallTrace] = [:]
    /// Threads that ran under this role.
    public var threads = 0
}

/// How one role answers one call, evaluated on the policy itself.
public struct RoleVerdict: Equatable, Sendable {
    public var action: SeccompAction
    /// Whether a rule (rather than the default) gave the action.
    public var byRule: Bool
    /// The first alternative of the rule that held.
    public var alternative: Int?
}

/// Accumulates a trace: every call a traced thread makes, under each role in
/// its filter stack (the innermost last). Pure: the tracer feeds it.
public struct TraceRecorder: Sendable {
    public let policies: [String: Policy]
    public private(set) var roles: [String: RoleTrace] = [:]
    /// Calls where the kernel's recording filter and this evaluation of the
    /// policy disagreed on whether a rule matched: a compiler fault.
    public private(set) var disagreements: [String] = []

    public init(policies: [Policy]) {
        self.policies = Dictionary(uniqueKeysWithValues: policies.map { ($0.role, $0) })
    }

    /// How `policy` answers `number(arguments)`, as its compiled filter does;
    /// a comparison with `resolved.placeholder` compares with
    /// `resolved.value`, as the installed program does.
    public static func verdict(
        of policy: Policy, number: Int32, arguments: [UInt64],
        resolved: (placeholder: UInt64, value: UInt64)? = nil
    ) -> RoleVerdict {
        guard let rule = policy.rules.first(where: { $0.number == number }) else {
            return RoleVerdict(action: policy.defaultAction, byRule: false, alternative: nil)
        }
        if rule.isUnconditional { return RoleVerdict(action: rule.action, byRule: true, alternative: nil) }
        let held = rule.alternatives.firstIndex { alternative in
            alternative.allSatisfy { comparison in
                guard let resolved, comparison.value == resolved.placeholder else {
                    return comparison.matches(arguments[comparison.argument])
                }
                var substituted = comparison
                substituted.value = resolved.value
                return substituted.matches(arguments[comparison.argument])
            }
        }
        guard let held else { return RoleVerdict(action: policy.defaultAction, byRule: false, alternative: nil) }
        return RoleVerdict(action: rule.action, byRule: true, alternative: held)
    }

    /// What the kernel decides for a thread with `stack` (outermost first):
    /// the least permissive verdict, the newest filter's among equals.
    public func combinedAction(
        number: Int32, arguments: [UInt64], stack: [String],
        resolved: (placeholder: UInt64, value: UInt64)? = nil
    ) -> SeccompAction {
        var result = SeccompAction.allow
        for role in stack.reversed() {
            guard let policy = policies[role] else { continue }
            let action = Self.verdict(of: policy, number: number, arguments: arguments, resolved: resolved).action
            if action.permissiveness < result.permissiveness { result = action }
        }
        return result
    }

    /// Calls a program made between its exec and its launch filter (the C
    /// library's and the Swift runtime's start-up, and kiln's own first
    /// lines), for a program exec'd under a pre-exec filter ("jailed") and
    /// one exec'd under none ("unjailed"). Each is checked against the
    /// pre-exec role, the only filter start-up can run under.
    public private(set) var startUp: [String: RoleTrace] = [:]
    public static let startUpKinds = ["jailed", "unjailed"]

    /// Records the start-up calls of one program, exec'd under a pre-exec
    /// filter or not, once it installs its launch filter.
    public mutating func recordStartUp(_ calls: [(number: Int32, arguments: [UInt64])], jailed: Bool) {
        guard let policy = policies[SeccompBundle.jailerRole] else { return }
        let kind = jailed ? "jailed" : "unjailed"
        var trace = startUp[kind] ?? RoleTrace()
        trace.threads += 1
        for call in calls {
            let verdict = Self.verdict(of: policy, number: call.number, arguments: call.arguments)
            trace.calls[call.number, default: CallTrace()].note(call, verdict: verdict, policy: policy)
        }
        startUp[kind] = trace
    }

    /// A thread entered `role` (installed its filter).
    public mutating func entered(role: String) {
        roles[role, default: RoleTrace()].threads += 1
    }

    /// Calls that read no argument (their registers hold whatever the caller left).
    static let argumentless: Set<String> = ["gettid", "getpid", "rt_sigreturn", "sched_yield", "restart_syscall"]

    /// Records one call under every role of `stack` and returns what the
    /// real filters would have done. `kernelSaysRule` is the innermost
    /// role's recording filter's answer, checked against the policy.
    @discardableResult
    public mutating func record(
        number: Int32, arguments: [UInt64], stack: [String], kernelSaysRule: Bool?,
        resolved: (placeholder: UInt64, value: UInt64)? = nil
    ) -> SeccompAction {
        let name = SyscallTable.name(of: number) ?? "syscall \(number)"
        let count = CallTrace.argumentCount(name, arguments)
        for (position, role) in stack.enumerated() {
            guard let policy = policies[role] else { continue }
            let verdict = Self.verdict(of: policy, number: number, arguments: arguments, resolved: resolved)
            roles[role, default: RoleTrace()].calls[number, default: CallTrace()]
                .note((number, arguments), verdict: verdict, policy: policy)
            if position == stack.count - 1, let kernelSaysRule, kernelSaysRule != verdict.byRule,
                disagreements.count < 32
            {
                disagreements.append(
                    "role \(role): \(name)(\(arguments.prefix(count).map { "0x" + String($0, radix: 16) }.joined(separator: ", "))): "
                        + "the compiled filter says \(kernelSaysRule ? "a rule" : "the default"), the policy \(verdict.byRule ? "a rule" : "the default")"
                )
            }
        }
        return combinedAction(number: number, arguments: arguments, stack: stack, resolved: resolved)
    }
}
