import KilnMemory
import Testing

@testable import KilnVirtio

/// A minimal device for transport and queue tests: it writes each chain's
/// readable bytes back, reversed, into its writable buffers.
final class EchoDevice: VirtioDevice {
    var deviceType: VirtioDeviceType { VirtioDeviceType(rawValue: 0x7e57) }
    var deviceFeatures: UInt64 { 1 << 3 }
    var queueMaxSizes: [UInt16] { [16] }
    var configSpace: [UInt8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66]
    var activations: [UInt64] = []
    var resets = 0
    let memory: GuestMemory

    init(memory: GuestMemory) { self.memory = memory }

    func writeConfig(offset: Int, bytes: [UInt8]) {
        configSpace.replaceSubrange(offset..<offset + bytes.count, with: bytes)
    }
    func activate(features: UInt64) { activations.append(features) }
    func reset() { resets += 1 }

    func process(queue index: Int, queues: [Virtqueue?]) throws {
        guard let queue = queues[index] else { return }
        while let chain = try queue.pop() {
            var reader = ChainReader(memory: memory, chain: chain)
            let bytes = try reader.read(Int(min(reader.remaining, 4096))) ?? []
            var writer = ChainWriter(memory: memory, chain: chain)
            let reply = Array(bytes.reversed().prefix(Int(writer.remaining)))
            try writer.write(reply)
            try queue.pushUsed(chain, written: writer.written)
        }
    }
}

/// Plays a driver that refills its ring as fast as the device drains it.
final class RefillingDevice: VirtioDevice {
    var ring: TestRing
    init(ring: TestRing) { self.ring = ring }
    var deviceType: VirtioDeviceType { VirtioDeviceType(rawValue: 0x7e58) }
    var deviceFeatures: UInt64 { 0 }
    var queueMaxSizes: [UInt16] { [16] }
    var configSpace: [UInt8] { [] }
    func activate(features: UInt64) {}
    func reset() {}
    func process(queue index: Int, queues: [Virtqueue?]) throws {
        guard let queue = queues[index] else { return }
        while let chain = try queue.pop() {
            try ring.addChain([TestBuffer(address: 0x9000, length: 1, writable: true)])
            try queue.pushUsed(chain, written: 0)
        }
    }
}

/// One guest with one echo device, laid out for the tests below.
struct EchoRig {
    let memory: HeapGuestMemory
    let device: EchoDevice
    let interrupt = CountingInterrupt()
    let transport: VirtioMMIOTransport
    var driver: TestDriver { TestDriver(transport: transport) }
    var ring: TestRing

    init(size: UInt16 = 16) throws {
        memory = try HeapGuestMemory(size: 1 << 20)
        device = EchoDevice(memory: memory)
        transport = VirtioMMIOTransport(device: device, memory: memory, interrupt: interrupt)
        ring = TestRing(memory: memory, size: size, base: 0x1000)
    }

    func start(features: UInt64 = standardFeatures) -> DeviceStatus {
        driver.initialize(features: features, queues: [ring.configuration])
    }
}

@Suite("virtio-mmio transport")
struct TransportTests {
    @Test("identification registers (§4.2.2)")
    func identification() throws {
        let rig = try EchoRig()
        #expect(rig.driver.read(MMIORegister.magicValue) == 0x7472_6976)
        #expect(rig.driver.read(MMIORegister.version) == 2)
        #expect(rig.driver.read(MMIORegister.deviceID) == 0x7e57)
        #expect(rig.driver.read(MMIORegister.vendorID) == VirtioMMIOTransport.vendorID)
        let offered = rig.driver.offeredFeatures()
        #expect(offered == 1 << 3 | standardFeatures)
        #expect(rig.driver.read(MMIORegister.sharedMemoryLengthLow) == UInt32.max)
    }

    @Test("the §3.1.1 sequence reaches DRIVER_OK and activates with the driver's features")
    func initialization() throws {
        let rig = try EchoRig()
        let status = rig.start(features: VirtioFeature.version1 | 1 << 3)
        #expect(status == [.acknowledge, .driver, .featuresOK, .driverOK])
        #expect(rig.device.activations == [VirtioFeature.version1 | 1 << 3])
        rig.driver.write(MMIORegister.queueSelect, 0)
        #expect(rig.driver.read(MMIORegister.queueReady) == 1)
        #expect(rig.driver.read(MMIORegister.queueSizeMax) == 16)
        rig.driver.write(MMIORegister.queueSelect, 1)
        #expect(rig.driver.read(MMIORegister.queueSizeMax) == 0)
    }

