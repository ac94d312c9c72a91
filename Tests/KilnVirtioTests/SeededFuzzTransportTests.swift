import KilnBytes
import KilnTestSupport
import Testing

@testable import KilnVirtio

/// The seeds of fuzz-virtio-mmio and fuzz-net-frames, as programs: a driver
/// bring-up and a few requests per device, and the frame paths of net.
enum DeviceFuzzSeeds {
    typealias M = MMIOFuzzOperation
    typealias N = NetFuzzOperation

    static func readable(_ address: UInt16, _ length: UInt16) -> FuzzBuffer {
        FuzzBuffer(address: address, length: length, flags: 0)
    }
    static func writable(_ address: UInt16, _ length: UInt16) -> FuzzBuffer {
        FuzzBuffer(address: address, length: length, flags: FuzzBuffer.writable)
    }

    /// `struct virtio_blk_req`'s header (virtio 1.2 §5.2.6).
    static func blockHeader(_ type: UInt32, sector: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(type)
        bytes.appendLittleEndian(UInt32(0))
        bytes.appendLittleEndian(sector)
        return bytes
    }

    static let standard = MMIOFuzzHarness.BringUp.eventIndex | MMIOFuzzHarness.BringUp.deviceFeatures
    /// Control bytes (`MMIOFuzzHarness.init(control:)`).
    enum Control {
        static let block: UInt8 = 0, net: UInt8 = 1, rng: UInt8 = 2, readOnly: UInt8 = 4
    }

    static let mmio: [(name: String, bytes: [UInt8])] = [
        (
            "block-read",
            FuzzProgram.encode(
                control: Control.block,
                [
                    M.read(offset: 0x000, size: 4), .read(offset: 0x008, size: 4), .read(offset: 0x100, size: 4),
                    .bringUp(features: standard, queueSize: 4),
                    .poke(address: 0x6000, bytes: blockHeader(0, sector: 1)),
                    .chain(queue: 0, buffers: [readable(0x6000, 16), writable(0x6100, 512), writable(0x6400, 1)]),
                    .notify(queue: 0), .read(offset: 0x060, size: 4), .write(offset: 0x064, size: 4, value: 1),
                ])
        ),
        (
            "block-write-flush",
            FuzzProgram.encode(
                control: Control.block,
                [
                    M.bringUp(features: standard | MMIOFuzzHarness.BringUp.indirect, queueSize: 5),
                    .poke(address: 0x6000, bytes: blockHeader(1, sector: 2)),
                    .chain(queue: 0, buffers: [readable(0x6000, 16), readable(0x8000, 1024), writable(0x6400, 1)]),
                    .poke(address: 0x6020, bytes: blockHeader(4, sector: 0)),
                    .chain(queue: 0, buffers: [readable(0x6020, 16), writable(0x6410, 1)]),
                    .notify(queue: 0),
                ])
        ),
        (
            "block-read-only-write",
            FuzzProgram.encode(
                control: Control.block | Control.readOnly,
                [
                    M.bringUp(features: standard, queueSize: 4),
                    .poke(address: 0x6000, bytes: blockHeader(1, sector: 0)),
                    .chain(queue: 0, buffers: [readable(0x6000, 16), readable(0x6100, 512), writable(0x6400, 1)]),
                    .notify(queue: 0), .read(offset: 0x010, size: 4),
                ])
        ),
        (
            "net-loopback",
            FuzzProgram.encode(
                control: Control.net,
                [
                    M.bringUp(features: standard, queueSize: 4),
                    .chain(queue: 0, buffers: [writable(0x6000, 1526)]),
                    .chain(queue: 1, buffers: [readable(0x7000, 12), readable(0x7100, 60)]),
                    .notify(queue: 1), .read(offset: 0x060, size: 4), .write(offset: 0x064, size: 4, value: 1),
                    .hostFrame(length: 100), .chain(queue: 0, buffers: [writable(0x6800, 1526)]),
                    .backendEvent(queue: 0),
                    .read(offset: 0x100, size: 4), .read(offset: 0x104, size: 2), .read(offset: 0x106, size: 2),
                ])
        ),
        (
            "rng",
            FuzzProgram.encode(
                control: Control.rng,
                [
                    M.bringUp(features: MMIOFuzzHarness.BringUp.eventIndex, queueSize: 3),
                    .chain(queue: 0, buffers: [writable(0x6000, 64)]),
                    .chain(queue: 0, buffers: [writable(0x6100, 16), writable(0x8000, 4096)]),
                    .notify(queue: 0),
                ])
        ),
        (
            "rng-failing-source",
            FuzzProgram.encode(
                control: Control.rng | 0x10,
                [
                    M.bringUp(features: 0, queueSize: 3),
                    .chain(queue: 0, buffers: [writable(0x6000, 64)]),
                    .chain(queue: 0, buffers: [writable(0x6100, 64)]),
                    .notify(queue: 0), .configurationChanged,
                ])
        ),
        // §4.2.3.2 by hand, with a queue size that is no power of two:
        // DEVICE_NEEDS_RESET until the driver writes 0.
        (
            "bad-queue-size",
            FuzzProgram.encode(
                control: Control.block,
                [
                    M.write(offset: 0x070, size: 4, value: 1), .write(offset: 0x070, size: 4, value: 3),
                    .write(offset: 0x024, size: 4, value: 1), .write(offset: 0x020, size: 4, value: 1),
                    .write(offset: 0x070, size: 4, value: 11), .write(offset: 0x030, size: 4, value: 0),
                    .write(offset: 0x038, size: 4, value: 3), .write(offset: 0x080, size: 4, value: 0x1000),
                    .write(offset: 0x090, size: 4, value: 0x1100), .write(offset: 0x0a0, size: 4, value: 0x1200),
                    .write(offset: 0x044, size: 4, value: 1), .read(offset: 0x070, size: 4),
                    .write(offset: 0x070, size: 4, value: 15), .write(offset: 0x070, size: 4, value: 0),
                    .read(offset: 0x070, size: 4),
                ])
        ),
    ]

