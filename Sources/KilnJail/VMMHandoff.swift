import KilnSeccomp
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Steps 11 and 12: the pre-exec filter, then execve of the VMM.
///
/// The VMM's command line, in the flags `kiln` accepts (Firecracker's names
/// where Firecracker has one):
///
///     /<exec-file-name> --id ID [--seccomp-filter /seccomp.kbundle]
///         --start-time-us N --start-time-cpu-us N [VMM arguments after --]
///
/// The bundle is a read-only file (root's, 0444) inside the jail; the start
/// times are the jailer's CLOCK_MONOTONIC and process CPU time in
/// microseconds when its `main` began, so the VMM can report the overhead.
public struct VMMHandoff {
    public let arguments: [String]

    public init(options: JailOptions, startMonotonicNanoseconds: UInt64, startCPUNanoseconds: UInt64) {
        let paths = options.paths
        // Firecracker's jailer passes no seccomp flag, so its callers may pass
        // one after `--` (the Go SDK's --no-seccomp): theirs wins, and the
        // jailer's pre-exec filter still applies.
        let chosen = options.vmmArguments.contains { $0 == "--no-seccomp" || $0 == "--seccomp-filter" }
        arguments =
            [paths.execInJail, "--id", options.id] + (chosen ? [] : ["--seccomp-filter", paths.bundleInJail])
            + [
                "--start-time-us", String(startMonotonicNanoseconds / 1000),
                "--start-time-cpu-us", String(startCPUNanoseconds / 1000),
            ] + options.vmmArguments
    }

    /// Installs the bundle's jailer program on this thread (the only thread),
    /// then execs with an empty environment. Returns only on failure.
    func exec(bundle: SeccompBundle) throws -> Never {
        // Build every C string before the filter is installed: nothing after
        // it should need more than exec itself.
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        var envp: [UnsafeMutablePointer<CChar>?] = [nil]
        // Files the VMM creates (its API socket, logs) are its own alone.
        umask(0o077)
        do {
            try SeccompFilter.install(role: SeccompBundle.jailerRole, from: bundle)
        } catch {
            throw JailFailure(.seccomp, "installing the \(SeccompBundle.jailerRole) seccomp program: \(error)")
        }
        execve(arguments[0], &argv, &envp)
        throw JailFailure(.exec, "\(SystemError.current("execve", subject: arguments[0]))")
    }
}
