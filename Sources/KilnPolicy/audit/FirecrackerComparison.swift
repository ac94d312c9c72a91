/// One of our roles beside Firecracker's filter for the same thread role.
public struct FirecrackerComparison: Sendable {
    public var role: String
    public var ours: [String]
    public var theirs: [String]
    public var onlyOurs: [String]
    public var onlyTheirs: [String]
    /// Allowed by both; we test arguments, Firecracker does not.
    public var conditionedOnlyByUs: [String]
    /// Allowed by both; Firecracker tests arguments, we do not.
    public var conditionedOnlyByThem: [String]
    private var oursConditional: Set<String> = []
    private var theirsConditional: Set<String> = []

    public init(ours policy: Policy, theirs role: FirecrackerFilter.Role) {
        self.role = policy.role
        let allowed = policy.rules.filter { $0.action.letsCallThrough }
        ours = policy.allowedSyscalls
        theirs = role.syscalls
        let ourSet = Set(ours), theirSet = Set(theirs)
        onlyOurs = ours.filter { !theirSet.contains($0) }
        onlyTheirs = theirs.filter { !ourSet.contains($0) }
        let shared = ours.filter { theirSet.contains($0) }
        let conditional = Set(allowed.filter { !$0.isUnconditional }.map(\.syscall))
        conditionedOnlyByUs = shared.filter { conditional.contains($0) && !role.isConditional($0) }
        conditionedOnlyByThem = shared.filter { !conditional.contains($0) && role.isConditional($0) }
        oursConditional = conditional
        theirsConditional = Set(theirs.filter(role.isConditional))
    }

    public var shared: Int { ours.count - onlyOurs.count }

    /// How one side treats a system call in the side-by-side table.
    public enum Treatment: String, Sendable {
        case absent = "-"
        case unconditional = "allowed"
        case conditional = "allowed if args"
    }

    /// Every system call either side allows, with how each side allows it.
    public var sideBySide: [(syscall: String, kiln: Treatment, firecracker: Treatment)] {
        let ourSet = Set(ours), theirSet = Set(theirs)
        return Array(ourSet.union(theirSet)).sorted().map { name in
            func treatment(_ allowed: Bool, conditional: Bool) -> Treatment {
                allowed ? (conditional ? .conditional : .unconditional) : .absent
            }
            return (
                name,
                treatment(ourSet.contains(name), conditional: oursConditional.contains(name)),
                treatment(theirSet.contains(name), conditional: theirsConditional.contains(name))
            )
        }
    }
}
