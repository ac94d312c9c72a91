import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Lane 1 with virtio-mmio devices: kiln boots the test guest, whose driver
/// (integration/guest/Virtio.swift) finds each device from the command line
/// kiln writes, and prints what it did. The tests check those lines and
/// what reached the host: the drive file's bytes, the frames on a TAP.
extension VirtioLane {
    /// A config file for the lane's guest and these devices.
    static func config(drives: [Drive] = [], entropy: Bool = false, tap: String? = nil, mac: String? = nil) -> String {
        // A name of its own: the suite's tests run in parallel and each unlinks its file.
        let name = "virtio-config-\(UInt32.random(in: 0...UInt32.max)).json"
        return Lane1.scratchFile(
            name, configText(kernel: Lane1.guest, drives: drives, entropy: entropy, tap: tap, mac: mac))
    }

    static func runWithConfig(_ path: String, seconds: Int = 20) throws -> Lane1.Run {
        try Lane1.run(Lane1.baseFlags + ["--config-file", path], seconds: seconds)
    }
}

@Suite(.enabled(if: Lane1.ready, Lane1.skipReason))
struct VirtioGuestTests {
    @Test func guestParsesDeviceArgumentsAndReportsAnEmptySlot() throws {
        // No device at these addresses: kiln reads unclaimed MMIO as all ones,
        // so each well-formed argument ends in "bad magic"; the malformed one
        // is reported, and the guest still resets.
        let run = try Lane1.run(
            Lane1.baseFlags + [
                "--kernel", Lane1.guest, "--cmdline",
                "virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=0x200@0xd0002000:6 virtio_mmio.device=4K@:7",
            ])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        let lines = run.guestLines
        #expect(lines.contains("guest: virtio-mmio 0xd0001000 size 4096 irq 5"))
        #expect(lines.contains("guest: virtio-mmio 0xd0002000 size 512 irq 6"))
        #expect(lines.contains("guest: virtio@0xd0001000 bad magic 0xffffffff"))
        #expect(lines.contains("guest: virtio: bad device argument"))
        #expect(lines.last == "guest: virtio done")
        #expect(run.stderr.contains("guest reset (i8042 reset)"))
    }

    @Test func guestReadsWritesAndFlushesADrive() throws {
        let drive = VirtioLane.makeDrive("rw")
        defer { unlink(drive) }
        let config = VirtioLane.config(drives: [.init(path: drive, readOnly: false)])
        defer { unlink(config) }
        let run = try VirtioLane.runWithConfig(config)
        try #require(run.status == 0, "kiln stderr: \(run.stderr)")
        let lines = run.guestLines
        // kiln announces the device on the command line it writes.
        #expect(
            lines.contains { $0.hasPrefix("guest: cmdline: ") && $0.contains("virtio_mmio.device=4K@0xd0001000:5") })
        let block = VirtioLane.section(lines, containing: "guest: virtio-blk@")
        #expect(
            block.contains("guest: virtio-blk@0xd0001000 capacity \(VirtioLane.driveSectors) sectors ro=0"),
            "guest lines: \(lines)")
        #expect(block.contains { $0.hasPrefix("guest: blk id ") })
        #expect(block.contains("guest: blk sector0 \(VirtioLane.sectorZeroHex)"))
        #expect(block.contains("guest: blk write ok"), "guest lines: \(lines)")
        #expect(lines.last == "guest: virtio done")

        let bytes = ChildProcess.readBytes(drive)
        #expect(bytes.count == VirtioLane.sectorSize * VirtioLane.driveSectors)
        let written = VirtioLane.patternRange.allSatisfy {
            bytes.count > $0 && bytes[$0] == VirtioLane.pattern($0 - 512)
        }
        #expect(written, "sectors 1-8 do not hold the guest's pattern")
        #expect(Array(bytes.prefix(16)) == VirtioLane.sectorZero)
        #expect(bytes.count > 4608 && bytes[4608] == 0xee, "the guest wrote past sector 8")
    }

    @Test func readOnlyDriveRefusesTheGuestsWrite() throws {
        let drive = VirtioLane.makeDrive("ro")
        defer { unlink(drive) }
        let before = ChildProcess.readBytes(drive)
        let config = VirtioLane.config(drives: [.init(path: drive, readOnly: true)])
        defer { unlink(config) }
        let run = try VirtioLane.runWithConfig(config)
        try #require(run.status == 0, "kiln stderr: \(run.stderr)")
        let block = VirtioLane.section(run.guestLines, containing: "guest: virtio-blk@")
        #expect(
            block.contains { $0.hasPrefix("guest: virtio-blk@") && $0.hasSuffix(" ro=1") },
            "guest lines: \(run.guestLines)")
        #expect(block.contains("guest: blk sector0 \(VirtioLane.sectorZeroHex)"))
        #expect(block.contains("guest: blk write refused status 1"), "guest lines: \(run.guestLines)")
        #expect(ChildProcess.readBytes(drive) == before, "the read-only drive file changed")
    }

    @Test func entropyDeviceGivesTheGuestRandomBytes() throws {
        let config = VirtioLane.config(entropy: true)
        defer { unlink(config) }
        var seen: [String] = []
        for _ in 0..<2 {
            let run = try VirtioLane.runWithConfig(config)
            try #require(run.status == 0, "kiln stderr: \(run.stderr)")
            let rng = VirtioLane.section(run.guestLines, containing: "guest: virtio-rng@")
            #expect(!rng.isEmpty, "guest lines: \(run.guestLines)")
            let bytes = rng.first { $0.hasPrefix("guest: rng ") && $0.count == "guest: rng ".count + 64 }
            #expect(bytes != nil, "guest lines: \(run.guestLines)")
            #expect(!rng.contains("guest: rng all zero"))
            if let bytes { seen.append(bytes) }
        }
        // Two boots, two different draws: a constant would not be entropy.
        #expect(seen.count == 2 && seen[0] != seen[1])
    }

    @Test func guestIdentifiesEachDeviceByItsRegisters() throws {
        let readWrite = VirtioLane.makeDrive("multi-rw")
        let readOnly = VirtioLane.makeDrive("multi-ro")
        defer { unlink(readWrite); unlink(readOnly) }
        let config = VirtioLane.config(
            drives: [.init(path: readOnly, readOnly: true), .init(path: readWrite, readOnly: false)],
            entropy: true)
        defer { unlink(config) }
        let run = try VirtioLane.runWithConfig(config)
        try #require(run.status == 0, "kiln stderr: \(run.stderr)")
        let sections = VirtioLane.deviceSections(run.guestLines)
        #expect(sections.count == 3, "guest lines: \(run.guestLines)")
        // Consecutive pages from 0xd0001000, GSIs from 5, whatever the order.
        let bases = sections.compactMap { $0.first }.sorted()
        #expect(
            bases == [
                "guest: virtio-mmio 0xd0001000 size 4096 irq 5",
                "guest: virtio-mmio 0xd0002000 size 4096 irq 6",
                "guest: virtio-mmio 0xd0003000 size 4096 irq 7",
            ])
        #expect(VirtioLane.section(run.guestLines, containing: " ro=1").contains("guest: blk write refused status 1"))
        #expect(VirtioLane.section(run.guestLines, containing: " ro=0").contains("guest: blk write ok"))
        #expect(
            VirtioLane.section(run.guestLines, containing: "guest: virtio-rng@").contains {
                $0.hasPrefix("guest: rng ")
            })
    }
}

