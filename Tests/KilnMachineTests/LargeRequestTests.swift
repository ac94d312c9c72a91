import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Valid requests with large bodies, sent to a real kiln under the shipped
/// filters. Parsing them makes the API thread allocate and free far more
/// than small requests do, and the C library's reactions to that (heap
/// growth, trimming, large blocks) run under the `api` filter: a call it
/// lacks ends kiln and its guest with exit 148.
@Suite(.enabled(if: APILane.ready, APILane.skipReason))
struct LargeRequestTests {
    /// A 40 KB PUT /machine-config (whitespace padding, under the default
    /// 51,200-byte limit) and a PUT /boot-source whose boot_args has 16,000
    /// characters (refused: the limit is 2,047), each sent many times; then
    /// kiln still answers, and boots and ends the guest with every filter on.
    @Test func largeBodiesLeaveKilnServingAndTheGuestBoots() throws {
        let bundle = try APILane.bundle()
        let scratch = "/tmp/kiln-large-request-\(getpid())"
        let socketPath = scratch + ".sock", console = scratch + ".console", errors = scratch + ".err"
        defer { for path in [bundle, socketPath, console, errors] { unlink(path) } }
        // Trace logging: every vCPU exit formats a log line on its vCPU thread.
        let pid = try Lane1.spawn(
            ["--api-sock", socketPath, "--seccomp-filter", bundle, "--level", "Trace"],
            stdout: console, stderr: errors, seconds: 60)
        var status: Int32?
        defer { if status == nil { kill(pid, SIGKILL); _ = Lane1.wait(pid) } }
        do {
            try drive(socketPath: socketPath, console: console, errors: errors)
        } catch {
            // The usual failure: kiln died mid-request; say how.
            kill(pid, SIGKILL)
            status = Lane1.wait(pid)
            Issue.record("\(error); kiln ended with \(status!), stderr: \(Lane1.read(errors).suffix(2000))")
            return
        }
        status = Lane1.wait(pid)
        #expect(status == 0, "stderr: \(Lane1.read(errors).suffix(2000))")
        #expect(!Lane1.read(errors).contains("seccomp: the"), "a filter trapped a call")
    }

    private func drive(socketPath: String, console: String, errors: String) throws {
        let client = try UnixHTTPClient(path: socketPath)

        let machineConfig = "{\"vcpu_count\": 2," + String(repeating: " ", count: 40_000) + "\"mem_size_mib\": 128}"
        #expect(machineConfig.utf8.count > 40_000 && machineConfig.utf8.count < 51_200)
        let longArguments =
            "{\"kernel_image_path\": \"\(Lane1.guest)\", \"boot_args\": \"\(String(repeating: "a", count: 16_000))\"}"
        for round in 0..<20 {
            let configured = try client.request("PUT", "/machine-config", machineConfig)
            #expect(configured.status == 204, "round \(round): \(configured)")
            let refused = try client.request("PUT", "/boot-source", longArguments)
            #expect(refused.status == 400 && refused.body.contains("boot_args"), "round \(round): \(refused)")
        }
        let described = try client.request("GET", "/")
        #expect(described.status == 200 && described.body.contains("\"state\":\"Not started\""), "\(described)")

        // rtc: the guest reads the CMOS clock, which converts the host's time
        // on the vCPU thread (gmtime_r), under the vcpu filter.
        let bootSource =
            "{\"kernel_image_path\": \"\(Lane1.guest)\", \"boot_args\": \"console=ttyS0 rtc ctrlaltdel ticks\"}"
        #expect(try client.request("PUT", "/boot-source", bootSource).status == 204)
        #expect(try client.request("PUT", "/actions", "{\"action_type\": \"InstanceStart\"}").status == 204)
        #expect(
            APILane.eventually { Lane1.read(console).contains("guest: waiting for ctrl-alt-del") },
            "console: \(Lane1.read(console)) stderr: \(Lane1.read(errors).suffix(2000))")
        #expect(Lane1.read(console).contains("guest: rtc: century 0x20"))
        // Large bodies again while the guest runs: refused after start, parsed all the same.
        for _ in 0..<5 {
            #expect(try client.request("PUT", "/machine-config", machineConfig).status == 400)
        }
        #expect(try client.request("GET", "/").body.contains("\"state\":\"Running\""))
        #expect(try client.request("PUT", "/actions", "{\"action_type\": \"SendCtrlAltDel\"}").status == 204)
    }
}
