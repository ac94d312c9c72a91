/// Where a net device's frames go and come from: a TAP in the VMM.
public protocol NetBackend: AnyObject {
    /// Hands one Ethernet frame to the host side.
    func send(_ frame: [UInt8]) throws
    /// The next frame from the host, left in place until `consumeFrame`,
    /// so a frame waits while the guest has no receive buffer.
    func peekFrame() -> [UInt8]?
    func consumeFrame()
}

/// Sends every frame straight back, for tests: a bounded FIFO.
public final class LoopbackNetBackend: NetBackend {
    public static let capacity = 256
    public private(set) var pending: [[UInt8]] = []
    public private(set) var dropped = 0

    public init() {}

    public func send(_ frame: [UInt8]) throws {
        guard pending.count < Self.capacity else { dropped += 1; return }
        pending.append(frame)
    }

    public func peekFrame() -> [UInt8]? { pending.first }
    public func consumeFrame() { if !pending.isEmpty { pending.removeFirst() } }
}
