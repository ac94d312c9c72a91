import CKiln

#if canImport(Glibc)
    import Glibc
#endif

/// A POSIX thread running a closure: the one way kiln starts a thread (the
/// event loop's API thread, one per vCPU, the policy rehearsal's). They are
/// plain pthreads so that each can install its own seccomp filter: Dispatch
/// or Swift concurrency would hide which kernel thread runs what.
/// Make the closure outside an executable's main.swift: Swift 6 infers a
/// closure in top-level code main-actor isolated, and it traps off the main thread.
public struct SystemThread: Sendable {
    private let handle: pthread_t

    private final class Entry {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts `body` on a new thread named `name` (at most 15 bytes are
    /// kept), before any seccomp role: PR_SET_NAME is a start-up call.
    public static func spawn(name: String, _ body: sending @escaping () -> Void) throws -> SystemThread {
        let entry = Unmanaged.passRetained(
            Entry {
                _ = ckiln_set_thread_name(name)
                body()
            })
        var handle = pthread_t()
        let result = pthread_create(
            &handle, nil,
            { context in
                let entry = Unmanaged<Entry>.fromOpaque(context!).takeRetainedValue()
                entry.body()
                return nil
            }, entry.toOpaque())
        guard result == 0 else {
            entry.release()
            throw SystemError("pthread_create", subject: name, errno: result)
        }
        return SystemThread(handle: handle)
    }

    public func join() {
        pthread_join(handle, nil)
    }

    /// For a thread nobody joins: its resources go when it returns.
    public func detach() {
        pthread_detach(handle)
    }

    /// Sends `signal` to this thread alone (tgkill): how the event loop
    /// interrupts a vCPU's KVM_RUN.
    public func send(_ signal: Int32) {
        pthread_kill(handle, signal)
    }
}