// MARK: - Net: a TAP and raw Ethernet frames (root)

extension TapLane {
    static var isRoot: Bool { geteuid() == 0 }
    static var hasIP: Bool { access(ip, X_OK) == 0 }
    static var hasTun: Bool { access("/dev/net/tun", R_OK | W_OK) == 0 }
    static var ready: Bool { Lane1.ready && isRoot && hasIP && hasTun }
    static let skipReason: Comment = {
        var missing: [String] = []
        if !Lane1.ready { missing.append(Lane1.skipReason.rawValue) }
        if !isRoot { missing.append("not root (a TAP device needs CAP_NET_ADMIN)") }
        if !hasIP { missing.append("\(ip) (iproute2) is missing") }
        if !hasTun { missing.append("/dev/net/tun is absent") }
        return Comment(rawValue: "virtio-net lane skipped: " + missing.joined(separator: "; "))
    }()
}

@Suite(.enabled(if: TapLane.ready, TapLane.skipReason))
struct VirtioNetGuestTests {
    @Test func guestSendsItsHelloAndEchoesUDPToPort7() throws {
        let tap = "kvt\(getpid() % 1_000_000)"
        let added = try TapLane.ipTool(["tuntap", "add", "dev", tap, "mode", "tap"])
        try #require(added.status == 0, "ip tuntap add: \(added.stderr)")
        defer { _ = try? TapLane.ipTool(["link", "del", tap]) }
        // No address: the test speaks raw Ethernet, and the host stack stays out.
        _ = try TapLane.ipTool(["link", "set", tap, "up"])
        let fd = try #require(TapLane.packetSocket(tap), "AF_PACKET socket on \(tap): errno \(errno)")
        defer { close(fd) }

        let config = VirtioLane.config(tap: tap, mac: TapLane.macText(TapLane.guestMAC))
        defer { unlink(config) }
        // The socket is open before kiln starts: the hello comes right after boot.
        let kiln = try ChildProcess.start([Lane1.kiln] + Lane1.baseFlags + ["--config-file", config], seconds: 30)

        let exchange = TapLane.helloAndEcho(
            fd, while: kiln.pid, payload: Array("echo this, kiln guest: \(getpid())".utf8))
        let run = kiln.wait()
        #expect(
            exchange.hello != nil,
            "no hello frame from the guest; guest lines: \(run.stdout)\nkiln stderr: \(run.stderr)")
        if let datagram = exchange.hello {
            #expect(datagram.destinationMAC == [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            #expect(datagram.sourceIP == TapLane.guestIP && datagram.destinationIP == TapLane.hostIP)
            #expect(datagram.sourcePort == 7777)
            #expect(datagram.payload == Array("kiln-guest-hello".utf8))
            #expect(datagram.headerChecksumValid)
            #expect(exchange.sent > 0, "send: errno \(exchange.sendErrno)")
        }
        #expect(exchange.echo != nil, "no echo from the guest; guest output: \(run.stdout)")
        if let datagram = exchange.echo {
            #expect(datagram.destinationMAC == TapLane.hostMAC)
            #expect(datagram.sourceIP == TapLane.guestIP && datagram.destinationIP == TapLane.hostIP)
            #expect(datagram.destinationPort == 40007)
            #expect(datagram.payload == exchange.payload)
            #expect(datagram.headerChecksumValid)
        }
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        let lines = run.stdout.split(separator: "\n").map(String.init)
        #expect(
            lines.contains("guest: virtio-net@0xd0001000 mac \(TapLane.macText(TapLane.guestMAC))"),
            "guest lines: \(lines)")
        #expect(lines.contains("guest: net sent hello"))
        #expect(lines.contains("guest: net echoed \(exchange.payload.count) bytes"))
    }
}
