import KilnBytes

/// The virtio-vsock packet header (virtio 1.2 §5.10.6), parsed and checked
/// as a pure value. The connection state machine builds on it later.
public struct VsockPacketHeader: Equatable, Sendable {
    /// `struct virtio_vsock_hdr`: le64 src_cid, le64 dst_cid, le32 src_port,
    /// le32 dst_port, le32 len, le16 type, le16 op, le32 flags, le32
    /// buf_alloc, le32 fwd_cnt.
    public static let size = 44

    /// Socket types (§5.10.6).
    public enum SocketType: UInt16, Sendable {
        case stream = 1
        case seqpacket = 2
    }

    /// Operations (§5.10.6).
    public enum Operation: UInt16, Sendable {
        case request = 1
        case response, reset, shutdown, readWrite, creditUpdate, creditRequest
    }

    /// Well-known CIDs (§5.10.4): 0 hypervisor, 1 local, 2 host; guests ≥ 3.
    public enum CID {
        public static let host: UInt64 = 2
        public static let firstGuest: UInt64 = 3
        /// §5.10.4: guest_cid's upper 32 bits are reserved and zero.
        public static let maxGuest: UInt64 = 0xFFFF_FFFE
    }

    /// SHUTDOWN flags (§5.10.6).
    public static let shutdownReceive: UInt32 = 1
    public static let shutdownSend: UInt32 = 2
    /// SEQPACKET RW flags (§5.10.6): end of message, end of record.
    public static let endOfMessage: UInt32 = 1
    public static let endOfRecord: UInt32 = 2

    public var sourceCID: UInt64
    public var destinationCID: UInt64
    public var sourcePort: UInt32
    public var destinationPort: UInt32
    public var length: UInt32
    public var type: UInt16
    public var operation: UInt16
    public var flags: UInt32
    public var bufferAllocation: UInt32
    public var forwardCount: UInt32

    /// Decodes the first `size` bytes; nil when fewer are given.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= Self.size else { return nil }
        // Every field lies inside the bytes just counted: never the 0.
        func field<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T { bytes.littleEndian(at: offset) ?? 0 }
        sourceCID = field(0, UInt64.self)
        destinationCID = field(8, UInt64.self)
        sourcePort = field(16, UInt32.self)
        destinationPort = field(20, UInt32.self)
        length = field(24, UInt32.self)
        type = field(28, UInt16.self)
        operation = field(30, UInt16.self)
        flags = field(32, UInt32.self)
        bufferAllocation = field(36, UInt32.self)
        forwardCount = field(40, UInt32.self)
    }

    public init(
        sourceCID: UInt64, destinationCID: UInt64, sourcePort: UInt32, destinationPort: UInt32,
        length: UInt32, type: SocketType, operation: Operation, flags: UInt32 = 0,
        bufferAllocation: UInt32 = 0, forwardCount: UInt32 = 0
    ) {
        self.sourceCID = sourceCID
        self.destinationCID = destinationCID
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.length = length
        self.type = type.rawValue
        self.operation = operation.rawValue
        self.flags = flags
        self.bufferAllocation = bufferAllocation
        self.forwardCount = forwardCount
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.appendLittleEndian(sourceCID)
        out.appendLittleEndian(destinationCID)
        out.appendLittleEndian(sourcePort)
        out.appendLittleEndian(destinationPort)
        out.appendLittleEndian(length)
        out.appendLittleEndian(type)
        out.appendLittleEndian(operation)
        out.appendLittleEndian(flags)
        out.appendLittleEndian(bufferAllocation)
        out.appendLittleEndian(forwardCount)
        return out
    }
}

