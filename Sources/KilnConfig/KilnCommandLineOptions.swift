/// `kiln`'s command line: Firecracker's flags, plus a direct-boot shortcut
/// (--kernel/--initrd/--cmdline/--vcpus/--mem) for runs without a config
/// file. Parsing is pure; the executable acts on the result.
public struct KilnCommandLineOptions: Equatable, Sendable {
    public var configFile: String?
    public var noAPI = false
    public var apiSocket: String?
    public var id = "anonymous-instance"
    public var seccompFilter: String?
    public var noSeccomp = false
    public var logPath: String?
    public var level: LoggerConfig.Level?
    /// Metrics from the start (Firecracker's --metrics-path); wins over the config file's.
    public var metricsPath: String?
    public var bootTimer = false
    /// Guest serial output to this file or FIFO instead of stdout.
    public var consoleOutput: String?
    public var kernel: String?
    public var initrd: String?
    public var commandLine: String?
    public var vcpus: Int?
    public var memoryMiB: Int?
    public var help = false
    /// The largest request body the API accepts (Firecracker's default: 51200).
    public var httpAPIMaxPayloadSize = 51_200
    /// kiln-jailer's start, CLOCK_MONOTONIC and process CPU time in
    /// microseconds (Firecracker's jailer passes the same two flags).
    public var jailerStartMicroseconds: UInt64?
    public var jailerStartCPUMicroseconds: UInt64?
    /// CPU time the parent spent before the exec, added to the start-up CPU figure.
    public var parentCPUMicroseconds: UInt64?
    /// --version: print the versions and exit.
    public var version = false
    /// --enable-pci: accepted so that clients which always pass it (microheart)
    /// run; there is no PCI transport, so the devices stay virtio-mmio and
    /// kiln logs that (`enablePCINotice`).
    public var enablePCI = false
    public static let enablePCINotice =
        "--enable-pci: Kiln has no PCI transport; the guest gets every device on virtio-mmio "
        + "(announced in ACPI as LNRO0005 and by virtio_mmio.device= on its command line), as without the flag"

    /// Where the API listens when neither --api-sock nor --no-api is given:
    /// Firecracker's, which orchestrators find in a jail's /run.
    public static let defaultAPISocket = "/run/firecracker.socket"
    public static let payloadSizeRange = 1...(16 << 20)

    public init() {}

    /// Why the flags were refused; kiln prints the reason and its usage.
    public enum UsageError: Error, Equatable, CustomStringConvertible, Sendable {
        case missingValue(flag: String)
        case notAnInteger(flag: String, range: ClosedRange<Int>, got: String)
        case notMicroseconds(flag: String, got: String)
        /// `--flag=value`, which Firecracker's parser does not take either.
        case valueAfterEquals(argument: String, flag: String)
        case unknownArgument(String)
        /// A value with no flag before it.
        case unexpectedArgument(String)
        case repeated(flag: String)
        case notImplemented(flag: String, feature: String)
        case badID(String)
        case badLevel(String)
        /// `flags` lists a flag the parser's switch does not handle.
        case unhandled(flag: String)
        case contradiction(String, String)
        case directBootNeedsNoAPI
        case directBootWithConfigFile
        case noAPIWithoutBootSource

        public var description: String {
            switch self {
            case .missingValue(let flag): "\(flag) needs a value"
            case .notAnInteger(let flag, let range, let got):
                "\(flag) expects an integer from \(range.lowerBound) to \(range.upperBound), got \"\(got)\""
            case .notMicroseconds(let flag, let got): "\(flag) expects a decimal count of microseconds, got \"\(got)\""
            case .valueAfterEquals(let argument, let flag):
                "\"\(argument)\": write \(flag) VALUE; like Firecracker, kiln takes a flag's value as the next argument"
            case .unknownArgument(let argument): "unknown argument \"\(argument)\""
            case .unexpectedArgument(let argument): "unexpected argument \"\(argument)\" (every value follows its flag)"
            case .repeated(let flag): "\(flag) given more than once"
            case .notImplemented(let flag, let feature): "\(flag): Kiln does not implement \(feature) yet"
            case .badID(let id): "--id must be 1 to 64 characters of A-Z, a-z, 0-9 and -, got \"\(id)\""
            case .badLevel(let text): "--level expects Off, Error, Warn, Info, Debug or Trace, got \"\(text)\""
            case .unhandled(let flag): "\(flag) is listed but not handled"
            case .contradiction(let first, let second): "\(first) and \(second) contradict each other; pass one"
            case .directBootNeedsNoAPI: "--kernel, --initrd, --cmdline, --vcpus and --mem need --no-api"
            case .directBootWithConfigFile:
                "--kernel, --initrd, --cmdline, --vcpus and --mem cannot be combined with --config-file"
            case .noAPIWithoutBootSource: "--no-api needs --config-file or --kernel"
            }
        }
    }

