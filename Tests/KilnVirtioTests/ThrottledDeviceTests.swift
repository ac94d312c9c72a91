import KilnMemory
import Testing

@testable import KilnVirtio

/// Time the test moves by hand.
final class ManualClock {
    var now: UInt64 = 7_000_000_000
    func read() -> UInt64 { now }
}

private let millisecond: UInt64 = 1_000_000

private func throttle(
    _ clock: ManualClock, bytes: IOTokenBucket.Settings? = nil,
    ops: IOTokenBucket.Settings? = nil
) -> IOThrottle {
    IOThrottle(limiter: IORateLimiter(bandwidth: bytes, ops: ops, now: clock.now), clock: clock.read)
}

/// A block device over a 64-sector patterned memory disk, limited.
private func limitedBlockRig(
    _ clock: ManualClock, bytes: IOTokenBucket.Settings? = nil,
    ops: IOTokenBucket.Settings? = nil
) throws -> (BlockRig, MemoryBlockBackend) {
    let backend = MemoryBlockBackend(bytes: patternedDisk(sectors: 64))
    let limits = throttle(clock, bytes: bytes, ops: ops)
    return (try BlockRig { BlockDevice(memory: $0, backend: backend, throttle: limits) }, backend)
}

/// Two ops per 100 ms: one every 50 ms once the bucket is empty.
private let twoOpsPer100ms = IOTokenBucket.Settings(size: 2, refillTimeMilliseconds: 100)

@Suite("rate-limited devices")
struct ThrottledDeviceTests {
    @Test("block: a throttled request waits in the ring and is served once tokens exist")
    func block() throws {
        let clock = ManualClock()
        let (rig, _) = try limitedBlockRig(clock, ops: twoOpsPer100ms)
        #expect(try rig.request(type: BlockRequest.Kind.read, sector: 1, readLength: 512).status == 0)
        #expect(try rig.request(type: BlockRequest.Kind.flush, sector: 0).status == 0)
        let waiting = try rig.request(type: BlockRequest.Kind.read, sector: 2, readLength: 512)
        #expect(waiting.status == 0xAA)
        #expect(try rig.rings[0].usedIndex() == 2)
        #expect(rig.device.throttledUntil(queue: 0) == clock.now + 50 * millisecond)
        #expect(rig.device.throttle.throttledEvents == 1)
        #expect(!rig.failed)

        // Early: still refused, the chain still not used.
        clock.now += 50 * millisecond - 1
        rig.driver.notify(0)
        #expect(try rig.rings[0].usedIndex() == 2)
        #expect(rig.device.throttle.throttledEvents == 2)

        clock.now += 1
        rig.driver.notify(0)
        #expect(try rig.rings[0].usedIndex() == 3)
        #expect(try rig.memory.readBytes(at: waiting.data, count: 512) == [UInt8](repeating: 2, count: 512))
        #expect(rig.device.throttledUntil(queue: 0) == nil)
    }

    @Test("block: one notification for many chains serves what it may and counts one throttled event")
    func blockBatch() throws {
        let clock = ManualClock()
        let (rig, _) = try limitedBlockRig(clock, ops: twoOpsPer100ms)
        for _ in 0..<5 {
            try rig.rings[0].addChain([
                readable(try rig.buffer(blockHeader(type: BlockRequest.Kind.flush, sector: 0)), 16),
                writable(try rig.buffer([0xAA]), 1),
            ])
        }
        rig.driver.notify(0)
        #expect(try rig.rings[0].usedIndex() == 2)
        #expect(rig.device.throttle.throttledEvents == 1)
        #expect(rig.interrupt.count == 1)
        clock.now += 100 * millisecond
        rig.transport.processQueue(0)
        #expect(try rig.rings[0].usedIndex() == 4)
        #expect(rig.device.throttle.throttledEvents == 2)
    }

