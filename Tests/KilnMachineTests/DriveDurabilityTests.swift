import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A write the guest saw acknowledged, flushed under cache_type Writeback,
/// is in the drive file even when kiln is killed with SIGKILL right after:
/// nothing acknowledged waits in kiln's memory.
@Suite(.enabled(if: APILane.ready, APILane.skipReason))
struct DriveDurabilityTests {
    @Test func anAcknowledgedFlushSurvivesSIGKILL() throws {
        let bundle = try APILane.bundle()
        let drive = VirtioLane.makeDrive("durable")
        let scratch = "/tmp/kiln-durable-\(getpid())"
        let console = scratch + ".console", errors = scratch + ".err"
        let config = Lane1.scratchFile(
            "durable.json",
            """
            {"boot-source": {"kernel_image_path": "\(Lane1.guest)", "boot_args": "console=ttyS0 ctrlaltdel"},
             "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
             "drives": [{"drive_id": "d0", "path_on_host": "\(drive)", "is_root_device": false,
                         "cache_type": "Writeback"}]}
            """)
        defer { for path in [bundle, drive, console, errors, config] { unlink(path) } }
        let pid = try Lane1.spawn(
            ["--no-api", "--seccomp-filter", bundle, "--config-file", config],
            stdout: console, stderr: errors, seconds: 30)
        // The guest reports the write only after its flush completed, then
        // waits for Ctrl+Alt+Del: kiln is still running when it is killed.
        let acknowledged = APILane.eventually { Lane1.read(console).contains("guest: waiting for ctrl-alt-del") }
        // `pid` is timeout(1), which cannot pass SIGKILL on: kill kiln itself.
        let kiln = Self.onlyChild(of: pid)
        #expect(kiln != nil, "kiln is not running under timeout(1)")
        kill(kiln ?? pid, SIGKILL)
        let status = Lane1.wait(pid)
        #expect(status == 128 + SIGKILL, "timeout(1) reports kiln's death by SIGKILL: \(status)")
        #expect(acknowledged, "console: \(Lane1.read(console)) stderr: \(Lane1.read(errors))")
        #expect(Lane1.read(console).contains("guest: blk write ok"))
        let bytes = ChildProcess.readBytes(drive)
        let written = VirtioLane.patternRange.allSatisfy {
            bytes.count > $0 && bytes[$0] == VirtioLane.pattern($0 - 512)
        }
        #expect(written, "sectors 1-8 do not hold what the guest wrote and flushed")
    }

    static func onlyChild(of parent: pid_t) -> pid_t? {
        let children = Lane1.read("/proc/\(parent)/task/\(parent)/children").split(separator: " ")
        guard children.count == 1 else { return nil }
        return pid_t(children[0].trimmingPrefix(" "))
    }
}
