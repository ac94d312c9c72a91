import KilnBytes
import KilnMemory

/// Reads a fuzz input front to back as a program of operations. Past the
/// end every read is 0, so any input decodes to something.
public struct FuzzCursor {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var isAtEnd: Bool { position >= bytes.count }

    public mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        var value = T.zero
        for shift in 0..<MemoryLayout<T>.size { value |= T(truncatingIfNeeded: byte()) << (8 * shift) }
        return value
    }

    public mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in byte() } }
}

/// One descriptor a fuzzed driver offers: where, how long, and flag bits
/// the harness turns into a well-formed or hostile split descriptor.
public struct FuzzBuffer: Equatable, Sendable {
    /// WRITE (§2.7.5): device-writable.
    public static let writable: UInt8 = 1
    /// INDIRECT on this descriptor, whatever it points at (§2.7.5.3).
    public static let indirect: UInt8 = 2
    /// No NEXT: the chain ends here even if more buffers follow.
    public static let end: UInt8 = 4
    /// NEXT back to the chain's head: a loop the walker must cut.
    public static let loop: UInt8 = 8

    public var address: UInt16
    public var length: UInt16
    public var flags: UInt8

    public init(address: UInt16, length: UInt16, flags: UInt8) {
        self.address = address
        self.length = length
        self.flags = flags
    }

    /// One to four buffers: a count byte, then 5 bytes each.
    static func decodeList(_ cursor: inout FuzzCursor) -> [FuzzBuffer] {
        (0...(cursor.byte() % 4)).map { _ in
            FuzzBuffer(address: cursor.integer(), length: cursor.integer(), flags: cursor.byte())
        }
    }

    static func encodeList(_ buffers: [FuzzBuffer], into out: inout [UInt8]) {
        precondition((1...4).contains(buffers.count), "a fuzzed chain has one to four buffers")
        out.append(UInt8(buffers.count - 1))
        for buffer in buffers {
            out.appendLittleEndian(buffer.address)
            out.appendLittleEndian(buffer.length)
            out.append(buffer.flags)
        }
    }
}

/// Where a split queue's three parts go when a fuzzed driver lays one out at
/// `base` (virtio 1.2 §2.7: 16-, 2- and 4-byte alignment).
struct FuzzRing {
    let size: UInt16
    let descriptorTable: UInt64
    let availableRing: UInt64
    let usedRing: UInt64

    init(base: UInt64, size: UInt16) {
        let layout = QueueConfiguration.contiguous(base: base, size: size)
        self.size = size
        descriptorTable = layout.descriptorTable
        availableRing = layout.availableRing
        usedRing = layout.usedRing
    }

    var configuration: QueueConfiguration {
        QueueConfiguration(
            size: size, descriptorTable: descriptorTable, availableRing: availableRing, usedRing: usedRing)
    }

    /// Writes `buffers` as one chain and publishes it in the available ring
    /// (§2.7.13). Each chain takes four descriptors from slot idx * 4, so
    /// consecutive chains do not overwrite each other in a large ring. An
    /// INDIRECT buffer points at a table the harness does not fill: its
    /// contents are whatever the guest memory holds. Returns the head, or
    /// nil if the ring is not in memory.
    @discardableResult
    func offer(_ buffers: [FuzzBuffer], memory: GuestMemory, address: (UInt16) -> UInt64) -> UInt16? {
        guard let index: UInt16 = try? memory.read(at: availableRing + 2) else { return nil }
        let head = UInt16((UInt32(index) &* 4) % UInt32(size))
        Self.writeDescriptors(
            buffers, table: descriptorTable, entries: size, first: head, memory: memory, address: address)
        _ = try? memory.write(head, at: availableRing + 4 + 2 * UInt64(index % size))
        _ = try? memory.write(index &+ 1, at: availableRing + 2)
        return head
    }

