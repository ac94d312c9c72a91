import CKiln
import KilnJSON
import KilnSeccomp
import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// kiln driven through its API socket with every thread's seccomp filter on,
/// as Firecracker's clients drive Firecracker: configure, start, inspect,
/// pause, resume, flush metrics, Ctrl+Alt+Del. A rule missing from
/// policies/ traps a call and fails these tests (exit 148) rather than a
/// user's VM.
enum APILane {
    /// `kiln-policy` is built beside kiln.
    static let kilnPolicy = PolicyBundle.compiler
    static var ready: Bool { Lane1.ready && access(kilnPolicy, X_OK) == 0 }
    static let skipReason: Comment = {
        guard Lane1.ready else { return Lane1.skipReason }
        return Comment(rawValue: "API lane skipped: \(kilnPolicy) is not built (swift build)")
    }()

    /// Compiles `policies` (the repository's by default) into a bundle.
    static func bundle(policies: String = PolicyBundle.shippedPolicies) throws -> String {
        let output = "/tmp/kiln-api-lane-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).kbundle"
        try PolicyBundle.compile(policies: policies, output: output)
        return output
    }

    /// Starts kiln as kiln-jailer leaves it: exec'd under the bundle's
    /// `jailer` program (kill-process by default), so that a start-up call
    /// the jailer's filter lacks kills kiln (exit 128 + SIGSYS).
    static func spawnUnderJailerFilter(bundle: String, _ arguments: [String], stdout: String, stderr: String) throws
        -> pid_t
    {
        let decoded = try SeccompBundle(decoding: try FileSystem.readFile(bundle))
        guard let program = decoded.program(for: SeccompBundle.jailerRole) else {
            throw LaneFailure("no jailer program")
        }
        var filters = program.map { sock_filter(code: $0.code, jt: $0.jt, jf: $0.jf, k: $0.k) }
        // Everything the child needs exists before fork: it only calls
        // async-signal-safe functions (and resolves OWN_PID in place, as
        // SeccompFilter.install does).
        let argv = ([Lane1.kiln] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var empty = sigset_t()
        sigemptyset(&empty)
        return filters.withUnsafeMutableBufferPointer { buffer in
            let pid = fork()
            if pid == 0 {
                OwnProcessID.resolve(buffer, pid: UInt32(getpid()))
                let input = open("/dev/null", O_RDONLY)
                let output = open(stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                let errors = open(stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                guard input >= 0, output >= 0, errors >= 0,
                    dup2(input, 0) == 0, dup2(output, 1) == 1, dup2(errors, 2) == 2
                else { _exit(120) }
                sigprocmask(SIG_SETMASK, &empty, nil)
                if ckiln_set_no_new_privs() != 0 { _exit(121) }
                if ckiln_seccomp_load(buffer.baseAddress, UInt16(buffer.count), 0) != 0 { _exit(122) }
                execv(Lane1.kiln, argv)
                _exit(127)
            }
            return pid
        }
    }

    struct LaneFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// Waits until `predicate` holds, polling every 10 ms, for `seconds` at most.
    static func eventually(seconds: Double = 10, _ predicate: () -> Bool) -> Bool {
        let deadline = MonotonicClock.nanoseconds() + UInt64(seconds * 1e9)
        while MonotonicClock.nanoseconds() < deadline {
            if predicate() { return true }
            usleep(10_000)
        }
        return predicate()
    }
}

/// A keep-alive HTTP/1.1 client on a Unix socket, enough for kiln's answers
/// (a status line, headers with Content-Length, a JSON body).
final class UnixHTTPClient {
    private let socket: FileDescriptor
    private var buffer: [UInt8] = []

    init(path: String) throws {
        var connected: FileDescriptor?
        _ = APILane.eventually {
            connected = try? UnixSocket.connect(path: path); return connected != nil
        }
        guard let connected else { throw APILane.LaneFailure("no API socket at \(path)") }
        socket = connected
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(socket.rawValue, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { socket.close() }

    struct Response {
        let status: Int
        let body: String
    }

    func request(_ method: String, _ path: String, _ body: String? = nil) throws -> Response {
        try send(method, path, body)
        let head = try readUntilBlankLine()
        let lines = head.split(separator: "\r\n")
        guard let statusLine = lines.first, statusLine.hasPrefix("HTTP/1.1 "),
            let status = Int(statusLine.dropFirst(9).prefix(3))
        else {
            throw APILane.LaneFailure("bad status line in \(head)")
        }
        let length =
            lines.dropFirst().compactMap { line -> Int? in
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
                return Int(parts[1].trimmingPrefix(" "))
            }.first ?? 0
        try fill(length)
        let bodyBytes = Array(buffer.prefix(length))
        buffer.removeFirst(length)
        return Response(status: status, body: String(decoding: bodyBytes, as: UTF8.self))
    }

    /// Writes a request without waiting for its answer.
    func send(_ method: String, _ path: String, _ body: String? = nil) throws {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        if let body { text += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        // send(MSG_NOSIGNAL), not write: a kiln that has ended must fail
        // this test with EPIPE, not end the whole test process by SIGPIPE.
        let bytes = Array((text + "\r\n" + (body ?? "")).utf8)
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                Glibc.send(socket.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 && errno == EINTR { continue }
            guard sent > 0 else { throw APILane.LaneFailure("sending \(method) \(path) failed: errno \(errno)") }
            offset += sent
        }
    }

    private func readUntilBlankLine() throws -> String {
        let separator = Array("\r\n\r\n".utf8)
        while true {
            if let end = (0..<max(0, buffer.count - 3)).first(where: { Array(buffer[$0..<$0 + 4]) == separator }) {
                let head = String(decoding: buffer[0..<end], as: UTF8.self)
                buffer.removeFirst(end + 4)
                return head
            }
            try readMore()
        }
    }

    private func fill(_ count: Int) throws {
        while buffer.count < count { try readMore() }
    }

    private func readMore() throws {
        var chunk = [UInt8](repeating: 0, count: 4096)
        let count = Glibc.read(socket.rawValue, &chunk, chunk.count)
        guard count > 0 else { throw APILane.LaneFailure("the API connection ended (read returned \(count))") }
        buffer += chunk[0..<count]
    }
}

@Suite(.enabled(if: APILane.ready, APILane.skipReason))
struct APISequenceTests {
    /// Run twice: as a user starts kiln, and exec'd under the jailer's
    /// pre-exec filter as kiln-jailer starts it (the filters then stack).
    @Test(arguments: [false, true])
    func aFirecrackerClientSequenceRunsUnderEveryThreadFilter(underJailerFilter: Bool) throws {
        let bundle = try APILane.bundle()
        let scratch = "/tmp/kiln-api-lane-\(getpid())-\(underJailerFilter ? "jailed" : "plain")"
        let socketPath = scratch + ".sock", console = scratch + ".console", errors = scratch + ".err"
        let logPath = scratch + ".log", metricsPath = scratch + ".metrics"
        defer { for path in [bundle, socketPath, console, errors, logPath, metricsPath] { unlink(path) } }
        let arguments = ["--api-sock", socketPath, "--seccomp-filter", bundle, "--boot-timer"]
        let pid =
            underJailerFilter
            ? try APILane.spawnUnderJailerFilter(bundle: bundle, arguments, stdout: console, stderr: errors)
            : try Lane1.spawn(arguments, stdout: console, stderr: errors)
        var status: Int32?
        defer { if status == nil { kill(pid, SIGKILL); _ = Lane1.wait(pid) } }
        let client: UnixHTTPClient
        do {
            client = try UnixHTTPClient(path: socketPath)
        } catch {
            kill(pid, SIGKILL)
            status = Lane1.wait(pid)
            Issue.record(
                "\(error); kiln ended with \(status!) (159: killed by a seccomp filter), stderr: \(Lane1.read(errors))")
            return
        }

        // Pre-boot: describe, configure logger, metrics, machine, boot source.
        let described = try client.request("GET", "/")
        #expect(described.status == 200 && described.body.contains("\"state\":\"Not started\""), "\(described)")
        #expect(try client.request("GET", "/version").status == 200)
        #expect(
            try client.request("PUT", "/logger", "{\"log_path\": \"\(logPath)\", \"level\": \"Debug\"}").status == 204)
        #expect(try client.request("PUT", "/metrics", "{\"metrics_path\": \"\(metricsPath)\"}").status == 204)
        #expect(
            try client.request("PUT", "/machine-config", "{\"vcpu_count\": 2, \"mem_size_mib\": 128}").status == 204)
        #expect(try client.request("PATCH", "/machine-config", "{\"mem_size_mib\": 96}").status == 204)
        #expect(try client.request("GET", "/machine-config").body.contains("\"mem_size_mib\":96"))
        let bootSource =
            "{\"kernel_image_path\": \"\(Lane1.guest)\", \"boot_args\": \"console=ttyS0 ctrlaltdel ticks\"}"
        #expect(try client.request("PUT", "/boot-source", bootSource).status == 204)
        #expect(try client.request("GET", "/vm/config").body.contains("ctrlaltdel"))
        let premature = try client.request("PATCH", "/vm", "{\"state\": \"Paused\"}")
        #expect(premature.status == 400 && premature.body.contains("not supported before starting"))

        // Boot.
        let started = try client.request("PUT", "/actions", "{\"action_type\": \"InstanceStart\"}")
        #expect(started.status == 204, "\(started.body)")
        #expect(
            APILane.eventually { Lane1.read(console).contains("guest: waiting for ctrl-alt-del") },
            "console: \(Lane1.read(console))")

        // Post-boot: state, refused changes, pause and resume across a halt
        // check (500 ms), metrics, unsupported features, Ctrl+Alt+Del.
        #expect(try client.request("GET", "/").body.contains("\"state\":\"Running\""))
        let late = try client.request("PUT", "/boot-source", bootSource)
        #expect(late.status == 400 && late.body.contains("not supported after starting"))
        func ticks() -> Int { Lane1.read(console).split(separator: "\n").filter { $0 == "guest: tick" }.count }
        #expect(APILane.eventually { ticks() >= 2 }, "the guest ticks every 100 ms while it runs")
        // The 204 comes once every vCPU has parked (Machine.pause waits for
        // them), so the count is final at the answer; no window to race.
        #expect(try client.request("PATCH", "/vm", "{\"state\": \"Paused\"}").status == 204)
        let whilePaused = ticks()
        #expect(try client.request("GET", "/").body.contains("\"state\":\"Paused\""))
        // Let the halt check (every 500 ms) run while paused: a paused guest
        // is not a stuck one, and kiln must still be there to resume it.
        usleep(700_000)
        #expect(ticks() == whilePaused, "a paused guest runs no instruction")
        #expect(try client.request("PATCH", "/vm", "{\"state\": \"Resumed\"}").status == 204)
        #expect(APILane.eventually(seconds: 5) { ticks() >= whilePaused + 2 }, "the guest runs again after Resumed")
        #expect(try client.request("PUT", "/actions", "{\"action_type\": \"FlushMetrics\"}").status == 204)
        let snapshot = try client.request(
            "PUT", "/snapshot/create", "{\"snapshot_path\": \"s\", \"mem_file_path\": \"m\"}")
        #expect(snapshot.status == 400 && snapshot.body.contains("not supported by Kiln"))
        #expect(try client.request("PUT", "/actions", "{\"action_type\": \"SendCtrlAltDel\"}").status == 204)

        // The guest saw the keys on IRQ 1 and rebooted: kiln ends with 0.
        status = Lane1.wait(pid)
        #expect(status == 0, "stderr: \(Lane1.read(errors)) log: \(Lane1.read(logPath))")
        let output = Lane1.read(console)
        #expect(output.contains("guest: keyboard: 0x14 0x11 0xe0 0x71"))
        #expect(output.contains("guest: ctrl-alt-del received"))
        #expect(access(socketPath, F_OK) != 0, "the API socket must be removed at exit")

        let log = Lane1.read(logPath)
        #expect(log.contains("\"thread\":\"api\""))
        #expect(log.contains("\"thread\":\"vcpu0\""))
        #expect(log.contains("guest reset (i8042 reset)"))
        // Metrics: the flush and the snapshot at exit, each one JSON object;
        // a counter that is missing or zero fails.
        let metrics = Lane1.read(metricsPath).split(separator: "\n")
        #expect(metrics.count >= 2)
        let last = try JSONParser.parse(String(metrics.last ?? "{}"))
        func value(_ group: String, _ name: String) -> UInt64? {
            guard case let .number(text)? = last[group]?[name] else { return nil }
            return UInt64(text)
        }
        let context = Comment(rawValue: "metrics: \(metrics.last ?? "")")
        #expect(value("i8042", "ctrl_alt_del") == 1, context)
        #expect(value("seccomp", "num_faults") == 0, context)
        #expect(value("api_server", "requests").map { $0 > 0 } == true, context)
        #expect(value("boot", "boot_time_us").map { $0 > 0 } == true, "the boot timer's figure: \(context)")
        #expect(value("vcpu", "exit_io_out").map { $0 > 0 } == true, "vCPU exits are counted: \(context)")
        // Per-device counters: the console through the UART, the four
        // scancodes read from the i8042, the boot timer's one write.
        #expect(value("uart", "writes").map { $0 > 0 } == true, context)
        #expect(value("i8042", "reads").map { $0 >= 4 } == true, context)
        #expect(value("boot_timer", "writes").map { $0 >= 1 } == true, context)
    }

    /// Firecracker's Go SDK passes --no-seccomp after the jailer's `--`. Under
    /// the jailer's filter kiln still stacks its launch role, which takes
    /// exec away, so no caller's flag leaves a kiln that can exec: its
    /// threads show the jailer's filter and the launch role's.
    @Test func noSeccompUnderTheJailerFilterStillGetsTheLaunchRole() throws {
        let bundle = try APILane.bundle()
        let scratch = "/tmp/kiln-api-lane-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-no-seccomp"
        let socketPath = scratch + ".sock", errors = scratch + ".err"
        defer { for path in [bundle, socketPath, errors] { unlink(path) } }
        let pid = try APILane.spawnUnderJailerFilter(
            bundle: bundle, ["--api-sock", socketPath, "--no-seccomp"],
            stdout: "/dev/null", stderr: errors)
        defer { kill(pid, SIGKILL); _ = Lane1.wait(pid) }
        let client = try UnixHTTPClient(path: socketPath)
        #expect(try client.request("GET", "/").status == 200, "stderr: \(Lane1.read(errors))")
        let inherited = Int(Self.statusField("Seccomp_filters", of: getpid())) ?? 0
        #expect(
            Self.statusField("Seccomp_filters", of: pid) == "\(inherited + 2)",
            "jailer's and launch: \(Lane1.read(errors))")
        // And unfiltered, --no-seccomp means none.
        let plainSocket = scratch + "-plain.sock"
        defer { unlink(plainSocket) }
        let plain = try Lane1.spawn(
            ["--api-sock", plainSocket, "--no-seccomp"], stdout: "/dev/null", stderr: "/dev/null", seconds: 30)
        defer { kill(plain, SIGTERM); _ = Lane1.wait(plain) }
        #expect(try UnixHTTPClient(path: plainSocket).request("GET", "/").status == 200)
        let children = Lane1.read("/proc/\(plain)/task/\(plain)/children").split(separator: " ")
        let kiln = try #require(children.first.flatMap { Int32($0.trimmingPrefix(" ")) }, "no kiln under timeout(1)")
        #expect(Self.statusField("Seccomp_filters", of: kiln) == "\(inherited)")
    }

    static func statusField(_ key: String, of pid: pid_t) -> String {
        Lane1.read("/proc/\(pid)/status").split(separator: "\n").first { $0.hasPrefix(key + ":") }
            .map { String($0.split(separator: "\t").last ?? "") } ?? "?"
    }

    @Test func aViolationIsReportedWithItsSyscallRoleAndExitCode() throws {
        // The repository's policies with KVM_RUN taken from the vcpu role:
        // vcpu0's first KVM_RUN traps.
        let policies = "/tmp/kiln-api-lane-policies-\(getpid())"
        mkdir(policies, 0o700)
        defer {
            for name in ["common", "vmm", "api", "vcpu", "jailer", "launch", "startup"] {
                unlink("\(policies)/\(name).policy")
            }
            rmdir(policies)
        }
        for name in ["common", "vmm", "api", "vcpu", "jailer", "launch", "startup"] {
            var text = Lane1.read(Lane1.packageRoot + "/policies/\(name).policy")
            if name == "vcpu" {
                let original = text
                text = text.replacing("{KVM_RUN,", with: "{")
                #expect(text != original, "vcpu.policy no longer allows KVM_RUN as `{KVM_RUN,`")
            }
            try FileSystem.writeAtomically("\(policies)/\(name).policy", Array(text.utf8))
        }
        let bundle = try APILane.bundle(policies: policies)
        defer { unlink(bundle) }
        let run = try Lane1.run(["--no-api", "--seccomp-filter", bundle, "--kernel", Lane1.guest])
        #expect(run.status == 148, "stderr: \(run.stderr)")
        let report = run.stderr.split(separator: "\n").first { $0.contains("seccomp: the") } ?? ""
        #expect(report.contains("\"syscall\":16,"), "ioctl(2) is system call 16: \(report)")
        #expect(report.contains("\"role\":\"vcpu0\""), "\(report)")
        #expect(report.contains("\"thread_name\":\"kiln-vcpu0\""), "\(report)")
        #expect(report.contains(",\"0xae80\","), "KVM_RUN is ioctl 0xae80: \(report)")
        #expect(run.stdout.isEmpty)
    }

    @Test func theHaltCheckAndTheFatalPathRunUnderTheFilters() throws {
        let bundle = try APILane.bundle()
        let logPath = "/tmp/kiln-api-lane-halt-\(getpid()).log"
        defer { unlink(bundle); unlink(logPath) }
        // Two vCPUs kicked every 500 ms (KVM_GET_MP_STATE, KVM_GET_REGS), then
        // the fatal line on stderr as well as in the log file.
        let run = try Lane1.run([
            "--no-api", "--seccomp-filter", bundle, "--kernel", Lane1.guest, "--cmdline", "halt",
            "--vcpus", "2", "--log-path", logPath,
        ])
        #expect(run.status == 3, "stderr: \(run.stderr)")
        #expect(run.stderr.contains("all vCPUs halted"))
        #expect(Lane1.read(logPath).contains("all vCPUs halted"))
    }

    /// Ctrl+C: SIGINT ends kiln with 130 (128 + SIGINT), under its filters,
    /// and the API socket goes with it.
    @Test func sigintEndsKilnWith130AndRemovesTheSocket() throws {
        let bundle = try APILane.bundle()
        let scratch = "/tmp/kiln-api-lane-int-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let socketPath = scratch + ".sock", errors = scratch + ".err"
        defer { unlink(bundle); unlink(socketPath); unlink(errors) }
        let pid = try Lane1.spawn(
            ["--api-sock", socketPath, "--seccomp-filter", bundle], stdout: "/dev/null", stderr: errors)
        var status: Int32?
        defer { if status == nil { kill(pid, SIGKILL); _ = Lane1.wait(pid) } }
        // Serving: the API thread runs under its filter.
        let client = try UnixHTTPClient(path: socketPath)
        #expect(try client.request("GET", "/version").status == 200)
        kill(pid, SIGINT)
        status = Lane1.wait(pid)
        #expect(status == 128 + SIGINT, "stderr: \(Lane1.read(errors))")
        #expect(access(socketPath, F_OK) != 0, "the API socket must be removed on SIGINT")
    }

    @Test func anOversizedBodyIsRefusedAndSIGTERMRemovesTheSocket() throws {
        let scratch = "/tmp/kiln-api-lane-term-\(getpid())"
        let socketPath = scratch + ".sock", errors = scratch + ".err"
        defer { unlink(socketPath); unlink(errors) }
        let pid = try Lane1.spawn(
            ["--api-sock", socketPath, "--no-seccomp", "--http-api-max-payload-size", "64"],
            stdout: "/dev/null", stderr: errors)
        var status: Int32?
        defer { if status == nil { kill(pid, SIGKILL); _ = Lane1.wait(pid) } }
        let client = try UnixHTTPClient(path: socketPath)
        let body = "{\"kernel_image_path\": \"\(String(repeating: "k", count: 100))\"}"
        let refused = try client.request("PUT", "/boot-source", body)
        #expect(refused.status == 413, "\(refused)")
        let fresh = try UnixHTTPClient(path: socketPath)
        #expect(try fresh.request("PUT", "/boot-source", "{\"kernel_image_path\": \"k\"}").status == 204)
        kill(pid, SIGTERM)
        status = Lane1.wait(pid)
        #expect(status == 128 + SIGTERM, "stderr: \(Lane1.read(errors))")
        #expect(access(socketPath, F_OK) != 0, "the API socket must be removed on SIGTERM")
    }
}

/// Refused InstanceStarts must leave nothing open behind them: a client may
/// retry as often as it likes, and each retry must not cost kiln a descriptor.
@Suite(.enabled(if: Lane1.kilnBuilt, "kiln is not built (swift build)"))
struct FailedStartTests {
    /// kiln's descriptors; `spawn` runs it under timeout(1), so kiln is
    /// the only child of `parent`.
    static func descriptorCount(underParent parent: pid_t) -> Int? {
        let children = Lane1.read("/proc/\(parent)/task/\(parent)/children").split(separator: " ")
        guard children.count == 1, let pid = Int32(children[0].trimmingPrefix(" ")) else { return nil }
        return (try? FileSystem.listDirectory("/proc/\(pid)/fd"))?.count
    }

    @Test func aRefusedInstanceStartLeaksNoDescriptor() throws {
        let scratch = "/tmp/kiln-failed-start-\(getpid())"
        let socketPath = scratch + ".sock", errors = scratch + ".err", console = scratch + ".console"
        defer { unlink(socketPath); unlink(errors); unlink(console) }
        let pid = try Lane1.spawn(
            ["--api-sock", socketPath, "--no-seccomp", "--console-output", console],
            stdout: "/dev/null", stderr: errors)
        defer { kill(pid, SIGTERM); _ = Lane1.wait(pid) }
        let client = try UnixHTTPClient(path: socketPath)
        // A readable file that is no kernel: refused while the image is read,
        // after the console output is opened.
        #expect(try client.request("PUT", "/boot-source", "{\"kernel_image_path\": \"/etc/hostname\"}").status == 204)
        let action = "{\"action_type\": \"InstanceStart\"}"
        #expect(try client.request("PUT", "/actions", action).status == 400)
        let before = try #require(Self.descriptorCount(underParent: pid))
        for _ in 0..<5 {
            let refused = try client.request("PUT", "/actions", action)
            #expect(refused.status == 400 && refused.body.contains("kernel /etc/hostname"), "\(refused)")
        }
        #expect(Self.descriptorCount(underParent: pid) == before)
    }

    /// Firecracker's PUT /drives opens the file while it answers; a path that
    /// cannot serve as the drive is refused there, naming the drive, under
    /// the built-in filters, with nothing kept open or configured.
    @Test func aDriveThatCannotServeIsRefusedAtPUT() throws {
        let scratch = "/tmp/kiln-drive-put-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let socketPath = scratch + ".sock", errors = scratch + ".err", fifo = scratch + ".fifo"
        let empty = scratch + "-empty.img", good = scratch + "-good.img", folder = scratch + ".d"
        mkfifo(fifo, 0o600)
        mkdir(folder, 0o700)
        for (path, size) in [(empty, 0), (good, 1 << 20)] {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            ftruncate(fd, off_t(size))
            close(fd)
        }
        defer {
            for path in [socketPath, errors, fifo, empty, good] { unlink(path) }
            rmdir(folder)
        }
        let pid = try Lane1.spawn(["--api-sock", socketPath], stdout: "/dev/null", stderr: errors)
        defer { kill(pid, SIGTERM); _ = Lane1.wait(pid) }
        let client = try UnixHTTPClient(path: socketPath)
        func put(_ path: String) throws -> UnixHTTPClient.Response {
            try client.request(
                "PUT", "/drives/data",
                "{\"drive_id\": \"data\", \"path_on_host\": \"\(path)\", \"is_root_device\": false}")
        }
        let cases = [
            (folder, "Is a directory"), (scratch + ".missing", "No such file"),
            (fifo, "not a regular file or block device"), (empty, "smaller than one 512-byte sector"),
        ]
        var before: Int?
        for round in 0..<2 {
            for (path, reason) in cases {
                let refused = try put(path)
                #expect(
                    refused.status == 400 && refused.body.contains("drive data: ") && refused.body.contains(reason),
                    "\(path): \(refused)")
            }
            if round == 0 { before = FailedStartTests.descriptorCount(underParent: pid) }
        }
        #expect(before != nil && FailedStartTests.descriptorCount(underParent: pid) == before)
        #expect(try client.request("GET", "/vm/config").body.contains("\"drives\":[]"))
        #expect(try put(good).status == 204)
        let shown = try client.request("GET", "/vm/config").body
        #expect(shown.contains(good) && !shown.contains(folder), "\(shown)")
    }

    /// As Firecracker's PUT /network-interfaces, the TAP is opened while the
    /// request is answered: a missing one is a 400 naming it, not a 204
    /// that fails at InstanceStart.
    @Test func aMissingTapIsRefusedAtPUT() throws {
        let scratch = "/tmp/kiln-tap-put-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let socketPath = scratch + ".sock", errors = scratch + ".err"
        defer { for path in [socketPath, errors] { unlink(path) } }
        let pid = try Lane1.spawn(["--api-sock", socketPath], stdout: "/dev/null", stderr: errors)
        defer { kill(pid, SIGTERM); _ = Lane1.wait(pid) }
        let client = try UnixHTTPClient(path: socketPath)
        let refused = try client.request(
            "PUT", "/network-interfaces/eth0", "{\"iface_id\": \"eth0\", \"host_dev_name\": \"kiln-notap7\"}")
        #expect(
            refused.status == 400 && refused.body.contains("cannot open TAP kiln-notap7")
                && refused.body.contains("no such persistent TAP"), "\(refused)")
        #expect(try client.request("GET", "/vm/config").body.contains("\"network-interfaces\":[]"))
        #expect(try client.request("GET", "/").status == 200)
    }
}
