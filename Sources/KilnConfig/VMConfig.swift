/// The one configuration model of a microVM. Firecracker's config file fills
/// it now (`kiln --config-file`), and the API fills it the same way later:
/// each section decodes from the JSON body of its API route, and
/// `validate()` checks the whole before the machine is built.
public struct VMConfig: Equatable, Sendable {
    public var bootSource: BootSourceConfig?
    public var machine: MachineConfig
    public var drives: [BlockDeviceConfig]
    public var networkInterfaces: [NetworkInterfaceConfig]
    public var vsock: VsockDeviceConfig?
    public var entropy: EntropyDeviceConfig?
    public var logger: LoggerConfig?
    public var metrics: MetricsConfig?

    public init(
        bootSource: BootSourceConfig? = nil, machine: MachineConfig = MachineConfig(),
        drives: [BlockDeviceConfig] = [], networkInterfaces: [NetworkInterfaceConfig] = [],
        vsock: VsockDeviceConfig? = nil, entropy: EntropyDeviceConfig? = nil, logger: LoggerConfig? = nil,
        metrics: MetricsConfig? = nil
    ) {
        self.bootSource = bootSource
        self.machine = machine
        self.drives = drives
        self.networkInterfaces = networkInterfaces
        self.vsock = vsock
        self.entropy = entropy
        self.logger = logger
        self.metrics = metrics
    }
}

/// `boot-source` (API: PUT /boot-source).
public struct BootSourceConfig: Equatable, Sendable {
    public var kernelImagePath: String
    public var initrdPath: String?
    public var bootArgs: String?

    public init(kernelImagePath: String, initrdPath: String? = nil, bootArgs: String? = nil) {
        self.kernelImagePath = kernelImagePath
        self.initrdPath = initrdPath
        self.bootArgs = bootArgs
    }
}

/// `machine-config` (API: PUT /machine-config). Defaults are Firecracker's.
public struct MachineConfig: Equatable, Sendable {
    public enum HugePages: String, Equatable, Sendable, CaseIterable {
        case none = "None"
        case transparent = "Transparent"
        case twoMiB = "2M"
    }

    public static let vcpuRange: ClosedRange<Int> = 1...32

    public var vcpuCount: Int
    public var memSizeMiB: Int
    public var smt: Bool
    public var trackDirtyPages: Bool
    public var hugePages: HugePages
    /// Named CPU templates (C3, T2...) are not implemented; only absence is valid.
    public var cpuTemplate: String?

    public init(
        vcpuCount: Int = 1, memSizeMiB: Int = 128, smt: Bool = false,
        trackDirtyPages: Bool = false, hugePages: HugePages = .none, cpuTemplate: String? = nil
    ) {
        self.vcpuCount = vcpuCount
        self.memSizeMiB = memSizeMiB
        self.smt = smt
        self.trackDirtyPages = trackDirtyPages
        self.hugePages = hugePages
        self.cpuTemplate = cpuTemplate
    }
}

/// One element of `drives` (API: PUT /drives/{drive_id}).
public struct BlockDeviceConfig: Equatable, Sendable {
    public enum CacheType: String, Equatable, Sendable, CaseIterable {
        case unsafe = "Unsafe"
        case writeback = "Writeback"
    }
    public enum IOEngine: String, Equatable, Sendable, CaseIterable {
        case sync = "Sync"
        case async = "Async"
    }

    public var driveID: String
    public var isRootDevice: Bool
    public var pathOnHost: String?
    public var isReadOnly: Bool
    public var partUUID: String?
    public var cacheType: CacheType
    public var ioEngine: IOEngine
    public var rateLimiter: RateLimiterConfig?
    /// vhost-user socket; Kiln does not implement vhost-user.
    public var socket: String?

