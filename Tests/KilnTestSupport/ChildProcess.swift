#if canImport(Glibc)
    import Glibc
#endif

/// Runs a program to completion under timeout(1), so that a hang fails one
/// test instead of the suite, with its output captured through files (no
/// pipe to fill up) and a clean signal state, as a shell would give it.
public enum ChildProcess {
    public struct Finished {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    public struct SpawnFailure: Error, CustomStringConvertible {
        public let code: Int32
        public var description: String { "posix_spawn failed: errno \(code)" }
    }

    /// A started child; `wait()` reaps it and collects its output.
    public final class Running {
        /// The pid of timeout(1), whose child is the program.
        public let pid: pid_t
        let outPath: String, errPath: String, inPath: String

        init(pid: pid_t, outPath: String, errPath: String, inPath: String) {
            self.pid = pid
            self.outPath = outPath
            self.errPath = errPath
            self.inPath = inPath
        }

        /// The status is the exit code, or 128 + the signal that ended it.
        public func wait() -> Finished {
            let exitCode = ChildProcess.wait(pid)
            defer { unlink(outPath); unlink(errPath); unlink(inPath) }
            return Finished(status: exitCode, stdout: ChildProcess.read(outPath), stderr: ChildProcess.read(errPath))
        }

        /// What the program has written to stdout so far.
        public var stdoutSoFar: String { ChildProcess.read(outPath) }

        /// The program's own pid: timeout(1)'s only child.
        public var programPID: pid_t? {
            let children = ChildProcess.read("/proc/\(pid)/task/\(pid)/children").split(separator: " ")
            return children.first.flatMap { pid_t($0.filter { $0 != "\n" }) }
        }
    }

    public static func run(_ argv: [String], input: String? = nil, seconds: Int) throws -> Finished {
        try start(argv, input: input, seconds: seconds).wait()
    }

    public static func start(_ argv: [String], input: String? = nil, seconds: Int) throws -> Running {
        let scratch = "/tmp/kiln-child-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let outPath = scratch + ".out", errPath = scratch + ".err", inPath = scratch + ".in"
        if let input { write(input, to: inPath) }
        do {
            let pid = try spawn(
                argv, stdin: input == nil ? nil : inPath, stdout: outPath, stderr: errPath, seconds: seconds)
            return Running(pid: pid, outPath: outPath, errPath: errPath, inPath: inPath)
        } catch {
            unlink(inPath)
            throw error
        }
    }

    /// Starts `argv` under timeout(1) with its standard streams on the given
    /// files (stdin /dev/null when nil), for a caller that reads them while
    /// it runs. Returns timeout(1)'s pid, for `wait`.
    public static func spawn(
        _ argv: [String], stdin: String? = nil, stdout: String, stderr: String,
        seconds: Int
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        // The test runner's worker threads may block signals.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t(), all = sigset_t()
        sigemptyset(&empty)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let full = ["/usr/bin/timeout", "-k", "5", String(seconds)] + argv
        var cArguments = full.map { strdup($0) } + [nil]
        defer { for argument in cArguments { free(argument) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, full[0], &actions, &attributes, &cArguments, environ)
        guard spawned == 0 else { throw SpawnFailure(code: spawned) }
        return pid
    }

    /// Reaps a child: its exit code, or 128 + the signal that ended it.
    public static func wait(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    public static func read(_ path: String) -> String {
        String(decoding: readBytes(path), as: UTF8.self)
    }

    /// A file's bytes; empty when it cannot be opened.
    public static func readBytes(_ path: String) -> [UInt8] {
        guard let file = fopen(path, "r") else { return [] }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count == 0 { break }
            bytes += chunk[0..<count]
        }
        return bytes
    }

    public static func write(_ text: String, to path: String) {
        guard let file = fopen(path, "w") else { return }
        fputs(text, file)
        fclose(file)
    }

    /// The folder of the running test binary, where `swift build` puts every
    /// executable product (kiln, kiln-jailer, kiln-policy).
    public static let buildFolder: String = {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return "" }
        var path = String(decoding: buffer[0..<count], as: UTF8.self)
        while let last = path.last, last != "/" { path.removeLast() }
        return String(path.dropLast())
    }()

    /// The package root, from a test file's #filePath (Tests/<target>/<file>).
    public static func packageRoot(filePath: String = #filePath) -> String {
        var path = filePath
        for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
        return path
    }
}
