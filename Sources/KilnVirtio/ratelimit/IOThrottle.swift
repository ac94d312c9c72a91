import KilnSystem

/// A device's rate limiting for one stream (a block queue, net rx or tx, the
/// entropy queue): the limiter, the clock it reads, and what the VMM needs
/// to resume a throttled queue.
public struct IOThrottle {
    public private(set) var limiter: IORateLimiter
    /// Monotonic nanoseconds; injected so tests move time by hand.
    public let clock: () -> UInt64
    /// Called once per refused request (the VMM's metric counter).
    let onThrottled: () -> Void
    /// When the last refused request can be granted: the VMM serves the
    /// queue again then. Nil once a serve ran without a refusal.
    public private(set) var throttledUntil: UInt64?
    /// Services refused, since the device was made: a request put back, or
    /// a notification while still held back (Firecracker counts both).
    public private(set) var throttledEvents: UInt64 = 0

    public init(
        limiter: IORateLimiter? = nil, clock: @escaping () -> UInt64 = MonotonicClock.nanoseconds,
        onThrottled: @escaping () -> Void = {}
    ) {
        self.clock = clock
        self.limiter = limiter ?? IORateLimiter(now: 0)
        self.onThrottled = onThrottled
    }

    /// A serve starts. False while the last refusal's deadline is ahead:
    /// the queue is not even looked at, so a driver notifying in a loop
    /// costs no chain walks. Past it, the request is asked for again.
    mutating func begin(counting: Bool = true) -> Bool {
        guard let until = throttledUntil else { return true }
        if clock() < until {
            if counting { refused() }
            return false
        }
        throttledUntil = nil
        return true
    }

    /// Asks for one request of `bytes`. On refusal records when to retry;
    /// the caller puts the chain back and stops.
    public mutating func admit(bytes: UInt64) -> Bool {
        guard !limiter.isUnlimited else { return true }
        let now = clock()
        if limiter.consume(bytes: bytes, now: now) { return true }
        let (until, overflow) = now.addingReportingOverflow(limiter.waitNanoseconds(bytes: bytes, now: now))
        throttledUntil = overflow ? .max : until
        refused()
        return false
    }

    private mutating func refused() {
        throttledEvents += 1
        onThrottled()
    }

    /// Applies a PATCH and forgets the old deadline. A throttled queue is
    /// not retried by itself: the VMM notifies it after the update, so
    /// looser limits take effect at once.
    mutating func apply(_ update: IORateLimiter.Update) {
        limiter.apply(update, now: clock())
        throttledUntil = nil
    }

    /// Device reset: nothing is pending any more.
    mutating func reset() { throttledUntil = nil }
}

/// A device whose queues can be throttled; the VMM asks after each serve.
public protocol RateLimitedDevice: VirtioDevice {
    /// When queue `index` should be served again, if a limiter held it back.
    func throttledUntil(queue index: Int) -> UInt64?
}
