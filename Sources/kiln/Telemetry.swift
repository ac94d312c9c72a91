import CKiln
import KilnAPI
import KilnJSON
import KilnSystem
import KilnTelemetry

#if canImport(Glibc)
    import Glibc
#endif

/// Where metrics snapshots go (`PUT /metrics`, or the config file's
/// `metrics`): one JSON object per line, on `FlushMetrics`, every minute
/// (Firecracker's period) and when kiln ends.
final class MetricsSink {
    let registry: MetricsRegistry
    private var destination: FileDescriptor?
    private let seccompTraps: Gauge
    private var lastFlush = MonotonicClock.nanoseconds()
    static let periodNanoseconds: UInt64 = 60_000_000_000

    init(registry: MetricsRegistry) {
        self.registry = registry
        seccompTraps = registry.gauge("seccomp", "num_faults")
    }

    /// A file (appended to) or a FIFO; non-blocking, so a reader that stops
    /// reading costs snapshots, never a stalled event loop.
    func open(path: String) throws {
        let fd = try FileDescriptor.open(path, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, mode: 0o600)
        destination?.close()
        destination = fd
    }

    var isConfigured: Bool { destination != nil }

    func flush() throws {
        guard let destination else {
            throw MetricsSinkError.noDestination
        }
        lastFlush = MonotonicClock.nanoseconds()
        seccompTraps.set(ckiln_seccomp_trap_count())
        try destination.writeAll(Array((registry.snapshot().encoded() + "\n").utf8))
    }

    /// Until the next periodic flush, rounded up so a timer set to it
    /// finds the flush due; 0 when it is due already.
    var millisecondsUntilDue: UInt64 {
        let since = MonotonicClock.nanoseconds() - lastFlush
        guard since < MetricsSink.periodNanoseconds else { return 0 }
        return (MetricsSink.periodNanoseconds - since + 999_999) / 1_000_000
    }

    func flushIfDue() {
        guard destination != nil, MonotonicClock.nanoseconds() - lastFlush >= MetricsSink.periodNanoseconds else {
            return
        }
        do { try flush() } catch { Logger.shared.warning("metrics: \(error)") }
    }
}

enum MetricsSinkError: Error, CustomStringConvertible {
    /// FlushMetrics before PUT /metrics (or the config file's `metrics`).
    case noDestination

    var description: String {
        switch self {
        case .noDestination: "FlushMetrics: no metrics destination is configured; PUT /metrics first"
        }
    }
}

/// Counts API requests and their outcomes around the controller, and logs
/// each one at debug level.
final class CountingRequestHandler: APIRequestHandler {
    private let wrapped: APIRequestHandler
    private let requests, clientErrors, serverErrors: Counter
    private let byMethod: [String: Counter]

    init(_ wrapped: APIRequestHandler, registry: MetricsRegistry) {
        self.wrapped = wrapped
        requests = registry.counter("api_server", "requests")
        clientErrors = registry.counter("api_server", "client_errors")
        serverErrors = registry.counter("api_server", "server_errors")
        byMethod = Dictionary(
            uniqueKeysWithValues: ["GET", "PUT", "PATCH"].map {
                ($0, registry.counter("api_server", $0.lowercased() + "_requests"))
            })
    }

    func handle(_ request: HTTPRequest) -> HTTPResponse {
        requests.increment()
        byMethod[request.method]?.increment()
        let response = wrapped.handle(request)
        let code = response.status.code
        if code >= 500 { serverErrors.increment() } else if code >= 400 { clientErrors.increment() }
        Logger.shared.debug("api: \(request.method) \(request.path) -> \(code)")
        return response
    }
}
