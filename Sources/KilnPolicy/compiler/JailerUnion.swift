import KilnSeccomp
import KilnSystem

/// The jailer's pre-exec filter: the union of every thread role and of the
/// launch role, plus what exec and the VMM's start-up need before its launch
/// filter (the jailer role's own rules, from jailer.policy).
///
/// Filters stack and the kernel takes the most restrictive verdict, so this
/// filter must let through everything any thread role lets through:
/// - a system call unconditional in any role is unconditional here;
/// - otherwise the alternatives of every role are joined with ||;
/// - where roles disagree on the action, the most permissive one wins.
/// System calls no role names get the jailer's default action (kill-process),
/// not the thread roles' trap: nothing the VMM is meant to do reaches it.
public enum JailerUnion {
    public static func union(of threadRoles: [Policy], with jailer: Policy) -> Policy {
        var order: [String] = []
        var rules: [String: PolicyRule] = [:]
        var conditionTexts: [String: [String]] = [:]
        for policy in [jailer] + threadRoles.sorted(by: { $0.role < $1.role }) {
            for rule in policy.rules {
                guard var merged = rules[rule.syscall] else {
                    var first = rule
                    first.justification = rule.justification.map { "[\(policy.role)] \($0)" }
                    rules[rule.syscall] = first
                    conditionTexts[rule.syscall] = rule.conditionText.map { [$0] } ?? []
                    order.append(rule.syscall)
                    continue
                }
                if rule.action.permissiveness > merged.action.permissiveness { merged.action = rule.action }
                if merged.isUnconditional || rule.isUnconditional {
                    merged.alternatives = []
                    merged.conditionText = nil
                } else {
                    for alternative in rule.alternatives
                    where !merged.alternatives.contains(where: { same($0, alternative) }) {
                        merged.alternatives.append(alternative)
                    }
                    if let text = rule.conditionText, !conditionTexts[rule.syscall, default: []].contains(text) {
                        conditionTexts[rule.syscall, default: []].append(text)
                    }
                    let texts = conditionTexts[rule.syscall]!
                    merged.conditionText =
                        texts.count == 1 ? texts[0] : texts.map { "(\($0))" }.joined(separator: " || ")
                }
                if let reason = rule.justification {
                    merged.justification = [merged.justification, "[\(policy.role)] \(reason)"].compactMap { $0 }
                        .joined(separator: " ")
                }
                rules[rule.syscall] = merged
            }
        }
        return Policy(role: jailer.role, defaultAction: jailer.defaultAction, rules: order.map { rules[$0]! })
    }

    static func same(_ a: RuleAlternative, _ b: RuleAlternative) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.sameTest(as: $1) }
    }
}

/// From a folder of policies to the bundle the jailer hands to the VMM.
public enum PolicyBundleBuilder {
    /// The roles a bundle must hold: the VMM's three thread roles and the jailer's.
    public static let requiredRoles = ["api", "vcpu", SeccompBundle.jailerRole, "vmm"]

    /// Roles compiled as the union of the thread roles with their own
    /// rules: the jailer's pre-exec filter, and kiln's own launch filter
    /// (optional, so a policy folder without it still compiles).
    public static let unionRoles = [SeccompBundle.jailerRole, SeccompBundle.launchRole]

    /// Every role as it is compiled: the union roles replaced by their unions.
    public static func resolvedRoles(_ policies: [Policy]) throws -> [Policy] {
        let names = policies.map(\.role)
        for role in requiredRoles where !names.contains(role) {
            throw PolicyError(
                "no \(role).policy: the bundle needs the roles \(requiredRoles.joined(separator: ", "))", at: nil)
        }
        let threads = policies.filter { !unionRoles.contains($0.role) }
        let unions = policies.filter { unionRoles.contains($0.role) }
        // The jailer's filter stays under launch's for kiln's whole life, so
        // it takes in launch's own rules as well as the threads'.
        let launch = policies.filter { $0.role == SeccompBundle.launchRole }
        return threads
            + unions.map { role in
                JailerUnion.union(of: role.role == SeccompBundle.jailerRole ? threads + launch : threads, with: role)
            }
    }

    public static func bundle(for policies: [Policy]) throws -> SeccompBundle {
        var programs: [String: [BPFInstruction]] = [:]
        for policy in try resolvedRoles(policies) {
            programs[policy.role] = try PolicyCompiler.compile(policy)
        }
        return try SeccompBundle(architecture: PolicyCompiler.architecture, programs: programs)
    }
}

extension PolicyBundleBuilder {
    /// `kiln-policy compile`: loads, compiles and writes the bundle. The file
    /// is written atomically and only after every role compiled, so a bad
    /// policy leaves whatever was at `output` untouched.
    @discardableResult
    public static func compile(directory: String, output: String) throws -> SeccompBundle {
        let bundle = try bundle(for: try PolicyLoader.load(directory: directory))
        try FileSystem.writeAtomically(output, bundle.encoded())
        return bundle
    }
}
