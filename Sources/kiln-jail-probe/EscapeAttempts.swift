import CKiln
import KilnJSON
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// The ways out that the jail must close (`JailRunTests` expects each to
/// fail). Each reports whether it succeeded and the errno that stopped it.
enum EscapeAttempts {
    typealias Member = (key: String, value: JSONValue)

    static func all(loopbackPort: UInt16?, forkLimit: Int?, memoryBytes: Int?) -> [Member] {
        var results: [Member] = [
            ("readHostPath", readHostPath()),
            ("mount", attempt { ckiln_mount("none", "/dev", "tmpfs", 0, nil) }),
            ("mountCgroupFS", attempt { ckiln_mount("cgroup2", "/dev", "cgroup2", 0, nil) }),
            // The new mount API (fsopen(2), fsmount(2)), which the jailer itself uses.
            ("fsmount", attempt { ckiln_fsmount("tmpfs", "none", "", 0) }),
            ("chroot", chrootEscape()),
            ("ptrace", attempt { Int32(truncatingIfNeeded: ckiln_ptrace_attach(getppid() > 0 ? getppid() : 1)) }),
            ("setuid0", attempt { setuid(0) }),
            ("setgid0", attempt { setgid(0) }),
            ("mknod", attempt { ckiln_mknodat(AT_FDCWD, "/dev/mem", UInt32(S_IFCHR) | 0o600, ckiln_makedev(1, 1)) }),
            (
                "unshareNamespaces",
                attempt {
                    ckiln_unshare(
                        ckiln_clone_newns() | ckiln_clone_newnet() | ckiln_clone_newpid() | ckiln_clone_newipc()
                            | ckiln_clone_newuts() | ckiln_clone_newcgroup())
                }
            ),
            ("unshareUser", attempt { ckiln_unshare(ckiln_clone_newuser()) }),
            ("setns", setnsOnEveryDescriptor()),
            ("writeCgroupFiles", writeCgroupFiles()),
        ]
        if let loopbackPort { results.append(("loopback", connectLoopback(port: loopbackPort))) }
        if let forkLimit { results.append(("forkPastPidsMax", forkUntilRefused(limit: forkLimit))) }
        if let memoryBytes { results.append(("allocatePastMemoryLimit", allocate(bytes: memoryBytes))) }
        return results
    }

    static func outcome(_ succeeded: Bool, _ errnoValue: Int32, _ extra: [Member] = []) -> JSONValue {
        var members: [Member] = [("succeeded", .bool(succeeded))]
        if !succeeded { members.append(("errno", .string(ErrnoNames.name(of: errnoValue) ?? "errno \(errnoValue)"))) }
        return .object(members + extra)
    }

    static func attempt(_ body: () -> Int32) -> JSONValue {
        let result = body()
        return outcome(result >= 0, errno)
    }

    static func readHostPath() -> JSONValue {
        for path in [
            "/etc/passwd", "/etc/hostname", "/proc/1/environ", "/sys/kernel/notes", "../../../../etc/passwd", "/bin/sh",
        ] {
            let fd = ckiln_open(path, O_RDONLY, 0)
            if fd >= 0 { close(fd); return outcome(true, 0, [("path", .string(path))]) }
        }
        return outcome(false, errno)
    }

    /// The classic way out of a chroot: chroot into a subfolder, then climb
    /// "..". It needs CAP_SYS_CHROOT; climbing from / alone must stay at /.
    static func chrootEscape() -> JSONValue {
        let chrootResult = chroot("/dev")
        let chrootErrno = errno
        for _ in 0..<64 { _ = chdir("..") }
        var here = stat(), root = stat()
        let stillAtRoot =
            stat(".", &here) == 0 && stat("/", &root) == 0 && here.st_ino == root.st_ino && here.st_dev == root.st_dev
        return outcome(chrootResult == 0 || !stillAtRoot, chrootErrno, [("climbStayedAtRoot", .bool(stillAtRoot))])
    }

    /// Without /proc there is no namespace file to open; try every
    /// descriptor the probe holds.
    static func setnsOnEveryDescriptor() -> JSONValue {
        var lastErrno: Int32 = 0
        for fd in ProbeInside.openDescriptors() {
            if ckiln_setns(fd, 0) == 0 { return outcome(true, 0, [("fd", .integer(fd))]) }
            lastErrno = errno
        }
        return outcome(false, lastErrno)
    }

    static func writeCgroupFiles() -> JSONValue {
        for path in [
            "/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/pids.max",
        ] {
            let fd = ckiln_open(path, O_WRONLY, 0)
            if fd >= 0 { close(fd); return outcome(true, 0, [("path", .string(path))]) }
        }
        return outcome(false, errno)
    }

    static func connectLoopback(port: UInt16) -> JSONValue {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return outcome(false, errno) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return outcome(result == 0, errno)
    }

    /// Children block on a pipe until the probe has counted them all, so
    /// they are alive together and count against pids.max.
    static func forkUntilRefused(limit: Int) -> JSONValue {
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else { return outcome(false, errno) }
        var children: [pid_t] = []
        var failure: Int32 = 0
        while children.count < limit {
            let child = ckiln_fork()
            if child == 0 {
                close(pipeEnds[1])
                var byte: UInt8 = 0
                _ = read(pipeEnds[0], &byte, 1)
                _exit(0)
            }
            if child < 0 { failure = errno; break }
            children.append(child)
        }
        close(pipeEnds[0])
        close(pipeEnds[1])
        for child in children { var status: Int32 = 0; _ = waitpid(child, &status, 0) }
        return outcome(failure == 0, failure, [("children", .integer(children.count))])
    }

    /// A child touches every page; past the memory cgroup's limit the kernel's
    /// OOM killer ends it with SIGKILL.
    static func allocate(bytes: Int) -> JSONValue {
        let child = ckiln_fork()
        if child == 0 {
            guard let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                memory != MAP_FAILED
            else { _exit(2) }
            let pages = memory.assumingMemoryBound(to: UInt8.self)
            for offset in stride(from: 0, to: bytes, by: 4096) { pages[offset] = 1 }
            _exit(0)
        }
        guard child > 0 else { return outcome(false, errno) }
        var status: Int32 = 0
        _ = waitpid(child, &status, 0)
        let signal = status & 0x7F
        let exitCode = (status >> 8) & 0xFF
        return .object([
            ("succeeded", .bool(signal == 0 && exitCode == 0)),
            ("childSignal", .integer(signal)), ("childExit", .integer(exitCode)),
        ])
    }
}
