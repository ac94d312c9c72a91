import KilnMemory

/// The virtio-mmio transport, version 2 (virtio 1.2 §4.2): the register file
/// as a state machine in front of one `VirtioDevice`.
///
/// Pure and single-threaded: it does no system calls of its own (the
/// interrupt goes through `InterruptSignal`). The VMM must serialize every
/// call on one transport (register accesses from vCPU threads, queue
/// notifications from the event loop) behind one lock.
public final class VirtioMMIOTransport {
    /// "KILN" in little-endian ASCII; drivers do not match on it.
    public static let vendorID: UInt32 = 0x4E4C_494B

    public let device: VirtioDevice
    let memory: GuestMemory
    let interrupt: InterruptSignal

    public private(set) var status: DeviceStatus = []
    public private(set) var interruptStatus: UInt32 = 0
    public private(set) var configGeneration: UInt32 = 0
    /// Features the driver has written so far (§2.2).
    public private(set) var driverFeatures: UInt64 = 0
    /// Why the device last entered DEVICE_NEEDS_RESET, until the next reset.
    public private(set) var failure: VirtqueueError?
    /// Accesses the spec forbids (bad width, wrong direction, out of order),
    /// ignored as §4.2.2.2 lets the device do. For metrics and tests.
    public private(set) var ignoredAccesses = 0

    private var deviceFeaturesSelect: UInt32 = 0
    private var driverFeaturesSelect: UInt32 = 0
    private var queueSelect: UInt32 = 0
    /// QueueNum as written, all 32 bits, checked when the queue is made ready.
    private var pendingQueueSizes: [UInt32]
    private var queueConfigurations: [QueueConfiguration]
    /// A queue is live (QueueReady reads 1) exactly when it has a Virtqueue.
    private var queues: [Virtqueue?]

    public init(device: VirtioDevice, memory: GuestMemory, interrupt: InterruptSignal) {
        self.device = device
        self.memory = memory
        self.interrupt = interrupt
        let count = device.queueMaxSizes.count
        pendingQueueSizes = Array(repeating: 0, count: count)
        queueConfigurations = Array(repeating: QueueConfiguration(), count: count)
        queues = Array(repeating: nil, count: count)
    }

    /// What the device offers: its own bits plus the reserved bits this
    /// transport and the split queue implement (§6). VERSION_1 is mandatory
    /// for a non-legacy device (§6.2).
    public var offeredFeatures: UInt64 {
        device.deviceFeatures | VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
    }

    /// The live queue `index`, if the driver made it ready.
    public func queue(_ index: Int) -> Virtqueue? {
        queues.indices.contains(index) ? queues[index] : nil
    }

    // MARK: Register reads

