import KilnMemory

/// virtio-vsock (virtio 1.2 §5.10): stream sockets between the guest and
/// host peers behind a `VsockBackend`, with the connection state machine in
/// `VsockConnectionTable`. Queue 0 receive (device → guest), 1 transmit,
/// 2 event (the device never sends an event: there is no migration).
///
/// Nothing here blocks or makes a system call: the backend's streams are
/// non-blocking, and the VMM calls `hostReady`, `hostConnectRequested` and
/// `expire` (under the same lock as the transport) when the host side moves.
public final class VsockDevice: VirtioDevice {
    public enum Queue {
        public static let receive = 0
        public static let transmit = 1
        public static let event = 2
    }
    /// §5.10.3: stream sockets (bit 0). SEQPACKET (bit 1) is not offered.
    public enum Feature {
        public static let stream: UInt64 = 1 << 0
    }
    public static let queueSize: UInt16 = 256
    /// The most payload one receive packet carries, whatever buffer the
    /// driver posts (Linux posts 4 KiB ones).
    public static let maxReceivePayload = 64 << 10

    let memory: GuestMemory
    public let guestCID: UInt64
    public let backend: VsockBackend
    public let table: VsockConnectionTable
    let rules: VsockPacketRules
    let counters: VsockCounterSink?
    /// Monotonic nanoseconds, injected for tests.
    let clock: () -> UInt64
    private var scratch = [UInt8](repeating: 0, count: VsockDevice.maxReceivePayload)

    public init(
        memory: GuestMemory, guestCID: UInt64, backend: VsockBackend, limits: VsockLimits = VsockLimits(),
        counters: VsockCounterSink? = nil, clock: @escaping () -> UInt64
    ) {
        self.memory = memory
        self.guestCID = guestCID
        self.backend = backend
        self.counters = counters
        self.clock = clock
        rules = VsockPacketRules(guestCID: guestCID)
        table = VsockConnectionTable(guestCID: guestCID, limits: limits) { [weak counters] counter, value in
            counters?.add(counter, value)
        }
    }

    public var deviceType: VirtioDeviceType { .socket }
    public var deviceFeatures: UInt64 { Feature.stream }
    public var queueMaxSizes: [UInt16] { [Self.queueSize, Self.queueSize, Self.queueSize] }
    /// §5.10.4: le64 guest_cid.
    public var configSpace: [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: guestCID >> (8 * UInt64($0))) } }
    public func activate(features: UInt64) {}

    /// §2.1.2: the driver forgot every stream; so does the device. A reset
    /// is a register write on a vCPU thread: the backend only marks the
    /// streams for release there (see `VsockBackend.close`).
    public func reset() { perform(table.removeAll()) }

    /// A transmit notification takes the guest's packets; every call then
    /// fills receive buffers with what is due (answers to those packets,
    /// host data, RSTs). The event queue's buffers stay with the device.
    public func process(queue index: Int, queues: [Virtqueue?]) throws {
        if index == Queue.transmit, let transmit = queues[Queue.transmit] { try transmitAll(transmit) }
        if let receive = queues[Queue.receive] { try receiveAll(receive) }
    }

    // MARK: Host events (the VMM, under the transport's lock)

    /// A host peer sent `CONNECT <port>`: the key for its stream, or nil at
    /// the connection cap.
    public func hostConnectRequested(port: UInt32) -> VsockConnectionKey? {
        table.hostConnectRequested(port: port, now: clock())
    }

    public func hostReady(_ key: VsockConnectionKey, readable: Bool, writable: Bool) {
        table.advanceClock(to: clock())
        perform(table.hostReady(key, readable: readable, writable: writable))
    }

    /// Ends what is past its deadline (the VMM's timer).
    public func expire() { perform(table.expire(now: clock())) }

    // MARK: Queues

    private func transmitAll(_ queue: Virtqueue) throws {
        while let chain = try queue.pop() {
            var reader = ChainReader(memory: memory, chain: chain)
            // §5.10.6: header then payload, all device-readable. A chain too
            // short for a header is counted and dropped: it names no stream
            // to reset.
            if let headerBytes = try reader.read(VsockPacketHeader.size) {
                let payloadBytes = reader.remaining
                do {
                    let header = try rules.validate(headerBytes, payloadBytes: payloadBytes)
                    // validate bounded the length by maxPayload (64 KiB).
                    let payload = try reader.read(Int(header.length)) ?? []
                    counters?.add(.txPackets, 1)
                    counters?.add(.txBytes, UInt64(payload.count))
                    perform(table.guestPacket(header, payload: payload, now: clock()))
                } catch is VsockPacketError {
                    if let header = VsockPacketHeader(bytes: headerBytes) {
                        perform(table.malformedGuestPacket(header))
                    }
                }
            } else {
                counters?.add(.malformedPackets, 1)
            }
            try queue.pushUsed(chain, written: 0)
        }
    }

    private func receiveAll(_ queue: Virtqueue) throws {
        // A host read here may end a stream, whose drain deadline counts
        // from the table's clock: no timer moves it while the device idles.
        table.advanceClock(to: clock())
        while let chain = try queue.pop() {
            var writer = ChainWriter(memory: memory, chain: chain)
            // A buffer without room for a header can carry nothing (Linux
            // never posts one): given back empty, as the driver expects of
            // a used buffer it cannot parse.
            guard writer.remaining >= UInt64(VsockPacketHeader.size) else {
                counters?.add(.malformedPackets, 1)
                try queue.pushUsed(chain, written: 0)
                continue
            }
            let room = Int(min(writer.remaining - UInt64(VsockPacketHeader.size), UInt64(Self.maxReceivePayload)))
            guard let packet = table.nextPacketForGuest(maxPayload: room) else {
                queue.undoPop()
                return
            }
            switch packet {
            case .control(let header):
                try writer.write(header.bytes)
            case .data(let key, let maximum):
                let result = scratch.withUnsafeMutableBytes { raw in
                    backend.read(key, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<maximum]))
                }
                let (header, actions) = table.hostRead(key, result)
                perform(actions)
                guard let header else {
                    // Nothing read (would block, end of stream, failure):
                    // the buffer goes back for whatever is due next.
                    queue.undoPop()
                    continue
                }
                try writer.write(header.bytes)
                try writer.write(Array(scratch[0..<Int(header.length)]))
                counters?.add(.rxBytes, UInt64(header.length))
            }
            counters?.add(.rxPackets, 1)
            try queue.pushUsed(chain, written: writer.written)
        }
    }

    /// Carries out the table's host actions, feeding each result back,
    /// until none is left. Each step either ends a stream or moves bytes, so
    /// the list runs dry.
    private func perform(_ actions: [VsockHostAction]) {
        var work = actions[...]
        while let action = work.popFirst() {
            switch action {
            case .connect(let key):
                work += table.connectFinished(key, connected: backend.connect(key))
            case .flush(let key):
                guard table.bufferedToHost(key) > 0,
                    let result = table.withBytesToHost(key, { backend.write(key, $0) })
                else { continue }
                work += table.hostWrote(key, result)
            case .shutdownWrite(let key):
                backend.shutdownWrite(key)
            case .close(let key):
                backend.close(key)
            }
        }
    }
}
