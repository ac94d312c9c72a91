import KilnConfig
import KilnJSON
import Testing

@testable import KilnAPI

/// Records what the controller asks of the VMM; can be told to fail.
private final class RecordingControl: VMControl {
    var calls: [String] = []
    var failStart: String?
    var failVsock: String?
    var failDrive: String?
    var checkedDrives: [String] = []
    var failInterface: String?
    var checkedInterfaces: [String] = []

    struct Failure: Error, CustomStringConvertible { let description: String }

    func start(_ configuration: VMConfig) throws {
        if let failStart { throw Failure(description: failStart) }
        calls.append("start vcpus=\(configuration.machine.vcpuCount)")
    }
    func pause() throws { calls.append("pause") }
    func resume() throws { calls.append("resume") }
    func sendCtrlAltDel() throws { calls.append("ctrl-alt-del") }
    func flushMetrics() throws { calls.append("flush") }
    func configureLogger(_ logger: LoggerConfig) throws { calls.append("logger \(logger.logPath ?? "-")") }
    func configureMetrics(_ metrics: MetricsConfig) throws { calls.append("metrics \(metrics.metricsPath)") }
    func checkDrive(_ drive: BlockDeviceConfig) throws {
        if let failDrive { throw Failure(description: failDrive) }
        checkedDrives.append("\(drive.driveID) \(drive.pathOnHost ?? "-") ro=\(drive.isReadOnly)")
    }
    func checkNetworkInterface(_ interface: NetworkInterfaceConfig) throws {
        if let failInterface { throw Failure(description: failInterface) }
        checkedInterfaces.append("\(interface.ifaceID) \(interface.hostDevName)")
    }
    func updateDrive(_ drive: BlockDeviceConfig) throws {
        calls.append("drive \(drive.driveID) \(drive.pathOnHost ?? "-")")
    }
    func updateNetworkInterface(_ interface: NetworkInterfaceConfig) throws { calls.append("net \(interface.ifaceID)") }
    func configureVsock(_ vsock: VsockDeviceConfig) throws {
        if let failVsock { throw Failure(description: failVsock) }
        calls.append("vsock \(vsock.guestCID) \(vsock.udsPath)")
    }
}

private struct Client {
    let controller: APIController
    let control: RecordingControl

    init() {
        control = RecordingControl()
        controller = APIController(instanceID: "vm-1", version: "0.1.0", control: control)
    }

    @discardableResult
    func call(_ method: String, _ path: String, _ body: String = "") -> (status: Int, body: String) {
        let response = controller.handle(HTTPRequest(method: method, target: path, body: Array(body.utf8)))
        return (response.status.code, String(decoding: response.body, as: UTF8.self))
    }
}

private func fault(_ text: String) -> String { JSONValue.object([("fault_message", .string(text))]).encoded() }

