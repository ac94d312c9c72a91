import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Lane 1 with a vsock device: the test guest echoes over virtio-vsock, and
/// the host side is a plain Unix-socket client and listener speaking
/// Firecracker's protocol to kiln. The guest hashes what it receives, so a
/// test checks both that every byte came back and that the guest itself saw
/// every byte.
enum VsockLane {
    static var ready: Bool {
        access("/dev/kvm", R_OK | W_OK) == 0 && Lanes.readable(Lanes.testGuest) && Lanes.executable(Lanes.kiln)
    }
    static let skipReason: Comment = {
        var missing: [String] = []
        if access("/dev/kvm", R_OK | W_OK) != 0 { missing.append("/dev/kvm is absent or not read-write") }
        if !Lanes.readable(Lanes.testGuest) { missing.append("the test guest is not built (make guest)") }
        if !Lanes.executable(Lanes.kiln) { missing.append("kiln is not built") }
        return Comment(rawValue: "vsock lane 1 skipped: " + missing.joined(separator: "; "))
    }()

    static let listenPort: UInt32 = 5000
    static let connectPort: UInt32 = 6000
    /// Several times the guest's 64 KiB credit, so flow control is exercised
    /// both ways.
    static let payloadSize = 256 * 1024
    /// Bounds for a busy host: the guest's code runs slowly under kvm-pvm
    /// (tens of KiB/s when the host is loaded), so each wait is generous.
    static let echoSeconds = 120.0, vmmSeconds = 300
    /// The guest gives up after this long (vsock.seconds).
    static let guestSeconds = "vsock.seconds=240"

    /// What the host saw of one echoed connection.
    struct Exchange {
        var reply: String?
        var payload: [UInt8] = []
        var echoed: [UInt8] = []
        var endOfFile = false
        var extraBytes = 0
        var failure: String?

        /// The OK line's host port.
        var hostPort: UInt32? {
            guard let reply, reply.hasPrefix("OK ") else { return nil }
            return UInt32(reply.dropFirst(3))
        }
        var echoedAll: Bool { echoed == payload && !payload.isEmpty }
        /// What the guest prints when the connection has ended.
        func guestLine(_ role: String, port: UInt32, peer: UInt32) -> String {
            "guest: vsock closed \(role) port \(port) peer \(peer) received \(payload.count) fnv1a 0x"
                + String(VsockPeer.fnv1a(payload), radix: 16)
        }

