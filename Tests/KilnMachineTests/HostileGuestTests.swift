import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Lane 1 with a hostile driver: the test guest breaks one virtio rule on
/// the first of two drives (`hostile=<case>`, integration/guest/Hostile.swift),
/// then drives the second drive and the entropy device as usual, then
/// resets the attacked drive and drives it again. kiln runs under the
/// shipped seccomp filters, so a new system call on a failure path traps.
enum HostileCase: String, CaseIterable, CustomTestStringConvertible {
    case loop
    case outsideRAM = "outside-ram"
    case mmioHole = "mmio-hole"
    case wrap
    case zeroLength = "zero-length"
    case availAhead = "avail-ahead"
    case overlap
    case nestedIndirect = "nested-indirect"
    case notifyStorm = "notify-storm"
    case garbageRegisters = "garbage-registers"
    case noAck = "no-ack"
    case driverOKEarly = "driver-ok-early"
    case resetDuringIO = "reset-during-io"

    var testDescription: String { rawValue }

    /// What the attacked device's registers must read afterwards, and the
    /// failure kiln must log for it (nil: the device must not fail).
    var expected: (status: String, interruptStatus: String, failure: String?) {
        // ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK, and DEVICE_NEEDS_RESET
        // (0x40) with a configuration change interrupt (§2.1.2).
        let failed = ("0x4f", "0x2")
        switch self {
        case .loop: return (failed.0, failed.1, "descriptor chain longer than 8 (or a loop)")
        case .outsideRAM: return (failed.0, failed.1, "guest range [0x80000000, +0x200) is not inside guest memory")
        case .mmioHole: return (failed.0, failed.1, "guest range [0xd0001000, +0x200) is not inside guest memory")
        case .wrap: return (failed.0, failed.1, "guest range [0xfffffffffffffe00, +0x400) is not inside guest memory")
        case .zeroLength: return (failed.0, failed.1, "malformed request: block request without a status byte")
        case .availAhead: return (failed.0, failed.1, "available index jumped from 0 to 32768")
        case .nestedIndirect: return (failed.0, failed.1, "indirect descriptor where it is not allowed")
        // Refused at QueueReady, so DRIVER_OK never sets and no interrupt
        // is sent (§2.1.2 sends one only once DRIVER_OK is set).
        case .overlap: return ("0x4b", "0x0", "bad queue layout: available ring overlaps the used ring")
        // Notifications are the driver's right, however many (§2.7.13.4);
        // the device just finds nothing new.
        case .notifyStorm: return ("0xf", "0x0", nil)
        // §4.2.2.2 forbids these accesses without defining an outcome;
        // ignoring them leaves the device working, which is what a driver
        // that made a stray write needs.
        case .garbageRegisters: return ("0xf", "0x0", nil)
        // An unacknowledged interrupt only stays pending (§4.2.2:
        // InterruptStatus); the used-buffer bit (0x1) is still set.
        case .noAck: return ("0xf", "0x1", nil)
        // §3.1.1: DRIVER_OK needs FEATURES_OK before it; the write is
        // refused and Status keeps ACKNOWLEDGE | DRIVER. No buffer is used
        // before DRIVER_OK (§2.1.2), so there is nothing to fail.
        case .driverOKEarly: return ("0x3", "0x0", nil)
        // A reset is always allowed (§2.1.2); it ends the I/O, not the device.
        case .resetDuringIO: return ("0x0", "0x0", nil)
        }
    }

    /// The guest's own line that shows the attack did what it meant to.
    var evidence: String {
        switch self {
        case .loop, .outsideRAM, .mmioHole, .wrap, .zeroLength, .availAhead, .nestedIndirect:
            return "guest: hostile \(rawValue) used 0" // the broken chain was never used
        case .overlap: return "guest: hostile overlap queue ready 0"
        case .notifyStorm: return "guest: hostile notify-storm read status 0"
        case .garbageRegisters: return "guest: hostile garbage-registers read status 0"
        case .noAck: return "guest: hostile no-ack requests 32"
        case .driverOKEarly: return "guest: hostile driver-ok-early used 0 status byte 0xff"
        case .resetDuringIO: return "guest: hostile reset-during-io rounds 16 used after reset 0"
        }
    }
}

