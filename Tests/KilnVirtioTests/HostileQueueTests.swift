import KilnMemory
import Testing

@testable import KilnVirtio

/// Guest memory as the driver left it, to prove a failing device wrote nothing.
func snapshot(_ memory: HeapGuestMemory) throws -> [UInt8] {
    try memory.readBytes(at: 0, count: Int(memory.guestEnd))
}

/// Broken chains a hostile driver can offer on a live queue. Each must put
/// the device in DEVICE_NEEDS_RESET with the named reason, write nothing to
/// guest memory, and leave every other device alone.
enum HostileChain: String, CaseIterable, CustomTestStringConvertible {
    case descriptorLoop, longCycle, bufferOutsideMemory, lengthOverflowsAddressSpace, bufferSpansEnd
    case nextOutOfRange, headOutOfRange, availableIndexJump, readableAfterWritable
    case indirectInsideIndirect, indirectWithNext, indirectTableEmpty, indirectTableRagged
    case indirectTableTooLarge, indirectTableOutsideMemory, indirectLoop

    var testDescription: String { rawValue }

    /// Lays the broken chain out in `ring`.
    func offer(_ ring: inout TestRing) throws {
        let table = ring.descriptorTable
        switch self {
        case .descriptorLoop:
            try ring.writeDescriptor(table: table, index: 0, address: 0x9000, length: 4, flags: 1, next: 0)
            try ring.publish(head: 0)
        case .longCycle:
            for index in 0..<ring.size {
                try ring.writeDescriptor(
                    table: table, index: index, address: 0x9000, length: 4, flags: 1,
                    next: (index + 1) % ring.size)
            }
            try ring.publish(head: 3)
        case .bufferOutsideMemory:
            try ring.addChain([TestBuffer(address: 1 << 20, length: 1, writable: true)])
        case .lengthOverflowsAddressSpace:
            try ring.addChain([TestBuffer(address: UInt64.max - 2, length: 16, writable: true)])
        case .bufferSpansEnd:
            try ring.addChain([TestBuffer(address: (1 << 20) - 8, length: 16, writable: false)])
        case .nextOutOfRange:
            try ring.writeDescriptor(table: table, index: 0, address: 0x9000, length: 4, flags: 1, next: ring.size)
            try ring.publish(head: 0)
        case .headOutOfRange:
            try ring.publish(head: ring.size)
        case .availableIndexJump:
            try ring.setAvailableIndex(ring.size + 1)
        case .readableAfterWritable:
            try ring.addChain([
                TestBuffer(address: 0x9000, length: 4, writable: true),
                TestBuffer(address: 0x9100, length: 4, writable: false),
            ])
        case .indirectInsideIndirect:
            try ring.writeDescriptor(table: 0x20000, index: 0, address: 0x21000, length: 16, flags: 4, next: 0)
            try ring.writeDescriptor(table: 0x21000, index: 0, address: 0x9000, length: 4, flags: 2, next: 0)
            try ring.writeDescriptor(table: table, index: 0, address: 0x20000, length: 16, flags: 4, next: 0)
            try ring.publish(head: 0)
        case .indirectWithNext:
            try ring.writeDescriptor(table: 0x20000, index: 0, address: 0x9000, length: 4, flags: 2, next: 0)
            try ring.writeDescriptor(table: table, index: 0, address: 0x20000, length: 16, flags: 4 | 1, next: 1)
            try ring.writeDescriptor(table: table, index: 1, address: 0x9000, length: 4, flags: 2, next: 0)
            try ring.publish(head: 0)
        case .indirectTableEmpty:
            try ring.writeDescriptor(table: table, index: 0, address: 0x20000, length: 0, flags: 4, next: 0)
            try ring.publish(head: 0)
        case .indirectTableRagged:
            try ring.writeDescriptor(table: table, index: 0, address: 0x20000, length: 24, flags: 4, next: 0)
            try ring.publish(head: 0)
        case .indirectTableTooLarge:
            try ring.writeDescriptor(table: table, index: 0, address: 0x20000, length: 16 * 1025, flags: 4, next: 0)
            try ring.publish(head: 0)
        case .indirectTableOutsideMemory:
            try ring.writeDescriptor(table: table, index: 0, address: (1 << 20) - 16, length: 32, flags: 4, next: 0)
            try ring.publish(head: 0)
        case .indirectLoop:
            try ring.writeDescriptor(table: 0x20000, index: 0, address: 0x9000, length: 4, flags: 1, next: 1)
            try ring.writeDescriptor(table: 0x20000, index: 1, address: 0x9000, length: 4, flags: 1, next: 0)
            try ring.writeDescriptor(table: table, index: 0, address: 0x20000, length: 32, flags: 4, next: 0)
            try ring.publish(head: 0)
        }
    }