@Suite struct APIControllerTests {
    @Test func configuresStartsAndDrivesAVMAsFirecrackerClientsDo() {
        let client = Client()
        #expect(
            client.call("GET", "/").body
                == #"{"id":"vm-1","state":"Not started","vmm_version":"0.1.0","app_name":"Kiln"}"#)
        #expect(
            client.call("PUT", "/boot-source", #"{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}"#).status
                == 204)
        #expect(client.call("PUT", "/machine-config", #"{"vcpu_count": 2, "mem_size_mib": 256}"#).status == 204)
        #expect(client.call("PATCH", "/machine-config", #"{"mem_size_mib": 512}"#).status == 204)
        #expect(
            client.call("GET", "/machine-config").body
                == #"{"vcpu_count":2,"mem_size_mib":512,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#)
        #expect(
            client.call(
                "PUT", "/drives/rootfs", #"{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/r"}"#
            ).status == 204)
        #expect(
            client.call("PUT", "/network-interfaces/eth0", #"{"iface_id": "eth0", "host_dev_name": "tap0"}"#).status
                == 204)
        #expect(client.call("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "/v.sock"}"#).status == 204)
        #expect(client.call("PUT", "/entropy", "{}").status == 204)
        #expect(client.call("PUT", "/metrics", #"{"metrics_path": "/m"}"#).status == 204)
        #expect(client.call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#).status == 204)
        #expect(client.call("GET", "/").body.contains(#""state":"Running""#))
        #expect(client.call("PATCH", "/vm", #"{"state": "Paused"}"#).status == 204)
        #expect(client.call("PATCH", "/vm", #"{"state": "Resumed"}"#).status == 204)
        #expect(client.call("PATCH", "/drives/rootfs", #"{"drive_id": "rootfs", "path_on_host": "/r2"}"#).status == 204)
        #expect(client.call("PUT", "/actions", #"{"action_type": "FlushMetrics"}"#).status == 204)
        #expect(client.call("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#).status == 204)
        #expect(
            client.control.calls == [
                "vsock 3 /v.sock", "metrics /m", "start vcpus=2", "pause", "resume", "drive rootfs /r2",
                "flush", "ctrl-alt-del",
            ])
        let full = client.call("GET", "/vm/config")
        #expect(full.status == 200)
        #expect(full.body.contains(#""path_on_host":"/r2""#))
    }

    /// PUT /vsock binds uds_path at once (the VMM's `configureVsock`), only
    /// for a configuration that validates; a refused bind is a 400 and
    /// leaves the earlier vsock configured.
    @Test func putVsockBindsAtOnceAndARefusedBindKeepsTheEarlierDevice() {
        let client = Client()
        #expect(client.call("PUT", "/vsock", #"{"guest_cid": 3, "uds_path": "/a.sock"}"#).status == 204)
        #expect(client.call("PUT", "/vsock", #"{"guest_cid": 2, "uds_path": "/b.sock"}"#).status == 400)
        #expect(client.control.calls == ["vsock 3 /a.sock"], "a CID validation refuses before any bind")
        client.control.failVsock = "vsock: uds_path /b.sock: a file already exists there"
        #expect(
            client.call("PUT", "/vsock", #"{"guest_cid": 4, "uds_path": "/b.sock"}"#)
                == (400, fault("vsock: uds_path /b.sock: a file already exists there")))
        #expect(client.controller.configuration.vsock?.udsPath == "/a.sock")
        #expect(client.controller.configuration.vsock?.guestCID == 3)
        client.control.failVsock = nil
        #expect(client.call("PUT", "/vsock", #"{"guest_cid": 4, "uds_path": "/b.sock"}"#).status == 204)
        #expect(client.controller.configuration.vsock?.udsPath == "/b.sock")
        client.call("PUT", "/boot-source", #"{"kernel_image_path": "/k"}"#)
        client.call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(
            client.call("PUT", "/vsock", #"{"guest_cid": 5, "uds_path": "/c.sock"}"#)
                == (400, fault(APIController.notSupportedAfterStart)))
        #expect(client.control.calls == ["vsock 3 /a.sock", "vsock 4 /b.sock", "start vcpus=1"])
    }

    @Test func aDriveTheVMMCannotOpenIsRefusedAtPUTAndTheConfigurationKept() {
        let client = Client()
        let first = #"{"drive_id": "data", "is_root_device": false, "path_on_host": "/a.img"}"#
        #expect(client.call("PUT", "/drives/data", first).status == 204)
        #expect(client.control.checkedDrives == ["data /a.img ro=false"], "PUT /drives opens the file at once")
        client.control.failDrive = "drive data: open /dir: Is a directory (EISDIR)"
        let second = #"{"drive_id": "data", "is_root_device": false, "path_on_host": "/dir", "is_read_only": true}"#
        #expect(
            client.call("PUT", "/drives/data", second) == (400, fault("drive data: open /dir: Is a directory (EISDIR)"))
        )
        let other = #"{"drive_id": "other", "is_root_device": false, "path_on_host": "/dir"}"#
        #expect(client.call("PUT", "/drives/other", other).status == 400)
        #expect(client.controller.configuration.drives.map(\.driveID) == ["data"])
        #expect(client.controller.configuration.drives.first?.pathOnHost == "/a.img")
        // Refused by validation first: the file is not opened for a drive the configuration rejects.
        client.control.failDrive = nil
        #expect(client.call("PUT", "/drives/x", #"{"drive_id": "x", "is_root_device": false}"#).status == 400)
        #expect(client.control.checkedDrives == ["data /a.img ro=false"])
    }

    @Test func aTapTheVMMCannotOpenIsRefusedAtPUTAndTheConfigurationKept() {
        let client = Client()
        #expect(
            client.call("PUT", "/network-interfaces/eth0", #"{"iface_id": "eth0", "host_dev_name": "tap0"}"#).status
                == 204)
        #expect(client.control.checkedInterfaces == ["eth0 tap0"], "PUT /network-interfaces opens the TAP at once")
        client.control.failInterface = "network interface: cannot open TAP tap9: no such persistent TAP"
        #expect(
            client.call("PUT", "/network-interfaces/eth0", #"{"iface_id": "eth0", "host_dev_name": "tap9"}"#)
                == (400, fault("network interface: cannot open TAP tap9: no such persistent TAP")))
        #expect(client.controller.configuration.networkInterfaces.map(\.hostDevName) == ["tap0"])
    }

    @Test func refusesConfigurationAfterStartAndUpdatesBeforeIt() {
        let client = Client()
        #expect(
            client.call("PATCH", "/drives/a", #"{"drive_id": "a"}"#) == (
                400, fault(APIController.notSupportedBeforeStart)
            ))
        #expect(
            client.call("PATCH", "/vm", #"{"state": "Paused"}"#) == (400, fault(APIController.notSupportedBeforeStart)))
        client.call("PUT", "/boot-source", #"{"kernel_image_path": "/k"}"#)
        client.call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(
            client.call("PUT", "/boot-source", #"{"kernel_image_path": "/k2"}"#) == (
                400, fault(APIController.notSupportedAfterStart)
            ))
        #expect(
            client.call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#) == (
                400, fault(APIController.notSupportedAfterStart)
            ))
        #expect(
            client.call("PATCH", "/drives/nope", #"{"drive_id": "nope"}"#) == (
                400, fault("No drive with id nope is attached.")
            ))
    }

    @Test func namesTheFieldOfABadBodyAndKeepsTheOldConfiguration() {
        let client = Client()
        #expect(
            client.call("PUT", "/machine-config", #"{"vcpu_count": 0, "mem_size_mib": 128}"#)
                == (
                    400,
                    fault(
                        "An error occurred when deserializing the json body of a request: vcpu_count: expected an integer from 1 to 32, got 0."
                    )
                ))
        #expect(
            client.call("PUT", "/machine-config", #"{"vcpu_count": 1, "mem_size_mib": 128, "color": "red"}"#)
                == (
                    400, fault("An error occurred when deserializing the json body of a request: color: unknown field.")
                ))
        #expect(client.call("PUT", "/boot-source", "{").status == 400)
        #expect(client.call("PUT", "/boot-source").body == fault("Empty PUT request."))
        #expect(
            client.call("PUT", "/drives/a", #"{"drive_id": "b", "is_root_device": false, "path_on_host": "/b"}"#)
                == (400, fault("The id from the path does not match the id from the body!")))
        #expect(client.call("PUT", "/actions", #"{"action_type": "Reboot"}"#).status == 400)
        #expect(
            client.call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
                == (400, fault("Cannot start the microVM without a boot source: PUT /boot-source first.")))
        #expect(client.controller.configuration == VMConfig())
        #expect(client.control.calls.isEmpty)
    }

    /// Where Firecracker's parser answers a bad request, Kiln answers with its
    /// words (parsed_request.rs, request/drive.rs), which clients show or match.
    @Test func badRequestsGetFirecrackersFaultMessages() {
        let client = Client()
        #expect(client.call("GET", "/machine-config", "{}") == (400, fault("GET request cannot have a body.")))
        #expect(client.call("PATCH", "/machine-config") == (400, fault("Empty PATCH request.")))
        #expect(
            client.call("PUT", "/drives/a-b", #"{"drive_id": "a-b"}"#)
                == (400, fault("API Resource IDs can only contain alphanumeric characters and underscores.")))
        #expect(client.call("PUT", "/drives/", "{}") == (400, fault("The ID cannot be empty.")))
        #expect(
            client.call("PUT", "/boot-source", "{")
                .body.hasPrefix(#"{"fault_message":"An error occurred when deserializing the json body of a request: "#)
        )
        // PUT /logger's module filter and show_log_origin are refused by name, not ignored.
        #expect(
            client.call("PUT", "/logger", #"{"module": "api_server::request"}"#).body.contains(
                "logger.module: a log filter by source module is not supported"))
        #expect(
            client.call("PUT", "/logger", #"{"show_log_origin": true}"#).body.contains(
                "logger.show_log_origin: log lines with their source file and line are not supported"))
        #expect(client.call("PUT", "/logger", #"{"show_log_origin": false, "level": "Info"}"#).status == 204)
        #expect(client.controller.configuration.logger?.module == nil)
    }

    /// A `\u0000` escape in a path is refused with a 400 naming the field,
    /// on every route that takes a path, before anything is configured or
    /// opened (PUT /logger and /metrics act at once, without validate()).
    @Test func refusesNULInEveryPathField() {
        let client = Client()
        let nul = #"/ok\u0000/x"#
        let refused: [(String, String, String)] = [
            ("/boot-source", #"{"kernel_image_path": "\#(nul)"}"#, "kernel_image_path"),
            ("/boot-source", #"{"kernel_image_path": "/k", "initrd_path": "\#(nul)"}"#, "initrd_path"),
            ("/drives/a", #"{"drive_id": "a", "is_root_device": false, "path_on_host": "\#(nul)"}"#, "path_on_host"),
            ("/vsock", #"{"guest_cid": 3, "uds_path": "\#(nul)"}"#, "uds_path"),
            ("/logger", #"{"log_path": "\#(nul)"}"#, "log_path"),
            ("/metrics", #"{"metrics_path": "\#(nul)"}"#, "metrics_path"),
        ]
        for (path, body, field) in refused {
            #expect(
                client.call("PUT", path, body)
                    == (
                        400,
                        fault(
                            "An error occurred when deserializing the json body of a request: \(field): must not contain a NUL byte."
                        )
                    ), "PUT \(path)")
        }
        #expect(client.controller.configuration == VMConfig())
        #expect(client.control.calls.isEmpty)

        // After start, PATCH /drives takes a new path_on_host: refused the same way.
        client.call("PUT", "/boot-source", #"{"kernel_image_path": "/k"}"#)
        client.call("PUT", "/drives/a", #"{"drive_id": "a", "is_root_device": false, "path_on_host": "/a"}"#)
        client.call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#)
        #expect(
            client.call("PATCH", "/drives/a", #"{"drive_id": "a", "path_on_host": "\#(nul)"}"#)
                == (
                    400,
                    fault(
                        "An error occurred when deserializing the json body of a request: path_on_host: must not contain a NUL byte."
                    )
                ))
        #expect(client.control.calls == ["start vcpus=1"])
    }

    @Test func aFailedStartLeavesTheVMNotStarted() {
        let client = Client()
        client.control.failStart = "KVM is not available"
        client.call("PUT", "/boot-source", #"{"kernel_image_path": "/k"}"#)
        #expect(
            client.call("PUT", "/actions", #"{"action_type": "InstanceStart"}"#) == (400, fault("KVM is not available"))
        )
        #expect(client.controller.state == .notStarted)
    }
}