    /// Lays `buffers` out as linked descriptors from `first` in a table of
    /// `entries` (§2.7.5), hostile where their flags say so.
    static func writeDescriptors(
        _ buffers: [FuzzBuffer], table: UInt64, entries: UInt16, first: UInt16,
        memory: GuestMemory, address: (UInt16) -> UInt64
    ) {
        for (position, buffer) in buffers.enumerated() {
            let slot = (first &+ UInt16(position)) % entries
            let last = position == buffers.count - 1 || buffer.flags & FuzzBuffer.end != 0
            let next = buffer.flags & FuzzBuffer.loop != 0 ? first : (slot &+ 1) % entries
            let flags: UInt16 =
                (last ? 0 : 1) | (buffer.flags & FuzzBuffer.writable != 0 ? 2 : 0)
                | (buffer.flags & FuzzBuffer.indirect != 0 ? 4 : 0)
            let entry = table + 16 * UInt64(slot)
            _ = try? memory.write(address(buffer.address), at: entry)
            _ = try? memory.write(UInt32(buffer.length), at: entry + 8)
            _ = try? memory.write(flags, at: entry + 12)
            _ = try? memory.write(next, at: entry + 14)
        }
    }

    /// The used element in slot `slot`: (id, len) (§2.7.8).
    func usedElement(_ slot: UInt16, memory: GuestMemory) -> (id: UInt32, length: UInt32)? {
        let address = usedRing + 4 + 8 * UInt64(slot % size)
        guard let id: UInt32 = try? memory.read(at: address), let length: UInt32 = try? memory.read(at: address + 4)
        else {
            return nil
        }
        return (id, length)
    }
}

/// A device's two queues (receive, transmit) as the net and vsock harnesses
/// lay them out: rings at 0 and 0x2000, below 0x4000, and buffers from
/// 0x4000 up, so data written into a buffer never lands on a ring.
struct FuzzQueuePair {
    let rings: [FuzzRing]
    let queues: [Virtqueue]

    /// `control`: bit 0 EVENT_IDX, bit 1 INDIRECT_DESC, bits 2–4 the queue size (2^n).
    init(control: UInt8, memory: GuestMemory) {
        let size = UInt16(1) << UInt16((control >> 2) & 7)
        let rings = [FuzzRing(base: 0, size: size), FuzzRing(base: 0x2000, size: size)]
        let features =
            VirtioFeature.version1 | (control & 1 != 0 ? VirtioFeature.eventIndex : 0)
            | (control & 2 != 0 ? VirtioFeature.indirectDescriptors : 0)
        self.rings = rings
        queues = rings.enumerated().map {
            try! Virtqueue(index: $0, configuration: $1.configuration, memory: memory, features: features)
        }
    }

    /// The guest address of a fuzzed buffer address.
    static func address(_ value: UInt16) -> UInt64 { 0x4000 + UInt64(value) }

    /// Two bytes written over queue `queue % 2`'s descriptor table or
    /// available ring, as a guest that changes a live queue would.
    func corrupt(queue: UInt8, offset: UInt16, value: UInt16, memory: GuestMemory) {
        let ring = rings[Int(queue) % 2]
        let span = ring.availableRing + 6 + 2 * UInt64(ring.size) - ring.descriptorTable
        _ = try? memory.write(value, at: ring.descriptorTable + UInt64(offset) % (span - 1))
    }
}

/// An `EntropySource` for fuzzing: a counter pattern, and a failure on
/// every `failEvery`-th fill (never if 0), counted.
public final class FuzzEntropySource: EntropySource {
    let failEvery: Int
    public private(set) var fills = 0
    public private(set) var failures = 0

    public init(failEvery: Int) { self.failEvery = failEvery }

    struct Failure: Error {}

    public func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        fills += 1
        if failEvery > 0 && fills % failEvery == 0 {
            failures += 1
            throw Failure()
        }
        for index in buffer.indices { buffer[index] = UInt8(truncatingIfNeeded: fills &+ index) }
    }
}

/// The loopback a fuzzed net device sends into, recording what crossed it:
/// every frame the device sent (checked against the frame bound) and every
/// frame the device took for receive, in order.
public final class RecordingNetBackend: NetBackend {
    public let loopback = LoopbackNetBackend()
    public private(set) var sent: [Int] = []
    public private(set) var consumed: [[UInt8]] = []

    public init() {}

    public func send(_ frame: [UInt8]) throws {
        // §5.1.6.2: without GSO the device bounds what it copies out.
        precondition(frame.count <= NetDevice.maxFrameSize, "the device sent a \(frame.count)-byte frame")
        sent.append(frame.count)
        try loopback.send(frame)
    }

