import Testing

@testable import KilnVirtio

/// Credit arithmetic both ways (virtio 1.2 §5.10.6.3), wrapping included.
@Suite struct VsockCreditTests {
    @Test func theGuestsCreditIsItsBufferLessWhatIsInFlight() {
        var credit = VsockCredit(bufferAllocation: 1000)
        do { let accepted = credit.updatePeer(bufferAllocation: 4096, forwardCount: 0); #expect(accepted) }
        credit.sent(1000)
        #expect(credit.peerCredit == 3096)
        do { let accepted = credit.updatePeer(bufferAllocation: 4096, forwardCount: 600); #expect(accepted) }
        #expect(credit.peerCredit == 3696)
        // A guest that shrinks its buffer below what is in flight has no room, not 2^32 - 400.
        do { let accepted = credit.updatePeer(bufferAllocation: 0, forwardCount: 600); #expect(accepted) }
        #expect(credit.peerCredit == 0)
    }

    @Test func aForwardCountBehindTheLastOrAheadOfWhatWasSentIsRefused() {
        var credit = VsockCredit(bufferAllocation: 1000)
        do { let accepted = credit.updatePeer(bufferAllocation: 4096, forwardCount: 0); #expect(accepted) }
        credit.sent(500)
        do { let accepted = credit.updatePeer(bufferAllocation: 4096, forwardCount: 200); #expect(accepted) }
        do {
            let accepted = credit.updatePeer(bufferAllocation: 4096, forwardCount: 100); #expect(!accepted, "backwards")
        }
        do {
            let accepted = credit.updatePeer(bufferAllocation: 4096, forwardCount: 501);
            #expect(!accepted, "ahead of tx_cnt")
        }
        do {
            let accepted = credit.updatePeer(bufferAllocation: UInt32.max, forwardCount: UInt32.max);
            #expect(!accepted, "wraps to a huge credit")
        }
        #expect(credit.peerForwardCount == 200 && credit.peerCredit == 3796, "a refused update changes nothing")
    }

    @Test func countersWrapAt32Bits() {
        let base: UInt32 = 0xFFFF_FF00
        var credit = VsockCredit(bufferAllocation: 0x1000, counterBase: base)
        do { let accepted = credit.updatePeer(bufferAllocation: 0x1000, forwardCount: base); #expect(accepted) }
        credit.sent(0x300)
        #expect(credit.sentCount == 0x200)
        #expect(credit.inFlightToGuest == 0x300)
        do {
            let accepted = credit.updatePeer(bufferAllocation: 0x1000, forwardCount: 0x100);
            #expect(accepted, "a forward count past the wrap")
        }
        #expect(credit.peerCredit == 0x1000 - 0x100)
        do { let accepted = credit.receive(0x400); #expect(accepted) }
        credit.forwarded(0x380)
        #expect(credit.buffered == 0x80 && credit.forwardCount == 0x280)
        #expect(credit.freeSpace == 0x1000 - 0x80)
    }

    @Test func theGuestMaySendNoMoreThanTheDevicesFreeSpace() {
        var credit = VsockCredit(bufferAllocation: 100)
        do { let accepted = credit.receive(60); #expect(accepted) }
        do { let accepted = credit.receive(41); #expect(!accepted) }
        #expect(credit.buffered == 60, "a refused packet is not half taken")
        do { let accepted = credit.receive(40); #expect(accepted) }
        #expect(credit.freeSpace == 0)
        credit.forwarded(100)
        #expect(credit.freeSpace == 100)
    }

    @Test func anUpdateIsDueOnceTheGuestsViewFallsBelowHalfAndSpaceWasFreed() {
        var credit = VsockCredit(bufferAllocation: 100)
        do { let accepted = credit.receive(70); #expect(accepted) }
        #expect(!credit.needsUpdate, "nothing freed yet")
        credit.forwarded(70)
        #expect(credit.needsUpdate)
        _ = credit.advertise()
        #expect(!credit.needsUpdate)
        do { let accepted = credit.receive(20); #expect(accepted) }
        credit.forwarded(20)
        #expect(!credit.needsUpdate, "the guest still sees 80 of 100 free")
    }
}

@Suite struct VsockHostHandshakeTests {
    func feed(_ text: String) -> VsockHostHandshake.Outcome? {
        var handshake = VsockHostHandshake()
        for byte in text.utf8 {
            if let outcome = handshake.feed(byte) { return outcome }
        }
        return nil
    }

    @Test func firecrackersConnectLine() {
        #expect(feed("CONNECT 52\n") == .port(52))
        #expect(feed("connect 4294967295\n") == .port(4_294_967_295))
        #expect(feed("CONNECT  7\r\n") == .port(7))
        #expect(feed("CONNECT 52") == nil, "waits for the newline")
    }

    @Test func badLinesAreRefused() {
        for line in [
            "CONNECT\n", "CONNECT 4294967296\n", "CONNECT -1\n", "CONNECT 5 6\n", "OPEN 5\n", "CONNECT 0x10\n", "\n",
        ] {
            guard case .invalid? = feed(line) else {
                Issue.record("accepted \(line.debugDescription)")
                continue
            }
        }
        guard case .invalid? = feed(String(repeating: "C", count: 40)) else {
            Issue.record("no bound on a line without a newline")
            return
        }
    }
}

/// The connection state machine with hostile packet sequences.
@Suite struct VsockConnectionTableTests {
    static let guestCID: UInt64 = 3

    final class Counts {
        var values: [VsockCounter: UInt64] = [:]
        func record(_ counter: VsockCounter, _ value: UInt64) { values[counter, default: 0] += value }
        subscript(_ counter: VsockCounter) -> UInt64 { values[counter] ?? 0 }
    }

    let counts = Counts()
    let table: VsockConnectionTable

    init() {
        var limits = VsockLimits()
        limits.maxConnections = 4
        limits.bufferAllocation = 1000
        limits.maxQueuedResets = 8
        let counts = counts
        table = VsockConnectionTable(guestCID: Self.guestCID, limits: limits) { counts.record($0, $1) }
    }

    static func packet(
        _ operation: VsockPacketHeader.Operation, guestPort: UInt32 = 1024, hostPort: UInt32 = 52,
        length: UInt32 = 0, flags: UInt32 = 0, bufferAllocation: UInt32 = 4096,
        forwardCount: UInt32 = 0
    ) -> VsockPacketHeader {
        VsockPacketHeader(
            sourceCID: guestCID, destinationCID: 2, sourcePort: guestPort, destinationPort: hostPort,
            length: length, type: .stream, operation: operation, flags: flags,
            bufferAllocation: bufferAllocation, forwardCount: forwardCount)
    }

    func send(_ header: VsockPacketHeader, _ payload: [UInt8] = [], now: UInt64 = 0) -> [VsockHostAction] {
        var header = header
        header.length = UInt32(payload.count)
        return table.guestPacket(header, payload: payload, now: now)
    }

    /// Every control packet due, in order.
    func drainControl() -> [VsockPacketHeader] {
        var out: [VsockPacketHeader] = []
        while case .control(let header)? = table.nextPacketForGuest(maxPayload: 4096) { out.append(header) }
        return out
    }

    func operations(_ headers: [VsockPacketHeader]) -> [VsockPacketHeader.Operation?] {
        headers.map { VsockPacketHeader.Operation(rawValue: $0.operation) }
    }

    /// A guest-initiated stream the host accepted.
    func open(guestPort: UInt32 = 1024, hostPort: UInt32 = 52) -> VsockConnectionKey {
        let key = VsockConnectionKey(guestPort: guestPort, hostPort: hostPort)
        #expect(send(Self.packet(.request, guestPort: guestPort, hostPort: hostPort)) == [.connect(key)])
        #expect(table.connectFinished(key, connected: true) == [])
        let response = drainControl()
        #expect(operations(response) == [.response])
        #expect(response.first?.sourceCID == 2 && response.first?.destinationCID == Self.guestCID)
        #expect(response.first?.destinationPort == guestPort && response.first?.sourcePort == hostPort)
        #expect(response.first?.bufferAllocation == 1000)
        return key
    }

    @Test func aGuestRequestConnectsAndIsAnswered() {
        let key = open()
        #expect(table.isEstablished(key))
        #expect(counts[.connectionsAdded] == 1)
    }

    @Test func noHostListenerMeansReset() {
        let key = VsockConnectionKey(guestPort: 1024, hostPort: 99)
        #expect(send(Self.packet(.request, hostPort: 99)) == [.connect(key)])
        #expect(table.connectFinished(key, connected: false) == [])
        let reply = drainControl()
        #expect(operations(reply) == [.reset])
        #expect(reply.first?.destinationPort == 1024 && reply.first?.sourcePort == 99)
        #expect(table.count == 0)
    }

    @Test func requestsPastTheCapAreResetWithoutConnecting() {
        for port in UInt32(1)...4 { _ = open(guestPort: port) }
        #expect(send(Self.packet(.request, guestPort: 5)) == [])
        #expect(operations(drainControl()) == [.reset])
        #expect(table.count == 4)
    }

    @Test func packetsForNoStreamAreResetButAResetIsNeverAnswered() {
        #expect(send(Self.packet(.readWrite), [1, 2, 3]) == [])
        #expect(send(Self.packet(.creditRequest)) == [])
        #expect(send(Self.packet(.reset)) == [])
        #expect(operations(drainControl()) == [.reset, .reset])
    }

    @Test func dataBeyondTheDevicesCreditKillsTheStream() {
        let key = open()
        #expect(send(Self.packet(.readWrite), [UInt8](repeating: 1, count: 600)) == [.flush(key)])
        #expect(send(Self.packet(.readWrite), [UInt8](repeating: 2, count: 401)) == [.close(key)])
        #expect(operations(drainControl()) == [.reset])
        #expect(counts[.malformedPackets] == 1 && counts[.connectionsKilled] == 1)
        #expect(!table.contains(key))
    }

    @Test func aForwardCountAheadOfWhatWasSentKillsTheStream() {
        let key = open()
        #expect(send(Self.packet(.creditUpdate, forwardCount: 1)) == [.close(key)])
        #expect(operations(drainControl()) == [.reset])
        #expect(counts[.malformedPackets] == 1)
    }

    @Test func aSecondRequestOrAnUnaskedResponseKillsTheStream() {
        let first = open()
        #expect(send(Self.packet(.request)) == [.close(first)])
        #expect(operations(drainControl()) == [.reset])
        let second = open(guestPort: 2000)
        #expect(send(Self.packet(.response, guestPort: 2000)) == [.close(second)])
        #expect(counts[.malformedPackets] == 2)
    }

    @Test func hostBytesGoOutOnlyWithinTheGuestsCredit() {
        let key = open()
        #expect(table.nextPacketForGuest(maxPayload: 4096) == nil, "nothing readable yet")
        #expect(table.hostReady(key, readable: true, writable: false) == [])
        #expect(table.nextPacketForGuest(maxPayload: 8192) == .data(key, maximum: 4096), "bounded by buf_alloc 4096")
        let (header, _) = table.hostRead(key, .transferred(4096))
        #expect(header?.length == 4096 && header?.operation == VsockPacketHeader.Operation.readWrite.rawValue)
        #expect(table.nextPacketForGuest(maxPayload: 8192) == nil, "no credit left")
        #expect(table.interest(key).read == false, "not even watched without credit")
        #expect(send(Self.packet(.creditUpdate, forwardCount: 1000)) == [])
        #expect(table.nextPacketForGuest(maxPayload: 8192) == .data(key, maximum: 1000))
    }

    @Test func guestBytesAreForwardedAndACreditUpdateFollows() {
        let key = open()
        #expect(send(Self.packet(.readWrite), [UInt8](repeating: 7, count: 700)) == [.flush(key)])
        #expect(table.withBytesToHost(key) { $0.count } == 700)
        #expect(table.hostWrote(key, .transferred(300)) == [.flush(key)])
        #expect(table.hostWrote(key, .wouldBlock) == [])
        #expect(table.interest(key).write, "watched for room")
        #expect(table.hostWrote(key, .transferred(400)) == [])
        let update = drainControl()
        #expect(operations(update) == [.creditUpdate])
        #expect(update.first?.forwardCount == 700)
        #expect(send(Self.packet(.creditRequest)) == [])
        #expect(operations(drainControl()) == [.creditUpdate])
    }

    @Test func aHostPeerThatStopsReadingHoldsOnlyItsOwnCredit() {
        let stalled = open(guestPort: 1), other = open(guestPort: 2)
        #expect(send(Self.packet(.readWrite, guestPort: 1), [UInt8](repeating: 1, count: 1000)) == [.flush(stalled)])
        #expect(table.hostWrote(stalled, .wouldBlock) == [])
        #expect(send(Self.packet(.readWrite, guestPort: 1), [1]) == [.close(stalled)], "past the credit")
        #expect(send(Self.packet(.readWrite, guestPort: 2), [UInt8](repeating: 2, count: 1000)) == [.flush(other)])
        #expect(table.bufferedToHost(other) == 1000)
    }

    @Test func hostInitiatedStreamsWaitForTheGuestsAnswer() throws {
        let key = try #require(table.hostConnectRequested(port: 52, now: 0))
        #expect(key.hostPort == 1 << 30 && key.guestPort == 52)
        let request = drainControl()
        #expect(operations(request) == [.request])
        #expect(request.first?.sourcePort == 1 << 30 && request.first?.destinationPort == 52)
        #expect(table.hostReady(key, readable: true, writable: true) == [])
        #expect(table.nextPacketForGuest(maxPayload: 4096) == nil, "no data before the guest accepts")
        #expect(send(Self.packet(.response, guestPort: 52, hostPort: 1 << 30)) == [.flush(key)])
        #expect(table.withBytesToHost(key) { Array($0) } == Array("OK 1073741824\n".utf8))
        #expect(table.hostWrote(key, .transferred(5)) == [.flush(key)])
        #expect(table.hostWrote(key, .transferred(9)) == [])
        #expect(table.credit(key)?.forwardCount == 0, "the OK line is not guest data")
    }

    @Test func anUnansweredRequestIsResetAtItsDeadline() throws {
        let key = try #require(table.hostConnectRequested(port: 52, now: 100))
        _ = drainControl()
        #expect(table.nextDeadline == 100 + table.limits.responseTimeoutNanoseconds)
        #expect(table.expire(now: 100 + table.limits.responseTimeoutNanoseconds - 1) == [])
        #expect(table.expire(now: 100 + table.limits.responseTimeoutNanoseconds) == [.close(key)])
        #expect(operations(drainControl()) == [.reset])
        #expect(counts[.connectionsKilled] == 1)
    }

    @Test func aGuestThatRefusesAHostConnectionClosesIt() throws {
        let key = try #require(table.hostConnectRequested(port: 52, now: 0))
        _ = drainControl()
        #expect(send(Self.packet(.reset, guestPort: 52, hostPort: key.hostPort)) == [.close(key)])
        #expect(drainControl().isEmpty, "an RST is not answered")
    }

    @Test func halfCloseEachWayThenReset() {
        let key = open()
        let send = VsockPacketHeader.shutdownSend
        // The guest sends no more: the host peer reads end of file.
        #expect(self.send(Self.packet(.shutdown, flags: send)) == [.shutdownWrite(key)])
        #expect(table.isEstablished(key), "the other direction still flows")
        #expect(table.hostReady(key, readable: true, writable: false) == [])
        #expect(table.nextPacketForGuest(maxPayload: 4096) == .data(key, maximum: 4096))
        #expect(table.hostRead(key, .transferred(10)).header?.length == 10)
        // The host's stream ends: SHUTDOWN(SEND) then, both ways done, RST.
        #expect(table.nextPacketForGuest(maxPayload: 4096) == .data(key, maximum: 4086))
        #expect(table.hostRead(key, .endOfStream).actions == [.close(key)])
        let last = drainControl()
        #expect(operations(last) == [.reset])
        #expect(!table.contains(key))
    }

    @Test func aGuestCloseDrainsBufferedBytesToTheHostThenCloses() {
        let key = open()
        #expect(send(Self.packet(.readWrite), [1, 2, 3]) == [.flush(key)])
        #expect(table.hostWrote(key, .wouldBlock) == [])
        let both = VsockPacketHeader.shutdownSend | VsockPacketHeader.shutdownReceive
        #expect(send(Self.packet(.shutdown, flags: both)) == [.flush(key)])
        #expect(operations(drainControl()) == [.reset], "RST answers the full shutdown at once")
        #expect(send(Self.packet(.readWrite), [4]) == [], "the stream is the guest's no more")
        #expect(table.hostWrote(key, .transferred(3)) == [.close(key)])
        #expect(table.count == 0)
    }

    @Test func aDrainThatStallsEndsAtItsDeadline() {
        let key = open()
        #expect(send(Self.packet(.readWrite), [1, 2, 3], now: 50) == [.flush(key)])
        _ = table.hostWrote(key, .wouldBlock)
        #expect(send(Self.packet(.reset), now: 60) == [.close(key)], "the guest's RST discards what waits")
        let second = open(guestPort: 9)
        #expect(send(Self.packet(.readWrite, guestPort: 9), [1], now: 70) == [.flush(second)])
        _ = table.hostWrote(second, .wouldBlock)
        let both = VsockPacketHeader.shutdownSend | VsockPacketHeader.shutdownReceive
        #expect(send(Self.packet(.shutdown, guestPort: 9, flags: both), now: 80) == [.flush(second)])
        #expect(table.expire(now: 80 + table.limits.drainTimeoutNanoseconds) == [.close(second)])
    }

    @Test func aFailedHostWriteOrReadResetsTheStream() {
        let writer = open(guestPort: 1), reader = open(guestPort: 2)
        _ = send(Self.packet(.readWrite, guestPort: 1), [1])
        #expect(table.hostWrote(writer, .failed) == [.close(writer)])
        #expect(operations(drainControl()) == [.reset])
        _ = table.hostReady(reader, readable: true, writable: false)
        #expect(table.nextPacketForGuest(maxPayload: 100) == .data(reader, maximum: 100))
        #expect(table.hostRead(reader, .failed).actions == [.close(reader)])
        #expect(operations(drainControl()) == [.reset])
        #expect(counts[.txWriteFailures] == 1 && counts[.rxReadFailures] == 1)
    }

    @Test func waitingResetsAreBoundedAndTheExcessCounted() {
        for port in UInt32(0)..<20 { _ = send(Self.packet(.readWrite, guestPort: port), [1]) }
        #expect(table.queuedResets == 8)
        #expect(counts[.resetsDropped] == 12)
    }

    @Test func malformedPacketsAreCountedAndAnsweredFromWhereTheyWent() {
        var elsewhere = Self.packet(.request)
        elsewhere.destinationCID = 7
        #expect(table.malformedGuestPacket(elsewhere) == [])
        let reply = drainControl()
        #expect(reply.first?.sourceCID == 7 && operations(reply) == [.reset])
        var spoofed = Self.packet(.request)
        spoofed.sourceCID = 9
        #expect(table.malformedGuestPacket(spoofed) == [])
        #expect(drainControl().isEmpty, "never answered: the source is not this guest")
        let key = open()
        #expect(table.malformedGuestPacket(Self.packet(.readWrite)) == [.close(key)], "its stream goes with it")
        #expect(counts[.malformedPackets] == 3)
    }

    @Test func busyStreamsTakeTurns() {
        let first = open(guestPort: 1), second = open(guestPort: 2)
        _ = table.hostReady(first, readable: true, writable: false)
        _ = table.hostReady(second, readable: true, writable: false)
        var served: [VsockConnectionKey] = []
        for _ in 0..<4 {
            guard case .data(let key, _)? = table.nextPacketForGuest(maxPayload: 10) else { break }
            _ = table.hostRead(key, .transferred(10))
            served.append(key)
        }
        #expect(served == [first, second, first, second])
    }

    @Test func aResetDeviceForgetsEveryStream() throws {
        let first = open(guestPort: 1)
        let second = try #require(table.hostConnectRequested(port: 7, now: 0))
        #expect(Set(table.removeAll()) == [.close(first), .close(second)])
        #expect(table.count == 0 && table.nextPacketForGuest(maxPayload: 100) == nil)
    }
}
