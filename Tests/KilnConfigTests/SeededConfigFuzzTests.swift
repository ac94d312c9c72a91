import KilnConfig
import KilnJSON
import KilnTestSupport
import Testing

/// A seeded fuzz-style pass over the config-file decoder (whose section
/// decoders also read the API's bodies), from the fuzz-vm-config seeds:
/// every input decodes to a configuration that survives GET /vm/config and
/// back, or is refused with an error naming a field. (`make fuzz` explores
/// further with libFuzzer.)
@Suite struct SeededConfigFuzzTests {
    static let leaves: [JSONValue] = [
        .null, .bool(true), .bool(false), .number("0"), .number("1"), .number("-1"), .number("1.5"),
        .number("4294967296"), .number("18446744073709551616"), .string(""), .string("/k"), .string("eth0"),
        .string("06:00:ac:10:00:02"), .string("Info"), .string("Writeback"), .string("a\u{0}b"), .array([]),
        .object([]),
    ]

    /// Replaces, removes or duplicates one value somewhere in `value`.
    static func mutate(_ value: JSONValue, using generator: inout SplitMix64) -> JSONValue {
        switch value {
        case let .object(members) where !members.isEmpty && Int.random(in: 0..<4, using: &generator) != 0:
            var members = members
            let index = Int.random(in: 0..<members.count, using: &generator)
            switch Int.random(in: 0..<6, using: &generator) {
            case 0: members.remove(at: index)
            case 1: members.append((key: members[index].key + "_x", value: members[index].value))
            default: members[index].value = mutate(members[index].value, using: &generator)
            }
            return .object(members)
        case let .array(elements) where !elements.isEmpty && Int.random(in: 0..<4, using: &generator) != 0:
            var elements = elements
            let index = Int.random(in: 0..<elements.count, using: &generator)
            switch Int.random(in: 0..<5, using: &generator) {
            case 0: elements.remove(at: index)
            case 1: elements.append(elements[index])
            default: elements[index] = mutate(elements[index], using: &generator)
            }
            return .array(elements)
        default:
            return leaves.randomElement(using: &generator)!
        }
    }

    @Test func tenThousandMutatedConfigurationsDecodeOrNameTheirField() throws {
        let seeds = try FuzzCorpus.seeds("vm-config").map { try JSONParser.parse($0) }
        #expect(seeds.count >= 2, "fuzz/corpus/vm-config holds the seeds")
        var generator = SplitMix64(seed: 0x564D_434F)
        var decoded = 0, refused = 0, refusedBytes = 0
        for round in 0..<10_000 {
            var value = seeds[round % seeds.count]
            for _ in 0..<Int.random(in: 1...4, using: &generator) { value = Self.mutate(value, using: &generator) }
            var bytes = Array(value.encoded().utf8)
            // One input in ten also gets a byte changed, to reach the JSON errors.
            if round % 10 == 0, !bytes.isEmpty {
                bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            do {
                let configuration = try VMConfig(configFile: bytes)
                let again = try VMConfig(configFile: Array(configuration.json.encoded().utf8))
                #expect(again == configuration, "\(String(decoding: bytes, as: UTF8.self))")
                decoded += 1
            } catch let error as JSONDecodingError {
                #expect(!error.message.isEmpty)
                if round % 10 == 0 { refusedBytes += 1 } else { refused += 1 }
            }
        }
        // Floors: both outcomes are reached, or the mutations no longer
        // explore the decoder (seed 0x564D434F: 1,007 decoded, 7,993
        // refused, and all 1,000 with a byte changed).
        #expect(
            decoded >= 500 && refused >= 6000 && refusedBytes >= 900,
            "decoded \(decoded), refused \(refused), refused after a byte change \(refusedBytes)")
    }
}
