#if canImport(Glibc)
    import Glibc
#endif

/// CLOCK_MONOTONIC readings in nanoseconds: start-up figures, log stamps.
public enum MonotonicClock {
    public static func nanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// CPU time consumed by the whole process so far, in nanoseconds.
    public static func processCPUNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

extension MonotonicClock {
    /// `nanoseconds` as milliseconds with `decimals` fraction digits,
    /// truncated, for log lines ("7.95", "164.010").
    public static func millisecondsText(_ nanoseconds: UInt64, decimals: Int) -> String {
        precondition((0...6).contains(decimals), "milliseconds carry at most 6 decimals of nanoseconds")
        var scale: UInt64 = 1
        for _ in 0..<decimals { scale *= 10 }
        let scaled = nanoseconds / (1_000_000 / scale)
        guard decimals > 0 else { return String(scaled) }
        let fraction = String(scaled % scale)
        return "\(scaled / scale)." + String(repeating: "0", count: decimals - fraction.count) + fraction
    }
}
