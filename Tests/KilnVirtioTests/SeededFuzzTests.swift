import KilnMemory
import KilnSystem
import KilnTestSupport
import Testing

@testable import KilnVirtio

/// The committed libFuzzer seeds (fuzz/corpus/<name>/).
func fuzzSeeds(_ name: String) throws -> [[UInt8]] { try FuzzCorpus.seeds(name) }

/// Mutations aimed at what the queue code reads: descriptors, ring indices
/// and heads, the control byte and the tail, with boundary values.
struct QueueImageMutator {
    var generator: SplitMix64

    static let words16: [UInt16] = [0, 1, 2, 15, 16, 17, 255, 256, 0x7FFF, 0x8000, 0xFFFF]
    static let words64: [UInt64] = [
        0, 1, 0x7FF0, 0x8000, 0xFFF0, 0x10000, 0x17FF0, 0x18000, UInt64.max, UInt64.max - 15,
    ]

    mutating func pick<T>(_ values: [T]) -> T { values[Int(generator.next() % UInt64(values.count))] }

    /// An offset in a hot area: descriptors, the available ring, or anywhere.
    mutating func hotOffset(in count: Int) -> Int {
        let choice: Int
        switch generator.next() % 4 {
        case 0: choice = 1 + Int(generator.next() % 1024) // first 64 descriptors
        case 1: choice = 1 + 0x1000 + Int(generator.next() % 64) // avail flags, idx, ring
        case 2: choice = 0
        default: choice = Int(generator.next() % UInt64(max(count, 1)))
        }
        return min(choice, max(count - 1, 0))
    }