    /// A register read at `offset` in the device's window. The machine's
    /// MMIO bus reaches it through KilnMachine's `VirtioMMIOSlot`, the bus
    /// device that holds this transport's lock.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        if offset >= MMIORegister.config { return readConfig(offset: offset - MMIORegister.config, size: size) }
        // §4.2.2.2: control registers are read 32 bits wide and aligned.
        guard size == 4, offset % 4 == 0 else { return ignored(0) }
        return UInt64(readRegister(offset))
    }

    private func readRegister(_ offset: UInt64) -> UInt32 {
        switch offset {
        case MMIORegister.magicValue: return MMIORegister.magic
        case MMIORegister.version: return MMIORegister.currentVersion
        case MMIORegister.deviceID: return device.deviceType.rawValue
        case MMIORegister.vendorID: return Self.vendorID
        case MMIORegister.deviceFeatures:
            switch deviceFeaturesSelect {
            case 0: return UInt32(truncatingIfNeeded: offeredFeatures)
            case 1: return UInt32(truncatingIfNeeded: offeredFeatures >> 32)
            default: return 0
            }
        case MMIORegister.queueSizeMax:
            // §4.2.3.2: zero means the selected queue does not exist.
            return selectedQueue.map { UInt32(device.queueMaxSizes[$0]) } ?? 0
        case MMIORegister.queueReady:
            return selectedQueue.map { queues[$0] == nil ? 0 : 1 } ?? 0
        case MMIORegister.interruptStatus: return interruptStatus
        case MMIORegister.status: return status.rawValue
        case MMIORegister.configGeneration: return configGeneration
        case MMIORegister.sharedMemoryLengthLow, MMIORegister.sharedMemoryLengthHigh,
            MMIORegister.sharedMemoryBaseLow, MMIORegister.sharedMemoryBaseHigh:
            // §4.2.2: a region that does not exist reads as length -1.
            return UInt32.max
        case MMIORegister.queueReset:
            return 0 // VIRTIO_F_RING_RESET is not offered.
        default:
            // Write-only registers and holes in the map.
            return ignored(0)
        }
    }

    /// §4.2.2.2: 8-bit fields are read 8 bits wide, 16-bit fields 16 bits
    /// wide and aligned, 32- and 64-bit fields 32 bits wide and aligned.
    private func readConfig(offset: UInt64, size: Int) -> UInt64 {
        let space = device.configSpace
        guard let range = configRange(offset: offset, size: size, spaceCount: space.count) else { return ignored(0) }
        var value: UInt64 = 0
        for (shift, byte) in space[range].enumerated() { value |= UInt64(byte) << (8 * UInt64(shift)) }
        return value
    }

    private func configRange(offset: UInt64, size: Int, spaceCount: Int) -> Range<Int>? {
        guard size == 1 || size == 2 || size == 4, offset % UInt64(size) == 0,
            offset < UInt64(spaceCount), UInt64(size) <= UInt64(spaceCount) - offset
        else { return nil }
        return Int(offset)..<Int(offset) + size
    }

    // MARK: Register writes

    public func write(offset: UInt64, size: Int, value: UInt64) {
        if offset >= MMIORegister.config {
            writeConfig(offset: offset - MMIORegister.config, size: size, value: value)
            return
        }
        guard size == 4, offset % 4 == 0 else { return ignored(()) }
        writeRegister(offset, UInt32(truncatingIfNeeded: value))
    }

    private func writeRegister(_ offset: UInt64, _ value: UInt32) {
        switch offset {
        case MMIORegister.deviceFeaturesSelect: deviceFeaturesSelect = value
        case MMIORegister.driverFeaturesSelect: driverFeaturesSelect = value
        case MMIORegister.driverFeatures: writeDriverFeatures(value)
        case MMIORegister.queueSelect: queueSelect = value
        case MMIORegister.queueSize:
            configureSelectedQueue { pendingQueueSizes[$0] = value }
        case MMIORegister.queueDescriptorLow:
            configureSelectedQueue { queueConfigurations[$0].descriptorTable.setLow(value) }
        case MMIORegister.queueDescriptorHigh:
            configureSelectedQueue { queueConfigurations[$0].descriptorTable.setHigh(value) }
        case MMIORegister.queueDriverLow:
            configureSelectedQueue { queueConfigurations[$0].availableRing.setLow(value) }
        case MMIORegister.queueDriverHigh:
            configureSelectedQueue { queueConfigurations[$0].availableRing.setHigh(value) }
        case MMIORegister.queueDeviceLow:
            configureSelectedQueue { queueConfigurations[$0].usedRing.setLow(value) }
        case MMIORegister.queueDeviceHigh:
            configureSelectedQueue { queueConfigurations[$0].usedRing.setHigh(value) }
        case MMIORegister.queueReady: writeQueueReady(value)
        case MMIORegister.queueNotify:
            // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index.
            processQueue(Int(value))
        case MMIORegister.interruptAcknowledge: interruptStatus &= ~value
        case MMIORegister.status: writeStatus(value)
        case MMIORegister.sharedMemorySelect: break // no regions: every id reads as absent
        default:
            // Read-only registers and holes: the driver must not write them (§4.2.2.2).
            ignored(())
        }
    }

    private func writeConfig(offset: UInt64, size: Int, value: UInt64) {
        let count = device.configSpace.count
        guard let range = configRange(offset: offset, size: size, spaceCount: count) else { return ignored(()) }
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        device.writeConfig(offset: range.lowerBound, bytes: bytes)
    }

    /// §3.1.1 step 4: features are written after DRIVER and before
    /// FEATURES_OK; afterwards the set is frozen.
    private func writeDriverFeatures(_ value: UInt32) {
        guard status.contains(.driver), !status.contains(.featuresOK), !status.contains(.failed) else {
            return ignored(())
        }
        switch driverFeaturesSelect {
        case 0: driverFeatures.setLow(value)
        case 1: driverFeatures.setHigh(value)
        default: if value != 0 { ignored(()) } // nothing is offered above bit 63
        }
    }

    /// §3.1.1 step 7: queues are set up after FEATURES_OK, before DRIVER_OK,
    /// and a queue's registers are not changed while it is ready (§4.2.2).
    private func configureSelectedQueue(_ body: (Int) -> Void) {
        guard let index = selectedQueue, queues[index] == nil,
            status.contains(.featuresOK), !status.contains(.driverOK)
        else { return ignored(()) }
        body(index)
    }

    private func writeQueueReady(_ value: UInt32) {
        guard let index = selectedQueue, status.contains(.featuresOK), !status.contains(.needsReset) else {
            return ignored(())
        }
        guard value == 1 else {
            queues[index] = nil
            return
        }
        guard queues[index] == nil else { return }
        let size = pendingQueueSizes[index]
        do {
            // §4.2.2: QueueNum is at most QueueNumMax.
            guard size <= UInt32(device.queueMaxSizes[index]) else {
                throw VirtqueueError(
                    queue: index, .badLayout("size \(size) above the maximum \(device.queueMaxSizes[index])"))
            }
            var configuration = queueConfigurations[index]
            configuration.size = UInt16(size)
            queues[index] = try Virtqueue(
                index: index, configuration: configuration, memory: memory, features: driverFeatures)
        } catch let error as VirtqueueError {
            enterNeedsReset(error)
        } catch {
            enterNeedsReset(VirtqueueError(queue: index, .badLayout("\(error)")))
        }
    }

    private var selectedQueue: Int? {
        queueSelect < UInt32(queues.count) ? Int(queueSelect) : nil
    }

    // MARK: The status state machine (§2.1, §3.1.1)

    private func writeStatus(_ value: UInt32) {
        // §2.1.2 / §4.2.2: writing 0 resets the device.
        if value == 0 { return reset() }
        let known: DeviceStatus = [.acknowledge, .driver, .featuresOK, .driverOK, .failed, .needsReset]
        var requested = DeviceStatus(rawValue: value)
        // DEVICE_NEEDS_RESET belongs to the device: the driver may echo it, not set it.
        if !status.contains(.needsReset) { requested.remove(.needsReset) }
        // §2.1.1: the driver never clears a bit and sets no unknown bit.
        guard known.isSuperset(of: requested), requested.isSuperset(of: status) else { return ignored(()) }
        let added = requested.subtracting(status)

        if added.contains(.failed) {
            // The driver gave up (§2.1): stop serving queues until a reset.
            status.insert(.failed)
        }
        // Each step needs the one before it (§3.1.1 steps 2–8).
        let order: [(DeviceStatus, DeviceStatus)] = [
            (.acknowledge, []), (.driver, .acknowledge), (.featuresOK, .driver), (.driverOK, .featuresOK),
        ]
        for (bit, prerequisite) in order where added.contains(bit) {
            guard requested.isSuperset(of: prerequisite), !status.contains(.failed) else { return ignored(()) }
            if bit == .featuresOK && !featuresAcceptable { return } // §2.2.2: FEATURES_OK stays clear
            status.insert(bit)
            if bit == .driverOK { device.activate(features: driverFeatures) }
        }
    }

    /// §2.2.2: a subset of what was offered, with VERSION_1 (a
    /// device may refuse to run without it, §6.2).
    private var featuresAcceptable: Bool {
        driverFeatures & ~offeredFeatures == 0 && driverFeatures & VirtioFeature.version1 != 0
    }

    /// §2.1.2: everything back to its initial value, queues no longer ready,
    /// no interrupt pending (§4.2.2.1).
    private func reset() {
        status = []
        interruptStatus = 0
        driverFeatures = 0
        deviceFeaturesSelect = 0
        driverFeaturesSelect = 0
        queueSelect = 0
        failure = nil
        for index in queues.indices {
            queues[index] = nil
            pendingQueueSizes[index] = 0
            queueConfigurations[index] = QueueConfiguration()
        }
        device.reset()
    }

    /// §2.1.2: a device in an error state sets DEVICE_NEEDS_RESET and, once
    /// DRIVER_OK is set, sends a configuration change notification.
    private func enterNeedsReset(_ error: VirtqueueError) {
        status.insert(.needsReset)
        failure = error
        if status.contains(.driverOK) { raise(MMIOInterrupt.configChange) }
    }

    // MARK: Queue service and notifications

    /// Serves queue `index`: called for a QueueNotify write (an ioeventfd in
    /// the VMM) and when a backend has work for the queue (a TAP turning
    /// readable). Does nothing unless the device is live (§2.1.2: no buffers
    /// consumed before DRIVER_OK; §4.2.2.1: no access to a queue not ready).
    ///
    /// Each call serves at most `serviceRounds` rings' worth of chains per
    /// queue. Returns true when it stopped there with chains still waiting:
    /// the caller should call again after its other work, since the driver
    /// will not notify again for them.
    @discardableResult
    public func processQueue(_ index: Int) -> Bool {
        guard status.contains(.driverOK), status.isDisjoint(with: [.needsReset, .failed]),
            let queue = queue(index)
        else { return false }
        let live = queues.compactMap { $0 }
        for each in live { each.beginService(budget: Self.serviceRounds * Int(each.configuration.size)) }
        do {
            // Re-serve while the driver added chains after the device's last
            // pop but before avail_event moved: it may not have notified
            // (§2.7.10). Stop when a round consumed nothing, so a device
            // waiting on its backend (net receive) does not spin. A device
            // may also pop and complete chains on other queues (net: a sent
            // frame looped back to receive), so every live queue's
            // avail_event and used_event are looked at.
            var before: UInt16
            repeat {
                before = queue.lastAvailable
                try device.process(queue: index, queues: queues)
                for each in live { try each.setDriverNotifications(enabled: true) }
            } while try queue.lastAvailable != before && !queue.budgetExhausted && !throttled(index)
                && queue.hasAvailable()

            var notify = false
            for each in live where try each.needsNotification() { notify = true }
            if notify { raise(MMIOInterrupt.usedBuffer) }
            return try live.contains { try $0.budgetExhausted && $0.hasAvailable() }
        } catch let error as VirtqueueError {
            enterNeedsReset(error)
        } catch {
            enterNeedsReset(VirtqueueError(queue: index, .malformedRequest("\(error)")))
        }
        return false
    }

    /// A rate limiter held the queue back: its own timer brings it back.
    private func throttled(_ index: Int) -> Bool {
        (device as? RateLimitedDevice)?.throttledUntil(queue: index) != nil
    }

    /// How many times over its size a queue is served per `processQueue`.
    public static let serviceRounds = 2

    /// The device changed its configuration space (§2.5.1, §4.2.2:
    /// ConfigGeneration moves so the driver re-reads a consistent copy).
    public func configurationChanged() {
        configGeneration &+= 1
        if status.contains(.driverOK) { raise(MMIOInterrupt.configChange) }
    }

    /// §4.2.2.1: the bit stays set until the driver acknowledges it.
    private func raise(_ bit: UInt32) {
        interruptStatus |= bit
        interrupt.trigger()
    }

    @discardableResult
    private func ignored<T>(_ value: T) -> T {
        ignoredAccesses += 1
        return value
    }
}

extension UInt64 {
    /// 64-bit registers are written as two 32-bit halves (§4.2.2).
    mutating func setLow(_ value: UInt32) { self = (self & 0xFFFF_FFFF_0000_0000) | UInt64(value) }
    mutating func setHigh(_ value: UInt32) { self = (self & 0xFFFF_FFFF) | UInt64(value) << 32 }
}
