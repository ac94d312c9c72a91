import KilnSystem

/// A token bucket for events the guest can trigger at will (bad queue
/// descriptors, unknown port accesses): at most `burst` passes, refilled at
/// `perSecond`, and a count of what was suppressed so the next line can say so.
public struct RateLimiter: Sendable {
    public let burst: Double
    public let perSecond: Double
    private var tokens: Double
    private var lastRefill: UInt64
    public private(set) var suppressed: UInt64 = 0

    public init(burst: Int = 10, perSecond: Double = 1, now: UInt64 = MonotonicClock.nanoseconds()) {
        self.burst = Double(burst)
        self.perSecond = perSecond
        tokens = Double(burst)
        lastRefill = now
    }

    /// Whether one more event may be logged now. When it may, the returned
    /// count says how many were suppressed since the last one that passed.
    public mutating func admit(now: UInt64 = MonotonicClock.nanoseconds()) -> (allowed: Bool, suppressedBefore: UInt64)
    {
        if now > lastRefill {
            tokens = min(burst, tokens + Double(now - lastRefill) / 1e9 * perSecond)
            lastRefill = now
        }
        guard tokens >= 1 else {
            suppressed += 1
            return (false, 0)
        }
        tokens -= 1
        defer { suppressed = 0 }
        return (true, suppressed)
    }
}
