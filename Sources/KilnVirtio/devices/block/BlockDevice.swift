import KilnMemory
import KilnBytes

/// virtio-blk (virtio 1.2 §5.2): one request queue in front of a
/// `BlockBackend`. Stateless between requests.
public final class BlockDevice: VirtioDevice {
    /// Feature bits (§5.2.3).
    public enum Feature {
        public static let segmentMaximum: UInt64 = 1 << 2
        public static let readOnly: UInt64 = 1 << 5
        public static let flush: UInt64 = 1 << 9
    }

    public static let queueSize: UInt16 = 256

    let memory: GuestMemory
    public let backend: BlockBackend
    /// Requests answered with a status other than OK, for metrics.
    public private(set) var failedRequests = 0

    public init(memory: GuestMemory, backend: BlockBackend) {
        self.memory = memory
        self.backend = backend
    }

    public var deviceType: VirtioDeviceType { .block }
    public var deviceFeatures: UInt64 {
        Feature.segmentMaximum | Feature.flush | (backend.isReadOnly ? Feature.readOnly : 0)
    }
    public var queueMaxSizes: [UInt16] { [Self.queueSize] }

    /// §5.2.4: capacity, size_max, seg_max, geometry, blk_size (24 bytes).
    public var configSpace: [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(backend.sectorCount)
        bytes.appendLittleEndian(UInt32(0))                     // size_max: not offered
        bytes.appendLittleEndian(UInt32(Self.queueSize - 2))    // seg_max: the queue less header and status
        bytes.appendLittleEndian(UInt32(0))                     // geometry: not offered
        bytes.appendLittleEndian(UInt32(BlockRequest.sectorSize))  // blk_size
        return bytes
    }

    public func activate(features: UInt64) {}
    public func reset() {}

    public func process(queue index: Int, queues: [Virtqueue?]) throws {
        guard let queue = queues[index] else { return }
        while let chain = try queue.pop() {
            try queue.pushUsed(chain, written: try serve(chain, queue: index))
        }
    }

    /// Serves one request; returns the bytes written into the chain.
    func serve(_ chain: DescriptorChain, queue: Int) throws -> UInt32 {
        // §5.2.6: the status byte is the chain's last writable byte. Without
        // one the device cannot answer at all: the queue is broken.
        guard chain.writableLength >= 1 else {
            throw VirtqueueError(queue: queue, .malformedRequest("block request without a status byte"))
        }
        var reader = ChainReader(memory: memory, chain: chain)
        var writer = ChainWriter(memory: memory, chain: chain)
        var status = BlockRequest.Status.ioError
        if let header = try reader.read(BlockRequest.headerSize) {
            let shape = BlockRequest.Shape(readableData: reader.remaining, writableData: writer.remaining - 1)
            switch BlockRequest.plan(header: header, shape: shape, capacity: backend.sectorCount,
                                     readOnly: backend.isReadOnly) {
            case .failure(let refused): status = refused
            case .success(let operation): status = perform(operation, reader: &reader, writer: &writer)
            }
        }
        if status != .ok { failedRequests += 1 }
        try writer.skip(Int(writer.remaining - 1))
        try writer.write([status.rawValue])
        return writer.written
    }

    /// Does the I/O; a backend error becomes IOERR (§5.2.6).
    private func perform(_ operation: BlockRequest.Operation, reader: inout ChainReader,
                         writer: inout ChainWriter) -> BlockRequest.Status {
        do {
            switch operation {
            case .read(let offset, let length):
                var position = offset
                try writer.forEachSpan(Int(length)) { span in
                    try backend.read(into: span, at: position)
                    position += UInt64(span.count)
                }
            case .write(let offset, let length):
                var position = offset
                try reader.forEachSpan(Int(length)) { span in
                    try backend.write(span, at: position)
                    position += UInt64(span.count)
                }
            case .flush:
                try backend.flush()
            case .getID:
                var identifier = Array(backend.identifier.prefix(BlockRequest.identifierSize))
                identifier += Array(repeating: 0, count: BlockRequest.identifierSize - identifier.count)
                try writer.write(identifier)
            }
            return .ok
        } catch {
            return .ioError
        }
    }
}
