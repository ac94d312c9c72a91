import KilnMemory
import KilnSystem
import Testing

@testable import KilnMachine
@testable import KilnVirtio

#if canImport(Glibc)
    import Glibc
#endif

/// A guest driving the real vsock device on plain memory, and the real Unix
/// socket backend on a real event loop: no KVM. The guest side is this
/// test's driver; the host side is Unix sockets in this process.
final class VsockGuestRig {
    static let receiveBufferSize = 4096 + VsockPacketHeader.size
    /// The guest's own receive buffer, advertised in every packet it sends.
    static let guestBufferAllocation: UInt32 = 1 << 20

    let path: String
    let loop: EventLoop
    let backend: UnixVsockBackend
    let rig: DeviceRig<VsockDevice>
    private var receiveBuffers: [UInt16: UInt64] = [:]
    private var consumed: UInt16 = 0
    private let headerArea: UInt64
    private let payloadArea: UInt64
    /// Packets the device put in receive buffers, oldest first.
    var inbox: [(header: VsockPacketHeader, payload: [UInt8])] = []
    /// Per stream: payload bytes the guest took (its fwd_cnt), and the
    /// device's latest buf_alloc and fwd_cnt.
    var guestForward: [VsockConnectionKey: UInt32] = [:]
    var deviceCredit: [VsockConnectionKey: (bufferAllocation: UInt32, forwardCount: UInt32)] = [:]
    var sentToDevice: [VsockConnectionKey: UInt32] = [:]

    init() throws {
        path = "/tmp/kiln-vsock-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let backend = try UnixVsockBackend(socket: VsockHostSocket(path: path), counters: nil, log: { _ in })
        self.backend = backend
        rig = try DeviceRig(memorySize: 4 << 20, queueSize: 64) { memory in
            VsockDevice(memory: memory, guestCID: 3, backend: backend, clock: MonotonicClock.nanoseconds)
        }
        loop = try EventLoop()
        headerArea = try rig.buffer(zeros: VsockPacketHeader.size)
        payloadArea = try rig.buffer(zeros: 64 << 10)
        _ = try backend.attach(
            device: rig.device, loop: loop, serialize: { $0() },
            serveReceive: { [weak rig] in rig?.transport.processQueue(VsockDevice.Queue.receive) })
        for _ in 0..<32 { try post(try rig.buffer(zeros: Self.receiveBufferSize)) }
        rig.driver.notify(UInt32(VsockDevice.Queue.receive))
    }

    deinit { unlink(path) }

    private func post(_ address: UInt64) throws {
        let head = try rig.rings[VsockDevice.Queue.receive].addChain([writable(address, Self.receiveBufferSize)])
        receiveBuffers[head] = address
    }

    /// Takes every used receive buffer into `inbox` and posts it again.
    func collect() throws {
        var reposted = false
        while try rig.rings[VsockDevice.Queue.receive].usedIndex() != consumed {
            let element = try rig.rings[VsockDevice.Queue.receive].usedElement(consumed)
            consumed &+= 1
            let address = try #require(receiveBuffers[UInt16(element.id)])
            let bytes = try rig.memory.readBytes(at: address, count: Int(element.length))
            let header = try #require(VsockPacketHeader(bytes: bytes))
            let payload = Array(bytes[VsockPacketHeader.size...])
            #expect(payload.count == Int(header.length), "used length and header length differ")
            let key = VsockConnectionKey(guestPort: header.destinationPort, hostPort: header.sourcePort)
            guestForward[key, default: 0] &+= UInt32(payload.count)
            deviceCredit[key] = (header.bufferAllocation, header.forwardCount)
            inbox.append((header, payload))
            try post(address)
            reposted = true
        }
        if reposted {
            rig.driver.notify(UInt32(VsockDevice.Queue.receive))
            backend.queueServed()
            try collect()
        }
    }

