import CKiln
import KilnAPI
import KilnConfig
import KilnMachine
import KilnSystem
import KilnTelemetry

#if canImport(Glibc)
    import Glibc
#endif

/// The VMM's threads and their life: the event loop on the main thread, the
/// API thread (`--api-sock`), and the machine's vCPU threads. It implements
/// `VMControl`: every call from the API thread runs as a job on the event
/// loop (`EventLoopMailbox`), before the machine exists and while it runs.
final class VMMRuntime: VMControl, @unchecked Sendable { // state changes only on the event loop (`mailbox`)
    let options: KilnCommandLineOptions
    let roles: SeccompRoles
    let metrics: MetricsSink
    let machineMetrics: MachineMetrics
    let mailbox: EventLoopMailbox
    /// The one event loop, on the main thread, before and after boot.
    let loop: EventLoop
    let start: UInt64
    private(set) var machine: Machine?
    /// vsock's `uds_path`, bound when vsock is configured (`PUT /vsock`, the
    /// config file) and removed when kiln ends, however it ends.
    private var vsockSocket: VsockHostSocket?
    /// A fatal error raised on another thread (the API thread failing to
    /// start); the event loop ends kiln with it.
    private var fatalError: String?
    /// The next periodic metrics flush: armed only while a destination is
    /// open, so an idle kiln without metrics sleeps until an event.
    private var metricsTimer: EventLoop.Token?

    init(options: KilnCommandLineOptions, roles: SeccompRoles, metrics: MetricsSink, start: UInt64) throws {
        self.options = options
        self.roles = roles
        self.metrics = metrics
        self.start = start
        machineMetrics = MachineMetrics(registry: metrics.registry)
        mailbox = try EventLoopMailbox()
        loop = try EventLoop()
    }

    // MARK: The event loop's life

    /// Runs kiln to the end: serves the API (if any), boots `configuration`
    /// at once when given, else waits for InstanceStart, then runs the
    /// machine. Returns the exit code; the API socket is gone by then.
    func run(configuration: VMConfig?) -> Int32 {
        Termination.install(wake: mailbox.wake.descriptor.rawValue)
        var socketPath: String?
        defer {
            // The socket files go with kiln, whatever ended it.
            if let socketPath { unlink(socketPath) }
            vsockSocket?.remove()
        }
        do {
            if let path = options.apiSocketPath {
                let listener = try APISocket.bind(path: path)
                socketPath = path
                try startAPIThread(listener: listener, configuration: configuration)
            }
            try loop.subscribe(mailbox.wake.descriptor) { [mailbox] _ in mailbox.service() }
            armMetricsTimer()
            if let configuration {
                if let vsock = configuration.vsock { try bindVsock(vsock) }
                try boot(configuration)
            }
            // Every round checks for a stop request itself: a signal's
            // wake-up may have been consumed by a job that ran meanwhile.
            // The wait has no bound: signals and jobs wake the loop.
            while machine == nil {
                if let code = stopCode() { return code }
                try loop.runOnce(maximumMilliseconds: -1)
            }
            guard let machine else { return 1 }
            let reason = try machine.run(on: loop) { [self] in
                if fatalError != nil { return "a fatal error" }
                return Termination.received.map { "stopped by signal \($0)" }
            }
            try? metrics.flush()
            if let code = stopCode() { return code }
            if reason.exitCode == 0 {
                Logger.shared.info("\(reason)")
            } else {
                Launcher.fatal("\(reason)")
            }
            return reason.exitCode
        } catch {
            Launcher.fatal("\(error)")
            return 1
        }
    }

    /// Nil while kiln should go on; else the code to exit with.
    private func stopCode() -> Int32? {
        if let fatalError {
            Launcher.fatal(fatalError)
            return 1
        }
        if let signal = Termination.received {
            Logger.shared.info("stopping on signal \(signal)")
            return 128 + signal
        }
        return nil
    }

    private func startAPIThread(listener: FileDescriptor, configuration: VMConfig?) throws {
        let controller = APIController(
            instanceID: options.id, version: Launcher.version,
            configuration: configuration ?? VMConfig(), control: self)
        if configuration != nil { controller.markStarted() }
        var serverConfiguration = APIServer.Configuration()
        serverConfiguration.limits.body = options.httpAPIMaxPayloadSize
        serverConfiguration.log = { Logger.shared.warning($0) }
        let server = try APIServer(
            listener: listener, configuration: serverConfiguration,
            handler: CountingRequestHandler(controller, registry: metrics.registry))
        let roles = self.roles
        _ = try SystemThread.spawn(name: "kiln-api") { [self] in
            do {
                try roles.enter(role: "api", label: "api")
                try server.run()
            } catch {
                try? mailbox.perform { self.fail("API thread: \(error)") }
            }
        }
    }

    /// Flushes metrics when due, every `MetricsSink.periodNanoseconds`
    /// from the last flush (a FlushMetrics in between moves it).
    private func armMetricsTimer() {
        guard metricsTimer == nil, metrics.isConfigured else { return }
        metricsTimer = loop.schedule(afterMilliseconds: metrics.millisecondsUntilDue) { [weak self] in
            guard let self else { return }
            metricsTimer = nil
            metrics.flushIfDue()
            armMetricsTimer()
        }
    }

    private func fail(_ message: String) {
        fatalError = fatalError ?? message
        machine?.stop(.failure(message))
    }

