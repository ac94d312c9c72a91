#if canImport(Glibc)
import Glibc
#endif
import KilnSystem

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
public final class APIServer {
    public struct Configuration: Sendable {
        public var limits = HTTPRequestParser.Limits()
        public var maximumConnections = 16
        public var idleTimeoutMilliseconds: UInt64 = 10_000

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

    private static let listenerToken: UInt64 = 1 << 32
    private static let stopToken: UInt64 = 1 << 33

    /// Takes ownership of `listener`, a listening non-blocking socket.
    public init(listener: FileDescriptor, configuration: Configuration = Configuration(),
                handler: APIRequestHandler) throws {
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
        try? stopEvent.signal()
    }

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
            let timeout = connections.isEmpty ? -1 : Int32(min(configuration.idleTimeoutMilliseconds, 1000))
            for event in try epoll.wait(timeoutMilliseconds: timeout) {
                switch event.token {
                case Self.stopToken: return
                case Self.listenerToken: try acceptPending()
                default: service(Int32(truncatingIfNeeded: event.token), event.events)
                }
            }
            dropIdleConnections()
        }
    }

    private func acceptPending() throws {
        while let descriptor = try UnixSocket.accept(listener) {
            guard connections.count < configuration.maximumConnections else {
                descriptor.close()
                continue
            }
            do {
                try epoll.add(descriptor, [.readable, .peerClosed], token: UInt64(descriptor.rawValue))
            } catch {
                descriptor.close()
                continue
            }
            connections[descriptor.rawValue] = Connection(
                descriptor: descriptor, parser: HTTPRequestParser(limits: configuration.limits),
                lastActivity: MonotonicClock.nanoseconds())
        }
    }

    private func service(_ raw: Int32, _ events: Epoll.Events) {
        guard var connection = connections[raw] else { return }
        var open = true
        if events.contains(.writable) || !connection.pending.isEmpty {
            open = flush(&connection)
        }
        if open && connection.pending.isEmpty && !connection.closeAfterFlush
            && !events.isDisjoint(with: [.readable, .peerClosed, .hangUp, .error]) {
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
        let count = chunk.withUnsafeMutableBytes { Glibc.read(connection.descriptor.rawValue, $0.baseAddress, $0.count) }
        if count == 0 { return false }
        if count < 0 { return errno == EAGAIN || errno == EINTR }
        // Reading alone does not count as activity: a client that dribbles a
        // request byte by byte is still dropped after the idle timeout.
        connection.parser.append(chunk[0..<count])
        while connection.pending.isEmpty {
            do {
                guard let request = try connection.parser.nextRequest() else { break }
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
