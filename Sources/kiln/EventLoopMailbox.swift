import KilnSystem

/// How the API thread has the event loop run a VM operation: the caller
/// posts a job, wakes the loop through an eventfd and waits for the result,
/// so every change to the machine happens on the event loop's thread.
final class EventLoopMailbox: Sendable {
    /// Readable when jobs are waiting; the event loop polls it.
    let wake: EventFD

    private struct Job {
        let number: Int
        let work: () throws -> Void
    }

    private struct State {
        var nextNumber = 0
        var waiting: [Job] = []
        /// Each finished job's error, nil for success, until its poster reads it.
        var outcomes: [Int: Error?] = [:]
    }
    private let state = Locked(State())

    init() throws {
        wake = try EventFD()
    }

    deinit { wake.close() }

    /// Any thread but the event loop's: runs `work` there and returns or
    /// rethrows its outcome.
    func perform(_ work: @escaping () throws -> Void) throws {
        let number = state.withLock { state -> Int in
            defer { state.nextNumber += 1 }
            state.waiting.append(Job(number: state.nextNumber, work: work))
            return state.nextNumber
        }
        try wake.signal()
        let failure = state.withLock(
            waitingUntil: { $0.outcomes[number] != nil },
            { state, _ in state.outcomes.removeValue(forKey: number) ?? nil })
        if let failure { throw failure }
    }

    /// The event loop: runs every waiting job, in order.
    func service() {
        _ = try? wake.drain()
        let jobs = state.withLock { state -> [Job] in
            defer { state.waiting = [] }
            return state.waiting
        }
        for job in jobs {
            var failure: Error?
            do { try job.work() } catch { failure = error }
            state.withLock { $0.outcomes[job.number] = .some(failure) }
            state.broadcast()
        }
    }
}
