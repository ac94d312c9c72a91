import CKiln

#if canImport(Glibc)
    import Glibc
#endif

/// An owned-by-convention file descriptor with typed, EINTR-safe operations.
/// It is a plain value: closing is explicit, as with swift-system's type.
public struct FileDescriptor: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let standardInput = FileDescriptor(rawValue: 0)
    public static let standardOutput = FileDescriptor(rawValue: 1)
    public static let standardError = FileDescriptor(rawValue: 2)

    public var description: String { "fd \(rawValue)" }

    /// open(2). `O_CLOEXEC` is always added: descriptors cross an exec only
    /// when a caller clears it on purpose.
    public static func open(
        _ path: String, _ flags: Int32, mode: UInt32 = 0o600
    ) throws -> FileDescriptor {
        let fd = try check("open", subject: path) {
            ckiln_open(path, flags | O_CLOEXEC, mode)
        }
        return FileDescriptor(rawValue: fd)
    }

    public func close() {
        // Linux releases the descriptor even when close(2) reports EINTR,
        // so it must not be retried.
        _ = Glibc.close(rawValue)
    }

    /// Runs `body` and closes the descriptor afterwards, whatever happens.
    @discardableResult
    public func closeAfter<R>(_ body: (FileDescriptor) throws -> R) rethrows -> R {
        defer { close() }
        return try body(self)
    }

    /// One read(2); returns the byte count (0 at end of file).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try check("read") { Glibc.read(rawValue, buffer.baseAddress, buffer.count) }
    }

    /// One write(2); returns the byte count written.
    public func write(_ buffer: UnsafeRawBufferPointer) throws -> Int {
        try check("write") { Glibc.write(rawValue, buffer.baseAddress, buffer.count) }
    }

    /// Writes every byte, looping over short writes.
    public func writeAll<C: Collection>(_ bytes: C) throws where C.Element == UInt8 {
        let array = Array(bytes)
        var offset = 0
        while offset < array.count {
            let written = try array.withUnsafeBytes { (raw) throws -> Int in
                try write(UnsafeRawBufferPointer(rebasing: raw[offset...]))
            }
            offset += written
        }
    }

    /// A message for a person (stderr): one write(2), unbuffered, with
    /// nothing left to do when it fails.
    public func write(message: String) {
        try? writeAll(message.utf8)
    }

    /// Reads until end of file, refusing more than `limit` bytes.
    public func readAll(limit: Int = 64 << 20) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = try chunk.withUnsafeMutableBytes { (raw) throws -> Int in
                try read(into: raw)
            }
            if count == 0 { return result }
            if result.count + count > limit { throw SystemError("read", errno: EFBIG) }
            result.append(contentsOf: chunk[0..<count])
        }
    }

    /// Sets or clears FD_CLOEXEC.
    public func setCloseOnExec(_ enabled: Bool) throws {
        let flags = try check("fcntl(F_GETFD)") { ckiln_fcntl_int(rawValue, F_GETFD, 0) }
        let updated = enabled ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC
        try check("fcntl(F_SETFD)") { ckiln_fcntl_int(rawValue, F_SETFD, updated) }
    }
}
