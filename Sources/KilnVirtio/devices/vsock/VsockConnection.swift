/// One stream is named by its two ports (virtio 1.2 §5.10.6: with one
/// guest and one host, the CIDs add nothing).
public struct VsockConnectionKey: Hashable, Sendable, CustomStringConvertible {
    public let guestPort: UInt32
    public let hostPort: UInt32

    public init(guestPort: UInt32, hostPort: UInt32) {
        self.guestPort = guestPort
        self.hostPort = hostPort
    }

    public var description: String { "guest port \(guestPort) ↔ host port \(hostPort)" }
}

/// The state of one stream between the guest and a host peer.
struct VsockConnection {
    enum State: Equatable {
        /// Host-initiated: REQUEST sent (or waiting for an rx buffer), the
        /// guest has not answered yet; refused at the deadline.
        case awaitingGuestResponse(deadline: UInt64)
        /// Data flows (§5.10.6.3).
        case established
        /// The guest is done with it (its RST went out or came in); only
        /// the guest's bytes still buffered go on to the host peer, until
        /// the deadline.
        case draining(deadline: UInt64)
    }

    /// Control packets this connection owes the guest, sent before data.
    struct Owed: OptionSet {
        let rawValue: UInt8
        static let request = Owed(rawValue: 1)
        static let response = Owed(rawValue: 2)
        static let shutdown = Owed(rawValue: 4)
        static let reset = Owed(rawValue: 8)
        static let creditUpdate = Owed(rawValue: 16)
    }

    var state: State
    var credit: VsockCredit
    var owed: Owed = []
    /// SHUTDOWN flags the guest sent (§5.10.6: RCV, it takes no more; SEND,
    /// it sends no more).
    var guestShutdown: UInt32 = 0
    /// SHUTDOWN flags the device sent for the host peer.
    var hostShutdown: UInt32 = 0
    /// The host peer's stream ended (read gave end of file).
    var hostReadClosed = false
    /// The device shut the host peer's write side (after the guest's SEND
    /// shutdown and its last buffered byte).
    var hostWriteShut = false
    /// Readiness the host side reported and the device has not used up.
    var hostReadable = false
    var hostWritable = true
    /// Guest bytes waiting for the host peer: at most `credit.bufferAllocation`
    /// (the guest is refused beyond its credit), plus the handshake line.
    var toHost = VsockByteQueue()
    /// How many bytes at the front of `toHost` are the "OK <port>\n" line
    /// rather than guest data (they do not count toward `fwd_cnt`).
    var handshakeBytesToHost = 0

    init(state: State, bufferAllocation: UInt32) {
        self.state = state
        credit = VsockCredit(bufferAllocation: bufferAllocation)
    }

    var isEstablished: Bool { state == .established }

    /// The device may read host bytes for the guest: the stream is open both
    /// ways as far as the guest's receiving goes, and the guest has room.
    var canSendData: Bool {
        isEstablished && !hostReadClosed && guestShutdown & VsockPacketHeader.shutdownReceive == 0
            && hostShutdown & VsockPacketHeader.shutdownSend == 0 && credit.peerCredit > 0
    }

    /// Which readiness of the host stream the device wants to hear about.
    /// Known readiness is not watched again (level-triggered epoll would
    /// report it in a loop), and nothing is read without the guest's credit,
    /// so a guest that stops reading stalls only this stream.
    var wantsHostRead: Bool { canSendData && !hostReadable }
    var wantsHostWrite: Bool { !toHost.isEmpty && !hostWritable }

    /// Both directions are over: the guest sends no more and all it sent
    /// reached the host, and the host's stream has ended (or the guest
    /// stopped receiving).
    var bothDirectionsDone: Bool {
        let guestDone = guestShutdown & VsockPacketHeader.shutdownSend != 0 && toHost.isEmpty
        let hostDone = hostReadClosed || guestShutdown & VsockPacketHeader.shutdownReceive != 0
        return guestDone && hostDone
    }
}

/// A FIFO of bytes with an advancing head, compacted when half is spent,
/// so taking bytes off the front does not move the rest each time.
struct VsockByteQueue {
    private var storage: [UInt8] = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { count == 0 }

    mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 { storage.append(contentsOf: bytes) }

    /// The bytes waiting, front first.
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[head...])) }
    }

    mutating func removeFirst(_ count: Int) {
        precondition(count <= self.count, "cannot remove more than is queued")
        head += count
        if head == storage.count {
            storage.removeAll(keepingCapacity: storage.capacity <= 64 << 10)
            head = 0
        } else if head > storage.count / 2 {
            storage.removeFirst(head)
            head = 0
        }
    }

    mutating func removeAll() {
        storage = []
        head = 0
    }
}
