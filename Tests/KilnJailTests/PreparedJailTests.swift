import KilnSystem
import Testing

@testable import KilnJail

#if canImport(Glibc)
    import Glibc
#endif

/// A jail folder an orchestrator made before starting the jailer (Kata, the
/// Go SDK and firecracker-containerd link the kernel and drives into it):
/// used when it and its parents are root's and writable by root alone,
/// never through a link, and its files are kept, by a launch, a failed
/// launch and its rollback alike.
@Suite(
    .serialized,
    .enabled(if: JailHarness.canJail, "needs root and the kiln-jailer and kiln-jail-probe executables (swift build)"))
struct PreparedJailTests {
    /// The orchestrator's side: the jail root with a hard-linked "kernel" and
    /// its own run folder. Returns the kernel's inode.
    static func prepare(_ sandbox: JailHarness.Sandbox, rootMode: mode_t = 0o755) throws -> ino_t {
        let paths = sandbox.paths
        for folder in [paths.base, paths.execFolder, paths.jailFolder, paths.root, paths.root + "/run"] {
            try check("mkdir", subject: folder) { mkdir(folder, 0o755) }
        }
        try check("chmod", subject: paths.root) { chmod(paths.root, rootMode) }
        try FileSystem.writeAtomically(sandbox.folder + "/kernel", Array("kernel".utf8), mode: 0o444)
        try check("link") { link(sandbox.folder + "/kernel", paths.root + "/kernel") }
        var info = stat()
        try check("stat") { stat(paths.root + "/kernel", &info) }
        return info.st_ino
    }

    static func inode(_ path: String) -> ino_t? {
        var info = stat()
        return lstat(path, &info) == 0 ? info.st_ino : nil
    }

