import KilnTestSupport
import Testing

@testable import KilnVirtio

/// The seeds of fuzz-vsock-device, as programs: streams opened each way,
/// refused, timed out, closed, overrun, and packets broken in every field
/// the device checks.
enum VsockFuzzSeeds {
    typealias V = VsockFuzzOperation
    typealias Packet = VsockFuzzOperation.Packet

    /// Operation codes (virtio 1.2 §5.10.6).
    enum Op {
        static let request: UInt8 = 1, response: UInt8 = 2, reset: UInt8 = 3, shutdown: UInt8 = 4, readWrite: UInt8 = 5,
            creditUpdate: UInt8 = 6, creditRequest: UInt8 = 7
    }
    /// Port indices (`VsockFuzzHarness.guestPorts` and `.hostPorts`): host
    /// port 52 has a listener, 53 none; 2 is the first host-initiated port.
    static let listening: UInt8 = 0, noListener: UInt8 = 1, firstHostPort: UInt8 = 2, guestPort52: UInt8 = 2

    static func receive(_ address: UInt16) -> V {
        .receiveBuffers([FuzzBuffer(address: address, length: 1068, flags: FuzzBuffer.writable)])
    }
    static let buffers: [V] = [receive(0x2000), receive(0x2500), receive(0x2A00), receive(0x2F00)]
    static let size16: UInt8 = 4 << 2

    static let programs: [(name: String, bytes: [UInt8])] = [
        (
            "guest-connect-send-close",
            FuzzProgram.encode(
                control: size16 | 1,
                buffers + [
                    V.transmit(Packet(operation: Op.request)),
                    .transmit(Packet(operation: Op.readWrite, length: 100)),
                    .hostReady(stream: 0, behaviour: 0), .receiveNotify,
                    .transmit(Packet(operation: Op.creditRequest)),
                    .transmit(Packet(operation: Op.shutdown, flags: 3)),
                ])
        ),
        (
            "guest-connect-refused",
            FuzzProgram.encode(
                control: size16,
                buffers + [
                    V.transmit(Packet(operation: Op.request, hostPort: noListener)),
                    .transmit(Packet(operation: Op.readWrite, hostPort: noListener, length: 10)),
                ])
        ),
        (
            "host-connect-accepted",
            FuzzProgram.encode(
                control: size16 | 3,
                buffers + [
                    V.hostConnect(port: guestPort52),
                    .transmit(Packet(operation: Op.response, guestPort: guestPort52, hostPort: firstHostPort)),
                    .transmit(
                        Packet(operation: Op.readWrite, guestPort: guestPort52, hostPort: firstHostPort, length: 300)),
                    .hostReady(stream: 0, behaviour: 0x04), .receiveNotify,
                    .hostReady(stream: 0, behaviour: 0x01), .tick(milliseconds: 10),
                ])
        ),
        (
            "host-connect-timeout",
            FuzzProgram.encode(
                control: size16,
                [
                    V.hostConnect(port: 0), receive(0x2000), .receiveNotify, .tick(milliseconds: 2500), receive(0x2500),
                    .receiveNotify,
                ])
        ),
        (
            "credit-overrun",
            FuzzProgram.encode(
                control: size16,
                buffers + [
                    V.transmit(Packet(operation: Op.request)), .hostReady(stream: 0, behaviour: 0x28),
                    .transmit(Packet(operation: Op.readWrite, length: 4000)),
                    .transmit(Packet(operation: Op.readWrite, length: 200)),
                ])
        ),
        (
            "credit-wrap-and-host-failures",
            FuzzProgram.encode(
                control: size16,
                buffers + [
                    V.transmit(Packet(operation: Op.request, bufferAllocation: 64)),
                    .hostReady(stream: 0, behaviour: 0), .receiveNotify,
                    .transmit(Packet(operation: Op.creditUpdate, bufferAllocation: 64, forwardCount: 0xFFFF_FFFF)),
                    .transmit(Packet(operation: Op.request, guestPort: 1)), .hostReady(stream: 0, behaviour: 0x03),
                    .receiveNotify,
                ])
        ),
        (
            "malformed-packets",
            FuzzProgram.encode(
                control: size16 | 2,
                buffers + [
                    V.transmit(Packet(operation: Op.request, shape: 1)),
                    .transmit(Packet(operation: Op.request, shape: 2)),
                    .transmit(Packet(operation: Op.request, shape: 4)),
                    .transmit(Packet(operation: Op.readWrite, length: 5, shape: 0x10)),
                    .transmit(Packet(operation: Op.request, shape: 0x08 | 0x20)), .transmit(Packet(operation: 0)),
                    .transmit(Packet(operation: 8)), .transmit(Packet(operation: Op.shutdown, flags: 7)),
                    .rawTransmit([FuzzBuffer(address: 0x1000, length: 10, flags: 0)]),
                    .receiveBuffers([FuzzBuffer(address: 0x2000, length: 8, flags: FuzzBuffer.writable)]),
                    .receiveNotify,
                ])
        ),
        (
            "reset-with-streams",
            FuzzProgram.encode(
                control: size16,
                buffers + [
                    V.transmit(Packet(operation: Op.request)), .hostConnect(port: 3), .reset,
                    .transmit(Packet(operation: Op.readWrite, length: 4)),
                ])
        ),
    ]
}

@Suite("seeded fuzzing: virtio-vsock")
struct SeededFuzzVsockTests {
    @Test("the committed seeds are the programs above (KILN_WRITE_FUZZ_SEEDS=1 rewrites them)")
    func seedsCurrent() throws {
        #expect(try FuzzCorpus.stale("vsock-device", VsockFuzzSeeds.programs) == [])
    }

    @Test("each seed delivers packets to the guest")
    func seedsServe() {
        for seed in VsockFuzzSeeds.programs {
            let harness = seed.bytes.withUnsafeBytes { FuzzProgram.run($0, on: VsockFuzzHarness.self, limit: 256) }
            #expect(harness.delivered >= 1, "\(seed.name)")
        }
    }

    @Test("vsock device: 10,000 mutated guest and host programs")
    func vsockDevice() {
        let run = SeededFuzzTransportTests.mutatedRun(
            VsockFuzzSeeds.programs, as: VsockFuzzOperation.self,
            seed: 0x7673_6f63_6b
        ) { VirtioFuzzing.vsockDevice($0) }
        #expect(
            run.nonzero > SeededFuzzTransportTests.rounds / 4,
            "\(run.nonzero) of \(SeededFuzzTransportTests.rounds) programs moved a packet")
    }
}