    /// A frame from the host side (a readable TAP).
    public func inject(_ frame: [UInt8]) { try? loopback.send(frame) }

    public func peekFrame() -> [UInt8]? { loopback.peekFrame() }

    public func consumeFrame() {
        if let frame = loopback.peekFrame() { consumed.append(frame) }
        loopback.consumeFrame()
    }

    /// A host frame of `length` bytes (at most 64 KiB) with a recognisable
    /// pattern, cut from one array so long frames stay cheap to make.
    public static func frame(length: Int) -> [UInt8] { Array(pattern.prefix(length)) }

    static let pattern = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }
}

/// A step of a fuzzed program: any bytes decode to one, and it encodes
/// back, so seeds are written as programs and seeded runs mutate steps.
public protocol FuzzOperation {
    static func decode(_ cursor: inout FuzzCursor) -> Self
    var bytes: [UInt8] { get }
}

/// What runs a fuzzed program: built from its control byte, then fed its
/// operations one by one, checking its device's promises after each.
public protocol FuzzHarness {
    associatedtype Operation: FuzzOperation
    init(control: UInt8)
    /// Runs one step; false when the device can take no more (the program ends).
    func run(_ operation: Operation) -> Bool
}

/// A control byte, then operations to the end of the input.
public enum FuzzProgram {
    /// Decodes and runs `bytes` on a new harness, at most `limit` steps,
    /// so one long input cannot stall the fuzzer. Returns the harness for
    /// its counts.
    public static func run<Harness: FuzzHarness>(_ bytes: UnsafeRawBufferPointer, on _: Harness.Type, limit: Int)
        -> Harness
    {
        var cursor = FuzzCursor(bytes)
        let harness = Harness(control: cursor.byte())
        var steps = 0
        while !cursor.isAtEnd && steps < limit, harness.run(Harness.Operation.decode(&cursor)) {
            steps += 1
        }
        return harness
    }

    public static func encode<Operation: FuzzOperation>(control: UInt8, _ operations: [Operation]) -> [UInt8] {
        [control] + operations.flatMap(\.bytes)
    }

    public static func decode<Operation: FuzzOperation>(_ bytes: [UInt8], as _: Operation.Type) -> (
        control: UInt8, operations: [Operation]
    ) {
        bytes.withUnsafeBytes { raw in
            var cursor = FuzzCursor(raw)
            let control = cursor.byte()
            var operations: [Operation] = []
            while !cursor.isAtEnd { operations.append(Operation.decode(&cursor)) }
            return (control, operations)
        }
    }

    /// A neighbour of `program` for seeded runs without libFuzzer: a few
    /// steps inserted, replaced by random ones, dropped, repeated, or with
    /// one byte of their encoding changed; now and then one control bit.
    public static func mutate<Operation: FuzzOperation, Generator: RandomNumberGenerator>(
        _ program: [UInt8], as type: Operation.Type, using generator: inout Generator
    ) -> [UInt8] {
        var (control, operations) = decode(program, as: type)
        func random() -> Operation {
            let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
            return bytes.withUnsafeBytes { raw in
                var cursor = FuzzCursor(raw)
                return Operation.decode(&cursor)
            }
        }
        if Int.random(in: 0..<8, using: &generator) == 0 { control ^= 1 << UInt8.random(in: 0..<8, using: &generator) }
        for _ in 0..<Int.random(in: 1...4, using: &generator) {
            let position = Int.random(in: 0...operations.count, using: &generator)
            guard position < operations.count else {
                operations.append(random())
                continue
            }
            switch Int.random(in: 0..<5, using: &generator) {
            case 0: operations.insert(random(), at: position)
            case 1: operations[position] = random()
            case 2: operations.remove(at: position)
            case 3: operations.insert(operations[position], at: position)
            default:
                var bytes = operations[position].bytes
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
                bytes.withUnsafeBytes { raw in
                    var cursor = FuzzCursor(raw)
                    operations[position] = Operation.decode(&cursor)
                }
            }
        }
        return encode(control: control, operations)
    }
}
