import CKiln
import KilnSeccomp
import KilnSystem
import Testing

@testable import KilnPolicy

#if canImport(Glibc)
    import Glibc
#endif

enum SeccompSupport {
    /// PR_GET_SECCOMP (21) fails with EINVAL on a kernel built without seccomp.
    static var available: Bool { ckiln_prctl(21, 0, 0, 0, 0) >= 0 }

    /// The static policy-rehearsal program, built beside the test binary by
    /// `swift build` (make test builds before it tests).
    static var rehearsal: String? { BuiltProducts.path(of: "policy-rehearsal") }
}

/// Executables that `swift build` puts beside the test binary.
enum BuiltProducts {
    static func path(of product: String) -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count)
        guard count > 0 else { return nil }
        var directory = String(decoding: buffer[0..<count], as: UTF8.self)
        while let last = directory.last, last != "/" { directory.removeLast() }
        let path = directory + product
        return FileSystem.isRegularFile(path) ? path : nil
    }
}

/// Loads compiled roles into the real kernel, in a forked child each, and
/// shows that allowed calls run and denied ones get their action.
@Suite(.enabled(if: SeccompSupport.available, "the kernel has no seccomp filter mode (CONFIG_SECCOMP_FILTER)"))
struct KernelLoadingTests {
    enum Outcome: Equatable {
        case exited(Int32)
        case signalled(Int32)
    }

    /// Forks; the child installs `program` (none if empty) and returns `body()` as its exit
    /// code. The child does nothing but raw system calls between fork and
    /// _exit (the parent may have other threads holding libc locks): it
    /// resolves OWN_PID to its own pid in place, as SeccompFilter.install
    /// does, and puts `standardOutput` on fd 1 before the filter.
    static func runFiltered(_ program: [BPFInstruction], standardOutput: Int32? = nil, _ body: () -> Int32) -> Outcome {
        var filters = program.map { sock_filter(code: $0.code, jt: $0.jt, jf: $0.jf, k: $0.k) }
        return filters.withUnsafeMutableBufferPointer { buffer -> Outcome in
            let pid = fork()
            if pid == 0 {
                OwnProcessID.resolve(buffer, pid: UInt32(getpid()))
                if let standardOutput, dup2(standardOutput, 1) != 1 { _exit(99) }
                if ckiln_set_no_new_privs() != 0 { _exit(100) }
                if !buffer.isEmpty, ckiln_seccomp_load(buffer.baseAddress, UInt16(buffer.count), 0) != 0 { _exit(101) }
                _exit(body())
            }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            return status & 0x7F == 0 ? .exited((status >> 8) & 0xFF) : .signalled(status & 0x7F)
        }
    }

    static func syscall(_ number: Int32, _ a: [UInt64] = []) -> (result: Int, errno: Int32) {
        let args = a + Array(repeating: 0, count: 6 - a.count)
        let result = ckiln_syscall6(
            Int(number), UInt(args[0]), UInt(args[1]), UInt(args[2]), UInt(args[3]), UInt(args[4]), UInt(args[5]))
        return (result, result == -1 ? errno : 0)
    }

    static func bundle() throws -> SeccompBundle {
        try PolicyBundleBuilder.bundle(
            for: try PolicyLoader.load(directory: PolicyTestSupport.shippedPoliciesDirectory))
    }

    static let nr = SyscallTable.byName
    static let kvmRun = UInt64(PolicyConstants.value(named: "KVM_RUN")!)

