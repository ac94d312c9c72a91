/// What the host side must do for the connection table: the device carries
/// these out on its backend and reports back.
public enum VsockHostAction: Hashable, Sendable {
    /// The guest asked for host port `key.hostPort`: connect to its
    /// listener and answer with `connectFinished`.
    case connect(VsockConnectionKey)
    /// Guest bytes wait for the host peer: write them (`withBytesToHost`,
    /// then `hostWrote`).
    case flush(VsockConnectionKey)
    /// The guest sends no more and every byte it sent was written: end the
    /// host peer's read side with shutdown(SHUT_WR).
    case shutdownWrite(VsockConnectionKey)
    /// The connection is over: release the host stream.
    case close(VsockConnectionKey)
}

/// The outcome of one read or write on a host stream.
public enum VsockHostIO: Equatable, Sendable {
    case transferred(Int)
    case endOfStream
    case wouldBlock
    case failed
}

/// The next thing the guest's receive queue should carry.
public enum VsockGuestPacket: Equatable, Sendable {
    /// A header with no payload.
    case control(VsockPacketHeader)
    /// RW data: read at most `maximum` bytes from the host stream, then
    /// report with `hostRead`.
    case data(VsockConnectionKey, maximum: Int)
}

/// The device's bounds. Both the guest and host peers are untrusted, so
/// every table and buffer here has one.
public struct VsockLimits: Equatable, Sendable {
    /// Streams at once, both directions, host handshakes included: each
    /// holds one descriptor and up to `bufferAllocation` bytes.
    public var maxConnections = 128
    /// The device's `buf_alloc` per stream: at most this many guest bytes
    /// wait for a slow host peer (128 × 256 KiB = 32 MiB for a device).
    public var bufferAllocation: UInt32 = 256 << 10
    /// RST packets waiting for guest receive buffers; more are dropped and
    /// counted (the guest's own refusals of junk it sent).
    public var maxQueuedResets = 256
    /// How long the guest has to answer a host-initiated REQUEST, and how
    /// long a closed stream's last guest bytes may take to reach a slow
    /// host peer.
    public var responseTimeoutNanoseconds: UInt64 = 2_000_000_000
    public var drainTimeoutNanoseconds: UInt64 = 2_000_000_000
    /// Host ports for host-initiated streams start here, as Firecracker's
    /// do ("OK 1073741824"), above the ports guests usually listen on.
    public var firstHostPort: UInt32 = 1 << 30

    public init() {}
}

/// Counters the device keeps, under Firecracker's vsock metric names
/// where one exists.
public enum VsockCounter: String, CaseIterable, Sendable {
    case rxBytes = "rx_bytes_count"
    case rxPackets = "rx_packets_count"
    case txBytes = "tx_bytes_count"
    case txPackets = "tx_packets_count"
    case connectionsAdded = "conns_added"
    case connectionsKilled = "conns_killed"
    case connectionsRemoved = "conns_removed"
    case rxReadFailures = "rx_read_fails"
    case txWriteFailures = "tx_write_fails"
    /// Kiln's: guest packets dropped or refused as malformed.
    case malformedPackets = "malformed_packets"
    /// Kiln's: RSTs not queued because `maxQueuedResets` were waiting.
    case resetsDropped = "resets_dropped"
}

/// virtio-vsock's connection state machine (virtio 1.2 §5.10.6) between
/// one guest and host peers, as a pure value: guest packets and host
/// events in, host actions and guest packets out. No system calls, no
/// clock of its own (`now` comes in), so every hostile sequence can be
/// played in a unit test.
///
/// The guest is untrusted. A packet that breaks the protocol costs the
/// guest that stream (RST) and is counted; it never costs the host more
/// than one table entry, one descriptor and one stream's buffer, all
/// bounded by `VsockLimits`.
public final class VsockConnectionTable {
    public let guestCID: UInt64
    public let limits: VsockLimits
    private let record: (VsockCounter, UInt64) -> Void

    private var connections: [VsockConnectionKey: VsockConnection] = [:]
    /// Keys in creation order, served round-robin from `cursor`, so one
    /// busy stream cannot starve the others of receive buffers.
    private var order: [VsockConnectionKey] = []
    private var cursor = 0
    /// RSTs owed for streams already gone (refused, killed, or never
    /// known), sent before anything else.
    private var resets: [VsockPacketHeader] = []
    private var nextHostPort: UInt32