    /// The guest sends one packet on the transmit queue (header and payload
    /// in two descriptors, as Linux lays them out).
    func send(
        _ operation: VsockPacketHeader.Operation, _ key: VsockConnectionKey, _ payload: [UInt8] = [],
        flags: UInt32 = 0
    ) throws {
        let header = VsockPacketHeader(
            sourceCID: 3, destinationCID: 2, sourcePort: key.guestPort,
            destinationPort: key.hostPort, length: UInt32(payload.count), type: .stream,
            operation: operation, flags: flags, bufferAllocation: Self.guestBufferAllocation,
            forwardCount: guestForward[key] ?? 0)
        try rig.memory.write(header.bytes, at: headerArea)
        var chain = [readable(headerArea, VsockPacketHeader.size)]
        if !payload.isEmpty {
            try rig.memory.write(payload, at: payloadArea)
            chain.append(readable(payloadArea, payload.count))
        }
        try rig.submit(VsockDevice.Queue.transmit, chain)
        sentToDevice[key, default: 0] &+= UInt32(payload.count)
        backend.queueServed()
        try collect()
    }

    /// How many bytes the device will still take on `key` (§5.10.6.3).
    func creditLeft(_ key: VsockConnectionKey) -> UInt32 {
        guard let credit = deviceCredit[key] else { return 0 }
        return credit.bufferAllocation &- ((sentToDevice[key] ?? 0) &- credit.forwardCount)
    }

    /// Runs the event loop until `condition` holds; false (and a recorded
    /// issue) after 30 seconds. A step takes microseconds; the bound is for
    /// a hang, and generous because `make test` shares two cores with the
    /// nested lane's TCG (five seconds once ran out there).
    @discardableResult
    func pump(_ what: String, until condition: () throws -> Bool) throws -> Bool {
        let deadline = MonotonicClock.nanoseconds() + 30_000_000_000
        while MonotonicClock.nanoseconds() < deadline {
            try collect()
            if try condition() { return true }
            try loop.runOnce(maximumMilliseconds: 10)
        }
        Issue.record("timed out waiting for \(what)")
        return false
    }

    /// The first inbox packet `matching`, taken out of the inbox.
    func take(_ what: String, _ matching: (VsockPacketHeader) -> Bool) throws -> (
        header: VsockPacketHeader, payload: [UInt8]
    )? {
        var found: (header: VsockPacketHeader, payload: [UInt8])?
        try pump(what) {
            guard let index = inbox.firstIndex(where: { matching($0.header) }) else { return false }
            found = inbox.remove(at: index)
            return true
        }
        return found
    }

    func take(_ operation: VsockPacketHeader.Operation, _ key: VsockConnectionKey) throws -> (
        header: VsockPacketHeader, payload: [UInt8]
    )? {
        try take("\(operation) on \(key)") {
            $0.operation == operation.rawValue && $0.destinationPort == key.guestPort && $0.sourcePort == key.hostPort
        }
    }

    /// Guest bytes on `key` until `count` arrived.
    func receive(_ key: VsockConnectionKey, count: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        try pump("\(count) bytes on \(key)") {
            while let index = inbox.firstIndex(where: {
                $0.header.operation == VsockPacketHeader.Operation.readWrite.rawValue
                    && $0.header.destinationPort == key.guestPort && $0.header.sourcePort == key.hostPort
            }) {
                bytes += inbox.remove(at: index).payload
            }
            return bytes.count >= count
        }
        return bytes
    }

    // MARK: The host side

