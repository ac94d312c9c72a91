import KilnMemory

@testable import KilnVirtio

/// Counts interrupts instead of writing an irqfd.
final class CountingInterrupt: InterruptSignal {
    var count = 0
    func trigger() { count += 1 }
}

/// One buffer as a test driver describes it before laying it out.
struct TestBuffer {
    var address: UInt64
    var length: UInt32
    var writable: Bool
}

/// A split queue's memory as the guest driver sees it (virtio 1.2 §2.7):
/// the test writes descriptors and the available ring, reads the used ring.
struct TestRing {
    let memory: GuestMemory
    let size: UInt16
    let descriptorTable: UInt64
    let availableRing: UInt64
    let usedRing: UInt64
    var nextDescriptor: UInt16 = 0
    var availableIndex: UInt16 = 0

    init(memory: GuestMemory, size: UInt16, base: UInt64) {
        self.memory = memory
        let layout = QueueConfiguration.contiguous(base: base, size: size)
        self.size = size
        descriptorTable = layout.descriptorTable
        availableRing = layout.availableRing
        usedRing = layout.usedRing
    }

    var configuration: QueueConfiguration {
        QueueConfiguration(
            size: size, descriptorTable: descriptorTable, availableRing: availableRing, usedRing: usedRing)
    }

    /// Writes one raw descriptor (§2.7.5).
    func writeDescriptor(table: UInt64, index: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16)
        throws
    {
        let entry = table + 16 * UInt64(index)
        try memory.write(address, at: entry)
        try memory.write(length, at: entry + 8)
        try memory.write(flags, at: entry + 12)
        try memory.write(next, at: entry + 14)
    }

    /// Lays `buffers` out as a NEXT-linked chain in free descriptors and
    /// returns its head.
    @discardableResult
    mutating func addChain(_ buffers: [TestBuffer]) throws -> UInt16 {
        let head = nextDescriptor
        for (position, buffer) in buffers.enumerated() {
            let index = (head &+ UInt16(position)) % size
            let last = position == buffers.count - 1
            let flags: UInt16 = (last ? 0 : 1) | (buffer.writable ? 2 : 0)
            try writeDescriptor(
                table: descriptorTable, index: index, address: buffer.address,
                length: buffer.length, flags: flags, next: (index &+ 1) % size)
        }
        nextDescriptor = (head &+ UInt16(buffers.count)) % size
        try publish(head: head)
        return head
    }

    /// Lays `buffers` out in an indirect table at `table` and offers one
    /// descriptor pointing at it (§2.7.5.3).
    @discardableResult
    mutating func addIndirectChain(_ buffers: [TestBuffer], table: UInt64) throws -> UInt16 {
        for (position, buffer) in buffers.enumerated() {
            let last = position == buffers.count - 1
            let flags: UInt16 = (last ? 0 : 1) | (buffer.writable ? 2 : 0)
            try writeDescriptor(
                table: table, index: UInt16(position), address: buffer.address,
                length: buffer.length, flags: flags, next: UInt16(position + 1))
        }
        let head = nextDescriptor
        try writeDescriptor(
            table: descriptorTable, index: head, address: table,
            length: UInt32(16 * buffers.count), flags: 4, next: 0)
        nextDescriptor = (head &+ 1) % size
        try publish(head: head)
        return head
    }

    /// Puts `head` in the next available slot and moves idx (§2.7.13).
    mutating func publish(head: UInt16) throws {
        try memory.write(head, at: availableRing + 4 + 2 * UInt64(availableIndex % size))
        availableIndex &+= 1
        try memory.write(availableIndex, at: availableRing + 2)
    }

    func setAvailableIndex(_ value: UInt16) throws { try memory.write(value, at: availableRing + 2) }
    func setAvailableFlags(_ value: UInt16) throws { try memory.write(value, at: availableRing) }
    func setUsedEvent(_ value: UInt16) throws { try memory.write(value, at: availableRing + 4 + 2 * UInt64(size)) }

    func usedIndex() throws -> UInt16 { try memory.read(at: usedRing + 2) }
    func availableEvent() throws -> UInt16 { try memory.read(at: usedRing + 4 + 8 * UInt64(size)) }

    /// The used element in slot `slot`: (id, len) (§2.7.8).
    func usedElement(_ slot: UInt16) throws -> (id: UInt32, length: UInt32) {
        let address = usedRing + 4 + 8 * UInt64(slot % size)
        return (try memory.read(at: address), try memory.read(at: address + 4))
    }
}

/// Drives a transport's registers the way Linux's virtio_mmio does.
struct TestDriver {
    let transport: VirtioMMIOTransport

    func read(_ offset: UInt64) -> UInt32 { UInt32(transport.read(offset: offset, size: 4)) }
    func write(_ offset: UInt64, _ value: UInt32) { transport.write(offset: offset, size: 4, value: UInt64(value)) }

    var status: DeviceStatus { DeviceStatus(rawValue: read(MMIORegister.status)) }

    func offeredFeatures() -> UInt64 {
        write(MMIORegister.deviceFeaturesSelect, 0)
        let low = UInt64(read(MMIORegister.deviceFeatures))
        write(MMIORegister.deviceFeaturesSelect, 1)
        return low | UInt64(read(MMIORegister.deviceFeatures)) << 32
    }

    func addStatus(_ bits: DeviceStatus) { write(MMIORegister.status, status.union(bits).rawValue) }

    /// §3.1.1 steps 1–6: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK.
    /// Returns whether the device kept FEATURES_OK.
    @discardableResult
    func negotiate(features: UInt64) -> Bool {
        write(MMIORegister.status, 0)
        addStatus(.acknowledge)
        addStatus(.driver)
        write(MMIORegister.driverFeaturesSelect, 0)
        write(MMIORegister.driverFeatures, UInt32(truncatingIfNeeded: features))
        write(MMIORegister.driverFeaturesSelect, 1)
        write(MMIORegister.driverFeatures, UInt32(truncatingIfNeeded: features >> 32))
        addStatus(.featuresOK)
        return status.contains(.featuresOK)
    }

    /// §4.2.3.2: one queue's registers, then QueueReady.
    func setUpQueue(_ index: UInt32, _ configuration: QueueConfiguration) {
        write(MMIORegister.queueSelect, index)
        write(MMIORegister.queueSize, UInt32(configuration.size))
        write(MMIORegister.queueDescriptorLow, UInt32(truncatingIfNeeded: configuration.descriptorTable))
        write(MMIORegister.queueDescriptorHigh, UInt32(truncatingIfNeeded: configuration.descriptorTable >> 32))
        write(MMIORegister.queueDriverLow, UInt32(truncatingIfNeeded: configuration.availableRing))
        write(MMIORegister.queueDriverHigh, UInt32(truncatingIfNeeded: configuration.availableRing >> 32))
        write(MMIORegister.queueDeviceLow, UInt32(truncatingIfNeeded: configuration.usedRing))
        write(MMIORegister.queueDeviceHigh, UInt32(truncatingIfNeeded: configuration.usedRing >> 32))
        write(MMIORegister.queueReady, 1)
    }

    /// The whole §3.1.1 sequence with the given queues; returns the status.
    @discardableResult
    func initialize(features: UInt64, queues: [QueueConfiguration]) -> DeviceStatus {
        guard negotiate(features: features) else { return status }
        for (index, queue) in queues.enumerated() { setUpQueue(UInt32(index), queue) }
        addStatus(.driverOK)
        return status
    }

    func notify(_ queue: UInt32) { write(MMIORegister.queueNotify, queue) }
}

/// The features a modern Linux driver asks for on top of a device's own.
let standardFeatures = VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
