#if canImport(Glibc)
    import Glibc
#endif

/// What the lane-1 test guest's virtio driver (integration/guest/Virtio.swift)
/// is given and prints, shared by the plain and the jailed lanes.
public enum VirtioLane {
    public static let sectorSize = 512
    public static let driveSectors = 2048
    /// What the test puts in sector 0; the guest prints its first 16 bytes.
    public static let sectorZero = Array("KILN-SECTOR-ZERO".utf8)
    public static var sectorZeroHex: String { hex(sectorZero) }

    /// The bytes the guest writes to sectors 1-8 (Block.pattern in the guest).
    public static func pattern(_ offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 13 &+ 5) }
    public static let patternRange = 512..<(512 + 4096)

    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// A 1 MiB drive: sector 0 starts with `sectorZero`, the rest is 0xee
    /// (so a guest write of the pattern cannot pass by accident).
    public static func makeDrive(_ name: String) -> String {
        makeDrive(at: "/tmp/kiln-virtio-\(name)-\(getpid())")
    }

    @discardableResult
    public static func makeDrive(at path: String) -> String {
        var bytes = [UInt8](repeating: 0xee, count: sectorSize * driveSectors)
        bytes.replaceSubrange(0..<sectorZero.count, with: sectorZero)
        let file = fopen(path, "w")!
        _ = fwrite(bytes, 1, bytes.count, file)
        fclose(file)
        return path
    }

    /// Whether `bytes` (a whole drive file) holds the guest's pattern in
    /// sectors 1-8 and nothing past them, sector 0 untouched.
    public static func holdsTheGuestsWrite(_ bytes: [UInt8]) -> Bool {
        bytes.count == sectorSize * driveSectors && Array(bytes.prefix(16)) == sectorZero
            && patternRange.allSatisfy { bytes[$0] == pattern($0 - 512) } && bytes[patternRange.upperBound] == 0xee
    }

    public struct Drive {
        public let path: String, readOnly: Bool
        public init(path: String, readOnly: Bool) { self.path = path; self.readOnly = readOnly }
    }

    /// A Firecracker-format config for the guest at `kernel` and these devices.
    public static func configText(
        kernel: String, drives: [Drive] = [], entropy: Bool = false,
        tap: String? = nil, mac: String? = nil
    ) -> String {
        var sections = [
            #""boot-source": {"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0"}"#,
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
            sections.append(
                #""network-interfaces": [{"iface_id": "n0", "host_dev_name": "\#(tap)", "guest_mac": "\#(mac)"}]"#)
        }
        return "{" + sections.joined(separator: ",\n") + "}"
    }

    /// The `guest: ` lines of kiln's standard output.
    public static func guestLines(_ stdout: String) -> [String] {
        stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("guest: ") }
    }

    /// The guest's lines, one group per device: each starts at its
    /// "guest: virtio-mmio <base> ..." line.
    public static func deviceSections(_ lines: [String]) -> [[String]] {
        var sections: [[String]] = []
        for line in lines {
            if line.hasPrefix("guest: virtio-mmio ") {
                sections.append([line])
            } else if line == "guest: virtio done" {
                break
            } else if !sections.isEmpty {
                sections[sections.count - 1].append(line)
            }
        }
        return sections
    }

    /// The one section whose lines contain `marker`.
    public static func section(_ lines: [String], containing marker: String) -> [String] {
        deviceSections(lines).first { $0.contains { $0.contains(marker) } } ?? []
    }

    /// The 64 hex digits of a "guest: rng " line in `lines`, if there is one.
    public static func entropyDraw(_ lines: [String]) -> String? {
        let prefix = "guest: rng "
        return section(lines, containing: "guest: virtio-rng@")
            .first { $0.hasPrefix(prefix) && $0.count == prefix.count + 64 }.map { String($0.dropFirst(prefix.count)) }
    }
}

/// Raw Ethernet on a TAP: the test guest's hello and UDP echo, as the host
/// side sees them through an AF_PACKET socket.
public enum TapLane {
    public static let guestMAC: [UInt8] = [0x06, 0x00, 0x4b, 0x49, 0x4c, 0x4e]
    public static let hostMAC: [UInt8] = [0x06, 0x00, 0x4b, 0x49, 0x4c, 0x01]
    public static let guestIP: [UInt8] = [10, 0, 0, 2]
    public static let hostIP: [UInt8] = [10, 0, 0, 1]
    public static let ip = "/usr/sbin/ip"