    /// Reads what a non-blocking host socket has; nil at end of file.
    static func readSome(_ descriptor: FileDescriptor) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor.rawValue, $0.baseAddress, $0.count) }
        if count == 0 { return nil }
        return count > 0 ? Array(buffer[0..<count]) : []
    }

    /// Host bytes until `count` arrived (or end of file).
    func hostReceive(_ descriptor: FileDescriptor, count: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        try pump("\(count) bytes at the host peer") {
            guard let some = Self.readSome(descriptor) else { return true }
            bytes += some
            return bytes.count >= count
        }
        return bytes
    }

    func hostSeesEndOfFile(_ descriptor: FileDescriptor) throws -> Bool {
        try pump("end of file at the host peer") { Self.readSome(descriptor) == nil }
    }

    func accept(_ listener: FileDescriptor) throws -> FileDescriptor? {
        var accepted: FileDescriptor?
        try pump("a connection on the host listener") {
            accepted = try UnixSocket.accept(listener)
            return accepted != nil
        }
        return accepted
    }

    /// A guest-initiated stream to `port`, accepted by the host on `listener`.
    func openFromGuest(guestPort: UInt32, port: UInt32, listener: FileDescriptor) throws -> (
        VsockConnectionKey, FileDescriptor
    )? {
        let key = VsockConnectionKey(guestPort: guestPort, hostPort: port)
        try send(.request, key)
        guard try take(.response, key) != nil, let host = try accept(listener) else { return nil }
        return (key, host)
    }

    /// A host-initiated stream to guest port `port`, accepted by the guest.
    func openFromHost(port: UInt32) throws -> (VsockConnectionKey, FileDescriptor)? {
        let client = try UnixSocket.connect(path: path, nonBlocking: true)
        try client.writeAll(Array("CONNECT \(port)\n".utf8))
        guard
            let request = try take(
                "REQUEST for port \(port)",
                {
                    $0.operation == VsockPacketHeader.Operation.request.rawValue && $0.destinationPort == port
                })
        else {
            client.close()
            return nil
        }
        let key = VsockConnectionKey(guestPort: port, hostPort: request.header.sourcePort)
        try send(.response, key)
        let ok = try hostReceive(client, count: "OK \(key.hostPort)\n".utf8.count)
        #expect(ok == Array("OK \(key.hostPort)\n".utf8))
        return (key, client)
    }

    /// Socket descriptors this process holds (other suites in the process
    /// open files, not sockets, so this count is the vsock backend's and
    /// this test's alone).
    static func socketDescriptorCount() throws -> Int {
        try FileSystem.listDirectory("/proc/self/fd").filter { name in
            var target = [UInt8](repeating: 0, count: 256)
            let count = target.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) {
                    readlink("/proc/self/fd/\(name)", $0.baseAddress!, buffer.count)
                }
            }
            return count > 0 && String(decoding: target.prefix(count), as: UTF8.self).hasPrefix("socket:")
        }.count
    }
}

@Suite(.serialized) struct VsockDeviceTests {
    /// The backend keeps a timer only while something has a deadline: none
    /// for an idle device or an established stream (an idle VM's loop
    /// sleeps), one while a peer has not sent its CONNECT line, and that
    /// peer is dropped once its deadline passes.
    @Test func theDeadlineTimerRunsOnlyWhileSomethingHasADeadline() throws {
        let guest = try VsockGuestRig()
        try guest.loop.runOnce(maximumMilliseconds: 0)
        #expect(guest.backend.timedDeadline == nil, "an idle device keeps no timer")
        guard let (_, client) = try guest.openFromHost(port: 52) else { return }
        defer { client.close() }
        #expect(guest.backend.timedDeadline == nil, "an established stream has no deadline")

        let silent = try UnixSocket.connect(path: guest.path, nonBlocking: true)
        defer { silent.close() }
        try guest.pump("a timer for the silent peer's handshake") { guest.backend.timedDeadline != nil }
        #expect(try guest.hostSeesEndOfFile(silent), "dropped at its deadline")
        try guest.pump("no timer once nothing has a deadline") { guest.backend.timedDeadline == nil }
    }

    @Test func aHostInitiatedStreamCarriesBytesBothWays() throws {
        let guest = try VsockGuestRig()
        guard let (key, client) = try guest.openFromHost(port: 52) else { return }
        defer { client.close() }
        #expect(key.hostPort == 1 << 30, "Firecracker's first host port")
        // A peer may write right after its CONNECT line: those bytes wait
        // in the socket until the guest accepted, and arrive whole.
        try client.writeAll(Array("ping from the host".utf8))
        #expect(try guest.receive(key, count: 18) == Array("ping from the host".utf8))
        try guest.send(.readWrite, key, Array("pong from the guest".utf8))
        #expect(try guest.hostReceive(client, count: 19) == Array("pong from the guest".utf8))
    }

