import KilnTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// The host's side of the test guest's vsock echo (integration/guest/Vsock.swift),
/// spoken as Firecracker's clients speak it: `CONNECT <port>\n` on
/// `uds_path` and `OK <host port>\n` back for a host-initiated connection, a
/// listener on `<uds_path>_<port>` for one the guest makes. Every wait has a
/// deadline and fails rather than hangs.
enum VsockPeer {
    /// The guest's config: the test guest with a vsock device on `udsPath`.
    static func configText(kernel: String, bootArgs: String, guestCID: UInt32 = 3, udsPath: String) -> String {
        #"{"boot-source": {"kernel_image_path": "\#(kernel)", "boot_args": "console=ttyS0 \#(bootArgs)"},"#
            + #" "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},"#
            + #" "vsock": {"guest_cid": \#(guestCID), "uds_path": "\#(udsPath)"}}"#
    }

    /// FNV-1a (32-bit), as the guest hashes what it receives.
    static func fnv1a(_ bytes: [UInt8]) -> UInt32 {
        bytes.reduce(UInt32(0x811c_9dc5)) { ($0 ^ UInt32($1)) &* 0x0100_0193 }
    }

    static func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var generator = SplitMix64(seed: seed)
        var bytes = [UInt8](repeating: 0, count: count)
        var index = 0
        while index < count {
            let word = generator.next()
            for shift in stride(from: 0, to: 64, by: 8) where index < count {
                bytes[index] = UInt8(truncatingIfNeeded: word >> UInt64(shift))
                index += 1
            }
        }
        return bytes
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    /// A `struct sockaddr_un` for `path`, or nil when it is too long.
    static func address(_ path: String) -> sockaddr_un? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return address
    }

    /// A connected stream socket to `path`, or the errno.
    static func connect(_ path: String) -> Result<Int32, LaneFailure> {
        guard var address = address(path) else { return .failure(LaneFailure("socket path too long: \(path)")) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(LaneFailure("socket: errno \(errno)")) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let code = errno
            close(fd)
            return .failure(LaneFailure("connect \(path): errno \(code)"))
        }
        return .success(fd)
    }

    /// A listening socket at `path` that the VMM's user `uid` may connect to.
    static func listen(_ path: String, owner uid: uid_t? = nil, gid: gid_t? = nil) -> Result<Int32, LaneFailure> {
        guard var address = address(path) else { return .failure(LaneFailure("socket path too long: \(path)")) }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(LaneFailure("socket: errno \(errno)")) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if bound != 0 || Glibc.listen(fd, 16) != 0 || (uid != nil && chown(path, uid!, gid ?? 0) != 0) {
            let code = errno
            close(fd)
            return .failure(LaneFailure("listening on \(path): errno \(code)"))
        }
        return .success(fd)
    }

    /// Whether `fd` becomes ready for `events` within `seconds`.
    static func wait(_ fd: Int32, _ events: Int16, seconds: Double) -> Bool {
        var entry = pollfd(fd: fd, events: events, revents: 0)
        return poll(&entry, 1, Int32(max(0, seconds * 1000))) == 1
    }

    /// The next connection on a listening socket, within `seconds` and
    /// while the VMM runs.
    static func accept(_ listener: Int32, seconds: Double, while running: ChildProcess.Running) -> Int32? {
        let deadline = now() + seconds
        while !wait(listener, Int16(POLLIN), seconds: min(0.2, deadline - now())) {
            if now() >= deadline || TapLane.hasExited(running.pid) { return nil }
        }
        let fd = Glibc.accept(listener, nil, nil)
        return fd >= 0 ? fd : nil
    }

    /// One line (without its "\n") read a byte at a time, so nothing after
    /// it is consumed; nil on end of file, an error or the deadline.
    static func readLine(_ fd: Int32, seconds: Double) -> String? {
        let deadline = now() + seconds
        var line: [UInt8] = []
        while line.count < 64 {
            guard wait(fd, Int16(POLLIN), seconds: deadline - now()) else { return nil }
            var byte: UInt8 = 0
            guard read(fd, &byte, 1) == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        return nil
    }

    /// Firecracker's host-initiated handshake: `CONNECT <port>\n`, then the
    /// device's reply line (`OK <host port>`), or nil when it closes or says
    /// nothing in time.
    static func handshake(_ fd: Int32, port: UInt32, seconds: Double) -> String? {
        let command = Array("CONNECT \(port)\n".utf8)
        guard write(fd, command, command.count) == command.count else { return nil }
        return readLine(fd, seconds: seconds)
    }

    /// Writes `payload` while reading back as many bytes, until all have
    /// come back or `seconds` pass; what came back.
    static func echo(_ fd: Int32, _ payload: [UInt8], seconds: Double) -> [UInt8] {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        let deadline = now() + seconds
        var sent = 0
        var received = [UInt8]()
        received.reserveCapacity(payload.count)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while received.count < payload.count && now() < deadline {
            var entry = pollfd(fd: fd, events: Int16(POLLIN) | (sent < payload.count ? Int16(POLLOUT) : 0), revents: 0)
            guard poll(&entry, 1, 100) >= 0 else { break }
            if entry.revents & Int16(POLLOUT) != 0 && sent < payload.count {
                let count = payload.withUnsafeBytes {
                    write(fd, $0.baseAddress! + sent, min(65536, payload.count - sent))
                }
                if count > 0 { sent += count }
            }
            if entry.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                let count = read(fd, &buffer, buffer.count)
                if count > 0 {
                    received.append(contentsOf: buffer[0..<count])
                } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                    break
                }
            }
        }
        return received
    }

    /// Half-closes our end, then waits for the peer's end of file (any
    /// bytes still arriving are counted): whether it came in time.
    static func closeWriting(_ fd: Int32, seconds: Double) -> (endOfFile: Bool, extraBytes: Int) {
        shutdown(fd, Int32(SHUT_WR))
        let deadline = now() + seconds
        var extra = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        while wait(fd, Int16(POLLIN), seconds: deadline - now()) {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { return (count == 0, extra) }
            extra += count
        }
        return (false, extra)
    }

    /// Whether the peer closes `fd` (end of file or reset) within `seconds`.
    static func closedByPeer(_ fd: Int32, seconds: Double) -> Bool {
        var byte: UInt8 = 0
        return wait(fd, Int16(POLLIN), seconds: seconds) && read(fd, &byte, 1) <= 0
    }

    /// Waits until the running VMM's console holds `line`, or it exits, or
    /// `seconds` pass.
    static func waitForConsole(_ running: ChildProcess.Running, _ line: String, seconds: Double) -> Bool {
        let deadline = now() + seconds
        while now() < deadline {
            if running.stdoutSoFar.contains(line) { return true }
            if TapLane.hasExited(running.pid) { return running.stdoutSoFar.contains(line) }
            usleep(10_000)
        }
        return false
    }
}
