#if canImport(Glibc)
import Glibc
#endif
import KilnConfig
import KilnMachine
import KilnSystem

/// Exit codes: 0 guest reset or powered off, 1 bad usage or configuration,
/// 2 guest or KVM failure, 3 guest halted for good.
enum Launcher {
    static func main(arguments: [String], start: UInt64) -> Int32 {
        // Start from a clean signal mask whatever the parent left blocked:
        // SIGTERM must end kiln, and the vCPU kick must reach its threads.
        var nothing = sigset_t()
        sigemptyset(&nothing)
        sigprocmask(SIG_SETMASK, &nothing, nil)
        // A console reader that goes away must not kill the VM: writes then
        // fail with EPIPE and the guest's output is dropped.
        signal(SIGPIPE, SIG_IGN)
        let options: CommandLineOptions
        do {
            options = try CommandLineOptions(arguments: arguments)
        } catch {
            fputs("kiln: \(error)\n\(CommandLineOptions.usage)\n", stderr)
            return 1
        }
        if options.help {
            print(CommandLineOptions.usage)
            return 0
        }
        let configuration: VMConfiguration
        let log: LogSink
        let filters: ThreadFilters?
        do {
            let configBytes = try options.configFile.map { try FileSystem.readFile($0, limit: 1 << 20) }
            configuration = try options.configuration(configFileBytes: configBytes)
            if configuration.metrics != nil {
                throw CommandLineOptions.UsageError("metrics: the metrics file is not supported yet")
            }
            // Flags win over the config file's logger section, as in Firecracker.
            log = try LogSink(path: options.logPath ?? configuration.logger?.logPath,
                              level: options.level ?? configuration.logger?.level ?? .info, id: options.id)
            filters = try options.seccompFilter.map { try ThreadFilters(path: $0) }
        } catch {
            fputs("kiln: \(error)\n", stderr)
            return 1
        }
        if let overhead = JailerOverhead(options: options, kilnStart: start) { log.write(.info, "\(overhead)") }
        let terminal = ConsoleTerminal.rawIfInteractive()
        defer { terminal?.restore() }
        do {
            let consoleOutput = try options.consoleOutput.map {
                try FileDescriptor.open($0, O_WRONLY | O_CREAT | O_APPEND, mode: 0o600)
            } ?? .standardOutput
            let host = MachineHost(
                consoleOutput: consoleOutput,
                consoleInput: .standardInput,
                log: { log.write(.info, $0) }, startNanoseconds: start, bootTimer: options.bootTimer,
                firmware: ACPIFirmware.tables, confineThread: filters.map { filters in filters.confine },
                trace: log.enabled(.trace) ? { log.write(.trace, $0) } : nil)
            let machine = try Machine(configuration: configuration, host: host)
            log.write(.debug, "machine ready: entry 0x\(String(machine.plan.entry, radix: 16)), "
                      + "\(configuration.machine.vcpuCount) vCPU(s), \(configuration.machine.memSizeMiB) MiB")
            let reason = try machine.run()
            if reason.exitCode == 0 {
                log.write(.info, "\(reason)")
            } else {
                log.fatal("\(reason)")
            }
            return reason.exitCode
        } catch {
            log.fatal("\(error)")
            return 1
        }
    }
}

/// Log lines to stderr or --log-path, filtered by --level. Firecracker's
/// shape: timestamp, instance id, level, message.
final class LogSink: @unchecked Sendable {
    private let fd: FileDescriptor
    private let toFile: Bool
    private let threshold: Logger.Level
    private let id: String

    init(path: String?, level: Logger.Level, id: String) throws {
        fd = try path.map { try FileDescriptor.open($0, O_WRONLY | O_CREAT | O_APPEND, mode: 0o600) } ?? .standardError
        toFile = path != nil
        threshold = level
        self.id = id
    }

    /// An error that ends kiln: logged, and always shown on stderr.
    func fatal(_ message: String) {
        write(.error, message)
        if toFile || threshold == .off { fputs("kiln: \(message)\n", stderr) }
    }

    static let order: [Logger.Level] = [.off, .error, .warning, .info, .debug, .trace]

    func enabled(_ level: Logger.Level) -> Bool {
        guard let wanted = LogSink.order.firstIndex(of: threshold), let actual = LogSink.order.firstIndex(of: level) else {
            return false
        }
        return actual <= wanted && level != .off
    }

    func write(_ level: Logger.Level, _ message: String) {
        guard enabled(level) else { return }
        let seconds = Double(MonotonicClock.nanoseconds() / 1000) / 1_000_000
        try? fd.writeAll(Array("[\(id):\(level.rawValue.uppercased())] \(seconds) \(message)\n".utf8))
    }
}

/// An interactive console: when stdin is a terminal, keystrokes go to the
/// guest's UART byte by byte (no line editing, no echo, Ctrl-C included),
/// and the terminal is restored when kiln ends.
struct ConsoleTerminal {
    private let saved: termios

    static func rawIfInteractive() -> ConsoleTerminal? {
        guard isatty(0) != 0 else { return nil }
        var current = termios()
        guard tcgetattr(0, &current) == 0 else { return nil }
        var raw = current
        cfmakeraw(&raw)
        raw.c_oflag = current.c_oflag // keep output post-processing (\n -> \r\n)
        guard tcsetattr(0, TCSANOW, &raw) == 0 else { return nil }
        return ConsoleTerminal(saved: current)
    }

    func restore() {
        var original = saved
        tcsetattr(0, TCSANOW, &original)
    }
}
