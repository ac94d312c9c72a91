import KilnJSON
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// The VMM's logger: one JSON object per line, with a monotonic timestamp,
/// the level and the writing thread's role, e.g.
///
///     {"ts_ns":1234,"level":"info","thread":"vcpu0","msg":"..."}
///
/// Each line is one write(2), so lines from different threads never
/// interleave. A FIFO reader that stops reading loses lines (the write is
/// non-blocking) rather than stalling a vCPU.
public final class Logger: Sendable {
    public static let shared = Logger()

    private struct State {
        var destination = FileDescriptor.standardError
        var ownsDestination = false
        var level: LogLevel = .warning
        var droppedLines: UInt64 = 0
    }
    private let state = Locked(State())

    public var level: LogLevel { state.withLock { $0.level } }
    /// Lines a full FIFO or a failed write lost.
    public var droppedLines: UInt64 { state.withLock { $0.droppedLines } }

    public init() {}

    /// Sends lines to `path` (a file, appended to, or a FIFO); nil for stderr.
    public func configure(path: String?, level: LogLevel) throws {
        let fd = try path.map { try FileDescriptor.open($0, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK, mode: 0o600) }
        state.withLock { state in
            if state.ownsDestination { state.destination.close() }
            state.destination = fd ?? .standardError
            state.ownsDestination = fd != nil
            state.level = level
        }
    }

    /// The descriptor lines go to (for writers that cannot take the lock,
    /// such as a signal handler).
    public var descriptor: Int32 {
        state.withLock { $0.destination.rawValue }
    }

    public func isEnabled(_ level: LogLevel) -> Bool { level != .off && level <= self.level }

    public func log(
        _ level: LogLevel, _ message: @autoclosure () -> String,
        fields: [(key: String, value: JSONValue)] = []
    ) {
        guard isEnabled(level) else { return }
        var members: [(key: String, value: JSONValue)] = [
            ("ts_ns", .integer(MonotonicClock.nanoseconds())),
            ("level", .string(level.name)),
            ("thread", .string(ThreadRole.current)),
            ("msg", .string(message())),
        ]
        members += fields
        let line = Array((JSONValue.object(members).encoded() + "\n").utf8)
        state.withLock { state in
            let written = line.withUnsafeBytes { Glibc.write(state.destination.rawValue, $0.baseAddress, $0.count) }
            if written != line.count { state.droppedLines += 1 }
        }
    }

    public func error(_ message: @autoclosure () -> String) { log(.error, message()) }
    public func warning(_ message: @autoclosure () -> String) { log(.warning, message()) }
    public func info(_ message: @autoclosure () -> String) { log(.info, message()) }
    public func debug(_ message: @autoclosure () -> String) { log(.debug, message()) }
}

/// The calling thread's role ("vmm", "api", "vcpu0", ...), for log lines and
/// seccomp reports. Set once at the top of each thread.
public enum ThreadRole {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// The role names are static strings, so the pointer stays valid forever.
    private static let interned = Locked<[String: UnsafeMutablePointer<CChar>]>([:])

    public static func set(_ role: String) {
        let pointer = interned.withLock { interned -> UnsafeMutablePointer<CChar> in
            let pointer = interned[role] ?? strdup(role)!
            interned[role] = pointer
            return pointer
        }
        pthread_setspecific(key, pointer)
    }

    public static var current: String {
        guard let pointer = pthread_getspecific(key) else { return "main" }
        return String(cString: pointer.assumingMemoryBound(to: CChar.self))
    }
}
