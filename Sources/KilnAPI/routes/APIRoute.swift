/// The resources of Firecracker's API (shared/reference/firecracker-api.yaml)
/// that Kiln serves, decoded from a method and a path. Pure: the controller
/// decides what each route does to the VM.
public enum APIRoute: Equatable, Sendable {
    case describeInstance            // GET /
    case version                     // GET /version
    case vmConfig                    // GET /vm/config
    case putAction                   // PUT /actions
    case putBootSource               // PUT /boot-source
    case getMachineConfig            // GET /machine-config
    case putMachineConfig            // PUT /machine-config
    case patchMachineConfig          // PATCH /machine-config
    case putDrive(id: String)        // PUT /drives/{drive_id}
    case patchDrive(id: String)      // PATCH /drives/{drive_id}
    case putNetworkInterface(id: String)   // PUT /network-interfaces/{iface_id}
    case patchNetworkInterface(id: String) // PATCH /network-interfaces/{iface_id}
    case putVsock                    // PUT /vsock
    case putEntropy                  // PUT /entropy
    case putLogger                   // PUT /logger
    case putMetrics                  // PUT /metrics
    case patchVM                     // PATCH /vm

    /// Firecracker resources that Kiln deliberately does not implement: they
    /// get a 400 that says so rather than a confusing 404.
    public static let unsupportedResources: [(prefix: String, feature: String)] = [
        ("/balloon", "the balloon device"),
        ("/cpu-config", "custom CPU templates"),
        ("/hotplug", "memory hotplug"),
        ("/mmds", "the microVM metadata service (MMDS)"),
        ("/pmem", "persistent-memory devices"),
        ("/serial", "serial output redirection through the API"),
        ("/snapshot", "snapshots"),
    ]

    /// Resolves a request; the error carries Firecracker's message for the case.
    public static func resolve(method: String, path: Substring) throws -> APIRoute {
        // One trailing slash is tolerated, as Firecracker does.
        let trimmed = path.count > 1 && path.hasSuffix("/") ? path.dropLast() : path
        let parts = trimmed.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        if parts.count == 2, let collection = collectionRoutes[method + " /" + parts[0]] {
            return try collection(parts[1])
        }
        switch (method, "/" + parts.joined(separator: "/")) {
        case ("GET", "/"): return .describeInstance
        case ("GET", "/version"): return .version
        case ("GET", "/vm/config"): return .vmConfig
        case ("PUT", "/actions"): return .putAction
        case ("PUT", "/boot-source"): return .putBootSource
        case ("GET", "/machine-config"): return .getMachineConfig
        case ("PUT", "/machine-config"): return .putMachineConfig
        case ("PATCH", "/machine-config"): return .patchMachineConfig
        case ("PUT", "/vsock"): return .putVsock
        case ("PUT", "/entropy"): return .putEntropy
        case ("PUT", "/logger"): return .putLogger
        case ("PUT", "/metrics"): return .putMetrics
        case ("PATCH", "/vm"): return .patchVM
        default:
            if let unsupported = unsupportedResources.first(where: {
                path == $0.prefix || path.hasPrefix($0.prefix + "/")
            }) {
                throw APIError.badRequest("\(path) is not supported by Kiln: Kiln does not implement \(unsupported.feature).")
            }
            throw APIError.badRequest("Invalid request method and/or path: \(method) \(path).")
        }
    }

    /// Resources addressed as `/collection/{id}`.
    private static let collectionRoutes: [String: (String) throws -> APIRoute] = [
        "PUT /drives": { .putDrive(id: try resourceID($0, kind: "drive")) },
        "PATCH /drives": { .patchDrive(id: try resourceID($0, kind: "drive")) },
        "PUT /network-interfaces": { .putNetworkInterface(id: try resourceID($0, kind: "network interface")) },
        "PATCH /network-interfaces": { .patchNetworkInterface(id: try resourceID($0, kind: "network interface")) },
    ]

    /// Drive and interface ids: 1 to 64 of [A-Za-z0-9_], as Firecracker checks them.
    static func resourceID(_ id: String, kind: String) throws -> String {
        guard (1...64).contains(id.utf8.count), id.utf8.allSatisfy({
            ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x5F
        }) else {
            throw APIError.badRequest("Invalid \(kind) id: it must be 1 to 64 characters of [A-Za-z0-9_].")
        }
        return id
    }
}
