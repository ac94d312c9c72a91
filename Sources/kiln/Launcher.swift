import CKiln
import KilnConfig
import KilnMachine
import KilnSystem
import KilnTelemetry

#if canImport(Glibc)
    import Glibc
#endif

/// Exit codes: 0 guest reset or powered off, 1 bad usage or configuration,
/// 2 guest or KVM failure, 3 guest halted for good, 128+N stopped by signal N
/// (SIGTERM, SIGINT), 148 a seccomp filter trapped a system call.
enum Launcher {
    /// What the API reports (GET /version, GET /): the Firecracker version
    /// implemented, which clients compare, as `--version` leads with it.
    static let version = KilnVersion.firecracker

    static func main(arguments: [String], start: UInt64) -> Int32 {
        // Start from a clean signal mask whatever the parent left blocked:
        // SIGTERM must end kiln, and the vCPU kick must reach its threads.
        var nothing = sigset_t()
        sigemptyset(&nothing)
        sigprocmask(SIG_SETMASK, &nothing, nil)
        // A console reader that goes away must not kill the VM: writes then
        // fail with EPIPE and the guest's output is dropped.
        signal(SIGPIPE, SIG_IGN)
        ThreadRole.set("vmm")
        ckiln_sigsys_set_thread_role("vmm")
        let options: KilnCommandLineOptions
        do {
            options = try KilnCommandLineOptions(arguments: arguments)
        } catch {
            FileDescriptor.standardError.write(message: "kiln: \(error)\n\(KilnCommandLineOptions.usage)\n")
            return 1
        }
        if options.help {
            print(KilnCommandLineOptions.usage)
            return 0
        }
        if options.version {
            print(KilnVersion.vmmText, terminator: "")
            return 0
        }
        let configuration: VMConfig?
        let roles: SeccompRoles
        let metrics = MetricsSink(registry: MetricsRegistry())
        do {
            let configBytes = try options.configFile.map { try FileSystem.readFile($0, limit: 1 << 20) }
            configuration = try options.configuration(configFileBytes: configBytes)
            roles = try SeccompRoles.load(path: options.seccompFilter, noSeccomp: options.noSeccomp)
            // Flags win over the config file's logger section, as in Firecracker.
            try configureLogger(
                path: options.logPath ?? configuration?.logger?.logPath,
                level: options.level ?? configuration?.logger?.level ?? .info)
            if let metricsPath = options.metricsPath ?? configuration?.metrics?.metricsPath {
                try metrics.open(path: metricsPath)
            }
        } catch {
            FileDescriptor.standardError.write(message: "kiln: \(error)\n")
            return 1
        }
        if let overhead = JailerOverhead(options: options, kilnStart: start) { Logger.shared.info("\(overhead)") }
        if options.enablePCI { Logger.shared.warning(KilnCommandLineOptions.enablePCINotice) }
        if roles.bundle == nil {
            let warning = "WARNING: --no-seccomp: every thread runs WITHOUT a seccomp filter; for development only"
            Logger.shared.warning(warning)
            if options.logPath != nil { FileDescriptor.standardError.write(message: "kiln: \(warning)\n") }
        }
        // Before any filter: a trapped call is reported, never silent.
        guard ckiln_sigsys_install() == 0 else {
            FileDescriptor.standardError.write(
                message: "kiln: sigaction(SIGSYS): \(SystemError.current("sigaction"))\n")
            return 1
        }
        let terminal = ConsoleTerminal.rawIfInteractive()
        defer { terminal?.restore() }
        do {
            let runtime = try VMMRuntime(options: options, roles: roles, metrics: metrics, start: start)
            // The runtime, its machine and their descriptors live until the
            // process exits: freeing them would close descriptors under the
            // vmm filter, which has no close (exit(2) releases them all).
            _ = Unmanaged.passRetained(runtime)
            return runtime.run(configuration: configuration)
        } catch {
            fatal("\(error)")
            return 1
        }
    }

    /// Points the logger at `path` (a file or FIFO; stderr when nil), and
    /// the SIGSYS report with it.
    static func configureLogger(path: String?, level: LoggerConfig.Level?) throws {
        let wanted = level.flatMap { LogLevel(name: $0.rawValue) } ?? .info
        try Logger.shared.configure(path: path, level: wanted)
        ckiln_sigsys_set_log_fd(Logger.shared.descriptor)
    }

    /// An error that ends kiln: logged, and always shown on stderr.
    static func fatal(_ message: String) {
        Logger.shared.error(message)
        if Logger.shared.descriptor != 2 || !Logger.shared.isEnabled(.error) {
            FileDescriptor.standardError.write(message: "kiln: \(message)\n")
        }
    }
}

/// Why kiln could not start: its seccomp bundle or its API socket.
enum LaunchError: Error, CustomStringConvertible {
    case libraryPreparation(any Error)
    /// `source` names the bundle: its --seccomp-filter path, or the built-in one.
    case bundleUnreadable(source: String, any Error)
    case bundleInvalid(source: String, any Error, firecrackerFormat: Bool)
    case bundleArchitecture(source: String, bundle: UInt32, host: UInt32)
    case bundleRoleMissing(source: String, role: String)
    case apiSocketExists(path: String)

    var description: String {
        switch self {
        case .libraryPreparation(let error): "preparing the C library for the thread filters: \(error)"
        case .bundleUnreadable(let source, let error): "\(source): \(error)"
        case .bundleInvalid(let source, let error, let firecrackerFormat):
            // Firecracker's clients may hand over a filter compiled for Firecracker.
            "\(source): \(error)"
                + (firecrackerFormat
                    ? " (kiln reads the bundles `kiln-policy compile` writes, not Firecracker's compiled filters)" : "")
        case .bundleArchitecture(let source, let bundle, let host):
            "\(source): compiled for architecture 0x\(String(bundle, radix: 16)), this host is 0x\(String(host, radix: 16))"
        case .bundleRoleMissing(let source, let role): "\(source): the bundle has no program for the \(role) role"
        case .apiSocketExists(let path):
            "--api-sock \(path): a file already exists there (another kiln, or a stale socket to remove)"
        }
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
