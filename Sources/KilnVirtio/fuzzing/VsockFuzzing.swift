import KilnBytes
import KilnMemory

/// One step of a hostile guest (and a misbehaving host side) against
/// virtio-vsock's queues and connection table.
public enum VsockFuzzOperation: FuzzOperation, Equatable, Sendable {
    /// A transmit chain carrying one packet built from these fields, laid
    /// out as `shape` says, offered and notified.
    case transmit(Packet)
    /// A transmit chain of raw buffers over whatever memory holds.
    case rawTransmit([FuzzBuffer])
    /// A receive chain offered, not notified.
    case receiveBuffers([FuzzBuffer])
    case receiveNotify
    /// A host peer's `CONNECT` for one of four guest ports.
    case hostConnect(port: UInt8)
    /// The host stream of the table's `stream`-th connection turns ready,
    /// and from now on behaves as `behaviour` says.
    case hostReady(stream: UInt8, behaviour: UInt8)
    /// Time passes (milliseconds), and deadlines are checked.
    case tick(milliseconds: UInt16)
    /// The driver resets the device (§2.1.2).
    case reset
    /// Two bytes written over a queue's descriptor table or available ring.
    case corrupt(queue: UInt8, offset: UInt16, value: UInt16)

    /// A packet's fields, kept near the values a driver uses so the state
    /// machine is reached, with shape bits that break it.
    public struct Packet: Equatable, Sendable {
        public var operation: UInt8
        public var guestPort: UInt8
        public var hostPort: UInt8
        public var flags: UInt8
        public var length: UInt16
        public var bufferAllocation: UInt32
        public var forwardCount: UInt32
        /// Bit 0 another source CID, 1 another destination CID, 2 SEQPACKET
        /// type, 3 header split over two descriptors, 4 payload length off
        /// by one, 5 a device-writable buffer after the packet.
        public var shape: UInt8

        public init(
            operation: UInt8, guestPort: UInt8 = 0, hostPort: UInt8 = 0, flags: UInt8 = 0, length: UInt16 = 0,
            bufferAllocation: UInt32 = 1 << 16, forwardCount: UInt32 = 0, shape: UInt8 = 0
        ) {
            self.operation = operation
            self.guestPort = guestPort
            self.hostPort = hostPort
            self.flags = flags
            self.length = length
            self.bufferAllocation = bufferAllocation
            self.forwardCount = forwardCount
            self.shape = shape
        }
    }

    public static func decode(_ cursor: inout FuzzCursor) -> VsockFuzzOperation {
        switch cursor.byte() % 9 {
        case 0:
            return .transmit(
                Packet(
                    operation: cursor.byte(), guestPort: cursor.byte(), hostPort: cursor.byte(),
                    flags: cursor.byte(), length: cursor.integer(), bufferAllocation: cursor.integer(),
                    forwardCount: cursor.integer(), shape: cursor.byte()))
        case 1: return .rawTransmit(FuzzBuffer.decodeList(&cursor))
        case 2: return .receiveBuffers(FuzzBuffer.decodeList(&cursor))
        case 3: return .receiveNotify
        case 4: return .hostConnect(port: cursor.byte())
        case 5: return .hostReady(stream: cursor.byte(), behaviour: cursor.byte())
        case 6: return .tick(milliseconds: cursor.integer())
        case 7: return .reset
        default: return .corrupt(queue: cursor.byte(), offset: cursor.integer(), value: cursor.integer())
        }
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        switch self {
        case .transmit(let packet):
            out = [0, packet.operation, packet.guestPort, packet.hostPort, packet.flags]
            out.appendLittleEndian(packet.length)
            out.appendLittleEndian(packet.bufferAllocation)
            out.appendLittleEndian(packet.forwardCount)
            out.append(packet.shape)
        case .rawTransmit(let buffers): out = [1]; FuzzBuffer.encodeList(buffers, into: &out)
        case .receiveBuffers(let buffers): out = [2]; FuzzBuffer.encodeList(buffers, into: &out)
        case .receiveNotify: out = [3]
        case .hostConnect(let port): out = [4, port]
        case .hostReady(let stream, let behaviour): out = [5, stream, behaviour]
        case .tick(let milliseconds): out = [6]; out.appendLittleEndian(milliseconds)
        case .reset: out = [7]
        case .corrupt(let queue, let offset, let value):
            out = [8, queue]; out.appendLittleEndian(offset); out.appendLittleEndian(value)
        }
        return out
    }
}

/// A host side that exists only in memory: streams by key, each behaving
/// as the fuzzed program says, checking that the device uses only the
/// streams it opened and releases each once.
public final class FuzzVsockBackend: VsockBackend {
    /// How a stream answers: bits 0–1 reads (data, end of file, would
    /// block, failure), bits 2–3 writes (all, half, would block, failure).
    public var behaviours: [VsockConnectionKey: UInt8] = [:]
    public private(set) var open: Set<VsockConnectionKey> = []
    public private(set) var bytesWritten = 0
    /// Guest ports whose host listener exists: even host ports.
    func listening(_ port: UInt32) -> Bool { port % 2 == 0 }

