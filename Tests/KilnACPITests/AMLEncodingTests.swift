import Testing

@testable import KilnACPI

@Suite struct AMLEncodingTests {
    static let integerEncodings: [(UInt64, [UInt8])] = [
        (0, [0x00]),
        (1, [0x01]),
        (2, [0x0A, 0x02]),
        (0xFF, [0x0A, 0xFF]),
        (0x100, [0x0B, 0x00, 0x01]),
        (0xFFFF, [0x0B, 0xFF, 0xFF]),
        (0x1_0000, [0x0C, 0x00, 0x00, 0x01, 0x00]),
        (0xFEC0_0000, [0x0C, 0x00, 0x00, 0xC0, 0xFE]),
        (0x1_0000_0000, [0x0E, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00]),
        (UInt64.max, [0xFF]),
    ]

    @Test(arguments: integerEncodings)
    func integersUseTheShortestEncoding(value: UInt64, expected: [UInt8]) {
        #expect(AML.integer(value) == expected)
    }

    /// Decodes a PkgLength (ACPI 6.4 §20.2.4) independently of the encoder.
    func decodePackageLength(_ bytes: [UInt8]) -> (value: Int, size: Int) {
        let lead = bytes[0]
        let following = Int(lead >> 6)
        if following == 0 { return (Int(lead & 0x3F), 1) }
        var value = Int(lead & 0x0F)
        for index in 0..<following { value |= Int(bytes[1 + index]) << (4 + 8 * index) }
        return (value, 1 + following)
    }

    @Test func packageLengthCountsItselfAtEveryEncodingBoundary() {
        // Body sizes around each switch between 1, 2, 3 and 4 length bytes.
        for bodySize in [0, 1, 61, 62, 63, 64, 200, 4093, 4094, 4095, 4096, 70_000, 1_048_572, 1_048_573, 1_048_576] {
            let encoded = AML.packageLengthPrefixed([UInt8](repeating: 0xAA, count: bodySize))
            let (value, size) = decodePackageLength(encoded)
            #expect(value == encoded.count, "body \(bodySize)")
            #expect(size == encoded.count - bodySize)
            let expectedSize = bodySize + 1 < 0x40 ? 1 : bodySize + 2 < 0x1000 ? 2 : bodySize + 3 < 0x10_0000 ? 3 : 4
            #expect(size == expectedSize, "body \(bodySize)")
            if size > 1 { #expect(encoded[0] & 0x30 == 0, "bits 5-4 of a multi-byte lead are reserved") }
        }
    }

    @Test func nameStringsHandlePrefixesAndPaths() {
        #expect(AML.nameString("_HID") == Array("_HID".utf8))
        #expect(AML.nameString("_S5") == Array("_S5_".utf8))
        #expect(AML.nameString("\\_SB") == [0x5C] + Array("_SB_".utf8))
        #expect(AML.nameString("\\_SB.COM1") == [0x5C, 0x2E] + Array("_SB_COM1".utf8))
        #expect(AML.nameString("^^PCI0") == [0x5E, 0x5E] + Array("PCI0".utf8))
        #expect(AML.nameString("\\A.B.C") == [0x5C, 0x2F, 3] + Array("A___B___C___".utf8))
        #expect(AML.nameString("\\") == [0x5C, 0x00])
    }

    @Test func eisaIDsAreCompressed() {
        // PNP0501 is 0x0105D041 as a DWord constant (ACPI 6.4 §6.1.5 example style).
        #expect(AML.eisaID("PNP0501") == [0x0C, 0x41, 0xD0, 0x05, 0x01])
        #expect(AML.eisaID("PNP0A03") == [0x0C, 0x41, 0xD0, 0x0A, 0x03])
    }

    @Test func stringsAndNamedObjects() {
        #expect(AML.string("LNRO0005") == [0x0D] + Array("LNRO0005".utf8) + [0x00])
        #expect(AML.name("_UID", AML.integer(7)) == [0x08] + Array("_UID".utf8) + [0x0A, 0x07])
        // Method (_STA) { Return (0x0F) }: MethodOp, PkgLength 8, name, flags 0, ReturnOp, ByteConst.
        #expect(
            AML.method("_STA", AML.return(AML.integer(0x0F)))
                == [0x14, 0x09] + Array("_STA".utf8) + [0x00, 0xA4, 0x0A, 0x0F])
        #expect(AML.method("FOO", argumentCount: 2, serialized: true)[6] == 0x0A)
        #expect(AML.device("COM1") == [0x5B, 0x82, 0x05] + Array("COM1".utf8))
        #expect(
            AML.scope("\\", AML.name("X", AML.integer(0)))
                == [0x10, 0x09, 0x5C, 0x00, 0x08] + Array("X___".utf8) + [0x00])
        #expect(AML.package([AML.integer(5), AML.integer(0)]) == [0x12, 0x05, 0x02, 0x0A, 0x05, 0x00])
        #expect(AML.buffer([1, 2, 3]) == [0x11, 0x06, 0x0A, 0x03, 1, 2, 3])
    }

    @Test func resourceDescriptorsMatchTheSpecLayouts() {
        #expect(
            ResourceDescriptor.ioPort(base: 0x3F8, length: 8).encoded == [
                0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08,
            ])
        #expect(ResourceDescriptor.irq(4).encoded == [0x22, 0x10, 0x00])
        #expect(
            ResourceDescriptor.memory32Fixed(base: 0xD000_0000, length: 0x1000).encoded
                == [0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x10, 0x00, 0x00])
        #expect(
            ResourceDescriptor.interrupt(gsi: 5, trigger: .edge).encoded == [0x89, 0x06, 0x00, 0x03, 0x01, 5, 0, 0, 0])
        #expect(
            ResourceDescriptor.interrupt(gsi: 300, trigger: .level, activeLow: true, shared: true).encoded
                == [0x89, 0x06, 0x00, 0x0D, 0x01, 0x2C, 0x01, 0, 0])

        let qword = ResourceDescriptor.qwordMemory(base: 0x1_0000_0000, length: 0x1000).encoded
        #expect(qword.count == 46)
        #expect(qword[0] == 0x8A && qword[1] == 43 && qword[2] == 0)
        #expect(qword[3] == 0 && qword[4] == 0x0D && qword[5] == 0x01)
        #expect(Array(qword[14..<22]) == [0, 0, 0, 0, 1, 0, 0, 0]) // minimum
        #expect(Array(qword[22..<30]) == [0xFF, 0x0F, 0, 0, 1, 0, 0, 0]) // maximum
        #expect(Array(qword[38..<46]) == [0x00, 0x10, 0, 0, 0, 0, 0, 0]) // length

        let template = AML.resourceTemplate([.irq(4)])
        #expect(template == [0x11, 0x08, 0x0A, 0x05, 0x22, 0x10, 0x00, 0x79, 0x00])
    }
}
