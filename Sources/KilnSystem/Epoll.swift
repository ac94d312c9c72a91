import CKiln

#if canImport(Glibc)
    import Glibc
#endif

/// An epoll instance: the event loop's one blocking point.
public struct Epoll {
    public let descriptor: FileDescriptor

    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: ckiln_epollin())
        public static let writable = Events(rawValue: ckiln_epollout())
        public static let error = Events(rawValue: ckiln_epollerr())
        public static let hangUp = Events(rawValue: ckiln_epollhup())
        public static let peerClosed = Events(rawValue: ckiln_epollrdhup())
    }

    public struct Event: Sendable {
        public let token: UInt64
        public let events: Events
    }

    public init() throws {
        descriptor = FileDescriptor(rawValue: try check("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) })
    }

    public func close() { descriptor.close() }

    /// Watches `fd`; `token` comes back with its events.
    public func add(_ fd: FileDescriptor, _ events: Events, token: UInt64) throws {
        try control(EPOLL_CTL_ADD, fd, events, token)
    }

    public func modify(_ fd: FileDescriptor, _ events: Events, token: UInt64) throws {
        try control(EPOLL_CTL_MOD, fd, events, token)
    }

    public func remove(_ fd: FileDescriptor) throws {
        try control(EPOLL_CTL_DEL, fd, [], 0)
    }

    private func control(_ operation: Int32, _ fd: FileDescriptor, _ events: Events, _ token: UInt64) throws {
        var event = epoll_event()
        event.events = events.rawValue
        event.data.u64 = token
        try check("epoll_ctl", subject: fd.description) {
            epoll_ctl(descriptor.rawValue, operation, fd.rawValue, &event)
        }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever). An interrupted wait
    /// returns no events rather than an error, so signal handlers can run.
    public func wait(maximumEvents: Int = 32, timeoutMilliseconds: Int32) throws -> [Event] {
        var raw = [epoll_event](repeating: epoll_event(), count: maximumEvents)
        let count = epoll_wait(descriptor.rawValue, &raw, Int32(maximumEvents), timeoutMilliseconds)
        if count == -1 {
            if errno == EINTR { return [] }
            throw SystemError.current("epoll_wait")
        }
        return raw.prefix(Int(count)).map { Event(token: $0.data.u64, events: Events(rawValue: $0.events)) }
    }
}
