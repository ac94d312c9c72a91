import KilnBytes
import KilnMemory

/// One step of a hostile guest against virtio-net's two queues.
public enum NetFuzzOperation: FuzzOperation, Equatable, Sendable {
    /// A transmit chain with a header of `header`'s kind at its first
    /// buffer, offered and notified.
    case transmit(header: UInt8, buffers: [FuzzBuffer])
    /// A receive chain offered, not notified.
    case receiveBuffers([FuzzBuffer])
    /// A frame from the host (a readable TAP), then receive service.
    case hostFrame(length: UInt16)
    /// The guest's receive notification.
    case receiveNotify
    /// An indirect table's contents at a data address (§2.7.5.3).
    case table(address: UInt16, buffers: [FuzzBuffer])
    /// Two bytes written over a queue's descriptor table or available ring.
    case corrupt(queue: UInt8, offset: UInt16, value: UInt16)

    /// Header kinds: plain, NEEDS_CSUM, GSO TCPv4, or left as memory holds.
    public enum Header {
        public static let plain: UInt8 = 0
        public static let needsChecksum: UInt8 = 1
        public static let gso: UInt8 = 2
        public static let untouched: UInt8 = 3
    }

    public static func decode(_ cursor: inout FuzzCursor) -> NetFuzzOperation {
        switch cursor.byte() % 6 {
        case 0: return .transmit(header: cursor.byte() % 4, buffers: FuzzBuffer.decodeList(&cursor))
        case 1: return .receiveBuffers(FuzzBuffer.decodeList(&cursor))
        case 2: return .hostFrame(length: cursor.integer())
        case 3: return .receiveNotify
        case 4: return .table(address: cursor.integer(), buffers: FuzzBuffer.decodeList(&cursor))
        default: return .corrupt(queue: cursor.byte(), offset: cursor.integer(), value: cursor.integer())
        }
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        switch self {
        case .transmit(let header, let buffers): out = [0, header]; FuzzBuffer.encodeList(buffers, into: &out)
        case .receiveBuffers(let buffers): out = [1]; FuzzBuffer.encodeList(buffers, into: &out)
        case .hostFrame(let length): out = [2]; out.appendLittleEndian(length)
        case .receiveNotify: out = [3]
        case .table(let address, let buffers):
            out = [4]; out.appendLittleEndian(address); FuzzBuffer.encodeList(buffers, into: &out)
        case .corrupt(let queue, let offset, let value):
            out = [5, queue]; out.appendLittleEndian(offset); out.appendLittleEndian(value)
        }
        return out
    }
}

/// virtio-net over a recording loopback, its two queues built straight on
/// small guest memory (the transport is `MMIOFuzzHarness`'s business),
/// fed by a decoded program. Checks after each service what the device
/// promises about frames and counters.
public final class NetFuzzHarness: FuzzHarness {
    public let memory: HeapGuestMemory
    let backend = RecordingNetBackend()
    let device: NetDevice
    let queuePair: FuzzQueuePair
    /// Receive chains as offered, by head, while the harness knows them to
    /// be plain writable buffers nobody corrupted since.
    var plainReceiveChains: [UInt16: [FuzzBuffer]] = [:]
    /// Frames delivered and frames sent, for the seeded tests.
    public private(set) var delivered = 0
    public private(set) var sent = 0

    /// Byte 0 configures the queues (`FuzzQueuePair`): receive data never
    /// lands on a ring, so the used rings stay readable.
    public init(control: UInt8) {
        memory = try! HeapGuestMemory(ranges: VirtioFuzzing.memoryRanges)
        device = NetDevice(memory: memory, backend: backend, mac: [0x02, 0, 0, 0, 0, 2])
        queuePair = FuzzQueuePair(control: control, memory: memory)
    }

    static func address(_ value: UInt16) -> UInt64 { FuzzQueuePair.address(value) }
    var rings: [FuzzRing] { queuePair.rings }
    var queues: [Virtqueue] { queuePair.queues }

