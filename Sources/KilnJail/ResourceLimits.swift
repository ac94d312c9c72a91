import CKiln
import KilnSystem

/// Step 5: setrlimit(2), soft and hard alike, so the VMM cannot raise them.
enum ResourceLimits {
    static func apply(_ limits: [ResourceLimit]) throws {
        for limit in limits {
            let resource = limit.kind == .fileSize ? ckiln_rlimit_fsize() : ckiln_rlimit_nofile()
            try check("setrlimit", subject: "\(limit.kind.rawValue)=\(limit.value)") {
                ckiln_setrlimit(resource, limit.value, limit.value)
            }
        }
    }
}
