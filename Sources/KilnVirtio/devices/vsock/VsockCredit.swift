/// Credit-based flow control of one vsock stream, both ways (virtio 1.2
/// §5.10.6.3): what the device may still send the guest, and what the
/// guest may still send the device.
///
/// Every counter is a free-running 32-bit value that wraps, as the spec's
/// `fwd_cnt` and the drivers' `tx_cnt` do; only differences are ever
/// compared, with wrapping subtraction, so 4 GiB of traffic through one
/// connection changes nothing. A difference larger than the buffer it is
/// bounded by is a guest lie and is refused, never believed.
public struct VsockCredit: Equatable, Sendable {
    // MARK: Guest → host (the device's own buffer)

    /// `buf_alloc` the device advertises: the most guest bytes it holds
    /// for this connection before the host peer takes them.
    public let bufferAllocation: UInt32
    /// Payload bytes the guest has sent (the device's `rx_cnt`).
    public private(set) var receivedCount: UInt32
    /// Payload bytes handed on to the host peer: the device's `fwd_cnt`.
    public private(set) var forwardCount: UInt32
    /// `fwd_cnt` as the guest last heard it, in any packet's header.
    public private(set) var advertisedForwardCount: UInt32

    // MARK: Host → guest (the guest's buffer)

    /// The guest's `buf_alloc` and `fwd_cnt` from its latest header.
    public private(set) var peerBufferAllocation: UInt32 = 0
    public private(set) var peerForwardCount: UInt32
    /// Payload bytes the device has sent the guest (its `tx_cnt`).
    public private(set) var sentCount: UInt32

    /// `counterBase` starts every counter at one value (0 in the protocol;
    /// tests start near the wrap).
    public init(bufferAllocation: UInt32, counterBase: UInt32 = 0) {
        self.bufferAllocation = bufferAllocation
        receivedCount = counterBase
        forwardCount = counterBase
        advertisedForwardCount = counterBase
        peerForwardCount = counterBase
        sentCount = counterBase
    }

    /// Bytes sent to the guest it has not yet reported consumed.
    public var inFlightToGuest: UInt32 { sentCount &- peerForwardCount }

    /// How many more payload bytes the guest can take now (§5.10.6.3:
    /// `peer_free = peer_buf_alloc - (tx_cnt - peer_fwd_cnt)`). A guest that
    /// shrinks `buf_alloc` below what is in flight gets 0, not a wrapped
    /// huge number.
    public var peerCredit: UInt32 {
        let inFlight = inFlightToGuest
        return inFlight <= peerBufferAllocation ? peerBufferAllocation - inFlight : 0
    }

    /// Takes `buf_alloc` and `fwd_cnt` from a guest header. The guest's
    /// `fwd_cnt` counts bytes the device sent, so it may only move forward,
    /// and never past `tx_cnt`: a value that would put more in flight than
    /// before (behind the last one, or ahead of what was sent, which wraps
    /// to a huge in-flight count) is refused and nothing changes.
    public mutating func updatePeer(bufferAllocation: UInt32, forwardCount: UInt32) -> Bool {
        guard sentCount &- forwardCount <= inFlightToGuest else { return false }
        peerBufferAllocation = bufferAllocation
        peerForwardCount = forwardCount
        return true
    }

    /// Records `count` bytes sent to the guest; the caller checked them
    /// against `peerCredit`.
    public mutating func sent(_ count: UInt32) {
        precondition(count <= peerCredit, "the device sends only within the guest's credit")
        sentCount &+= count
    }

    /// Guest bytes the device holds now, not yet taken by the host peer.
    public var buffered: UInt32 { receivedCount &- forwardCount }

    /// How many more bytes the guest may send before the device's buffer is
    /// full. `buffered` never exceeds `bufferAllocation` (see `receive`).
    public var freeSpace: UInt32 { bufferAllocation - buffered }

    /// Accepts `count` payload bytes from the guest, or refuses them all
    /// when they overrun the credit the device gave: a driver that ignores
    /// its peer's credit is broken or hostile (§5.10.6.3.1: the driver
    /// MUST NOT send more than the peer's free space).
    public mutating func receive(_ count: UInt32) -> Bool {
        guard count <= freeSpace else { return false }
        receivedCount &+= count
        return true
    }

    /// Records `count` buffered bytes the host peer took.
    public mutating func forwarded(_ count: UInt32) {
        precondition(count <= buffered, "only buffered bytes can be forwarded")
        forwardCount &+= count
    }

    /// Whether the guest should hear of freed space without waiting for a
    /// data packet to carry it: once its own view of the device's free
    /// space has fallen below half the buffer and more has been freed since.
    /// A guest sending one way only would otherwise stall on stale credit.
    public var needsUpdate: Bool {
        guard forwardCount != advertisedForwardCount else { return false }
        let guestView = bufferAllocation &- (receivedCount &- advertisedForwardCount)
        return guestView < bufferAllocation / 2
    }

    /// `buf_alloc` and `fwd_cnt` for a header the device sends now.
    public mutating func advertise() -> (bufferAllocation: UInt32, forwardCount: UInt32) {
        advertisedForwardCount = forwardCount
        return (bufferAllocation, forwardCount)
    }
}
