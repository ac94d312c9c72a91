import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Answers one parsed request. The VMM's controller implements it; the
/// server never looks inside a request beyond HTTP.
public protocol APIRequestHandler: AnyObject {
    func handle(_ request: HTTPRequest) -> HTTPResponse
}

/// The API's HTTP/1.1 server on a Unix socket, run by the API thread.
///
/// Everything is non-blocking behind one epoll: a slow or half-open client
/// holds only its own connection, which is dropped after `idleTimeout`
/// without completing a request. Pipelined requests are answered in order, and
/// a connection whose replies are not being read stops being read itself, so
/// no buffer grows past the parser's limits plus one response.
///
/// Connection policy: at most `maximumConnections` are open. A client that
/// arrives when all are taken evicts the connection idle the longest, idle
/// meaning between requests (nothing buffered or readable, no reply
/// pending): a server may close an idle persistent connection at any time
/// and its client retries (RFC 9112 §9.5, §9.3.1). If none is idle, every one being in the
/// middle of a request, the newcomer gets 503 with `Connection: close`
/// (RFC 9110 §15.6.4) instead of a silent close; those requests still end
/// within the idle timeout. So keep-alive clients never lock others out.
///
/// An accept4 failure never ends the server. Running out of descriptors or
/// memory (EMFILE, ENFILE, ENOMEM, ENOBUFS) leaves the connection in the
/// backlog and, since the listener is level-triggered, would fail again at
/// once: the listener is unwatched for `acceptPauseMilliseconds` instead,
/// while open connections are still served. Any other unexpected error is
/// logged and paused the same way; ECONNABORTED, EINTR and EAGAIN are retried
/// by the next wake-up (accept(2)).
public final class APIServer {
    public struct Configuration: Sendable {
        public var limits = HTTPRequestParser.Limits()
        public var maximumConnections = 16
        public var idleTimeoutMilliseconds: UInt64 = 10_000
        /// How long the listener rests after a failed accept4.
        public var acceptPauseMilliseconds: UInt64 = 100
        /// Receives one line when accepting starts failing and one when it
        /// works again; nothing per retry.
        public var log: (@Sendable (String) -> Void)?

        public init() {}
    }

    private struct Connection {
        let descriptor: FileDescriptor
        var parser: HTTPRequestParser
        var pending: [UInt8] = []
        var closeAfterFlush = false
        var lastActivity: UInt64
    }

    private let listener: FileDescriptor
    private let configuration: Configuration
    private let handler: APIRequestHandler
    private let epoll: Epoll
    private let stopEvent: EventFD
    private var connections: [Int32: Connection] = [:]
    /// Set while the listener is unwatched after a failed accept4 (monotonic ns).
    private var acceptPausedUntil: UInt64?
    /// Failed accept4 calls since the last success, and the last errno, for the log.
    private var acceptFailures = 0
    private var lastAcceptErrno: Int32 = 0

    private static let listenerToken: UInt64 = 1 << 32
    private static let stopToken: UInt64 = 1 << 33

    /// Takes ownership of `listener`, a listening non-blocking socket.
    public init(
        listener: FileDescriptor, configuration: Configuration = Configuration(),
        handler: APIRequestHandler
    ) throws {
        self.listener = listener
        self.configuration = configuration
        self.handler = handler
        epoll = try Epoll()
        do {
            stopEvent = try EventFD()
            try epoll.add(listener, .readable, token: Self.listenerToken)
            try epoll.add(stopEvent.descriptor, .readable, token: Self.stopToken)
        } catch {
            epoll.close()
            throw error
        }
    }

    /// Asks `run()` to return; safe from any thread.
    public func stop() {
        stopHandle.stop()
    }

    /// What another thread keeps to stop the server: the server itself
    /// belongs to the thread in `run()`.
    public struct StopHandle: Sendable {
        fileprivate let event: EventFD
        public func stop() { try? event.signal() }
    }

    public var stopHandle: StopHandle { StopHandle(event: stopEvent) }

