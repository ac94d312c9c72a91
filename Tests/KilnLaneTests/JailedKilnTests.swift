import KilnJail
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Lane 1 jailed: the test guest booted by `kiln` under `kiln-jailer` with the
/// shipped policies compiled: the jailer's pre-exec filter, then kiln's own
/// per-thread filters (vcpu, vmm) stacked on it. The guest reaches the jail
/// through `--jail-file`; cleanup must leave no folder and no cgroup.
enum JailedLane {
    static let uid = "64125", gid = "64126"
    static var ready: Bool {
        getuid() == 0 && access("/dev/kvm", R_OK | W_OK) == 0 && Lanes.readable(Lanes.testGuest)
            && Lanes.executable(Lanes.kiln) && Lanes.executable(Lanes.jailer) && Lanes.executable(Lanes.policyCompiler)
    }
    static let skipReason: Comment = {
        var missing: [String] = []
        if getuid() != 0 { missing.append("the jailer needs root") }
        if access("/dev/kvm", R_OK | W_OK) != 0 { missing.append("/dev/kvm is absent or not read-write") }
        if !Lanes.readable(Lanes.testGuest) { missing.append("the test guest is not built (make guest)") }
        if !Lanes.executable(Lanes.kiln) || !Lanes.executable(Lanes.jailer) {
            missing.append("kiln and kiln-jailer are not built")
        }
        return Comment(rawValue: "jailed lane 1 skipped: " + missing.joined(separator: "; "))
    }()

    /// kiln under kiln-jailer in `folder`'s jails, the test guest at
    /// /guest.elf (and the files `jailer` places), left running for the test to watch.
    struct Launch {
        let jailFolder: String
        let common: [String]
        let running: ChildProcess.Running

        init(id: String, in folder: String, jailer extra: [String] = [], kiln arguments: [String], seconds: Int = 30)
            throws
        {
            let bundle = try Lanes.compilePolicies(into: folder)
            let base = folder + "/jails"
            jailFolder = base + "/kiln/" + id
            common = ["--id", id, "--exec-file", Lanes.kiln, "--chroot-base-dir", base]
            running = try ChildProcess.start(
                [Lanes.jailer] + common + [
                    "--uid", JailedLane.uid, "--gid", JailedLane.gid, "--seccomp-bundle", bundle,
                    "--jail-file", Lanes.testGuest + ":guest.elf",
                ] + extra + ["--"] + arguments,
                seconds: seconds)
        }

        func cleanUp() throws { _ = try ChildProcess.run([Lanes.jailer, "cleanup"] + common, seconds: 30) }
    }
}

@Suite(.serialized, .enabled(if: JailedLane.ready, JailedLane.skipReason))
struct JailedKilnTests {
    @Test(arguments: [1, 2])
    func testGuestBootsUnderTheJailerAndCleanupLeavesNothing(vcpus: Int) throws {
        let folder = Lanes.scratchFolder("jailed")
        defer { Lanes.removeTree(folder) }
        let bundle = try Lanes.compilePolicies(into: folder)
        let base = folder + "/jails", id = "jailed-lane1-\(vcpus)", parent = "kiln-lane-test-\(getpid())"
        let common = ["--id", id, "--exec-file", Lanes.kiln, "--chroot-base-dir", base, "--parent-cgroup", parent]
        // One run gets the guest as it is built (root's, 0755: linked into the
        // jail), the other a private copy (0600: the jailer must copy it, 0440
        // in the VMM's group, so that other host users still cannot read it).
        let linked = vcpus == 1
        // The other runs with no --seccomp-bundle: kiln-jailer's built-in one,
        // which is policies/ compiled.
        let bundleFlags = linked ? ["--seccomp-bundle", bundle] : []
        var guest = Lanes.testGuest
        if !linked {
            guest = folder + "/private-guest.elf"
            _ = try ChildProcess.run(["/usr/bin/install", "-m", "600", Lanes.testGuest, guest], seconds: 10)
        }
        // Every hierarchy the host mounts, v1 and v2 alike, where a cgroup
        // of this jail could be left (the jailer's own reading of mountinfo).
        let layout = CgroupLayout(mountInfo: ChildProcess.read("/proc/self/mountinfo"))
        let cgroupFolders = layout.allMounts.map { "\($0)/\(parent)" }
        #expect(
            layout.v1Mounts["pids"] != nil || layout.v2Mount != nil, "no cgroup hierarchy found in /proc/self/mountinfo"
        )
        defer { for folder in cgroupFolders { rmdir(folder + "/" + id); rmdir(folder) } }

