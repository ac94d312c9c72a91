import Glibc
import Synchronization
import Testing

@testable import KilnSystem

@Suite struct UnixSocketTests {
    /// A fresh directory, removed with whatever is left in it.
    private static func withDirectory(_ body: (String) throws -> Void) throws {
        let directory = String(cString: mkdtemp(strdup("/tmp/kiln-sock-XXXXXX")))
        defer {
            for name in (try? FileSystem.listDirectory(directory)) ?? [] { unlink("\(directory)/\(name)") }
            rmdir(directory)
        }
        try body(directory)
    }

    @Test func aSocketListensAtItsPathAndLeavesNoTemporaryName() throws {
        try Self.withDirectory { directory in
            let path = "\(directory)/api.sock"
            let listener = try UnixSocket.listenOnceReady(path: path)
            defer { listener.close() }
            #expect(try FileSystem.listDirectory(directory) == ["api.sock"])
            let client = try UnixSocket.connect(path: path)
            client.close()
            #expect(try UnixSocket.accept(listener) != nil)
        }
    }

    @Test func anExistingFileIsRefusedAndLeftAlone() throws {
        try Self.withDirectory { directory in
            let path = "\(directory)/api.sock"
            try FileSystem.writeAtomically(path, Array("someone else's".utf8))
            do {
                _ = try UnixSocket.listenOnceReady(path: path)
                Issue.record("listened over an existing file")
            } catch let error as SystemError {
                #expect(error.errno == EADDRINUSE)
                #expect(error.description.contains(path))
            }
            #expect(try FileSystem.readText(path) == "someone else's")
            #expect(try FileSystem.listDirectory(directory) == ["api.sock"])
        }
    }

    @Test func aPathWithNoRoomForATemporaryNameIsBoundDirectly() throws {
        try Self.withDirectory { directory in
            let name = String(repeating: "s", count: UnixSocket.maximumPathLength - directory.utf8.count - 1)
            let path = "\(directory)/\(name)"
            let listener = try UnixSocket.listenOnceReady(path: path)
            defer { listener.close() }
            #expect(try FileSystem.listDirectory(directory) == [name])
            try UnixSocket.connect(path: path).close()
        }
    }

    /// A client that connects the moment the file appears, as Firecracker's
    /// SDKs do, must find a socket that accepts: with bind then listen on
    /// the path itself, this client met ECONNREFUSED in between.
    @Test func aClientWatchingForThePathIsNeverRefused() throws {
        try Self.withDirectory { directory in
            let path = "\(directory)/api.sock"
            let refused = Atomic<Int>(0), connected = Atomic<Int>(0), attempts = Atomic<Int>(0)
            let stop = Atomic<Bool>(false)
            let watcher = try SpinningThread {
                while !stop.load(ordering: .relaxed) {
                    defer { attempts.add(1, ordering: .releasing) }
                    do {
                        try UnixSocket.connect(path: path).close()
                        connected.add(1, ordering: .relaxed)
                    } catch let error as SystemError where error.errno == ECONNREFUSED {
                        refused.add(1, ordering: .relaxed)
                    } catch {}
                }
            }
            for _ in 0..<2000 {
                let listener = try UnixSocket.listenOnceReady(path: path)
                unlink(path)
                // A connect that found the file before the unlink ends
                // within the watcher's next attempt; closing the listener
                // before then would refuse it, and that is not the window
                // under test.
                let seen = attempts.load(ordering: .acquiring)
                while attempts.load(ordering: .acquiring) < seen + 2 { sched_yield() }
                listener.close()
            }
            stop.store(true, ordering: .relaxed)
            watcher.join()
            #expect(refused.load(ordering: .relaxed) == 0)
            #expect(connected.load(ordering: .relaxed) > 0)
        }
    }
}

/// A plain pthread for a test's busy loop (the test runner's own threads
/// may be few).
private final class SpinningThread {
    private var thread = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) throws {
        self.body = body
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &thread, nil,
            { raw in
                let spinning = Unmanaged<SpinningThread>.fromOpaque(raw!).takeRetainedValue()
                spinning.body()
                return nil
            }, context)
        guard result == 0 else {
            Unmanaged<SpinningThread>.fromOpaque(context).release()
            throw SystemError("pthread_create", errno: result)
        }
    }

    func join() { pthread_join(thread, nil) }
}