        /// Every byte came back, the guest closed after the host's
        /// half-close and sent nothing more, and the guest's closing line
        /// (`role`, `port`, `peer`) carries the hash of what it received.
        func expectEchoed(
            _ what: String, _ role: String, port: UInt32, peer: UInt32, guestLines lines: [String],
            _ context: Comment, sourceLocation: SourceLocation = #_sourceLocation
        ) {
            let equalPrefix = echoed == Array(payload.prefix(echoed.count))
            #expect(
                echoedAll, "\(what): \(echoed.count) of \(payload.count) bytes came back equal: \(equalPrefix)",
                sourceLocation: sourceLocation)
            #expect(
                endOfFile && extraBytes == 0,
                "\(what): no end of file after the half-close (\(extraBytes) extra bytes)\n\(context.rawValue)",
                sourceLocation: sourceLocation)
            #expect(lines.contains(guestLine(role, port: port, peer: peer)), context, sourceLocation: sourceLocation)
        }
    }

    /// Echoes `size` random bytes on a connected `fd`, then half-closes and
    /// waits for the guest's close.
    static func echo(on fd: Int32, size: Int, into exchange: inout Exchange) {
        exchange.payload = VsockPeer.randomBytes(size, seed: UInt64.random(in: 0...UInt64.max))
        exchange.echoed = VsockPeer.echo(fd, exchange.payload, seconds: echoSeconds)
        let closed = VsockPeer.closeWriting(fd, seconds: 10)
        exchange.endOfFile = closed.endOfFile
        exchange.extraBytes = closed.extraBytes
    }

    /// Host-initiated: a CONNECT to a port nobody listens on is closed
    /// without an OK; then `CONNECT port`, the OK, and the echo.
    static func hostInitiated(socket: String, port: UInt32, refusedPort: UInt32) -> (
        refusedReply: String?, refusedClosed: Bool, Exchange
    ) {
        var exchange = Exchange()
        var refusedReply: String?, refusedClosed = false
        switch VsockPeer.connect(socket) {
        case .failure(let failure): exchange.failure = failure.description
        case .success(let fd):
            refusedReply = VsockPeer.handshake(fd, port: refusedPort, seconds: 10)
            refusedClosed = refusedReply == nil && VsockPeer.closedByPeer(fd, seconds: 1)
            close(fd)
        }
        guard exchange.failure == nil else { return (refusedReply, refusedClosed, exchange) }
        switch VsockPeer.connect(socket) {
        case .failure(let failure): exchange.failure = failure.description
        case .success(let fd):
            defer { close(fd) }
            exchange.reply = VsockPeer.handshake(fd, port: port, seconds: 10)
            if exchange.hostPort != nil { echo(on: fd, size: payloadSize, into: &exchange) }
        }
        return (refusedReply, refusedClosed, exchange)
    }

    /// Waits for the guest's "listening" line and for `socket` to appear,
    /// then runs `hostInitiated` on the guest's port; nil when either never
    /// came.
    static func hostInitiatedOnceListening(_ running: ChildProcess.Running, socket: String) -> (
        refusedReply: String?, refusedClosed: Bool, exchange: Exchange
    )? {
        let listening =
            VsockPeer.waitForConsole(running, "guest: vsock listening on port \(listenPort)", seconds: 20)
            && Lanes.exists(socket)
        guard listening else { return nil }
        return hostInitiated(socket: socket, port: listenPort, refusedPort: 5001)
    }

    /// Guest-initiated: the guest's connection arrives on `listener`.
    static func guestInitiated(listener: Int32, while running: ChildProcess.Running) -> Exchange {
        var exchange = Exchange()
        guard let fd = VsockPeer.accept(listener, seconds: 20, while: running) else {
            exchange.failure = "no connection from the guest on the listener"
            return exchange
        }
        defer { close(fd) }
        echo(on: fd, size: payloadSize, into: &exchange)
        return exchange
    }

    /// Ends a VMM a failed test left running (timeout(1)'s child).
    static func stop(_ running: ChildProcess.Running) {
        if !TapLane.hasExited(running.pid), let pid = running.programPID { kill(pid, SIGKILL) }
    }
}