    /// Runs one step; returns false once the device failed its queue (the
    /// transport would then be in DEVICE_NEEDS_RESET and serve no more).
    public func run(_ operation: NetFuzzOperation) -> Bool {
        switch operation {
        case .transmit(let kind, let buffers):
            if let first = buffers.first, kind != NetFuzzOperation.Header.untouched {
                let header = NetHeader(
                    flags: kind == NetFuzzOperation.Header.needsChecksum ? NetHeader.Flag.needsChecksum : 0,
                    gsoType: kind == NetFuzzOperation.Header.gso ? 1 : NetHeader.gsoNone)
                _ = try? memory.write(header.bytes, at: Self.address(first.address))
            }
            rings[NetDevice.Queue.transmit].offer(buffers, memory: memory, address: Self.address)
            return serve(NetDevice.Queue.transmit)
        case .receiveBuffers(let buffers):
            guard let head = rings[NetDevice.Queue.receive].offer(buffers, memory: memory, address: Self.address) else {
                return true
            }
            // Overlapping buffers are the guest's own business: the later
            // bytes win, so only disjoint ones can be checked byte for byte.
            let ranges = buffers.map { Int($0.address)..<Int($0.address) + Int($0.length) }.sorted {
                $0.lowerBound < $1.lowerBound
            }
            let plain =
                buffers.count <= Int(rings[0].size)
                && zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound <= $1.lowerBound }
                && buffers.allSatisfy {
                    $0.flags & (FuzzBuffer.indirect | FuzzBuffer.end | FuzzBuffer.loop) == 0
                        && $0.flags & FuzzBuffer.writable != 0
                }
            plainReceiveChains[head] = plain ? buffers : nil
            return true
        case .hostFrame(let length):
            backend.inject(RecordingNetBackend.frame(length: Int(length)))
            return serve(NetDevice.Queue.receive)
        case .receiveNotify:
            return serve(NetDevice.Queue.receive)
        case .table(let address, let buffers):
            FuzzRing.writeDescriptors(
                buffers, table: Self.address(address), entries: 4, first: 0, memory: memory,
                address: Self.address)
            return true
        case .corrupt(let queue, let offset, let value):
            queuePair.corrupt(queue: queue, offset: offset, value: value, memory: memory)
            plainReceiveChains = [:]
            return true
        }
    }

    /// One `process` call as the transport makes it, then the checks.
    func serve(_ index: Int) -> Bool {
        let receive = queues[NetDevice.Queue.receive], transmit = queues[NetDevice.Queue.transmit]
        let receivedBefore = receive.nextUsed, transmittedBefore = transmit.nextUsed
        let sentBefore = backend.sent.count, consumedBefore = backend.consumed.count
        let droppedTransmits = device.droppedTransmits, droppedReceives = device.droppedReceives
        do {
            try device.process(queue: index, queues: queues)
        } catch {
            // A malformed queue: DEVICE_NEEDS_RESET. Counts may stop mid-chain.
            return false
        }
        // Nothing left behind: the driver will not notify again for chains
        // it already offered (§2.7.10), and the host will not signal again
        // for a frame it already handed over.
        if index == NetDevice.Queue.transmit {
            precondition((try? transmit.hasAvailable()) == false, "transmit chains left after a notification")
        }
        precondition(
            backend.peekFrame() == nil || (try? receive.hasAvailable()) == false,
            "a frame waits beside a free receive buffer")
        // Transmit: every used chain was sent or counted dropped, and the
        // device wrote nothing into it (§5.1.6.2).
        let transmitted = Int(transmit.nextUsed &- transmittedBefore)
        let newlySent = backend.sent.count - sentBefore
        precondition(
            newlySent + device.droppedTransmits - droppedTransmits == transmitted,
            "\(transmitted) transmit chains, \(newlySent) sent, \(device.droppedTransmits - droppedTransmits) dropped")
        for slot in 0..<transmitted {
            let element = rings[1].usedElement(transmittedBefore &+ UInt16(slot), memory: memory)
            precondition(element?.length == 0, "a transmit chain came back with data")
        }
        sent += newlySent

        // Receive: one frame taken per chain; each chain holds header and
        // frame whole, or nothing and a counted drop (§5.1.6.4).
        let received = Int(receive.nextUsed &- receivedBefore)
        precondition(backend.consumed.count - consumedBefore == received, "frames taken and receive chains differ")
        var drops = 0
        var last: (head: UInt16, frame: [UInt8], length: Int)?
        for slot in 0..<received {
            guard let element = rings[0].usedElement(receivedBefore &+ UInt16(slot), memory: memory) else {
                preconditionFailure("used ring unreadable")
            }
            let frame = backend.consumed[consumedBefore + slot]
            precondition(element.id < UInt32(rings[0].size), "used id \(element.id) out of range")
            if element.length == 0 {
                drops += 1
            } else {
                precondition(
                    Int(element.length) == NetHeader.size + frame.count,
                    "a \(frame.count)-byte frame delivered as \(element.length) bytes")
                last = (UInt16(element.id), frame, Int(element.length))
                delivered += 1
            }
        }
        precondition(device.droppedReceives - droppedReceives == drops, "receive drops miscounted")
        if let last, let buffers = plainReceiveChains[last.head] {
            checkDelivered(frame: last.frame, length: last.length, buffers: buffers)
        }
        return true
    }

    /// The last frame delivered in a service is in its chain's buffers as
    /// written, header first, and fits them.
    func checkDelivered(frame: [UInt8], length: Int, buffers: [FuzzBuffer]) {
        let capacity = buffers.reduce(0) { $0 + Int($1.length) }
        precondition(length <= capacity, "\(length) bytes delivered into \(capacity) bytes of buffers")
        var bytes: [UInt8] = []
        for buffer in buffers where bytes.count < length {
            let count = min(Int(buffer.length), length - bytes.count)
            guard let part = try? memory.readBytes(at: Self.address(buffer.address), count: count) else {
                preconditionFailure("a delivered buffer is outside guest memory")
            }
            bytes += part
        }
        precondition(bytes == NetHeader(bufferCount: 1).bytes + frame, "the delivered frame is not what the host sent")
    }
}

extension VirtioFuzzing {
    /// Byte 0 configures the queues (`NetFuzzHarness.init(control:)`); the
    /// rest is a program of `NetFuzzOperation`s, at most 256 steps. Returns
    /// frames delivered plus frames sent.
    @discardableResult
    public static func netFrames(_ bytes: UnsafeRawBufferPointer) -> Int {
        let harness = FuzzProgram.run(bytes, on: NetFuzzHarness.self, limit: 256)
        return harness.delivered + harness.sent
    }
}
