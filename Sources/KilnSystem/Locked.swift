#if canImport(Glibc)
    import Glibc
#endif

/// State shared between threads, held together with the pthread mutex that
/// guards it: the state is reachable only inside `withLock`, so no access
/// can forget the lock. A condition variable comes with it, for a thread
/// that waits until another changes the state (`withLock(waitingUntil:)`).
///
/// Not Synchronization's `Mutex`: on Linux that one sleeps on a contended
/// lock with FUTEX_LOCK_PI_PRIVATE and FUTEX_UNLOCK_PI_PRIVATE, which the
/// roles allow only because the Swift runtime's swift_once needs them (a
/// call made only under contention passes every quiet test and kills kiln
/// under load). A pthread mutex and condition use the FUTEX_WAIT/WAKE
/// operations the roles list (policies/vcpu.policy).
///
/// Lock order: take an earlier lock before a later one, never the reverse.
/// 1. A virtio slot's state (`VirtioMMIOSlot`): a device failure is logged
///    with it held.
/// 2. A rate-limited log's limiter (`RateLimitedLog`), released before 3.
/// 3. The logger's destination (`Logger`).
/// Every other `Locked` is a leaf: its owner works out under the lock what
/// to do and does it (interrupts, console output, exit requests, log lines)
/// after letting go. Keep it so; a new nesting goes in this list.
///
/// A non-Sendable state (a device model) must not be let out of `withLock`.
public final class Locked<State>: @unchecked Sendable { // `state` is touched only with `mutex` held
    // Heap-allocated: a pthread object must not move, and a Swift stored
    // property has no fixed address.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var state: State

    public init(_ initial: State) {
        state = initial
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        // Timed waits measure against the monotonic clock, as every
        // deadline in kiln does (MonotonicClock).
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    public func withLock<R>(_ body: (inout State) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&state)
    }

    /// Waits, without the lock, until `ready` holds for the state or
    /// `timeoutNanoseconds` pass, then runs `body` with the lock held and
    /// whether `ready` held. Another thread's change wakes the waiter only
    /// when it calls `broadcast()`.
    public func withLock<R>(
        waitingUntil ready: (inout State) -> Bool, timeoutNanoseconds: UInt64? = nil,
        _ body: (inout State, _ ready: Bool) throws -> R
    ) rethrows -> R {
        var deadline = timespec()
        if let timeoutNanoseconds {
            clock_gettime(CLOCK_MONOTONIC, &deadline)
            let total = UInt64(deadline.tv_nsec) + timeoutNanoseconds
            deadline.tv_sec += Int(total / 1_000_000_000)
            deadline.tv_nsec = Int(total % 1_000_000_000)
        }
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var isReady = ready(&state)
        while !isReady {
            if timeoutNanoseconds == nil {
                pthread_cond_wait(condition, mutex)
            } else if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT {
                isReady = ready(&state)
                break
            }
            isReady = ready(&state)
        }
        return try body(&state, isReady)
    }

    /// Wakes every thread waiting in `withLock(waitingUntil:)` to look at
    /// the state again; call it after a change they may wait for.
    public func broadcast() {
        pthread_cond_broadcast(condition)
    }
}
