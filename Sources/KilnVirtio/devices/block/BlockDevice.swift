import KilnBytes
import KilnMemory

/// virtio-blk (virtio 1.2 §5.2): one request queue in front of a
/// `BlockBackend`. Stateless between requests.
public final class BlockDevice: RateLimitedDevice {
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

    /// The drive's `rate_limiter`; unlimited unless configured.
    public private(set) var throttle: IOThrottle

    public init(memory: GuestMemory, backend: BlockBackend, throttle: IOThrottle = IOThrottle()) {
        self.memory = memory
        self.backend = backend
        self.throttle = throttle
    }

    /// PATCH /drives: new buckets take effect from the next request.
    public func updateRateLimiters(_ update: IORateLimiter.Update) {
        throttle.apply(update)
    }

    public func throttledUntil(queue index: Int) -> UInt64? { throttle.throttledUntil }

    public var deviceType: VirtioDeviceType { .block }
    public var deviceFeatures: UInt64 {
        Feature.segmentMaximum | Feature.flush | (backend.isReadOnly ? Feature.readOnly : 0)
    }
    public var queueMaxSizes: [UInt16] { [Self.queueSize] }

    /// §5.2.4: capacity, size_max, seg_max, geometry, blk_size (24 bytes).
    public var configSpace: [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(backend.sectorCount)
        bytes.appendLittleEndian(UInt32(0)) // size_max: not offered
        bytes.appendLittleEndian(UInt32(Self.queueSize - 2)) // seg_max: the queue less header and status
        bytes.appendLittleEndian(UInt32(0)) // geometry: not offered
        bytes.appendLittleEndian(UInt32(BlockRequest.sectorSize)) // blk_size
        return bytes
    }

    public func activate(features: UInt64) {}
    public func reset() { throttle.reset() }

    public func process(queue index: Int, queues: [Virtqueue?]) throws {
        guard let queue = queues[index] else { return }
        guard throttle.begin() else { return }
        while let chain = try queue.pop() {
            let request = try Pending(chain, memory: memory, backend: backend, queue: index)
            // Every request costs an op, refused ones too, so a driver cannot
            // spin the VMM on bad requests; only transfers cost bytes (as in
            // Firecracker, where flush and GET_ID move no data).
            guard throttle.admit(bytes: request.transferBytes) else {
                queue.undoPop()
                return
            }
            try queue.pushUsed(chain, written: try serve(request))
        }
    }

    /// One popped request, its header read and its operation planned, so
    /// that its cost is known before any I/O.
    struct Pending {
        var reader: ChainReader
        var writer: ChainWriter
        /// Nil when the header itself was short.
        let plan: Result<BlockRequest.Operation, BlockRequest.Status>?

        init(_ chain: DescriptorChain, memory: GuestMemory, backend: BlockBackend, queue: Int) throws {
            // §5.2.6: the status byte is the chain's last writable byte. Without
            // one the device cannot answer at all: the queue is broken.
            guard chain.writableLength >= 1 else {
                throw VirtqueueError(queue: queue, .malformedRequest("block request without a status byte"))
            }
            reader = ChainReader(memory: memory, chain: chain)
            writer = ChainWriter(memory: memory, chain: chain)
            guard let header = try reader.read(BlockRequest.headerSize) else {
                plan = nil
                return
            }
            let shape = BlockRequest.Shape(readableData: reader.remaining, writableData: writer.remaining - 1)
            plan = BlockRequest.plan(
                header: header, shape: shape, capacity: backend.sectorCount,
                readOnly: backend.isReadOnly)
        }

        var transferBytes: UInt64 {
            switch plan {
            case .success(.read(_, let length)), .success(.write(_, let length)): return length
            default: return 0
            }
        }
    }

    /// Serves one planned request; returns the bytes written into the chain.
    func serve(_ pending: Pending) throws -> UInt32 {
        var request = pending
        var status = BlockRequest.Status.ioError
        switch request.plan {
        case nil: break
        case .failure(let refused): status = refused
        case .success(let operation): status = perform(operation, reader: &request.reader, writer: &request.writer)
        }
        if status != .ok { failedRequests += 1 }
        try request.writer.skip(Int(request.writer.remaining - 1))
        try request.writer.write([status.rawValue])
        return request.writer.written
    }

    /// Does the I/O; a backend error becomes IOERR (§5.2.6).
    private func perform(
        _ operation: BlockRequest.Operation, reader: inout ChainReader,
        writer: inout ChainWriter
    ) -> BlockRequest.Status {
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
