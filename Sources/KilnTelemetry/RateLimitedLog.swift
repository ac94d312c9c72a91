import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Log lines the guest can cause at will (every port or MMIO exit when
/// tracing, a device complaining about what the guest wrote): at most a
/// burst, then a steady rate, and the next line that passes says how many
/// were dropped. Safe from any thread.
public final class RateLimitedLog: Sendable {
    private let limiter: Locked<RateLimiter>
    private let level: LogLevel
    private let logger: Logger

    public init(
        level: LogLevel, burst: Int, perSecond: Double, logger: Logger = .shared,
        now: UInt64 = MonotonicClock.nanoseconds()
    ) {
        self.level = level
        self.logger = logger
        limiter = Locked(RateLimiter(burst: burst, perSecond: perSecond, now: now))
    }

    public func log(_ message: String, now: UInt64 = MonotonicClock.nanoseconds()) {
        let (allowed, suppressed) = limiter.withLock { $0.admit(now: now) }
        guard allowed else { return }
        logger.log(level, suppressed == 0 ? message : "\(message) (\(suppressed) similar lines suppressed)")
    }
}
