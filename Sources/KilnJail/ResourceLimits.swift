import CKiln
import KilnSystem

/// Step 5: setrlimit(2), soft and hard alike, so the VMM cannot raise them.
/// The jailer itself runs under each limit until it execs: a rollback first
/// restores the previous values (root may raise them again), so that it
/// never runs short of descriptors under a small no-file.
enum ResourceLimits {
    static func apply(_ limits: [ResourceLimit], ledger: CleanupLedger) throws {
        for limit in limits {
            let resource = limit.kind == .fileSize ? ckiln_rlimit_fsize() : ckiln_rlimit_nofile()
            var soft: UInt64 = 0, hard: UInt64 = 0
            try check("getrlimit", subject: limit.kind.rawValue) { ckiln_getrlimit(resource, &soft, &hard) }
            try check("setrlimit", subject: "\(limit.kind.rawValue)=\(limit.value)") {
                ckiln_setrlimit(resource, limit.value, limit.value)
            }
            ledger.record("resource limit \(limit.kind.rawValue)") {
                try check("setrlimit", subject: "\(limit.kind.rawValue) back to \(soft)") {
                    ckiln_setrlimit(resource, soft, hard)
                }
            }
        }
    }
}