enum HostileLane {
    static var ready: Bool { APILane.ready }

    struct Scratch {
        let drives: [String]
        let config: String
        let metrics: String

        func remove() { for path in drives + [config, metrics] { unlink(path) } }
    }

    /// Two read-write drives, entropy, and the hostile word on the command line.
    static func scratch(_ attack: HostileCase, metrics: Bool = false) -> Scratch {
        // Names of their own: tests of one case run in parallel.
        let tag = "hostile-\(attack.rawValue)-\(UInt32.random(in: 0...UInt32.max))"
        let drives = ["a", "b"].map { VirtioLane.makeDrive("\(tag)-\($0)") }
        let metricsPath = "/tmp/kiln-\(tag)-\(getpid()).metrics"
        let entries = drives.enumerated().map { index, path in
            #"{"drive_id": "d\#(index)", "path_on_host": "\#(path)", "is_root_device": false, "is_read_only": false}"#
        }
        var sections = [
            #""boot-source": {"kernel_image_path": "\#(Lane1.guest)", "boot_args": "console=ttyS0 hostile=\#(attack.rawValue)"}"#,
            #""machine-config": {"vcpu_count": 1, "mem_size_mib": 128}"#,
            #""drives": [\#(entries.joined(separator: ", "))]"#,
            #""entropy": {}"#,
        ]
        if metrics { sections.append(#""metrics": {"metrics_path": "\#(metricsPath)"}"#) }
        let config = Lane1.scratchFile("\(tag).json", "{" + sections.joined(separator: ",\n") + "}")
        return Scratch(drives: drives, config: config, metrics: metricsPath)
    }

    /// Every check on one finished run: kiln's exit, the attacked device's
    /// registers, its one log line, the other devices' results, and the
    /// attacked device working again after its reset.
    static func check(_ attack: HostileCase, status: Int32, console: String, stderr: String, drives: [String]) {
        let lines = console.split(separator: "\n").map(String.init).filter { $0.hasPrefix("guest: ") }
        let context = "guest lines: \(lines)\nkiln stderr: \(stderr)"
        // The guest's final reset; 148 would be a seccomp trap, 2 a dead vCPU.
        #expect(status == 0, "\(context)")
        #expect(stderr.contains("guest reset (i8042 reset)"), "\(context)")

        let expected = attack.expected
        #expect(lines.contains("guest: hostile \(attack.rawValue) on virtio-blk@0xd0001000"), "\(context)")
        #expect(lines.contains("guest: hostile \(attack.rawValue) status \(expected.status)"), "\(context)")
        #expect(
            lines.contains("guest: hostile \(attack.rawValue) interrupt status \(expected.interruptStatus)"),
            "\(context)")
        #expect(lines.contains(attack.evidence), "\(context)")

        // Logged once for the attacked device, and for no other.
        let failures = stderr.split(separator: "\n").filter { $0.contains("device needs reset") }
        if let reason = expected.failure {
            #expect(failures.count == 1, "\(context)")
            #expect(
                failures.first?.contains("block d0: device needs reset: virtqueue 0: \(reason)") == true, "\(context)")
        } else {
            #expect(failures.isEmpty, "\(context)")
        }

        // The second drive and the entropy device, driven after the attack.
        let second = lines.drop { $0 != "guest: virtio-mmio 0xd0002000 size 4096 irq 6" }
            .prefix { $0 != "guest: virtio-mmio 0xd0003000 size 4096 irq 7" }
        #expect(
            second.contains("guest: virtio-blk@0xd0002000 capacity \(VirtioLane.driveSectors) sectors ro=0"),
            "\(context)")
        #expect(second.contains("guest: blk sector0 \(VirtioLane.sectorZeroHex)"), "\(context)")
        #expect(second.contains("guest: blk write ok"), "\(context)")
        let entropy = lines.drop { $0 != "guest: virtio-mmio 0xd0003000 size 4096 irq 7" }
        #expect(entropy.contains { $0.hasPrefix("guest: rng ") && $0.count == "guest: rng ".count + 64 }, "\(context)")

