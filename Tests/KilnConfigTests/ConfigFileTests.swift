import KilnJSON
import Testing

@testable import KilnConfig

private func load(_ text: String) throws -> VMConfig {
    try VMConfig(configFile: Array(text.utf8))
}

/// The error path of a config that must be refused.
private func errorPath(_ text: String) -> String? {
    do {
        _ = try load(text)
        return nil
    } catch let error as JSONDecodingError {
        return error.path
    } catch {
        return "unexpected \(error)"
    }
}

@Test func fullFirecrackerConfigFileDecodes() throws {
    let config = try load(
        """
        {
          "boot-source": {"kernel_image_path": "vmlinux", "boot_args": "console=ttyS0 reboot=k", "initrd_path": "initrd.cpio"},
          "machine-config": {"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": true},
          "drives": [{"drive_id": "rootfs", "path_on_host": "rootfs.ext4", "is_root_device": true, "is_read_only": false,
                      "cache_type": "Writeback",
                      "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}}],
          "network-interfaces": [{"iface_id": "eth0", "guest_mac": "06:00:AC:10:00:02", "host_dev_name": "tap0"}],
          "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock"},
          "logger": {"log_path": "log", "level": "Debug"},
          "metrics": {"metrics_path": "metrics"}
        }
        """)
    #expect(
        config.bootSource
            == BootSourceConfig(
                kernelImagePath: "vmlinux", initrdPath: "initrd.cpio",
                bootArgs: "console=ttyS0 reboot=k"))
    #expect(config.machine == MachineConfig(vcpuCount: 2, memSizeMiB: 256, trackDirtyPages: true))
    #expect(config.drives.count == 1)
    #expect(config.drives[0].cacheType == .writeback)
    #expect(config.drives[0].rateLimiter?.bandwidth?.size == 1000)
    #expect(config.networkInterfaces[0].guestMAC?.bytes == [6, 0, 0xac, 0x10, 0, 2])
    #expect(config.vsock?.guestCID == 3)
    #expect(config.logger?.level == .debug)
    #expect(config.metrics?.metricsPath == "metrics")
}

