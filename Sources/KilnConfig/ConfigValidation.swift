import KilnJSON

/// A configuration that decodes but cannot run; the path names the field as
/// the config file spells it.
public typealias ConfigurationError = JSONDecodingError

extension VMConfig {
    /// Linux's x86 COMMAND_LINE_SIZE; the kernel header may allow less, which
    /// the loader checks against the image itself.
    public static let maximumBootArgsLength = 2047

    /// Cross-field rules. Pure: looks at no files, so the API can run it on
    /// every request and tests need no fixtures.
    public func validate() throws {
        if let bootSource {
            if bootSource.kernelImagePath.isEmpty {
                throw ConfigurationError(path: "boot-source.kernel_image_path", message: "must not be empty")
            }
            if let args = bootSource.bootArgs {
                if args.utf8.count > VMConfig.maximumBootArgsLength {
                    throw ConfigurationError(
                        path: "boot-source.boot_args",
                        message: "\(args.utf8.count) bytes is longer than \(VMConfig.maximumBootArgsLength)")
                }
                if args.utf8.contains(0) {
                    throw ConfigurationError(path: "boot-source.boot_args", message: "must not contain NUL")
                }
            }
        }
        try machine.validate()
        try validateDrives()
        try validateNetworkInterfaces()
        try validatePaths()
    }

    /// Refuses an empty host path, which names no file (bind(2) of "" even
    /// reports ENAMETOOLONG), and one with a NUL byte: the C string would end
    /// there and name another file.
    public static func checkPath(_ path: String, field: String) throws {
        if path.isEmpty { throw ConfigurationError(path: field, message: "must not be empty") }
        if path.utf8.contains(0) {
            throw ConfigurationError(path: field, message: "must not contain a NUL byte")
        }
    }

    /// Every host path field, for configurations not built by the decoders
    /// (the command line, a PATCH).
    private func validatePaths() throws {
        var paths: [(String, String?)] = [
            ("boot-source.kernel_image_path", bootSource?.kernelImagePath),
            ("boot-source.initrd_path", bootSource?.initrdPath),
            ("vsock.uds_path", vsock?.udsPath),
            ("logger.log_path", logger?.logPath),
            ("metrics.metrics_path", metrics?.metricsPath),
        ]
        for (index, drive) in drives.enumerated() {
            paths.append(("drives[\(index)].path_on_host", drive.pathOnHost))
            paths.append(("drives[\(index)].socket", drive.socket))
        }
        for case let (field, path?) in paths { try Self.checkPath(path, field: field) }
    }

    private func validateDrives() throws {
        var seen = Set<String>()
        var rootIndex: Int?
        for (index, drive) in drives.enumerated() {
            let path = "drives[\(index)]"
            if drive.driveID.isEmpty || !seen.insert(drive.driveID).inserted {
                throw ConfigurationError(
                    path: "\(path).drive_id", message: "must be non-empty and unique, got \"\(drive.driveID)\"")
            }
            if drive.socket != nil {
                throw ConfigurationError(path: "\(path).socket", message: "vhost-user drives are not supported")
            }
            if drive.pathOnHost?.isEmpty ?? true {
                throw ConfigurationError(path: "\(path).path_on_host", message: "missing required field")
            }
            if drive.isRootDevice {
                if let rootIndex {
                    throw ConfigurationError(
                        path: "\(path).is_root_device",
                        message: "drives[\(rootIndex)] is already the root device")
                }
                rootIndex = index
            }
        }
    }

    private func validateNetworkInterfaces() throws {
        var ids = Set<String>(), devices = Set<String>(), macs = Set<[UInt8]>()
        for (index, interface) in networkInterfaces.enumerated() {
            let path = "network-interfaces[\(index)]"
            if interface.ifaceID.isEmpty || !ids.insert(interface.ifaceID).inserted {
                throw ConfigurationError(path: "\(path).iface_id", message: "must be non-empty and unique")
            }
            // IFNAMSIZ is 16 including the NUL.
            if interface.hostDevName.isEmpty || interface.hostDevName.utf8.count > 15
                || !devices.insert(interface.hostDevName).inserted
            {
                throw ConfigurationError(
                    path: "\(path).host_dev_name",
                    message: "must be a unique interface name of 1 to 15 bytes")
            }
            if let mac = interface.guestMAC, mac.bytes[0] & 1 == 1 {
                throw ConfigurationError(path: "\(path).guest_mac", message: "\(mac) is a multicast address")
            }
            // Firecracker refuses a MAC another interface has
            // (NetworkInterfaceError::GuestMacAddressInUse): two guest NICs
            // answering for one address break ARP on the host's bridge.
            if let mac = interface.guestMAC, !macs.insert(mac.bytes).inserted {
                throw ConfigurationError(
                    path: "\(path).guest_mac", message: "the guest MAC address \(mac) is already in use")
            }
        }
    }
}

extension MachineConfig {
    public func validate() throws {
        guard MachineConfig.vcpuRange.contains(vcpuCount) else {
            throw ConfigurationError(
                path: "machine-config.vcpu_count",
                message: "expected an integer from 1 to 32, got \(vcpuCount)")
        }
        // With SMT each core has two threads, so the count must split evenly.
        if smt && vcpuCount > 1 && vcpuCount % 2 != 0 {
            throw ConfigurationError(
                path: "machine-config.vcpu_count",
                message: "must be 1 or even when smt is enabled, got \(vcpuCount)")
        }
        guard memSizeMiB >= 1 else {
            throw ConfigurationError(path: "machine-config.mem_size_mib", message: "must be at least 1")
        }
        if let cpuTemplate, cpuTemplate != "None" {
            throw ConfigurationError(
                path: "machine-config.cpu_template",
                message: "CPU templates are not supported, got \"\(cpuTemplate)\"")
        }
        if hugePages == .twoMiB {
            throw ConfigurationError(
                path: "machine-config.huge_pages",
                message: "2M (hugetlbfs) pages are not supported yet; Transparent is")
        }
    }
}

extension LoggerConfig {
    /// Firecracker's `module` filter and `show_log_origin` need log lines that
    /// name their source module, file and line; Kiln's carry none, so both are
    /// refused by name rather than accepted and ignored (false is the default).
    public func refuseUnservedFields() throws {
        if let module {
            throw ConfigurationError(
                path: "logger.module",
                message:
                    "a log filter by source module is not supported (Kiln's log lines name no module), got \"\(module)\""
            )
        }
        if showLogOrigin {
            throw ConfigurationError(
                path: "logger.show_log_origin",
                message: "log lines with their source file and line are not supported")
        }
    }
}
