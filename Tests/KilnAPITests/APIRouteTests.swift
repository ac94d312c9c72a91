import Testing

@testable import KilnAPI

@Suite struct APIRouteTests {
    @Test(arguments: [
        ("GET", "/", APIRoute.describeInstance),
        ("GET", "/version", .version),
        ("GET", "/vm/config", .vmConfig),
        ("PUT", "/actions", .putAction),
        ("PUT", "/boot-source", .putBootSource),
        ("PATCH", "/machine-config", .patchMachineConfig),
        ("PUT", "/drives/rootfs", .putDrive(id: "rootfs")),
        ("PATCH", "/network-interfaces/eth_0", .patchNetworkInterface(id: "eth_0")),
        ("PUT", "/vsock", .putVsock),
        ("PATCH", "/vm", .patchVM),
        ("PUT", "/metrics/", .putMetrics),
        // Firecracker routes on the first segment and ignores extra ones.
        ("PUT", "/vsock/vsock0", .putVsock),
        ("PUT", "/actions/x", .putAction),
        ("PUT", "/boot-source/a/b", .putBootSource),
        ("GET", "/version/1", .version),
        ("GET", "/machine-config/x", .getMachineConfig),
        ("PUT", "/entropy/e", .putEntropy),
        ("PUT", "/logger/l", .putLogger),
        ("PATCH", "/vm/state", .patchVM),
        ("GET", "/vm/config/x", .vmConfig),
        ("PUT", "/drives/rootfs/extra", .putDrive(id: "rootfs")),
        ("PATCH", "/drives/rootfs/", .patchDrive(id: "rootfs")),
        ("PUT", "//network-interfaces/eth0", .putNetworkInterface(id: "eth0")),
        ("GET", "//", .describeInstance),
    ])
    func resolvesServedResources(method: String, path: String, route: APIRoute) throws {
        #expect(try APIRoute.resolve(method: method, path: Substring(path)) == route)
    }

    @Test func refusesUnsupportedFeaturesByName() {
        #expect(
            throws: APIError.badRequest(
                "/snapshot/create is not supported by Kiln: Kiln does not implement snapshots.")
        ) {
            try APIRoute.resolve(method: "PUT", path: "/snapshot/create")
        }
        #expect(throws: APIError.self) { try APIRoute.resolve(method: "GET", path: "/balloon") }
        #expect(throws: APIError.self) { try APIRoute.resolve(method: "PUT", path: "/mmds/config") }
        // The README names these three: each a 400 naming its feature.
        for (method, path, feature) in [
            ("PUT", "/hotplug/memory", "memory hotplug"), ("PUT", "/pmem/pmem0", "persistent-memory devices"),
            ("PUT", "/cpu-config", "custom CPU templates"),
        ] {
            #expect(
                throws: APIError.badRequest("\(path) is not supported by Kiln: Kiln does not implement \(feature).")
            ) {
                try APIRoute.resolve(method: method, path: Substring(path))
            }
        }
    }

    @Test func refusesUnknownMethodsPathsAndIds() {
        #expect(
            throws: APIError.badRequest(
                "/drives/a is not supported by Kiln: Kiln does not implement device hot-unplug.")
        ) {
            try APIRoute.resolve(method: "DELETE", path: "/drives/a")
        }
        #expect(throws: APIError.badRequest("Invalid request method and/or path: DELETE /vsock.")) {
            try APIRoute.resolve(method: "DELETE", path: "/vsock")
        }
        #expect(throws: APIError.badRequest("Invalid request method and/or path: GET /vm.")) {
            try APIRoute.resolve(method: "GET", path: "/vm")
        }
        #expect(throws: APIError.badRequest("Invalid request method and/or path: GET /vm/state.")) {
            try APIRoute.resolve(method: "GET", path: "/vm/state")
        }
        #expect(throws: APIError.badRequest("Invalid request method and/or path: GET /balloonx.")) {
            try APIRoute.resolve(method: "GET", path: "/balloonx")
        }
        #expect(throws: APIError.self) { try APIRoute.resolve(method: "PUT", path: "/drives/a-b") }
        #expect(throws: APIError.self) {
            try APIRoute.resolve(method: "PUT", path: "/drives/" + String(repeating: "a", count: 65))
        }
        #expect(throws: APIError.badRequest("The ID cannot be empty.")) {
            try APIRoute.resolve(method: "PUT", path: "/drives/")
        }
        #expect(throws: APIError.badRequest("The ID cannot be empty.")) {
            try APIRoute.resolve(method: "PUT", path: "/drives//a")
        }
        #expect(throws: APIError.badRequest("The ID cannot be empty.")) {
            try APIRoute.resolve(method: "PATCH", path: "/network-interfaces")
        }
    }

    @Test func errorsUseFirecrackersShape() {
        let response = APIError.badRequest("no \"kernel\"").response
        #expect(response.status.code == 400)
        #expect(String(decoding: response.body, as: UTF8.self) == #"{"fault_message":"no \"kernel\""}"#)
    }
}
