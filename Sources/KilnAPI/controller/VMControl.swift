import KilnConfig

/// The microVM's state as the API reports it (InstanceInfo.state).
public enum VMState: String, Sendable {
    case notStarted = "Not started"
    case running = "Running"
    case paused = "Paused"
}

/// What the API asks of the running VMM. The VMM implements it and runs
/// each call on its event loop; tests implement it with a recorder. Errors
/// thrown here reach the caller as 400 with the error's description.
public protocol VMControl: AnyObject {
    /// Builds the machine from a validated configuration and starts its vCPUs.
    func start(_ configuration: VMConfig) throws
    func pause() throws
    func resume() throws
    /// Presses Ctrl+Alt+Del on the guest's i8042 keyboard.
    func sendCtrlAltDel() throws
    func flushMetrics() throws
    /// Applies `PUT /logger` and `PUT /metrics` at once, before start.
    func configureLogger(_ logger: LoggerConfig) throws
    func configureMetrics(_ metrics: MetricsConfig) throws
    /// `PUT /vsock` before start: binds `uds_path` while the request is
    /// answered, as Firecracker does, replacing an earlier one. A refusal
    /// leaves the earlier socket as it was.
    func configureVsock(_ vsock: VsockDeviceConfig) throws
    /// `PUT /drives` before start: opens `path_on_host` as start will and
    /// closes it, so a drive that cannot be served is refused now.
    func checkDrive(_ drive: BlockDeviceConfig) throws
    /// `PUT /network-interfaces` before start: attaches to the TAP as start
    /// will and lets it go, so a missing or busy TAP is refused now.
    func checkNetworkInterface(_ interface: NetworkInterfaceConfig) throws
    /// After start: a drive's new backing file or rate limiter.
    func updateDrive(_ drive: BlockDeviceConfig) throws
    /// After start: an interface's new rate limiters.
    func updateNetworkInterface(_ interface: NetworkInterfaceConfig) throws
}
