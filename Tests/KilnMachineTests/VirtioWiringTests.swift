import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The machine's virtio devices as a guest and an operator see them before
/// any queue runs: where they are announced, and what is refused by name.
@Suite(.enabled(if: Lane1.ready, Lane1.skipReason))
struct VirtioWiringTests {
    static func disk(_ name: String, bytes: Int) -> String {
        let path = "/tmp/kiln-wiring-\(getpid())-\(name).img"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        ftruncate(fd, off_t(bytes))
        close(fd)
        return path
    }

    static func config(drives: String = "[]", extra: String = "", bootArgs: String = "console=ttyS0") -> String {
        Lane1.scratchFile(
            "wiring.json",
            """
            {"boot-source": {"kernel_image_path": "\(Lane1.guest)", "boot_args": "\(bootArgs)"},
             "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
             "drives": \(drives)\(extra)}
            """)
    }

    @Test func devicesAreAnnouncedOnTheCommandLineWithTheRootDriveFirst() throws {
        let data = Self.disk("data", bytes: 1 << 20), root = Self.disk("root", bytes: 1 << 20)
        defer { unlink(data); unlink(root) }
        let drives = """
            [{"drive_id": "data", "path_on_host": "\(data)", "is_root_device": false, "is_read_only": true},
             {"drive_id": "root", "path_on_host": "\(root)", "is_root_device": true, "is_read_only": true}]
            """
        let path = Self.config(drives: drives, extra: ", \"entropy\": {}", bootArgs: "console=ttyS0 -- init-arg")
        defer { unlink(path) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", path])
        #expect(run.status == 0, "\(run.stderr)")
        // Three devices in three 4 KiB windows on GSIs 5-7, the root drive
        // (read-only) first; init's arguments stay after "--".
        #expect(
            run.guestLines.contains(
                "guest: cmdline: console=ttyS0 virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6 "
                    + "virtio_mmio.device=4K@0xd0003000:7 root=/dev/vda ro -- init-arg"), "\(run.guestLines)")
    }

    /// Firecracker's io_uring engine is a host-side choice: a drive asking
    /// for it gets the same device from the synchronous engine, and the log says so.
    @Test func anAsyncDriveIsServedSynchronouslyAndLogged() throws {
        let disk = Self.disk("async", bytes: 1 << 20)
        defer { unlink(disk) }
        let path = Self.config(
            drives: """
                [{"drive_id": "d", "path_on_host": "\(disk)", "is_root_device": false, "io_engine": "Async"}]
                """)
        defer { unlink(path) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", path, "--level", "Info"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("drive d: io_engine Async is served by Kiln's synchronous engine"), "\(run.stderr)")
        #expect(run.guestLines.contains { $0.hasPrefix("guest: virtio-blk@") }, "\(run.guestLines)")
    }

    @Test(arguments: [
        // Empty buckets mean no limit, as in Firecracker.
        "{\"bandwidth\": {\"size\": 0, \"refill_time\": 0}}",
        "{\"bandwidth\": {\"size\": 1048576, \"one_time_burst\": 4096, \"refill_time\": 100}, \"ops\": {\"size\": 10, \"refill_time\": 1000}}",
    ])
    func drivesAndEntropyWithRateLimitersBoot(limiter: String) throws {
        let disk = Self.disk("limited", bytes: 1 << 20)
        defer { unlink(disk) }
        let path = Self.config(
            drives: """
                [{"drive_id": "d", "path_on_host": "\(disk)", "is_root_device": false, "rate_limiter": \(limiter)}]
                """, extra: ", \"entropy\": {\"rate_limiter\": \(limiter)}")
        defer { unlink(path) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", path])
        #expect(run.status == 0, "\(run.stderr)")
    }

    @Test func aDriveThatIsAFIFOIsRefusedWithoutWaitingForAWriter() throws {
        let fifo = "/tmp/kiln-wiring-\(getpid()).fifo"
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let path = Self.config(
            drives: "[{\"drive_id\": \"d\", \"path_on_host\": \"\(fifo)\", \"is_root_device\": false}]")
        defer { unlink(path) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", path], seconds: 10)
        #expect(run.status == 1, "timeout(1) gives 124 when kiln hangs: \(run.status)")
        #expect(run.stderr.contains("not a regular file or block device"), "\(run.stderr)")
    }

    @Test func aMissingDriveFileOrTapIsNamed() throws {
        let missing = Self.config(
            drives: """
                [{"drive_id": "d", "path_on_host": "/nonexistent/disk.img", "is_root_device": false}]
                """)
        defer { unlink(missing) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", missing])
        #expect(run.status == 1)
        #expect(run.stderr.contains("/nonexistent/disk.img"), "\(run.stderr)")

        let noTap = Self.config(
            extra: """
                , "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "kiln-notap0"}]
                """)
        defer { unlink(noTap) }
        let tapRun = try Lane1.run(Lane1.baseFlags + ["--config-file", noTap])
        #expect(tapRun.status == 1)
        #expect(tapRun.stderr.contains("cannot open TAP kiln-notap0"), "\(tapRun.stderr)")
    }

    @Test func metricsCountTheGuestsIOAndATrailingPartialSectorIsReported() throws {
        let drive = VirtioLane.makeDrive("metrics")
        let handle = open(drive, O_WRONLY | O_APPEND)
        _ = write(handle, [UInt8](repeating: 0xee, count: 100), 100) // 100 bytes past the last whole sector
        close(handle)
        let metrics = "/tmp/kiln-wiring-\(getpid())-metrics.json"
        defer { unlink(drive); unlink(metrics) }
        let path = Self.config(
            drives: """
                [{"drive_id": "d0", "path_on_host": "\(drive)", "is_root_device": false, "cache_type": "Writeback"}]
                """, extra: ", \"entropy\": {}, \"metrics\": {\"metrics_path\": \"\(metrics)\"}")
        defer { unlink(path) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", path, "--level", "Info"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.guestLines.contains("guest: blk write ok"), "\(run.guestLines)")
        #expect(run.stderr.contains("its last 100 bytes are not visible to the guest"), "\(run.stderr)")
        // The snapshot kiln writes at exit: the guest wrote sectors 1-8 (4 KiB)
        // and flushed once, read sector 0 and 1-8 back, and drew 32 random bytes.
        let last = Lane1.read(metrics).split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.contains("\"block_d0\":{"), "\(last)")
        #expect(last.contains("\"write_bytes\":4096"), "\(last)")
        #expect(last.contains("\"flush_count\":1"), "\(last)")
        #expect(last.contains("\"entropy\":{\"entropy_bytes\":32,"), "\(last)")
        #expect(last.contains("\"virtio\":{\"device_needs_reset\":0}"), "\(last)")
    }
}