@Suite(.enabled(if: VsockLane.ready, VsockLane.skipReason))
struct VsockLaneTests {
    /// A host process connects through `uds_path` with `CONNECT 5000` and
    /// gets `OK <host port>`; the guest, listening on 5000, echoes 256 KiB;
    /// a CONNECT to a port the guest does not listen on is closed.
    @Test func theHostConnectsToTheGuestThroughUDSPath() throws {
        let folder = Lanes.scratchFolder("vsock-host")
        defer { Lanes.removeTree(folder) }
        let socket = folder + "/v.sock", config = folder + "/vm.json"
        ChildProcess.write(
            VsockPeer.configText(
                kernel: Lanes.testGuest, bootArgs: "vsock.listen=\(VsockLane.listenPort) \(VsockLane.guestSeconds)",
                udsPath: socket), to: config)
        let running = try ChildProcess.start(
            [Lanes.kiln, "--no-api", "--no-seccomp", "--config-file", config], seconds: VsockLane.vmmSeconds)
        defer { VsockLane.stop(running) }
        let result = VsockLane.hostInitiatedOnceListening(running, socket: socket)
        let run = running.wait()
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        let (refusedReply, refusedClosed, exchange) = try #require(
            result, "the guest never listened, or \(socket) never appeared\n\(context.rawValue)")
        #expect(exchange.failure == nil, "\(exchange.failure ?? "")\n\(context.rawValue)")
        #expect(
            refusedReply == nil && refusedClosed,
            "CONNECT 5001 got '\(refusedReply ?? "")' or stayed open\n\(context.rawValue)")
        let hostPort = try #require(
            exchange.hostPort,
            "CONNECT \(VsockLane.listenPort) got '\(exchange.reply ?? "nothing")'\n\(context.rawValue)")
        let lines = VirtioLane.guestLines(run.stdout)
        exchange.expectEchoed(
            "host-initiated", "accepted", port: VsockLane.listenPort, peer: hostPort, guestLines: lines, context)
        #expect(
            lines.contains("guest: vsock accepted port \(VsockLane.listenPort) from host port \(hostPort)"), context)
        #expect(
            lines.contains("guest: vsock done accepted 1 connected 0 refused 0 reset 0 bytes \(VsockLane.payloadSize)"),
            context)
        #expect(run.status == 0, context)
    }

    /// The guest connects to CID 2 port 6000, which kiln connects to the
    /// host's listener on `<uds_path>_6000`; the host sends 256 KiB and the
    /// guest echoes them.
    @Test func theGuestConnectsToTheHostsListener() throws {
        let folder = Lanes.scratchFolder("vsock-guest")
        defer { Lanes.removeTree(folder) }
        let socket = folder + "/v.sock", config = folder + "/vm.json"
        let listener = try VsockPeer.listen(socket + "_\(VsockLane.connectPort)").get()
        defer { close(listener) }
        ChildProcess.write(
            VsockPeer.configText(
                kernel: Lanes.testGuest, bootArgs: "vsock.connect=\(VsockLane.connectPort) \(VsockLane.guestSeconds)",
                udsPath: socket), to: config)
        let running = try ChildProcess.start(
            [Lanes.kiln, "--no-api", "--no-seccomp", "--config-file", config], seconds: VsockLane.vmmSeconds)
        defer { VsockLane.stop(running) }
        let exchange = VsockLane.guestInitiated(listener: listener, while: running)
        let run = running.wait()
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        try #require(exchange.failure == nil, "\(exchange.failure ?? "")\n\(context.rawValue)")
        let lines = VirtioLane.guestLines(run.stdout)
        exchange.expectEchoed(
            "guest-initiated", "connected", port: 50000, peer: VsockLane.connectPort, guestLines: lines, context)
        #expect(lines.contains("guest: vsock connected to host port \(VsockLane.connectPort) from port 50000"), context)
        #expect(
            lines.contains("guest: vsock done accepted 0 connected 1 refused 0 reset 0 bytes \(VsockLane.payloadSize)"),
            context)
        #expect(run.status == 0, context)
    }

    /// With nothing listening on `<uds_path>_6001`, the guest's REQUEST is
    /// answered with RST.
    @Test func aGuestConnectionToNoListenerIsReset() throws {
        let folder = Lanes.scratchFolder("vsock-refused")
        defer { Lanes.removeTree(folder) }
        let socket = folder + "/v.sock", config = folder + "/vm.json"
        ChildProcess.write(
            VsockPeer.configText(
                kernel: Lanes.testGuest, bootArgs: "vsock.connect=6001 vsock.seconds=10",
                udsPath: socket), to: config)
        let run = try ChildProcess.run(
            [Lanes.kiln, "--no-api", "--no-seccomp", "--config-file", config], seconds: VsockLane.vmmSeconds)
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        let lines = VirtioLane.guestLines(run.stdout)
        #expect(lines.contains("guest: vsock connect to host port 6001 refused"), context)
        #expect(lines.contains("guest: vsock done accepted 0 connected 0 refused 1 reset 0 bytes 0"), context)
        #expect(run.status == 0, context)
    }
}

