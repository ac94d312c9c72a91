/// The resources of Firecracker's API (shared/reference/firecracker-api.yaml)
/// that Kiln serves, decoded from a method and a path. Pure: the controller
/// decides what each route does to the VM.
public enum APIRoute: Equatable, Sendable {
    case describeInstance // GET /
    case version // GET /version
    case vmConfig // GET /vm/config
    case putAction // PUT /actions
    case putBootSource // PUT /boot-source
    case getMachineConfig // GET /machine-config
    case putMachineConfig // PUT /machine-config
    case patchMachineConfig // PATCH /machine-config
    case putDrive(id: String) // PUT /drives/{drive_id}
    case patchDrive(id: String) // PATCH /drives/{drive_id}
    case putNetworkInterface(id: String) // PUT /network-interfaces/{iface_id}
    case patchNetworkInterface(id: String) // PATCH /network-interfaces/{iface_id}
    case putVsock // PUT /vsock
    case putEntropy // PUT /entropy
    case putLogger // PUT /logger
    case putMetrics // PUT /metrics
    case patchVM // PATCH /vm

    /// Firecracker resources that Kiln deliberately does not implement: they
    /// get a 400 that says so rather than a confusing 404.
    public static let unsupportedResources: [(resource: String, feature: String)] = [
        ("balloon", "the balloon device"),
        ("cpu-config", "custom CPU templates"),
        ("hotplug", "memory hotplug"),
        ("mmds", "the microVM metadata service (MMDS)"),
        ("pmem", "persistent-memory devices"),
        ("serial", "serial output redirection through the API"),
        ("snapshot", "snapshots"),
    ]

    /// Resolves a request as Firecracker's API server does: leading slashes
    /// and one trailing slash are dropped, the first segment names the
    /// resource, and later segments are read only where the resource takes
    /// an id (`/drives/{id}`) or a sub-resource (`/vm/config`); the rest are
    /// ignored, so `PUT /vsock/vsock0` is `PUT /vsock`. The error carries
    /// Firecracker's message for the case.
    public static func resolve(method: String, path: Substring) throws -> APIRoute {
        var segments = path.drop { $0 == "/" }.split(separator: "/", omittingEmptySubsequences: false)
        if segments.last?.isEmpty == true { segments.removeLast() }
        let resource = segments.first.map(String.init) ?? ""
        let next = segments.dropFirst().first.map(String.init)
        switch (method, resource) {
        case ("GET", ""): return .describeInstance
        case ("GET", "version"): return .version
        case ("GET", "vm") where next == "config": return .vmConfig
        case ("PUT", "actions"): return .putAction
        case ("PUT", "boot-source"): return .putBootSource
        case ("GET", "machine-config"): return .getMachineConfig
        case ("PUT", "machine-config"): return .putMachineConfig
        case ("PATCH", "machine-config"): return .patchMachineConfig
        case ("PUT", "drives"): return .putDrive(id: try resourceID(next, kind: "drive"))
        case ("PATCH", "drives"): return .patchDrive(id: try resourceID(next, kind: "drive"))
        case ("PUT", "network-interfaces"):
            return .putNetworkInterface(id: try resourceID(next, kind: "network interface"))
        case ("PATCH", "network-interfaces"):
            return .patchNetworkInterface(id: try resourceID(next, kind: "network interface"))
        case ("PUT", "vsock"): return .putVsock
        case ("PUT", "entropy"): return .putEntropy
        case ("PUT", "logger"): return .putLogger
        case ("PUT", "metrics"): return .putMetrics
        case ("PATCH", "vm"): return .patchVM
        case ("DELETE", "drives"), ("DELETE", "network-interfaces"):
            throw APIError.badRequest("\(path) is not supported by Kiln: Kiln does not implement device hot-unplug.")
        default:
            if let unsupported = unsupportedResources.first(where: { $0.resource == resource }) {
                throw APIError.badRequest(
                    "\(path) is not supported by Kiln: Kiln does not implement \(unsupported.feature).")
            }
            throw APIError.badRequest("Invalid request method and/or path: \(method) \(path).")
        }
    }

    /// Drive and interface ids: [A-Za-z0-9_], with Firecracker's messages
    /// (parsed_request.rs `checked_id`), and at most 64 characters (Kiln's bound).
    static func resourceID(_ id: String?, kind: String) throws -> String {
        guard let id, !id.isEmpty else { throw APIError.badRequest("The ID cannot be empty.") }
        guard
            id.utf8.allSatisfy({
                ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F
            })
        else {
            throw APIError.badRequest("API Resource IDs can only contain alphanumeric characters and underscores.")
        }
        guard id.utf8.count <= 64 else {
            throw APIError.badRequest(
                "API Resource IDs can be at most 64 characters long (a \(kind) id of \(id.utf8.count)).")
        }
        return id
    }
}
