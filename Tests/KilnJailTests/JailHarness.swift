import CKiln
import KilnSeccomp
import KilnSystem

@testable import KilnJail

#if canImport(Glibc)
    import Glibc
#endif

/// Runs the real kiln-jailer binary on the static probe, in a sandbox of its
/// own: a unique folder under /tmp and a unique parent cgroup, both removed
/// by `tearDown()` whatever the test's outcome.
enum JailHarness {
    static let isRoot = getuid() == 0

    /// The folder holding the test bundle, kiln-jailer and kiln-jail-probe
    /// (`swift test` builds every executable beside the test bundle).
    static let buildFolder: String = {
        var buffer = [CChar](repeating: 0, count: 4097)
        let length = readlink("/proc/self/exe", &buffer, 4096)
        let path = String(decoding: buffer[0..<max(length, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
    }()

    static var jailer: String { buildFolder + "/kiln-jailer" }
    static var probe: String { buildFolder + "/kiln-jail-probe" }
    static var binariesBuilt: Bool { FileSystem.isRegularFile(jailer) && FileSystem.isRegularFile(probe) }

    static var canJail: Bool { isRoot && binariesBuilt }

    static var v1PidsAndMemory: Bool {
        let layout = CgroupLayout(mountInfo: (try? FileSystem.readText("/proc/self/mountinfo")) ?? "")
        return layout.v1Mounts["pids"] != nil && layout.v1Mounts["memory"] != nil
    }

    /// The uid and gid the jailed probe runs as: unused on any sane host.
    static let uid: UInt32 = 64_123
    static let gid: UInt32 = 64_124

    /// The test's "jailer" program: everything allowed except sync(2), which
    /// returns EDQUOT as a marker, and unshare(2) and setns(2), refused with
    /// EPERM as Kiln's real policies refuse them (they gate user namespaces).
    static func testBundle() throws -> SeccompBundle {
        let load = BPF.ld | BPF.w | BPF.abs, jumpIfEqual = BPF.jmp | BPF.jeq | BPF.k, returns = BPF.ret | BPF.k
        func refuse(_ number: UInt32, _ errnoValue: UInt16) -> [BPFInstruction] {
            [
                BPFInstruction(code: jumpIfEqual, jt: 0, jf: 1, k: number),
                BPFInstruction(code: returns, k: SeccompAction.errno(errnoValue).rawValue),
            ]
        }
        let program =
            [
                BPFInstruction(code: load, k: SeccompData.architectureOffset),
                BPFInstruction(code: jumpIfEqual, jt: 1, jf: 0, k: 0xC000_003E), // AUDIT_ARCH_X86_64
                BPFInstruction(code: returns, k: SeccompAction.killProcess.rawValue),
                BPFInstruction(code: load, k: SeccompData.syscallNumberOffset),
            ] + refuse(162, UInt16(EDQUOT)) + refuse(272, UInt16(EPERM)) + refuse(308, UInt16(EPERM)) + [
                BPFInstruction(code: returns, k: SeccompAction.allow.rawValue)
            ]
        let allowAll = [BPFInstruction(code: returns, k: SeccompAction.allow.rawValue)]
        return try SeccompBundle(
            architecture: 0xC000_003E, programs: [SeccompBundle.jailerRole: program, "vmm": allowAll])
    }

    final class Sandbox {
        private static let counter = Locked(0)
        let folder: String
        let base: String
        let bundle: String
        let parentCgroup: String
        let id: String

        init(_ name: String) throws {
            let count = Self.counter.withLock { counter in
                counter += 1
                return counter
            }
            let unique = "\(getpid())-\(count)-\(MonotonicClock.nanoseconds() % 1_000_000)"
            folder = "/tmp/kiln-jail-test-\(unique)"
            base = folder + "/jails"
            bundle = folder + "/test.kbundle"
            parentCgroup = "kiln-test-\(unique)"
            id = name
            try check("mkdir", subject: folder) { mkdir(folder, 0o755) }
            try FileSystem.writeAtomically(bundle, try JailHarness.testBundle().encoded())
        }

        var paths: JailPaths { JailPaths(base: base, execFileName: "kiln-jail-probe", id: id) }

        func launchArguments(_ extra: [String] = [], vmm: [String] = []) -> [String] {
            [
                "--id", id, "--exec-file", JailHarness.probe, "--uid", "\(JailHarness.uid)", "--gid",
                "\(JailHarness.gid)",
                "--chroot-base-dir", base, "--seccomp-bundle", bundle, "--parent-cgroup", parentCgroup,
            ] + extra + ["--"] + vmm
        }

        var cleanupArguments: [String] {
            [
                "cleanup", "--id", id, "--exec-file", JailHarness.probe, "--chroot-base-dir", base, "--parent-cgroup",
                parentCgroup,
            ]
        }

        /// Every cgroup folder of this sandbox's parent that exists, in any hierarchy.
        var cgroupFolders: [String] {
            let layout = CgroupLayout(mountInfo: (try? FileSystem.readText("/proc/self/mountinfo")) ?? "")
            var folders: [String] = []
            for mount in layout.allMounts {
                let parent: String = mount + "/" + parentCgroup
                folders.append(parent + "/" + id)
                folders.append(parent)
            }
            return folders.filter { FileSystem.isDirectory($0) }
        }

        /// Removes whatever a test left: jail folders, its cgroups, the sandbox.
        func tearDown() {
            for folder in cgroupFolders {
                // Move any straggler out first, then remove (children before parents: sorted longest first).
                if let pids = try? FileSystem.readText(folder + "/cgroup.procs") {
                    for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
                }
            }
            for folder in cgroupFolders.sorted(by: { $0.count > $1.count }) {
                for _ in 0..<50 where rmdir(folder) != 0 && errno == EBUSY { usleep(20_000) }
            }
            if let root = try? HostDirectory.open("/tmp") {
                try? HostDirectory.removeTree(JailPaths.lastComponent(folder), in: root, subject: folder)
                root.close()
            }
        }
    }

    struct Finished {
        let status: Int32
        let output: String
        let error: String
    }

    final class Running {
        let pid: pid_t
        let input: Int32
        let output: Int32
        let error: Int32
        var reaped = false

        init(pid: pid_t, input: Int32, output: Int32, error: Int32) {
            self.pid = pid
            self.input = input
            self.output = output
            self.error = error
        }

        /// One line of the child's standard output, waiting at most `seconds`.
        func readLine(seconds: Int32 = 30) -> String? {
            var bytes: [UInt8] = []
            var byte: UInt8 = 0
            while true {
                var poller = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, seconds * 1000) == 1, read(output, &byte, 1) == 1 else { return nil }
                if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
                bytes.append(byte)
            }
        }

        func closeInput() { close(input) }

        func wait() -> Finished {
            let output = drain(self.output), error = drain(self.error)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
            reaped = true
            return Finished(
                status: (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F), output: output,
                error: error)
        }

        /// Kills and reaps the child if a failing test left it running.
        func stop() {
            guard !reaped else { return }
            kill(pid, SIGKILL)
            _ = wait()
            close(input)
        }

        private func drain(_ fd: Int32) -> String {
            let bytes = (try? FileDescriptor(rawValue: fd).readAll(limit: 1 << 20)) ?? []
            close(fd)
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// posix_spawn of kiln-jailer with its standard streams on pipes, and
    /// `blocking` signals blocked, as a careless caller might leave them.
    static func spawn(_ arguments: [String], blocking blockedSignals: [Int32] = []) throws -> Running {
        var input: [Int32] = [0, 0], output: [Int32] = [0, 0], error: [Int32] = [0, 0]
        try check("pipe2") { ckiln_pipe_cloexec(&input) }
        try check("pipe2") { ckiln_pipe_cloexec(&output) }
        try check("pipe2") { ckiln_pipe_cloexec(&error) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, input[0], 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, error[1], 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in blockedSignals { sigaddset(&mask, signal) }
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv = ([jailer] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, jailer, &actions, &attributes, argv, environ)
        close(input[0]); close(output[1]); close(error[1])
        guard result == 0 else { throw SystemError("posix_spawn", subject: jailer, errno: result) }
        return Running(pid: pid, input: input[1], output: output[0], error: error[0])
    }

    static func run(_ arguments: [String]) throws -> Finished {
        let running = try spawn(arguments)
        running.closeInput()
        return running.wait()
    }

    /// `Name:\tvalue` lines of /proc/<pid>/status.
    static func status(of pid: pid_t) throws -> [String: String] {
        var fields: [String: String] = [:]
        for line in try FileSystem.readText("/proc/\(pid)/status").split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: " \t")
        }
        return fields
    }

    static func link(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4097)
        let length = readlink(path, &buffer, 4096)
        guard length >= 0 else { return nil }
        return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        String(drop(while: { set.contains($0) }).reversed().drop(while: { set.contains($0) }).reversed())
    }
}
