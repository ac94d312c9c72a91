import CKiln

#if canImport(Glibc)
    import Glibc
#endif

/// An eventfd(2) counter: wakes an event loop from another thread, and is
/// the object KVM's irqfds and ioeventfds signal through (the one way kiln
/// makes an eventfd).
public struct EventFD: Sendable {
    public let descriptor: FileDescriptor

    public init(nonBlocking: Bool = true) throws {
        let flags = Int32(EFD_CLOEXEC) | (nonBlocking ? Int32(EFD_NONBLOCK) : 0)
        descriptor = FileDescriptor(rawValue: try check("eventfd") { eventfd(0, flags) })
    }

    public func close() { descriptor.close() }

    public func signal(_ count: UInt64 = 1) throws {
        var value = count
        try check("write(eventfd)") { Glibc.write(descriptor.rawValue, &value, 8) }
    }

    /// Reads and resets the counter; 0 when nothing was signalled (non-blocking).
    public func drain() throws -> UInt64 {
        var value: UInt64 = 0
        let result = Glibc.read(descriptor.rawValue, &value, 8)
        if result == -1 {
            if errno == EAGAIN { return 0 }
            throw SystemError.current("read(eventfd)")
        }
        return value
    }
}
