#if canImport(Glibc)
import Glibc
#endif
import KilnSystem

/// Log lines the guest can cause at will (every port or MMIO exit when
/// tracing, a device complaining about what the guest wrote): at most a
/// burst, then a steady rate, and the next line that passes says how many
/// were dropped. Safe from any thread.
public final class RateLimitedLog: @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var limiter: RateLimiter
    private let level: LogLevel
    private let logger: Logger

    public init(level: LogLevel, burst: Int, perSecond: Double, logger: Logger = .shared,
                now: UInt64 = MonotonicClock.nanoseconds()) {
        self.level = level
        self.logger = logger
        limiter = RateLimiter(burst: burst, perSecond: perSecond, now: now)
        pthread_mutex_init(&lock, nil)
    }

    public func log(_ message: String, now: UInt64 = MonotonicClock.nanoseconds()) {
        pthread_mutex_lock(&lock)
        let (allowed, suppressed) = limiter.admit(now: now)
        pthread_mutex_unlock(&lock)
        guard allowed else { return }
        logger.log(level, suppressed == 0 ? message : "\(message) (\(suppressed) similar lines suppressed)")
    }
}
