import KilnBytes

/// `struct virtio_net_hdr_v1` (virtio 1.2 §5.1.6): 12 bytes ahead of every
/// frame in both directions once VIRTIO_F_VERSION_1 is negotiated.
public struct NetHeader: Equatable, Sendable {
    public static let size = 12

    /// flags (§5.1.6): NEEDS_CSUM, DATA_VALID, RSC_INFO.
    public enum Flag {
        public static let needsChecksum: UInt8 = 1
        public static let dataValid: UInt8 = 2
        public static let rscInfo: UInt8 = 4
    }
    /// gso_type NONE: the only value without the offload features.
    public static let gsoNone: UInt8 = 0

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = NetHeader.gsoNone
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0
    public var bufferCount: UInt16 = 0

    public init(
        flags: UInt8 = 0, gsoType: UInt8 = NetHeader.gsoNone, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
        checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0, bufferCount: UInt16 = 0
    ) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
        self.bufferCount = bufferCount
    }

    /// Decodes exactly `size` bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.size else { return nil }
        // Inside the bytes just counted: never the 0.
        func word(_ at: Int) -> UInt16 { bytes.littleEndian(at: at) ?? 0 }
        self.init(
            flags: bytes[0], gsoType: bytes[1], headerLength: word(2), gsoSize: word(4),
            checksumStart: word(6), checksumOffset: word(8), bufferCount: word(10))
    }

    public var bytes: [UInt8] {
        var out = [flags, gsoType]
        for word in [headerLength, gsoSize, checksumStart, checksumOffset, bufferCount] {
            out.appendLittleEndian(word)
        }
        return out
    }

    /// A transmit header the device can honour without checksum or
    /// segmentation offload (§5.1.6.2.1: NEEDS_CSUM needs VIRTIO_NET_F_CSUM,
    /// a gso_type needs the matching HOST_ feature; none is offered).
    public var isPlainTransmit: Bool { flags == 0 && gsoType == Self.gsoNone }
}