    @Test func aGuestInitiatedStreamReachesUdsPathUnderscorePort() throws {
        let guest = try VsockGuestRig()
        let listener = try UnixSocket.listen(path: "\(guest.path)_77")
        defer { listener.close(); unlink("\(guest.path)_77") }
        guard let (key, host) = try guest.openFromGuest(guestPort: 5000, port: 77, listener: listener) else { return }
        defer { host.close() }
        try guest.send(.readWrite, key, Array("hello host".utf8))
        #expect(try guest.hostReceive(host, count: 10) == Array("hello host".utf8))
        try host.writeAll(Array("hello guest".utf8))
        #expect(try guest.receive(key, count: 11) == Array("hello guest".utf8))
    }

    @Test func noListenerAtThePortMeansReset() throws {
        let guest = try VsockGuestRig()
        let key = VsockConnectionKey(guestPort: 5001, hostPort: 78)
        try guest.send(.request, key)
        #expect(try guest.take(.reset, key) != nil)
        #expect(guest.inbox.allSatisfy { $0.header.operation != VsockPacketHeader.Operation.response.rawValue })
        #expect(guest.rig.device.table.count == 0)
    }

    @Test func aBadHandshakeOrAGuestThatRefusesClosesTheHostPeer() throws {
        let guest = try VsockGuestRig()
        let bad = try UnixSocket.connect(path: guest.path, nonBlocking: true)
        defer { bad.close() }
        try bad.writeAll(Array("HELLO 5\n".utf8))
        #expect(try guest.hostSeesEndOfFile(bad))
        let refused = try UnixSocket.connect(path: guest.path, nonBlocking: true)
        defer { refused.close() }
        try refused.writeAll(Array("CONNECT 9\n".utf8))
        let request = try #require(try guest.take("REQUEST for port 9") { $0.destinationPort == 9 })
        try guest.send(.reset, VsockConnectionKey(guestPort: 9, hostPort: request.header.sourcePort))
        #expect(try guest.hostSeesEndOfFile(refused))
    }

    @Test func halfCloseWorksEachWayAndFullCloseEndsTheStream() throws {
        let guest = try VsockGuestRig()
        let listener = try UnixSocket.listen(path: "\(guest.path)_80")
        defer { listener.close(); unlink("\(guest.path)_80") }

        // The guest stops sending first: the host reads end of file and can
        // still answer; its own end then finishes the stream (RST).
        guard let (first, firstHost) = try guest.openFromGuest(guestPort: 6000, port: 80, listener: listener) else {
            return
        }
        defer { firstHost.close() }
        try guest.send(.readWrite, first, Array("request".utf8))
        try guest.send(.shutdown, first, flags: VsockPacketHeader.shutdownSend)
        #expect(try guest.hostReceive(firstHost, count: 7) == Array("request".utf8))
        #expect(try guest.hostSeesEndOfFile(firstHost))
        try firstHost.writeAll(Array("answer".utf8))
        #expect(try guest.receive(first, count: 6) == Array("answer".utf8))
        #expect(shutdown(firstHost.rawValue, Int32(SHUT_WR)) == 0)
        #expect(try guest.take(.reset, first) != nil)
        try guest.pump("the stream to end") { guest.backend.openStreamCount == 0 }

        // The host stops sending first: the guest hears SHUTDOWN(SEND) and
        // can still answer; its full SHUTDOWN then ends the stream.
        guard let (second, secondHost) = try guest.openFromGuest(guestPort: 6001, port: 80, listener: listener) else {
            return
        }
        defer { secondHost.close() }
        try secondHost.writeAll(Array("question".utf8))
        #expect(shutdown(secondHost.rawValue, Int32(SHUT_WR)) == 0)
        #expect(try guest.receive(second, count: 8) == Array("question".utf8))
        let hostDone = try #require(try guest.take(.shutdown, second))
        #expect(hostDone.header.flags == VsockPacketHeader.shutdownSend)
        try guest.send(.readWrite, second, Array("reply".utf8))
        #expect(try guest.hostReceive(secondHost, count: 5) == Array("reply".utf8))
        try guest.send(.shutdown, second, flags: VsockPacketHeader.shutdownSend | VsockPacketHeader.shutdownReceive)
        #expect(try guest.take(.reset, second) != nil)
        #expect(try guest.hostSeesEndOfFile(secondHost))
    }