    @Test("FEATURES_OK is refused without VERSION_1 or with a bit not offered (§2.2.2, §6.2)")
    func featureNegotiation() throws {
        let rig = try EchoRig()
        #expect(!rig.driver.negotiate(features: 1 << 3))
        #expect(!rig.driver.negotiate(features: VirtioFeature.version1 | 1 << 4))
        #expect(!rig.driver.negotiate(features: VirtioFeature.version1 | 1 << 40))
        #expect(rig.driver.negotiate(features: VirtioFeature.version1))
        // After FEATURES_OK the set is frozen.
        rig.driver.write(MMIORegister.driverFeaturesSelect, 0)
        rig.driver.write(MMIORegister.driverFeatures, 1 << 3)
        #expect(rig.transport.driverFeatures == VirtioFeature.version1)
    }

    @Test("status bits are never cleared and follow the §3.1.1 order; 0 resets")
    func statusMachine() throws {
        let rig = try EchoRig()
        rig.driver.write(MMIORegister.status, DeviceStatus.driver.rawValue)
        #expect(rig.driver.status == [])
        rig.driver.addStatus(.acknowledge)
        rig.driver.write(MMIORegister.status, DeviceStatus([.acknowledge, .driverOK]).rawValue)
        #expect(rig.driver.status == .acknowledge)
        rig.driver.addStatus(.driver)
        rig.driver.write(MMIORegister.status, DeviceStatus.driver.rawValue) // clears ACKNOWLEDGE
        #expect(rig.driver.status == [.acknowledge, .driver])
        rig.driver.write(MMIORegister.status, DeviceStatus([.acknowledge, .driver, .needsReset]).rawValue)
        #expect(rig.driver.status == [.acknowledge, .driver])
        rig.driver.write(MMIORegister.status, 0x1000 | 3)
        #expect(rig.driver.status == [.acknowledge, .driver])
        rig.driver.addStatus(.failed)
        #expect(rig.driver.status.contains(.failed))
        rig.driver.addStatus(.featuresOK)
        #expect(!rig.driver.status.contains(.featuresOK))
        rig.driver.write(MMIORegister.status, 0)
        #expect(rig.driver.status == [])
        #expect(rig.device.resets == 1)
    }

    @Test("reset clears queues, features and pending interrupts (§2.1.2, §4.2.2.1)")
    func reset() throws {
        var rig = try EchoRig()
        #expect(rig.start().contains(.driverOK))
        try rig.ring.addChain([
            TestBuffer(address: 0x8000, length: 4, writable: false),
            TestBuffer(address: 0x9000, length: 4, writable: true),
        ])
        rig.driver.notify(0)
        #expect(rig.driver.read(MMIORegister.interruptStatus) == MMIOInterrupt.usedBuffer)
        rig.driver.write(MMIORegister.status, 0)
        #expect(rig.driver.read(MMIORegister.interruptStatus) == 0)
        #expect(rig.driver.read(MMIORegister.queueReady) == 0)
        #expect(rig.transport.driverFeatures == 0)
        #expect(rig.transport.queue(0) == nil)
    }

    @Test("control registers take only aligned 32-bit accesses (§4.2.2.2)")
    func accessWidths() throws {
        let rig = try EchoRig()
        #expect(rig.transport.read(offset: MMIORegister.magicValue, size: 2) == 0)
        #expect(rig.transport.read(offset: MMIORegister.magicValue + 1, size: 4) == 0)
        #expect(rig.transport.read(offset: MMIORegister.magicValue, size: 8) == 0)
        rig.transport.write(offset: MMIORegister.status, size: 1, value: 1)
        #expect(rig.driver.status == [])
        // Write-only registers read as zero; read-only ones ignore writes.
        #expect(rig.driver.read(MMIORegister.queueNotify) == 0)
        rig.driver.write(MMIORegister.magicValue, 0)
        #expect(rig.driver.read(MMIORegister.magicValue) == MMIORegister.magic)
        #expect(rig.transport.ignoredAccesses == 6)
    }

