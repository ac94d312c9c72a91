import Testing

@testable import KilnJail

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct JailArgumentsTests {
    static let required = ["--id", "vm-1", "--exec-file", "/usr/bin/kiln", "--uid", "123", "--gid", "456"]

    func launch(_ extra: [String]) throws -> JailOptions {
        guard case let .launch(options) = try JailArguments.parse(Self.required + extra) else {
            Issue.record("not a launch")
            throw JailFailure(.usage, "not a launch")
        }
        return options
    }

    @Test func parsesFirecrackerFlagsAndKilnsOwn() throws {
        let options = try launch([
            "--chroot-base-dir", "/var/jail", "--daemonize", "--new-pid-ns",
            "--cgroup", "memory.limit_in_bytes=1048576", "--cgroup", "pids.max=10",
            "--cgroup-version", "2", "--parent-cgroup", "tenants/a",
            "--resource-limit", "fsize=100", "--resource-limit", "no-file=64",
            "--seccomp-bundle", "/etc/kiln/b.kbundle", "--new-net-ns",
            "--", "--api-sock", "/run/api.sock", "--id", "ignored-by-jailer",
        ])
        #expect(options.id == "vm-1" && options.execFile == "/usr/bin/kiln" && options.uid == 123 && options.gid == 456)
        #expect(
            options.chrootBaseDir == "/var/jail" && options.daemonize && options.newPIDNamespace
                && options.newNetNamespace)
        #expect(
            options.cgroups == [
                CgroupSetting(file: "memory.limit_in_bytes", value: "1048576"),
                CgroupSetting(file: "pids.max", value: "10"),
            ])
        #expect(options.cgroups.map(\.controller) == ["memory", "pids"])
        #expect(options.cgroupVersion == .v2 && options.effectiveParentCgroup == "tenants/a")
        #expect(
            options.resourceLimits == [
                ResourceLimit(kind: .fileSize, value: 100), ResourceLimit(kind: .openFiles, value: 64),
            ])
        #expect(options.effectiveResourceLimits == options.resourceLimits)
        #expect(options.seccompBundle == "/etc/kiln/b.kbundle")
        #expect(options.vmmArguments == ["--api-sock", "/run/api.sock", "--id", "ignored-by-jailer"])
        #expect(options.paths.root == "/var/jail/kiln/vm-1/root")
        #expect(options.paths.pidFile == "/var/jail/kiln/vm-1/root/kiln.pid")
    }

    /// Older orchestrators' flags: --node becomes the two cpuset settings at
    /// validation; --seccomp-level 1 or 2 is the default filtering.
    @Test func helpAndVersionWinBeforeTheSeparator() throws {
        #expect(try JailArguments.parse(["--bogus", "--version"]) == .version)
        #expect(try JailArguments.parse(["--id=x", "-h"]) == .help)
        #expect(throws: JailFailure.self) { try JailArguments.parse(["--bogus", "--", "--version"]) }
    }

    @Test func parsesOlderJailerFlags() throws {
        let options = try launch(["--node", "0", "--seccomp-level", "2", "--cgroup", "pids.max=8"])
        #expect(options.numaNode == 0 && options.cgroups == [CgroupSetting(file: "pids.max", value: "8")])
        #expect(try launch(["--seccomp-level", "1"]).numaNode == nil)
    }

    @Test func parsesJailFiles() throws {
        let options = try launch([
            "--jail-file", "/boot/vmlinuz-6.1", "--jail-file", "/srv/a:b/initrd.cpio:initrd",
            "--jail-file", "/etc/vm.json:config.json",
        ])
        #expect(
            options.jailFiles == [
                JailFile(hostPath: "/boot/vmlinuz-6.1", name: "vmlinuz-6.1"),
                JailFile(hostPath: "/srv/a:b/initrd.cpio", name: "initrd"),
                JailFile(hostPath: "/etc/vm.json", name: "config.json"),
            ])
        for (bad, message) in [
            ("relative/file", "is not an absolute path"), ("/a/../b", "contains a '..' component"),
            ("/a:", "must be one file name"), ("/a:..", "must be one file name"),
            ("/a:x/y", "must be one file name"), ("/", "must be one file name"),
            ("/x/kiln", "is taken by the jail itself"), ("/x/dev", "is taken by the jail itself"),
            ("/x/kiln.pid", "is taken by the jail itself"),
        ] {
            #expect(throws: JailFailure.self) { try launch(["--jail-file", bad]) }
            do { _ = try launch(["--jail-file", bad]) } catch let failure as JailFailure {
                #expect(failure.step == .usage && failure.message.contains(message), "\(bad): \(failure.message)")
            }
        }
        #expect(throws: JailFailure(.usage, "--jail-file: two files are named \"v\" in the jail")) {
            try launch(["--jail-file", "/a/v", "--jail-file", "/b:v"])
        }
    }

    /// Linked only when the VMM's user could read but never change the file.
    @Test func jailFilesAreLinkedOnlyWhenReadOnlyForTheVMM() {
        func file(uid: UInt32, gid: UInt32, mode: mode_t) -> stat {
            var info = stat()
            info.st_uid = uid
            info.st_gid = gid
            info.st_mode = S_IFREG | mode
            return info
        }
        let vmm = (uid: UInt32(1000), gid: UInt32(1000))
        #expect(ValidatedHostFile.readOnlyFor(uid: vmm.uid, gid: vmm.gid, file(uid: 0, gid: 0, mode: 0o644)))
        #expect(ValidatedHostFile.readOnlyFor(uid: vmm.uid, gid: vmm.gid, file(uid: 0, gid: 1000, mode: 0o640)))
        #expect(
            !ValidatedHostFile.readOnlyFor(uid: vmm.uid, gid: vmm.gid, file(uid: 0, gid: 0, mode: 0o600)), "unreadable")
        #expect(
            !ValidatedHostFile.readOnlyFor(uid: vmm.uid, gid: vmm.gid, file(uid: 0, gid: 0, mode: 0o646)),
            "writable by others")
        #expect(
            !ValidatedHostFile.readOnlyFor(uid: vmm.uid, gid: vmm.gid, file(uid: 0, gid: 1000, mode: 0o664)),
            "group-writable")
        #expect(
            !ValidatedHostFile.readOnlyFor(uid: vmm.uid, gid: vmm.gid, file(uid: 1000, gid: 0, mode: 0o444)),
            "owned: chmod")
    }

    @Test func appliesFirecrackersDefaults() throws {
        let options = try launch([])
        #expect(options.chrootBaseDir == "/srv/jailer" && options.effectiveParentCgroup == "kiln")
        #expect(options.cgroupVersion == nil && options.netns == nil && !options.newNetNamespace)
        #expect(options.effectiveResourceLimits == [ResourceLimit(kind: .openFiles, value: 2048)])
    }

    @Test func buildsTheVMMCommandLine() throws {
        var options = try launch(["--", "--config-file", "/vm.json"])
        options.chrootBaseDir = "/srv/j"
        let handoff = VMMHandoff(options: options, startMonotonicNanoseconds: 12_345_678, startCPUNanoseconds: 9_999)
        #expect(
            handoff.arguments == [
                "/kiln", "--id", "vm-1", "--seccomp-filter", "/seccomp.kbundle",
                "--start-time-us", "12345", "--start-time-cpu-us", "9", "--config-file", "/vm.json",
            ])
        // The caller's own seccomp choice after -- replaces the bundle flag.
        for choice in [["--no-seccomp"], ["--seccomp-filter", "/mine.kbundle"]] {
            let chosen = VMMHandoff(
                options: try launch(["--"] + choice), startMonotonicNanoseconds: 0, startCPUNanoseconds: 0)
            #expect(
                chosen.arguments == ["/kiln", "--id", "vm-1", "--start-time-us", "0", "--start-time-cpu-us", "0"]
                    + choice)
        }
    }

    @Test func parsesCleanupWithTheLaunchFlags() throws {
        let command = try JailArguments.parse(
            ["cleanup"] + Self.required + ["--parent-cgroup", "p", "--chroot-base-dir", "/b"])
        var expected = CleanupOptions(id: "vm-1", execFile: "/usr/bin/kiln")
        expected.chrootBaseDir = "/b"
        expected.parentCgroup = "p"
        #expect(command == .cleanup(expected))
        #expect(
            try JailArguments.parse(["cleanup", "--id", "a", "--exec-file", "/x"])
                == .cleanup(CleanupOptions(id: "a", execFile: "/x")))
    }

    @Test func helpAndVersionWinOverEverythingElse() throws {
        #expect(try JailArguments.parse(["--help"]) == .help)
        #expect(try JailArguments.parse(["--id", "a", "-h"]) == .help)
        #expect(try JailArguments.parse(["--version"]) == .version)
        for step in JailStep.allCases { #expect(JailHelp.text.contains(step.summary)) }
        for flag in JailArguments.flags.keys {
            #expect(JailHelp.text.contains(flag), "--help does not document \(flag)")
        }
    }

    @Test func everyStepHasItsOwnExitCode() {
        let codes = JailStep.allCases.map(\.exitCode)
        #expect(Set(codes).count == codes.count)
        #expect(!codes.contains(0) && !codes.contains(1))
    }

    static let badInputs: [(arguments: [String], message: String)] = [
        (["--exec-file", "/k", "--uid", "1", "--gid", "1"], "missing required flag --id"),
        (["--id", "a", "--uid", "1", "--gid", "1"], "missing required flag --exec-file"),
        (["--id", "a", "--exec-file", "/k", "--gid", "1"], "missing required flag --uid"),
        (["--id", "a", "--exec-file", "/k", "--uid", "1"], "missing required flag --gid"),
        (
            ["--id", "", "--exec-file", "/k", "--uid", "1", "--gid", "1"],
            "invalid --id \"\": it must be 1 to 64 characters long"
        ),
        (
            ["--id", String(repeating: "a", count: 65), "--exec-file", "/k", "--uid", "1", "--gid", "1"],
            "must be 1 to 64 characters long"
        ),
        (
            ["--id", "a_b", "--exec-file", "/k", "--uid", "1", "--gid", "1"],
            "invalid --id \"a_b\": only letters, digits and '-' are allowed"
        ),
        (
            ["--id", "../x", "--exec-file", "/k", "--uid", "1", "--gid", "1"],
            "only letters, digits and '-' are allowed"
        ),
        (
            ["--id", "a", "--exec-file", "bin/kiln", "--uid", "1", "--gid", "1"],
            "--exec-file \"bin/kiln\" is not an absolute path"
        ),
        (["--id", "a", "--exec-file", "/a/../k", "--uid", "1", "--gid", "1"], "contains a '..' component"),
        (["--id", "a", "--exec-file", "/", "--uid", "1", "--gid", "1"], "names no file"),
        (["--id", "a", "--exec-file", "/k", "--uid", "x1", "--gid", "1"], "--uid must be a decimal number"),
        (["--id", "a", "--exec-file", "/k", "--uid", "-1", "--gid", "1"], "--uid must be a decimal number"),
        (["--id", "a", "--exec-file", "/k", "--uid", "4294967295", "--gid", "1"], "--uid must be a decimal number"),
        (["--id", "a", "--id", "b", "--exec-file", "/k", "--uid", "1", "--gid", "1"], "--id given more than once"),
        (["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--frobnicate"], "unknown flag --frobnicate"),
        (["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "stray"], "unexpected argument \"stray\""),
        (["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid"], "--gid needs a value"),
        (["--id", "--", "--exec-file", "/k", "--uid", "1", "--gid", "1"], "--id needs a value"),
        (["--exec-file", "/k", "--uid", "1", "--gid", "1", "--id", "--"], "--id needs a value"),
        (["--id", "--uid", "1", "--exec-file", "/k", "--gid", "1"], "--id needs a value"),
        // As Firecracker's jailer: the value is the next argument, never after '='.
        (["--id=a", "--exec-file", "/k", "--uid", "1", "--gid", "1"], "\"--id=a\": write --id VALUE"),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup=pids.max=1"],
            "write --cgroup VALUE"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--node", "x"],
            "--node must be a NUMA node number"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--node", "0", "--cgroup", "cpuset.cpus=0"],
            "drop it or the --cgroup cpuset"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--seccomp-level", "0"],
            "--seccomp-level 0 (no filters) is not offered"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--seccomp-level", "3"],
            "--seccomp-level must be 0, 1 or 2"
        ),
        (
            ["--id", "a", "--exec-file", "/bin/dev", "--uid", "1", "--gid", "1"],
            "the name \"dev\" is taken by the jail root itself (dev, run, seccomp.kbundle)"
        ),
        (
            ["--id", "a", "--exec-file", "/bin/run", "--uid", "1", "--gid", "1"],
            "the name \"run\" is taken by the jail root itself"
        ),
        (
            ["--id", "a", "--exec-file", "/x/seccomp.kbundle", "--uid", "1", "--gid", "1"],
            "the name \"seccomp.kbundle\" is taken"
        ),
        (["--id", "a", "--exec-file", "/bin/.", "--uid", "1", "--gid", "1"], "its name \".\" becomes a folder"),
        (["--id", "a", "--exec-file", "/bin/k k", "--uid", "1", "--gid", "1"], "its name \"k k\" becomes a folder"),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--daemonize=yes"],
            "--daemonize takes no value"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--chroot-base-dir", "srv"],
            "--chroot-base-dir \"srv\" is not an absolute path"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--netns", "ns"],
            "--netns \"ns\" is not an absolute path"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--seccomp-bundle", "b"],
            "--seccomp-bundle \"b\" is not an absolute path"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--netns", "/n", "--new-net-ns"],
            "exclude each other"
        ),
        (["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup", "pids.max"], "must be FILE=VALUE"),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup", "pidsmax=1"],
            "must be controller.name"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup", "../pids.max=1"],
            "must be controller.name"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup", "cgroup.procs=1"],
            "managed by the jailer"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup", "pids.max=1/2"],
            "without '/' or a newline"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup", "pids.max=1\n2"],
            "without '/' or a newline"
        ),
        (["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup", "pids.max="], "must be non-empty"),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--cgroup-version", "3"],
            "--cgroup-version must be 1 or 2, not \"3\""
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--parent-cgroup", "/abs"],
            "invalid --parent-cgroup"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--parent-cgroup", "a/../b"],
            "invalid --parent-cgroup"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--resource-limit", "no-file=lots"],
            "--resource-limit no-file: \"lots\" is not a decimal number"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--resource-limit", "no-file=-1"],
            "is not a decimal number"
        ),
        (
            [
                "--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--resource-limit",
                "no-file=99999999999999999999",
            ], "is not a decimal number"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--resource-limit", "nproc=5"],
            "unknown resource \"nproc\" (known: fsize, no-file)"
        ),
        (
            ["--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--resource-limit", "fsize"],
            "must be RESOURCE=N"
        ),
        (
            [
                "--id", "a", "--exec-file", "/k", "--uid", "1", "--gid", "1", "--resource-limit", "fsize=1",
                "--resource-limit", "fsize=2",
            ], "fsize given more than once"
        ),
    ]

    @Test(arguments: badInputs)
    func refusesBadInputWithItsMessage(_ arguments: [String], _ message: String) {
        do {
            _ = try JailArguments.parse(arguments)
            Issue.record("accepted \(arguments)")
        } catch let failure as JailFailure {
            #expect(failure.step == .usage)
            #expect(failure.exitCode == 2)
            #expect(failure.message.contains(message), "\(failure.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }
}