    public init() {}

    /// A host-initiated stream the harness accepted.
    func adopt(_ key: VsockConnectionKey) {
        precondition(open.insert(key).inserted, "the table reused the key of an open stream")
    }

    public func connect(_ key: VsockConnectionKey) -> Bool {
        precondition(!open.contains(key), "connect for a stream already open")
        guard listening(key.hostPort) else { return false }
        open.insert(key)
        return true
    }

    public func read(_ key: VsockConnectionKey, into buffer: UnsafeMutableRawBufferPointer) -> VsockHostIO {
        precondition(open.contains(key), "read from a stream not open")
        switch (behaviours[key] ?? 0) & 3 {
        case 0:
            let count = min(buffer.count, 1 + Int(behaviours[key] ?? 0) * 37)
            for index in 0..<count { buffer[index] = UInt8(truncatingIfNeeded: index) }
            return .transferred(count)
        case 1: return .endOfStream
        case 2: return .wouldBlock
        default: return .failed
        }
    }

    public func write(_ key: VsockConnectionKey, _ bytes: UnsafeRawBufferPointer) -> VsockHostIO {
        precondition(open.contains(key), "write to a stream not open")
        precondition(!bytes.isEmpty, "an empty write")
        switch ((behaviours[key] ?? 0) >> 2) & 3 {
        case 0:
            bytesWritten += bytes.count
            return .transferred(bytes.count)
        case 1:
            bytesWritten += (bytes.count + 1) / 2
            return .transferred((bytes.count + 1) / 2)
        case 2: return .wouldBlock
        default: return .failed
        }
    }

    public func shutdownWrite(_ key: VsockConnectionKey) {
        precondition(open.contains(key), "shutdown of a stream not open")
    }

    public func close(_ key: VsockConnectionKey) {
        precondition(open.remove(key) != nil, "close of a stream not open")
        behaviours[key] = nil
    }
}

/// virtio-vsock over `FuzzVsockBackend`, its receive and transmit queues
/// built straight on small guest memory, fed by a decoded program. After
/// each step it checks what the device promises: every table stream has a
/// host stream and no other is open, every used receive buffer holds at
/// least a header (or nothing, when too small for one), the bounds hold,
/// transmit chains are all consumed and never written.
public final class VsockFuzzHarness: FuzzHarness {
    public let memory: HeapGuestMemory
    let backend = FuzzVsockBackend()
    let device: VsockDevice
    let queuePair: FuzzQueuePair
    /// Packets delivered to the guest and packets taken from it.
    public private(set) var delivered = 0
    public private(set) var taken = 0

    static let guestCID: UInt64 = 3
    static let guestPorts: [UInt32] = [1024, 1025, 52, 7]
    static let hostPorts: [UInt32] = [52, 53, 1 << 30, (1 << 30) + 1]
    static let limits: VsockLimits = {
        var limits = VsockLimits()
        limits.maxConnections = 4
        limits.bufferAllocation = 4096
        limits.maxQueuedResets = 8
        return limits
    }()

    /// Byte 0 configures the queues (`FuzzQueuePair`).
    public init(control: UInt8) {
        memory = try! HeapGuestMemory(ranges: VirtioFuzzing.memoryRanges)
        queuePair = FuzzQueuePair(control: control, memory: memory)
        let time = FuzzClock()
        self.time = time
        device = VsockDevice(
            memory: memory, guestCID: Self.guestCID, backend: backend, limits: Self.limits,
            clock: { time.now })
    }

    /// The device's clock, moved only by `tick`.
    final class FuzzClock { var now: UInt64 = 1_000_000_000 }
    let time: FuzzClock

    static func address(_ value: UInt16) -> UInt64 { FuzzQueuePair.address(value) }
    var rings: [FuzzRing] { queuePair.rings }
    var queues: [Virtqueue] { queuePair.queues }

    public func run(_ operation: VsockFuzzOperation) -> Bool {
        switch operation {
        case .transmit(let packet):
            layOut(packet)
            return serve(VsockDevice.Queue.transmit)
        case .rawTransmit(let buffers):
            rings[VsockDevice.Queue.transmit].offer(buffers, memory: memory, address: Self.address)
            return serve(VsockDevice.Queue.transmit)
        case .receiveBuffers(let buffers):
            rings[VsockDevice.Queue.receive].offer(buffers, memory: memory, address: Self.address)
            return true
        case .receiveNotify:
            return serve(VsockDevice.Queue.receive)
        case .hostConnect(let port):
            if let key = device.hostConnectRequested(port: Self.guestPorts[Int(port) % 4]) { backend.adopt(key) }
            return serve(VsockDevice.Queue.receive)
        case .hostReady(let stream, let behaviour):
            let keys = device.table.keys
            guard !keys.isEmpty else { return true }
            let key = keys[Int(stream) % keys.count]
            backend.behaviours[key] = behaviour
            device.hostReady(key, readable: behaviour & 0x10 == 0, writable: behaviour & 0x20 == 0)
            return serve(VsockDevice.Queue.receive)
        case .tick(let milliseconds):
            time.now += UInt64(milliseconds) * 1_000_000
            device.expire()
            return serve(VsockDevice.Queue.receive)
        case .reset:
            device.reset()
            precondition(backend.open.isEmpty, "a reset left host streams open")
            return true
        case .corrupt(let queue, let offset, let value):
            queuePair.corrupt(queue: queue, offset: offset, value: value, memory: memory)
            return true
        }
    }

