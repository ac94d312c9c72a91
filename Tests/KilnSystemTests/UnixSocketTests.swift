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
            let watch = WatcherCounts()
            let watcher = try SystemThread.spawn(name: "watcher") {
                while !watch.stop.load(ordering: .relaxed) {
                    defer { watch.attempts.add(1, ordering: .releasing) }
                    do {
                        try UnixSocket.connect(path: path, nonBlocking: true).close()
                        watch.connected.add(1, ordering: .relaxed)
                    } catch let error as SystemError where error.errno == ECONNREFUSED {
                        watch.refused.add(1, ordering: .relaxed)
                    } catch {}
                }
            }
            // Two more attempts: at least one ran whole after this point.
            // False if the watcher stalls for 30 s.
            func letTheWatcherTryAgain() -> Bool {
                let seen = watch.attempts.load(ordering: .acquiring)
                let deadline = MonotonicClock.nanoseconds() + 30_000_000_000
                while watch.attempts.load(ordering: .acquiring) < seen + 2 {
                    if MonotonicClock.nanoseconds() > deadline { return false }
                    sched_yield()
                }
                return true
            }
            for _ in 0..<2000 {
                let listener = try UnixSocket.listenOnceReady(path: path)
                let tried = letTheWatcherTryAgain()
                unlink(path)
                // A connect that found the file before the unlink must end
                // before the listener closes: that refusal is not the window
                // under test.
                let ended = letTheWatcherTryAgain()
                listener.close()
                guard tried, ended else {
                    Issue.record("the watching client stalled")
                    break
                }
            }
            watch.stop.store(true, ordering: .relaxed)
            watcher.join()
            #expect(watch.refused.load(ordering: .relaxed) == 0)
            #expect(watch.connected.load(ordering: .relaxed) >= 2000)
        }
    }
}

/// What the watching client saw, shared with the test's thread.
private final class WatcherCounts: Sendable {
    let refused = Atomic<Int>(0), connected = Atomic<Int>(0), attempts = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
}
