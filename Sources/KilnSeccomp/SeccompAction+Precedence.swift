extension SeccompAction {
    /// Where the kernel ranks this action when several filters disagree:
    /// the lowest rank wins (kernel/seccomp.c, seccomp_run_filters; the
    /// order of SECCOMP_RET_* in linux/seccomp.h). Higher is more permissive.
    public var permissiveness: Int {
        switch self {
        case .killProcess: return 0
        case .killThread: return 1
        case .trap: return 2
        case .errno: return 3
        case .trace: return 5
        case .log: return 6
        case .allow: return 7
        case .unknown: return 0 // the kernel treats unknown actions as kill-process
        }
    }

    /// Whether the system call runs (allow and log both let it through).
    public var letsCallThrough: Bool { self == .allow || self == .log }
}