    public init(
        driveID: String, isRootDevice: Bool, pathOnHost: String?, isReadOnly: Bool = false,
        partUUID: String? = nil, cacheType: CacheType = .unsafe, ioEngine: IOEngine = .sync,
        rateLimiter: RateLimiterConfig? = nil, socket: String? = nil
    ) {
        self.driveID = driveID
        self.isRootDevice = isRootDevice
        self.pathOnHost = pathOnHost
        self.isReadOnly = isReadOnly
        self.partUUID = partUUID
        self.cacheType = cacheType
        self.ioEngine = ioEngine
        self.rateLimiter = rateLimiter
        self.socket = socket
    }
}

/// One element of `network-interfaces` (API: PUT /network-interfaces/{iface_id}).
public struct NetworkInterfaceConfig: Equatable, Sendable {
    public var ifaceID: String
    public var hostDevName: String
    public var guestMAC: MACAddress?
    public var mtu: Int?
    public var rxRateLimiter: RateLimiterConfig?
    public var txRateLimiter: RateLimiterConfig?

    public init(
        ifaceID: String, hostDevName: String, guestMAC: MACAddress? = nil, mtu: Int? = nil,
        rxRateLimiter: RateLimiterConfig? = nil, txRateLimiter: RateLimiterConfig? = nil
    ) {
        self.ifaceID = ifaceID
        self.hostDevName = hostDevName
        self.guestMAC = guestMAC
        self.mtu = mtu
        self.rxRateLimiter = rxRateLimiter
        self.txRateLimiter = txRateLimiter
    }
}

/// An Ethernet address written `aa:bb:cc:dd:ee:ff`.
public struct MACAddress: Equatable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.bytes = bytes
    }

    public var description: String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}

/// `vsock` (API: PUT /vsock).
public struct VsockDeviceConfig: Equatable, Sendable {
    public var guestCID: UInt32
    public var udsPath: String
    public var vsockID: String?

    public init(guestCID: UInt32, udsPath: String, vsockID: String? = nil) {
        self.guestCID = guestCID
        self.udsPath = udsPath
        self.vsockID = vsockID
    }
}

/// `logger` (API: PUT /logger).
public struct LoggerConfig: Equatable, Sendable {
    public enum Level: String, Equatable, Sendable, CaseIterable {
        case off = "Off"
        case error = "Error"
        case warning = "Warning"
        case info = "Info"
        case debug = "Debug"
        case trace = "Trace"
    }

    public var logPath: String?
    public var level: Level?
    public var showLevel: Bool
    public var showLogOrigin: Bool
    public var module: String?

    public init(
        logPath: String? = nil, level: Level? = nil, showLevel: Bool = false,
        showLogOrigin: Bool = false, module: String? = nil
    ) {
        self.logPath = logPath
        self.level = level
        self.showLevel = showLevel
        self.showLogOrigin = showLogOrigin
        self.module = module
    }
}

/// `metrics` (API: PUT /metrics).
public struct MetricsConfig: Equatable, Sendable {
    public var metricsPath: String
    public init(metricsPath: String) { self.metricsPath = metricsPath }
}

/// A token-bucket rate limiter: `bandwidth` in bytes, `ops` in operations.
public struct RateLimiterConfig: Equatable, Sendable {
    public var bandwidth: TokenBucketConfig?
    public var ops: TokenBucketConfig?

    public init(bandwidth: TokenBucketConfig? = nil, ops: TokenBucketConfig? = nil) {
        self.bandwidth = bandwidth
        self.ops = ops
    }
}

/// One bucket of a `RateLimiterConfig`.
public struct TokenBucketConfig: Equatable, Sendable {
    public var size: UInt64
    public var oneTimeBurst: UInt64?
    /// Milliseconds to refill `size` tokens.
    public var refillTimeMilliseconds: UInt64

    public init(size: UInt64, oneTimeBurst: UInt64? = nil, refillTimeMilliseconds: UInt64) {
        self.size = size
        self.oneTimeBurst = oneTimeBurst
        self.refillTimeMilliseconds = refillTimeMilliseconds
    }
}