/// Why a packet from the guest is refused.
public enum VsockPacketError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(Int)
    case sourceNotGuest(UInt64)
    case destinationNotHost(UInt64)
    case unknownType(UInt16)
    case seqpacketNotNegotiated
    case unknownOperation(UInt16)
    case payloadTooLarge(UInt32)
    case payloadOnControlPacket(operation: UInt16, length: UInt32)
    case payloadLengthMismatch(header: UInt32, buffers: UInt64)
    case badFlags(operation: UInt16, flags: UInt32)

    public var description: String {
        switch self {
        case .truncated(let count): return "vsock packet of \(count) bytes is shorter than its 44-byte header"
        case .sourceNotGuest(let cid): return "vsock source CID \(cid) is not the guest's"
        case .destinationNotHost(let cid): return "vsock destination CID \(cid) is not the host (2)"
        case .unknownType(let type): return "vsock socket type \(type) is unknown"
        case .seqpacketNotNegotiated: return "vsock SEQPACKET without VIRTIO_VSOCK_F_SEQPACKET"
        case .unknownOperation(let op): return "vsock operation \(op) is unknown"
        case .payloadTooLarge(let length): return "vsock payload of \(length) bytes is above the limit"
        case .payloadOnControlPacket(let op, let length): return "vsock operation \(op) carries \(length) payload bytes"
        case .payloadLengthMismatch(let header, let buffers):
            return "vsock header says \(header) payload bytes, the buffers hold \(buffers)"
        case .badFlags(let op, let flags):
            return "vsock flags 0x\(String(flags, radix: 16)) invalid for operation \(op)"
        }
    }
}

/// Checks for a packet on the guest's transmit queue (§5.10.6).
public struct VsockPacketRules: Sendable {
    public let guestCID: UInt64
    public let seqpacket: Bool
    /// The largest payload accepted; Linux sends at most 64 KiB per packet.
    public let maxPayload: UInt32

    public init(guestCID: UInt64, seqpacket: Bool = false, maxPayload: UInt32 = 64 << 10) {
        self.guestCID = guestCID
        self.seqpacket = seqpacket
        self.maxPayload = maxPayload
    }

    /// Parses and validates a header followed by `payloadBytes` bytes of
    /// device-readable payload in the chain.
    public func validate(_ bytes: [UInt8], payloadBytes: UInt64) throws -> VsockPacketHeader {
        guard let header = VsockPacketHeader(bytes: bytes) else { throw VsockPacketError.truncated(bytes.count) }
        // §5.10.6: the device checks src_cid is the guest's own; Kiln only
        // routes to the host.
        guard header.sourceCID == guestCID else { throw VsockPacketError.sourceNotGuest(header.sourceCID) }
        guard header.destinationCID == VsockPacketHeader.CID.host else {
            throw VsockPacketError.destinationNotHost(header.destinationCID)
        }
        guard let type = VsockPacketHeader.SocketType(rawValue: header.type) else {
            throw VsockPacketError.unknownType(header.type)
        }
        guard type == .stream || seqpacket else { throw VsockPacketError.seqpacketNotNegotiated }
        guard let operation = VsockPacketHeader.Operation(rawValue: header.operation) else {
            throw VsockPacketError.unknownOperation(header.operation)
        }
        guard header.length <= maxPayload else { throw VsockPacketError.payloadTooLarge(header.length) }
        // Only RW carries data (§5.10.6); len must match what was sent.
        if operation != .readWrite && header.length != 0 {
            throw VsockPacketError.payloadOnControlPacket(operation: header.operation, length: header.length)
        }
        guard UInt64(header.length) == payloadBytes else {
            throw VsockPacketError.payloadLengthMismatch(header: header.length, buffers: payloadBytes)
        }
        try checkFlags(header, operation: operation, type: type)
        return header
    }

    /// §5.10.6: SHUTDOWN carries RCV/SEND; §5.10.6: SEQPACKET RW carries
    /// EOM/EOR; every other packet carries none.
    private func checkFlags(
        _ header: VsockPacketHeader, operation: VsockPacketHeader.Operation,
        type: VsockPacketHeader.SocketType
    ) throws {
        let allowed: UInt32
        switch (operation, type) {
        case (.shutdown, _): allowed = VsockPacketHeader.shutdownReceive | VsockPacketHeader.shutdownSend
        case (.readWrite, .seqpacket): allowed = VsockPacketHeader.endOfMessage | VsockPacketHeader.endOfRecord
        default: allowed = 0
        }
        guard header.flags & ~allowed == 0 else {
            throw VsockPacketError.badFlags(operation: header.operation, flags: header.flags)
        }
    }
}