    /// Queue size 16 (`NetFuzzHarness.init(control:)`); bit 0 EVENT_IDX, bit 1 INDIRECT_DESC.
    static let size16: UInt8 = 4 << 2

    static let net: [(name: String, bytes: [UInt8])] = [
        (
            "rx-host-frame",
            FuzzProgram.encode(control: size16, [N.receiveBuffers([writable(0x0000, 1526)]), .hostFrame(length: 60)])
        ),
        (
            "tx-loopback",
            FuzzProgram.encode(
                control: size16 | 1,
                [
                    N.receiveBuffers([writable(0x1000, 2048)]),
                    .transmit(header: N.Header.plain, buffers: [readable(0x2000, 12), readable(0x2100, 64)]),
                ])
        ),
        (
            "tx-refused-headers",
            FuzzProgram.encode(
                control: size16,
                [
                    N.transmit(header: N.Header.needsChecksum, buffers: [readable(0x2000, 76)]),
                    .transmit(header: N.Header.gso, buffers: [readable(0x2000, 76)]),
                    .transmit(header: N.Header.plain, buffers: [readable(0x2000, 8)]),
                    .transmit(header: N.Header.plain, buffers: [readable(0x2000, 12), writable(0x2100, 64)]),
                ])
        ),
        (
            "rx-split-and-too-small",
            FuzzProgram.encode(
                control: size16,
                [
                    N.receiveBuffers([writable(0x0000, 20)]), .hostFrame(length: 60),
                    .receiveBuffers([writable(0x0100, 12), writable(0x0200, 30), writable(0x0300, 30)]),
                    .hostFrame(length: 60),
                    .receiveBuffers([writable(0x0400, 100)]), .hostFrame(length: 1000), .receiveNotify,
                ])
        ),
        // Two buffers of one chain over the same bytes: the later write wins
        // (the harness once took that for a wrong delivery).
        (
            "rx-overlapping-buffers",
            FuzzProgram.encode(
                control: size16,
                [
                    N.receiveBuffers([writable(0x0100, 12), writable(0x0300, 30), writable(0x0300, 30)]),
                    .hostFrame(length: 60),
                ])
        ),
        (
            "rx-indirect",
            FuzzProgram.encode(
                control: size16 | 2,
                [
                    N.table(address: 0x3000, buffers: [writable(0x3100, 800), writable(0x3500, 800)]),
                    .receiveBuffers([FuzzBuffer(address: 0x3000, length: 32, flags: FuzzBuffer.indirect)]),
                    .hostFrame(length: 1200),
                ])
        ),
    ]
}

