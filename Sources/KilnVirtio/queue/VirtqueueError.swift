import KilnMemory

/// A broken queue: the driver put something in guest memory that the spec
/// forbids. The transport answers every one of these the same way, by
/// setting DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2) and serving the queue no
/// more until the driver resets the device.
public struct VirtqueueError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Reason: Equatable, Sendable {
        /// The available index moved more than the queue size (§2.7.6).
        case availableIndexJump(last: UInt16, now: UInt16)
        /// A head or `next` index at or above the table's size (§2.7.5).
        case descriptorIndexOutOfRange(UInt32)
        /// More descriptors than the queue size or indirect table allows:
        /// also how a loop in the `next` links shows (§2.7.5.2, §2.7.5.3.1).
        case chainTooLong(limit: Int)
        /// A device-readable descriptor after a device-writable one (§2.7.4.2).
        case readableAfterWritable
        /// INDIRECT inside an indirect table, INDIRECT with NEXT, or INDIRECT
        /// without VIRTIO_F_INDIRECT_DESC (§2.7.5.3.1).
        case indirectNotAllowed
        /// An indirect table whose length is zero or not a multiple of 16,
        /// or holds more entries than the device allows (§2.7.5.3).
        case badIndirectTable(length: UInt32)
        /// A buffer, ring or table outside guest memory or overflowing.
        case memory(GuestRange)
        /// The driver made the queue live with a bad layout (§2.7, §4.2.2).
        case badLayout(String)
        /// The device found the request structurally unusable: for example
        /// no writable byte to put a status in (§5.2.6).
        case malformedRequest(String)
    }

    public let queue: Int
    public let reason: Reason

    public init(queue: Int, _ reason: Reason) {
        self.queue = queue
        self.reason = reason
    }

    public var description: String {
        let what: String
        switch reason {
        case .availableIndexJump(let last, let now):
            what = "available index jumped from \(last) to \(now), more than the queue size"
        case .descriptorIndexOutOfRange(let index): what = "descriptor index \(index) is outside the table"
        case .chainTooLong(let limit): what = "descriptor chain longer than \(limit) (or a loop)"
        case .readableAfterWritable: what = "device-readable descriptor after a device-writable one"
        case .indirectNotAllowed: what = "indirect descriptor where it is not allowed"
        case .badIndirectTable(let length): what = "indirect table of \(length) bytes"
        case .memory(let range): what = "guest range \(range) is not inside guest memory"
        case .badLayout(let detail): what = "bad queue layout: \(detail)"
        case .malformedRequest(let detail): what = "malformed request: \(detail)"
        }
        return "virtqueue \(queue): \(what)"
    }
}