    @Test func aPreparedJailIsUsedAndItsFilesKept() throws {
        let sandbox = try JailHarness.Sandbox("prepared")
        defer { sandbox.tearDown() }
        let kernel = try Self.prepare(sandbox)
        let finished = try JailHarness.run(sandbox.launchArguments(vmm: ["--no-wait"]))
        #expect(finished.status == 0, "\(finished.error)")
        #expect(finished.output.contains("\"name\":\"kiln-jail-probe\""), "the probe did not run: \(finished.output)")
        let root = sandbox.paths.root
        #expect(Self.inode(root + "/kernel") == kernel, "the orchestrator's hard link is kept")
        var run = stat()
        #expect(
            lstat(root + "/run", &run) == 0 && run.st_uid == JailHarness.uid && run.st_mode & 0o7777 == 0o700,
            "the run folder is the VMM's user's, 0700")
        #expect(FileSystem.exists(root + "/seccomp.kbundle") && FileSystem.exists(root + "/kiln-jail-probe"))
    }

    /// A launch that fails after placing files removes its own, not the
    /// orchestrator's: here a --jail-file named like the prepared kernel.
    @Test func aFailedLaunchLeavesThePreparedJailAsItWas() throws {
        let sandbox = try JailHarness.Sandbox("prepared-failing")
        defer { sandbox.tearDown() }
        let kernel = try Self.prepare(sandbox)
        try FileSystem.writeAtomically(sandbox.folder + "/other", Array("other".utf8), mode: 0o444)
        let finished = try JailHarness.run(
            sandbox.launchArguments(["--jail-file", sandbox.folder + "/other:kernel"], vmm: ["--no-wait"]))
        #expect(finished.status == JailStep.jailFolder.exitCode, "\(finished.error)")
        #expect(
            finished.error.contains("\(sandbox.paths.root)/kernel already exists: kiln-jailer puts it there itself"),
            "\(finished.error)")
        #expect(!finished.error.contains("left behind"), "\(finished.error)")
        #expect(Self.inode(sandbox.paths.root + "/kernel") == kernel)
        #expect(
            try FileSystem.listDirectory(sandbox.paths.root).sorted() == ["kernel", "run"],
            "the jailer's own files are rolled back")
    }

    /// A prepared folder another user could change, or a link in it, is
    /// refused, and left as it was.
    @Test func anUntrustedOrLinkedPreparedJailIsRefused() throws {
        let writable = try JailHarness.Sandbox("prepared-writable")
        defer { writable.tearDown() }
        try check("mkdir") { mkdir(writable.paths.base, 0o755) }
        try check("mkdir") { mkdir(writable.paths.execFolder, 0o755) }
        try check("mkdir") { mkdir(writable.paths.jailFolder, 0o755) }
        try check("chmod") { chmod(writable.paths.jailFolder, 0o777) }
        let open = try JailHarness.run(writable.launchArguments(vmm: ["--no-wait"]))
        #expect(open.status == JailStep.validation.exitCode, "\(open.error)")
        #expect(
            open.error.contains("the existing jail \(writable.paths.jailFolder) is writable by its group and others"),
            "\(open.error)")
        #expect(try FileSystem.listDirectory(writable.paths.jailFolder).isEmpty)

        let rootWritable = try JailHarness.Sandbox("prepared-root-writable")
        defer { rootWritable.tearDown() }
        let kernel = try Self.prepare(rootWritable, rootMode: 0o757)
        let openRoot = try JailHarness.run(rootWritable.launchArguments(vmm: ["--no-wait"]))
        #expect(openRoot.status == JailStep.jailFolder.exitCode, "\(openRoot.error)")
        #expect(
            openRoot.error.contains("the existing jail root \(rootWritable.paths.root) is writable by others"),
            "\(openRoot.error)")
        #expect(Self.inode(rootWritable.paths.root + "/kernel") == kernel)

        let linked = try JailHarness.Sandbox("prepared-linked")
        defer { linked.tearDown() }
        _ = try Self.prepare(linked)
        try check("symlink") { symlink("/etc", linked.paths.root + "/dev") }
        let planted = try JailHarness.run(linked.launchArguments(vmm: ["--no-wait"]))
        #expect(planted.status == JailStep.jailFolder.exitCode, "\(planted.error)")
        #expect(
            planted.error.contains("\(linked.paths.root)/dev exists and is a symbolic link or not a folder"),
            "\(planted.error)")
        #expect(JailHarness.link(linked.paths.root + "/dev") == "/etc", "the link is left as it was")
        #expect(try FileSystem.listDirectory(linked.paths.root).sorted() == ["dev", "kernel", "run"])
    }

    /// A second launch of an id without cgroups finds the jail the first
    /// left, its root the VMM user's: refused, pointing at cleanup rather
    /// than at handing the folder back to root; after cleanup the id works.
    @Test func aJailLeftByAnEarlierLaunchPointsToCleanup() throws {
        let sandbox = try JailHarness.Sandbox("left-by-a-launch")
        defer { sandbox.tearDown() }
        let first = try JailHarness.run(sandbox.launchArguments(vmm: ["--no-wait"]))
        #expect(first.status == 0, "\(first.error)")
        let again = try JailHarness.run(sandbox.launchArguments(vmm: ["--no-wait"]))
        #expect(again.status == JailStep.jailFolder.exitCode, "\(again.error)")
        #expect(
            again.error.contains("the existing jail root \(sandbox.paths.root) is owned by uid \(JailHarness.uid)")
                && again.error.contains("run `kiln-jailer cleanup` for it"), "\(again.error)")
        #expect(FileSystem.exists(sandbox.paths.root + "/seccomp.kbundle"), "the refusal removes nothing")
        let cleanup = try JailHarness.run(sandbox.cleanupArguments)
        #expect(cleanup.status == 0, "\(cleanup.error)")
        let third = try JailHarness.run(sandbox.launchArguments(vmm: ["--no-wait"]))
        #expect(third.status == 0, "\(third.error)")
    }

    /// Older orchestrators' --node N: the VMM's cpuset is node N's memory and CPUs.
    @Test(
        .enabled(
            if: FileSystem.isDirectory("/sys/fs/cgroup/cpuset")
                && FileSystem.exists("/sys/devices/system/node/node0/cpulist"),
            "needs the cgroup v1 cpuset controller and NUMA node 0"))
    func nodeConfinesTheVMMToTheNodesCPUset() throws {
        let sandbox = try JailHarness.Sandbox("numa-node")
        defer { sandbox.tearDown() }
        let finished = try JailHarness.run(sandbox.launchArguments(["--node", "0"], vmm: ["--no-wait"]))
        #expect(finished.status == 0, "\(finished.error)")
        let cgroup = "/sys/fs/cgroup/cpuset/\(sandbox.parentCgroup)/\(sandbox.id)"
        let cpus = try FileSystem.readText("/sys/devices/system/node/node0/cpulist")
        #expect(try FileSystem.readText(cgroup + "/cpuset.mems") == "0\n")
        #expect(try FileSystem.readText(cgroup + "/cpuset.cpus") == cpus)
        let missing = try JailHarness.run(sandbox.launchArguments(["--node", "999"], vmm: ["--no-wait"]))
        #expect(
            missing.status == JailStep.validation.exitCode && missing.error.contains("--node 999: "), "\(missing.error)"
        )
    }
}
