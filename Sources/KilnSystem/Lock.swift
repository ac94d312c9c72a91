#if canImport(Glibc)
import Glibc
#endif

/// A pthread mutex: device state shared between a vCPU thread and the event
/// loop, the logger's destination. Heap-allocated so its address never moves
/// (a `pthread_mutex_t` stored in a Swift property has no such promise).
public final class Lock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
