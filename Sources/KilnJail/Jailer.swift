import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// The launch: the steps of `JailStep`, in order (numbered below). Every
/// step's failure is a `JailFailure` filed under that step, and rolls back
/// everything the launch created so far.
public enum Jailer {
    /// Where the pid-file-writing parent ends up when the launch forked
    /// (`--daemonize`, `--new-pid-ns`); the VMM side never returns.
    public enum Outcome { case forkedParentDone }

    public static func launch(
        _ options: JailOptions, builtinBundle: () -> [UInt8],
        startMonotonicNanoseconds: UInt64, startCPUNanoseconds: UInt64
    ) throws -> Outcome {
        // 1. Validate everything before creating anything.
        let launch = try during(.validation) { try JailValidation.validate(options, builtinBundle: builtinBundle) }
        for notice in launch.notices { FileDescriptor.standardError.write(message: "kiln-jailer: \(notice)\n") }
        let handoff = VMMHandoff(
            options: options, startMonotonicNanoseconds: startMonotonicNanoseconds,
            startCPUNanoseconds: startCPUNanoseconds)

        // 2. Clean the process state: nothing inherited crosses into the jail.
        try during(.processState) {
            try check("close_range(3, ~0)") { ckiln_close_range(3, UInt32.max) }
            try check("clearenv") { clearenv() }
            try check("reset signal mask and dispositions") { ckiln_reset_signals() }
            umask(0) // every mode below is exact; the VMM gets 077 just before exec
        }

        let ledger = CleanupLedger()
        do {
            // 3. The jail folder, the exec file and the bundle.
            let folder = try during(.jailFolder) { try JailFolder.create(launch, ledger: ledger) }
            let devNull =
                options.daemonize ? try during(.daemonize) { try FileDescriptor.open("/dev/null", O_RDWR) } : nil
            // 4-8: cgroups, namespaces, the root, the devices.
            try during(.cgroups) { try Cgroups.join(launch.cgroupTargets, ledger: ledger) }
            try during(.namespaces) { try Namespaces.enter(options, root: folder.root, ledger: ledger) }
            try during(.rootSwitch) { try RootSwitch.pivot(rootPath: options.paths.root) }
            try during(.deviceNodes) {
                try DeviceNode.create(DeviceNode.required, uid: options.uid, gid: options.gid)
            }
            // 9. Daemonize or enter the PID namespace, and the pid file.
            let role = try during(.daemonize) {
                try Daemon.become(daemonize: options.daemonize, pidFile: folder.pidFile, devNull: devNull)
            }
            if role == .parentDone { return .forkedParentDone }
            devNull?.close()
            // Entered last: from inside a cgroup namespace a process can no
            // longer move to a cgroup outside it, which a rollback of step 4 needs.
            try during(.namespaces) { try Namespaces.enterCgroupNamespace() }
            // 10-12: no privileges, the pre-exec filter, the VMM.
            // The limits are the VMM's: set once the jailer opens and writes
            // nothing more, as steps 6 to 9 need descriptors (no-file) and
            // the pid file (fsize: past it, write(2) raises SIGXFSZ).
            try during(.resourceLimits) { try ResourceLimits.apply(options.effectiveResourceLimits, ledger: ledger) }
            try during(.privileges) { try Privileges.drop(uid: options.uid, gid: options.gid) }
            try handoff.exec(bundle: launch.bundle)
        } catch let failure as JailFailure {
            throw rollingBack(ledger, failure, options)
        } catch {
            throw rollingBack(ledger, JailFailure(.exec, "\(error)"), options)
        }
    }

    /// Undoes the launch and names whatever could not be undone (after the
    /// privilege drop the jailer no longer may): `kiln-jailer cleanup` can.
    static func rollingBack(_ ledger: CleanupLedger, _ failure: JailFailure, _ options: JailOptions) -> JailFailure {
        let leftovers = ledger.rollBack()
        guard !leftovers.isEmpty else { return failure }
        return JailFailure(
            failure.step,
            failure.message + "; left behind: " + leftovers.joined(separator: "; ")
                + "; run `kiln-jailer cleanup --id \(options.id) --exec-file \(options.execFile) --chroot-base-dir \(options.chrootBaseDir)"
                + (options.parentCgroup.map { " --parent-cgroup \($0)" } ?? "") + "`")
    }
}
