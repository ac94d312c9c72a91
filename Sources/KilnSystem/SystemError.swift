#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A failed system call: the operation that failed, what it was applied to,
/// and the errno it returned.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    public let operation: String
    public let subject: String?
    public let errno: Int32

    public init(_ operation: String, subject: String? = nil, errno: Int32) {
        self.operation = operation
        self.subject = subject
        self.errno = errno
    }

    /// Captures the calling thread's current errno.
    public static func current(_ operation: String, subject: String? = nil) -> SystemError {
        SystemError(operation, subject: subject, errno: Glibc.errno)
    }

    public var errnoName: String { ErrnoNames.name(of: errno) ?? "errno \(errno)" }

    public var description: String {
        let message = String(cString: strerror(errno))
        if let subject {
            return "\(operation) \(subject): \(message) (\(errnoName))"
        }
        return "\(operation): \(message) (\(errnoName))"
    }
}

/// Runs `body` again while it fails with EINTR. `body` returns -1 and sets
/// errno on failure, as libc calls do.
@inline(__always)
public func retryingOnInterrupt<T: FixedWidthInteger>(_ body: () -> T) -> T {
    while true {
        let result = body()
        if result == -1 && Glibc.errno == EINTR { continue }
        return result
    }
}

/// Calls a libc function that returns -1 on failure and throws `SystemError`.
@discardableResult
@inline(__always)
public func check<T: FixedWidthInteger>(
    _ operation: String, subject: String? = nil, _ body: () -> T
) throws -> T {
    let result = retryingOnInterrupt(body)
    if result == -1 { throw SystemError.current(operation, subject: subject) }
    return result
}
