import KilnSystem
import KilnVirtio

#if canImport(Glibc)
    import Glibc
#endif

/// Sectors in a file or block device, read and written with pread/pwrite at
/// explicit offsets (no shared file position, so queues could run in
/// parallel later). The descriptor is the caller's to close. The device
/// model (KilnVirtio) sees only the `BlockBackend` protocol; the system
/// calls stay here, in the VMM.
public final class FileBlockBackend: BlockBackend {
    public let file: FileDescriptor
    public let sectorCount: UInt64
    public let isReadOnly: Bool
    public let identifier: [UInt8]
    /// Whether a flush reaches the disk (fdatasync): Firecracker's
    /// `cache_type` "Writeback". "Unsafe" acknowledges flushes at once.
    public let syncOnFlush: Bool

    /// Sizes the disk from the file: a trailing partial sector is not exposed.
    public init(file: FileDescriptor, readOnly: Bool, syncOnFlush: Bool = true, identifier: String) throws {
        self.file = file
        self.syncOnFlush = syncOnFlush
        let end = try check("lseek", subject: "\(file)") { lseek(file.rawValue, 0, SEEK_END) }
        sectorCount = UInt64(end) / BlockRequest.sectorSize
        isReadOnly = readOnly
        self.identifier = Array(identifier.utf8.prefix(BlockRequest.identifierSize))
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let count = try check("pread", subject: "\(file)") {
                pread(file.rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            }
            // The file shrank under the VMM: report it rather than pass stale bytes.
            guard count > 0 else { throw SystemError("pread", subject: "\(file): unexpected end of file", errno: EIO) }
            done += count
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard !isReadOnly else { throw SystemError("pwrite", subject: "\(file)", errno: EROFS) }
        var done = 0
        while done < buffer.count {
            done += try check("pwrite", subject: "\(file)") {
                pwrite(file.rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            }
        }
    }

    public func flush() throws {
        guard syncOnFlush else { return }
        try check("fdatasync", subject: "\(file)") { fdatasync(file.rawValue) }
    }
}
