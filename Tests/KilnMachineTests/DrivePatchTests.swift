import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// PATCH /drives after boot, as Firecracker's clients use it (a new
/// `path_on_host` for a running guest), with every thread's filter on.
@Suite(.enabled(if: APILane.ready, APILane.skipReason))
struct DrivePatchTests {
    @Test func aRunningGuestsDriveIsReopenedAndTheOldFileClosed() throws {
        let bundle = try APILane.bundle()
        let scratch = "/tmp/kiln-drive-patch-\(getpid())"
        let socketPath = scratch + ".sock", console = scratch + ".console", errors = scratch + ".err"
        let first = scratch + "-a.img", second = scratch + "-b.img", fifo = scratch + ".fifo"
        for (path, size) in [(first, 1 << 20), (second, 2 << 20)] {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            ftruncate(fd, off_t(size))
            close(fd)
        }
        mkfifo(fifo, 0o600)
        defer { for path in [bundle, socketPath, console, errors, first, second, fifo] { unlink(path) } }
        let pid = try Lane1.spawn(
            ["--api-sock", socketPath, "--seccomp-filter", bundle, "--level", "Info"],
            stdout: console, stderr: errors, seconds: 60)
        var status: Int32?
        defer { if status == nil { kill(pid, SIGKILL); _ = Lane1.wait(pid) } }
        let client = try UnixHTTPClient(path: socketPath)
        let bootSource = "{\"kernel_image_path\": \"\(Lane1.guest)\", \"boot_args\": \"console=ttyS0 ctrlaltdel\"}"
        #expect(try client.request("PUT", "/boot-source", bootSource).status == 204)
        let drive = "{\"drive_id\": \"data\", \"path_on_host\": \"\(first)\", \"is_root_device\": false}"
        #expect(try client.request("PUT", "/drives/data", drive).status == 204)
        #expect(try client.request("PUT", "/actions", "{\"action_type\": \"InstanceStart\"}").status == 204)
        #expect(
            APILane.eventually { Lane1.read(console).contains("guest: waiting for ctrl-alt-del") },
            "console: \(Lane1.read(console))")
        let before = try #require(FailedStartTests.descriptorCount(underParent: pid))

        for _ in 0..<3 {
            for path in [second, first] {
                let patched = try client.request(
                    "PATCH", "/drives/data", "{\"drive_id\": \"data\", \"path_on_host\": \"\(path)\"}")
                #expect(patched.status == 204, "\(patched)")
            }
        }
        #expect(FailedStartTests.descriptorCount(underParent: pid) == before, "each old drive file is closed")
        #expect(try client.request("GET", "/vm/config").body.contains(first))

        // Refused, naming the problem, and the drive keeps its file.
        let notAFile = try client.request(
            "PATCH", "/drives/data", "{\"drive_id\": \"data\", \"path_on_host\": \"\(fifo)\"}")
        #expect(notAFile.status == 400 && notAFile.body.contains("not a regular file or block device"), "\(notAFile)")
        let unknown = try client.request(
            "PATCH", "/drives/other", "{\"drive_id\": \"other\", \"path_on_host\": \"\(second)\"}")
        #expect(unknown.status == 400, "\(unknown)")
        #expect(try client.request("GET", "/vm/config").body.contains(first))

        // A rate limiter set on the running drive, kept by the configuration.
        let limited = try client.request(
            "PATCH", "/drives/data",
            """
            {"drive_id": "data", "rate_limiter": {"bandwidth": {"size": 1048576, "refill_time": 100}}}
            """)
        #expect(limited.status == 204, "\(limited)")
        let shown = try client.request("GET", "/vm/config").body
        #expect(shown.contains("1048576") && shown.contains(first), "\(shown)")

        #expect(try client.request("PUT", "/actions", "{\"action_type\": \"SendCtrlAltDel\"}").status == 204)
        status = Lane1.wait(pid)
        #expect(status == 0, "stderr: \(Lane1.read(errors))")
        #expect(Lane1.read(errors).contains("drive data: now \(second), 4096 sectors"))
    }
}
