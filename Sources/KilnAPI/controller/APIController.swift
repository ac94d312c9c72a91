import KilnConfig
import KilnJSON

/// Turns API requests into edits of the one `VMConfig` before start,
/// and into `VMControl` calls after it, answering as Firecracker does:
/// 204 for a change, 200 with a body for a read, 400 with
/// `{"fault_message": …}` for anything refused. Every edit is validated on a
/// copy, so a refused request leaves the configuration as it was.
public final class APIController: APIRequestHandler {
    public let instanceID: String
    public let version: String
    public private(set) var configuration: VMConfig
    public private(set) var state: VMState = .notStarted
    private let control: VMControl

    public static let notSupportedAfterStart = "The requested operation is not supported after starting the microVM."
    public static let notSupportedBeforeStart = "The requested operation is not supported before starting the microVM."

    public init(
        instanceID: String, version: String, configuration: VMConfig = VMConfig(),
        control: VMControl
    ) {
        self.instanceID = instanceID
        self.version = version
        self.configuration = configuration
        self.control = control
    }

    /// Marks a VM started outside the API (`--config-file` with an API socket).
    public func markStarted() { state = .running }

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        do {
            let route = try APIRoute.resolve(method: request.method, path: request.path)
            try Self.checkBodyPresence(method: request.method, body: request.body)
            return try perform(route, body: request.body)
        } catch let error as APIError {
            return error.response
        } catch let error as JSONDecodingError {
            return APIError.badRequest(Self.deserializingFailure("\(error)")).response
        } catch {
            return APIError.badRequest("\(error)").response
        }
    }

    private func perform(_ route: APIRoute, body: [UInt8]) throws -> HTTPResponse {
        switch route {
        case .describeInstance:
            return ok(
                .object([
                    ("id", .string(instanceID)), ("state", .string(state.rawValue)),
                    ("vmm_version", .string(version)), ("app_name", .string("Kiln")),
                ]))
        case .version:
            return ok(.object([("firecracker_version", .string(version))]))
        case .vmConfig:
            return ok(configuration.json)
        case .getMachineConfig:
            return ok(configuration.machine.json)

        case .putBootSource:
            var reader = try bodyReader(body)
            let bootSource = try BootSourceConfig(json: &reader)
            try editBeforeStart { $0.bootSource = bootSource }
        case .putMachineConfig:
            var reader = try bodyReader(body)
            let machine = try MachineConfig(json: &reader)
            try editBeforeStart { $0.machine = machine }
        case .patchMachineConfig:
            var reader = try bodyReader(body)
            try editBeforeStart { try $0.machine.patch(json: &reader) }
        case let .putDrive(id):
            var reader = try bodyReader(body)
            let drive = try BlockDeviceConfig(json: &reader)
            try Self.requireMatchingID(path: id, body: drive.driveID)
            try editBeforeStart { configuration in
                if let index = configuration.drives.firstIndex(where: { $0.driveID == id }) {
                    configuration.drives[index] = drive
                } else {
                    configuration.drives.append(drive)
                }
            } apply: { _ in
                try self.control.checkDrive(drive)
            }
        case let .patchDrive(id):
            var reader = try bodyReader(body)
            try Self.requireMatchingID(path: id, body: try reader.requiredString("drive_id"))
            let pathOnHost = try reader.path("path_on_host")
            let rateLimiter = try reader.rateLimiter("rate_limiter")
            try reader.finish()
            try editAfterStart { configuration in
                guard let index = configuration.drives.firstIndex(where: { $0.driveID == id }) else {
                    throw APIError.badRequest("No drive with id \(id) is attached.")
                }
                if let pathOnHost { configuration.drives[index].pathOnHost = pathOnHost }
                if let rateLimiter { configuration.drives[index].rateLimiter = rateLimiter }
                return index
            } apply: { configuration, index in
                try self.control.updateDrive(configuration.drives[index])
            }
        case let .putNetworkInterface(id):
            var reader = try bodyReader(body)
            let interface = try NetworkInterfaceConfig(json: &reader)
            try Self.requireMatchingID(path: id, body: interface.ifaceID)
            try editBeforeStart { configuration in
                if let index = configuration.networkInterfaces.firstIndex(where: { $0.ifaceID == id }) {
                    configuration.networkInterfaces[index] = interface
                } else {
                    configuration.networkInterfaces.append(interface)
                }
            } apply: { _ in
                try self.control.checkNetworkInterface(interface)
            }
        case let .patchNetworkInterface(id):
            var reader = try bodyReader(body)
            try Self.requireMatchingID(path: id, body: try reader.requiredString("iface_id"))
            let rx = try reader.rateLimiter("rx_rate_limiter")
            let tx = try reader.rateLimiter("tx_rate_limiter")
            try reader.finish()
            try editAfterStart { configuration in
                guard let index = configuration.networkInterfaces.firstIndex(where: { $0.ifaceID == id }) else {
                    throw APIError.badRequest("No network interface with id \(id) is attached.")
                }
                if let rx { configuration.networkInterfaces[index].rxRateLimiter = rx }
                if let tx { configuration.networkInterfaces[index].txRateLimiter = tx }
                return index
            } apply: { configuration, index in
                try self.control.updateNetworkInterface(configuration.networkInterfaces[index])
            }
        case .putVsock:
            var reader = try bodyReader(body)
            let vsock = try VsockDeviceConfig(json: &reader)
            try editBeforeStart {
                $0.vsock = vsock
            } apply: { _ in
                try self.control.configureVsock(vsock)
            }
        case .putEntropy:
            var reader = try bodyReader(body)
            let entropy = try EntropyDeviceConfig(json: &reader)
            try editBeforeStart { $0.entropy = entropy }
        case .putLogger:
            var reader = try bodyReader(body)
            let logger = try LoggerConfig(json: &reader)
            try requireNotStarted()
            try control.configureLogger(logger)
            configuration.logger = logger
        case .putMetrics:
            var reader = try bodyReader(body)
            let metrics = try MetricsConfig(json: &reader)
            try requireNotStarted()
            try control.configureMetrics(metrics)
            configuration.metrics = metrics
        case .putAction:
            try performAction(try bodyReader(body))
        case .patchVM:
            var reader = try bodyReader(body)
            let wanted = try reader.requiredString("state")
            try reader.finish()
            try changeState(to: wanted)
        }
        return HTTPResponse(status: .noContent)
    }

    private func performAction(_ body: JSONObjectReader) throws {
        var reader = body
        let action = try reader.requiredString("action_type")
        try reader.finish()
        switch action {
        case "InstanceStart":
            try requireNotStarted()
            guard configuration.bootSource != nil else {
                throw APIError.badRequest("Cannot start the microVM without a boot source: PUT /boot-source first.")
            }
            try configuration.validate()
            try control.start(configuration)
            state = .running
        case "SendCtrlAltDel":
            guard state != .notStarted else { throw APIError.badRequest(Self.notSupportedBeforeStart) }
            try control.sendCtrlAltDel()
        case "FlushMetrics":
            try control.flushMetrics()
        default:
            throw APIError.badRequest(
                "Invalid request body: action_type: expected one of \"InstanceStart\", \"SendCtrlAltDel\", "
                    + "\"FlushMetrics\", got \"\(action)\"")
        }
    }

    private func changeState(to wanted: String) throws {
        guard state != .notStarted else { throw APIError.badRequest(Self.notSupportedBeforeStart) }
        switch (wanted, state) {
        case ("Paused", .running): try control.pause(); state = .paused
        case ("Resumed", .paused): try control.resume(); state = .running
        case ("Paused", .paused), ("Resumed", .running): break
        default:
            throw APIError.badRequest(
                "Invalid request body: state: expected one of \"Paused\", \"Resumed\", got \"\(wanted)\"")
        }
    }

    // MARK: Helpers

    private func ok(_ body: JSONValue) -> HTTPResponse { .json(.ok, body.encoded()) }

    private func bodyReader(_ body: [UInt8]) throws -> JSONObjectReader {
        let value: JSONValue
        do { value = try JSONParser.parse(body) } catch {
            throw APIError.badRequest(Self.deserializingFailure("\(error)"))
        }
        return try JSONObjectReader(value)
    }

    /// Firecracker's wording for a body that does not decode (parsed_request.rs,
    /// `RequestError::SerdeJson`), with Kiln's own detail naming the field.
    static func deserializingFailure(_ detail: String) -> String {
        "An error occurred when deserializing the json body of a request: \(detail)."
    }

    /// As Firecracker's `method_to_error`: a GET carries no body, a PUT or
    /// PATCH must carry one; checked once the path has resolved.
    static func checkBodyPresence(method: String, body: [UInt8]) throws {
        switch method {
        case "GET" where !body.isEmpty: throw APIError.badRequest("GET request cannot have a body.")
        case "PUT" where body.isEmpty, "PATCH" where body.isEmpty: throw APIError.badRequest("Empty \(method) request.")
        default: break
        }
    }

    private func requireNotStarted() throws {
        guard state == .notStarted else { throw APIError.badRequest(Self.notSupportedAfterStart) }
    }

    /// Applies `edit` to a copy and keeps it only if the whole configuration
    /// still validates and `apply` (what the VMM does at once) succeeds.
    private func editBeforeStart(
        _ edit: (inout VMConfig) throws -> Void,
        apply: (VMConfig) throws -> Void = { _ in }
    ) throws {
        try requireNotStarted()
        var candidate = configuration
        try edit(&candidate)
        try candidate.validate()
        try apply(candidate)
        configuration = candidate
    }

    /// As `editBeforeStart`, for the updates Firecracker allows only on a
    /// started VM: `edit` finds and changes one device and returns its index,
    /// `apply` hands the changed device to the VMM, and only then is the
    /// configuration kept.
    private func editAfterStart(
        _ edit: (inout VMConfig) throws -> Int,
        apply: (VMConfig, Int) throws -> Void
    ) throws {
        guard state != .notStarted else { throw APIError.badRequest(Self.notSupportedBeforeStart) }
        var candidate = configuration
        let index = try edit(&candidate)
        try candidate.validate()
        try apply(candidate, index)
        configuration = candidate
    }

    private static func requireMatchingID(path: String, body: String) throws {
        guard path == body else {
            // Firecracker's words (request/drive.rs, net.rs).
            throw APIError.badRequest("The id from the path does not match the id from the body!")
        }
    }
}
