/// Firecracker's `rate_limiter` for one stream of device I/O: a `bandwidth`
/// bucket in bytes and an `ops` bucket in requests, either absent for no
/// limit. Pure: every call takes the time as monotonic nanoseconds.
///
/// A request is granted whole or not at all: one op and its bytes together,
/// so a refused request leaves both buckets as they were (Firecracker takes
/// the op, then gives it back when the bytes are short).
public struct IORateLimiter: Equatable, Sendable {
    public private(set) var bandwidth: IOTokenBucket?
    public private(set) var ops: IOTokenBucket?

    public init(bandwidth: IOTokenBucket.Settings? = nil, ops: IOTokenBucket.Settings? = nil, now: UInt64) {
        self.bandwidth = bandwidth.flatMap { IOTokenBucket($0, now: now) }
        self.ops = ops.flatMap { IOTokenBucket($0, now: now) }
    }

    public var isUnlimited: Bool { bandwidth == nil && ops == nil }

    /// Takes one op and `bytes` if both buckets hold enough, else nothing.
    public mutating func consume(bytes: UInt64, now: UInt64) -> Bool {
        bandwidth?.refill(now: now)
        ops?.refill(now: now)
        guard granted(bandwidth, bytes, now), granted(ops, 1, now) else { return false }
        bandwidth?.take(bytes, now: now)
        ops?.take(1, now: now)
        return true
    }

    /// Nanoseconds from `now` until `consume(bytes:now:)` would succeed; 0
    /// when it would now, `UInt64.max` when never within 64 bits.
    public mutating func waitNanoseconds(bytes: UInt64, now: UInt64) -> UInt64 {
        bandwidth?.refill(now: now)
        ops?.refill(now: now)
        let ready = max(bandwidth?.readyTime(for: bytes, now: now) ?? now, ops?.readyTime(for: 1, now: now) ?? now)
        return ready - now
    }

    private func granted(_ bucket: IOTokenBucket?, _ tokens: UInt64, _ now: UInt64) -> Bool {
        guard let bucket else { return true }
        if case .refused = bucket.outcome(taking: tokens, now: now) { return false }
        return true
    }

    /// What a PATCH says about one bucket (Firecracker's `BucketUpdate`).
    public enum BucketUpdate: Equatable, Sendable {
        /// The field was absent: keep the bucket and its state.
        case unchanged
        /// New settings: a fresh, full bucket, or none when they mean no limit.
        case replace(IOTokenBucket.Settings)
    }

    /// Both buckets' updates, as a PATCH request carries them.
    public struct Update: Equatable, Sendable {
        public var bandwidth: BucketUpdate
        public var ops: BucketUpdate

        public init(bandwidth: BucketUpdate = .unchanged, ops: BucketUpdate = .unchanged) {
            self.bandwidth = bandwidth
            self.ops = ops
        }
    }

    /// Replaces buckets at run time (PATCH /drives, /network-interfaces).
    public mutating func apply(_ update: Update, now: UInt64) {
        if case .replace(let settings) = update.bandwidth { bandwidth = IOTokenBucket(settings, now: now) }
        if case .replace(let settings) = update.ops { ops = IOTokenBucket(settings, now: now) }
    }
}
