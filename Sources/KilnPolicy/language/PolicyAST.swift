import KilnSeccomp
import KilnSystem

/// `==`, `!=`, `<`, `<=`, `>`, `>=`: seccomp compares unsigned.
public enum ComparisonOperator: String, Hashable, Sendable, CaseIterable {
    case equal = "=="
    case notEqual = "!="
    case less = "<"
    case lessOrEqual = "<="
    case greater = ">"
    case greaterOrEqual = ">="

    func holds(_ lhs: UInt64, _ rhs: UInt64) -> Bool {
        switch self {
        case .equal: return lhs == rhs
        case .notEqual: return lhs != rhs
        case .less: return lhs < rhs
        case .lessOrEqual: return lhs <= rhs
        case .greater: return lhs > rhs
        case .greaterOrEqual: return lhs >= rhs
        }
    }
}

/// One test of one argument, as the compiler emits it:
/// `(arg & mask) op value`, on the argument's width (32 or 64 bits; see
/// `SyscallTable.argumentWidth`). `mask` is nil for a plain comparison.
public struct ArgumentComparison: Hashable, Sendable, CustomStringConvertible {
    public var argument: Int
    public var width: Int
    public var mask: UInt64?
    public var op: ComparisonOperator
    public var value: UInt64
    /// How the policy spelled the value and mask, for reports.
    public var valueText: String
    public var maskText: String?

    /// All the bits of the argument the kernel reads.
    public var widthMask: UInt64 { width == 32 ? 0xFFFF_FFFF : .max }

    /// Whether the argument value `raw` (all 64 bits, as seccomp sees it)
    /// passes, exactly as the compiled filter decides: equalities look at the
    /// argument's width only; `<` and `<=` (the only orderings allowed on a
    /// 32-bit argument) compare all 64 bits, so junk in the upper half fails.
    public func matches(_ raw: UInt64) -> Bool {
        switch op {
        case .equal: return raw & widthMask & (mask ?? .max) == value
        default: return op.holds(raw, value)
        }
    }

    public var description: String {
        let subject = maskText.map { "arg\(argument) & \($0)" } ?? "arg\(argument)"
        return "\(subject) \(op.rawValue) \(valueText)"
    }

    /// Equality modulo spelling.
    func sameTest(as other: ArgumentComparison) -> Bool {
        argument == other.argument && width == other.width && mask == other.mask && op == other.op
            && value == other.value
    }
}

/// One alternative of a rule: every comparison must hold (`&&`).
public typealias RuleAlternative = [ArgumentComparison]

/// One rule: a system call, when it is permitted, and what happens then.
public struct PolicyRule: Sendable {
    public var syscall: String
    public var number: Int32
    /// The call matches when any alternative holds (`||`); an empty list
    /// means the rule has no conditions.
    public var alternatives: [RuleAlternative]
    public var action: SeccompAction
    /// The comment that says why the thread needs this call.
    public var justification: String?
    public var location: SourceLocation
    /// The condition as written (normalised spacing), for reports.
    public var conditionText: String?

    public var isUnconditional: Bool { alternatives.isEmpty }
}

/// A parsed file, before its includes are resolved.
public struct PolicyFile: Sendable {
    public var name: String
    public var defaultAction: SeccompAction?
    public var defaultLocation: SourceLocation?
    public var includes: [(path: String, location: SourceLocation)]
    public var rules: [PolicyRule]
}

/// A role's complete policy: the file with `@default`, its includes merged in.
public struct Policy: Sendable {
    public var role: String
    public var defaultAction: SeccompAction
    public var rules: [PolicyRule]

    public init(role: String, defaultAction: SeccompAction, rules: [PolicyRule]) {
        self.role = role
        self.defaultAction = defaultAction
        self.rules = rules
    }

    public func rule(for syscall: String) -> PolicyRule? { rules.first { $0.syscall == syscall } }

    /// The system calls that run for some arguments (allow or log), sorted.
    public var allowedSyscalls: [String] {
        rules.filter { $0.action.letsCallThrough }.map(\.syscall).sorted()
    }
}

extension SeccompAction {
    /// The action as a policy spells it: `errno(ENOTTY)` rather than `errno(25)`.
    public var policyText: String {
        if case let .errno(value) = self, let name = ErrnoNames.name(of: Int32(value)) { return "errno(\(name))" }
        return description
    }
}
