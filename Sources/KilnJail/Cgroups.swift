import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Step 4: create the jail's cgroups, write the knobs, move the process in.
enum Cgroups {
    static func join(_ targets: [CgroupTarget], ledger: CleanupLedger) throws {
        for target in targets { try join(target, ledger: ledger) }
    }

    static func join(_ target: CgroupTarget, ledger: CleanupLedger) throws {
        if target.joinsExisting {
            // The caller's own cgroup: joined as it is, and never removed.
            let existing = try HostDirectory.open(target.path)
            defer { existing.close() }
            try explainingBusy(target.path) {
                try HostDirectory.write("0", to: "cgroup.procs", in: existing, subject: target.path + "/cgroup.procs")
            }
            return
        }
        let jail = try HostDirectory.retryingIfAParentVanishes { try create(target, ledger: ledger) }
        defer { jail.close() }
        let walked = target.path
        for setting in target.settings {
            try HostDirectory.write(setting.value, to: setting.file, in: jail, subject: walked + "/" + setting.file)
        }
        // On v1, "0" written to `tasks` moves the writing thread alone, which
        // spares the kernel's global threadgroup lock and the RCU grace period
        // its first writer waits for (milliseconds on a busy host; cgroup v1
        // `cgroup_procs_write_start`). The jailer is single-threaded, so that
        // thread is the whole process; were it not, unshare(CLONE_NEWNS) at
        // step 6 would fail (it refuses a shared fs_struct) and roll this back.
        let membership = target.version == .v1 ? "tasks" : "cgroup.procs"
        try explainingBusy(walked) {
            try HostDirectory.write("0", to: membership, in: jail, subject: walked + "/" + membership)
        }
    }

    /// Creates `<mount>/<parent>/<id>`, delegating controllers on the way
    /// down on v2, and returns the jail's cgroup folder.
    static func create(_ target: CgroupTarget, ledger: CleanupLedger) throws -> FileDescriptor {
        let hierarchy = try HostDirectory.open(target.mount)
        var parent = hierarchy
        var walked = target.mount
        for (depth, component) in target.components.enumerated() {
            let isJail = depth == target.components.count - 1
            if target.version == .v2 {
                // cgroup v2 (Documentation/admin-guide/cgroup-v2.rst, "Enabling
                // and Disabling"): a controller's files appear in a cgroup only
                // when every ancestor delegates it through cgroup.subtree_control.
                let enable = target.controllers.map { "+" + $0 }.joined(separator: " ")
                try explainingBusy(walked) {
                    try HostDirectory.write(
                        enable, to: "cgroup.subtree_control", in: parent, subject: walked + "/cgroup.subtree_control")
                }
            }
            let subject = walked + "/" + component
            let enclosing = parent
            let created = try HostDirectory.makeDirectory(component, in: enclosing, subject: subject)
            if isJail {
                guard created else {
                    throw JailFailure(.cgroups, "the cgroup \(subject) already exists: an id is never reused")
                }
                ledger.record("cgroup \(subject)") {
                    // A cgroup with a member cannot be removed: move back to the
                    // hierarchy's root first ("0" is the writing process).
                    try? HostDirectory.write(
                        "0", to: "cgroup.procs", in: hierarchy, subject: target.mount + "/cgroup.procs")
                    try HostDirectory.removeDirectory(component, in: enclosing, subject: subject)
                }
            } else if created {
                ledger.record("cgroup \(subject)") {
                    try HostDirectory.removeIfEmpty(component, in: enclosing, subject: subject)
                }
            }
            parent = try HostDirectory.open(component, in: enclosing)
            if created && target.inheritsCpuset {
                try inheritCpuset(from: enclosing, into: parent, subject: subject)
            }
            // Kept only where a rollback needs it: one descriptor per path
            // component would count against the jailer's own no-file.
            if !created && !isJail && enclosing != hierarchy { enclosing.close() }
            walked = subject
        }
        return parent
    }

    /// cgroup v2's no-internal-process rule (cgroup-v2.rst, "No Internal
    /// Process Constraint"): a cgroup other than the root either holds
    /// processes or delegates controllers to its children, never both, and
    /// the kernel says only EBUSY (or EOPNOTSUPP, joining a cgroup below one
    /// that does both).
    static func explainingBusy(_ cgroup: String, _ body: () throws -> Void) throws {
        do { try body() } catch let error as SystemError where error.errno == EBUSY || error.errno == EOPNOTSUPP {
            throw JailFailure(
                .cgroups,
                "\(error): cgroup v2's no-internal-process rule: a cgroup other than the root holds"
                    + " processes or delegates controllers to its children, not both, and \(cgroup) would do both;"
                    + " give a --parent-cgroup that holds no process (with --cgroup) or one whose"
                    + " cgroup.subtree_control is empty (without --cgroup)")
        }
    }

    /// cgroup v1 cpuset (Documentation/admin-guide/cgroup-v1/cpusets.rst): a
    /// new cpuset starts with no CPUs and no memory nodes, and no task may join
    /// it until both are set. Copy the parent's, as Firecracker's jailer does.
    static func inheritCpuset(from parent: FileDescriptor, into child: FileDescriptor, subject: String) throws {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = try HostDirectory.read(file, in: child, subject: subject + "/" + file)
            guard current.allSatisfy({ $0.isWhitespace }) else { continue }
            let inherited = try HostDirectory.read(file, in: parent, subject: subject + "/../" + file)
            try HostDirectory.write(inherited.trimmingNewline, to: file, in: child, subject: subject + "/" + file)
        }
    }
}

extension String {
    var trimmingNewline: String {
        var text = self
        while text.last == "\n" { text.removeLast() }
        return text
    }
}
