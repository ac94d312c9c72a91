#if canImport(Glibc)
import Glibc
#endif
import CKiln
import KilnSystem

/// Step 6 (namespaces(7)). The network namespace is joined or created first,
/// while the host's paths are still visible; then mount, IPC, UTS and cgroup
/// namespaces are unshared, and the PID namespace when asked (it takes effect
/// for the next child, made at step 9).
enum Namespaces {
    static func enter(_ options: JailOptions) throws {
        if let netns = options.netns {
            let fd = try FileDescriptor.open(netns, O_RDONLY)
            try fd.closeAfter { fd in
                _ = try check("setns(CLONE_NEWNET)", subject: netns) { ckiln_setns(fd.rawValue, ckiln_clone_newnet()) }
            }
        } else if options.newNetNamespace {
            try check("unshare(CLONE_NEWNET)") { ckiln_unshare(ckiln_clone_newnet()) }
        }
        // The cgroup namespace roots the VMM's view at its own cgroup (step 4 ran before).
        var flags = ckiln_clone_newns() | ckiln_clone_newipc() | ckiln_clone_newuts() | ckiln_clone_newcgroup()
        if options.newPIDNamespace { flags |= ckiln_clone_newpid() }
        try check("unshare(CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS|CLONE_NEWCGROUP\(options.newPIDNamespace ? "|CLONE_NEWPID" : ""))") {
            ckiln_unshare(flags)
        }
        // The host's name stays outside: the jail's UTS namespace is named after the id.
        try check("sethostname", subject: options.id) { ckiln_sethostname(options.id, options.id.utf8.count) }
    }
}
