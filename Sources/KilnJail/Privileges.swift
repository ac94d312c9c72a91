import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Step 10 (capabilities(7), "Effect of user ID changes on capabilities").
enum Privileges {
    static func drop(uid: UInt32, gid: UInt32) throws {
        // Root without capabilities first: the VMM may run as uid 0 (Kata
        // asks for it), and then an exec must not hand root its capabilities
        // back. Setting securebits needs CAP_SETPCAP, dropped below.
        try check("prctl(PR_SET_SECUREBITS)") { ckiln_lock_root_out_of_capabilities() }
        // The bounding set first: dropping from it needs CAP_SETPCAP, which
        // the id change below takes away.
        let lastCapability = ckiln_cap_last_cap()
        for capability in 0...lastCapability {
            try check("prctl(PR_CAPBSET_DROP)", subject: "capability \(capability)") { ckiln_capbset_drop(capability) }
        }
        try check("prctl(PR_CAP_AMBIENT_CLEAR_ALL)") { ckiln_cap_ambient_clear_all() }
        try check("setgroups([])") { ckiln_setgroups_empty() }
        try check("setresgid", subject: "\(gid)") { ckiln_setresgid(gid) }
        try check("setresuid", subject: "\(uid)") { ckiln_setresuid(uid) }
        // Leaving uid 0 clears the effective and permitted sets but not the
        // inheritable one: clear all three explicitly.
        try check("capset (all sets empty)") { ckiln_capset_clear() }
        try check("prctl(PR_SET_NO_NEW_PRIVS)") { ckiln_set_no_new_privs() }
        try verify(uid: uid, gid: gid, lastCapability: lastCapability)
    }

    /// Reads back what the kernel now holds: a drop that silently did less
    /// than asked must stop the launch.
    static func verify(uid: UInt32, gid: UInt32, lastCapability: Int32) throws {
        var effective: UInt64 = 0, permitted: UInt64 = 0, inheritable: UInt64 = 0
        try check("capget") { ckiln_capget(&effective, &permitted, &inheritable) }
        guard effective == 0, permitted == 0, inheritable == 0 else {
            throw JailFailure(
                .privileges,
                "capabilities remain after the drop: effective \(effective), permitted \(permitted), inheritable \(inheritable)"
            )
        }
        for capability in 0...lastCapability
        where ckiln_capbset_read(capability) != 0 || ckiln_cap_ambient_is_set(capability) != 0 {
            throw JailFailure(.privileges, "capability \(capability) remains in the bounding or ambient set")
        }
        let securebits = ckiln_root_lockout_securebits()
        guard ckiln_get_securebits() & securebits == securebits else {
            throw JailFailure(.privileges, "the securebits that keep uid 0 from regaining capabilities are not set")
        }
        var realUID: uid_t = 0, effectiveUID: uid_t = 0, savedUID: uid_t = 0
        var realGID: gid_t = 0, effectiveGID: gid_t = 0, savedGID: gid_t = 0
        try check("getresuid") { ckiln_getresuid(&realUID, &effectiveUID, &savedUID) }
        try check("getresgid") { ckiln_getresgid(&realGID, &effectiveGID, &savedGID) }
        guard [realUID, effectiveUID, savedUID].allSatisfy({ $0 == uid }),
            [realGID, effectiveGID, savedGID].allSatisfy({ $0 == gid }),
            getgroups(0, nil) == 0
        else {
            throw JailFailure(.privileges, "the ids did not change to \(uid):\(gid) everywhere")
        }
    }
}
