#if canImport(Glibc)
import Glibc
#endif

/// Where vCPU threads park while the VM is paused (`PATCH /vm`). The event
/// loop closes the gate, kicks every vCPU out of KVM_RUN and waits until all
/// have parked; opening it lets them run again. Heap-allocated mutex and
/// condition (monotonic clock) so their addresses never move.
final class PauseGate: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var closed = false
    private var parked = 0

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
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

    private func locked<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    var isClosed: Bool { locked { closed } }

    func close() { locked { closed = true } }

    func open() {
        locked {
            closed = false
            pthread_cond_broadcast(condition)
        }
    }

    /// vCPU side: blocks while the gate is closed. Returns whether it parked.
    @discardableResult
    func parkWhileClosed() -> Bool {
        locked {
            guard closed else { return false }
            parked += 1
            pthread_cond_broadcast(condition)
            while closed { pthread_cond_wait(condition, mutex) }
            parked -= 1
            return true
        }
    }

    /// Event-loop side: waits until `count` threads are parked, or the
    /// timeout passes (false then).
    func waitUntilParked(_ count: Int, timeoutNanoseconds: UInt64) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let total = UInt64(deadline.tv_nsec) + timeoutNanoseconds
        deadline.tv_sec += Int(total / 1_000_000_000)
        deadline.tv_nsec = Int(total % 1_000_000_000)
        return locked {
            while parked < count {
                if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { return parked >= count }
            }
            return true
        }
    }
}