/// Lane 1 jailed, with a vsock device: `uds_path` is inside the jail, as
/// with Firecracker's jailer, and so is the listener for the guest's
/// connection. Part of the jailed suite, so it runs alone.
extension JailedKilnTests {
    @Test func vsockWorksBothWaysThroughSocketsInsideTheJail() throws {
        let folder = Lanes.scratchFolder("jailed-vsock")
        defer { Lanes.removeTree(folder) }
        let id = "jailed-vsock"
        let root = folder + "/jails/kiln/" + id + "/root"
        // The jail made first, as orchestrators do, so the listener is in
        // its /run before kiln starts (the jailer gives /run to kiln's user).
        for path in [folder + "/jails", folder + "/jails/kiln", folder + "/jails/kiln/" + id, root, root + "/run"] {
            mkdir(path, 0o755)
        }
        let listener = try VsockPeer.listen(
            root + "/run/v.sock_\(VsockLane.connectPort)",
            owner: uid_t(JailedLane.uid)!, gid: gid_t(JailedLane.gid)!
        ).get()
        defer { close(listener) }
        let config = folder + "/vm.json"
        ChildProcess.write(
            VsockPeer.configText(
                kernel: "/guest.elf",
                bootArgs:
                    "vsock.listen=\(VsockLane.listenPort) vsock.connect=\(VsockLane.connectPort) \(VsockLane.guestSeconds)",
                udsPath: "/run/v.sock"), to: config)
        let launch = try JailedLane.Launch(
            id: id, in: folder, jailer: ["--jail-file", config + ":vm.json"],
            kiln: ["--no-api", "--config-file", "/vm.json"], seconds: VsockLane.vmmSeconds)
        defer { VsockLane.stop(launch.running); try? launch.cleanUp() }

        // The guest's connection first (it makes it at once), then the host's.
        let outbound = VsockLane.guestInitiated(listener: listener, while: launch.running)
        let socket = root + "/run/v.sock"
        let inbound = VsockLane.hostInitiatedOnceListening(launch.running, socket: socket)
        let run = launch.running.wait()
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")

        let lines = VirtioLane.guestLines(run.stdout)
        try #require(outbound.failure == nil, "\(outbound.failure ?? "")\n\(context.rawValue)")
        outbound.expectEchoed(
            "guest-initiated", "connected", port: 50000, peer: VsockLane.connectPort, guestLines: lines, context)
        let (refusedReply, refusedClosed, exchange) = try #require(
            inbound, "the guest never listened, or \(socket) never appeared\n\(context.rawValue)")
        #expect(
            refusedReply == nil && refusedClosed,
            "CONNECT 5001 got '\(refusedReply ?? "")' or stayed open\n\(context.rawValue)")
        let hostPort = try #require(
            exchange.hostPort,
            "CONNECT \(VsockLane.listenPort) got '\(exchange.reply ?? "nothing")'\n\(context.rawValue)")
        exchange.expectEchoed(
            "host-initiated", "accepted", port: VsockLane.listenPort, peer: hostPort, guestLines: lines, context)
        #expect(
            lines.contains(
                "guest: vsock done accepted 1 connected 1 refused 0 reset 0 bytes \(2 * VsockLane.payloadSize)"),
            context)
        #expect(run.status == 0, context)
        #expect(!run.stderr.contains("Bad system call"), context)
        try launch.cleanUp()
        #expect(!Lanes.exists(launch.jailFolder), "the jail folder is left behind")
    }
}

/// A relative `uds_path`, as Kata gives (`kata.hvsock`): kiln in its jail
/// resolves it from its working folder, the jail root, which the jailer
/// leaves the VMM user's so that kiln can make the socket there. A host
/// process reaches the guest through the socket in the jail root.
extension JailedKilnTests {
    @Test func aRelativeVsockPathIsMadeInTheJailRootAndReachesTheGuest() throws {
        let folder = Lanes.scratchFolder("jailed-vsock-relative")
        defer { Lanes.removeTree(folder) }
        let id = "jailed-vsock-relative"
        let config = folder + "/vm.json"
        ChildProcess.write(
            VsockPeer.configText(
                kernel: "/guest.elf", bootArgs: "vsock.listen=\(VsockLane.listenPort) \(VsockLane.guestSeconds)",
                udsPath: "kata.hvsock"), to: config)
        let launch = try JailedLane.Launch(
            id: id, in: folder, jailer: ["--jail-file", config + ":vm.json"],
            kiln: ["--no-api", "--config-file", "/vm.json"], seconds: VsockLane.vmmSeconds)
        defer { VsockLane.stop(launch.running); try? launch.cleanUp() }
        let socket = launch.jailFolder + "/root/kata.hvsock"
        let inbound = VsockLane.hostInitiatedOnceListening(launch.running, socket: socket)
        let run = launch.running.wait()
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")

        let (_, _, exchange) = try #require(
            inbound, "the guest never listened, or \(socket) never appeared\n\(context.rawValue)")
        #expect(exchange.failure == nil, "\(exchange.failure ?? "")\n\(context.rawValue)")
        let hostPort = try #require(
            exchange.hostPort,
            "CONNECT \(VsockLane.listenPort) got '\(exchange.reply ?? "nothing")'\n\(context.rawValue)")
        exchange.expectEchoed(
            "host-initiated", "accepted", port: VsockLane.listenPort, peer: hostPort,
            guestLines: VirtioLane.guestLines(run.stdout), context)
        #expect(run.status == 0, context)
        #expect(!run.stderr.contains("Bad system call"), context)
        try launch.cleanUp()
        #expect(!Lanes.exists(launch.jailFolder), "the jail folder is left behind")
    }
}