    /// Serves until `stop()`. Closes every connection and the listener on return.
    public func run() throws {
        defer {
            for connection in connections.values { connection.descriptor.close() }
            connections = [:]
            listener.close()
            stopEvent.close()
            epoll.close()
        }
        while true {
            let events = try epoll.wait(timeoutMilliseconds: waitTimeout())
            if events.contains(where: { $0.token == Self.stopToken }) { return }
            // Connections first, so one whose next request has just arrived
            // is not taken for idle and evicted by a newcomer.
            for event in events where event.token != Self.listenerToken {
                service(Int32(truncatingIfNeeded: event.token), event.events)
            }
            resumeAcceptingIfDue()
            if acceptPausedUntil == nil && events.contains(where: { $0.token == Self.listenerToken }) {
                acceptPending()
            }
            dropIdleConnections()
        }
    }

    /// Until the longest-idle connection passes the idle timeout, or an
    /// accept pause ends; forever when neither is due. No tick: a client
    /// holding a connection open does not wake the thread every second.
    private func waitTimeout() -> Int32 {
        let now = MonotonicClock.nanoseconds()
        var timeout: UInt64?
        if let oldest = connections.values.map(\.lastActivity).min() {
            let limit = configuration.idleTimeoutMilliseconds * 1_000_000
            let idle = now > oldest ? now - oldest : 0
            // A millisecond past it: the sweep drops what is idle for longer.
            timeout = idle > limit ? 0 : (limit - idle) / 1_000_000 + 1
        }
        if let until = acceptPausedUntil {
            let remaining = until > now ? (until - now + 999_999) / 1_000_000 : 0
            timeout = min(timeout ?? remaining, remaining)
        }
        return timeout.map { Int32(clamping: $0) } ?? -1
    }

    private func acceptPending() {
        while true {
            let descriptor: FileDescriptor?
            do {
                descriptor = try UnixSocket.accept(listener)
            } catch {
                pauseAccepting(after: error)
                return
            }
            guard let descriptor else { return }
            if acceptFailures > 0 {
                configuration.log?("API: accepting connections again after \(acceptFailures) failed accept4 calls")
                acceptFailures = 0
                lastAcceptErrno = 0
            }
            admit(descriptor)
        }
    }

    /// Stops watching the listener for `acceptPauseMilliseconds`: retrying at
    /// once would fail the same way and spin the thread.
    private func pauseAccepting(after error: Error) {
        let code = (error as? SystemError)?.errno ?? 0
        acceptFailures += 1
        let pause = configuration.acceptPauseMilliseconds
        if acceptFailures == 1 || code != lastAcceptErrno {
            lastAcceptErrno = code
            configuration.log?(
                "API: \(error); not accepting connections for \(pause) ms "
                    + "(\(connections.count) open), retrying after that")
        }
        acceptPausedUntil = MonotonicClock.nanoseconds() + pause * 1_000_000
        // DEL rather than MOD to no events: EPOLLHUP and EPOLLERR are
        // reported even when not asked for (epoll_ctl(2)).
        try? epoll.remove(listener)
    }

    private func resumeAcceptingIfDue() {
        guard let until = acceptPausedUntil, MonotonicClock.nanoseconds() >= until else { return }
        do {
            try epoll.add(listener, .readable, token: Self.listenerToken)
            acceptPausedUntil = nil
        } catch let error as SystemError where error.errno == EEXIST {
            acceptPausedUntil = nil // the DEL had failed: it is still watched
        } catch {
            // Watching it needs memory too: try again after another pause.
            pauseAccepting(after: error)
        }
    }

    /// Takes a new connection, making room by the connection policy above.
    private func admit(_ descriptor: FileDescriptor) {
        if connections.count >= configuration.maximumConnections && !evictIdleConnection() {
            refuseBusy(descriptor)
            return
        }
        do {
            try epoll.add(descriptor, [.readable, .peerClosed], token: UInt64(descriptor.rawValue))
        } catch {
            descriptor.close()
            return
        }
        connections[descriptor.rawValue] = Connection(
            descriptor: descriptor, parser: HTTPRequestParser(limits: configuration.limits),
            lastActivity: MonotonicClock.nanoseconds())
    }