@Test func defaultsAreFirecrackers() throws {
    let config = try load(#"{"boot-source": {"kernel_image_path": "k"}}"#)
    #expect(config.machine.vcpuCount == 1)
    #expect(config.machine.memSizeMiB == 128)
    #expect(config.drives.isEmpty)
}

@Test func unknownFieldsAreNamedByPath() {
    #expect(errorPath(#"{"boot-sauce": {}}"#) == "boot-sauce")
    #expect(
        errorPath(#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "cpus": 2}}"#) == "machine-config.cpus")
    #expect(
        errorPath(#"{"drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "x", "ro": true}]}"#)
            == "drives[0].ro")
    #expect(
        errorPath(
            #"{"drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "x", "rate_limiter": {"ops": {"size": 1, "refill_time": 1, "x": 0}}}]}"#
        )
            == "drives[0].rate_limiter.ops.x")
}

@Test func invalidValuesAreNamedByPath() {
    #expect(errorPath(#"{"machine-config": {"vcpu_count": 0, "mem_size_mib": 64}}"#) == "machine-config.vcpu_count")
    #expect(errorPath(#"{"machine-config": {"vcpu_count": 33, "mem_size_mib": 64}}"#) == "machine-config.vcpu_count")
    #expect(errorPath(#"{"machine-config": {"vcpu_count": 1.5, "mem_size_mib": 64}}"#) == "machine-config.vcpu_count")
    #expect(errorPath(#"{"machine-config": {"vcpu_count": 1}}"#) == "machine-config.mem_size_mib")
    #expect(
        errorPath(#"{"machine-config": {"vcpu_count": 3, "mem_size_mib": 64, "smt": true}}"#)
            == "machine-config.vcpu_count")
    #expect(
        errorPath(#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "1G"}}"#)
            == "machine-config.huge_pages")
    #expect(errorPath(#"{"boot-source": {"kernel_image_path": 7}}"#) == "boot-source.kernel_image_path")
    #expect(errorPath(#"{"boot-source": {}}"#) == "boot-source.kernel_image_path")
    #expect(
        errorPath(
            #"{"network-interfaces": [{"iface_id": "e", "host_dev_name": "t", "guest_mac": "zz:00:00:00:00:00"}]}"#)
            == "network-interfaces[0].guest_mac")
    #expect(
        errorPath(
            #"{"network-interfaces": [{"iface_id": "e", "host_dev_name": "t", "guest_mac": "01:00:00:00:00:00"}]}"#)
            == "network-interfaces[0].guest_mac")
    #expect(errorPath(#"{"vsock": {"guest_cid": 2, "uds_path": "v"}}"#) == "vsock.guest_cid")
    #expect(errorPath(#"{"logger": {"level": "Loud"}}"#) == "logger.level")
    #expect(errorPath(#"[1]"#) == "")
    #expect(errorPath(#"{"#) == "")
}

@Test func crossFieldRules() {
    let two = #"""
        {"drives": [{"drive_id": "a", "is_root_device": true, "path_on_host": "x"},
                    {"drive_id": "b", "is_root_device": true, "path_on_host": "y"}]}
        """#
    #expect(errorPath(two) == "drives[1].is_root_device")
    #expect(
        errorPath(
            #"{"drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "x"}, {"drive_id": "a", "is_root_device": false, "path_on_host": "y"}]}"#
        )
            == "drives[1].drive_id")
    #expect(errorPath(#"{"drives": [{"drive_id": "a", "is_root_device": false}]}"#) == "drives[0].path_on_host")
    let sameMAC = #"""
        {"network-interfaces": [{"iface_id": "a", "host_dev_name": "t1", "guest_mac": "06:00:00:00:00:01"},
                                {"iface_id": "b", "host_dev_name": "t2", "guest_mac": "06:00:00:00:00:01"}]}
        """#
    #expect(errorPath(sameMAC) == "network-interfaces[1].guest_mac")
    let twoMACs = #"""
        {"network-interfaces": [{"iface_id": "a", "host_dev_name": "t1", "guest_mac": "06:00:00:00:00:01"},
                                {"iface_id": "b", "host_dev_name": "t2", "guest_mac": "06:00:00:00:00:02"}]}
        """#
    #expect(errorPath(twoMACs) == nil)
    let long = String(repeating: "a", count: VMConfig.maximumBootArgsLength + 1)
    #expect(
        errorPath(#"{"boot-source": {"kernel_image_path": "k", "boot_args": "\#(long)"}}"#) == "boot-source.boot_args")
}

@Test func validationIsPureOnTheModel() throws {
    var config = VMConfig(bootSource: BootSourceConfig(kernelImagePath: "k"))
    try config.validate()
    config.machine.vcpuCount = 40
    #expect(throws: ConfigurationError.self) { try config.validate() }
    config.machine.vcpuCount = 4
    config.machine.cpuTemplate = "T2"
    #expect(
        throws: ConfigurationError(
            path: "machine-config.cpu_template",
            message: "CPU templates are not supported, got \"T2\"")
    ) {
        try config.validate()
    }
}

@Test func transparentHugePagesAreAcceptedAndHugetlbfsPagesRefusedByPath() throws {
    var config = VMConfig(bootSource: BootSourceConfig(kernelImagePath: "k"))
    config.machine.hugePages = .transparent
    try config.validate()
    config.machine.hugePages = .twoMiB
    #expect(
        throws: ConfigurationError(
            path: "machine-config.huge_pages",
            message: "2M (hugetlbfs) pages are not supported yet; Transparent is")
    ) {
        try config.validate()
    }
}

@Suite struct ConfigEncodingTests {
    /// What GET /vm/config shows must be accepted back as a config file, unchanged.
    @Test func fullConfigurationRoundTrips() throws {
        let text = #"""
            {"boot-source": {"kernel_image_path": "/k", "initrd_path": "/i", "boot_args": "console=ttyS0"},
             "machine-config": {"vcpu_count": 2, "mem_size_mib": 256, "smt": false, "track_dirty_pages": true,
                                "huge_pages": "None"},
             "drives": [{"drive_id": "rootfs", "is_root_device": true, "path_on_host": "/r", "is_read_only": true,
                         "rate_limiter": {"bandwidth": {"size": 100, "one_time_burst": 5, "refill_time": 10}}}],
             "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02",
                                     "tx_rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}],
             "vsock": {"guest_cid": 3, "uds_path": "/v.sock"},
             "entropy": {},
             "logger": {"log_path": "/l", "level": "Info"},
             "metrics": {"metrics_path": "/m"}}
            """#
        let configuration = try VMConfig(configFile: Array(text.utf8))
        #expect(configuration.entropy == EntropyDeviceConfig())
        let again = try VMConfig(configFile: Array(configuration.json.encoded().utf8))
        #expect(again == configuration)
        #expect(
            configuration.machine.json.encoded()
                == #"{"vcpu_count":2,"mem_size_mib":256,"smt":false,"track_dirty_pages":true,"huge_pages":"None"}"#)
    }
}

/// An empty host path names no file; bind(2) of an empty vsock `uds_path`
/// even reported "File name too long". Each field refuses it by name.
@Test func everyPathFieldRefusesAnEmptyPath() {
    let cases: [(document: String, field: String)] = [
        (#"{"boot-source": {"kernel_image_path": ""}}"#, "boot-source.kernel_image_path"),
        (#"{"boot-source": {"kernel_image_path": "/k", "initrd_path": ""}}"#, "boot-source.initrd_path"),
        (#"{"drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": ""}]}"#, "drives[0].path_on_host"),
        (#"{"vsock": {"guest_cid": 3, "uds_path": ""}}"#, "vsock.uds_path"),
        (#"{"logger": {"log_path": ""}}"#, "logger.log_path"),
        (#"{"metrics": {"metrics_path": ""}}"#, "metrics.metrics_path"),
    ]
    for (document, field) in cases {
        #expect(throws: ConfigurationError(path: field, message: "must not be empty"), "\(document)") {
            try load(document)
        }
    }
    var config = VMConfig(bootSource: BootSourceConfig(kernelImagePath: ""))
    #expect(throws: ConfigurationError(path: "boot-source.kernel_image_path", message: "must not be empty")) {
        try config.validate()
    }
    config.bootSource = BootSourceConfig(kernelImagePath: "/k")
    #expect(throws: Never.self) { try config.validate() }
}

/// A `\u0000` in a path used to reach open(2), which stops at the NUL: the
/// prefix was opened (and booted). Every host path field refuses it by name.
@Suite struct NulInPathTests {
    let nul = #"/ok\u0000/../elsewhere"#

    @Test func everyPathFieldOfTheConfigFileRefusesNUL() {
        let cases: [(document: String, field: String)] = [
            (#"{"boot-source": {"kernel_image_path": "\#(nul)"}}"#, "boot-source.kernel_image_path"),
            (#"{"boot-source": {"kernel_image_path": "/k", "initrd_path": "\#(nul)"}}"#, "boot-source.initrd_path"),
            (
                #"{"drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "\#(nul)"}]}"#,
                "drives[0].path_on_host"
            ),
            (
                #"{"drives": [{"drive_id": "a", "is_root_device": false, "path_on_host": "/d", "socket": "\#(nul)"}]}"#,
                "drives[0].socket"
            ),
            (#"{"vsock": {"guest_cid": 3, "uds_path": "\#(nul)"}}"#, "vsock.uds_path"),
            (#"{"logger": {"log_path": "\#(nul)"}}"#, "logger.log_path"),
            (#"{"metrics": {"metrics_path": "\#(nul)"}}"#, "metrics.metrics_path"),
        ]
        for (document, field) in cases {
            #expect(throws: ConfigurationError(path: field, message: "must not contain a NUL byte"), "\(document)") {
                try load(document)
            }
        }
        // The same text without the escape is a fine path.
        #expect(throws: Never.self) { try load(#"{"boot-source": {"kernel_image_path": "/ok/../elsewhere"}}"#) }
    }

    /// Configurations not built by the decoders (the command line, code) are
    /// checked by validate() too.
    @Test func validateRefusesNULInAModelBuiltInCode() {
        var config = VMConfig(bootSource: BootSourceConfig(kernelImagePath: "/ok\u{0}x"))
        #expect(
            throws: ConfigurationError(path: "boot-source.kernel_image_path", message: "must not contain a NUL byte")
        ) {
            try config.validate()
        }
        config.bootSource = BootSourceConfig(kernelImagePath: "/k")
        config.drives = [BlockDeviceConfig(driveID: "a", isRootDevice: false, pathOnHost: "/d\u{0}")]
        #expect(throws: ConfigurationError(path: "drives[0].path_on_host", message: "must not contain a NUL byte")) {
            try config.validate()
        }
        config.drives = []
        config.logger = LoggerConfig(logPath: "\u{0}")
        #expect(throws: ConfigurationError(path: "logger.log_path", message: "must not contain a NUL byte")) {
            try config.validate()
        }
    }
}