    func matches(_ reason: VirtqueueError.Reason) -> Bool {
        switch (self, reason) {
        case (.descriptorLoop, .chainTooLong), (.longCycle, .chainTooLong), (.indirectLoop, .chainTooLong),
            (.bufferOutsideMemory, .memory), (.lengthOverflowsAddressSpace, .memory), (.bufferSpansEnd, .memory),
            (.indirectTableOutsideMemory, .memory),
            (.nextOutOfRange, .descriptorIndexOutOfRange), (.headOutOfRange, .descriptorIndexOutOfRange),
            (.availableIndexJump, .availableIndexJump), (.readableAfterWritable, .readableAfterWritable),
            (.indirectInsideIndirect, .indirectNotAllowed), (.indirectWithNext, .indirectNotAllowed),
            (.indirectTableEmpty, .badIndirectTable), (.indirectTableRagged, .badIndirectTable),
            (.indirectTableTooLarge, .badIndirectTable):
            return true
        default:
            return false
        }
    }
}

/// Bad layouts the driver can make live with QueueReady.
enum HostileLayout: String, CaseIterable, CustomTestStringConvertible {
    case sizeNotPowerOfTwo, sizeZero, sizeAboveMaximum, tableMisaligned, usedRingMisaligned
    case availableRingOutsideMemory, usedRingWrapsAddressSpace, usedRingOnAvailableRing, availableRingInTable

    var testDescription: String { rawValue }

    func configuration(_ good: QueueConfiguration) -> QueueConfiguration {
        var bad = good
        switch self {
        case .sizeNotPowerOfTwo: bad.size = 12
        case .sizeZero: bad.size = 0
        case .sizeAboveMaximum: bad.size = 32
        case .tableMisaligned: bad.descriptorTable += 8
        case .usedRingMisaligned: bad.usedRing += 2
        case .availableRingOutsideMemory: bad.availableRing = (1 << 20) - 16
        case .usedRingWrapsAddressSpace: bad.usedRing = UInt64.max - 3
        case .usedRingOnAvailableRing: bad.usedRing = bad.availableRing
        case .availableRingInTable: bad.availableRing = bad.descriptorTable + 16 * UInt64(bad.size) - 2
        }
        return bad
    }
}

