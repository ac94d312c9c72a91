/// What a virtio device model gives the transport. The transport owns the
/// register file, the status machine and the queues' configuration; the
/// device only answers "what do you offer" and "serve this queue".
///
/// Nothing here is thread-safe: the VMM serializes every call on one
/// transport (see `VirtioMMIOTransport`).
public protocol VirtioDevice: AnyObject {
    /// The device ID the driver matches on (virtio 1.2 §5).
    var deviceType: VirtioDeviceType { get }
    /// Device-specific feature bits (bits 0–23 and 50–127 per §6). The
    /// transport adds the reserved bits it implements itself.
    var deviceFeatures: UInt64 { get }
    /// One entry per virtqueue: its QueueNumMax (a power of two, §2.7).
    var queueMaxSizes: [UInt16] { get }
    /// The device-specific configuration space as it reads now (§4.2.2,
    /// offset 0x100). Its count bounds every config access.
    var configSpace: [UInt8] { get }
    /// A driver write into the configuration space, already checked to lie
    /// inside `configSpace`. Devices with no writable field ignore it.
    func writeConfig(offset: Int, bytes: [UInt8])
    /// DRIVER_OK was set with these negotiated features.
    func activate(features: UInt64)
    /// Status 0 was written or the device must forget all state (§2.1.2).
    func reset()
    /// Serves queue `index` (notified by the driver or by the VMM for a
    /// backend event): pop chains, do the work, push used elements. `queues`
    /// holds every queue, nil where not ready, for devices whose work on one
    /// queue completes chains on another (net). Throwing a `VirtqueueError`
    /// marks the device DEVICE_NEEDS_RESET.
    func process(queue index: Int, queues: [Virtqueue?]) throws
}

extension VirtioDevice {
    public func writeConfig(offset: Int, bytes: [UInt8]) {}
}

/// Device IDs (virtio 1.2 §5, table "Device Types").
public struct VirtioDeviceType: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let net = VirtioDeviceType(rawValue: 1)
    public static let block = VirtioDeviceType(rawValue: 2)
    public static let entropy = VirtioDeviceType(rawValue: 4)
    public static let socket = VirtioDeviceType(rawValue: 19)
}

/// Reserved feature bits the transport and queues implement (virtio 1.2 §6).
public enum VirtioFeature {
    public static let indirectDescriptors: UInt64 = 1 << 28
    public static let eventIndex: UInt64 = 1 << 29
    public static let version1: UInt64 = 1 << 32
}

/// How the transport raises the device's interrupt. The VMM implements it
/// with an irqfd (a write to an eventfd that KVM turns into the GSI); tests
/// count calls.
public protocol InterruptSignal: AnyObject {
    func trigger()
}
