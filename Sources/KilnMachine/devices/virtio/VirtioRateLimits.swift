import KilnConfig
import KilnSystem
import KilnTelemetry
import KilnVirtio

// The VMM side of the devices' rate limiters: the configuration turned into
// KilnVirtio's pure limiters on the monotonic clock, a throttled-event
// counter under Firecracker's metric names, and the event-loop timer that
// serves a throttled queue again.

extension IOTokenBucket.Settings {
    init(_ bucket: TokenBucketConfig) {
        self.init(
            size: bucket.size, oneTimeBurst: bucket.oneTimeBurst ?? 0,
            refillTimeMilliseconds: bucket.refillTimeMilliseconds)
    }
}

extension IORateLimiter.Update {
    /// A PATCH body's `rate_limiter`: an absent limiter or bucket keeps what
    /// runs; a present bucket replaces it (size 0 removes it), as Firecracker does.
    init(_ limiter: RateLimiterConfig?) {
        func update(_ bucket: TokenBucketConfig?) -> IORateLimiter.BucketUpdate {
            bucket.map { .replace(IOTokenBucket.Settings($0)) } ?? .unchanged
        }
        self.init(bandwidth: update(limiter?.bandwidth), ops: update(limiter?.ops))
    }
}

extension IOThrottle {
    /// A device's throttle from its configured limiter (nil: none, but a
    /// PATCH may add one), counting refusals in `counter`.
    static func configured(_ limiter: RateLimiterConfig?, counter: Counter) -> IOThrottle {
        let now = MonotonicClock.nanoseconds()
        let limiter = IORateLimiter(
            bandwidth: limiter?.bandwidth.map(IOTokenBucket.Settings.init),
            ops: limiter?.ops.map(IOTokenBucket.Settings.init), now: now)
        return IOThrottle(limiter: limiter, clock: MonotonicClock.nanoseconds, onThrottled: { counter.increment() })
    }
}

/// Serves a device's throttled queues again once their limiter allows: after
/// each service the event loop asks the device, and for a queue held back
/// arms one one-shot timer that signals the queue's eventfd, as a guest
/// notification would. Used only on the loop's thread.
final class ThrottleResumer {
    /// A timer never waits longer; one that fires early finds the queue
    /// still throttled and arms another (a PATCH may have moved the deadline).
    static let longestWaitMilliseconds: UInt64 = 60_000

    private let slot: VirtioMMIOSlot
    private weak var loop: EventLoop?
    /// Queues with a timer armed, so each gets one however often it is served.
    private var armed: Set<Int> = []

    init(slot: VirtioMMIOSlot, loop: EventLoop) {
        self.slot = slot
        self.loop = loop
    }

    /// After any service of the slot: serving one net queue can throttle the other.
    func serviceEnded() {
        let deadlines: [(queue: Int, until: UInt64)] = slot.withTransport { transport in
            guard let device = transport.device as? RateLimitedDevice else { return [] }
            return device.queueMaxSizes.indices.compactMap { queue in
                device.throttledUntil(queue: queue).map { (queue, $0) }
            }
        }
        guard !deadlines.isEmpty, let loop else { return }
        let now = MonotonicClock.nanoseconds()
        for (queue, until) in deadlines where !armed.contains(queue) {
            armed.insert(queue)
            let event = slot.queueEvents[queue]
            loop.schedule(afterMilliseconds: Self.delayMilliseconds(until: until, now: now)) { [weak self] in
                self?.armed.remove(queue)
                try? event.signal()
            }
        }
    }

    /// Whole milliseconds, rounded up so the queue is not served a little
    /// early and refused again; at least 1, at most `longestWaitMilliseconds`.
    static func delayMilliseconds(until: UInt64, now: UInt64) -> UInt64 {
        let nanoseconds = until > now ? until - now : 0
        let milliseconds = nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1)
        return min(max(milliseconds, 1), longestWaitMilliseconds)
    }
}

extension VirtioDeviceManager {
    /// PATCH /drives/{drive_id} with a `rate_limiter`. False when no such drive.
    func updateRateLimiters(driveID: String, _ limiter: RateLimiterConfig?) -> Bool {
        withDevice(named: "block \(driveID)", as: BlockDevice.self) {
            $0.updateRateLimiters(IORateLimiter.Update(limiter))
        }
    }

    /// PATCH /network-interfaces/{iface_id} with `rx_rate_limiter` and
    /// `tx_rate_limiter`. False when no such interface.
    func updateRateLimiters(
        interfaceID: String, receive: RateLimiterConfig?,
        transmit: RateLimiterConfig?
    ) -> Bool {
        withDevice(named: "net \(interfaceID)", as: NetDevice.self) {
            $0.updateRateLimiters(receive: IORateLimiter.Update(receive), transmit: IORateLimiter.Update(transmit))
        }
    }

    /// Runs `body` on the named device under its slot's lock, then notifies
    /// every queue, so a limit lifted or loosened applies at once rather than
    /// at the old deadline. Any thread; only after `wire` (before it, a
    /// PATCH edits the configuration instead).
    private func withDevice<Device: VirtioDevice>(
        named name: String, as type: Device.Type,
        _ body: (Device) -> Void
    ) -> Bool {
        guard let index = entries.firstIndex(where: { $0.name == name }), slots.indices.contains(index),
            let device = entries[index].device as? Device
        else { return false }
        let slot = slots[index]
        slot.withTransport { _ in body(device) }
        for event in slot.queueEvents { try? event.signal() }
        return true
    }
}