    public init(
        guestCID: UInt64, limits: VsockLimits = VsockLimits(),
        record: @escaping (VsockCounter, UInt64) -> Void = { _, _ in }
    ) {
        self.guestCID = guestCID
        self.limits = limits
        self.record = record
        nextHostPort = limits.firstHostPort
    }

    public var count: Int { connections.count }
    public var keys: [VsockConnectionKey] { order }
    public var queuedResets: Int { resets.count }

    public func contains(_ key: VsockConnectionKey) -> Bool { connections[key] != nil }

    /// Whether the stream carries data both ways (tests and the backend's logs).
    public func isEstablished(_ key: VsockConnectionKey) -> Bool { connections[key]?.isEstablished ?? false }

    /// The guest bytes buffered for the host peer of `key`.
    public func bufferedToHost(_ key: VsockConnectionKey) -> Int { connections[key]?.toHost.count ?? 0 }

    /// The credit state of `key`, for tests.
    public func credit(_ key: VsockConnectionKey) -> VsockCredit? { connections[key]?.credit }

    // MARK: Packets from the guest (the transmit queue)

    /// One well-formed packet (`VsockPacketRules.validate` passed): `payload`
    /// is its RW data.
    public func guestPacket(_ header: VsockPacketHeader, payload: [UInt8], now: UInt64) -> [VsockHostAction] {
        advanceClock(to: now)
        let key = VsockConnectionKey(guestPort: header.sourcePort, hostPort: header.destinationPort)
        guard let operation = VsockPacketHeader.Operation(rawValue: header.operation) else {
            return refuse(header)
        }
        if operation == .request { return guestRequest(key, header, now: now) }
        guard var connection = connections[key] else {
            // §5.10.6.3: a packet for no stream is answered with RST, except
            // an RST, which must never be answered (two peers would trade
            // them for ever).
            return operation == .reset ? [] : refuse(header)
        }
        if case .draining = connection.state {
            // The guest closed it; what it sends now belongs to no stream.
            return []
        }
        guard
            connection.credit.updatePeer(
                bufferAllocation: header.bufferAllocation,
                forwardCount: header.forwardCount)
        else {
            // fwd_cnt behind its last value or ahead of what was sent.
            record(.malformedPackets, 1)
            return kill(key)
        }
        switch operation {
        case .request:
            return [] // handled above
        case .response:
            guard case .awaitingGuestResponse = connection.state else {
                record(.malformedPackets, 1)
                return kill(key)
            }
            // Firecracker's handshake: the host peer hears "OK <port>\n"
            // once the guest accepted, before any guest data.
            connection.state = .established
            let line = Array("OK \(key.hostPort)\n".utf8)
            connection.toHost.append(line)
            connection.handshakeBytesToHost = line.count
            connections[key] = connection
            return [.flush(key)]
        case .reset:
            // The guest refused or dropped the stream: no answer owed. Its
            // buffered bytes are discarded, as a reset stream's are.
            return remove(key, killed: false)
        case .shutdown:
            guard connection.isEstablished else { return kill(key) }
            connection.guestShutdown |= header.flags
            connections[key] = connection
            return afterShutdownChange(key)
        case .readWrite:
            guard connection.isEstablished, connection.guestShutdown & VsockPacketHeader.shutdownSend == 0 else {
                // Data before the stream is open or after the guest said it
                // would send no more.
                record(.malformedPackets, 1)
                return kill(key)
            }
            guard connection.credit.receive(UInt32(payload.count)) else {
                // More than the device's free space (§5.10.6.3.1): the
                // buffer would grow without bound.
                record(.malformedPackets, 1)
                return kill(key)
            }
            connection.toHost.append(payload)
            connections[key] = connection
            return payload.isEmpty ? [] : [.flush(key)]
        case .creditUpdate:
            connections[key] = connection
            return []
        case .creditRequest:
            connection.owed.insert(.creditUpdate)
            connections[key] = connection
            return []
        }
    }

    /// A guest REQUEST for host port `key.hostPort` (§5.10.6.3).
    private func guestRequest(_ key: VsockConnectionKey, _ header: VsockPacketHeader, now: UInt64) -> [VsockHostAction]
    {
        if connections[key] != nil {
            // A second REQUEST on a live stream: the driver lost track of it.
            record(.malformedPackets, 1)
            return kill(key)
        }
        guard connections.count < limits.maxConnections else { return refuse(header) }
        var connection = VsockConnection(state: .established, bufferAllocation: limits.bufferAllocation)
        // A new stream's fwd_cnt is 0 (nothing was sent to it yet).
        guard
            connection.credit.updatePeer(
                bufferAllocation: header.bufferAllocation,
                forwardCount: header.forwardCount)
        else {
            record(.malformedPackets, 1)
            return refuse(header)
        }
        insert(key, connection)
        return [.connect(key)]
    }