    public static func macText(_ mac: [UInt8]) -> String {
        mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    public static func ipTool(_ arguments: [String]) throws -> ChildProcess.Finished {
        try ChildProcess.run([ip] + arguments, seconds: 10)
    }

    /// An AF_PACKET socket on `interface`: sees every frame kiln writes to
    /// the TAP, and sends frames that kiln then reads from it.
    public static func packetSocket(_ interface: String) -> Int32? {
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
    public static func hasExited(_ pid: pid_t) -> Bool {
        let stat = ChildProcess.read("/proc/\(pid)/stat")
        return stat.isEmpty || stat.contains(") Z ")
    }

    /// The next frame for which `accept` holds, within `seconds` and while
    /// `child` runs.
    public static func receive(
        _ fd: Int32, seconds: Double, while child: pid_t,
        where accept: ([UInt8]) -> Bool
    ) -> [UInt8]? {
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

    public static func be16(_ frame: [UInt8], _ offset: Int) -> Int { Int(frame[offset]) << 8 | Int(frame[offset + 1]) }

    /// RFC 791 header checksum; 0 over a header with a correct checksum.
    public static func checksum(_ header: ArraySlice<UInt8>) -> UInt16 {
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
    public static func udpFrame(
        from source: [UInt8], to destination: [UInt8], sourceIP: [UInt8], destinationIP: [UInt8],
        sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8]
    ) -> [UInt8] {
        func be(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xff), UInt8(value & 0xff)] }
        var ip: [UInt8] =
            [0x45, 0] + be(20 + 8 + payload.count) + [0, 1, 0, 0, 64, 17, 0, 0] + sourceIP + destinationIP
        let sum = checksum(ip[...])
        ip[10] = UInt8(sum >> 8); ip[11] = UInt8(sum & 0xff)
        let udp = be(Int(sourcePort)) + be(Int(destinationPort)) + be(8 + payload.count) + [0, 0]
        return destination + source + [0x08, 0x00] + ip + udp + payload
    }

    /// The UDP payload of an IPv4/UDP frame, with its addressing.
    public struct Datagram {
        public let sourceMAC, destinationMAC, sourceIP, destinationIP: [UInt8]
        public let sourcePort, destinationPort: Int
        public let payload: [UInt8]
        public let headerChecksumValid: Bool
    }

    public static func datagram(_ frame: [UInt8]) -> Datagram? {
        guard frame.count >= 42, be16(frame, 12) == 0x0800, frame[14] >> 4 == 4, frame[23] == 17 else { return nil }
        let headerLength = Int(frame[14] & 0xf) * 4
        let total = be16(frame, 16)
        guard headerLength >= 20, total >= headerLength + 8, 14 + total <= frame.count else { return nil }
        let udp = 14 + headerLength
        let udpLength = be16(frame, udp + 4)
        guard udpLength >= 8, udp + udpLength <= frame.count else { return nil }
        return Datagram(
            sourceMAC: Array(frame[6..<12]), destinationMAC: Array(frame[0..<6]),
            sourceIP: Array(frame[26..<30]), destinationIP: Array(frame[30..<34]),
            sourcePort: be16(frame, udp), destinationPort: be16(frame, udp + 2),
            payload: Array(frame[(udp + 8)..<(udp + udpLength)]),
            headerChecksumValid: checksum(frame[14..<udp]) == 0)
    }

    /// What the host saw of the guest's net test: its hello, the request
    /// sent back (bytes accepted by send(2), -1 with errno), and the echo.
    public struct Exchange {
        public let hello: Datagram?
        public let payload: [UInt8]
        public let sent: Int
        public let sendErrno: Int32
        public let echo: Datagram?
    }

    /// Waits for the guest's hello on `fd`, then sends it `payload` for
    /// UDP port 7 and waits for the echo; gives up once `child` has exited.
    public static func helloAndEcho(_ fd: Int32, while child: pid_t, payload: [UInt8]) -> Exchange {
        let hello = receive(fd, seconds: 10, while: child) { frame in
            datagram(frame).map { $0.sourceMAC == guestMAC && $0.destinationPort == 7777 } ?? false
        }.flatMap(datagram)
        guard let hello else { return Exchange(hello: nil, payload: payload, sent: 0, sendErrno: 0, echo: nil) }
        let request = udpFrame(
            from: hostMAC, to: guestMAC, sourceIP: hostIP, destinationIP: guestIP,
            sourcePort: 40007, destinationPort: 7, payload: payload)
        let sent = send(fd, request, request.count, 0), sendErrno = errno
        let echo = receive(fd, seconds: 6, while: child) { frame in
            datagram(frame).map { $0.sourceMAC == guestMAC && $0.sourcePort == 7 } ?? false
        }.flatMap(datagram)
        return Exchange(
            hello: hello, payload: payload, sent: sent == request.count ? request.count : -1,
            sendErrno: sendErrno, echo: echo)
    }
}