    @Test("config space: natural widths, bounded by the device's size (§4.2.2.2)")
    func configSpace() throws {
        let rig = try EchoRig()
        let base = MMIORegister.config
        #expect(rig.transport.read(offset: base, size: 1) == 0x11)
        #expect(rig.transport.read(offset: base + 2, size: 2) == 0x4433)
        #expect(rig.transport.read(offset: base + 4, size: 2) == 0x6655)
        #expect(rig.transport.read(offset: base, size: 4) == 0x4433_2211)
        #expect(rig.transport.read(offset: base + 4, size: 4) == 0) // runs past the 6 bytes
        #expect(rig.transport.read(offset: base + 1, size: 2) == 0) // unaligned
        #expect(rig.transport.read(offset: base + 0xeff, size: 1) == 0)
        rig.transport.write(offset: base + 4, size: 2, value: 0xBEEF)
        #expect(rig.device.configSpace == [0x11, 0x22, 0x33, 0x44, 0xEF, 0xBE])
        rig.transport.write(offset: base + 6, size: 1, value: 0xFF)
        #expect(rig.device.configSpace.count == 6)
    }

    @Test("config change bumps the generation and interrupts once live (§2.5.1)")
    func configChange() throws {
        let rig = try EchoRig()
        rig.transport.configurationChanged()
        #expect(rig.driver.read(MMIORegister.configGeneration) == 1)
        #expect(rig.interrupt.count == 0)
        _ = rig.start()
        rig.transport.configurationChanged()
        #expect(rig.driver.read(MMIORegister.interruptStatus) == MMIOInterrupt.configChange)
        #expect(rig.interrupt.count == 1)
        rig.driver.write(MMIORegister.interruptAcknowledge, MMIOInterrupt.configChange)
        #expect(rig.driver.read(MMIORegister.interruptStatus) == 0)
    }

    @Test("queue registers are frozen once ready and outside FEATURES_OK..DRIVER_OK")
    func queueRegisterWindow() throws {
        let rig = try EchoRig()
        rig.driver.write(MMIORegister.queueSize, 8) // before FEATURES_OK
        #expect(rig.transport.ignoredAccesses == 1)
        _ = rig.start()
        rig.driver.write(MMIORegister.queueSelect, 0)
        rig.driver.write(MMIORegister.queueDescriptorLow, 0x5000)
        #expect(rig.transport.queue(0)?.configuration.descriptorTable == rig.ring.descriptorTable)
    }
}

@Suite("split virtqueue")
struct QueueTests {
    @Test("a request round trip, framing-independent, with a used-buffer interrupt (§2.7.4, §2.7.8)")
    func roundTrip() throws {
        var rig = try EchoRig()
        #expect(rig.start(features: VirtioFeature.version1).contains(.driverOK))
        try rig.memory.write([1, 2, 3], at: 0x8000)
        try rig.memory.write([4, 5], at: 0x8100)
        let head = try rig.ring.addChain([
            TestBuffer(address: 0x8000, length: 3, writable: false),
            TestBuffer(address: 0x8100, length: 2, writable: false),
            TestBuffer(address: 0x9000, length: 1, writable: true),
            TestBuffer(address: 0x9100, length: 8, writable: true),
        ])
        rig.driver.notify(0)
        #expect(try rig.ring.usedIndex() == 1)
        let used = try rig.ring.usedElement(0)
        #expect(used.id == UInt32(head) && used.length == 5)
        #expect(try rig.memory.readBytes(at: 0x9000, count: 1) == [5])
        #expect(try rig.memory.readBytes(at: 0x9100, count: 4) == [4, 3, 2, 1])
        #expect(rig.interrupt.count == 1)
        #expect(!rig.transport.processQueue(0)) // an empty ring: nothing left over
        #expect(rig.driver.read(MMIORegister.interruptStatus) == MMIOInterrupt.usedBuffer)
        rig.driver.write(MMIORegister.interruptAcknowledge, MMIOInterrupt.usedBuffer)
        #expect(rig.driver.read(MMIORegister.interruptStatus) == 0)
    }

    @Test("indirect tables behind a direct prefix are followed (§2.7.5.3.2)")
    func indirect() throws {
        var rig = try EchoRig()
        _ = rig.start()
        try rig.memory.write([9, 8, 7], at: 0x8000)
        try rig.ring.addIndirectChain(
            [
                TestBuffer(address: 0x8000, length: 3, writable: false),
                TestBuffer(address: 0x9000, length: 3, writable: true),
            ], table: 0x20000)
        rig.driver.notify(0)
        #expect(try rig.memory.readBytes(at: 0x9000, count: 3) == [7, 8, 9])
        #expect(try rig.ring.usedElement(0).length == 3)
    }