@Suite("seeded fuzzing: the virtio-mmio transport and net frames")
struct SeededFuzzTransportTests {
    static let rounds = 10_000

    @Test("the committed seeds are the programs above (KILN_WRITE_FUZZ_SEEDS=1 rewrites them)")
    func seedsCurrent() throws {
        #expect(try FuzzCorpus.stale("virtio-mmio", DeviceFuzzSeeds.mmio) == [])
        #expect(try FuzzCorpus.stale("net-frames", DeviceFuzzSeeds.net) == [])
    }

    @Test("each seed reaches the device's work")
    func seedsServe() {
        for seed in DeviceFuzzSeeds.mmio where seed.name != "bad-queue-size" {
            #expect(seed.bytes.withUnsafeBytes { VirtioFuzzing.mmio($0) } >= 1, "\(seed.name)")
        }
        for seed in DeviceFuzzSeeds.net {
            #expect(seed.bytes.withUnsafeBytes { VirtioFuzzing.netFrames($0) } >= 1, "\(seed.name)")
        }
    }

    /// Runs `harness` on `rounds` mutants of `seeds`; returns what it counted.
    static func mutatedRun<Operation: FuzzOperation>(
        _ seeds: [(name: String, bytes: [UInt8])], as type: Operation.Type,
        seed: UInt64, _ harness: (UnsafeRawBufferPointer) -> Int
    ) -> (total: Int, nonzero: Int) {
        var generator = SplitMix64(seed: seed)
        var total = 0, nonzero = 0
        for round in 0..<rounds {
            var program = seeds[round % seeds.count].bytes
            // Some programs drift further: mutants of mutants.
            for _ in 0..<(1 + round % 3) { program = FuzzProgram.mutate(program, as: type, using: &generator) }
            let counted = program.withUnsafeBytes(harness)
            total += counted
            if counted > 0 { nonzero += 1 }
        }
        return (total, nonzero)
    }

    @Test("virtio-mmio: 10,000 mutated driver programs over block, net and rng")
    func mmio() {
        let run = Self.mutatedRun(DeviceFuzzSeeds.mmio, as: MMIOFuzzOperation.self, seed: 0x6d6d_696f_7632) {
            VirtioFuzzing.mmio($0)
        }
        // Many mutants are hostile enough to fail early; a quarter must still
        // reach service (about 39% do), or the run proves little about it.
        #expect(run.nonzero > Self.rounds / 4, "\(run.nonzero) of \(Self.rounds) programs pushed a used element")
    }

    @Test("net frames: 10,000 mutated transmit and receive programs")
    func netFrames() {
        let run = Self.mutatedRun(DeviceFuzzSeeds.net, as: NetFuzzOperation.self, seed: 0x6e65_7466) {
            VirtioFuzzing.netFrames($0)
        }
        // About 36% of the programs move one.
        #expect(run.nonzero > Self.rounds / 4, "\(run.nonzero) of \(Self.rounds) programs moved a frame")
    }
}
