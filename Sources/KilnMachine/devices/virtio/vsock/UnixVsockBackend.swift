import KilnSystem
import KilnTelemetry
import KilnVirtio

#if canImport(Glibc)
    import Glibc
#endif

/// vsock's host side in Firecracker's model (its docs/vsock.md): Unix
/// stream sockets, all non-blocking, served on the event loop.
///
/// - Host → guest: kiln listens on `uds_path`. A peer connects and writes
///   `CONNECT <port>\n`; the guest is asked (REQUEST) and, once it accepts,
///   the peer reads `OK <host port>\n` and the rest is the stream. A bad
///   line, no line within `handshakeTimeoutNanoseconds`, or a guest that
///   refuses or does not answer closes the peer's connection.
/// - Guest → host: a REQUEST for host port P connects to `<uds_path>_P`;
///   no listener there means RST.
///
/// Paths are as configured, so under the jailer they are inside the jail.
///
/// Locking: every field is touched with the device's slot lock held
/// (`serialize`): the device calls in while serving a queue, the event
/// loop's handlers take the lock first, and a driver's reset (a register
/// write on a vCPU thread) reaches `close` too. So `close` only marks a
/// stream released and wakes the loop, which unsubscribes and closes it:
/// the event loop is touched by its own thread alone.
final class UnixVsockBackend: VsockBackend {
    /// Accepted peers that have not finished their `CONNECT` line.
    static let maxHandshakes = 16
    static let handshakeTimeoutNanoseconds: UInt64 = 2_000_000_000

    /// Kept alive while the device serves it.
    private let socket: VsockHostSocket
    var path: String { socket.path }
    var listener: FileDescriptor { socket.listener }
    private let counters: VsockCounterSink?
    private let log: (String) -> Void

    private struct HostStream {
        let descriptor: FileDescriptor
        var token: EventLoop.Token?
        var events: Epoll.Events = []
        /// The peer hung up or the socket failed: epoll reports that
        /// whatever is asked, so the stream is no longer watched; reads and
        /// writes now end at once (data, end of file, EPIPE), on demand.
        var hungUp = false
    }

    private struct PendingHandshake {
        let descriptor: FileDescriptor
        var token: EventLoop.Token?
        var parser = VsockHostHandshake()
        let deadline: UInt64
    }

    private var streams: [VsockConnectionKey: HostStream] = [:]
    private var handshakes: [Int32: PendingHandshake] = [:]
    /// Streams ended off the event loop's thread, closed by it.
    private var released: [HostStream] = []
    private let releaseEvent: EventFD
    private var loop: EventLoop?
    private var tokens: [EventLoop.Token] = []
    private weak var device: VsockDevice?
    /// Set while something has a deadline (a handshake, a REQUEST the guest
    /// has not answered, a stream draining to its peer), for the earliest:
    /// an idle device, open streams or not, leaves the loop asleep.
    private var deadlineTimer: (token: EventLoop.Token, deadline: UInt64)?
    private var serialize: (() -> Void) -> Void = { $0() }
    private var serveReceive: () -> Void = {}

    /// Serves `socket`, bound when the device was configured; the socket
    /// (and its file) stays its configurer's to remove.
    init(socket: VsockHostSocket, counters: VsockCounterSink?, log: @escaping (String) -> Void) throws {
        self.socket = socket
        self.counters = counters
        self.log = log
        releaseEvent = try EventFD()
    }

    deinit {
        for stream in streams.values { stream.descriptor.close() }
        for stream in released { stream.descriptor.close() }
        for handshake in handshakes.values { handshake.descriptor.close() }
        releaseEvent.close()
    }

    /// Connects the backend to its device and serves it on `loop`:
    /// `serialize` runs a body under the device's lock, `serveReceive`
    /// fills the guest's receive queue (with the lock taken inside).
    func attach(
        device: VsockDevice, loop: EventLoop, serialize: @escaping (() -> Void) -> Void,
        serveReceive: @escaping () -> Void
    ) throws -> [EventLoop.Token] {
        self.device = device
        self.loop = loop
        self.serialize = serialize
        self.serveReceive = serveReceive
        tokens.append(try loop.subscribe(listener) { [weak self] _ in self?.acceptAll() })
        let releaseEvent = releaseEvent
        tokens.append(
            try loop.subscribe(releaseEvent.descriptor) { [weak self] _ in
                _ = try? releaseEvent.drain()
                self?.serialize { self?.closeReleased() }
            })
        return tokens
    }