    /// Builds the machine, starts its vCPUs and closes the event loop in its
    /// own filter. On the event loop's thread.
    private func boot(_ configuration: VMConfig) throws {
        let roles = self.roles
        let trace = Logger.shared.isEnabled(.trace) ? RateLimitedLog(level: .trace, burst: 1000, perSecond: 1000) : nil
        let consoleFile = try options.consoleOutput.map {
            try FileDescriptor.open($0, O_WRONLY | O_CREAT | O_APPEND, mode: 0o600)
        }
        var host = MachineHost(
            consoleOutput: consoleFile ?? .standardOutput,
            consoleInput: .standardInput,
            log: { Logger.shared.info($0) }, startNanoseconds: start, bootTimer: options.bootTimer,
            firmware: ACPIFirmware.tables, trace: trace.map { log in { log.log($0) } })
        host.metrics = machineMetrics
        host.vcpuThreadStarted = { index in try roles.enter(role: "vcpu", label: "vcpu\(index)") }
        host.vcpusStarted = { try roles.enter(role: "vmm", label: "vmm") }
        host.vsockSocket = vsockSocket
        let machine: Machine
        do {
            machine = try Machine(configuration: configuration, host: host)
        } catch {
            // A refused InstanceStart may be retried: it must not keep the file open.
            consoleFile?.close()
            throw error
        }
        Logger.shared.debug(
            "machine ready: entry 0x\(String(machine.plan.entry, radix: 16)), "
                + "\(configuration.machine.vcpuCount) vCPU(s), \(configuration.machine.memSizeMiB) MiB")
        do {
            try machine.start(on: loop)
        } catch {
            // Some vCPUs may run already: nothing half-started stays behind.
            machine.stop(.failure("\(error)"))
            fatalError = "InstanceStart: \(error)"
            throw error
        }
        self.machine = machine
    }

    /// Binds `uds_path` on the event loop, under the launch role (the API
    /// thread's role has no socket or bind). The same path keeps its socket
    /// (with the new CID) while the file there is still that socket, and is
    /// bound again once the file was deleted (`VsockHostSocket.replacing`).
    private func bindVsock(_ vsock: VsockDeviceConfig) throws {
        vsockSocket = try VsockHostSocket.replacing(vsockSocket, path: vsock.udsPath)
    }

    // MARK: VMControl (called on the API thread)

    func configureVsock(_ vsock: VsockDeviceConfig) throws {
        try mailbox.perform { try self.bindVsock(vsock) }
    }

    func start(_ configuration: VMConfig) throws {
        try mailbox.perform { try self.boot(configuration) }
    }

    func pause() throws {
        try mailbox.perform { try self.runningMachine().pause() }
    }

    func resume() throws {
        try mailbox.perform { try self.runningMachine().resume() }
    }

    func sendCtrlAltDel() throws {
        try mailbox.perform { try self.runningMachine().sendCtrlAltDel() }
    }

    func flushMetrics() throws {
        try mailbox.perform { try self.metrics.flush() }
    }

    func configureLogger(_ logger: LoggerConfig) throws {
        try mailbox.perform { try Launcher.configureLogger(path: logger.logPath, level: logger.level) }
    }

    func configureMetrics(_ configuration: MetricsConfig) throws {
        try mailbox.perform {
            try self.metrics.open(path: configuration.metricsPath)
            self.armMetricsTimer()
        }
    }

    func checkDrive(_ drive: BlockDeviceConfig) throws {
        try mailbox.perform { try Machine.checkDrive(drive) }
    }

    func checkNetworkInterface(_ interface: NetworkInterfaceConfig) throws {
        try mailbox.perform { try Machine.checkNetworkInterface(interface) }
    }

    func updateDrive(_ drive: BlockDeviceConfig) throws {
        try mailbox.perform { try self.runningMachine().updateDrive(drive) }
    }

    func updateNetworkInterface(_ interface: NetworkInterfaceConfig) throws {
        try mailbox.perform { try self.runningMachine().updateNetworkInterface(interface) }
    }

    private func runningMachine() throws -> Machine {
        guard let machine else { throw APIError.badRequest(APIController.notSupportedBeforeStart) }
        return machine
    }
}

/// The API's listening socket, bound before any filter (no role has bind).
enum APISocket {
    static func bind(path: String) throws -> FileDescriptor {
        // A file already there is another kiln's socket or a stale one: the
        // operator decides, kiln never removes what it did not create.
        var status = stat()
        if lstat(path, &status) == 0 {
            throw LaunchError.apiSocketExists(path: path)
        }
        return try UnixSocket.listenOnceReady(path: path)
    }
}

/// SIGTERM and SIGINT end kiln cleanly: the handler records the signal and
/// wakes the event loop, which stops the machine and removes the socket.
enum Termination {
    nonisolated(unsafe) private static var wakeDescriptor: Int32 = -1
    nonisolated(unsafe) private static var signalNumber: Int32 = 0

    static var received: Int32? { signalNumber == 0 ? nil : signalNumber }

    static func install(wake: Int32) {
        wakeDescriptor = wake
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { signal in
            Termination.signalNumber = signal
            var one: UInt64 = 1
            _ = write(Termination.wakeDescriptor, &one, 8) // async-signal-safe
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = Int32(SA_RESTART)
        sigaction(SIGTERM, &action, nil)
        sigaction(SIGINT, &action, nil)
    }
}