    /// The backend's answer to `.connect`: RESPONSE when a host listener
    /// took the stream, else RST (§5.10.6.3, Firecracker: no listener on
    /// `<uds_path>_<port>` means RST).
    public func connectFinished(_ key: VsockConnectionKey, connected: Bool) -> [VsockHostAction] {
        guard connections[key] != nil else { return connected ? [.close(key)] : [] }
        guard connected else {
            queueReset(key)
            _ = remove(key, killed: false) // no host stream to close
            return []
        }
        connections[key]?.owed.insert(.response)
        return []
    }

    /// A packet the rules refused (`VsockPacketRules.validate`), its header
    /// parsed: counted, and answered with RST unless it was one or claims
    /// another source (§5.10.6: the device answers only its own guest). A
    /// stream it names is reset with it, so both sides forget it together.
    public func malformedGuestPacket(_ header: VsockPacketHeader) -> [VsockHostAction] {
        record(.malformedPackets, 1)
        guard header.sourceCID == guestCID else { return [] }
        let key = VsockConnectionKey(guestPort: header.sourcePort, hostPort: header.destinationPort)
        if header.destinationCID == VsockPacketHeader.CID.host, connections[key] != nil {
            return kill(key)
        }
        return header.operation == VsockPacketHeader.Operation.reset.rawValue ? [] : refuse(header)
    }

    // MARK: Host events

    /// A host peer's handshake asked for guest port `port` (Firecracker's
    /// `CONNECT <port>\n`). Returns the new stream's key, whose REQUEST goes
    /// to the guest, or nil when the device is at its connection cap.
    public func hostConnectRequested(port: UInt32, now: UInt64) -> VsockConnectionKey? {
        advanceClock(to: now)
        guard connections.count < limits.maxConnections else { return nil }
        // A host port no live stream to this guest port uses; the range
        // above firstHostPort has room for far more than maxConnections.
        var key = VsockConnectionKey(guestPort: port, hostPort: nextHostPort)
        while connections[key] != nil { key = VsockConnectionKey(guestPort: port, hostPort: advanceHostPort()) }
        _ = advanceHostPort()
        var connection = VsockConnection(
            state: .awaitingGuestResponse(deadline: now &+ limits.responseTimeoutNanoseconds),
            bufferAllocation: limits.bufferAllocation)
        connection.owed.insert(.request)
        insert(key, connection)
        return key
    }

    private func advanceHostPort() -> UInt32 {
        nextHostPort = nextHostPort == UInt32.max ? limits.firstHostPort : nextHostPort + 1
        return nextHostPort
    }

    /// The host stream became readable or writable (epoll). Writable means
    /// the buffered guest bytes can move on.
    public func hostReady(_ key: VsockConnectionKey, readable: Bool, writable: Bool) -> [VsockHostAction] {
        guard var connection = connections[key] else { return [] }
        if readable { connection.hostReadable = true }
        if writable { connection.hostWritable = true }
        connections[key] = connection
        return writable && !connection.toHost.isEmpty ? [.flush(key)] : []
    }

