import KilnSystem
import Testing

@Suite struct EventLoopTests {
    @Test func aSignalledDescriptorRunsItsHandlerAndAQuietOneDoesNot() throws {
        let loop = try EventLoop()
        let ready = try EventFD(), quiet = try EventFD()
        defer { ready.close(); quiet.close() }
        var readyCalls = 0, quietCalls = 0
        try loop.subscribe(ready.descriptor) { _ in
            readyCalls += 1; _ = try? ready.drain()
        }
        try loop.subscribe(quiet.descriptor) { _ in quietCalls += 1 }
        try ready.signal()
        try loop.runOnce(maximumMilliseconds: 100)
        #expect(readyCalls == 1 && quietCalls == 0)
        // Drained: the next round times out with no call.
        try loop.runOnce(maximumMilliseconds: 10)
        #expect(readyCalls == 1)
    }

    @Test func aPausedSubscriptionWaitsUntilResumed() throws {
        let loop = try EventLoop()
        let event = try EventFD()
        defer { event.close() }
        var calls = 0
        let token = try loop.subscribe(event.descriptor) { _ in calls += 1 }
        try loop.modify(token, events: [])
        try event.signal()
        try loop.runOnce(maximumMilliseconds: 10)
        #expect(calls == 0, "a paused subscription is not served")
        try loop.modify(token, events: .readable)
        try loop.runOnce(maximumMilliseconds: 100)
        #expect(calls == 1)
    }

    @Test func aCancelledSubscriptionIsNotServedEvenInTheSameRound() throws {
        let loop = try EventLoop()
        let first = try EventFD(), second = try EventFD()
        defer { first.close(); second.close() }
        var secondCalls = 0
        var secondToken: EventLoop.Token?
        // Whichever runs first cancels the other; exactly one runs.
        var firstCalls = 0
        let firstToken = try loop.subscribe(first.descriptor) { _ in
            firstCalls += 1
            if let secondToken { loop.cancel(secondToken) }
        }
        secondToken = try loop.subscribe(second.descriptor) { _ in
            secondCalls += 1
            loop.cancel(firstToken)
        }
        try first.signal()
        try second.signal()
        try loop.runOnce(maximumMilliseconds: 100)
        #expect(firstCalls + secondCalls == 1)
    }

    @Test func timersFireOnceOrRepeatAndCanBeCancelled() throws {
        let loop = try EventLoop()
        var once = 0, repeated = 0, cancelled = 0
        loop.schedule(afterMilliseconds: 5) { once += 1 }
        loop.schedule(afterMilliseconds: 5, repeating: true) { repeated += 1 }
        let token = loop.schedule(afterMilliseconds: 5) { cancelled += 1 }
        loop.cancel(token)
        // Until the repeating timer has run three times (2 s at most, for a loaded machine).
        let start = MonotonicClock.nanoseconds()
        while repeated < 3, MonotonicClock.nanoseconds() - start < 2_000_000_000 {
            try loop.runOnce(maximumMilliseconds: 100)
        }
        #expect(once == 1)
        #expect(repeated >= 3, "a 5 ms repeating timer ran \(repeated) times in 2 s")
        #expect(cancelled == 0)
    }

    @Test func theWaitEndsAtTheNextTimerNotAtTheMaximum() throws {
        let loop = try EventLoop()
        var fired = false
        loop.schedule(afterMilliseconds: 20) { fired = true }
        let start = MonotonicClock.nanoseconds()
        try loop.runOnce(maximumMilliseconds: 5000)
        let elapsed = MonotonicClock.nanoseconds() - start
        #expect(fired)
        #expect(elapsed < 2_000_000_000, "runOnce waited \(elapsed) ns for a 20 ms timer")
    }

    @Test func waitingForEverStillWakesForATimerWithoutSpinning() throws {
        let loop = try EventLoop()
        var fired = 0
        loop.schedule(afterMilliseconds: 30) { fired += 1 }
        // One round: a 0 ms epoll timeout would return at once, the timer not
        // yet due, and the caller would spin on rounds like it.
        try loop.runOnce(maximumMilliseconds: -1)
        #expect(fired == 1, "one wait-for-ever round returned before its timer")
    }
}
