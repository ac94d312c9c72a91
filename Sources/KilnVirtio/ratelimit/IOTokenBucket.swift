/// One token bucket of an `IORateLimiter`: `size` tokens refilled every
/// `refillTimeMilliseconds`, plus a `oneTimeBurst` reservoir spent first and
/// never refilled (Firecracker's `TokenBucket` semantics).
///
/// Pure: the caller passes the time, in nanoseconds of a monotonic clock.
/// All arithmetic saturates or uses 128-bit intermediates, so any `UInt64`
/// configuration or request is safe.
///
/// Where it differs from Firecracker, on purpose:
/// - It refills on every call. Firecracker refills only when a request is
///   short, so after an idle spell its bucket can hand out twice its size at once.
/// - A request larger than `size` is let through, as in Firecracker, and
///   the excess is owed: the bucket refuses everything until refill has paid
///   it back. Firecracker waits as long but then also credits the waiting
///   time, so back-to-back oversized requests ran above the configured rate.
/// - A refill time whose nanoseconds overflow 64 bits saturates (about 584
///   years) instead of disabling the bucket.
public struct IOTokenBucket: Equatable, Sendable {
    /// What the configuration says; `nil` from `init` when it means "no limit".
    public struct Settings: Equatable, Sendable {
        public var size: UInt64
        public var oneTimeBurst: UInt64
        public var refillTimeMilliseconds: UInt64

        public init(size: UInt64, oneTimeBurst: UInt64 = 0, refillTimeMilliseconds: UInt64) {
            self.size = size
            self.oneTimeBurst = oneTimeBurst
            self.refillTimeMilliseconds = refillTimeMilliseconds
        }

        /// Firecracker: a size or refill time of 0 disables the bucket.
        public var isUnlimited: Bool { size == 0 || refillTimeMilliseconds == 0 }
    }

    public let settings: Settings
    /// Tokens refilled per `refillNanoseconds`.
    public var size: UInt64 { settings.size }
    let refillNanoseconds: UInt64
    /// Regular tokens available at `lastRefill`.
    public private(set) var budget: UInt64
    /// What is left of the one-time burst.
    public private(set) var burst: UInt64
    /// The instant `budget` is counted at; in the future while a debt is
    /// being paid.
    private(set) var lastRefill: UInt64
    /// The fraction of a token earned by `lastRefill`, as a numerator over
    /// `refillNanoseconds`: carried exactly, so polling often neither loses
    /// nor gains a token.
    private var partial: UInt64 = 0

    /// A full bucket with its whole burst, or nil when `settings` means no limit.
    public init?(_ settings: Settings, now: UInt64) {
        guard !settings.isUnlimited else { return nil }
        self.settings = settings
        let (nanoseconds, overflow) = settings.refillTimeMilliseconds.multipliedReportingOverflow(by: 1_000_000)
        refillNanoseconds = overflow ? .max : nanoseconds
        budget = settings.size
        burst = settings.oneTimeBurst
        lastRefill = now
    }

    /// Whether the bucket is still paying for an oversized request.
    public func inDebt(now: UInt64) -> Bool { now < lastRefill }

    /// Adds the tokens earned since `lastRefill`, up to `size`.
    mutating func refill(now: UInt64) {
        guard now > lastRefill else { return }
        let elapsed = now - lastRefill
        guard budget < size, elapsed < refillNanoseconds else {
            fill(now: now)
            return
        }
        // elapsed < refillNanoseconds and partial < refillNanoseconds, so
        // the quotient is at most size: it fits.
        let numerator = Self.add(size.multipliedFullWidth(by: elapsed), partial)
        let (earned, remainder) = refillNanoseconds.dividingFullWidth(numerator)
        if earned >= size - budget {
            fill(now: now)
            return
        }
        budget += earned
        lastRefill = now
        partial = remainder
    }

    private mutating func fill(now: UInt64) {
        budget = size
        lastRefill = now
        partial = 0
    }

    /// A 128-bit product plus a 64-bit value; cannot overflow, since a
    /// product of two 64-bit values is at most 2^128 − 2^65 + 1.
    private static func add(_ product: (high: UInt64, low: UInt64), _ value: UInt64) -> (high: UInt64, low: UInt64) {
        let (low, carry) = product.low.addingReportingOverflow(value)
        return (product.high + (carry ? 1 : 0), low)
    }

    enum Outcome: Equatable {
        case granted
        /// Granted beyond `size`: the bucket owes this many tokens.
        case grantedInDebt(owed: UInt64)
        /// Refused; this many regular tokens are missing.
        case refused(missing: UInt64)
    }

    /// What taking `tokens` now would do, after `refill(now:)`.
    func outcome(taking tokens: UInt64, now: UInt64) -> Outcome {
        if tokens == 0 { return .granted }
        if inDebt(now: now) { return .refused(missing: tokens) }
        if tokens <= burst { return .granted }
        let rest = tokens - burst
        if rest <= budget { return .granted }
        if rest > size { return .grantedInDebt(owed: rest - budget) }
        return .refused(missing: rest - budget)
    }

    /// Takes `tokens`: the burst first, then the budget, then a debt.
    /// Only after `outcome` said it is granted.
    mutating func take(_ tokens: UInt64, now: UInt64) {
        if tokens <= burst {
            burst -= tokens
            return
        }
        let rest = tokens - burst
        burst = 0
        if rest <= budget {
            budget -= rest
            return
        }
        let owed = rest - budget
        budget = 0
        partial = 0
        let (payBack, overflow) = Self.waitReportingOverflow(
            tokens: owed, size: size, period: refillNanoseconds,
            partial: 0)
        let (until, late) = now.addingReportingOverflow(payBack)
        lastRefill = overflow || late ? .max : until
    }

    /// The earliest instant at which `tokens` would be granted.
    func readyTime(for tokens: UInt64, now: UInt64) -> UInt64 {
        switch outcome(taking: tokens, now: now) {
        case .granted, .grantedInDebt:
            return now
        case .refused:
            // Counted from lastRefill, where budget stands (0 while in debt).
            let rest = tokens > burst ? tokens - burst : 0
            guard rest <= size else { return lastRefill } // an oversized request waits only for the debt
            let missing = rest > budget ? rest - budget : 0
            let (wait, overflow) = Self.waitReportingOverflow(
                tokens: missing, size: size,
                period: refillNanoseconds, partial: partial)
            let (ready, late) = lastRefill.addingReportingOverflow(wait)
            return overflow || late ? .max : max(ready, now)
        }
    }

    /// Nanoseconds until `tokens` more are earned with `partial` already
    /// towards the next: ceil((tokens × period − partial) / size), and
    /// whether it does not fit in 64 bits.
    static func waitReportingOverflow(
        tokens: UInt64, size: UInt64, period: UInt64,
        partial: UInt64
    ) -> (partialValue: UInt64, overflow: Bool) {
        guard tokens > 0 else { return (0, false) }
        var product = tokens.multipliedFullWidth(by: period)
        // tokens ≥ 1 and partial < period, so this never goes below zero.
        let (low, borrow) = product.low.subtractingReportingOverflow(partial)
        product = (product.high - (borrow ? 1 : 0), low)
        guard product.high < size else { return (.max, true) }
        let (quotient, remainder) = size.dividingFullWidth(product)
        guard remainder != 0 else { return (quotient, false) }
        return quotient == .max ? (.max, true) : (quotient + 1, false)
    }
}