    /// Closes the connection between requests for the longest time; false
    /// if none is. Each candidate is read first: bytes that arrived since
    /// the last wake-up (or before it was ever read) mean it is not idle.
    private func evictIdleConnection() -> Bool {
        var checked = Set<Int32>()
        while let (raw, candidate) =
            connections
            .filter({ !checked.contains($0.key) && Self.isIdle($0.value) })
            .min(by: { $0.value.lastActivity < $1.value.lastActivity })
        {
            checked.insert(raw)
            service(raw, .readable)
            guard let connection = connections[raw] else { return true } // it had hung up
            if Self.isIdle(connection) && connection.lastActivity == candidate.lastActivity {
                close(raw)
                return true
            }
        }
        return false
    }

    private static func isIdle(_ connection: Connection) -> Bool {
        connection.pending.isEmpty && !connection.closeAfterFlush && connection.parser.bufferedByteCount == 0
    }

    /// One non-blocking send of a 503 to a client there is no room for; a
    /// fresh socket's buffer takes it whole, and the client reads it before
    /// end of file even if it has not sent its request yet.
    private func refuseBusy(_ descriptor: FileDescriptor) {
        var response = APIError(
            status: .serviceUnavailable,
            message: "all \(configuration.maximumConnections) API connections are busy with requests; retry shortly"
        ).response
        response.closesConnection = true
        let bytes = response.encoded()
        _ = bytes.withUnsafeBytes { send(descriptor.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        descriptor.close()
    }

    private func service(_ raw: Int32, _ events: Epoll.Events) {
        guard var connection = connections[raw] else { return }
        var open = true
        if events.contains(.writable) || !connection.pending.isEmpty {
            open = flush(&connection)
        }
        if open && connection.pending.isEmpty && !connection.closeAfterFlush
            && !events.isDisjoint(with: [.readable, .peerClosed, .hangUp, .error])
        {
            open = receive(&connection)
        }
        if open && connection.pending.isEmpty && connection.closeAfterFlush { open = false }
        if open {
            let wanted: Epoll.Events = connection.pending.isEmpty ? [.readable, .peerClosed] : [.writable]
            open = (try? epoll.modify(connection.descriptor, wanted, token: UInt64(raw))) != nil
        }
        if open {
            connections[raw] = connection
        } else {
            close(raw)
        }
    }

    /// Reads what is available and answers every complete request. Returns
    /// false when the connection should close.
    private func receive(_ connection: inout Connection) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        let count = chunk.withUnsafeMutableBytes {
            Glibc.read(connection.descriptor.rawValue, $0.baseAddress, $0.count)
        }
        if count == 0 { return false }
        if count < 0 { return errno == EAGAIN || errno == EINTR }
        // Reading alone does not count as activity: a client that dribbles a
        // request byte by byte is still dropped after the idle timeout.
        connection.parser.append(chunk[0..<count])
        while connection.pending.isEmpty {
            do {
                guard let request = try connection.parser.nextRequest() else {
                    if connection.parser.takeInterimContinue() {
                        connection.pending = HTTPResponse.interimContinue
                        guard flush(&connection) else { return false }
                    }
                    break
                }
                connection.lastActivity = MonotonicClock.nanoseconds()
                var response = handler.handle(request)
                if !request.keepsConnectionAlive { response.closesConnection = true }
                connection.pending = response.encoded()
                connection.closeAfterFlush = response.closesConnection
            } catch let error as HTTPParseError {
                var response = APIError(status: error.status, message: error.description).response
                response.closesConnection = true
                connection.pending = response.encoded()
                connection.closeAfterFlush = true
            } catch {
                return false
            }
            guard flush(&connection) else { return false }
            if connection.closeAfterFlush { break }
        }
        return true
    }

    /// Writes as much of the pending response as the socket takes.
    private func flush(_ connection: inout Connection) -> Bool {
        while !connection.pending.isEmpty {
            let written = connection.pending.withUnsafeBytes {
                send(connection.descriptor.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                return errno == EAGAIN || errno == EINTR
            }
            connection.pending.removeFirst(written)
            connection.lastActivity = MonotonicClock.nanoseconds()
        }
        return true
    }

    private func dropIdleConnections() {
        let now = MonotonicClock.nanoseconds()
        let limit = configuration.idleTimeoutMilliseconds * 1_000_000
        for (raw, connection) in connections where now - connection.lastActivity > limit {
            close(raw)
        }
    }

    private func close(_ raw: Int32) {
        guard let connection = connections.removeValue(forKey: raw) else { return }
        try? epoll.remove(connection.descriptor)
        connection.descriptor.close()
    }
}
