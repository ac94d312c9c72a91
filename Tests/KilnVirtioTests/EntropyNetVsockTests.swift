import KilnMemory
import KilnSystem
import KilnTestSupport
import Testing

@testable import KilnVirtio

#if canImport(Glibc)
    import Glibc
#endif

/// Deterministic entropy, or a failing source.
final class CountingEntropy: EntropySource {
    var next: UInt8 = 1
    var fails = false
    func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
        if fails { throw SystemError("read", errno: EIO) }
        for index in buffer.indices {
            buffer[index] = next
            next &+= 1
        }
    }
}

@Suite("virtio-rng")
struct EntropyDeviceTests {
    @Test("fills every writable byte across descriptors (§5.4.6)")
    func fill() throws {
        let source = CountingEntropy()
        let rig = try DeviceRig { EntropyDevice(memory: $0, source: source) }
        let first = try rig.buffer(zeros: 3)
        let second = try rig.buffer(zeros: 5)
        try rig.submit(0, [writable(first, 3), writable(second, 5)])
        #expect(try rig.memory.readBytes(at: first, count: 3) == [1, 2, 3])
        #expect(try rig.memory.readBytes(at: second, count: 5) == [4, 5, 6, 7, 8])
        #expect(try rig.lastUsed(0).length == 8)
        #expect(rig.interrupt.count == 1)
        #expect(rig.driver.read(MMIORegister.deviceID) == 4)
    }

    @Test("readable buffers are left alone; a failing source returns no bytes")
    func hostileAndFailing() throws {
        let source = CountingEntropy()
        let rig = try DeviceRig { EntropyDevice(memory: $0, source: source) }
        let readOnly = try rig.buffer([9, 9, 9, 9])
        try rig.submit(0, [readable(readOnly, 4)])
        #expect(try rig.memory.readBytes(at: readOnly, count: 4) == [9, 9, 9, 9])
        #expect(try rig.lastUsed(0).length == 0)
        source.fails = true
        let target = try rig.buffer(zeros: 4)
        try rig.submit(0, [writable(target, 4)])
        #expect(try rig.lastUsed(0).length == 0)
        #expect(rig.device.sourceFailures == 1)
        #expect(!rig.failed)
    }

    @Test("a large request is capped at 64 KiB (§5.4.6.2 allows less than the buffer)")
    func cap() throws {
        let rig = try DeviceRig(memorySize: 1 << 21) { EntropyDevice(memory: $0, source: CountingEntropy()) }
        let target = try rig.buffer(zeros: 100_000)
        try rig.submit(0, [writable(target, 100_000)])
        #expect(try rig.lastUsed(0).length == 65536)
    }
}

typealias NetRig = DeviceRig<NetDevice>

extension DeviceRig where Device == NetDevice {
    func transmit(_ frame: [UInt8], header: NetHeader = NetHeader()) throws {
        let headerAddress = try buffer(header.bytes)
        let frameAddress = try buffer(frame)
        try submit(
            NetDevice.Queue.transmit, [readable(headerAddress, NetHeader.size), readable(frameAddress, frame.count)])
    }

    func offerReceiveBuffer(_ length: Int) throws -> UInt64 {
        let address = try buffer(zeros: length)
        try submit(NetDevice.Queue.receive, [writable(address, length)])
        return address
    }
}

@Suite("virtio-net")
struct NetDeviceTests {
    let mac: [UInt8] = [0x02, 0x4b, 0x49, 0x4c, 0x4e, 0x01]

    @Test("config: MAC and link up (§5.1.4)")
    func config() throws {
        let rig = try NetRig { NetDevice(memory: $0, backend: LoopbackNetBackend(), mac: mac) }
        let low = rig.transport.read(offset: MMIORegister.config, size: 4)
        #expect(low == 0x4c49_4b02)
        #expect(rig.transport.read(offset: MMIORegister.config + 6, size: 2) == 1)
        #expect(rig.driver.offeredFeatures() & (NetDevice.Feature.mac | NetDevice.Feature.status) != 0)
    }

    @Test("a sent frame loops back into a receive buffer with num_buffers 1 (§5.1.6)")
    func loop() throws {
        let backend = LoopbackNetBackend()
        let rig = try NetRig { NetDevice(memory: $0, backend: backend, mac: mac) }
        let receive = try rig.offerReceiveBuffer(1526)
        let frame = (0..<60).map { UInt8($0) }
        try rig.transmit(frame)
        #expect(backend.pending.isEmpty)
        let header = try #require(NetHeader(bytes: try rig.memory.readBytes(at: receive, count: NetHeader.size)))
        #expect(header == NetHeader(bufferCount: 1))
        #expect(try rig.memory.readBytes(at: receive + 12, count: 60) == frame)
        #expect(try rig.lastUsed(NetDevice.Queue.receive).length == 72)
        #expect(try rig.rings[NetDevice.Queue.transmit].usedIndex() == 1)
    }

