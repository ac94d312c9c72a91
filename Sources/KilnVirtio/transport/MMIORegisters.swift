/// The virtio-mmio register layout, version 2 (virtio 1.2 §4.2.2, table 4.1).
/// Offsets from the device's window base.
public enum MMIORegister {
    public static let magicValue: UInt64 = 0x000
    public static let version: UInt64 = 0x004
    public static let deviceID: UInt64 = 0x008
    public static let vendorID: UInt64 = 0x00c
    public static let deviceFeatures: UInt64 = 0x010
    public static let deviceFeaturesSelect: UInt64 = 0x014
    public static let driverFeatures: UInt64 = 0x020
    public static let driverFeaturesSelect: UInt64 = 0x024
    public static let queueSelect: UInt64 = 0x030
    public static let queueSizeMax: UInt64 = 0x034
    public static let queueSize: UInt64 = 0x038
    public static let queueReady: UInt64 = 0x044
    public static let queueNotify: UInt64 = 0x050
    public static let interruptStatus: UInt64 = 0x060
    public static let interruptAcknowledge: UInt64 = 0x064
    public static let status: UInt64 = 0x070
    public static let queueDescriptorLow: UInt64 = 0x080
    public static let queueDescriptorHigh: UInt64 = 0x084
    public static let queueDriverLow: UInt64 = 0x090
    public static let queueDriverHigh: UInt64 = 0x094
    public static let queueDeviceLow: UInt64 = 0x0a0
    public static let queueDeviceHigh: UInt64 = 0x0a4
    public static let sharedMemorySelect: UInt64 = 0x0ac
    public static let sharedMemoryLengthLow: UInt64 = 0x0b0
    public static let sharedMemoryLengthHigh: UInt64 = 0x0b4
    public static let sharedMemoryBaseLow: UInt64 = 0x0b8
    public static let sharedMemoryBaseHigh: UInt64 = 0x0bc
    public static let queueReset: UInt64 = 0x0c0
    public static let configGeneration: UInt64 = 0x0fc
    /// Device-specific configuration space starts here.
    public static let config: UInt64 = 0x100

    /// "virt" in little-endian (§4.2.2.1).
    public static let magic: UInt32 = 0x7472_6976
    /// This transport implements only the modern (non-legacy) layout.
    public static let currentVersion: UInt32 = 2
    /// Each device gets a 4 KiB window (as QEMU microvm and Firecracker do).
    public static let windowSize: UInt64 = 0x1000
}

/// InterruptStatus bits (§4.2.2).
public enum MMIOInterrupt {
    /// Used Buffer Notification.
    public static let usedBuffer: UInt32 = 1 << 0
    /// Configuration Change Notification.
    public static let configChange: UInt32 = 1 << 1
}

/// Device status bits (virtio 1.2 §2.1).
public struct DeviceStatus: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let acknowledge = DeviceStatus(rawValue: 1)
    public static let driver = DeviceStatus(rawValue: 2)
    public static let driverOK = DeviceStatus(rawValue: 4)
    public static let featuresOK = DeviceStatus(rawValue: 8)
    public static let needsReset = DeviceStatus(rawValue: 64)
    public static let failed = DeviceStatus(rawValue: 128)
}
