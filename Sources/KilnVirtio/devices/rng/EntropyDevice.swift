import KilnMemory

/// Where random bytes come from.
public protocol EntropySource: AnyObject {
    /// Fills all of `buffer`, or throws.
    func fill(_ buffer: UnsafeMutableRawBufferPointer) throws
}

/// virtio-rng (virtio 1.2 §5.4): one request queue of device-writable
/// buffers, each filled from an `EntropySource`.
public final class EntropyDevice: RateLimitedDevice {
    public static let queueSize: UInt16 = 256
    /// §5.4.6.2 lets the device use less than the whole buffer; a bound per
    /// request keeps one greedy chain from stalling the event loop.
    public static let maxBytesPerRequest = 64 << 10

    let memory: GuestMemory
    public let source: EntropySource
    /// Requests answered with no bytes because the source failed.
    public private(set) var sourceFailures = 0
    /// The entropy device's `rate_limiter`; unlimited unless configured.
    public private(set) var throttle: IOThrottle

    public init(memory: GuestMemory, source: EntropySource, throttle: IOThrottle = IOThrottle()) {
        self.memory = memory
        self.source = source
        self.throttle = throttle
    }

    /// A new `rate_limiter` at run time; takes effect from the next request.
    public func updateRateLimiters(_ update: IORateLimiter.Update) {
        throttle.apply(update)
    }

    public func throttledUntil(queue index: Int) -> UInt64? { throttle.throttledUntil }

    public var deviceType: VirtioDeviceType { .entropy }
    public var deviceFeatures: UInt64 { 0 } // §5.4.3: none defined
    public var queueMaxSizes: [UInt16] { [Self.queueSize] }
    public var configSpace: [UInt8] { [] } // §5.4.4: none
    public func activate(features: UInt64) {}
    public func reset() { throttle.reset() }

    public func process(queue index: Int, queues: [Virtqueue?]) throws {
        guard let queue = queues[index] else { return }
        guard throttle.begin() else { return }
        while let chain = try queue.pop() {
            // §5.4.6.1: readable buffers are a driver error; they are ignored.
            var writer = ChainWriter(memory: memory, chain: chain)
            let count = Int(min(writer.remaining, UInt64(Self.maxBytesPerRequest)))
            // Charged for the bytes it will get (Firecracker charges the
            // whole buffer, even past the 64 KiB it fills).
            guard throttle.admit(bytes: UInt64(count)) else {
                queue.undoPop()
                return
            }
            do {
                try writer.forEachSpan(count) { try source.fill($0) }
            } catch {
                sourceFailures += 1
            }
            try queue.pushUsed(chain, written: writer.written)
        }
    }
}