    @Test("a frame waits for a receive buffer and goes out when the driver adds one")
    func waitsForBuffer() throws {
        let backend = LoopbackNetBackend()
        let rig = try NetRig { NetDevice(memory: $0, backend: backend, mac: mac) }
        try rig.transmit([1, 2, 3])
        #expect(backend.pending.count == 1)
        let receive = try rig.offerReceiveBuffer(64)
        #expect(backend.pending.isEmpty)
        #expect(try rig.memory.readBytes(at: receive + 12, count: 3) == [1, 2, 3])
    }

    @Test("offload headers not negotiated and too-small receive buffers drop the frame")
    func drops() throws {
        let backend = LoopbackNetBackend()
        let rig = try NetRig { NetDevice(memory: $0, backend: backend, mac: mac) }
        try rig.transmit([1, 2, 3], header: NetHeader(flags: NetHeader.Flag.needsChecksum))
        try rig.transmit([1, 2, 3], header: NetHeader(gsoType: 1))
        #expect(backend.pending.isEmpty)
        #expect(rig.device.droppedTransmits == 2)
        // A header-only chain (shorter than 12 bytes) is dropped too.
        let short = try rig.buffer([0, 0, 0])
        try rig.submit(NetDevice.Queue.transmit, [readable(short, 3)])
        #expect(rig.device.droppedTransmits == 3)

        try rig.transmit([UInt8](repeating: 7, count: 100))
        let small = try rig.offerReceiveBuffer(50)
        #expect(try rig.memory.readBytes(at: small, count: 50) == [UInt8](repeating: 0, count: 50))
        #expect(try rig.lastUsed(NetDevice.Queue.receive).length == 0)
        #expect(rig.device.droppedReceives == 1)
        #expect(!rig.failed)
    }

    @Test("net header encodes and decodes every field")
    func header() {
        let header = NetHeader(
            flags: 1, gsoType: 4, headerLength: 0x1234, gsoSize: 0x5678, checksumStart: 9,
            checksumOffset: 10, bufferCount: 0xABCD)
        #expect(header.bytes.count == 12)
        #expect(NetHeader(bytes: header.bytes) == header)
        #expect(NetHeader(bytes: [0, 1]) == nil)
    }
}

@Suite("virtio-vsock packets")
struct VsockPacketTests {
    let rules = VsockPacketRules(guestCID: 3)

    func packet(_ change: (inout VsockPacketHeader) -> Void = { _ in }) -> [UInt8] {
        var header = VsockPacketHeader(
            sourceCID: 3, destinationCID: 2, sourcePort: 1024, destinationPort: 52,
            length: 0, type: .stream, operation: .request, bufferAllocation: 65536)
        change(&header)
        return header.bytes
    }

    @Test("a valid request and RW packet parse (§5.10.6)")
    func valid() throws {
        let header = try rules.validate(packet(), payloadBytes: 0)
        #expect(header.destinationPort == 52 && header.bufferAllocation == 65536)
        #expect(header.bytes.count == VsockPacketHeader.size)
        _ = try rules.validate(
            packet {
                $0.operation = 5; $0.length = 100
            }, payloadBytes: 100)
        _ = try rules.validate(
            packet {
                $0.operation = 4; $0.flags = 3
            }, payloadBytes: 0)
        let seq = VsockPacketRules(guestCID: 3, seqpacket: true)
        _ = try seq.validate(
            packet {
                $0.type = 2; $0.operation = 5; $0.flags = 1; $0.length = 1
            }, payloadBytes: 1)
    }

    @Test("every rule refuses its violation")
    func refused() {
        let cases: [([UInt8], UInt64, VsockPacketError)] = [
            (Array(packet().prefix(43)), 0, .truncated(43)),
            (packet { $0.sourceCID = 4 }, 0, .sourceNotGuest(4)),
            (packet { $0.sourceCID = 3 | 1 << 32 }, 0, .sourceNotGuest(3 | 1 << 32)),
            (packet { $0.destinationCID = 1 }, 0, .destinationNotHost(1)),
            (packet { $0.type = 9 }, 0, .unknownType(9)),
            (packet { $0.type = 2 }, 0, .seqpacketNotNegotiated),
            (packet { $0.operation = 0 }, 0, .unknownOperation(0)),
            (packet { $0.operation = 8 }, 0, .unknownOperation(8)),
            (
                packet {
                    $0.operation = 5; $0.length = 70000
                }, 70000, .payloadTooLarge(70000)
            ),
            (packet { $0.length = 4 }, 4, .payloadOnControlPacket(operation: 1, length: 4)),
            (
                packet {
                    $0.operation = 5; $0.length = 4
                }, 3, .payloadLengthMismatch(header: 4, buffers: 3)
            ),
            (
                packet {
                    $0.operation = 5; $0.length = 1; $0.flags = 1
                }, 1, .badFlags(operation: 5, flags: 1)
            ),
            (
                packet {
                    $0.operation = 4; $0.flags = 4
                }, 0, .badFlags(operation: 4, flags: 4)
            ),
        ]
        for (bytes, payload, expected) in cases {
            #expect(throws: expected) { try rules.validate(bytes, payloadBytes: payload) }
        }
    }
}
