import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A signal that asks kiln to stop stops it, whatever the event loop was
/// doing when it arrived: here, with an InstanceStart queued and not yet run.
@Suite(.enabled(if: APILane.ready, APILane.skipReason))
struct StopSignalTests {
    @Test func aSIGTERMRacingInstanceStartStopsKiln() throws {
        let bundle = try APILane.bundle()
        defer { unlink(bundle) }
        for attempt in 0..<8 {
            let scratch = "/tmp/kiln-stop-\(getpid())-\(attempt)"
            let socketPath = scratch + ".sock", console = scratch + ".console", errors = scratch + ".err"
            defer { for path in [socketPath, console, errors] { unlink(path) } }
            let pid = try Lane1.spawn(
                ["--api-sock", socketPath, "--seccomp-filter", bundle],
                stdout: console, stderr: errors, seconds: 30)
            let client = try UnixHTTPClient(path: socketPath)
            // The guest waits for Ctrl+Alt+Del: it never ends by itself.
            let bootSource = "{\"kernel_image_path\": \"\(Lane1.guest)\", \"boot_args\": \"console=ttyS0 ctrlaltdel\"}"
            #expect(try client.request("PUT", "/boot-source", bootSource).status == 204)
            // Queue InstanceStart, then signal while it is queued or running.
            try client.send("PUT", "/actions", "{\"action_type\": \"InstanceStart\"}")
            if attempt % 2 == 1 { usleep(UInt32(attempt) * 500) }
            kill(pid, SIGTERM)
            let status = Lane1.wait(pid)
            // timeout(1) reports 124 when kiln ignored the signal for 30 s.
            #expect(status == 128 + SIGTERM, "attempt \(attempt): kiln ended with \(status); \(Lane1.read(errors))")
            #expect(access(socketPath, F_OK) != 0, "the API socket file is removed")
        }
    }
}
