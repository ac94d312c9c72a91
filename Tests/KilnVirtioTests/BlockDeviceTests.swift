import KilnBytes
import KilnMemory
import KilnSystem
import Testing

@testable import KilnVirtio

#if canImport(Glibc)
    import Glibc
#endif

/// A 16-byte virtio_blk_req header (virtio 1.2 §5.2.6).
func blockHeader(type: UInt32, sector: UInt64) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.appendLittleEndian(type)
    bytes.appendLittleEndian(UInt32(0))
    bytes.appendLittleEndian(sector)
    return bytes
}

/// A disk whose sector n is filled with byte n (mod 256).
func patternedDisk(sectors: Int) -> [UInt8] {
    (0..<sectors).flatMap { [UInt8](repeating: UInt8(truncatingIfNeeded: $0), count: 512) }
}

typealias BlockRig = DeviceRig<BlockDevice>

func blockRig(sectors: Int = 64, readOnly: Bool = false) throws -> (BlockRig, MemoryBlockBackend) {
    let backend = MemoryBlockBackend(
        bytes: patternedDisk(sectors: sectors), readOnly: readOnly, identifier: "kiln-test-disk")
    let rig = try BlockRig { BlockDevice(memory: $0, backend: backend) }
    return (rig, backend)
}

extension DeviceRig where Device == BlockDevice {
    /// Sends one request with `data` readable (OUT) or `readLength` writable
    /// (IN) and returns the status byte and the data buffer's address.
    func request(type: UInt32, sector: UInt64, data: [UInt8] = [], readLength: Int = 0) throws -> (
        status: UInt8, data: UInt64
    ) {
        let header = try buffer(blockHeader(type: type, sector: sector))
        let status = try buffer([0xAA])
        var chain = [readable(header, 16)]
        var dataAddress: UInt64 = 0
        if !data.isEmpty {
            dataAddress = try buffer(data)
            chain.append(readable(dataAddress, data.count))
        }
        if readLength > 0 {
            dataAddress = try buffer(zeros: readLength)
            chain.append(writable(dataAddress, readLength))
        }
        chain.append(writable(status, 1))
        try submit(0, chain)
        return (try memory.read(UInt8.self, at: status), dataAddress)
    }
}

@Suite("virtio-blk")
struct BlockDeviceTests {
    @Test("config space: capacity, seg_max, blk_size (§5.2.4); RO offered for read-only disks")
    func config() throws {
        let (rig, _) = try blockRig(sectors: 64)
        #expect(rig.transport.read(offset: MMIORegister.config, size: 4) == 64)
        #expect(rig.transport.read(offset: MMIORegister.config + 4, size: 4) == 0)
        #expect(rig.transport.read(offset: MMIORegister.config + 12, size: 4) == 254)
        #expect(rig.transport.read(offset: MMIORegister.config + 20, size: 4) == 512)
        #expect(rig.driver.read(MMIORegister.deviceID) == 2)
        #expect(rig.driver.offeredFeatures() & BlockDevice.Feature.readOnly == 0)
        let (readOnly, _) = try blockRig(readOnly: true)
        #expect(readOnly.driver.offeredFeatures() & BlockDevice.Feature.readOnly != 0)
    }

    @Test("read, write, flush and get-id round trips (§5.2.6)")
    func roundTrips() throws {
        let (rig, backend) = try blockRig()
        let read = try rig.request(type: BlockRequest.Kind.read, sector: 3, readLength: 1024)
        #expect(read.status == 0)
        #expect(
            try rig.memory.readBytes(at: read.data, count: 1024) == patternedDisk(sectors: 5).suffix(1024).map { $0 })
        #expect(try rig.lastUsed(0).length == 1025)

        let payload = (0..<1536).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(try rig.request(type: BlockRequest.Kind.write, sector: 10, data: payload).status == 0)
        #expect(Array(backend.bytes[5120..<6656]) == payload)
        #expect(Array(backend.bytes[4608..<5120]) == [UInt8](repeating: 9, count: 512))

        #expect(try rig.request(type: BlockRequest.Kind.flush, sector: 0).status == 0)
        #expect(backend.flushCount == 1)