    @Test("block: bandwidth counts transfer bytes only, so a flush passes an empty byte bucket")
    func blockBandwidth() throws {
        let clock = ManualClock()
        // 1024 bytes a second.
        let bytes = IOTokenBucket.Settings(size: 1024, refillTimeMilliseconds: 1000)
        let (rig, backend) = try limitedBlockRig(clock, bytes: bytes)
        #expect(try rig.request(type: BlockRequest.Kind.read, sector: 0, readLength: 1024).status == 0)
        #expect(
            try rig.request(type: BlockRequest.Kind.write, sector: 5, data: [UInt8](repeating: 7, count: 512)).status
                == 0xAA)
        #expect(backend.writeCalls == 0)
        // The write waits at the head of the ring: the flush behind it waits too.
        #expect(try rig.request(type: BlockRequest.Kind.flush, sector: 0).status == 0xAA)
        #expect(rig.device.throttledUntil(queue: 0) == clock.now + 500 * millisecond)
        clock.now += 500 * millisecond
        rig.driver.notify(0)
        #expect(try rig.rings[0].usedIndex() == 3)
        #expect(backend.writeCalls == 1)
        #expect(backend.flushCount == 1)
    }

    @Test("block: a chain rewritten by the driver while it waited is walked and checked again")
    func blockHostileRewrite() throws {
        let clock = ManualClock()
        let ops = IOTokenBucket.Settings(size: 1, refillTimeMilliseconds: 100)
        let (rig, _) = try limitedBlockRig(clock, ops: ops)
        #expect(try rig.request(type: BlockRequest.Kind.flush, sector: 0).status == 0)
        let status = try rig.buffer([0xAA])
        let head = try rig.submit(
            0,
            [
                readable(try rig.buffer(blockHeader(type: BlockRequest.Kind.flush, sector: 0)), 16),
                writable(status, 1),
            ])
        #expect(try rig.memory.read(UInt8.self, at: status) == 0xAA)
        // The waiting chain's head descriptor now points outside guest memory.
        try rig.rings[0].writeDescriptor(
            table: rig.rings[0].descriptorTable, index: head, address: 1 << 40,
            length: 16, flags: 1, next: head + 1)
        // Notified before the deadline the device does not look at the ring.
        rig.driver.notify(0)
        #expect(!rig.failed)
        #expect(rig.device.throttle.throttledEvents == 2)
        clock.now += 100 * millisecond
        rig.driver.notify(0)
        #expect(rig.failed)
        #expect(try rig.rings[0].usedIndex() == 1)
    }

    @Test("block: PATCH to no limit lets the waiting request through at once; reset forgets the wait")
    func blockUpdate() throws {
        let clock = ManualClock()
        let ops = IOTokenBucket.Settings(size: 1, refillTimeMilliseconds: 1000)
        let (rig, _) = try limitedBlockRig(clock, ops: ops)
        #expect(try rig.request(type: BlockRequest.Kind.flush, sector: 0).status == 0)
        #expect(try rig.request(type: BlockRequest.Kind.flush, sector: 0).status == 0xAA)
        rig.device.updateRateLimiters(.init(ops: .replace(.init(size: 0, refillTimeMilliseconds: 1000))))
        #expect(rig.device.throttle.limiter.isUnlimited)
        #expect(rig.device.throttledUntil(queue: 0) == nil)
        rig.driver.notify(0)
        #expect(try rig.rings[0].usedIndex() == 2)

        rig.device.updateRateLimiters(.init(ops: .replace(ops)))
        #expect(try rig.request(type: BlockRequest.Kind.flush, sector: 0).status == 0)
        #expect(try rig.request(type: BlockRequest.Kind.flush, sector: 0).status == 0xAA)
        #expect(rig.device.throttledUntil(queue: 0) != nil)
        rig.driver.write(MMIORegister.status, 0)
        #expect(rig.device.throttledUntil(queue: 0) == nil)
    }

    @Test("net tx: a throttled frame stays in the ring until its tokens exist")
    func netTransmit() throws {
        let clock = ManualClock()
        let backend = LoopbackNetBackend()
        let mac: [UInt8] = [2, 0, 0, 0, 0, 1]
        let rig = try NetRig {
            NetDevice(memory: $0, backend: backend, mac: mac, transmitThrottle: throttle(clock, ops: twoOpsPer100ms))
        }
        for byte in UInt8(1)...3 { try rig.transmit([byte]) }
        #expect(backend.pending == [[1], [2]])
        #expect(rig.device.throttledUntil(queue: NetDevice.Queue.transmit) == clock.now + 50 * millisecond)
        #expect(rig.device.throttledUntil(queue: NetDevice.Queue.receive) == nil)
        #expect(rig.device.transmitThrottle.throttledEvents == 1)
        clock.now += 50 * millisecond
        rig.driver.notify(UInt32(NetDevice.Queue.transmit))
        #expect(backend.pending == [[1], [2], [3]])
        #expect(try rig.rings[NetDevice.Queue.transmit].usedIndex() == 3)
    }

    @Test("net rx: a throttled frame waits in the backend and its buffer in the ring")
    func netReceive() throws {
        let clock = ManualClock()
        let backend = LoopbackNetBackend()
        let mac: [UInt8] = [2, 0, 0, 0, 0, 1]
        // 100 bytes a second: one 72-byte delivery (header and a 60-byte frame), then a wait.
        let bytes = IOTokenBucket.Settings(size: 100, refillTimeMilliseconds: 1000)
        let rig = try NetRig {
            NetDevice(memory: $0, backend: backend, mac: mac, receiveThrottle: throttle(clock, bytes: bytes))
        }
        let first = try rig.offerReceiveBuffer(128)
        let second = try rig.offerReceiveBuffer(128)
        try rig.transmit([UInt8](repeating: 1, count: 60))
        try rig.transmit([UInt8](repeating: 2, count: 60))
        #expect(try rig.memory.readBytes(at: first + 12, count: 60) == [UInt8](repeating: 1, count: 60))
        #expect(backend.pending.count == 1)
        #expect(try rig.rings[NetDevice.Queue.receive].usedIndex() == 1)
        // 44 bytes missing at 10 ms each.
        #expect(rig.device.throttledUntil(queue: NetDevice.Queue.receive) == clock.now + 440 * millisecond)
        #expect(rig.device.receiveThrottle.throttledEvents == 1)
        // A transmit in the meantime passes rx by without counting; an rx
        // notification while held counts.
        try rig.transmit([UInt8](repeating: 3, count: 10))
        #expect(rig.device.receiveThrottle.throttledEvents == 1)
        rig.driver.notify(UInt32(NetDevice.Queue.receive))
        #expect(rig.device.receiveThrottle.throttledEvents == 2)
        // Transmit was not limited.
        #expect(try rig.rings[NetDevice.Queue.transmit].usedIndex() == 3)

        clock.now += 440 * millisecond
        rig.transport.processQueue(NetDevice.Queue.receive)
        #expect(backend.pending.count == 1)
        #expect(try rig.memory.readBytes(at: second + 12, count: 60) == [UInt8](repeating: 2, count: 60))
        #expect(rig.device.throttledUntil(queue: NetDevice.Queue.receive) == nil)
    }

    @Test("net: PATCH replaces rx and tx limiters separately")
    func netUpdate() throws {
        let rig = try NetRig { NetDevice(memory: $0, backend: LoopbackNetBackend(), mac: [2, 0, 0, 0, 0, 1]) }
        rig.device.updateRateLimiters(receive: .init(), transmit: .init(ops: .replace(twoOpsPer100ms)))
        #expect(rig.device.receiveThrottle.limiter.isUnlimited)
        #expect(rig.device.transmitThrottle.limiter.ops?.size == 2)
    }

    @Test("entropy: bytes are limited per request and served after the refill")
    func entropy() throws {
        let clock = ManualClock()
        let bytes = IOTokenBucket.Settings(size: 64, refillTimeMilliseconds: 1000)
        let rig = try DeviceRig {
            EntropyDevice(memory: $0, source: CountingEntropy(), throttle: throttle(clock, bytes: bytes))
        }
        let first = try rig.buffer(zeros: 64)
        let second = try rig.buffer(zeros: 32)
        try rig.submit(0, [writable(first, 64)])
        try rig.submit(0, [writable(second, 32)])
        #expect(try rig.rings[0].usedIndex() == 1)
        #expect(try rig.memory.readBytes(at: second, count: 32) == [UInt8](repeating: 0, count: 32))
        #expect(rig.device.throttledUntil(queue: 0) == clock.now + 500 * millisecond)
        clock.now += 500 * millisecond
        rig.driver.notify(0)
        #expect(try rig.rings[0].usedIndex() == 2)
        #expect(try rig.lastUsed(0).length == 32)
        #expect(try rig.memory.readBytes(at: second, count: 32) != [UInt8](repeating: 0, count: 32))
    }
}
