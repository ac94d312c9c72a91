import KilnJSON

// The configuration as Firecracker's API shows it back (GET /machine-config,
// GET /vm/config): the same key names the decoders read, absent optionals
// left out, so that what one call returns another accepts.

extension VMConfig {
    /// Firecracker's `FullVmConfiguration`.
    public var json: JSONValue {
        var members: [(key: String, value: JSONValue)] = []
        if let bootSource { members.append(("boot-source", bootSource.json)) }
        members.append(("machine-config", machine.json))
        members.append(("drives", .array(drives.map(\.json))))
        members.append(("network-interfaces", .array(networkInterfaces.map(\.json))))
        if let vsock { members.append(("vsock", vsock.json)) }
        if let entropy { members.append(("entropy", entropy.json)) }
        if let logger { members.append(("logger", logger.json)) }
        if let metrics { members.append(("metrics", metrics.json)) }
        return .object(members)
    }
}

/// Builds an object from optional members, dropping the absent ones.
private func object(_ members: [(String, JSONValue?)]) -> JSONValue {
    .object(members.compactMap { key, value in value.map { (key, $0) } })
}

extension BootSourceConfig {
    public var json: JSONValue {
        object([
            ("kernel_image_path", .string(kernelImagePath)),
            ("initrd_path", initrdPath.map(JSONValue.string)),
            ("boot_args", bootArgs.map(JSONValue.string)),
        ])
    }
}

extension MachineConfig {
    public var json: JSONValue {
        object([
            ("vcpu_count", .integer(vcpuCount)),
            ("mem_size_mib", .integer(memSizeMiB)),
            ("smt", .bool(smt)),
            ("track_dirty_pages", .bool(trackDirtyPages)),
            ("huge_pages", .string(hugePages.rawValue)),
            ("cpu_template", cpuTemplate.map(JSONValue.string)),
        ])
    }
}

extension BlockDeviceConfig {
    public var json: JSONValue {
        object([
            ("drive_id", .string(driveID)),
            ("is_root_device", .bool(isRootDevice)),
            ("path_on_host", pathOnHost.map(JSONValue.string)),
            ("is_read_only", .bool(isReadOnly)),
            ("partuuid", partUUID.map(JSONValue.string)),
            ("cache_type", .string(cacheType.rawValue)),
            ("io_engine", .string(ioEngine.rawValue)),
            ("rate_limiter", rateLimiter?.json),
            ("socket", socket.map(JSONValue.string)),
        ])
    }
}

extension NetworkInterfaceConfig {
    public var json: JSONValue {
        object([
            ("iface_id", .string(ifaceID)),
            ("host_dev_name", .string(hostDevName)),
            ("guest_mac", guestMAC.map { .string($0.description) }),
            ("mtu", mtu.map { .integer($0) }),
            ("rx_rate_limiter", rxRateLimiter?.json),
            ("tx_rate_limiter", txRateLimiter?.json),
        ])
    }
}

extension VsockDeviceConfig {
    public var json: JSONValue {
        object([
            ("guest_cid", .integer(guestCID)),
            ("uds_path", .string(udsPath)),
            ("vsock_id", vsockID.map(JSONValue.string)),
        ])
    }
}

extension EntropyDeviceConfig {
    public var json: JSONValue { object([("rate_limiter", rateLimiter?.json)]) }
}

extension LoggerConfig {
    public var json: JSONValue {
        object([
            ("log_path", logPath.map(JSONValue.string)),
            ("level", level.map { .string($0.rawValue) }),
            ("show_level", .bool(showLevel)),
            ("show_log_origin", .bool(showLogOrigin)),
            ("module", module.map(JSONValue.string)),
        ])
    }
}

extension MetricsConfig {
    public var json: JSONValue { object([("metrics_path", .string(metricsPath))]) }
}

extension RateLimiterConfig {
    public var json: JSONValue {
        func bucket(_ bucket: TokenBucketConfig?) -> JSONValue? {
            bucket.map {
                object([
                    ("size", .integer($0.size)),
                    ("one_time_burst", $0.oneTimeBurst.map { .integer($0) }),
                    ("refill_time", .integer($0.refillTimeMilliseconds)),
                ])
            }
        }
        return object([("bandwidth", bucket(bandwidth)), ("ops", bucket(ops))])
    }
}
