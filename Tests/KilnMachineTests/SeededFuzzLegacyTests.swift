import KilnTestSupport
import KilnVirtio
import Testing

@testable import KilnMachine

/// The seeds of fuzz-legacy-devices, as programs: Linux's probes of each
/// device, host input, and the reboot paths.
enum LegacyFuzzSeeds {
    typealias L = LegacyFuzzOperation

    static let programs: [(name: String, bytes: [UInt8])] = [
        // drivers/tty/serial/8250: divisor, scratch, loopback, FIFO and THRE probes.
        (
            "uart-linux-probe",
            FuzzProgram.encode(
                control: 0,
                [
                    L.uartWrite(register: 3, value: 0x80), .uartWrite(register: 0, value: 0x01),
                    .uartWrite(register: 1, value: 0x00),
                    .uartRead(register: 0), .uartRead(register: 1), .uartWrite(register: 3, value: 0x03),
                    .uartWrite(register: 7, value: 0xa5), .uartRead(register: 7), .uartWrite(register: 4, value: 0x1f),
                    .uartRead(register: 6), .uartWrite(register: 4, value: 0x08), .uartWrite(register: 2, value: 0x07),
                    .uartRead(register: 2), .uartWrite(register: 1, value: 0x03), .uartRead(register: 2),
                    .uartRead(register: 2),
                    .uartWrite(register: 0, value: 0x41), .uartRead(register: 5),
                ])
        ),
        (
            "uart-input-and-loopback",
            FuzzProgram.encode(
                control: 55,
                [
                    L.uartWrite(register: 1, value: 1), .uartInput(count: 40), .uartRead(register: 5),
                    .uartRead(register: 2),
                    .uartRead(register: 0), .uartRead(register: 0), .uartWrite(register: 4, value: 0x18),
                    .uartWrite(register: 0, value: 0x42), .uartRead(register: 0), .uartInput(count: 2040),
                    .uartInput(count: 2040),
                    .uartRead(register: 5), .uartWrite(register: 2, value: 0x03), .uartRead(register: 5),
                ])
        ),
        (
            "i8042-probe-and-reset",
            FuzzProgram.encode(
                control: 0,
                [
                    L.portWrite(port: 0x64, size: 1, value: 0xaa), .portRead(port: 0x64, size: 1),
                    .portRead(port: 0x60, size: 1),
                    .portWrite(port: 0x64, size: 1, value: 0x20), .portRead(port: 0x60, size: 1),
                    .portWrite(port: 0x64, size: 1, value: 0x60), .portWrite(port: 0x60, size: 1, value: 0x47),
                    .ctrlAltDel, .portRead(port: 0x64, size: 1), .portRead(port: 0x60, size: 1),
                    .portRead(port: 0x60, size: 1),
                    .portRead(port: 0x60, size: 1), .portRead(port: 0x60, size: 1),
                    .portWrite(port: 0x64, size: 1, value: 0xfe),
                ])
        ),
        (
            "cmos-time-and-ram",
            FuzzProgram.encode(
                control: 56,
                [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32, 0x0a, 0x0b, 0x0d].flatMap {
                    [
                        L.portWrite(port: 0x70, size: 1, value: 0x80 | $0), .portRead(port: 0x70, size: 1),
                        .portRead(port: 0x71, size: 1),
                    ]
                } + [
                    L.portWrite(port: 0x70, size: 1, value: 0x40), .portWrite(port: 0x71, size: 1, value: 0x5a),
                    .portRead(port: 0x71, size: 1),
                    .portWrite(port: 0x70, size: 2, value: 0x0000), .portRead(port: 0x70, size: 2),
                    .portRead(port: 0x72, size: 1),
                    .portRead(port: 0x62, size: 1), .portRead(port: 0x5f, size: 4),
                ])
        ),
        (
            "keyboard-flood",
            FuzzProgram.encode(
                control: 0,
                Array(repeating: L.ctrlAltDel, count: 6) + [
                    L.portRead(port: 0x60, size: 1), .portRead(port: 0x60, size: 1), .ctrlAltDel,
                ])
        ),
    ]
}

@Suite("seeded fuzzing: the UART, i8042 and CMOS")
struct SeededFuzzLegacyTests {
    @Test("the committed seeds are the programs above (KILN_WRITE_FUZZ_SEEDS=1 rewrites them)")
    func seedsCurrent() throws {
        #expect(try FuzzCorpus.stale("legacy-devices", LegacyFuzzSeeds.programs) == [])
    }

    @Test("each seed reaches device state")
    func seedsReach() {
        for seed in LegacyFuzzSeeds.programs {
            #expect(seed.bytes.withUnsafeBytes { LegacyFuzzHarness.run($0) } >= 1, "\(seed.name)")
        }
    }

    @Test("legacy devices: 10,000 mutated port and input programs")
    func mutated() {
        var generator = SplitMix64(seed: 0x6c65_6761)
        let rounds = 10_000
        var reached = 0
        for round in 0..<rounds {
            var program = LegacyFuzzSeeds.programs[round % LegacyFuzzSeeds.programs.count].bytes
            for _ in 0..<(1 + round % 3) {
                program = FuzzProgram.mutate(program, as: LegacyFuzzOperation.self, using: &generator)
            }
            if program.withUnsafeBytes({ LegacyFuzzHarness.run($0) }) > 0 { reached += 1 }
        }
        #expect(reached > rounds / 2, "\(reached) of \(rounds) programs reached device state")
    }
}
