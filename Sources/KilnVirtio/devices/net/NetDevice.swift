import KilnMemory

/// virtio-net (virtio 1.2 §5.1): one receive and one transmit queue, no
/// offloads, no mergeable buffers, a fixed MAC and link up.
public final class NetDevice: RateLimitedDevice {
    /// Feature bits (§5.1.3).
    public enum Feature {
        public static let mac: UInt64 = 1 << 5
        public static let status: UInt64 = 1 << 16
    }
    public enum Queue {
        public static let receive = 0
        public static let transmit = 1
    }
    public static let queueSize: UInt16 = 256
    /// Without GSO a frame is at most an MTU-sized payload plus headers; 64
    /// KiB bounds what the device copies whatever the driver claims.
    public static let maxFrameSize = 65535

    let memory: GuestMemory
    public let backend: NetBackend
    public let mac: [UInt8]
    public private(set) var droppedTransmits = 0
    public private(set) var droppedReceives = 0
    /// `rx_rate_limiter` and `tx_rate_limiter`; unlimited unless configured.
    public private(set) var receiveThrottle: IOThrottle
    public private(set) var transmitThrottle: IOThrottle

    public init(
        memory: GuestMemory, backend: NetBackend, mac: [UInt8],
        receiveThrottle: IOThrottle = IOThrottle(), transmitThrottle: IOThrottle = IOThrottle()
    ) {
        precondition(mac.count == 6, "a MAC address is 6 bytes")
        self.memory = memory
        self.backend = backend
        self.mac = mac
        self.receiveThrottle = receiveThrottle
        self.transmitThrottle = transmitThrottle
    }

    /// PATCH /network-interfaces: new buckets take effect from the next frame.
    public func updateRateLimiters(receive: IORateLimiter.Update, transmit: IORateLimiter.Update) {
        receiveThrottle.apply(receive)
        transmitThrottle.apply(transmit)
    }

    public func throttledUntil(queue index: Int) -> UInt64? {
        index == Queue.receive ? receiveThrottle.throttledUntil : transmitThrottle.throttledUntil
    }

    public var deviceType: VirtioDeviceType { .net }
    public var deviceFeatures: UInt64 { Feature.mac | Feature.status }
    public var queueMaxSizes: [UInt16] { [Self.queueSize, Self.queueSize] }
    /// §5.1.4: mac[6], then le16 status with VIRTIO_NET_S_LINK_UP.
    public var configSpace: [UInt8] { mac + [1, 0] }
    public func activate(features: UInt64) {}
    public func reset() {
        receiveThrottle.reset()
        transmitThrottle.reset()
    }

    /// A transmit notification sends; any call then delivers what the
    /// backend holds, so the VMM calls `processQueue(receive)` when its TAP
    /// turns readable and the guest's rx notification retries a waiting frame.
    public func process(queue index: Int, queues: [Virtqueue?]) throws {
        if index == Queue.transmit, let transmit = queues[Queue.transmit] { try sendAll(transmit) }
        if let receive = queues[Queue.receive] { try receiveAll(receive, notified: index == Queue.receive) }
    }

    private func sendAll(_ queue: Virtqueue) throws {
        guard transmitThrottle.begin() else { return }
        while let chain = try queue.pop() {
            // Charged for what the driver offered, header included, as
            // Firecracker does; dropped frames cost too.
            guard transmitThrottle.admit(bytes: chain.readableLength) else {
                queue.undoPop()
                return
            }
            var reader = ChainReader(memory: memory, chain: chain)
            // §5.1.6.2: header then frame, all device-readable. A header the
            // device cannot honour or an oversized frame is dropped: transmit
            // has no status to report it in.
            if let raw = try reader.read(NetHeader.size), let header = NetHeader(bytes: raw), header.isPlainTransmit,
                reader.remaining <= UInt64(Self.maxFrameSize), let frame = try reader.read(Int(reader.remaining))
            {
                do { try backend.send(frame) } catch { droppedTransmits += 1 }
            } else {
                droppedTransmits += 1
            }
            try queue.pushUsed(chain, written: 0)
        }
    }

    /// `notified`: served for its own queue or the TAP, not in passing
    /// after a transmit, so a wait still ahead counts as a throttled event.
    private func receiveAll(_ queue: Virtqueue, notified: Bool) throws {
        guard receiveThrottle.begin(counting: notified) else { return }
        while let frame = backend.peekFrame(), let chain = try queue.pop() {
            // A refused frame stays in the backend (the VMM stops reading
            // the TAP meanwhile), its buffer back in the ring.
            guard receiveThrottle.admit(bytes: UInt64(NetHeader.size + frame.count)) else {
                queue.undoPop()
                return
            }
            backend.consumeFrame()
            var writer = ChainWriter(memory: memory, chain: chain)
            // §5.1.6.4.1: without VIRTIO_NET_F_MRG_RXBUF, num_buffers is 1. A
            // buffer too small for the frame gets nothing (the driver counts
            // a length error) and the frame is dropped.
            let header = NetHeader(bufferCount: 1).bytes
            if UInt64(header.count + frame.count) <= writer.remaining {
                try writer.write(header)
                try writer.write(frame)
            } else {
                droppedReceives += 1
            }
            try queue.pushUsed(chain, written: writer.written)
        }
    }
}
