import CKiln
import KilnSystem
import KilnTelemetry
import KilnVirtio

#if canImport(Glibc)
    import Glibc
#endif

// The host side of the virtio devices: files, TAPs and the kernel's random
// pool. KilnVirtio stays free of system calls; these live here, next to the
// machine that owns their descriptors.

/// A drive's backing file, opened once before the guest runs and closed
/// with the machine. Opening never blocks (a FIFO or a device that would
/// wait is refused by type before any read), and only regular files and
/// block devices are accepted.
final class DriveFile {
    let descriptor: FileDescriptor
    let backend: FileBlockBackend
    /// Bytes past the last whole sector of a regular file, which the guest
    /// does not see (a block device is whole sectors).
    let trailingBytes: Int

    init(path: String, readOnly: Bool, syncOnFlush: Bool, identifier: String) throws {
        let flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
        let file = try FileDescriptor.open(path, flags)
        do {
            var status = stat()
            try check("fstat", subject: path) { fstat(file.rawValue, &status) }
            let type = status.st_mode & S_IFMT
            guard type == S_IFREG || type == S_IFBLK else {
                throw BootInputError.driveNotFileOrBlockDevice(driveID: identifier, path: path)
            }
            // Regular files and block devices ignore O_NONBLOCK for I/O; the
            // flag only kept the open itself from waiting.
            backend = try FileBlockBackend(
                file: file, readOnly: readOnly, syncOnFlush: syncOnFlush,
                identifier: identifier)
            trailingBytes = type == S_IFREG ? Int(status.st_size % off_t(BlockRequest.sectorSize)) : 0
        } catch {
            file.close()
            throw error
        }
        descriptor = file
    }

    deinit { descriptor.close() }
}

/// A drive's backend as the device sees it: the open file, swappable at run
/// time (PATCH /drives with a new `path_on_host`), with its traffic counted
/// under Firecracker's metric names.
final class CountedBlockBackend: BlockBackend {
    /// Replaced only with the device's slot lock held (the device reads it
    /// under the same lock).
    var inner: BlockBackend
    let readBytes, writeBytes, flushes, readCount, writeCount: Counter

    init(_ inner: BlockBackend, registry: MetricsRegistry, group: String) {
        self.inner = inner
        readBytes = registry.counter(group, "read_bytes")
        writeBytes = registry.counter(group, "write_bytes")
        flushes = registry.counter(group, "flush_count")
        readCount = registry.counter(group, "read_count")
        writeCount = registry.counter(group, "write_count")
    }

    var sectorCount: UInt64 { inner.sectorCount }
    var isReadOnly: Bool { inner.isReadOnly }
    var identifier: [UInt8] { inner.identifier }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try inner.read(into: buffer, at: offset)
        readCount.increment()
        readBytes.increment(by: UInt64(buffer.count))
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try inner.write(buffer, at: offset)
        writeCount.increment()
        writeBytes.increment(by: UInt64(buffer.count))
    }

    func flush() throws {
        try inner.flush()
        flushes.increment()
    }
}

/// A TAP interface the orchestrator created (in the VMM's network
/// namespace), opened by name through /dev/net/tun, non-blocking. Frames are
/// plain Ethernet: no IFF_VNET_HDR, since the device offers no offloads.
///
/// A frame read from the TAP waits in `pending` until the guest has a
/// receive buffer; while one waits the event loop stops watching the TAP,
/// so a guest that posts no buffers costs nothing and memory stays bounded
/// to one frame.
final class TapNetBackend: NetBackend {
    let name: String
    let descriptor: FileDescriptor
    private var buffer = [UInt8](repeating: 0, count: NetDevice.maxFrameSize)
    private(set) var pending: [UInt8]?
    let rxBytes, rxFrames, txBytes, txFrames, txFailures: Counter

    init(name: String, registry: MetricsRegistry, group: String) throws {
        self.name = name
        descriptor = try Self.openTap(name)
        rxBytes = registry.counter(group, "rx_bytes_count")
        rxFrames = registry.counter(group, "rx_packets_count")
        txBytes = registry.counter(group, "tx_bytes_count")
        txFrames = registry.counter(group, "tx_packets_count")
        txFailures = registry.counter(group, "tx_fails")
    }

    deinit { descriptor.close() }

    /// Attaches to the persistent TAP `name` through /dev/net/tun; ENODEV
    /// means the orchestrator has not made it.
    static func openTap(_ name: String) throws -> FileDescriptor {
        let fd = ckiln_tap_open(name)
        guard fd >= 0 else {
            let error = errno
            throw error == ENODEV
                ? BootInputError.tapMissing(name: name)
                : BootInputError.tapUnavailable(name: name, SystemError("TUNSETIFF", errno: error))
        }
        return FileDescriptor(rawValue: fd)
    }

    func send(_ frame: [UInt8]) throws {
        let written = frame.withUnsafeBytes { Glibc.write(descriptor.rawValue, $0.baseAddress, $0.count) }
        // A full TAP queue drops the frame, as a busy wire would: the guest's
        // stack retransmits. Never block the event loop on it.
        guard written == frame.count else {
            txFailures.increment()
            throw SystemError("write", subject: "TAP \(name)", errno: written < 0 ? errno : EIO)
        }
        txFrames.increment()
        txBytes.increment(by: UInt64(frame.count))
    }

    func peekFrame() -> [UInt8]? {
        if pending == nil {
            let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor.rawValue, $0.baseAddress, $0.count) }
            if count > 0 { pending = Array(buffer[0..<count]) }
        }
        return pending
    }

    func consumeFrame() {
        if let frame = pending {
            rxFrames.increment()
            rxBytes.increment(by: UInt64(frame.count))
        }
        pending = nil
    }
}

/// The kernel's random pool through getrandom(2): no descriptor and no
/// device node in the jail.
final class RandomEntropySource: EntropySource {
    let bytes: Counter

    init(registry: MetricsRegistry, group: String) { bytes = registry.counter(group, "entropy_bytes") }

    func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        var done = 0
        while done < buffer.count {
            let count = getrandom(buffer.baseAddress! + done, buffer.count - done, 0)
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemError.current("getrandom")
            }
            done += count
        }
        bytes.increment(by: UInt64(buffer.count))
    }
}