        let run = try ChildProcess.run(
            [Lanes.jailer] + common + ["--uid", JailedLane.uid, "--gid", JailedLane.gid] + bundleFlags
                + [
                    "--cgroup", "pids.max=32", "--jail-file", guest + ":guest.elf",
                    "--", "--no-api", "--kernel", "/guest.elf", "--cmdline", "jailed marker=7",
                    "--vcpus", String(vcpus), "--boot-timer",
                ],
            seconds: 30)
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        let guestLines = run.stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("guest: ") }
        #expect(run.status == 0, context)
        #expect(guestLines.first == "guest: hello from the kiln test guest", context)
        #expect(guestLines.contains("guest: cmdline: jailed marker=7"), context)
        #expect(guestLines.last == "guest: ready", context)
        // The vCPU thread's filter allows the boot timer's CPU-time read.
        #expect(run.stderr.contains("boot-timer: guest boot time"), context)
        #expect(run.stderr.contains("jailer overhead: "), context)
        #expect(run.stderr.contains("guest reset (i8042 reset)"), context)
        #expect(!run.stderr.contains("Bad system call"), context)

        // The jail held the guest as a file the VMM could read but not write.
        let jailFolder = base + "/kiln/" + id
        #expect(
            ChildProcess.readBytes(jailFolder + "/root/seccomp.kbundle") == ChildProcess.readBytes(bundle),
            "the bundle handed to kiln is policies/ compiled")
        var source = stat(), placed = stat()
        #expect(stat(guest, &source) == 0 && stat(jailFolder + "/root/guest.elf", &placed) == 0)
        // The jail root is the VMM user's, as Firecracker's jailer leaves it
        // (the VMM makes its sockets there); what the jailer placed stays root's.
        var root = stat()
        #expect(
            stat(jailFolder + "/root", &root) == 0 && root.st_uid == uid_t(JailedLane.uid)!
                && root.st_gid == gid_t(JailedLane.gid)!, "the jail root belongs to the VMM's uid and gid")
        if linked {
            #expect(placed.st_ino == source.st_ino, "a readable, root-owned guest is hard-linked")
        } else {
            #expect(
                placed.st_ino != source.st_ino && placed.st_mode & 0o7777 == 0o440 && placed.st_uid == 0
                    && placed.st_gid == gid_t(JailedLane.gid)!,
                "a guest the VMM cannot read is copied, root's, 0440, in the VMM's group")
        }

        let cleanup = try ChildProcess.run([Lanes.jailer, "cleanup"] + common, seconds: 30)
        #expect(cleanup.status == 0, Comment(rawValue: cleanup.stderr))
        #expect(!Lanes.exists(jailFolder), "the jail folder is left behind")
        #expect(!Lanes.exists(base + "/kiln"), "the exec file's folder is left behind")
        for folder in cgroupFolders {
            #expect(!Lanes.exists(folder + "/" + id), "cgroup \(folder)/\(id) is left behind")
        }
        // The host's guest image is still there (the link went with the jail).
        #expect(Lanes.readable(guest))
    }

    /// Every thread of the running VMM has three filters: the jailer's
    /// pre-exec one, kiln's launch filter (installed before it reads a flag,
    /// inherited by every thread), and its own role's on top (a vCPU thread
    /// inherits no `vmm`, since the event loop confines itself after creating it).
    @Test func everyThreadInstallsItsOwnFilter() throws {
        let folder = Lanes.scratchFolder("jailed-threads")
        defer { Lanes.removeTree(folder) }
        // "echo" with no input: the guest polls the UART for ever, so kiln
        // runs until the test has looked and ends it.
        let launch = try JailedLane.Launch(
            id: "jailed-threads", in: folder,
            kiln: ["--no-api", "--kernel", "/guest.elf", "--cmdline", "echo", "--vcpus", "2"])
        let running = launch.running
        var filters: [String] = []
        var program: pid_t?
        for _ in 0..<2000 {
            program = running.programPID
            if let pid = program {
                // KVM's own worker (kvm-nx-lpage-recovery) is a task of the process too.
                let threads = Lanes.list("/proc/\(pid)/task").filter {
                    !ChildProcess.read("/proc/\(pid)/task/\($0)/comm").hasPrefix("kvm-")
                }
                filters = threads.compactMap { tid in
                    ChildProcess.read("/proc/\(pid)/task/\(tid)/status").split(separator: "\n")
                        .first { $0.hasPrefix("Seccomp_filters:") }.map { String($0.split(separator: "\t").last ?? "") }
                }
                if filters.count == 3 && filters.allSatisfy({ $0 == "3" }) { break }
            }
            usleep(5_000)
        }
        if let program { kill(program, SIGTERM) }
        let finished = running.wait()
        try launch.cleanUp()
        #expect(
            filters == ["3", "3", "3"], Comment(rawValue: "Seccomp_filters per thread: \(filters)\n\(finished.stderr)"))
        #expect(finished.status == 128 + SIGTERM, Comment(rawValue: finished.stderr))
        #expect(!Lanes.exists(launch.jailFolder))
    }

    /// kiln's API from inside the jail: with no API flag it listens on
    /// /run/firecracker.socket, in the jail's /run (the VMM user's folder), where a
    /// client on the host reaches it. Configured and started through it, the
    /// test guest boots under the stacked filters (api role included) and
    /// resets; the socket goes with kiln.
    @Test(.enabled(if: access("/usr/bin/curl", X_OK) == 0, "the jailed API test talks HTTP through curl"))
    func theAPIIsServedFromTheJailsRunFolder() throws {
        let folder = Lanes.scratchFolder("jailed-api")
        defer { Lanes.removeTree(folder) }
        let launch = try JailedLane.Launch(id: "jailed-api", in: folder, kiln: ["--boot-timer"])
        let running = launch.running
        let socket = launch.jailFolder + "/root/run/firecracker.socket"
        func request(_ method: String, _ path: String, _ body: String) throws -> String {
            try ChildProcess.run(
                [
                    "/usr/bin/curl", "-sS", "--unix-socket", socket, "-X", method, "-o", "/dev/null",
                    "-w", "%{http_code}", "-H", "Content-Type: application/json", "-d", body,
                    "http://localhost" + path,
                ], seconds: 10
            ).stdout
        }
        for _ in 0..<2000 where !Lanes.exists(socket) { usleep(5_000) }
        // "ctrlaltdel": the guest waits for the keys, so kiln outlives every answer.
        let configured = try request(
            "PUT", "/boot-source",
            "{\"kernel_image_path\": \"/guest.elf\", \"boot_args\": \"jailed api ctrlaltdel\"}")
        let started = try request("PUT", "/actions", "{\"action_type\": \"InstanceStart\"}")
        for _ in 0..<2000 where !running.stdoutSoFar.contains("guest: waiting for ctrl-alt-del") { usleep(5_000) }
        let keys = try request("PUT", "/actions", "{\"action_type\": \"SendCtrlAltDel\"}")
        let finished = running.wait()
        try launch.cleanUp()
        let context = Comment(
            rawValue: "status \(finished.status)\nstdout:\n\(finished.stdout)\nstderr:\n\(finished.stderr)")
        #expect(configured == "204" && started == "204" && keys == "204", context)
        #expect(finished.status == 0, context)
        #expect(finished.stdout.contains("guest: ctrl-alt-del received"), context)
        #expect(finished.stderr.contains("guest reset (i8042 reset)"), context)
        #expect(!Lanes.exists(launch.jailFolder))
    }

    /// Launched as Kata launches Firecracker: the orchestrator makes the jail
    /// root and its /run and puts the guest and a config file in it, then runs
    /// `kiln-jailer ... --daemonize -- --config-file /vm.json`, with no seccomp
    /// or socket flag (the console goes to a file for the test). kiln boots under the built-in filters, its pid is in
    /// <root>/kiln.pid and its API on <root>/run/firecracker.socket.
    @Test(.enabled(if: access("/usr/bin/curl", X_OK) == 0, "the jailed API test talks HTTP through curl"))
    func aKataShapedLaunchIsServedWhereKataLooks() throws {
        let folder = Lanes.scratchFolder("kata-shaped")
        defer { Lanes.removeTree(folder) }
        let base = folder + "/jails", id = "kata-shaped"
        let root = base + "/kiln/" + id + "/root"
        for path in [base, base + "/kiln", base + "/kiln/" + id, root, root + "/run"] { mkdir(path, 0o755) }
        _ = try ChildProcess.run(["/usr/bin/install", "-m", "444", Lanes.testGuest, root + "/guest.elf"], seconds: 10)
        ChildProcess.write(
            #"{"boot-source": {"kernel_image_path": "/guest.elf", "boot_args": "console=ttyS0 ctrlaltdel"}, "#
                + #""machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}"#, to: root + "/vm.json")
        let common = ["--id", id, "--exec-file", Lanes.kiln, "--chroot-base-dir", base]
        let launched = try ChildProcess.run(
            [Lanes.jailer] + common + [
                "--uid", JailedLane.uid, "--gid", JailedLane.gid,
                "--daemonize", "--", "--config-file", "/vm.json",
                "--console-output", "/run/console",
            ], seconds: 30)
        var pid: pid_t = 0
        defer {
            // Daemonized, kiln outlives a failed test unless ended here.
            if pid > 0 { kill(pid, SIGKILL) }
            _ = try? ChildProcess.run([Lanes.jailer, "cleanup"] + common, seconds: 30)
        }
        #expect(launched.status == 0, Comment(rawValue: launched.stderr))
        let socket = root + "/run/firecracker.socket"
        for _ in 0..<2000 where !Lanes.exists(socket) { usleep(5_000) }
        pid = Int32(ChildProcess.read(root + "/kiln.pid").split(separator: "\n").first ?? "") ?? 0
        #expect(pid > 0 && kill(pid, 0) == 0, "no running VMM in \(root)/kiln.pid")
        func request(_ method: String, _ path: String, _ body: String? = nil) throws -> String {
            try ChildProcess.run(
                ["/usr/bin/curl", "-sS", "--unix-socket", socket, "-X", method, "-H", "Content-Type: application/json"]
                    + (body.map { ["-d", $0] } ?? []) + ["http://localhost" + path], seconds: 10
            ).stdout
        }
        #expect(try request("GET", "/").contains("\"state\":\"Running\""))
        // Daemonized, kiln is no child of this test: ended means gone or a zombie.
        func ended() -> Bool {
            !(ChildProcess.read("/proc/\(pid)/stat").split(separator: " ").dropFirst(2).first.map { $0 != "Z" } ?? false)
        }
        for _ in 0..<2000 where !ChildProcess.read(root + "/run/console").contains("guest: waiting for ctrl-alt-del") {
            usleep(5_000)
        }
        let keys = try request("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#)
        for _ in 0..<2000 where pid > 0 && !ended() { usleep(5_000) }
        #expect(pid > 0 && ended(), "the guest's reset ended kiln: \(keys) \(ChildProcess.read(root + "/run/console"))")
        #expect(
            Lanes.exists(root + "/guest.elf") && Lanes.exists(root + "/vm.json"), "the orchestrator's files are kept")
    }

    @Test func aMissingOrMalformedBundleIsRefusedBeforeAnyVCPURuns() throws {
        let folder = Lanes.scratchFolder("bundle")
        defer { Lanes.removeTree(folder) }
        let missing = try ChildProcess.run(
            [
                Lanes.kiln, "--no-api", "--seccomp-filter", folder + "/absent.kbundle",
                "--kernel", Lanes.testGuest,
            ], seconds: 20)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains(folder + "/absent.kbundle"), Comment(rawValue: missing.stderr))
        #expect(missing.stdout.isEmpty)

        ChildProcess.write("KILNSECC garbage", to: folder + "/bad.kbundle")
        let malformed = try ChildProcess.run(
            [
                Lanes.kiln, "--no-api", "--seccomp-filter", folder + "/bad.kbundle",
                "--kernel", Lanes.testGuest,
            ], seconds: 20)
        #expect(malformed.status == 1)
        #expect(malformed.stderr.contains("malformed seccomp bundle"), Comment(rawValue: malformed.stderr))
        #expect(malformed.stdout.isEmpty)
    }
}