    /// Writes the packet at 0x5000 (header) and 0x5100 (payload) and offers it.
    private func layOut(_ packet: VsockFuzzOperation.Packet) {
        let length = UInt32(packet.length % 0x2000)
        let header = VsockPacketHeader(
            sourceCID: packet.shape & 1 != 0 ? 9 : Self.guestCID,
            destinationCID: packet.shape & 2 != 0 ? 4 : VsockPacketHeader.CID.host,
            sourcePort: Self.guestPorts[Int(packet.guestPort) % 4],
            destinationPort: Self.hostPorts[Int(packet.hostPort) % 4],
            length: length, type: packet.shape & 4 != 0 ? .seqpacket : .stream,
            operation: .readWrite, flags: UInt32(packet.flags & 7),
            bufferAllocation: packet.bufferAllocation, forwardCount: packet.forwardCount)
        var bytes = header.bytes
        // Operations 0 and 8 and above are not the spec's: left raw.
        bytes[30] = packet.operation % 9
        _ = try? memory.write(bytes, at: Self.address(0x1000))
        _ = try? memory.write(RecordingNetBackend.frame(length: Int(length)), at: Self.address(0x1100))
        var buffers: [FuzzBuffer] =
            packet.shape & 8 != 0
            ? [FuzzBuffer(address: 0x1000, length: 20, flags: 0), FuzzBuffer(address: 0x1014, length: 24, flags: 0)]
            : [FuzzBuffer(address: 0x1000, length: 44, flags: 0)]
        let payloadLength = UInt16(length) &+ (packet.shape & 0x10 != 0 ? 1 : 0)
        if payloadLength > 0 { buffers.append(FuzzBuffer(address: 0x1100, length: payloadLength, flags: 0)) }
        if packet.shape & 0x20 != 0 {
            buffers.append(FuzzBuffer(address: 0x3800, length: 64, flags: FuzzBuffer.writable))
        }
        rings[VsockDevice.Queue.transmit].offer(buffers, memory: memory, address: Self.address)
    }

    /// One `process` call as the transport makes it, then the checks.
    func serve(_ index: Int) -> Bool {
        let receive = queues[VsockDevice.Queue.receive], transmit = queues[VsockDevice.Queue.transmit]
        let receivedBefore = receive.nextUsed, transmittedBefore = transmit.nextUsed
        do {
            try device.process(queue: index, queues: [receive, transmit, nil])
        } catch {
            return false // a malformed queue: DEVICE_NEEDS_RESET
        }
        let table = device.table
        precondition(Set(table.keys) == backend.open, "table streams \(table.keys) but host streams \(backend.open)")
        precondition(table.count <= Self.limits.maxConnections, "more streams than the cap")
        precondition(table.queuedResets <= Self.limits.maxQueuedResets, "more RSTs waiting than the bound")
        for key in table.keys {
            // The guest's bytes plus at most the "OK <port>\n" line.
            precondition(
                table.bufferedToHost(key) <= Int(Self.limits.bufferAllocation) + VsockHostHandshake.maxLength,
                "\(table.bufferedToHost(key)) bytes buffered for one stream")
        }
        if index == VsockDevice.Queue.transmit {
            precondition((try? transmit.hasAvailable()) == false, "transmit chains left after a notification")
        }
        let transmitted = Int(transmit.nextUsed &- transmittedBefore)
        for slot in 0..<transmitted {
            precondition(
                rings[1].usedElement(transmittedBefore &+ UInt16(slot), memory: memory)?.length == 0,
                "a transmit chain came back written")
        }
        taken += transmitted
        for slot in 0..<Int(receive.nextUsed &- receivedBefore) {
            guard let element = rings[0].usedElement(receivedBefore &+ UInt16(slot), memory: memory) else {
                preconditionFailure("used ring unreadable")
            }
            precondition(element.id < UInt32(rings[0].size), "used id \(element.id) out of range")
            // A buffer too small for a header comes back empty; any other
            // holds one whole packet to this guest from the host.
            guard element.length > 0 else { continue }
            precondition(
                element.length >= UInt32(VsockPacketHeader.size), "a used receive buffer shorter than a header")
            delivered += 1
        }
        return true
    }
}

extension VirtioFuzzing {
    /// Byte 0 configures the queues (`VsockFuzzHarness.init(control:)`); the
    /// rest is a program of `VsockFuzzOperation`s, at most 256 steps. Returns
    /// packets delivered plus transmit chains taken.
    @discardableResult
    public static func vsockDevice(_ bytes: UnsafeRawBufferPointer) -> Int {
        let harness = FuzzProgram.run(bytes, on: VsockFuzzHarness.self, limit: 256)
        return harness.delivered + harness.taken
    }
}
