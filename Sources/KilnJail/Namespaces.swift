import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Step 6 (namespaces(7)). The network namespace is joined or created first,
/// while the host's paths are still visible; then mount, IPC and UTS
/// namespaces are unshared, and the PID namespace when asked (it takes effect
/// for the next child, made at step 9). The cgroup namespace comes last of
/// all, just before the privilege drop (`enterCgroupNamespace`).
enum Namespaces {
    /// `root`, the jail root, becomes the working folder and is closed: the
    /// working folder is the one handle on it that crosses into the new mount
    /// namespace (unshare(2) moves it to that namespace's copy of its mount),
    /// where a descriptor opened before keeps naming the host's mount, which
    /// open_tree(2) and mount(2) refuse to bind (EINVAL).
    static func enter(_ options: JailOptions, root: FileDescriptor, ledger: CleanupLedger) throws {
        try root.closeAfter { root in try check("fchdir", subject: "the jail root") { fchdir(root.rawValue) } }
        if let netns = options.netns {
            let fd = try FileDescriptor.open(netns, O_RDONLY)
            try fd.closeAfter { fd in
                _ = try check("setns(CLONE_NEWNET)", subject: netns) { ckiln_setns(fd.rawValue, ckiln_clone_newnet()) }
            }
        } else if options.newNetNamespace {
            try check("unshare(CLONE_NEWNET)") { ckiln_unshare(ckiln_clone_newnet()) }
        }
        // A rollback must leave the jail's mount namespace first: there the
        // jail root and its /dev are mount points, which rmdir refuses (EBUSY).
        let hostMounts = try FileDescriptor.open("/proc/self/ns/mnt", O_RDONLY)
        var flags = ckiln_clone_newns() | ckiln_clone_newipc() | ckiln_clone_newuts()
        if options.newPIDNamespace { flags |= ckiln_clone_newpid() }
        do {
            try check("unshare(CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS\(options.newPIDNamespace ? "|CLONE_NEWPID" : ""))")
            {
                ckiln_unshare(flags)
            }
        } catch {
            hostMounts.close()
            throw error
        }
        ledger.record("the jail's mount namespace") {
            try check("setns(CLONE_NEWNS)", subject: "the host's mount namespace") {
                ckiln_setns(hostMounts.rawValue, ckiln_clone_newns())
            }
        }
        // The host's name stays outside: the jail's UTS namespace is named after the id.
        try check("sethostname", subject: options.id) { ckiln_sethostname(options.id, options.id.utf8.count) }
    }

    /// Roots the VMM's view of cgroups at its own cgroup (joined at step 4),
    /// hiding the host's hierarchy paths.
    static func enterCgroupNamespace() throws {
        try check("unshare(CLONE_NEWCGROUP)") { ckiln_unshare(ckiln_clone_newcgroup()) }
    }
}