        // §2.1.2: reset and initialised again, the attacked drive works.
        let again = lines.drop { $0 != "guest: hostile \(attack.rawValue) again virtio@0xd0001000" }
            .prefix { $0 != "guest: virtio done" }
        #expect(
            again.contains("guest: virtio-blk@0xd0001000 capacity \(VirtioLane.driveSectors) sectors ro=0"),
            "\(context)")
        #expect(again.contains("guest: blk write ok"), "\(context)")
        #expect(lines.last == "guest: virtio done", "\(context)")

        // The host sees both drives' writes.
        for drive in drives {
            let bytes = ChildProcess.readBytes(drive)
            let written = VirtioLane.patternRange.allSatisfy {
                bytes.count > $0 && bytes[$0] == VirtioLane.pattern($0 - 512)
            }
            #expect(written, "\(drive) does not hold the guest's pattern")
        }
    }
}

@Suite(.enabled(if: HostileLane.ready, APILane.skipReason))
struct HostileGuestTests {
    @Test(arguments: HostileCase.allCases)
    func kilnFailsOnlyTheAttackedDevice(_ attack: HostileCase) throws {
        let scratch = HostileLane.scratch(attack)
        let bundle = try APILane.bundle()
        defer { scratch.remove(); unlink(bundle) }
        let run = try Lane1.run(["--no-api", "--seccomp-filter", bundle, "--config-file", scratch.config], seconds: 60)
        HostileLane.check(attack, status: run.status, console: run.stdout, stderr: run.stderr, drives: scratch.drives)
    }

    /// The API thread answers while the guest storms the device's
    /// QueueNotify: the storm lands on the ioeventfd and the event loop,
    /// never on the API.
    @Test func theAPIAnswersDuringANotifyStorm() throws {
        let attack = HostileCase.notifyStorm
        let scratch = HostileLane.scratch(attack)
        let bundle = try APILane.bundle()
        let base = "/tmp/kiln-hostile-api-\(getpid())"
        let socketPath = base + ".sock", console = base + ".console", errors = base + ".err"
        defer { scratch.remove(); for path in [bundle, socketPath, console, errors] { unlink(path) } }
        let pid = try Lane1.spawn(
            ["--api-sock", socketPath, "--seccomp-filter", bundle, "--config-file", scratch.config],
            stdout: console, stderr: errors, seconds: 60)
        var status: Int32?
        defer { if status == nil { kill(pid, SIGKILL); _ = Lane1.wait(pid) } }
        let client = try UnixHTTPClient(path: socketPath)
        let storming = APILane.eventually(seconds: 20) {
            Lane1.read(console).contains("guest: hostile notify-storm storming")
        }
        #expect(storming, "console: \(Lane1.read(console))")
        var answeredDuringStorm = 0
        for _ in 0..<5 {
            let described = try client.request("GET", "/")
            #expect(described.status == 200 && described.body.contains("\"state\":\"Running\""), "\(described)")
            if !Lane1.read(console).contains("guest: hostile notify-storm notifications") { answeredDuringStorm += 1 }
        }
        #expect(answeredDuringStorm >= 1, "no answer came while the storm ran; console: \(Lane1.read(console))")
        status = Lane1.wait(pid)
        HostileLane.check(
            attack, status: status!, console: Lane1.read(console), stderr: Lane1.read(errors),
            drives: scratch.drives)
    }

    /// The failure is counted: `virtio.device_needs_reset` is 1 in the
    /// metrics kiln flushes at exit, whether the queue failed on the event
    /// loop (loop) or on a register write (overlap, at QueueReady).
    @Test(arguments: [HostileCase.loop, .overlap])
    func theFailureIsCountedInTheMetrics(_ attack: HostileCase) throws {
        let scratch = HostileLane.scratch(attack, metrics: true)
        let bundle = try APILane.bundle()
        defer { scratch.remove(); unlink(bundle) }
        let run = try Lane1.run(["--no-api", "--seccomp-filter", bundle, "--config-file", scratch.config], seconds: 60)
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        let last = String(Lane1.read(scratch.metrics).split(separator: "\n").last ?? "")
        #expect(last.contains("\"virtio\":{\"device_needs_reset\":1"), "metrics: \(last)")
    }
}
