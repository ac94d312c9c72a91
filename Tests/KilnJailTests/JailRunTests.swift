import CKiln
import KilnJSON
import KilnSystem
import Testing

@testable import KilnJail

#if canImport(Glibc)
    import Glibc
#endif

/// The real jailer on the real probe, inspected from the host.
@Suite(
    .serialized,
    .enabled(if: JailHarness.canJail, "needs root and the kiln-jailer and kiln-jail-probe executables (swift build)"))
struct JailRunTests {
    static let memoryLimit = 64 << 20

    /// A TCP listener on the host's 127.0.0.1: the probe's loopback target.
    final class Listener {
        let fd: Int32
        let port: UInt16
        init() throws {
            let fd = try check("socket") {
                socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            }
            self.fd = fd
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            try withUnsafeMutablePointer(to: &address) { pointer in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                    try check("bind") { bind(fd, raw, length) }
                    try check("listen") { listen(fd, 8) }
                    try check("getsockname") { getsockname(fd, raw, &length) }
                }
            }
            port = UInt16(bigEndian: address.sin_port)
        }
        deinit { close(fd) }
    }

    static func namespace(_ kind: String, of pid: String) -> String? { JailHarness.link("/proc/\(pid)/ns/\(kind)") }

    func report(from running: JailHarness.Running) throws -> JSONValue {
        guard let line = running.readLine() else {
            running.stop()
            let finished = running.wait()
            Issue.record("no report from the probe; jailer status \(finished.status): \(finished.error)")
            throw JailFailure(.exec, "no report")
        }
        return try JSONParser.parse(line)
    }

    @Test(.enabled(if: JailHarness.v1PidsAndMemory, "needs the cgroup v1 pids and memory controllers"))
    func jailsTheProbeAndEveryEscapeFails() throws {
        let sandbox = try JailHarness.Sandbox("probe-1")
        defer { sandbox.tearDown() }
        let listener = try Listener()
        let running = try JailHarness.spawn(
            sandbox.launchArguments(
                [
                    "--cgroup", "pids.max=16", "--cgroup", "memory.limit_in_bytes=\(Self.memoryLimit)", "--cgroup",
                    "cpuset.cpus=0",
                    "--resource-limit", "fsize=1048576", "--resource-limit", "no-file=128", "--new-net-ns",
                ],
                vmm: [
                    "--fork-limit", "64", "--memory-bytes", "\(2 * Self.memoryLimit)", "--loopback-port",
                    "\(listener.port)",
                ]),
            blocking: [SIGUSR1, SIGTERM])
        defer { running.stop() }
        let report = try report(from: running)
        let pid = "\(running.pid)"

        // From the host: ids, capabilities, no_new_privs, seccomp mode.
        let status = try JailHarness.status(of: running.pid)
        #expect(status["Uid"] == "64123\t64123\t64123\t64123")
        #expect(status["Gid"] == "64124\t64124\t64124\t64124")
        #expect(status["Groups"] == "")
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(status[set] == "0000000000000000", "\(set)")
        }
        #expect(status["NoNewPrivs"] == "1")
        #expect(status["Seccomp"] == "2")
        // The jailer's filter and the one the probe stacked on it, over any
        // the test runner itself inherited.
        let inherited = Int(try JailHarness.status(of: getpid())["Seccomp_filters"] ?? "0") ?? 0
        #expect(status["Seccomp_filters"] == "\(inherited + 2)")
        // Namespaces: new mount, IPC, UTS, net and cgroup; the caller's PID namespace.
        for kind in ["mnt", "ipc", "uts", "net", "cgroup"] {
            #expect(
                Self.namespace(kind, of: pid) != nil
                    && Self.namespace(kind, of: pid) != Self.namespace(kind, of: "self"), "\(kind)")
        }
        #expect(Self.namespace("pid", of: pid) == Self.namespace("pid", of: "self"))
        // cgroups: the probe sits in <parent>/<id> of both hierarchies.
        let cgroups = try FileSystem.readText("/proc/\(pid)/cgroup")
        for controller in ["pids", "memory", "cpuset"] {
            #expect(
                cgroups.split(separator: "\n").contains {
                    $0.hasSuffix(":\(controller):/\(sandbox.parentCgroup)/\(sandbox.id)")
                }, "\(cgroups)")
        }
        // The root: only the binary, the bundle and the device nodes.
        #expect(
            try FileSystem.listDirectory("/proc/\(pid)/root") == ["dev", "kiln-jail-probe", "run", "seccomp.kbundle"])
        // No userfaultfd even where the host has one: kiln has no snapshots.
        let devices = ["kvm", "net", "urandom"]
        #expect(try FileSystem.listDirectory("/proc/\(pid)/root/dev") == devices)
        #expect(try FileSystem.listDirectory("/proc/\(pid)/root/dev/net") == ["tun"])
        #expect(
            try FileSystem.listDirectory(sandbox.paths.root) == ["dev", "kiln-jail-probe", "run", "seccomp.kbundle"])
        // The nodes live on the jail's private tmpfs, never on the host's disk.
        #expect(try FileSystem.listDirectory(sandbox.paths.root + "/dev").isEmpty)

        // From inside: what the probe saw.
        #expect(report["uid"] == .integer(64123) && report["euid"] == .integer(64123))
        #expect(report["gid"] == .integer(64124) && report["supplementaryGroups"] == .integer(0))
        #expect(
            report["capabilities"]
                == .object([
                    ("effective", .integer(0)), ("permitted", .integer(0)),
                    ("inheritable", .integer(0)), ("bounding", .integer(0)), ("ambient", .integer(0)),
                ]))
        #expect(report["noNewPrivs"] == .integer(1) && report["seccompMode"] == .integer(2))
        #expect(report["seccompMarker"] == .string("EDQUOT"), "the jailer's program is not the one in force")
        // The VMM's own filter stacks on the jailer's: both apply afterwards.
        #expect(
            report["stackedFilter"]
                == .object([
                    ("installed", .bool(true)), ("getppid", .string("EOPNOTSUPP")), ("sync", .string("EDQUOT")),
                ]))
        #expect(report["hostname"] == .string(sandbox.id))
        // The caller's blocked signals do not reach the VMM; its umask is private.
        #expect(report["blockedSignals"] == .array([]) && report["ignoredSignals"] == .array([]))
        #expect(report["umask"] == .string("77"))
        // A new v1 cpuset starts empty: the jailer copied its parent's memory nodes.
        let cpusetFolder = "/sys/fs/cgroup/cpuset/\(sandbox.parentCgroup)/\(sandbox.id)"
        if FileSystem.isDirectory(cpusetFolder) {
            #expect(try FileSystem.readText(cpusetFolder + "/cpuset.cpus") == "0\n")
            #expect(try FileSystem.readText(cpusetFolder + "/cpuset.mems") != "\n")
        }
        #expect(report["openFds"] == .array([.integer(0), .integer(1), .integer(2)]))
        // Only what the probe's own start-up sets: the jailer passed none.
        #expect(report["environment"] == .array([.string("SWIFT_BACKTRACE=enable=no,swift-backtrace=/nonexistent")]))
        #expect(
            report["rlimits"]
                == .object([
                    ("fsize", .object([("soft", .integer(1_048_576)), ("hard", .integer(1_048_576))])),
                    ("nofile", .object([("soft", .integer(128)), ("hard", .integer(128))])),
                ]))
        guard case let .array(arguments)? = report["arguments"] else { Issue.record("no arguments"); return }
        #expect(
            Array(arguments.prefix(5))
                == ["/kiln-jail-probe", "--id", sandbox.id, "--seccomp-filter", "/seccomp.kbundle"].map(
                    JSONValue.string))
        #expect(
            arguments.count > 8 && arguments[5] == .string("--start-time-us")
                && arguments[7] == .string("--start-time-cpu-us"))
        let rootEntries = try #require(report["root"])
        #expect(
            rootEntries
                == .array([
                    .object([
                        ("name", .string("dev")), ("type", .string("directory")), ("mode", .string("755")),
                        ("uid", .integer(0)), ("gid", .integer(0)),
                    ]),
                    .object([
                        ("name", .string("kiln-jail-probe")), ("type", .string("file")), ("mode", .string("755")),
                        ("uid", .integer(0)), ("gid", .integer(0)),
                    ]),
                    .object([
                        ("name", .string("run")), ("type", .string("directory")), ("mode", .string("700")),
                        ("uid", .integer(64123)), ("gid", .integer(64124)),
                    ]),
                    .object([
                        ("name", .string("seccomp.kbundle")), ("type", .string("file")), ("mode", .string("444")),
                        ("uid", .integer(0)), ("gid", .integer(0)),
                    ]),
                ]))
        guard case let .array(devEntries)? = report["dev"], case let .array(netEntries)? = report["devNet"] else {
            Issue.record("no /dev listing"); return
        }
        for entry in devEntries + netEntries where entry["type"] == .string("char") {
            #expect(
                entry["mode"] == .string("600") && entry["uid"] == .integer(64123) && entry["gid"] == .integer(64124),
                "\(entry)")
        }
        #expect(devEntries.filter { $0["type"] == .string("char") }.count + netEntries.count == devices.count)

        // Every escape attempt failed.
        guard case let .object(escapes)? = report["escapes"] else { Issue.record("no escapes"); return }
        #expect(
            Set(escapes.map(\.key)) == [
                "readHostPath", "mount", "mountCgroupFS", "fsmount", "chroot", "ptrace", "setuid0", "setgid0", "mknod",
                "unshareNamespaces", "unshareUser", "setns", "writeCgroupFiles", "loopback",
                "forkPastPidsMax", "allocatePastMemoryLimit",
            ])
        for (name, result) in escapes { #expect(result["succeeded"] == .bool(false), "escape \(name): \(result)") }
        #expect(escapes.first { $0.key == "loopback" }?.value["errno"] == .string("ENETUNREACH"))
        #expect(escapes.first { $0.key == "forkPastPidsMax" }?.value["errno"] == .string("EAGAIN"))
        #expect(escapes.first { $0.key == "allocatePastMemoryLimit" }?.value["childSignal"] == .integer(Int(SIGKILL)))
        #expect(escapes.first { $0.key == "chroot" }?.value["climbStayedAtRoot"] == .bool(true))

        // While the probe (the "VMM") runs, cleanup refuses and keeps its jail.
        let early = try JailHarness.run(sandbox.cleanupArguments)
        #expect(early.status != 0 && early.error.contains("still runs in the jail"), "\(early.error)")
        #expect(FileSystem.exists(sandbox.paths.root + "/kiln-jail-probe"))

        // The probe ends when its stdin closes; then cleanup leaves nothing.
        running.closeInput()
        let finished = running.wait()
        #expect(finished.status == 0, "\(finished.error)")
        #expect(!FileSystem.exists(sandbox.paths.pidFile), "no fork, so no pid file: the VMM is the jailer's own pid")
        let cleanup = try JailHarness.run(sandbox.cleanupArguments)
        #expect(cleanup.status == 0, "\(cleanup.error)")
        #expect(!FileSystem.exists(sandbox.paths.execFolder))
        #expect(sandbox.cgroupFolders.allSatisfy { !$0.hasSuffix("/" + sandbox.id) }, "\(sandbox.cgroupFolders)")
        let again = try JailHarness.run(sandbox.cleanupArguments)
        #expect(again.status == 0, "cleanup is not safe to run twice: \(again.error)")
    }

    /// The v2 path (delegation through every ancestor's cgroup.subtree_control)
    /// on the host's cgroup2 mount: pids on a pure-v2 host, hugetlb on this
    /// hybrid one, whose cgroup2 mount holds nothing else.
    static var v2Setting: (file: String, value: String)? {
        let layout = CgroupLayout(mountInfo: (try? FileSystem.readText("/proc/self/mountinfo")) ?? "")
        guard let mount = layout.v2Mount, let text = try? FileSystem.readText(mount + "/cgroup.controllers") else {
            return nil
        }
        let controllers = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        if controllers.contains("pids") { return ("pids.max", "16") }
        if controllers.contains("hugetlb") && FileSystem.exists("/sys/kernel/mm/hugepages/hugepages-2048kB") {
            return ("hugetlb.2MB.max", "0")
        }
        return nil
    }

    @Test(.enabled(if: v2Setting != nil, "needs a cgroup2 mount offering pids or hugetlb"))
    func joinsACgroupV2Hierarchy() throws {
        let setting = try #require(Self.v2Setting)
        let controller = String(setting.file.prefix { $0 != "." })
        // The jailer enables the controller in every ancestor and leaves it so,
        // as an orchestrator would want; the test gives the host back as it was.
        let rootControl =
            try #require(CgroupLayout(mountInfo: try FileSystem.readText("/proc/self/mountinfo")).v2Mount)
            + "/cgroup.subtree_control"
        let enabledBefore = try FileSystem.readText(rootControl).split(whereSeparator: { $0 == " " || $0 == "\n" })
            .contains(Substring(controller))
        defer {
            if !enabledBefore, let fd = try? FileDescriptor.open(rootControl, O_WRONLY) {
                try? fd.writeAll(Array("-\(controller)".utf8))
                fd.close()
            }
        }
        let sandbox = try JailHarness.Sandbox("v2-1")
        defer { sandbox.tearDown() }
        let running = try JailHarness.spawn(
            sandbox.launchArguments(["--cgroup-version", "2", "--cgroup", "\(setting.file)=\(setting.value)"]))
        defer { running.stop() }
        _ = try report(from: running)
        let layout = CgroupLayout(mountInfo: try FileSystem.readText("/proc/self/mountinfo"))
        let mount = try #require(layout.v2Mount)
        let folder = "\(mount)/\(sandbox.parentCgroup)/\(sandbox.id)"
        #expect(try FileSystem.readText(folder + "/" + setting.file) == setting.value + "\n")
        #expect(try FileSystem.readText(folder + "/cgroup.procs") == "\(running.pid)\n")
        for ancestor in [mount, "\(mount)/\(sandbox.parentCgroup)"] {
            #expect(
                try FileSystem.readText(ancestor + "/cgroup.subtree_control").split(separator: " ").map {
                    $0.trimmingCharacters(in: "\n")
                }.contains(controller), "\(ancestor)")
        }
        #expect(
            try FileSystem.readText("/proc/\(running.pid)/cgroup").contains(
                "0::/\(sandbox.parentCgroup)/\(sandbox.id)\n"))
        running.closeInput()
        #expect(running.wait().status == 0)
        #expect(try JailHarness.run(sandbox.cleanupArguments).status == 0)
        #expect(!FileSystem.exists(folder))
    }

    /// Firecracker's v2 case without --cgroup: the VMM joins the caller's
    /// own --parent-cgroup as it is, and no cgroup of the jail's id is made.
    @Test(.enabled(if: v2Setting != nil, "needs a cgroup2 mount offering pids or hugetlb"))
    func joinsAnExistingV2ParentWithoutCgroupSettings() throws {
        let sandbox = try JailHarness.Sandbox("v2-join")
        defer { sandbox.tearDown() }
        let mount = try #require(CgroupLayout(mountInfo: try FileSystem.readText("/proc/self/mountinfo")).v2Mount)
        let parent = "\(mount)/\(sandbox.parentCgroup)"
        try check("mkdir", subject: parent) { mkdir(parent, 0o755) }
        let running = try JailHarness.spawn(sandbox.launchArguments(["--cgroup-version", "2"]))
        defer { running.stop() }
        _ = try report(from: running)
        #expect(try FileSystem.readText(parent + "/cgroup.procs") == "\(running.pid)\n")
        #expect(try FileSystem.readText("/proc/\(running.pid)/cgroup").contains("0::/\(sandbox.parentCgroup)\n"))
        #expect(!FileSystem.exists(parent + "/" + sandbox.id))
        running.closeInput()
        #expect(running.wait().status == 0)
        #expect(try JailHarness.run(sandbox.cleanupArguments).status == 0)
        // The caller's cgroup stays: it was never the jailer's.
        #expect(FileSystem.isDirectory(parent))
    }

    /// As Firecracker's jailer: a --parent-cgroup that does not exist is no
    /// error without --cgroup; the VMM stays in the jailer's cgroup, and the
    /// jailer says so on stderr.
    @Test(.enabled(if: v2Setting != nil, "needs a cgroup2 mount offering pids or hugetlb"))
    func staysInItsCgroupWhenTheV2ParentIsMissing() throws {
        let sandbox = try JailHarness.Sandbox("v2-absent")
        defer { sandbox.tearDown() }
        let mount = try #require(CgroupLayout(mountInfo: try FileSystem.readText("/proc/self/mountinfo")).v2Mount)
        let own = try FileSystem.readText("/proc/self/cgroup").split(separator: "\n").first { $0.hasPrefix("0::") }
        let running = try JailHarness.spawn(sandbox.launchArguments(["--cgroup-version", "2"]))
        defer { running.stop() }
        _ = try report(from: running)
        let theirs = try FileSystem.readText("/proc/\(running.pid)/cgroup").split(separator: "\n").first {
            $0.hasPrefix("0::")
        }
        #expect(theirs != nil && theirs == own)
        #expect(!FileSystem.exists("\(mount)/\(sandbox.parentCgroup)"))
        running.closeInput()
        let finished = running.wait()
        #expect(finished.status == 0)
        #expect(
            finished.error.contains(
                "kiln-jailer: --parent-cgroup \(sandbox.parentCgroup): \(mount)/\(sandbox.parentCgroup) does not exist"),
            "\(finished.error)")
        #expect(try JailHarness.run(sandbox.cleanupArguments).status == 0)
    }

    /// A --parent-cgroup that holds a process cannot delegate controllers to
    /// the jail's cgroup (cgroup v2's no-internal-process rule): refused
    /// before any ancestor's cgroup.subtree_control is touched.
    @Test(.enabled(if: v2Setting != nil, "needs a cgroup2 mount offering pids or hugetlb"))
    func refusesAV2ParentThatHoldsAProcess() throws {
        let setting = try #require(Self.v2Setting)
        let sandbox = try JailHarness.Sandbox("v2-busy")
        defer { sandbox.tearDown() }
        let mount = try #require(CgroupLayout(mountInfo: try FileSystem.readText("/proc/self/mountinfo")).v2Mount)
        let parent = "\(mount)/\(sandbox.parentCgroup)"
        try check("mkdir", subject: parent) { mkdir(parent, 0o755) }
        // The process the parent holds: a child that waits to be killed.
        let member = fork()
        if member == 0 {
            pause()
            _exit(0)
        }
        defer {
            kill(member, SIGKILL)
            var status: Int32 = 0
            waitpid(member, &status, 0)
        }
        let procs = try FileDescriptor.open(parent + "/cgroup.procs", O_WRONLY)
        try procs.closeAfter { try $0.writeAll(Array("\(member)".utf8)) }
        let refused = try JailHarness.run(
            sandbox.launchArguments(["--cgroup-version", "2", "--cgroup", "\(setting.file)=\(setting.value)"]))
        #expect(refused.status != 0)
        #expect(
            refused.error.contains("the cgroup \(parent) holds processes")
                && refused.error.contains("no-internal-process"),
            "\(refused.error)")
        #expect(try FileSystem.readText(parent + "/cgroup.subtree_control").allSatisfy { $0 == "\n" })
        #expect(!FileSystem.exists(parent + "/" + sandbox.id) && !FileSystem.exists(sandbox.paths.jailFolder))
    }

    @Test func joinsTheCallersNetworkNamespaceWhenGivenOne() throws {
        let sandbox = try JailHarness.Sandbox("netns-1")
        defer { sandbox.tearDown() }
        let listener = try Listener()
        let running = try JailHarness.spawn(
            sandbox.launchArguments(
                ["--netns", "/proc/\(getpid())/ns/net"],
                vmm: ["--loopback-port", "\(listener.port)"]))
        defer { running.stop() }
        let report = try report(from: running)
        #expect(Self.namespace("net", of: "\(running.pid)") == Self.namespace("net", of: "self"))
        #expect(Self.namespace("mnt", of: "\(running.pid)") != Self.namespace("mnt", of: "self"))
        // The control case: the same connection that fails in a new namespace succeeds here.
        guard case let .object(escapes)? = report["escapes"] else { Issue.record("no escapes"); return }
        #expect(escapes.first { $0.key == "loopback" }?.value["succeeded"] == .bool(true))
        running.closeInput()
        #expect(running.wait().status == 0)
        #expect(try JailHarness.run(sandbox.cleanupArguments).status == 0)
        #expect(!FileSystem.exists(sandbox.paths.jailFolder))
    }

    /// A failure after the root switch (step 9: fork refused by pids.max=1)
    /// must still remove every folder and cgroup the launch made.
    @Test(.enabled(if: JailHarness.v1PidsAndMemory, "needs the cgroup v1 pids controller"))
    func rollsBackAFailureInsideTheJail() throws {
        let sandbox = try JailHarness.Sandbox("late-failure")
        defer { sandbox.tearDown() }
        let finished = try JailHarness.run(
            sandbox.launchArguments(["--cgroup", "pids.max=1", "--daemonize", "--new-net-ns"]))
        #expect(finished.status == JailStep.daemonize.exitCode, "\(finished.error)")
        #expect(finished.error.contains("fork: Resource temporarily unavailable (EAGAIN)"), "\(finished.error)")
        #expect(!finished.error.contains("left behind"), "\(finished.error)")
        #expect(!FileSystem.exists(sandbox.base), "left \((try? FileSystem.listDirectory(sandbox.base)) ?? [])")
        #expect(sandbox.cgroupFolders.isEmpty, "left cgroups \(sandbox.cgroupFolders)")
    }

    /// The same late failure under a small descriptor limit: the limit is
    /// the VMM's, so neither the jailer's steps nor its rollback run short
    /// (they did when it was set at step 5: EMFILE, then half a rollback).
    @Test(.enabled(if: JailHarness.v1PidsAndMemory, "needs the cgroup v1 pids controller"), arguments: [8, 10, 12, 16])
    func rollsBackUnderASmallDescriptorLimit(_ limit: Int) throws {
        let sandbox = try JailHarness.Sandbox("late-failure-nofile-\(limit)")
        defer { sandbox.tearDown() }
        let finished = try JailHarness.run(
            sandbox.launchArguments(
                ["--cgroup", "pids.max=1", "--daemonize", "--new-net-ns", "--resource-limit", "no-file=\(limit)"]))
        #expect(finished.status == JailStep.daemonize.exitCode, "\(finished.error)")
        #expect(finished.error.contains("fork: Resource temporarily unavailable (EAGAIN)"), "\(finished.error)")
        #expect(!finished.error.contains("left behind"), "\(finished.error)")
        #expect(!FileSystem.exists(sandbox.base), "left \((try? FileSystem.listDirectory(sandbox.base)) ?? [])")
        #expect(sandbox.cgroupFolders.isEmpty, "left cgroups \(sandbox.cgroupFolders)")
    }

    /// A small descriptor or file size limit binds the VMM, not the jailer:
    /// the launch (forking, with a pid file longer than fsize) succeeds and
    /// the VMM runs under both limits.
    @Test func launchesUnderSmallLimits() throws {
        let sandbox = try JailHarness.Sandbox("small-limits")
        defer { sandbox.tearDown() }
        let running = try JailHarness.spawn(
            sandbox.launchArguments(
                ["--new-pid-ns", "--resource-limit", "no-file=8", "--resource-limit", "fsize=1"]))
        defer { running.stop() }
        let line = try #require(running.readLine(), "no report")
        let report = try JSONParser.parse(line)
        #expect(
            report["rlimits"]
                == .object([
                    ("fsize", .object([("soft", .integer(1)), ("hard", .integer(1))])),
                    ("nofile", .object([("soft", .integer(8)), ("hard", .integer(8))])),
                ]))
        running.closeInput()
        let finished = running.wait()
        #expect(finished.status == 0, "\(finished.error)")
        #expect(try FileSystem.readText(sandbox.paths.pidFile).hasSuffix("\n"), "the pid file was cut short")
        #expect(try JailHarness.run(sandbox.cleanupArguments).status == 0)
    }

    /// The base folder may sit under a symbolic link (as /var/run does);
    /// what the jailer creates under it never follows one.
    @Test func acceptsABaseFolderBehindALink() throws {
        let sandbox = try JailHarness.Sandbox("linked-base")
        defer { sandbox.tearDown() }
        try check("mkdir") { mkdir(sandbox.folder + "/real", 0o755) }
        try check("symlink") { symlink(sandbox.folder + "/real", sandbox.folder + "/link") }
        var arguments = sandbox.launchArguments(vmm: ["--no-wait"])
        arguments[arguments.firstIndex(of: "--chroot-base-dir")! + 1] = sandbox.folder + "/link"
        let finished = try JailHarness.run(arguments)
        #expect(finished.status == 0, "\(finished.error)")
        #expect(FileSystem.isDirectory(sandbox.folder + "/real/kiln-jail-probe/\(sandbox.id)/root"))
        var cleanup = sandbox.cleanupArguments
        cleanup[cleanup.firstIndex(of: "--chroot-base-dir")! + 1] = sandbox.folder + "/link"
        #expect(try JailHarness.run(cleanup).status == 0)
        #expect(try FileSystem.listDirectory(sandbox.folder + "/real").isEmpty)

        // A link planted where the jailer creates its own folder is refused.
        try check("symlink") { symlink("/etc", sandbox.folder + "/real/kiln-jail-probe") }
        let planted = try JailHarness.run(arguments)
        #expect(planted.status == JailStep.validation.exitCode, "\(planted.error)")
        #expect(
            planted.error.contains("the exec file's folder \(sandbox.folder)/link/kiln-jail-probe is a symbolic link"),
            "\(planted.error)")
        #expect(try FileSystem.listDirectory(sandbox.folder + "/real") == ["kiln-jail-probe"])
    }

    /// A base on another file system than the exec file (here a tmpfs):
    /// link(2) fails with EXDEV, and so does copy_file_range(2) between file
    /// systems of different types; the file is copied by read and write.
    @Test func copiesTheExecFileOntoABaseOnAnotherFileSystem() throws {
        let sandbox = try JailHarness.Sandbox("tmpfs-base")
        defer { sandbox.tearDown() }
        let mountPoint = sandbox.folder + "/tmpfs"
        try check("mkdir") { mkdir(mountPoint, 0o755) }
        try check("mount tmpfs", subject: mountPoint) {
            ckiln_mount("kiln-test", mountPoint, "tmpfs", 0, "mode=755,size=64m")
        }
        defer { _ = ckiln_umount2(mountPoint, ckiln_mnt_detach()) }
        var arguments = sandbox.launchArguments(vmm: ["--no-wait"])
        arguments[arguments.firstIndex(of: "--chroot-base-dir")! + 1] = mountPoint + "/jails"
        let finished = try JailHarness.run(arguments)
        #expect(finished.status == 0, "\(finished.error)")
        #expect(
            finished.output.contains("\"name\":\"kiln-jail-probe\""), "the probe did not report: \(finished.output)")
        let copy = mountPoint + "/jails/kiln-jail-probe/\(sandbox.id)/root/kiln-jail-probe"
        #expect(try FileSystem.readFile(copy) == FileSystem.readFile(JailHarness.probe))
    }

    /// Launches and cleanups of sibling jails interleave: cleanup removes the
    /// shared exec folder once empty, while another launch may be creating its
    /// own jail beneath it. The window is narrow (a few microseconds), so this
    /// is a smoke test of the interleaving, not proof of the retry that covers it.
    @Test(.enabled(if: JailHarness.v1PidsAndMemory, "needs the cgroup v1 pids controller"))
    func siblingLaunchesAndCleanupsInterleave() throws {
        let sandbox = try JailHarness.Sandbox("siblings")
        defer { sandbox.tearDown() }
        func arguments(_ id: String) -> [String] {
            var launch = sandbox.launchArguments(["--cgroup", "pids.max=8"], vmm: ["--no-wait"])
            launch[launch.firstIndex(of: "--id")! + 1] = id
            return launch
        }
        func cleanup(_ id: String) -> [String] {
            var arguments = sandbox.cleanupArguments
            arguments[arguments.firstIndex(of: "--id")! + 1] = id
            return arguments
        }
        var previous: [String] = []
        for round in 0..<6 {
            let ids = (0..<5).map { "sibling-\(round)-\($0)" }
            let running =
                try ids.map { try JailHarness.spawn(arguments($0)) }
                + previous.map { try JailHarness.spawn(cleanup($0)) }
            for process in running {
                process.closeInput()
                let finished = process.wait()
                #expect(finished.status == 0, "\(finished.error)")
            }
            previous = ids
        }
        for id in previous { #expect(try JailHarness.run(cleanup(id)).status == 0) }
        #expect(!FileSystem.exists(sandbox.paths.execFolder))
        #expect(
            sandbox.cgroupFolders.allSatisfy { $0.hasSuffix("/" + sandbox.parentCgroup) }, "\(sandbox.cgroupFolders)")
    }

    /// Kata's Firecracker driver (virtcontainers/fc.go) launches the jailer
    /// with --node 0 --uid 0 --gid 0 --daemonize: the VMM then runs as root,
    /// as under Firecracker's jailer, but without a capability in any set,
    /// with no_new_privs and the securebits that keep an exec as root from
    /// regaining any (checked by the jailer before it execs).
    @Test func runsTheVMMAsRootWithoutCapabilitiesAsKataAsks() throws {
        let sandbox = try JailHarness.Sandbox("kata-1")
        defer { sandbox.tearDown() }
        var arguments = sandbox.launchArguments(["--node", "0", "--daemonize"], vmm: ["--pause"])
        for flag in ["--uid", "--gid"] { arguments[arguments.firstIndex(of: flag)! + 1] = "0" }
        let (pid, status) = try Self.launchDaemonized(arguments, sandbox)
        defer { kill(pid, SIGKILL) }
        #expect(status["Uid"] == "0\t0\t0\t0" && status["Gid"] == "0\t0\t0\t0", "\(status)")
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            #expect(status[set] == "0000000000000000", "\(set)")
        }
        #expect(status["NoNewPrivs"] == "1" && status["Seccomp"] == "2")
        try Self.stopAndCleanUp(pid, sandbox)
    }

    /// Launches the probe daemonized (--pause keeps it running), reads its
    /// pid file, and waits until it has exec'd (its filter on, Seccomp 2),
    /// with a deadline that fails (30 s: a loaded machine can take seconds):
    /// its pid and /proc status, inspected from the host (its stdio is /dev/null).
    static func launchDaemonized(_ arguments: [String], _ sandbox: JailHarness.Sandbox) throws -> (
        pid: pid_t, status: [String: String]
    ) {
        let finished = try JailHarness.run(arguments)
        #expect(finished.status == 0, "\(finished.error)")
        let pid = try #require(Int32(try FileSystem.readText(sandbox.paths.pidFile).trimmingNewline))
        var status: [String: String] = [:]
        let deadline = MonotonicClock.nanoseconds() + 30_000_000_000
        while MonotonicClock.nanoseconds() < deadline {
            status = try JailHarness.status(of: pid)
            if status["Seccomp"] == "2" { break }
            usleep(10_000)
        }
        try #require(status["Seccomp"] == "2", "the daemonized VMM did not reach exec within 30 s: \(status)")
        return (pid, status)
    }

    /// Ends the daemonized probe, waits (30 s at most, failing) until it is
    /// gone, and removes its jail with kiln-jailer cleanup.
    static func stopAndCleanUp(_ pid: pid_t, _ sandbox: JailHarness.Sandbox) throws {
        kill(pid, SIGKILL)
        let gone = MonotonicClock.nanoseconds() + 30_000_000_000
        while FileSystem.exists("/proc/\(pid)") && MonotonicClock.nanoseconds() < gone { usleep(10_000) }
        try #require(!FileSystem.exists("/proc/\(pid)"), "the killed VMM \(pid) is still there after 30 s")
        let cleanup = try JailHarness.run(sandbox.cleanupArguments)
        #expect(cleanup.status == 0, "\(cleanup.error)")
        #expect(!FileSystem.exists(sandbox.paths.execFolder))
    }

    @Test func daemonizesIntoANewPIDNamespace() throws {
        let sandbox = try JailHarness.Sandbox("daemon-1")
        defer { sandbox.tearDown() }
        let (pid, status) = try Self.launchDaemonized(
            sandbox.launchArguments(["--daemonize", "--new-pid-ns"], vmm: ["--pause"]), sandbox)
        defer { kill(pid, SIGKILL) }
        #expect(
            status["NSpid"]?.hasSuffix("\t1") == true,
            "the VMM is not pid 1 of its namespace: \(status["NSpid"] ?? "-")")
        #expect(status["Uid"] == "64123\t64123\t64123\t64123" && status["CapBnd"] == "0000000000000000")
        #expect(Self.namespace("pid", of: "\(pid)") != Self.namespace("pid", of: "self"))
        for fd in 0...2 { #expect(JailHarness.link("/proc/\(pid)/fd/\(fd)") == "/dev/null") }
        let stat = try FileSystem.readText("/proc/\(pid)/stat")
        let fields = stat[stat.lastIndex(of: ")")!...].split(separator: " ")
        #expect(fields.count > 4 && fields[4] == "\(pid)", "not a session leader: \(stat)")
        try Self.stopAndCleanUp(pid, sandbox)
    }
}
