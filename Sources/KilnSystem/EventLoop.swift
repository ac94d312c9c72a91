/// The VMM's one event loop: an epoll instance, a token → handler table and
/// deadline timers. Everything that is not a vCPU is served here, before and
/// after boot: API jobs, console input, the machine's wake-ups, virtio queue
/// notifications (ioeventfds), TAP readiness and periodic work.
///
/// Single-threaded by design: only the thread that runs `runOnce` may
/// register, modify or remove subscriptions (handlers do so freely, since
/// they run on that thread). Other threads reach the loop only through
/// descriptors it watches (an eventfd they signal).
public final class EventLoop {
    /// Names one subscription; returned by `subscribe` and `schedule`.
    public struct Token: Hashable, Sendable {
        fileprivate let value: UInt64
    }

    /// What a subscriber is told: the events epoll reported for its descriptor.
    public typealias Handler = (Epoll.Events) -> Void

    private struct Subscription {
        let descriptor: FileDescriptor
        var events: Epoll.Events
        let handler: Handler
    }

    private struct Timer {
        var deadline: UInt64
        /// Nil for a one-shot timer.
        let interval: UInt64?
        let handler: () -> Void
    }

    private let epoll: Epoll
    private var subscriptions: [UInt64: Subscription] = [:]
    private var timers: [UInt64: Timer] = [:]
    private var nextToken: UInt64 = 1

    public init() throws { epoll = try Epoll() }

    deinit { epoll.close() }

    /// Watches `descriptor` for `events` (level-triggered) and calls `handler`
    /// on the loop's thread when any is reported. The descriptor stays the
    /// caller's: `unsubscribe` before closing it.
    @discardableResult
    public func subscribe(
        _ descriptor: FileDescriptor, events: Epoll.Events = .readable,
        handler: @escaping Handler
    ) throws -> Token {
        let token = allocateToken()
        try epoll.add(descriptor, events, token: token.value)
        subscriptions[token.value] = Subscription(descriptor: descriptor, events: events, handler: handler)
        return token
    }

    /// Changes what a subscription waits for; an empty set pauses it (a
    /// backend the guest has no buffers for) without losing its handler.
    public func modify(_ token: Token, events: Epoll.Events) throws {
        guard var subscription = subscriptions[token.value], subscription.events != events else { return }
        try epoll.modify(subscription.descriptor, events, token: token.value)
        subscription.events = events
        subscriptions[token.value] = subscription
    }

    /// Forgets a subscription or a timer. Unknown tokens are ignored, so a
    /// handler may remove itself.
    public func cancel(_ token: Token) {
        if let subscription = subscriptions.removeValue(forKey: token.value) {
            try? epoll.remove(subscription.descriptor)
        }
        timers.removeValue(forKey: token.value)
    }

    /// Calls `handler` after `milliseconds`, and every `milliseconds` after
    /// that when `repeating`.
    @discardableResult
    public func schedule(
        afterMilliseconds milliseconds: UInt64, repeating: Bool = false,
        handler: @escaping () -> Void
    ) -> Token {
        let token = allocateToken()
        let interval = milliseconds * 1_000_000
        timers[token.value] = Timer(
            deadline: MonotonicClock.nanoseconds() + interval,
            interval: repeating ? interval : nil, handler: handler)
        return token
    }

    /// Waits for events or the next timer, at most `maximumMilliseconds`,
    /// and runs every handler that is due. Returns after one wait, so the
    /// caller checks its own exit conditions between rounds.
    public func runOnce(maximumMilliseconds: Int32) throws {
        let now = MonotonicClock.nanoseconds()
        var timeout = maximumMilliseconds
        if let next = timers.values.map(\.deadline).min() {
            // Round up, so a timer is never run a millisecond early and spun on.
            let untilNext = next > now ? (next - now + 999_999) / 1_000_000 : 0
            // A negative maximum waits for ever: the timer alone bounds it.
            let bound = maximumMilliseconds < 0 ? UInt64(Int32.max) : UInt64(maximumMilliseconds)
            timeout = Int32(min(bound, untilNext))
        }
        let events = try epoll.wait(maximumEvents: 32, timeoutMilliseconds: timeout)
        for event in events {
            // A handler earlier in this round may have cancelled this one.
            guard let subscription = subscriptions[event.token] else { continue }
            subscription.handler(event.events)
        }
        runDueTimers()
    }

    private func runDueTimers() {
        let now = MonotonicClock.nanoseconds()
        for (key, timer) in timers.sorted(by: { $0.value.deadline < $1.value.deadline }) where timer.deadline <= now {
            // A handler earlier in this round may have cancelled this timer.
            guard timers[key] != nil else { continue }
            if let interval = timer.interval {
                // Deadlines move from now, so a stalled loop does not run a
                // burst of catch-up calls.
                timers[key]?.deadline = now + interval
            } else {
                timers.removeValue(forKey: key)
            }
            timer.handler()
        }
    }

    private func allocateToken() -> Token {
        defer { nextToken += 1 }
        return Token(value: nextToken)
    }
}