    mutating func put<T: FixedWidthInteger>(_ value: T, into bytes: inout [UInt8], at offset: Int) {
        for index in 0..<MemoryLayout<T>.size where offset + index < bytes.count {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    mutating func mutate(_ seed: [UInt8]) -> [UInt8] {
        var bytes = seed
        if generator.next() % 8 == 0 {
            // Pure noise of a random length, mostly rejected early.
            return (0..<Int(generator.next() % 600)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        }
        for _ in 0..<(1 + generator.next() % 6) {
            guard !bytes.isEmpty else { break }
            let offset = hotOffset(in: bytes.count)
            switch generator.next() % 6 {
            case 0: bytes[offset] ^= UInt8(truncatingIfNeeded: 1 << (generator.next() % 8))
            case 1: put(pick(Self.words16), into: &bytes, at: offset)
            case 2: put(pick(Self.words64), into: &bytes, at: offset & ~15 | 1) // a descriptor's address
            // a descriptor's length
            case 3: put(UInt32(truncatingIfNeeded: generator.next() % 0x2_0000), into: &bytes, at: offset & ~15 | 9)
            case 4: bytes[offset] = UInt8(truncatingIfNeeded: generator.next())
            default: bytes.removeLast(Int(generator.next() % UInt64(bytes.count)))
            }
        }
        return bytes
    }
}

@Suite("seeded fuzzing")
struct SeededFuzzTests {
    static let rounds = 10_000

    @Test("the seeds are real requests the harness serves")
    func seedsServe() throws {
        for seed in try fuzzSeeds("virtqueue") {
            #expect(seed.withUnsafeBytes { VirtioFuzzing.virtqueue($0) } >= 1)
        }
        for seed in try fuzzSeeds("virtio-block") {
            #expect(seed.withUnsafeBytes { VirtioFuzzing.block($0) } == 1)
        }
    }

    /// Runs `harness` on `rounds` mutants of the named seeds; returns the
    /// chains served, so a test can tell it reached more than rejection.
    static func mutatedRun(_ corpus: String, seed: UInt64, _ harness: (UnsafeRawBufferPointer) -> Int) throws -> Int {
        let seeds = try fuzzSeeds(corpus)
        var mutator = QueueImageMutator(generator: SplitMix64(seed: seed))
        var served = 0
        for round in 0..<rounds {
            served += mutator.mutate(seeds[round % seeds.count]).withUnsafeBytes(harness)
        }
        return served
    }

    @Test("queue walker: 10,000 mutated queue images")
    func virtqueue() throws {
        #expect(try Self.mutatedRun("virtqueue", seed: 0x7669_7274) { VirtioFuzzing.virtqueue($0) } > Self.rounds / 10)
    }

    @Test("block device: 10,000 mutated requests")
    func block() throws {
        #expect(try Self.mutatedRun("virtio-block", seed: 0x626c_6b00) { VirtioFuzzing.block($0) } > Self.rounds / 10)
    }

    @Test("transport registers: 10,000 random access sequences keep the state machine's invariants")
    func registers() throws {
        var generator = SplitMix64(seed: 0x6d6d_696f)
        let offsets: [UInt64] = [
            0x000, 0x004, 0x010, 0x014, 0x020, 0x024, 0x030, 0x034, 0x038, 0x044, 0x050,
            0x060, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4, 0x0fc, 0x100, 0x104,
        ]
        var rig = try EchoRig()
        let ring = rig.ring.configuration
        let values: [UInt64] = [
            0, 1, 2, 3, 7, 11, 15, 16, 0x40, 0x80, 0xFF, UInt64(UInt32.max),
            ring.descriptorTable, ring.availableRing, ring.usedRing, 1 << 3,
        ]
        let known: DeviceStatus = [.acknowledge, .driver, .featuresOK, .driverOK, .needsReset, .failed]
        var broken: [String] = []
        var reachedFeaturesOK = 0
        var reachedDriverOK = 0
        for round in 0..<Self.rounds {
            // Each sequence starts from a reset device and a fresh ring with one chain.
            rig.transport.write(offset: MMIORegister.status, size: 4, value: 0)
            try rig.memory.fill(0, at: 0x1000, count: 0x1000)
            rig.ring = TestRing(memory: rig.memory, size: 16, base: 0x1000)
            try rig.ring.addChain([TestBuffer(address: 0x9000, length: 4, writable: true)])
            // Half the sequences start from a real negotiation (some from a
            // live queue), so the later states are reached too.
            if generator.next() % 2 == 0 {
                let features = [VirtioFeature.version1, standardFeatures | 1 << 3, 1 << 3, generator.next()][
                    Int(generator.next() % 4)]
                if rig.driver.negotiate(features: features), generator.next() % 2 == 0 {
                    rig.driver.setUpQueue(0, ring)
                    rig.driver.addStatus(.driverOK)
                }
            }
            for _ in 0..<(1 + generator.next() % 24) {
                let offset =
                    generator.next() % 8 == 0
                    ? generator.next() % 0x200 : offsets[Int(generator.next() % UInt64(offsets.count))]
                let size = [4, 4, 4, 1, 2, 8][Int(generator.next() % 6)]
                if generator.next() % 3 == 0 {
                    _ = rig.transport.read(offset: offset, size: size)
                } else {
                    let value =
                        generator.next() % 4 == 0
                        ? generator.next() : values[Int(generator.next() % UInt64(values.count))]
                    rig.transport.write(offset: offset, size: size, value: value)
                }
                let status = rig.transport.status
                let features = rig.transport.driverFeatures
                let featuresValid =
                    features & ~rig.transport.offeredFeatures == 0 && features & VirtioFeature.version1 != 0
                if !known.isSuperset(of: status)
                    || status.contains(.featuresOK)
                        && !(featuresValid && status.isSuperset(of: [.acknowledge, .driver]))
                    || status.contains(.driverOK) && !status.contains(.featuresOK)
                    || rig.transport.interruptStatus & ~3 != 0
                {
                    broken.append(
                        "round \(round): status \(status.rawValue), features 0x\(String(features, radix: 16))")
                }
            }
            if rig.transport.status.contains(.featuresOK) { reachedFeaturesOK += 1 }
            if rig.transport.status.contains(.driverOK) { reachedDriverOK += 1 }
        }
        #expect(broken.isEmpty, "\(broken.prefix(5))")
        #expect(
            reachedFeaturesOK > Self.rounds / 10 && reachedDriverOK > Self.rounds / 20,
            "\(reachedFeaturesOK) sequences ended with FEATURES_OK, \(reachedDriverOK) with DRIVER_OK")
    }

    @Test("block request planner: 10,000 random headers and shapes")
    func blockPlan() {
        var generator = SplitMix64(seed: 0x706c_616e)
        var accepted = 0
        for _ in 0..<Self.rounds {
            var header = (0..<16).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            header[0] = [0, 1, 4, 8, 11, header[0]][Int(generator.next() % 6)]
            header[1...3] = [0, 0, 0]
            // Sectors near the disk's end and near 2^64.
            if generator.next() % 2 == 0 {
                let sector = [0, 1, 62, 63, 64, 65, UInt64.max, UInt64.max - 1][Int(generator.next() % 8)]
                for index in 0..<8 { header[8 + index] = UInt8(truncatingIfNeeded: sector >> (8 * UInt64(index))) }
            }
            let shape = (0..<16).map { _ in UInt8(truncatingIfNeeded: generator.next() % 4 == 0 ? generator.next() : 0)
            }
            if VirtioFuzzing.blockPlan(header, shapeBytes: shape, readOnly: generator.next() % 2 == 0) { accepted += 1 }
        }
        // Both outcomes must be common, or the run proves nothing about the transfer checks.
        #expect(
            accepted > Self.rounds / 20 && accepted < Self.rounds - Self.rounds / 20,
            "\(accepted) of \(Self.rounds) accepted")
    }

    @Test("net header: 10,000 random headers decode and re-encode unchanged")
    func netHeader() {
        var generator = SplitMix64(seed: 0x6e65_7400)
        for _ in 0..<Self.rounds {
            let count = Int(generator.next() % 16)
            let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let header = NetHeader(bytes: bytes)
            #expect((header == nil) == (count != NetHeader.size))
            if let header { #expect(header.bytes == bytes) }
        }
    }

    @Test("vsock packets: 10,000 mutated headers")
    func vsock() throws {
        let seeds = try fuzzSeeds("vsock-packet")
        var generator = SplitMix64(seed: 0x7673_6f63)
        var accepted = 0
        for round in 0..<Self.rounds {
            var bytes = seeds[round % seeds.count]
            for _ in 0..<(generator.next() % 3) {
                let offset = Int(generator.next() % UInt64(bytes.count))
                bytes[offset] =
                    generator.next() % 2 == 0 ? UInt8(truncatingIfNeeded: generator.next()) : bytes[offset] ^ 1
            }
            if generator.next() % 10 == 0 { bytes.removeLast(Int(generator.next() % UInt64(bytes.count))) }
            let rules = VsockPacketRules(guestCID: 3, seqpacket: bytes.first.map { $0 & 1 != 0 } ?? false)
            let payload = UInt64(max(0, bytes.count - 1 - VsockPacketHeader.size))
            if (try? rules.validate(Array(bytes.dropFirst()), payloadBytes: payload)) != nil { accepted += 1 }
            bytes.withUnsafeBytes { VirtioFuzzing.vsockPacket($0) }
        }
        #expect(accepted > Self.rounds / 20)
    }
}