    @Test func vcpuRoleAllowsKVMRunAndTrapsTheRest() throws {
        let program = try Self.bundle().program(for: "vcpu")!
        // Allowed: getpid works; ioctl(-1, KVM_RUN) passes the filter and
        // reaches the kernel, which answers EBADF.
        let allowed = Self.runFiltered(program) {
            guard Self.syscall(Self.nr["getpid"]!).result > 0 else { return 1 }
            guard Self.syscall(Self.nr["ioctl"]!, [UInt64.max, Self.kvmRun]).errno == EBADF else { return 2 }
            return 0
        }
        #expect(allowed == .exited(0))
        // Denied: socket() and the neighbouring ioctl number trap (SIGSYS).
        #expect(
            Self.runFiltered(program) {
                _ = Self.syscall(Self.nr["socket"]!, [1, 1, 0]); return 3
            } == .signalled(SIGSYS))
        #expect(
            Self.runFiltered(program) {
                _ = Self.syscall(Self.nr["ioctl"]!, [UInt64.max, Self.kvmRun + 1]); return 4
            } == .signalled(SIGSYS))
        // x32 ABI numbers are killed.
        #expect(
            Self.runFiltered(program) {
                _ = Self.syscall(Self.nr["getpid"]! | PolicyCompiler.x32SyscallBit); return 5
            } == .signalled(SIGSYS))
    }

    @Test func apiRoleAnswersTCGETSWithAnErrno() throws {
        let program = try Self.bundle().program(for: "api")!
        let tcgets = UInt64(PolicyConstants.value(named: "TCGETS")!)
        // Without the filter, ioctl(-1, TCGETS) fails with EBADF; the rule
        // answers ENOTTY before the kernel looks at the fd.
        let outcome = Self.runFiltered(program) {
            let (result, error) = Self.syscall(Self.nr["ioctl"]!, [UInt64.max, tcgets])
            return result == -1 && error == ENOTTY ? 0 : 1
        }
        #expect(outcome == .exited(0))
    }

    @Test func jailerRoleKillsTheProcessOnADeniedCall() throws {
        let program = try Self.bundle().program(for: "jailer")!
        #expect(Self.runFiltered(program) { Self.syscall(Self.nr["getpid"]!).result > 0 ? 0 : 1 } == .exited(0))
        #expect(
            Self.runFiltered(program) {
                _ = Self.syscall(Self.nr["ptrace"]!, [0]); return 2
            } == .signalled(SIGSYS))
        // clone3 gets ENOSYS so that glibc falls back to clone.
        #expect(
            Self.runFiltered(program) { Self.syscall(Self.nr["clone3"]!, [0, 0]).errno == ENOSYS ? 0 : 3 } == .exited(0)
        )
    }

    /// kiln's first call (LaunchFilter): Landlock scoping. Inside the domain a
    /// process can still signal itself, but neither signal a process outside
    /// it (another tenant's kiln of the same uid) nor connect to an abstract
    /// Unix socket bound outside it (a host service in a shared network
    /// namespace). Needs Landlock ABI 6 (Linux 6.12).
    @Test(.enabled(if: Self.landlockABI >= 6, "the kernel's Landlock has no scoping (ABI 6, Linux 6.12)"))
    func landlockScopingKeepsSignalsAndAbstractSocketsInside() throws {
        let name = "kiln-landlock-\(getpid())"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in name.utf8.enumerated() { raw[index + 1] = byte } // sun_path[0] = 0: abstract
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + 1 + name.utf8.count)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) }
        }
        #expect(bound == 0 && listen(listener, 4) == 0)
        let parent = getpid()
        let outcome = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { target in
                Self.runFiltered([]) {
                    guard ckiln_landlock_scope_signals_and_abstract_sockets() >= 6 else { return 1 }
                    guard kill(getpid(), 0) == 0 else { return 2 }
                    guard kill(parent, 0) == -1 && errno == EPERM else { return 3 }
                    let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                    guard connect(client, target, length) == -1 && errno == EPERM else { return 4 }
                    return 0
                }
            }
        }
        #expect(
            outcome == .exited(0),
            "1: not scoped, 2: own signal refused, 3: signal left the domain, 4: abstract connect left it")
        // Outside the domain the same connect works: the socket was there.
        let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) }
        }
        #expect(connected == 0)
    }

    static let landlockABI = ckiln_syscall6(444, 0, 0, 1, 0, 0, 0) // landlock_create_ruleset(NULL, 0, VERSION)

    /// The static rehearsal of the VMM's threads, exec'd under the jailer's
    /// filter: start-up, then the api, vcpu and vmm roles, each doing its
    /// thread's typical calls after an allocation workout (large and many
    /// blocks, heap growth and trimming, realloc, aligned blocks, the first
    /// gmtime_r), and once with a contended lazy global. A call that is not
    /// allowed kills it (SIGSYS).
    @Test(
        .enabled(
            if: SeccompSupport.rehearsal != nil, "policy-rehearsal is not built beside the tests: run swift build first"
        ))
    func aStaticProgramRunsUnderTheJailerAndThreadFilters() throws {
        let rehearsal = SeccompSupport.rehearsal!
        let bundlePath = "/tmp/kiln-rehearsal-\(getpid()).kbundle"
        let socketPath = "/tmp/kiln-rehearsal-\(getpid()).sock"
        defer { unlink(bundlePath); unlink(socketPath) }
        let bundle = try Self.bundle()
        try FileSystem.writeAtomically(bundlePath, bundle.encoded())
        let jailer = bundle.program(for: "jailer")!

        func exec(_ arguments: [String]) -> Int32 {
            // argv as C strings, made before fork.
            let argv = ([rehearsal, bundlePath, socketPath] + arguments).map { strdup($0) } + [nil]
            defer { for argument in argv { free(argument) } }
            // The API client, as an orchestrator: kiln's roles have no connect.
            let client = Self.startAPIClient(socketPath: socketPath)
            defer { pthread_join(client, nil) }
            let outcome = Self.runFiltered(jailer) {
                execv(rehearsal, argv)
                return 127
            }
            switch outcome {
            case let .exited(code): return code
            case let .signalled(signal): return 128 + signal
            }
        }
        #expect(exec([]) == 0)
        // The API thread, a vCPU thread and the event loop first touching one
        // lazy global at once, as kiln's threads can under load: swift_once's
        // lock is then contended, a PI futex the roles must let through.
        #expect(exec(["--once-race"]) == 0)
        // A call the jailer's filter allows and each thread role denies: the
        // thread's own filter stops it.
        for role in ["api", "vcpu", "vmm"] {
            #expect(exec(["--forbidden", role]) == 128 + SIGSYS, "\(role)")
        }
        // Each role's workout, alone, survives only because the C library
        // was prepared before the first thread: unprepared, glibc opens
        // /proc/sys/vm/overcommit_memory on the first trim of the api or
        // vcpu thread's own arena, and /etc/localtime on the first gmtime_r
        // (the event loop's heap is the main arena, which trims with brk).
        for role in ["api", "vcpu", "vmm"] {
            #expect(exec(["--workout", role]) == 0, "\(role)")
            #expect(exec(["--unprepared", "--workout", role]) == 128 + SIGSYS, "\(role)")
        }
    }

    /// tgkill under the vmm role reaches kiln's own threads and no other
    /// process of the same uid: the rehearsal, exec'd under the jailer's
    /// filter with its threads in their roles, kicks a thread of its own with
    /// SIGUSR1 (which arrives), then aims tgkill at another process of this
    /// uid, and dies of SIGSYS there; that process lives on.
    @Test(
        .enabled(
            if: SeccompSupport.rehearsal != nil, "policy-rehearsal is not built beside the tests: run swift build first"
        ))
    func tgkillReachesOwnThreadsButNoOtherProcess() throws {
        let rehearsal = SeccompSupport.rehearsal!
        let scratch = "/tmp/kiln-rehearsal-signal-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let bundlePath = scratch + ".kbundle", socketPath = scratch + ".sock", outputPath = scratch + ".out"
        defer { for path in [bundlePath, socketPath, outputPath] { unlink(path) } }
        let bundle = try Self.bundle()
        try FileSystem.writeAtomically(bundlePath, bundle.encoded())

        // Another tenant's process of the same uid: it dies of SIGUSR1 if it arrives.
        let victim = fork()
        if victim == 0 { while true { pause() } }
        defer { kill(victim, SIGKILL); waitpid(victim, nil, 0) }

        let words: [String] = [rehearsal, bundlePath, socketPath, "--signal-other", String(victim)]
        let argv = words.map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        // The rehearsal's stdout, opened here: the jailer's filter has no open for it.
        let output = open(outputPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        try #require(output >= 0, "open \(outputPath)")
        defer { close(output) }
        let client = Self.startAPIClient(socketPath: socketPath)
        defer { pthread_join(client, nil) }
        let outcome = Self.runFiltered(bundle.program(for: "jailer")!, standardOutput: output) {
            execv(rehearsal, argv)
            return 127
        }
        let printed = (try? FileSystem.readText(outputPath)) ?? ""
        #expect(printed.contains("kicked its own thread"), "the kick did not arrive: \(printed)")
        #expect(!printed.contains("signalled process"), "tgkill reached another process: \(printed)")
        #expect(outcome == .signalled(SIGSYS))
        var status: Int32 = 0
        #expect(waitpid(victim, &status, WNOHANG) == 0, "the other process died: status \(status)")
    }

    /// Connects to the rehearsal's API socket once it exists (5 s at most),
    /// sends one request and reads the answer.
    static func startAPIClient(socketPath: String) -> pthread_t {
        final class Path { let value: String; init(_ value: String) { self.value = value } }
        var thread = pthread_t()
        pthread_create(
            &thread, nil,
            { raw in
                let path = Unmanaged<Path>.fromOpaque(raw!).takeRetainedValue().value
                for _ in 0..<500 {
                    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                    var address = sockaddr_un()
                    address.sun_family = sa_family_t(AF_UNIX)
                    withUnsafeMutableBytes(of: &address.sun_path) { raw in
                        for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
                    }
                    let connected = withUnsafePointer(to: &address) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                        }
                    }
                    if connected == 0 {
                        let request = Array("PUT /actions HTTP/1.1\r\nContent-Length: 0\r\n\r\n".utf8)
                        _ = write(fd, request, request.count)
                        var response = [UInt8](repeating: 0, count: 64)
                        _ = read(fd, &response, response.count)
                        close(fd)
                        return nil
                    }
                    close(fd)
                    usleep(10_000)
                }
                return nil
            }, Unmanaged.passRetained(Path(socketPath)).toOpaque())
        return thread
    }

    @Test func errnoAndKillThreadDefaultsFromAPolicy() throws {
        let policy = try PolicyTestSupport.role(
            "@default errno(EPERM)\ngetpid # probe\nexit_group # the child's _exit\n")
        let program = try PolicyCompiler.compile(policy)
        #expect(
            Self.runFiltered(program) {
                Self.syscall(Self.nr["getppid"]!).errno == EPERM && Self.syscall(Self.nr["getpid"]!).result > 0 ? 0 : 1
            } == .exited(0))
        let killer = try PolicyCompiler.compile(try PolicyTestSupport.role("@default kill-thread\nexit_group # end\n"))
        #expect(
            Self.runFiltered(killer) {
                _ = Self.syscall(Self.nr["getppid"]!); return 1
            } == .signalled(SIGSYS))
    }
}