    @Test("no buffers are consumed before DRIVER_OK (§2.1.2)")
    func notBeforeDriverOK() throws {
        var rig = try EchoRig()
        rig.driver.negotiate(features: standardFeatures)
        rig.driver.setUpQueue(0, rig.ring.configuration)
        try rig.ring.addChain([TestBuffer(address: 0x9000, length: 3, writable: true)])
        rig.driver.notify(0)
        #expect(try rig.ring.usedIndex() == 0)
        rig.driver.addStatus(.driverOK)
        rig.driver.notify(0)
        #expect(try rig.ring.usedIndex() == 1)
    }

    @Test("after the driver sets FAILED, and for queues that do not exist, notifications do nothing (§2.1)")
    func failedAndUnknownQueue() throws {
        var rig = try EchoRig()
        _ = rig.start()
        rig.driver.notify(7)
        rig.driver.notify(UInt32.max)
        rig.driver.addStatus(.failed)
        try rig.ring.addChain([TestBuffer(address: 0x9000, length: 3, writable: true)])
        rig.driver.notify(0)
        #expect(try rig.ring.usedIndex() == 0)
        #expect(rig.interrupt.count == 0)
        #expect(!rig.transport.status.contains(.needsReset))
    }

    @Test("a driver that refills without end cannot hold the device: service stops at its budget")
    func serviceBudget() throws {
        let memory = try HeapGuestMemory(size: 1 << 20)
        let device = RefillingDevice(ring: TestRing(memory: memory, size: 16, base: 0x1000))
        let transport = VirtioMMIOTransport(device: device, memory: memory, interrupt: CountingInterrupt())
        let driver = TestDriver(transport: transport)
        #expect(driver.initialize(features: standardFeatures, queues: [device.ring.configuration]).contains(.driverOK))
        try device.ring.addChain([TestBuffer(address: 0x9000, length: 1, writable: true)])
        let budget = UInt16(VirtioMMIOTransport.serviceRounds * 16)
        #expect(transport.processQueue(0))
        #expect(try device.ring.usedIndex() == budget)
        #expect(transport.processQueue(0))
        #expect(try device.ring.usedIndex() == 2 * budget)
        #expect(!transport.status.contains(.needsReset))
    }

    @Test("VIRTQ_AVAIL_F_NO_INTERRUPT suppresses the interrupt without EVENT_IDX (§2.7.7)")
    func noInterruptFlag() throws {
        var rig = try EchoRig()
        _ = rig.start(features: VirtioFeature.version1)
        try rig.ring.setAvailableFlags(1)
        try rig.ring.addChain([TestBuffer(address: 0x9000, length: 3, writable: true)])
        rig.driver.notify(0)
        #expect(try rig.ring.usedIndex() == 1)
        #expect(rig.interrupt.count == 0)
        try rig.ring.setAvailableFlags(0)
        try rig.ring.addChain([TestBuffer(address: 0x9000, length: 3, writable: true)])
        rig.driver.notify(0)
        #expect(rig.interrupt.count == 1)
    }

    @Test("EVENT_IDX: used_event decides the interrupt (§2.7.7), avail_event follows the device (§2.7.10)")
    func eventIndex() throws {
        var rig = try EchoRig()
        _ = rig.start()
        // Interrupt only once used idx passes 2 (used_event = 1 means after the 2nd).
        try rig.ring.setUsedEvent(1)
        try rig.ring.addChain([TestBuffer(address: 0x9000, length: 3, writable: true)])
        rig.driver.notify(0)
        #expect(rig.interrupt.count == 0)
        #expect(try rig.ring.availableEvent() == 1)
        try rig.ring.addChain([TestBuffer(address: 0x9000, length: 3, writable: true)])
        rig.driver.notify(0)
        #expect(rig.interrupt.count == 1)
        #expect(try rig.ring.availableEvent() == 2)
        try rig.ring.addChain([TestBuffer(address: 0x9000, length: 3, writable: true)])
        rig.driver.notify(0)
        #expect(rig.interrupt.count == 1) // used_event still 1: already passed
    }

    @Test("the used index wraps at 65536 with the ring (§2.7.8)")
    func wraparound() throws {
        var rig = try EchoRig(size: 2)
        _ = rig.start(features: VirtioFeature.version1)
        for round in 0..<70_000 {
            try rig.ring.addChain([TestBuffer(address: 0x9000, length: 1, writable: true)])
            if round % 2 == 1 { rig.driver.notify(0) }
        }
        #expect(try rig.ring.usedIndex() == UInt16(truncatingIfNeeded: 70_000))
        #expect(!rig.transport.status.contains(.needsReset))
    }
}