    public static let usage = """
        usage: kiln [--api-sock PATH] [--config-file vm.json] [--seccomp-filter BUNDLE | --no-seccomp]
               kiln --no-api (--config-file vm.json | --kernel PATH [options]) [--seccomp-filter BUNDLE | --no-seccomp]

        Firecracker's flags (a value is the next argument: --flag VALUE, never --flag=VALUE):
          --api-sock PATH         serve Firecracker's REST API on this Unix socket (default /run/firecracker.socket);
                                  the file must not exist, and is removed when kiln ends
          --config-file PATH      VM configuration in Firecracker's config-file JSON; the VM starts at once
          --no-api                no API server: the VM comes from --config-file (or --kernel)
          --http-api-max-payload-size N  largest API request body in bytes (default 51200)
          --id ID                 instance id, 1-64 of [A-Za-z0-9-] (default anonymous-instance)
          --seccomp-filter PATH   a bundle from `kiln-policy compile` (not Firecracker's BPF format) replacing the
                                  built-in one; each thread installs its role's filter
          --no-seccomp            run without seccomp filters (development only: prints a warning)
                                  (neither: the policies built into kiln)
          --start-time-us N       the jailer's start (CLOCK_MONOTONIC, microseconds), to log its overhead
          --start-time-cpu-us N   the jailer's process CPU time at its start (microseconds)
          --parent-cpu-time-us N  CPU time of the parent before it forked (microseconds), added to the CPU figure
          --log-path PATH         append log lines to PATH instead of stderr
          --level LEVEL           Off, Error, Warn (or Warning), Info, Debug or Trace (default Info)
          --show-level            accepted: every log line carries its level
          --metrics-path PATH     write metrics to PATH (file or FIFO) from the start
          --boot-timer            log the guest's boot time when it writes the boot-timer device
          --enable-pci            accepted, with a warning in the log: there is no PCI transport, so every device
                                  stays virtio-mmio (a guest without the virtio_mmio driver finds no disks)
          --version               print kiln's version and the Firecracker API version it implements
          --help, -h              this text
          Arguments after -- are ignored, as Firecracker ignores them.
        Firecracker's flags that Kiln refuses, naming the missing feature:
          --metadata, --mmds-size-limit (MMDS); --snapshot-version, --describe-snapshot (snapshots);
          --module, --show-log-origin (log lines carry no module or origin)
        Direct boot (instead of --config-file):
          --kernel PATH --initrd PATH --cmdline ARGS --vcpus N --mem MIB
        Other:
          --console-output PATH   guest serial output to PATH instead of stdout
        """

    enum Arity { case flag, value }

    /// Every flag and whether it takes a value; Firecracker's first.
    static let flags: [String: Arity] = [
        "--api-sock": .value, "--id": .value, "--seccomp-filter": .value, "--no-seccomp": .flag,
        "--start-time-us": .value, "--start-time-cpu-us": .value, "--parent-cpu-time-us": .value,
        "--config-file": .value, "--metadata": .value, "--no-api": .flag, "--log-path": .value,
        "--level": .value, "--module": .value, "--show-level": .flag, "--show-log-origin": .flag,
        "--metrics-path": .value, "--boot-timer": .flag, "--version": .flag, "--snapshot-version": .flag,
        "--describe-snapshot": .value, "--http-api-max-payload-size": .value, "--mmds-size-limit": .value,
        "--enable-pci": .flag,
        "--console-output": .value, "--kernel": .value, "--initrd": .value, "--cmdline": .value,
        "--vcpus": .value, "--mem": .value, "--help": .flag,
    ]

    /// Firecracker flags for features Kiln lacks: refused at once, by name,
    /// rather than accepted and ignored.
    static let missingFeatures: [String: String] = [
        "--metadata": "the microVM metadata service (MMDS)",
        "--mmds-size-limit": "the microVM metadata service (MMDS)",
        "--snapshot-version": "snapshots, so it has no snapshot data format",
        "--describe-snapshot": "snapshots",
        "--module": "a log filter by source module (its log lines carry none)",
        "--show-log-origin": "log lines with their source file and line",
    ]

