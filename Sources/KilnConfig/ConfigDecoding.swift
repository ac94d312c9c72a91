import KilnJSON

// Strict decoding of Firecracker's JSON shapes (firecracker-api.yaml,
// definitions BootSource, MachineConfiguration, Drive, NetworkInterface,
// Vsock, Logger, Metrics, RateLimiter). Each section decodes on its own so
// the API routes reuse it for their request bodies. Types and ranges are
// checked here; cross-field rules live in `validate()`.

extension VMConfig {
    /// The sections of a config file, by Firecracker's key names.
    public static let configFileSections = [
        "boot-source", "machine-config", "drives", "network-interfaces", "vsock", "entropy", "logger", "metrics",
    ]

    /// Decodes and validates a `--config-file` document.
    public init(configFile bytes: [UInt8]) throws {
        let document: JSONValue
        do { document = try JSONParser.parse(bytes) } catch {
            throw JSONDecodingError(path: "", message: "config file is not valid JSON: \(error)")
        }
        var reader = try JSONObjectReader(document)
        self.init()
        if var section = try reader.object("boot-source") { bootSource = try BootSourceConfig(json: &section) }
        if var section = try reader.object("machine-config") { machine = try MachineConfig(json: &section) }
        drives = try VMConfig.decodeArray(&reader, "drives") { try BlockDeviceConfig(json: &$0) }
        networkInterfaces = try VMConfig.decodeArray(&reader, "network-interfaces") {
            try NetworkInterfaceConfig(json: &$0)
        }
        if var section = try reader.object("vsock") { vsock = try VsockDeviceConfig(json: &section) }
        if var section = try reader.object("entropy") { entropy = try EntropyDeviceConfig(json: &section) }
        if var section = try reader.object("logger") { logger = try LoggerConfig(json: &section) }
        if var section = try reader.object("metrics") { metrics = try MetricsConfig(json: &section) }
        try reader.finish()
        try validate()
    }

    private static func decodeArray<T>(
        _ reader: inout JSONObjectReader, _ key: String, _ decode: (inout JSONObjectReader) throws -> T
    ) throws -> [T] {
        guard let elements = try reader.array(key) else { return [] }
        return try elements.enumerated().map { index, element in
            var item = try JSONObjectReader(element, path: "\(reader.fieldPath(key))[\(index)]")
            return try decode(&item)
        }
    }
}

extension JSONObjectReader {
    /// A string field restricted to the raw values of `E`.
    public mutating func enumeration<E: RawRepresentable & CaseIterable>(_ key: String, as type: E.Type) throws -> E?
    where E.RawValue == String {
        guard let text = try string(key) else { return nil }
        guard let value = E(rawValue: text) else {
            let allowed = E.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")
            throw JSONDecodingError(path: fieldPath(key), message: "expected one of \(allowed), got \"\(text)\"")
        }
        return value
    }

    /// A host path field. A NUL would end the C string the kernel sees, so
    /// `"/ok\u0000/../x"` would open `/ok`: refused, naming the field.
    public mutating func path(_ key: String) throws -> String? {
        guard let text = try string(key) else { return nil }
        try VMConfig.checkPath(text, field: fieldPath(key))
        return text
    }

    public mutating func requiredPath(_ key: String) throws -> String {
        let text = try requiredString(key)
        try VMConfig.checkPath(text, field: fieldPath(key))
        return text
    }

    public mutating func rateLimiter(_ key: String) throws -> RateLimiterConfig? {
        guard var section = try object(key) else { return nil }
        return try RateLimiterConfig(json: &section)
    }
}

extension BootSourceConfig {
    public init(json reader: inout JSONObjectReader) throws {
        self.init(
            kernelImagePath: try reader.requiredPath("kernel_image_path"),
            initrdPath: try reader.path("initrd_path"),
            bootArgs: try reader.string("boot_args"))
        try reader.finish()
    }
}

