import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Where a block device's sectors live. Offsets and lengths reaching here
/// were already checked against `sectorCount` by `BlockRequest.plan`.
public protocol BlockBackend: AnyObject {
    /// The capacity in 512-byte sectors (virtio 1.2 §5.2.4).
    var sectorCount: UInt64 { get }
    var isReadOnly: Bool { get }
    /// Up to 20 bytes for GET_ID (§5.2.6).
    var identifier: [UInt8] { get }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Makes completed writes durable (VIRTIO_BLK_T_FLUSH).
    func flush() throws
}

/// Sectors in memory, for tests and fuzzing.
public final class MemoryBlockBackend: BlockBackend {
    public private(set) var bytes: [UInt8]
    public let isReadOnly: Bool
    public let identifier: [UInt8]
    public private(set) var flushCount = 0
    /// Every write the device asked for, refused or not.
    public private(set) var writeCalls = 0

    /// `bytes` is cut to whole sectors.
    public init(bytes: [UInt8], readOnly: Bool = false, identifier: String = "kiln-memory") {
        self.bytes = Array(bytes.prefix(bytes.count / Int(BlockRequest.sectorSize) * Int(BlockRequest.sectorSize)))
        self.isReadOnly = readOnly
        self.identifier = Array(identifier.utf8.prefix(BlockRequest.identifierSize))
    }

    public var sectorCount: UInt64 { UInt64(bytes.count) / BlockRequest.sectorSize }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        let range = try checkedRange(offset, buffer.count)
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[range])) }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        writeCalls += 1
        guard !isReadOnly else { throw SystemError("write", subject: "read-only memory disk", errno: EROFS) }
        let range = try checkedRange(offset, buffer.count)
        bytes.replaceSubrange(range, with: buffer)
    }

    public func flush() throws { flushCount += 1 }

    private func checkedRange(_ offset: UInt64, _ count: Int) throws -> Range<Int> {
        guard offset <= UInt64(bytes.count), UInt64(count) <= UInt64(bytes.count) - offset else {
            throw SystemError("access", subject: "memory disk offset \(offset)", errno: EINVAL)
        }
        return Int(offset)..<Int(offset) + count
    }
}