        let id = try rig.request(type: BlockRequest.Kind.getID, sector: 0, readLength: 20)
        #expect(id.status == 0)
        #expect(try rig.memory.readBytes(at: id.data, count: 20) == Array("kiln-test-disk".utf8) + [0, 0, 0, 0, 0, 0])
        #expect(rig.interrupt.count == 4)
        #expect(!rig.failed)
    }

    @Test("data split across descriptors any way the driver likes (§2.7.4)")
    func framing() throws {
        let (rig, _) = try blockRig()
        var header = blockHeader(type: BlockRequest.Kind.read, sector: 2)
        let first = try rig.buffer(Array(header.prefix(5)))
        header.removeFirst(5)
        let second = try rig.buffer(header)
        let data = try rig.buffer(zeros: 512)
        let dataAndStatus = try rig.buffer(zeros: 513)
        try rig.submit(
            0, [readable(first, 5), readable(second, 11), writable(data, 512), writable(dataAndStatus, 513)])
        #expect(try rig.memory.readBytes(at: data, count: 512) == [UInt8](repeating: 2, count: 512))
        #expect(try rig.memory.readBytes(at: dataAndStatus, count: 513) == [UInt8](repeating: 3, count: 512) + [0])
    }

    @Test("requests the device refuses get a status and change nothing")
    func refused() throws {
        let (rig, backend) = try blockRig(sectors: 64)
        let disk = backend.bytes
        // Past the end, straddling the end, and a sector number that overflows.
        #expect(try rig.request(type: BlockRequest.Kind.read, sector: 64, readLength: 512).status == 1)
        #expect(
            try rig.request(type: BlockRequest.Kind.write, sector: 63, data: [UInt8](repeating: 1, count: 1024)).status
                == 1)
        #expect(try rig.request(type: BlockRequest.Kind.read, sector: UInt64.max, readLength: 512).status == 1)
        // Not whole sectors.
        #expect(try rig.request(type: BlockRequest.Kind.write, sector: 0, data: [1, 2, 3]).status == 1)
        // IN with device-readable data: the device must not write into it.
        let readOnlyData = try rig.buffer([UInt8](repeating: 0x5A, count: 512))
        let header = try rig.buffer(blockHeader(type: BlockRequest.Kind.read, sector: 0))
        let status = try rig.buffer([0xAA])
        try rig.submit(0, [readable(header, 16), readable(readOnlyData, 512), writable(status, 1)])
        #expect(try rig.memory.read(UInt8.self, at: status) == 1)
        #expect(try rig.memory.readBytes(at: readOnlyData, count: 512) == [UInt8](repeating: 0x5A, count: 512))
        // Discard, write zeroes, unknown.
        for type: UInt32 in [11, 13, 0xFFFF_FFFF] {
            #expect(try rig.request(type: type, sector: 0).status == 2)
        }
        // GET_ID into fewer than 20 bytes.
        #expect(try rig.request(type: BlockRequest.Kind.getID, sector: 0, readLength: 8).status == 1)
        // A header shorter than 16 bytes.
        let short = try rig.buffer([0, 0, 0, 0])
        let shortStatus = try rig.buffer([0xAA])
        try rig.submit(0, [readable(short, 4), writable(shortStatus, 1)])
        #expect(try rig.memory.read(UInt8.self, at: shortStatus) == 1)

        #expect(backend.bytes == disk)
        #expect(rig.device.failedRequests == 10)
        #expect(!rig.failed)
    }

    @Test("a read-only disk refuses writes with IOERR and writes nothing (§5.2.6.2)")
    func readOnly() throws {
        let (rig, backend) = try blockRig(readOnly: true)
        let disk = backend.bytes
        #expect(
            try rig.request(type: BlockRequest.Kind.write, sector: 0, data: [UInt8](repeating: 1, count: 512)).status
                == 1)
        #expect(backend.bytes == disk)
        #expect(try rig.request(type: BlockRequest.Kind.read, sector: 1, readLength: 512).status == 0)
    }

    @Test("a request with no writable status byte breaks the queue: DEVICE_NEEDS_RESET")
    func noStatusByte() throws {
        let (rig, backend) = try blockRig()
        let disk = backend.bytes
        let header = try rig.buffer(blockHeader(type: BlockRequest.Kind.write, sector: 0))
        let data = try rig.buffer([UInt8](repeating: 1, count: 512))
        try rig.submit(0, [readable(header, 16), readable(data, 512)])
        #expect(rig.failed)
        #expect(backend.bytes == disk)
        #expect(try rig.rings[0].usedIndex() == 0)
    }
}