extension MachineConfig {
    public init(json reader: inout JSONObjectReader) throws {
        self.init(
            vcpuCount: try reader.requiredInteger("vcpu_count", in: MachineConfig.vcpuRange),
            memSizeMiB: try reader.requiredInteger("mem_size_mib", in: 1...(1 << 20)),
            smt: try reader.bool("smt") ?? false,
            trackDirtyPages: try reader.bool("track_dirty_pages") ?? false,
            hugePages: try reader.enumeration("huge_pages", as: HugePages.self) ?? .none,
            cpuTemplate: try reader.value("cpu_template").map { value in
                guard case let .string(name) = value else {
                    throw JSONDecodingError(
                        path: reader.fieldPath("cpu_template"), message: "expected a string, got \(value.typeName)")
                }
                return name
            })
        try reader.finish()
    }
}

extension BlockDeviceConfig {
    public init(json reader: inout JSONObjectReader) throws {
        self.init(
            driveID: try reader.requiredString("drive_id"),
            isRootDevice: try reader.requiredBool("is_root_device"),
            pathOnHost: try reader.path("path_on_host"),
            isReadOnly: try reader.bool("is_read_only") ?? false,
            partUUID: try reader.string("partuuid"),
            cacheType: try reader.enumeration("cache_type", as: CacheType.self) ?? .unsafe,
            ioEngine: try reader.enumeration("io_engine", as: IOEngine.self) ?? .sync,
            rateLimiter: try reader.rateLimiter("rate_limiter"),
            socket: try reader.path("socket"))
        try reader.finish()
    }
}

extension NetworkInterfaceConfig {
    public init(json reader: inout JSONObjectReader) throws {
        let mac: MACAddress?
        if let text = try reader.string("guest_mac") {
            guard let parsed = MACAddress(text) else {
                throw JSONDecodingError(
                    path: reader.fieldPath("guest_mac"),
                    message: "expected a MAC address like 06:00:ac:10:00:02, got \"\(text)\"")
            }
            mac = parsed
        } else {
            mac = nil
        }
        self.init(
            ifaceID: try reader.requiredString("iface_id"),
            hostDevName: try reader.requiredString("host_dev_name"),
            guestMAC: mac,
            mtu: try reader.integer("mtu", in: 68...65535),
            rxRateLimiter: try reader.rateLimiter("rx_rate_limiter"),
            txRateLimiter: try reader.rateLimiter("tx_rate_limiter"))
        try reader.finish()
    }
}

extension VsockDeviceConfig {
    public init(json reader: inout JSONObjectReader) throws {
        // CIDs 0-2 are reserved (hypervisor, local, host): virtio 1.2 §5.10.4.
        self.init(
            guestCID: try reader.requiredInteger("guest_cid", in: 3...UInt32.max),
            udsPath: try reader.requiredPath("uds_path"),
            vsockID: try reader.string("vsock_id"))
        try reader.finish()
    }
}

extension LoggerConfig {
    public init(json reader: inout JSONObjectReader) throws {
        self.init(
            logPath: try reader.path("log_path"),
            level: try reader.enumeration("level", as: Level.self),
            showLevel: try reader.bool("show_level") ?? false,
            showLogOrigin: try reader.bool("show_log_origin") ?? false,
            module: try reader.string("module"))
        try reader.finish()
        try refuseUnservedFields()
    }
}

extension MetricsConfig {
    public init(json reader: inout JSONObjectReader) throws {
        self.init(metricsPath: try reader.requiredPath("metrics_path"))
        try reader.finish()
    }
}

extension RateLimiterConfig {
    public init(json reader: inout JSONObjectReader) throws {
        func bucket(_ key: String) throws -> TokenBucketConfig? {
            guard var section = try reader.object(key) else { return nil }
            let value = TokenBucketConfig(
                size: try section.requiredInteger("size"),
                oneTimeBurst: try section.integer("one_time_burst"),
                refillTimeMilliseconds: try section.requiredInteger("refill_time"))
            try section.finish()
            return value
        }
        self.init(bandwidth: try bucket("bandwidth"), ops: try bucket("ops"))
        try reader.finish()
    }
}