    /// The guest bytes waiting for `key`'s host peer, front first.
    public func withBytesToHost<R>(_ key: VsockConnectionKey, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows
        -> R?
    {
        guard let connection = connections[key] else { return nil }
        return try connection.toHost.withBytes(body)
    }

    /// What a write of the buffered bytes did.
    public func hostWrote(_ key: VsockConnectionKey, _ result: VsockHostIO) -> [VsockHostAction] {
        guard var connection = connections[key] else { return [] }
        switch result {
        case .transferred(let count):
            let count = min(max(count, 0), connection.toHost.count)
            connection.toHost.removeFirst(count)
            // The handshake line is not guest data: only what the guest
            // sent counts toward fwd_cnt.
            let handshake = min(count, connection.handshakeBytesToHost)
            connection.handshakeBytesToHost -= handshake
            connection.credit.forwarded(UInt32(count - handshake))
            connections[key] = connection
            if connection.toHost.isEmpty {
                if case .draining = connection.state { return remove(key, killed: false) }
                return afterShutdownChange(key)
            }
            return count > 0 ? [.flush(key)] : []
        case .wouldBlock:
            connection.hostWritable = false
            connections[key] = connection
            return []
        case .endOfStream, .failed:
            // The host peer stopped reading for good (EPIPE): the guest's
            // stream cannot go on.
            record(.txWriteFailures, 1)
            return kill(key)
        }
    }

    /// What a read for `.data(key, …)` did; the RW header for the bytes read,
    /// or nil when there is nothing to send.
    public func hostRead(_ key: VsockConnectionKey, _ result: VsockHostIO) -> (
        header: VsockPacketHeader?, actions: [VsockHostAction]
    ) {
        guard var connection = connections[key] else { return (nil, []) }
        switch result {
        case .transferred(let count) where count > 0:
            let count = UInt32(min(count, Int(connection.credit.peerCredit)))
            connection.credit.sent(count)
            let header = makeHeader(key, .readWrite, length: count, credit: &connection.credit)
            connections[key] = connection
            return (header, [])
        case .transferred, .endOfStream:
            // The host peer sends no more: tell the guest (SHUTDOWN SEND,
            // §5.10.6.3) and see whether the stream is now done both ways.
            connection.hostReadClosed = true
            connection.hostReadable = false
            connection.hostShutdown |= VsockPacketHeader.shutdownSend
            connection.owed.insert(.shutdown)
            connections[key] = connection
            return (nil, afterShutdownChange(key))
        case .wouldBlock:
            connection.hostReadable = false
            connections[key] = connection
            return (nil, [])
        case .failed:
            record(.rxReadFailures, 1)
            return (nil, kill(key))
        }
    }

    /// Ends what is past its deadline: a REQUEST the guest did not answer
    /// (RST, and the host peer's connection closes) and a closed stream
    /// whose host peer would not take the last bytes.
    public func expire(now: UInt64) -> [VsockHostAction] {
        advanceClock(to: now)
        var actions: [VsockHostAction] = []
        for key in order {
            switch connections[key]?.state {
            case .awaitingGuestResponse(let deadline)? where now >= deadline:
                actions += kill(key)
            case .draining(let deadline)? where now >= deadline:
                actions += remove(key, killed: true)
            default:
                break
            }
        }
        return actions
    }

    /// The earliest deadline ahead, for the VMM's timer.
    public var nextDeadline: UInt64? {
        connections.values.compactMap { connection -> UInt64? in
            switch connection.state {
            case .awaitingGuestResponse(let deadline), .draining(let deadline): return deadline
            case .established: return nil
            }
        }.min()
    }

    /// Which readiness of `key`'s host stream to watch.
    public func interest(_ key: VsockConnectionKey) -> (read: Bool, write: Bool) {
        guard let connection = connections[key] else { return (false, false) }
        return (connection.wantsHostRead, connection.wantsHostWrite)
    }

    /// Device reset (§2.1.2) or the end of the VM: every stream ends, the
    /// guest having forgotten them all; no RST is owed.
    public func removeAll() -> [VsockHostAction] {
        let actions = order.map { VsockHostAction.close($0) }
        record(.connectionsRemoved, UInt64(order.count))
        connections = [:]
        order = []
        resets = []
        cursor = 0
        return actions
    }

    // MARK: Packets for the guest (the receive queue)

    /// The next packet for a guest receive buffer with room for `maxPayload`
    /// data bytes, or nil when nothing is due. RSTs first, then each stream
    /// in turn: its owed control packet, else its data.
    public func nextPacketForGuest(maxPayload: Int) -> VsockGuestPacket? {
        if !resets.isEmpty { return .control(resets.removeFirst()) }
        guard !order.isEmpty else { return nil }
        for step in 0..<order.count {
            let index = (cursor + step) % order.count
            let key = order[index]
            guard var connection = connections[key] else { continue }
            if let operation = owedOperation(&connection) {
                cursor = (index + 1) % order.count
                let flags = operation == .shutdown ? connection.hostShutdown : 0
                let header = makeHeader(key, operation, flags: flags, credit: &connection.credit)
                connections[key] = connection
                return .control(header)
            }
            if connection.canSendData && connection.hostReadable && maxPayload > 0 {
                cursor = (index + 1) % order.count
                return .data(key, maximum: min(maxPayload, Int(connection.credit.peerCredit)))
            }
        }
        return nil
    }

    /// Takes the highest-priority owed control packet off `connection`.
    private func owedOperation(_ connection: inout VsockConnection) -> VsockPacketHeader.Operation? {
        if connection.credit.needsUpdate && connection.isEstablished { connection.owed.insert(.creditUpdate) }
        let ranked: [(VsockConnection.Owed, VsockPacketHeader.Operation)] = [
            (.request, .request), (.response, .response), (.creditUpdate, .creditUpdate), (.shutdown, .shutdown),
        ]
        for (owed, operation) in ranked where connection.owed.contains(owed) {
            connection.owed.remove(owed)
            return operation
        }
        return nil
    }

    // MARK: Helpers

    private func insert(_ key: VsockConnectionKey, _ connection: VsockConnection) {
        connections[key] = connection
        order.append(key)
        record(.connectionsAdded, 1)
    }

    /// After SHUTDOWN flags changed on either side or the last buffered
    /// byte went out: pass the guest's SEND shutdown on to the host peer,
    /// and end the stream once nothing can flow either way (RST to the
    /// guest, §5.10.6.3: the peer answers a full SHUTDOWN with RST).
    private func afterShutdownChange(_ key: VsockConnectionKey) -> [VsockHostAction] {
        guard var connection = connections[key] else { return [] }
        var actions: [VsockHostAction] = []
        if connection.guestShutdown & VsockPacketHeader.shutdownSend != 0, connection.toHost.isEmpty,
            !connection.hostWriteShut
        {
            connection.hostWriteShut = true
            actions.append(.shutdownWrite(key))
        }
        connections[key] = connection
        let bothFlags = VsockPacketHeader.shutdownSend | VsockPacketHeader.shutdownReceive
        if connection.guestShutdown & bothFlags == bothFlags || connection.bothDirectionsDone {
            actions += finish(key)
        }
        return actions
    }

    /// The stream is over for the guest: RST now; the host peer gets what
    /// is still buffered for it (draining, bounded by a deadline), then
    /// its stream closes.
    private func finish(_ key: VsockConnectionKey) -> [VsockHostAction] {
        guard var connection = connections[key] else { return [] }
        queueReset(key)
        guard !connection.toHost.isEmpty else { return remove(key, killed: false) }
        connection.state = .draining(deadline: nowHint &+ limits.drainTimeoutNanoseconds)
        connection.owed = []
        connections[key] = connection
        return [.flush(key)]
    }

    /// The latest `now` seen, for deadlines set outside a timed call.
    private var nowHint: UInt64 = 0

    /// Records the current time for deadlines set by later events (a
    /// host read or write that ends a stream).
    public func advanceClock(to now: UInt64) { nowHint = max(nowHint, now) }

    /// Ends a stream abnormally: RST to the guest, the host stream closed.
    private func kill(_ key: VsockConnectionKey) -> [VsockHostAction] {
        queueReset(key)
        return remove(key, killed: true)
    }

    private func remove(_ key: VsockConnectionKey, killed: Bool) -> [VsockHostAction] {
        guard connections.removeValue(forKey: key) != nil else { return [] }
        if let index = order.firstIndex(of: key) {
            order.remove(at: index)
            if index < cursor { cursor -= 1 }
            if cursor >= order.count { cursor = 0 }
        }
        if killed { record(.connectionsKilled, 1) }
        record(.connectionsRemoved, 1)
        return [.close(key)]
    }

    /// RST for a packet that names no stream the device can serve.
    private func refuse(_ header: VsockPacketHeader) -> [VsockHostAction] {
        enqueueReset(
            VsockPacketHeader(
                sourceCID: header.destinationCID, destinationCID: guestCID,
                sourcePort: header.destinationPort, destinationPort: header.sourcePort,
                length: 0, type: .stream, operation: .reset))
        return []
    }

    private func queueReset(_ key: VsockConnectionKey) {
        enqueueReset(
            VsockPacketHeader(
                sourceCID: VsockPacketHeader.CID.host, destinationCID: guestCID,
                sourcePort: key.hostPort, destinationPort: key.guestPort,
                length: 0, type: .stream, operation: .reset))
    }

    private func enqueueReset(_ header: VsockPacketHeader) {
        guard resets.count < limits.maxQueuedResets else {
            record(.resetsDropped, 1)
            return
        }
        resets.append(header)
    }

    private func makeHeader(
        _ key: VsockConnectionKey, _ operation: VsockPacketHeader.Operation, flags: UInt32 = 0,
        length: UInt32 = 0, credit: inout VsockCredit
    ) -> VsockPacketHeader {
        let advertised = credit.advertise()
        return VsockPacketHeader(
            sourceCID: VsockPacketHeader.CID.host, destinationCID: guestCID,
            sourcePort: key.hostPort, destinationPort: key.guestPort, length: length,
            type: .stream, operation: operation, flags: flags,
            bufferAllocation: advertised.bufferAllocation, forwardCount: advertised.forwardCount)
    }
}
