import KilnTestSupport
import Testing

@testable import KilnJSON

@Suite struct JSONParserTests {
    @Test func parsesNestedDocument() throws {
        let value = try JSONParser.parse(#"{"a": [1, -2.5e3, true, null], "b": {"c": "d\u00e9\n"}}"#)
        #expect(value["a"] == .array([.number("1"), .number("-2.5e3"), .bool(true), .null]))
        #expect(value["b"]?["c"] == .string("dé\n"))
    }

    @Test func roundTripsThroughEncoder() throws {
        let text = #"{"k":["x\"y",{"z":[]},{}],"n":18446744073709551615}"#
        let value = try JSONParser.parse(text)
        #expect(value.encoded() == text)
        #expect(try JSONParser.parse(value.encoded(pretty: true)) == value)
    }

    @Test(arguments: [
        ("", "1:1: unexpected end of input, expected a value"),
        ("{\"a\":1,}", "1:8: expected a string key"),
        ("{\"a\":1,\"a\":2}", "1:8: duplicate key \"a\""),
        ("[1 2]", "1:4: expected ',' or ']' in array"),
        ("01", "1:2: unexpected data after the JSON value"),
        ("\"\\x\"", "1:3: invalid escape '\\x'"),
        ("\"\\ud800\"", "1:8: unpaired surrogate in \\u escape"),
        ("\n  tru", "2:6: invalid literal, expected 'true'"),
        ("\"a\u{01}\"", "1:3: control character in string"),
        ("1.", "1:3: invalid number: digits expected after '.'"),
    ])
    func rejectsMalformedInput(input: String, message: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(input) }
        do { _ = try JSONParser.parse(input) } catch let error as JSONParseError {
            #expect(error.description == message)
        } catch {}
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xC0, 0x80, 0x22]) }
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) }
    }

    @Test func limitsNestingDepth() {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep) }
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect((try? JSONParser.parse(ok)) != nil)
    }

    @Test func objectReaderNamesFields() throws {
        let value = try JSONParser.parse(#"{"vcpu_count": 0, "extra": 1}"#)
        var reader = try JSONObjectReader(value, path: "machine-config")
        #expect(
            throws: JSONDecodingError(
                path: "machine-config.vcpu_count",
                message: "expected an integer from 1 to 32, got 0")
        ) {
            let _: Int? = try reader.integer("vcpu_count", in: 1...32)
        }
        #expect(throws: JSONDecodingError(path: "machine-config.extra", message: "unknown field")) {
            try reader.finish()
        }
        var typed = try JSONObjectReader(try JSONParser.parse(#"{"s": 5, "n": 1.5}"#))
        #expect(throws: JSONDecodingError(path: "s", message: "expected a string, got a number")) {
            _ = try typed.string("s")
        }
        #expect(throws: JSONDecodingError(path: "n", message: "expected an integer, got 1.5")) {
            let _: UInt64? = try typed.integer("n")
        }
    }

    /// Seeded fuzz-style pass: random and mutated inputs must either parse or
    /// throw, never crash, and whatever parses must re-encode to an equal value.
    /// Both outcomes are counted against a floor (seed 0x4B494C4E: parsed
    /// [48, 114], refused [4952, 4886]), so that a generator that stops
    /// reaching one (every input refused, say) fails.
    @Test func survivesRandomAndMutatedInputs() {
        var generator = SplitMix64(seed: 0x4B49_4C4E)
        var parsed = [0, 0], refused = [0, 0] // [mutated seeds, random alphabet]
        let seeds = [#"{"a":[1,2,{"b":null}],"c":"\u0041"}"#, "[true,false,-0.5e-3]", #""\ud83d\ude00""#]
        for round in 0..<10_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = Array(seeds[round % seeds.count].utf8)
                for _ in 0..<(1 + Int(generator.next() % 4)) where !bytes.isEmpty {
                    let position = Int(generator.next() % UInt64(bytes.count))
                    bytes[position] = UInt8(truncatingIfNeeded: generator.next())
                }
            } else {
                let alphabet = Array(#"{}[],:"\ 0123456789-.eEtrufalsn"#.utf8)
                bytes = (0..<Int(generator.next() % 24)).map { _ in
                    alphabet[Int(generator.next() % UInt64(alphabet.count))]
                }
            }
            do {
                let value = try JSONParser.parse(bytes)
                #expect((try? JSONParser.parse(value.encoded())) == value)
                parsed[round % 2] += 1
            } catch {
                #expect(error is JSONParseError, "\(error)")
                refused[round % 2] += 1
            }
        }
        #expect(parsed.reduce(0, +) + refused.reduce(0, +) == 10_000)
        #expect(
            parsed[0] >= 25 && parsed[1] >= 60 && refused[0] >= 4000 && refused[1] >= 4000,
            "parsed \(parsed), refused \(refused)")
    }
}
