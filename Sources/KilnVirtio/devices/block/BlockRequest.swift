import KilnBytes

/// virtio-blk requests (virtio 1.2 §5.2.6), parsed without touching the
/// backend: the header bytes and the chain's lengths in, the operation to
/// perform or the status to report out. Pure, so it is fuzzed on its own.
public enum BlockRequest {
    /// `struct virtio_blk_req`: le32 type, le32 reserved, le64 sector.
    public static let headerSize = 16
    /// The unit of `sector` and of the capacity, whatever the block size (§5.2.4).
    public static let sectorSize: UInt64 = 512
    /// GET_ID answers with a 20-byte, NUL-padded string (§5.2.6).
    public static let identifierSize = 20

    /// Request types (§5.2.6).
    public enum Kind {
        public static let read: UInt32 = 0 // VIRTIO_BLK_T_IN
        public static let write: UInt32 = 1 // VIRTIO_BLK_T_OUT
        public static let flush: UInt32 = 4
        public static let getID: UInt32 = 8
    }

    /// The status byte the device writes last (§5.2.6).
    public enum Status: UInt8, Error, Sendable {
        case ok = 0
        case ioError = 1
        case unsupported = 2
    }

    /// What the device should do with a well-formed request.
    public enum Operation: Equatable, Sendable {
        /// Read `length` bytes at byte `offset` into the writable data.
        case read(offset: UInt64, length: UInt64)
        /// Write the readable data, `length` bytes, at byte `offset`.
        case write(offset: UInt64, length: UInt64)
        case flush
        case getID
    }

    /// The shape of one chain as the device sees it, all lengths in bytes.
    public struct Shape: Equatable, Sendable {
        /// Device-readable bytes after the 16-byte header.
        public var readableData: UInt64
        /// Device-writable bytes before the final status byte.
        public var writableData: UInt64

        public init(readableData: UInt64, writableData: UInt64) {
            self.readableData = readableData
            self.writableData = writableData
        }
    }

    /// Decides a request. `header` must be exactly `headerSize` bytes.
    /// Returns the operation, or the status to report without any I/O.
    public static func plan(
        header: [UInt8], shape: Shape, capacity: UInt64,
        readOnly: Bool
    ) -> Result<Operation, Status> {
        precondition(header.count == headerSize, "the device reads exactly one header")
        // Inside the 16 bytes just checked: never the 0.
        let type = header.littleEndian(UInt32.self, at: 0) ?? 0
        let sector = header.littleEndian(UInt64.self, at: 8) ?? 0

        switch type {
        case Kind.read:
            // §5.2.6: IN data is device-writable only, a multiple of 512 bytes.
            guard shape.readableData == 0 else { return .failure(.ioError) }
            return transfer(sector: sector, length: shape.writableData, capacity: capacity).map {
                .read(offset: $0, length: shape.writableData)
            }
        case Kind.write:
            // §5.2.6.2: a read-only device fails writes and writes nothing.
            guard !readOnly else { return .failure(.ioError) }
            guard shape.writableData == 0 else { return .failure(.ioError) }
            return transfer(sector: sector, length: shape.readableData, capacity: capacity).map {
                .write(offset: $0, length: shape.readableData)
            }
        case Kind.flush:
            // §5.2.6: sector is unused for a flush; carry no data.
            guard shape.readableData == 0, shape.writableData == 0 else { return .failure(.ioError) }
            return .success(.flush)
        case Kind.getID:
            guard shape.readableData == 0, shape.writableData >= UInt64(identifierSize) else {
                return .failure(.ioError)
            }
            return .success(.getID)
        default:
            // §5.2.6.2: discard, write zeroes, secure erase, lifetime, zoned
            // and unknown commands are not offered.
            return .failure(.unsupported)
        }
    }

    /// §5.2.6.1: whole sectors, entirely below the capacity; checked
    /// without overflow. Returns the byte offset.
    static func transfer(sector: UInt64, length: UInt64, capacity: UInt64) -> Result<UInt64, Status> {
        guard length % sectorSize == 0 else { return .failure(.ioError) }
        let (end, overflow) = sector.addingReportingOverflow(length / sectorSize)
        guard !overflow, end <= capacity else { return .failure(.ioError) }
        // capacity * 512 fits in 64 bits (backends check it), so this does too.
        return .success(sector * sectorSize)
    }
}
