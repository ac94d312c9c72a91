import KilnMemory

/// Entry points shared by the libFuzzer targets (Sources/fuzz-*) and the
/// seeded fuzz-style tests: each takes arbitrary bytes, runs one parser
/// over them and traps when an invariant breaks. Errors are fine; crashes,
/// out-of-bounds accesses and broken invariants are not.
public enum VirtioFuzzing {
    /// The guest the queue inputs are laid into: two regions around a hole,
    /// so ranges that span regions are exercised too.
    public static let memoryRanges = [GuestRange(address: 0, size: 0x8000), GuestRange(address: 0x10000, size: 0x8000)]
    /// Where the harness puts the rings inside the input image.
    public static let descriptorTable: UInt64 = 0x0000
    public static let availableRing: UInt64 = 0x1000
    public static let usedRing: UInt64 = 0x1400

    /// Byte 0 picks the queue: size 2^(bits 0–3 mod 9), bit 4 INDIRECT_DESC,
    /// bit 5 EVENT_IDX. The rest is copied to guest address 0.
    public struct QueueInput {
        public let configuration: QueueConfiguration
        public let features: UInt64
        public let memory: HeapGuestMemory

        public init(_ bytes: UnsafeRawBufferPointer, size fixedSize: UInt16? = nil) {
            let control = bytes.first ?? 0
            let size = fixedSize ?? UInt16(1) << (UInt16(control & 0x0F) % 9)
            configuration = QueueConfiguration(
                size: size, descriptorTable: VirtioFuzzing.descriptorTable,
                availableRing: VirtioFuzzing.availableRing,
                usedRing: VirtioFuzzing.usedRing)
            features =
                VirtioFeature.version1
                | (control & 0x10 != 0 ? VirtioFeature.indirectDescriptors : 0)
                | (control & 0x20 != 0 ? VirtioFeature.eventIndex : 0)
            memory = try! HeapGuestMemory(ranges: VirtioFuzzing.memoryRanges)
            let image = UnsafeRawBufferPointer(
                rebasing: bytes.dropFirst().prefix(Int(VirtioFuzzing.memoryRanges[0].size)))
            try! memory.hostBuffer(at: 0, length: image.count).copyMemory(from: image)
        }
    }

    /// Walks every offered chain, checks what the walker promises, reads
    /// and writes through the chain I/O, and pushes used elements. Returns
    /// the chains served before the first error (or the end).
    @discardableResult
    public static func virtqueue(_ bytes: UnsafeRawBufferPointer) -> Int {
        let input = QueueInput(bytes)
        guard
            let queue = try? Virtqueue(
                index: 0, configuration: input.configuration, memory: input.memory,
                features: input.features)
        else { return 0 }
        let size = Int(input.configuration.size)
        var served = 0
        // More pops than the ring holds: the index-jump check must stop them.
        for _ in 0..<(2 * size + 1) {
            guard let chain = try? queue.pop() else { break }
            let buffers = chain.readable + chain.writable
            precondition(buffers.count <= size + Int(SplitDescriptor.maxIndirectEntries), "chain longer than allowed")
            for buffer in buffers {
                precondition(input.memory.contains(buffer.address, length: Int(buffer.length)), "buffer outside memory")
            }
            var reader = ChainReader(memory: input.memory, chain: chain)
            let readCount = Int(min(reader.remaining, 4096))
            precondition((try? reader.read(readCount))?.count == readCount, "readable bytes went missing")
            var writer = ChainWriter(memory: input.memory, chain: chain)
            let writeCount = Int(min(writer.remaining, 4096))
            precondition(
                (try? writer.write([UInt8](repeating: 0xA5, count: writeCount))) == true, "writable bytes refused")
            precondition(UInt64(writer.written) == UInt64(writeCount), "written count wrong")
            guard (try? queue.pushUsed(chain, written: writer.written)) != nil else { break }
            _ = try? queue.needsNotification()
            served += 1
        }
        precondition(served <= 2 * size, "served more chains than offered")
        return served
    }

    /// Byte 0 bit 6 makes the disk read-only; the rest is a queue image
    /// (size 16) served by a block device over a 64-sector memory disk.
    /// The last 32 bytes also go straight to `BlockRequest.plan`.
    @discardableResult
    public static func block(_ bytes: UnsafeRawBufferPointer) -> Int {
        let readOnly = (bytes.first ?? 0) & 0x40 != 0
        if bytes.count >= 1 + 32 {
            let tail = Array(bytes.suffix(32))
            blockPlan(
                Array(tail.prefix(BlockRequest.headerSize)), shapeBytes: Array(tail.suffix(16)), readOnly: readOnly)
        }
        let input = QueueInput(bytes, size: 16)
        guard
            let queue = try? Virtqueue(
                index: 0, configuration: input.configuration, memory: input.memory,
                features: input.features)
        else { return 0 }
        let backend = MemoryBlockBackend(bytes: disk, readOnly: readOnly)
        let device = BlockDevice(memory: input.memory, backend: backend)
        _ = try? device.process(queue: 0, queues: [queue])
        precondition(!readOnly || backend.writeCalls == 0, "the device wrote to a read-only disk")
        return Int(queue.nextUsed)
    }

    /// 64 sectors, sector n filled with byte n.
    static let disk = (0..<(64 * 512)).map { UInt8(truncatingIfNeeded: $0 / 512) }

    /// The block planner alone: whatever it accepts stays inside the disk.
    /// Returns whether the request was accepted, so a seeded run can check
    /// it reached the transfer checks rather than refusing everything.
    @discardableResult
    public static func blockPlan(_ header: [UInt8], shapeBytes: [UInt8], readOnly: Bool) -> Bool {
        func word(_ at: Int) -> UInt64 {
            (0..<8).reduce(UInt64(0)) { $0 | UInt64(shapeBytes[at + $1]) << (8 * UInt64($1)) }
        }
        // Small lengths most of the time, so the sector checks are reached.
        let shape = BlockRequest.Shape(readableData: word(0) % 0x10_0000, writableData: word(8) % 0x10_0000)
        let capacity: UInt64 = 64
        guard
            case .success(let operation) = BlockRequest.plan(
                header: header, shape: shape, capacity: capacity,
                readOnly: readOnly)
        else { return false }
        switch operation {
        case .read(let offset, let length), .write(let offset, let length):
            precondition(offset <= capacity * 512 && length <= capacity * 512 - offset, "transfer past the disk")
            precondition(offset % 512 == 0 && length % 512 == 0, "transfer not in whole sectors")
            if case .write = operation { precondition(!readOnly, "write accepted on a read-only disk") }
        case .flush, .getID:
            break
        }
        return true
    }

    /// Byte 0 bit 0 allows SEQPACKET; the rest is a header plus payload.
    /// Whatever validates re-encodes to the same header bytes.
    public static func vsockPacket(_ bytes: UnsafeRawBufferPointer) {
        let seqpacket = (bytes.first ?? 0) & 1 != 0
        let packet = Array(bytes.dropFirst())
        let payload = UInt64(max(0, packet.count - VsockPacketHeader.size))
        let rules = VsockPacketRules(guestCID: 3, seqpacket: seqpacket)
        guard let header = try? rules.validate(packet, payloadBytes: payload) else { return }
        precondition(header.bytes == Array(packet.prefix(VsockPacketHeader.size)), "header does not re-encode")
        precondition(UInt64(header.length) == payload && header.length <= rules.maxPayload, "length not checked")
        precondition(header.sourceCID == 3 && header.destinationCID == VsockPacketHeader.CID.host, "CIDs not checked")
    }
}