    @Test func aHostPeerThatStopsReadingStallsOnlyItsOwnStream() throws {
        let guest = try VsockGuestRig()
        let listener = try UnixSocket.listen(path: "\(guest.path)_81")
        defer { listener.close(); unlink("\(guest.path)_81") }
        guard let (stalled, stalledHost) = try guest.openFromGuest(guestPort: 7000, port: 81, listener: listener),
            let (other, otherHost) = try guest.openFromGuest(guestPort: 7001, port: 81, listener: listener)
        else { return }
        defer { stalledHost.close(); otherHost.close() }

        // The guest sends while the device gives credit; the host peer reads nothing.
        var sent: [UInt8] = []
        try guest.pump("the stalled stream's credit to run out") {
            let room = Int(min(guest.creditLeft(stalled), 16 << 10))
            if room == 0 { return true }
            let chunk = (0..<room).map { UInt8(truncatingIfNeeded: sent.count + $0) }
            try guest.send(.readWrite, stalled, chunk)
            sent += chunk
            return false
        }
        let limits = guest.rig.device.table.limits
        #expect(guest.rig.device.table.bufferedToHost(stalled) <= Int(limits.bufferAllocation))
        #expect(guest.rig.device.table.isEstablished(stalled), "a guest within its credit is not punished")

        // The other stream flows both ways meanwhile.
        try guest.send(.readWrite, other, Array("still here".utf8))
        #expect(try guest.hostReceive(otherHost, count: 10) == Array("still here".utf8))
        try otherHost.writeAll(Array("me too".utf8))
        #expect(try guest.receive(other, count: 6) == Array("me too".utf8))

        // The stalled peer reads at last: everything, in order, and the
        // guest's credit comes back.
        #expect(try guest.hostReceive(stalledHost, count: sent.count) == sent)
        // Updates go out once the guest's view of the space falls below half.
        try guest.pump("credit to come back") { guest.creditLeft(stalled) >= limits.bufferAllocation / 2 }
    }

    @Test func aThousandStreamsLeaveNoDescriptorBehind() throws {
        let guest = try VsockGuestRig()
        let listener = try UnixSocket.listen(path: "\(guest.path)_90")
        defer { listener.close(); unlink("\(guest.path)_90") }
        let before = try VsockGuestRig.socketDescriptorCount()
        for round in 0..<500 {
            // Guest-initiated: the host peer closes, the guest hears it and resets.
            guard
                let (key, host) = try guest.openFromGuest(
                    guestPort: UInt32(10_000 + round), port: 90,
                    listener: listener)
            else { return }
            host.close()
            guard try guest.take(.shutdown, key) != nil else { return }
            try guest.send(.reset, key)
            // Host-initiated: the guest accepts, then closes it with a full SHUTDOWN.
            guard let (hostKey, client) = try guest.openFromHost(port: UInt32(20_000 + round)) else { return }
            try guest.send(
                .shutdown, hostKey, flags: VsockPacketHeader.shutdownSend | VsockPacketHeader.shutdownReceive)
            guard try guest.take(.reset, hostKey) != nil, try guest.hostSeesEndOfFile(client) else { return }
            client.close()
            guest.inbox.removeAll()
        }
        try guest.pump("every stream to be released") {
            try guest.backend.openStreamCount == 0 && VsockGuestRig.socketDescriptorCount() == before
        }
        #expect(try VsockGuestRig.socketDescriptorCount() == before)
        #expect(guest.rig.device.table.count == 0)
    }

    @Test func aResetDeviceReleasesEveryStream() throws {
        let guest = try VsockGuestRig()
        guard let (_, client) = try guest.openFromHost(port: 52) else { return }
        defer { client.close() }
        guest.rig.driver.write(MMIORegister.status, 0)
        #expect(guest.rig.device.table.count == 0)
        #expect(try guest.hostSeesEndOfFile(client))
        #expect(guest.backend.openStreamCount == 0)
    }
}
