#if canImport(Glibc)
import Glibc
#endif
import CKiln

/// A joinable POSIX thread running a closure. The VMM's threads (event loop,
/// API, one per vCPU) are plain pthreads so that each can install its own
/// seccomp filter: Dispatch or Swift concurrency would hide which kernel
/// thread runs what.
public struct SystemThread {
    private let handle: pthread_t

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// Starts `body` on a new thread named `name` (at most 15 bytes are kept).
    public static func spawn(name: String, _ body: @escaping () -> Void) throws -> SystemThread {
        let box = Unmanaged.passRetained(Box {
            _ = ckiln_set_thread_name(name)
            body()
        })
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { context in
            let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
            box.body()
            return nil
        }, box.toOpaque())
        guard result == 0 else {
            box.release()
            throw SystemError("pthread_create", subject: name, errno: result)
        }
        return SystemThread(handle: handle)
    }

    public func join() {
        pthread_join(handle, nil)
    }
}
