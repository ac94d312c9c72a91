#if canImport(Glibc)
import Glibc
#endif
import KilnSystem

/// How the API thread has the event loop run a VM operation: the caller
/// posts a job, wakes the loop through an eventfd and waits for the result,
/// so every change to the machine happens on the event loop's thread.
final class EventLoopMailbox: @unchecked Sendable {
    /// Readable when jobs are waiting; the event loop polls it.
    let wake: EventFD
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var jobs: [Job] = []

    private final class Job {
        let work: () throws -> Void
        var finished = false
        var error: Error?
        init(_ work: @escaping () throws -> Void) { self.work = work }
    }

    init() throws {
        wake = try EventFD()
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
        wake.close()
    }

    /// Any thread but the event loop's: runs `work` there and returns or
    /// rethrows its outcome.
    func perform(_ work: @escaping () throws -> Void) throws {
        let job = Job(work)
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_mutex_unlock(mutex)
        try wake.signal()
        pthread_mutex_lock(mutex)
        while !job.finished { pthread_cond_wait(condition, mutex) }
        pthread_mutex_unlock(mutex)
        if let error = job.error { throw error }
    }

    /// The event loop: runs every waiting job, in order.
    func service() {
        _ = try? wake.drain()
        pthread_mutex_lock(mutex)
        let waiting = jobs
        jobs = []
        pthread_mutex_unlock(mutex)
        for job in waiting {
            var failure: Error?
            do { try job.work() } catch { failure = error }
            pthread_mutex_lock(mutex)
            job.error = failure
            job.finished = true
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
    }
}
