import KilnConfig
import KilnMemory
import KilnSystem
import KilnTelemetry
import KilnVirtio
import Testing

@testable import KilnMachine

/// The VMM's side of the rate limiters, without a guest: configuration in,
/// event-loop timers out.
@Suite struct RateLimitWiringTests {
    /// A device that reports queues as held back until given instants.
    final class HeldBack: RateLimitedDevice {
        var until: [Int: UInt64] = [:]
        var deviceType: VirtioDeviceType { .entropy }
        var deviceFeatures: UInt64 { 0 }
        var queueMaxSizes: [UInt16] { [8, 8] }
        var configSpace: [UInt8] { [] }
        func activate(features: UInt64) {}
        func reset() {}
        func process(queue index: Int, queues: [Virtqueue?]) throws {}
        func throttledUntil(queue index: Int) -> UInt64? { until[index] }
    }

    @Test func aThrottledQueueIsNotifiedOnceAtItsDeadlineHoweverOftenItIsServed() throws {
        let loop = try EventLoop()
        let device = HeldBack()
        let events = [try EventFD(), try EventFD()]
        // The irqfd stand-in owns the eventfd's descriptor and closes it.
        let interrupt = PublishingInterrupt(InterruptEventFD(try EventFD()))
        let transport = VirtioMMIOTransport(
            device: device, memory: try HeapGuestMemory(size: 4096), interrupt: interrupt)
        interrupt.transport = transport
        let slot = VirtioMMIOSlot(
            name: "held", transport: transport, interrupt: interrupt,
            queueEvents: events, failures: Counter(), log: { _ in })
        let resumer = ThrottleResumer(slot: slot, loop: loop)
        var fired: [UInt64] = []
        for event in events {
            try loop.subscribe(event.descriptor) { _ in
                _ = try? event.drain()
                fired.append(MonotonicClock.nanoseconds())
            }
        }
        let start = MonotonicClock.nanoseconds()
        device.until = [1: start + 30_000_000]
        resumer.serviceEnded()
        // Served again before the loop turns (a guest notifying), still held
        // back, now for longer: no second timer. The first one's serve would
        // find the queue held back and arm the next. No loop turn between the
        // two, so a descheduled test thread cannot let the first timer fire
        // early and make this a race.
        device.until = [1: start + 60_000_000]
        resumer.serviceEnded()
        while MonotonicClock.nanoseconds() < start + 150_000_000 { try loop.runOnce(maximumMilliseconds: 10) }
        #expect(fired.count == 1)
        #expect(fired.first.map { $0 >= start + 30_000_000 } == true)
        // Queue 0 was never held back, so never notified.
        #expect(try events[0].drain() == 0)
    }

    @Test func timersRoundUpToWholeMillisecondsWithinBounds() {
        #expect(ThrottleResumer.delayMilliseconds(until: 5_000_000, now: 5_000_000) == 1)
        #expect(ThrottleResumer.delayMilliseconds(until: 1, now: 9) == 1)
        #expect(ThrottleResumer.delayMilliseconds(until: 3_000_001, now: 0) == 4)
        #expect(ThrottleResumer.delayMilliseconds(until: 3_000_000, now: 0) == 3)
        #expect(ThrottleResumer.delayMilliseconds(until: .max, now: 0) == ThrottleResumer.longestWaitMilliseconds)
    }

    @Test func aPatchKeepsAbsentBucketsAndReplacesPresentOnes() {
        #expect(IORateLimiter.Update(nil) == IORateLimiter.Update())
        let limiter = RateLimiterConfig(
            bandwidth: .init(size: 1000, oneTimeBurst: 50, refillTimeMilliseconds: 100))
        let update = IORateLimiter.Update(limiter)
        #expect(update.bandwidth == .replace(.init(size: 1000, oneTimeBurst: 50, refillTimeMilliseconds: 100)))
        #expect(update.ops == .unchanged)
    }

    @Test func aConfiguredThrottleCountsRefusals() {
        let counter = Counter()
        var throttle = IOThrottle.configured(
            RateLimiterConfig(ops: .init(size: 1, refillTimeMilliseconds: 60_000)), counter: counter)
        let first = throttle.admit(bytes: 0), second = throttle.admit(bytes: 0)
        #expect(first && !second)
        #expect(counter.value == 1)
        #expect(IOThrottle.configured(nil, counter: counter).limiter.isUnlimited)
    }
}
