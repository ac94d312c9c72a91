#if canImport(Glibc)
import Glibc
#endif
import KilnTestSupport
import Testing

/// Lane 1 with virtio-mmio devices: kiln boots the test guest, whose driver
/// (integration/guest/Virtio.swift) finds each device from the command line
/// kiln writes, and prints what it did. The tests check those lines and
/// what reached the host: the drive file's bytes, the frames on a TAP.
enum VirtioLane {
    static let sectorSize = 512
    static let driveSectors = 2048
    /// What the test puts in sector 0; the guest prints its first 16 bytes.
    static let sectorZero = Array("KILN-SECTOR-ZERO".utf8)
    static var sectorZeroHex: String { hex(sectorZero) }

    /// The bytes the guest writes to sectors 1-8 (Block.pattern in the guest).
    static func pattern(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 13 &+ 5) }
    static let patternRange = 512..<(512 + 4096)

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// A 1 MiB drive: sector 0 starts with `sectorZero`, the rest is 0xee
    /// (so a guest write of the pattern cannot pass by accident).
    static func makeDrive(_ name: String) -> String {
        let path = "/tmp/kiln-virtio-\(name)-\(getpid())"
        var bytes = [UInt8](repeating: 0xee, count: sectorSize * driveSectors)
        bytes.replaceSubrange(0..<sectorZero.count, with: sectorZero)
        let file = fopen(path, "w")!
        _ = fwrite(bytes, 1, bytes.count, file)
        fclose(file)
        return path
    }

    struct Drive { let path: String; let readOnly: Bool }

    /// A Firecracker-format config file for the guest and these devices.
    static func config(drives: [Drive] = [], entropy: Bool = false, tap: String? = nil, mac: String? = nil) -> String {
        var sections = [
            #""boot-source": {"kernel_image_path": "\#(Lane1.guest)", "boot_args": "console=ttyS0"}"#,
            #""machine-config": {"vcpu_count": 1, "mem_size_mib": 128}"#,
        ]
        if !drives.isEmpty {
            let entries = drives.enumerated().map { index, drive in
                #"{"drive_id": "d\#(index)", "path_on_host": "\#(drive.path)", "is_root_device": false, "is_read_only": \#(drive.readOnly)}"#
            }
            sections.append(#""drives": [\#(entries.joined(separator: ", "))]"#)
        }
        if entropy { sections.append(#""entropy": {}"#) }
        if let tap, let mac {
            sections.append(#""network-interfaces": [{"iface_id": "n0", "host_dev_name": "\#(tap)", "guest_mac": "\#(mac)"}]"#)
        }
        // A name of its own: the suite's tests run in parallel and each unlinks its file.
        let name = "virtio-config-\(UInt32.random(in: 0...UInt32.max)).json"
        return Lane1.scratchFile(name, "{" + sections.joined(separator: ",\n") + "}")
    }

    /// The guest's lines, one group per device: each starts at its
    /// "guest: virtio-mmio <base> ..." line.
    static func deviceSections(_ lines: [String]) -> [[String]] {
        var sections: [[String]] = []
        for line in lines {
            if line.hasPrefix("guest: virtio-mmio ") { sections.append([line]) }
            else if line == "guest: virtio done" { break }
            else if !sections.isEmpty { sections[sections.count - 1].append(line) }
        }
        return sections
    }

    /// The one section whose lines contain `marker`.
    static func section(_ lines: [String], containing marker: String) -> [String] {
        deviceSections(lines).first { $0.contains { $0.contains(marker) } } ?? []
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
        let run = try Lane1.run(Lane1.baseFlags + [
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
        #expect(lines.contains { $0.hasPrefix("guest: cmdline: ") && $0.contains("virtio_mmio.device=4K@0xd0001000:5") })
        let block = VirtioLane.section(lines, containing: "guest: virtio-blk@")
        #expect(block.contains("guest: virtio-blk@0xd0001000 capacity \(VirtioLane.driveSectors) sectors ro=0"),
                "guest lines: \(lines)")
        #expect(block.contains { $0.hasPrefix("guest: blk id ") })
        #expect(block.contains("guest: blk sector0 \(VirtioLane.sectorZeroHex)"))
        #expect(block.contains("guest: blk write ok"), "guest lines: \(lines)")
        #expect(lines.last == "guest: virtio done")

        let bytes = ChildProcess.readBytes(drive)
        #expect(bytes.count == VirtioLane.sectorSize * VirtioLane.driveSectors)
        let written = VirtioLane.patternRange.allSatisfy { bytes.count > $0 && bytes[$0] == VirtioLane.pattern($0 - 512) }
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
        #expect(block.contains { $0.hasPrefix("guest: virtio-blk@") && $0.hasSuffix(" ro=1") },
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
        let config = VirtioLane.config(drives: [.init(path: readOnly, readOnly: true), .init(path: readWrite, readOnly: false)],
                                       entropy: true)
        defer { unlink(config) }
        let run = try VirtioLane.runWithConfig(config)
        try #require(run.status == 0, "kiln stderr: \(run.stderr)")
        let sections = VirtioLane.deviceSections(run.guestLines)
        #expect(sections.count == 3, "guest lines: \(run.guestLines)")
        // Consecutive pages from 0xd0001000, GSIs from 5, whatever the order.
        let bases = sections.compactMap { $0.first }.sorted()
        #expect(bases == ["guest: virtio-mmio 0xd0001000 size 4096 irq 5",
                          "guest: virtio-mmio 0xd0002000 size 4096 irq 6",
                          "guest: virtio-mmio 0xd0003000 size 4096 irq 7"])
        #expect(VirtioLane.section(run.guestLines, containing: " ro=1").contains("guest: blk write refused status 1"))
        #expect(VirtioLane.section(run.guestLines, containing: " ro=0").contains("guest: blk write ok"))
        #expect(VirtioLane.section(run.guestLines, containing: "guest: virtio-rng@").contains { $0.hasPrefix("guest: rng ") })
    }
}

// MARK: - Net: a TAP and raw Ethernet frames (root)

enum TapLane {
    static let ip = "/usr/sbin/ip"
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

    static let guestMAC: [UInt8] = [0x06, 0x00, 0x4b, 0x49, 0x4c, 0x4e]
    static let hostMAC: [UInt8] = [0x06, 0x00, 0x4b, 0x49, 0x4c, 0x01]
    static let guestIP: [UInt8] = [10, 0, 0, 2]
    static let hostIP: [UInt8] = [10, 0, 0, 1]

    static func macText(_ mac: [UInt8]) -> String {
        mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    static func ipTool(_ arguments: [String]) throws -> ChildProcess.Finished {
        try ChildProcess.run([ip] + arguments, seconds: 10)
    }

    /// An AF_PACKET socket on `interface`: sees every frame kiln writes to
    /// the TAP, and sends frames that kiln then reads from it.
    static func packetSocket(_ interface: String) -> Int32? {
        let protocolAll = UInt16(3) // ETH_P_ALL
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), Int32(protocolAll.bigEndian))
        guard fd >= 0 else { return nil }
        // struct sockaddr_ll (packet(7)): family, protocol (big-endian),
        // ifindex, then hatype, pkttype, halen and addr, all zero.
        var address = [UInt8](repeating: 0, count: 20)
        address[0] = UInt8(AF_PACKET & 0xff)
        address[2] = 0; address[3] = 3
        withUnsafeBytes(of: Int32(if_nametoindex(interface)).littleEndian) { address.replaceSubrange(4..<8, with: $0) }
        let bound = address.withUnsafeBytes {
            bind(fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(address.count))
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard bound == 0 else { close(fd); return nil }
        return fd
    }

    /// Whether `pid` (a child not yet reaped) has exited: a zombie.
    static func hasExited(_ pid: pid_t) -> Bool {
        let stat = ChildProcess.read("/proc/\(pid)/stat")
        return stat.isEmpty || stat.contains(") Z ")
    }

    /// The next frame for which `accept` holds, within `seconds` and while
    /// `child` runs.
    static func receive(_ fd: Int32, seconds: Double, while child: pid_t,
                        where accept: ([UInt8]) -> Bool) -> [UInt8]? {
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        var buffer = [UInt8](repeating: 0, count: 2048)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 {
                let frame = Array(buffer[0..<count])
                if accept(frame) { return frame }
            }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            if Double(now.tv_sec - start.tv_sec) + Double(now.tv_nsec - start.tv_nsec) / 1e9 > seconds { return nil }
            if count <= 0 && hasExited(child) { return nil }
        }
    }

    static func be16(_ frame: [UInt8], _ offset: Int) -> Int { Int(frame[offset]) << 8 | Int(frame[offset + 1]) }

    /// RFC 791 header checksum; 0 over a header with a correct checksum.
    static func checksum(_ header: ArraySlice<UInt8>) -> UInt16 {
        var sum: UInt32 = 0
        var index = header.startIndex
        while index + 1 < header.endIndex {
            sum += UInt32(header[index]) << 8 | UInt32(header[index + 1])
            index += 2
        }
        while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }

    /// An IPv4/UDP frame (20-byte IP header, no UDP checksum).
    static func udpFrame(from source: [UInt8], to destination: [UInt8], sourceIP: [UInt8], destinationIP: [UInt8],
                         sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8]) -> [UInt8] {
        func be(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xff), UInt8(value & 0xff)] }
        var ip: [UInt8] = [0x45, 0] + be(20 + 8 + payload.count) + [0, 1, 0, 0, 64, 17, 0, 0] + sourceIP + destinationIP
        let sum = checksum(ip[...])
        ip[10] = UInt8(sum >> 8); ip[11] = UInt8(sum & 0xff)
        let udp = be(Int(sourcePort)) + be(Int(destinationPort)) + be(8 + payload.count) + [0, 0]
        return destination + source + [0x08, 0x00] + ip + udp + payload
    }

    /// The UDP payload of an IPv4/UDP frame, with its addressing.
    struct Datagram {
        let sourceMAC, destinationMAC, sourceIP, destinationIP: [UInt8]
        let sourcePort, destinationPort: Int
        let payload: [UInt8]
        let headerChecksumValid: Bool
    }

    static func datagram(_ frame: [UInt8]) -> Datagram? {
        guard frame.count >= 42, be16(frame, 12) == 0x0800, frame[14] >> 4 == 4, frame[23] == 17 else { return nil }
        let headerLength = Int(frame[14] & 0xf) * 4
        let total = be16(frame, 16)
        guard headerLength >= 20, total >= headerLength + 8, 14 + total <= frame.count else { return nil }
        let udp = 14 + headerLength
        let udpLength = be16(frame, udp + 4)
        guard udpLength >= 8, udp + udpLength <= frame.count else { return nil }
        return Datagram(sourceMAC: Array(frame[6..<12]), destinationMAC: Array(frame[0..<6]),
                        sourceIP: Array(frame[26..<30]), destinationIP: Array(frame[30..<34]),
                        sourcePort: be16(frame, udp), destinationPort: be16(frame, udp + 2),
                        payload: Array(frame[(udp + 8)..<(udp + udpLength)]),
                        headerChecksumValid: checksum(frame[14..<udp]) == 0)
    }
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

        let hello = TapLane.receive(fd, seconds: 10, while: kiln.pid) { frame in
            TapLane.datagram(frame).map { $0.sourceMAC == TapLane.guestMAC && $0.destinationPort == 7777 } ?? false
        }
        var sentPayload: [UInt8] = []
        if let hello, let datagram = TapLane.datagram(hello) {
            #expect(datagram.destinationMAC == [0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            #expect(datagram.sourceIP == TapLane.guestIP && datagram.destinationIP == TapLane.hostIP)
            #expect(datagram.sourcePort == 7777)
            #expect(datagram.payload == Array("kiln-guest-hello".utf8))
            #expect(datagram.headerChecksumValid)

            sentPayload = Array("echo this, kiln guest: \(getpid())".utf8)
            let request = TapLane.udpFrame(from: TapLane.hostMAC, to: TapLane.guestMAC, sourceIP: TapLane.hostIP,
                                           destinationIP: TapLane.guestIP, sourcePort: 40007, destinationPort: 7,
                                           payload: sentPayload)
            #expect(send(fd, request, request.count, 0) == request.count, "send: errno \(errno)")
        }
        let echo = hello == nil ? nil : TapLane.receive(fd, seconds: 6, while: kiln.pid) { frame in
            TapLane.datagram(frame).map { $0.sourceMAC == TapLane.guestMAC && $0.sourcePort == 7 } ?? false
        }
        let run = kiln.wait()
        #expect(hello != nil, "no hello frame from the guest; guest lines: \(run.stdout)\nkiln stderr: \(run.stderr)")
        #expect(echo != nil, "no echo from the guest; guest output: \(run.stdout)")
        if let echo, let datagram = TapLane.datagram(echo) {
            #expect(datagram.destinationMAC == TapLane.hostMAC)
            #expect(datagram.sourceIP == TapLane.guestIP && datagram.destinationIP == TapLane.hostIP)
            #expect(datagram.destinationPort == 40007)
            #expect(datagram.payload == sentPayload)
            #expect(datagram.headerChecksumValid)
        }
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        let lines = run.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("guest: virtio-net@0xd0001000 mac \(TapLane.macText(TapLane.guestMAC))"), "guest lines: \(lines)")
        #expect(lines.contains("guest: net sent hello"))
        #expect(lines.contains("guest: net echoed \(sentPayload.count) bytes"))
    }
}
