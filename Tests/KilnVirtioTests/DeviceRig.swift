import KilnMemory

@testable import KilnVirtio

/// One guest with one device on a transport, driven to DRIVER_OK, with a
/// test ring per queue and a bump allocator for request buffers.
final class DeviceRig<Device: VirtioDevice> {
    let memory: HeapGuestMemory
    let device: Device
    let interrupt = CountingInterrupt()
    let transport: VirtioMMIOTransport
    var rings: [TestRing]
    private var nextBuffer: UInt64 = 0x40000

    init(
        memorySize: UInt64 = 1 << 20, features: UInt64 = standardFeatures, queueSize: UInt16 = 16,
        _ makeDevice: (GuestMemory) throws -> Device
    ) throws {
        let memory = try HeapGuestMemory(size: memorySize)
        self.memory = memory
        device = try makeDevice(memory)
        transport = VirtioMMIOTransport(device: device, memory: memory, interrupt: interrupt)
        rings = device.queueMaxSizes.indices.map {
            TestRing(memory: memory, size: queueSize, base: 0x1000 + 0x4000 * UInt64($0))
        }
        let status = driver.initialize(features: features, queues: rings.map(\.configuration))
        precondition(status.contains(.driverOK), "device did not reach DRIVER_OK: \(status)")
    }

    var driver: TestDriver { TestDriver(transport: transport) }

    /// A fresh guest buffer holding `bytes` (or zeros), 16-byte aligned.
    func buffer(_ bytes: [UInt8]) throws -> UInt64 {
        let address = nextBuffer
        nextBuffer += (UInt64(bytes.count) + 15) & ~15
        try memory.write(bytes, at: address)
        return address
    }

    func buffer(zeros count: Int) throws -> UInt64 { try buffer([UInt8](repeating: 0, count: count)) }

    /// Offers a chain on `queue` and notifies; returns its head. Like
    /// Linux's virtqueue_enable_cb, it first asks (with EVENT_IDX) for an
    /// interrupt at the next used element (§2.7.7).
    @discardableResult
    func submit(_ queue: Int, _ buffers: [TestBuffer]) throws -> UInt16 {
        try rings[queue].setUsedEvent(try rings[queue].usedIndex())
        let head = try rings[queue].addChain(buffers)
        driver.notify(UInt32(queue))
        return head
    }

    /// The latest used element of `queue`.
    func lastUsed(_ queue: Int) throws -> (id: UInt32, length: UInt32) {
        try rings[queue].usedElement(try rings[queue].usedIndex() &- 1)
    }

    var failed: Bool { transport.status.contains(.needsReset) }
}

func readable(_ address: UInt64, _ length: Int) -> TestBuffer {
    TestBuffer(address: address, length: UInt32(length), writable: false)
}

func writable(_ address: UInt64, _ length: Int) -> TestBuffer {
    TestBuffer(address: address, length: UInt32(length), writable: true)
}