    /// Open host streams and handshakes, for tests.
    var openStreamCount: Int { streams.count + handshakes.count + released.count }

    /// The deadline the timer is set for, if any, for tests.
    var timedDeadline: UInt64? { deadlineTimer?.deadline }

    // MARK: VsockBackend (the device, under its lock)

    func connect(_ key: VsockConnectionKey) -> Bool {
        guard let loop else { return false }
        let target = "\(path)_\(key.hostPort)"
        let descriptor: FileDescriptor
        do {
            descriptor = try UnixSocket.connect(path: target, nonBlocking: true)
        } catch {
            return false
        }
        var stream = HostStream(descriptor: descriptor)
        do {
            stream.token = try loop.subscribe(descriptor, events: []) { [weak self] events in
                self?.streamEvent(key, descriptor, events)
            }
        } catch {
            descriptor.close()
            return false
        }
        streams[key] = stream
        return true
    }

    func read(_ key: VsockConnectionKey, into buffer: UnsafeMutableRawBufferPointer) -> VsockHostIO {
        guard let stream = streams[key] else { return .failed }
        while true {
            let count = Glibc.read(stream.descriptor.rawValue, buffer.baseAddress, buffer.count)
            if count > 0 { return .transferred(count) }
            if count == 0 { return .endOfStream }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: return .failed
            }
        }
    }

    func write(_ key: VsockConnectionKey, _ bytes: UnsafeRawBufferPointer) -> VsockHostIO {
        guard let stream = streams[key] else { return .failed }
        while true {
            // MSG_NOSIGNAL: a peer gone away is EPIPE, never SIGPIPE.
            let count = send(stream.descriptor.rawValue, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if count >= 0 { return .transferred(count) }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock
            default: return .failed
            }
        }
    }

    func shutdownWrite(_ key: VsockConnectionKey) {
        guard let stream = streams[key] else { return }
        _ = shutdown(stream.descriptor.rawValue, Int32(SHUT_WR))
    }

    func close(_ key: VsockConnectionKey) {
        guard let stream = streams.removeValue(forKey: key) else { return }
        released.append(stream)
        try? releaseEvent.signal()
    }

    // MARK: The event loop's handlers

    private func closeReleased() {
        for stream in released {
            if let token = stream.token { loop?.cancel(token) }
            stream.descriptor.close()
        }
        released = []
    }

    /// Takes every waiting peer; past the caps one is closed at once (its
    /// connect succeeded, so it reads end of file rather than hanging).
    private func acceptAll() {
        while true {
            let accepted: FileDescriptor?
            do {
                accepted = try UnixSocket.accept(listener)
            } catch {
                log("vsock: accept on \(path): \(error)")
                return
            }
            guard let descriptor = accepted else { return }
            var full = false
            serialize {
                let connections = self.device?.table.count ?? 0
                full =
                    self.handshakes.count >= Self.maxHandshakes
                    || connections + self.handshakes.count >= (self.device?.table.limits.maxConnections ?? 0)
            }
            if full {
                counters?.add(.connectionsKilled, 1)
                descriptor.close()
                continue
            }
            var handshake = PendingHandshake(
                descriptor: descriptor,
                deadline: MonotonicClock.nanoseconds() + Self.handshakeTimeoutNanoseconds)
            do {
                handshake.token = try loop?.subscribe(descriptor) { [weak self] _ in self?.handshakeReadable(descriptor)
                }
            } catch {
                descriptor.close()
                continue
            }
            serialize {
                self.handshakes[descriptor.rawValue] = handshake
                self.armDeadlineTimer()
            }
        }
    }

    /// Reads the `CONNECT` line a byte at a time, so no byte after it is
    /// taken: those are the peer's first data for the guest.
    private func handshakeReadable(_ descriptor: FileDescriptor) {
        var requested: UInt32?
        var failed = false
        serialize {
            guard var handshake = self.handshakes[descriptor.rawValue] else { return }
            var byte: UInt8 = 0
            while requested == nil && !failed {
                let count = Glibc.read(descriptor.rawValue, &byte, 1)
                if count < 0 && errno == EINTR { continue }
                if count < 0 && errno == EAGAIN { break }
                guard count == 1 else { failed = true; break }
                switch handshake.parser.feed(byte) {
                case .port(let port)?: requested = port
                case .invalid(let reason)?:
                    self.log("vsock: a host peer on \(self.path) sent a bad handshake: \(reason)")
                    failed = true
                case nil: break
                }
            }
            self.handshakes[descriptor.rawValue] = handshake
            if failed {
                self.dropHandshake(descriptor)
                return
            }
            guard let port = requested else { return }
            self.handshakes[descriptor.rawValue] = nil
            guard let key = self.device?.hostConnectRequested(port: port) else {
                if let token = handshake.token { self.loop?.cancel(token) }
                descriptor.close()
                return
            }
            // The same subscription now serves the stream (nothing watched
            // until the guest accepts and the table asks).
            if let token = handshake.token { self.loop?.cancel(token) }
            var stream = HostStream(descriptor: descriptor)
            stream.token = try? self.loop?.subscribe(descriptor, events: []) { [weak self] events in
                self?.streamEvent(key, descriptor, events)
            }
            self.streams[key] = stream
        }
        afterHostEvent()
    }

    private func dropHandshake(_ descriptor: FileDescriptor) {
        guard let handshake = handshakes.removeValue(forKey: descriptor.rawValue) else { return }
        if let token = handshake.token { loop?.cancel(token) }
        handshake.descriptor.close()
    }

    private func streamEvent(_ key: VsockConnectionKey, _ descriptor: FileDescriptor, _ events: Epoll.Events) {
        serialize {
            // The key may name a newer stream by now; this event is stale then.
            guard self.streams[key]?.descriptor == descriptor else { return }
            let hungUp = !events.isDisjoint(with: [.hangUp, .error])
            if hungUp { self.streams[key]?.hungUp = true }
            self.device?.hostReady(
                key, readable: hungUp || events.contains(.readable),
                writable: hungUp || events.contains(.writable))
        }
        afterHostEvent()
    }

    private func checkDeadlines() {
        let now = MonotonicClock.nanoseconds()
        serialize {
            self.deadlineTimer = nil
            for (raw, handshake) in self.handshakes where now >= handshake.deadline {
                self.log("vsock: a host peer on \(self.path) sent no CONNECT line in time")
                self.dropHandshake(FileDescriptor(rawValue: raw))
            }
            self.device?.expire()
        }
        afterHostEvent()
    }

    /// After host-side work: the guest may have packets due, and what each
    /// stream waits for may have changed.
    private func afterHostEvent() {
        serveReceive()
        serialize { self.refreshInterest() }
    }

    /// After the device served a queue (the caller holds its lock): a guest
    /// packet may have opened a stream, given credit or buffered bytes.
    func queueServed() { refreshInterest() }

    /// Watches each stream for what its connection waits for, and nothing
    /// else: level-triggered readiness the device cannot use yet (no guest
    /// credit, no buffered bytes) would wake the loop in a spin.
    private func refreshInterest() {
        armDeadlineTimer()
        guard let device, let loop else { return }
        for (key, stream) in streams {
            if stream.hungUp {
                if let token = stream.token { loop.cancel(token) }
                streams[key]?.token = nil
                continue
            }
            let wanted = device.table.interest(key)
            var events: Epoll.Events = []
            if wanted.read { events.insert(.readable) }
            if wanted.write { events.insert(.writable) }
            guard events != stream.events, let token = stream.token else { continue }
            try? loop.modify(token, events: events)
            streams[key]?.events = events
        }
    }

    /// Sets the timer for the earliest deadline, or none (under the lock,
    /// on the loop's thread: every caller is a loop handler).
    private func armDeadlineTimer() {
        guard let loop else { return }
        let next = (handshakes.values.map(\.deadline) + [device?.table.nextDeadline].compactMap { $0 }).min()
        if deadlineTimer?.deadline == next { return }
        if let current = deadlineTimer { loop.cancel(current.token) }
        deadlineTimer = nil
        guard let next else { return }
        let now = MonotonicClock.nanoseconds()
        // Rounded up: the timer must find the deadline passed.
        let milliseconds = next > now ? (next - now + 999_999) / 1_000_000 : 0
        let token = loop.schedule(afterMilliseconds: milliseconds) { [weak self] in self?.checkDeadlines() }
        deadlineTimer = (token, next)
    }
}

/// The device's counters in the VMM's registry, group `vsock`.
final class RegistryVsockCounters: VsockCounterSink {
    private let counters: [VsockCounter: Counter]

    init(registry: MetricsRegistry, group: String = "vsock") {
        var counters: [VsockCounter: Counter] = [:]
        for counter in VsockCounter.allCases { counters[counter] = registry.counter(group, counter.rawValue) }
        self.counters = counters
    }

    func add(_ counter: VsockCounter, _ value: UInt64) { counters[counter]?.increment(by: value) }
}