@Suite("hostile drivers")
struct HostileQueueTests {
    @Test(
        "a broken chain: DEVICE_NEEDS_RESET, nothing written, neighbours unaffected", arguments: HostileChain.allCases)
    func brokenChain(_ hostile: HostileChain) throws {
        var rig = try EchoRig()
        let neighbour = try EchoRig()
        #expect(rig.start().contains(.driverOK))
        #expect(neighbour.start().contains(.driverOK))
        try hostile.offer(&rig.ring)
        let before = try snapshot(rig.memory)

        rig.driver.notify(0)

        let status = rig.driver.status
        #expect(status.contains(.needsReset))
        let reason = try #require(rig.transport.failure).reason
        #expect(hostile.matches(reason), "unexpected reason \(reason)")
        #expect(try snapshot(rig.memory) == before)
        // §2.1.2: a live device announces NEEDS_RESET with a config change interrupt.
        #expect(rig.driver.read(MMIORegister.interruptStatus) == MMIOInterrupt.configChange)
        #expect(rig.interrupt.count == 1)
        // The queue is served no more, even if notified again.
        rig.driver.notify(0)
        #expect(try snapshot(rig.memory) == before)

        // The other device still works.
        var neighbourRing = neighbour.ring
        try neighbour.memory.write([1, 2], at: 0x8000)
        try neighbourRing.addChain([
            TestBuffer(address: 0x8000, length: 2, writable: false),
            TestBuffer(address: 0x9000, length: 2, writable: true),
        ])
        neighbour.driver.notify(0)
        #expect(try neighbour.memory.readBytes(at: 0x9000, count: 2) == [2, 1])
        #expect(!neighbour.driver.status.contains(.needsReset))

        // A reset and a new initialization bring the device back.
        var fresh = TestRing(memory: rig.memory, size: 16, base: 0x40000)
        rig.ring = fresh
        #expect(rig.start() == [.acknowledge, .driver, .featuresOK, .driverOK])
        #expect(rig.transport.failure == nil)
        try fresh.addChain([TestBuffer(address: 0x9000, length: 1, writable: true)])
        rig.driver.notify(0)
        #expect(try fresh.usedIndex() == 1)
    }

    @Test("each failure names the queue and the problem")
    func descriptions() {
        let cases: [(VirtqueueError.Reason, String)] = [
            (.availableIndexJump(last: 3, now: 40), "available index jumped from 3 to 40"),
            (.descriptorIndexOutOfRange(16), "descriptor index 16 is outside the table"),
            (.chainTooLong(limit: 16), "longer than 16 (or a loop)"),
            (.readableAfterWritable, "device-readable descriptor after a device-writable one"),
            (.indirectNotAllowed, "indirect descriptor where it is not allowed"),
            (.badIndirectTable(length: 24), "indirect table of 24 bytes"),
            (.memory(GuestRange(address: 0x100000, size: 16)), "0x100000"),
            (.badLayout("size 12"), "bad queue layout: size 12"),
            (.malformedRequest("no status"), "malformed request: no status"),
        ]
        for (reason, text) in cases {
            let description = VirtqueueError(queue: 2, reason).description
            #expect(description.hasPrefix("virtqueue 2: ") && description.contains(text), "\(description)")
        }
    }

    @Test("indirect descriptors without VIRTIO_F_INDIRECT_DESC are refused (§2.7.5.3.1)")
    func indirectNotNegotiated() throws {
        var rig = try EchoRig()
        _ = rig.start(features: VirtioFeature.version1)
        try rig.ring.addIndirectChain([TestBuffer(address: 0x9000, length: 4, writable: true)], table: 0x20000)
        rig.driver.notify(0)
        #expect(rig.transport.failure?.reason == .indirectNotAllowed)
    }

    @Test("a bad queue layout made ready: DEVICE_NEEDS_RESET, queue stays not ready", arguments: HostileLayout.allCases)
    func badLayout(_ hostile: HostileLayout) throws {
        let rig = try EchoRig()
        #expect(rig.driver.negotiate(features: standardFeatures))
        rig.driver.setUpQueue(0, hostile.configuration(rig.ring.configuration))
        #expect(rig.driver.read(MMIORegister.queueReady) == 0)
        #expect(rig.driver.status.contains(.needsReset))
        #expect(rig.transport.failure != nil)
        rig.driver.addStatus(.driverOK)
        rig.driver.notify(0)
        #expect(rig.transport.queue(0) == nil)
    }

    @Test("a chain with no writable buffer gets no bytes written (§2.7.4)")
    func readOnlyChain() throws {
        var rig = try EchoRig()
        _ = rig.start()
        try rig.memory.write([1, 2, 3, 4], at: 0x9000)
        try rig.ring.addChain([TestBuffer(address: 0x9000, length: 4, writable: false)])
        rig.driver.notify(0)
        #expect(try rig.memory.readBytes(at: 0x9000, count: 4) == [1, 2, 3, 4])
        #expect(try rig.ring.usedElement(0).length == 0)
    }
}
