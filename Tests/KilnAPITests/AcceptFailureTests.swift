import Glibc
import KilnSystem
import KilnTestSupport
import Testing

/// kiln's API under descriptor exhaustion, as an orchestrator's
/// `--resource-limit no-file=` sets it up: accept4 fails with EMFILE. The
/// limit is lowered on the running kiln (prlimit(1)), not on this test
/// process, whose other suites need their descriptors.
private let kiln = ChildProcess.buildFolder + "/kiln"

@Suite(
    .serialized,
    .enabled(
        if: access(kiln, X_OK) == 0 && access(PolicyBundle.compiler, X_OK) == 0,
        "kiln or kiln-policy is not built (swift build)"))
struct AcceptFailureTests {
    static func descriptors(of pid: pid_t) -> [Int] {
        ((try? FileSystem.listDirectory("/proc/\(pid)/fd")) ?? []).compactMap { Int($0) }
    }

    /// User plus system CPU time, in clock ticks (proc(5), fields 14 and 15).
    static func cpuTicks(of pid: pid_t) -> Int {
        let stat = ChildProcess.read("/proc/\(pid)/stat")
        guard let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }

    static func get(_ client: FileDescriptor, _ path: String) throws {
        try client.writeAll(Array("GET \(path) HTTP/1.1\r\n\r\n".utf8))
    }

    /// What arrives within `milliseconds`: nil for nothing, the error for a
    /// failed read (kiln gone).
    static func answer(_ client: FileDescriptor, within milliseconds: Int32) -> String? {
        guard becomesReadable(client, within: milliseconds) else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        do {
            let count = try buffer.withUnsafeMutableBytes { try client.read(into: $0) }
            return String(decoding: buffer[0..<count], as: UTF8.self)
        } catch {
            return "\(error)"
        }
    }

    @Test func acceptFailuresPauseAndTheServerServesAgain() throws {
        signal(SIGPIPE, SIG_IGN)
        let scratch = "/tmp/kiln-accept-\(getpid())"
        let socketPath = scratch + ".sock", errors = scratch + ".err", bundle = scratch + ".kbundle"
        defer { unlink(socketPath); unlink(errors); unlink(bundle) }
        // Under the shipped filters: the pause and its log lines must need
        // nothing the api role lacks.
        try PolicyBundle.compile(output: bundle)
        let parent = try ChildProcess.spawn(
            [kiln, "--api-sock", socketPath, "--seccomp-filter", bundle],
            stdout: "/dev/null", stderr: errors, seconds: 60)
        defer { kill(parent, SIGTERM); _ = ChildProcess.wait(parent) }
        var probe: FileDescriptor?
        for _ in 0..<500 where probe == nil {
            probe = try? UnixSocket.connect(path: socketPath)
            if probe == nil { usleep(10_000) }
        }
        let first = try #require(probe, "kiln's API socket never accepted: \(ChildProcess.read(errors))")
        defer { first.close() }
        try Self.get(first, "/")
        #expect(Self.answer(first, within: 5000)?.hasPrefix("HTTP/1.1 200 OK") == true)
        let children = ChildProcess.read("/proc/\(parent)/task/\(parent)/children").split(separator: " ")
        let pid = try #require(children.first.flatMap { pid_t($0) })

        // Room for exactly one more descriptor, the lowest free number (a
        // new descriptor takes the lowest, and must be under the limit): the
        // second client takes it.
        let open = Set(Self.descriptors(of: pid))
        let limit = (0...).first { !open.contains($0) }! + 1
        let prlimit = try ChildProcess.run(["prlimit", "--pid", "\(pid)", "--nofile=\(limit):\(limit)"], seconds: 10)
        try #require(prlimit.status == 0, "prlimit: \(prlimit.stderr)")
        let second = try UnixSocket.connect(path: socketPath)
        defer { second.close() }
        try Self.get(second, "/")
        #expect(Self.answer(second, within: 5000)?.hasPrefix("HTTP/1.1 200 OK") == true)

        // The third waits in the backlog while accept4 fails with EMFILE.
        let third = try UnixSocket.connect(path: socketPath)
        defer { third.close() }
        try Self.get(third, "/")
        let ticksBefore = Self.cpuTicks(of: pid)
        let early = Self.answer(third, within: 500)
        #expect(early == nil, "\(early ?? "")")
        // Pausing, not spinning: a retry loop would burn the whole 0.5 s.
        let ticksSpent = Self.cpuTicks(of: pid) - ticksBefore
        #expect(ticksSpent < 15, "kiln used \(ticksSpent) clock ticks in 0.5 s of EMFILE")
        #expect(kill(pid, 0) == 0, "kiln ended on EMFILE: \(ChildProcess.read(errors))")

        // Open connections are still served meanwhile.
        try Self.get(first, "/")
        #expect(Self.answer(first, within: 2000)?.hasPrefix("HTTP/1.1 200 OK") == true)

        // A descriptor frees up: the waiting client is answered.
        second.close()
        let late = Self.answer(third, within: 3000)
        #expect(late?.hasPrefix("HTTP/1.1 200 OK") == true, "\(late ?? "no answer"); \(ChildProcess.read(errors))")

        let log = ChildProcess.read(errors)
        #expect(log.contains("EMFILE") && log.contains("not accepting connections for 100 ms"), "\(log)")
        #expect(log.contains("accepting connections again after"), "\(log)")
    }
}