    /// Parses as Firecracker's parser does: `--help` or `--version` anywhere
    /// wins; a flag given twice, a value that starts with `--`, `--flag=VALUE`
    /// and a stray word are refused; what follows `--` is ignored.
    public init(arguments: [String]) throws {
        let own = arguments.firstIndex(of: "--").map { arguments[..<$0] } ?? arguments[...]
        if own.contains("--help") || own.contains("-h") {
            help = true
            return
        }
        if own.contains("--version") {
            version = true
            return
        }
        var remaining = own
        var seen: Set<String> = []
        func value(_ flag: String) throws -> String {
            guard let next = remaining.popFirst(), !next.hasPrefix("--") else {
                throw UsageError.missingValue(flag: flag)
            }
            return next
        }
        func number(_ flag: String, in range: ClosedRange<Int>) throws -> Int {
            let text = try value(flag)
            guard let parsed = Int(text), range.contains(parsed) else {
                throw UsageError.notAnInteger(flag: flag, range: range, got: text)
            }
            return parsed
        }
        func microseconds(_ flag: String) throws -> UInt64 {
            let text = try value(flag)
            guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let parsed = UInt64(text) else {
                throw UsageError.notMicroseconds(flag: flag, got: text)
            }
            return parsed
        }
        while let flag = remaining.popFirst() {
            guard Self.flags[flag] != nil else {
                if flag.hasPrefix("--"), let equals = flag.firstIndex(of: "="),
                    Self.flags[String(flag[..<equals])] != nil
                {
                    throw UsageError.valueAfterEquals(argument: flag, flag: String(flag[..<equals]))
                }
                throw flag.hasPrefix("-") ? UsageError.unknownArgument(flag) : UsageError.unexpectedArgument(flag)
            }
            guard seen.insert(flag).inserted else { throw UsageError.repeated(flag: flag) }
            if let feature = Self.missingFeatures[flag] {
                throw UsageError.notImplemented(flag: flag, feature: feature)
            }
            switch flag {
            case "--config-file": configFile = try value(flag)
            case "--no-api": noAPI = true
            case "--api-sock": apiSocket = try value(flag)
            case "--id":
                id = try value(flag)
                guard (1...64).contains(id.utf8.count),
                    id.utf8.allSatisfy({
                        ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || $0 == 0x2d
                    })
                else { throw UsageError.badID(id) }
            case "--seccomp-filter": seccompFilter = try value(flag)
            case "--no-seccomp": noSeccomp = true
            case "--http-api-max-payload-size":
                httpAPIMaxPayloadSize = try number(flag, in: KilnCommandLineOptions.payloadSizeRange)
            case "--log-path": logPath = try value(flag)
            case "--level":
                let text = try value(flag)
                let name = text.lowercased() == "warn" ? "warning" : text.lowercased()
                guard let parsed = LoggerConfig.Level.allCases.first(where: { $0.rawValue.lowercased() == name }) else {
                    throw UsageError.badLevel(text)
                }
                level = parsed
            case "--show-level": break // every line carries its level
            case "--metrics-path": metricsPath = try value(flag)
            case "--boot-timer": bootTimer = true
            case "--enable-pci": enablePCI = true
            case "--start-time-us": jailerStartMicroseconds = try microseconds(flag)
            case "--start-time-cpu-us": jailerStartCPUMicroseconds = try microseconds(flag)
            case "--parent-cpu-time-us": parentCPUMicroseconds = try microseconds(flag)
            case "--console-output": consoleOutput = try value(flag)
            case "--kernel": kernel = try value(flag)
            case "--initrd": initrd = try value(flag)
            case "--cmdline": commandLine = try value(flag)
            case "--vcpus": vcpus = try number(flag, in: MachineConfig.vcpuRange)
            case "--mem": memoryMiB = try number(flag, in: 16...(64 << 10))
            default: throw UsageError.unhandled(flag: flag) // a table and switch out of step
            }
        }
    }

    /// The API socket to serve, or nil with --no-api.
    public var apiSocketPath: String? { noAPI ? nil : apiSocket ?? KilnCommandLineOptions.defaultAPISocket }

    /// Refuses contradictory flags, with the reason, and builds the VM
    /// configuration the flags describe: nil when the API will provide it.
    public func configuration(configFileBytes: [UInt8]?) throws -> VMConfig? {
        if noAPI && apiSocket != nil { throw UsageError.contradiction("--no-api", "--api-sock") }
        if seccompFilter != nil && noSeccomp {
            throw UsageError.contradiction("--seccomp-filter", "--no-seccomp")
        }
        let directBoot = kernel != nil || initrd != nil || commandLine != nil || vcpus != nil || memoryMiB != nil
        if directBoot && !noAPI { throw UsageError.directBootNeedsNoAPI }
        var config: VMConfig
        if let configFileBytes {
            guard !directBoot else {
                throw UsageError.directBootWithConfigFile
            }
            config = try VMConfig(configFile: configFileBytes)
        } else {
            guard noAPI else { return nil }
            guard let kernel else { throw UsageError.noAPIWithoutBootSource }
            config = VMConfig(
                bootSource: BootSourceConfig(kernelImagePath: kernel, initrdPath: initrd, bootArgs: commandLine))
            if let vcpus { config.machine.vcpuCount = vcpus }
            if let memoryMiB { config.machine.memSizeMiB = memoryMiB }
            try config.validate()
        }
        return config
    }
}
