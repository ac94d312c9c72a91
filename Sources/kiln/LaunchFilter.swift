import CKiln
import KilnBuiltinPolicies
import KilnSeccomp
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// kiln's own seccomp filter, on the main thread from the first lines of
/// Swift code, before any flag, config byte or API job is read: the built-in
/// bundle's `launch` role (policies/launch.policy), the thread roles' union
/// plus start-up, without execve. Every thread kiln creates inherits it and
/// stacks its own role on top, so from here on no thread of kiln can exec.
///
/// --no-seccomp (development only) leaves an unfiltered kiln unfiltered: it is
/// looked for as one whole argument before `--`, the one flag read ahead of
/// the filter. A kiln that already runs under a filter (the jailer's, which
/// lets its callers pass --no-seccomp, as Firecracker's Go SDK does) gets the
/// launch role all the same: stacked on the jailer's union it only takes
/// exec away, so no caller's flag leaves kiln able to exec.
///
/// Landlock scoping comes first, with or without seccomp: kiln never signals
/// another process or uses an abstract socket, so a compromised kiln sharing
/// a uid and the host's PID or network namespace with another tenant can do
/// neither (where the kernel has Landlock ABI 6; SECURITY.md).
enum LaunchFilter {
    static func install(arguments: [String]) {
        if ckiln_landlock_scope_signals_and_abstract_sockets() < 0 {
            FileDescriptor.standardError.write(
                message:
                    "kiln: cannot confine itself with Landlock scoping: \(SystemError.current("landlock_restrict_self"))\n"
            )
            exit(1)
        }
        let noSeccomp = arguments.prefix(while: { $0 != "--" }).contains("--no-seccomp")
        guard !noSeccomp || ckiln_seccomp_mode() == 2 else { return }
        do {
            // Before the filter: the C library's lazy start-up (malloc arenas,
            // the time zone), and the SIGSYS reporter so a trap says what it was.
            try SeccompFilter.prepareProcess()
            guard ckiln_sigsys_install() == 0 else { throw SeccompBundleError.missingRole("SIGSYS reporter") }
            let bundle = try SeccompBundle(decoding: BuiltinPolicies.bytes)
            guard let program = bundle.program(for: SeccompBundle.launchRole) else {
                throw SeccompBundleError.missingRole(SeccompBundle.launchRole)
            }
            ckiln_sigsys_set_thread_role(SeccompBundle.launchRole)
            try SeccompFilter.install(program, role: SeccompBundle.launchRole)
        } catch {
            FileDescriptor.standardError.write(message: "kiln: cannot install its launch seccomp filter: \(error)\n")
            exit(1)
        }
    }
}
