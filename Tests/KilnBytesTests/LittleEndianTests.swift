import KilnBytes
import Testing

@Suite struct LittleEndianTests {
    @Test func writesLeastSignificantByteFirst() {
        var bytes: [UInt8] = [0xAA]
        bytes.appendLittleEndian(UInt16(0x0102))
        bytes.appendLittleEndian(UInt32(0x0304_0506))
        bytes.appendLittleEndian(Int64(-2))
        #expect(bytes == [0xAA, 0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        bytes.storeLittleEndian(UInt16(0xBEEF), at: 1)
        #expect(bytes[1...2] == [0xEF, 0xBE])
    }

    @Test func readsBackWhatWasWritten() {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(UInt64(0x1122_3344_5566_7788))
        bytes.appendLittleEndian(UInt16(0x99AA))
        #expect(bytes.littleEndian(UInt64.self, at: 0) == 0x1122_3344_5566_7788)
        #expect(bytes.littleEndian(UInt16.self, at: 8) == 0x99AA)
        #expect(bytes.littleEndian(UInt32.self, at: 1) == 0x4455_6677)
        #expect(bytes.littleEndian(Int8.self, at: 9) == Int8(bitPattern: 0x99))
    }

    /// Out-of-range offsets, including ones whose end would overflow, are
    /// nil rather than a trap.
    @Test func refusesReadsPastEitherEnd() {
        let bytes: [UInt8] = [1, 2, 3, 4, 5]
        #expect(bytes.littleEndian(UInt32.self, at: 1) == 0x0504_0302)
        #expect(bytes.littleEndian(UInt32.self, at: 2) == nil)
        #expect(bytes.littleEndian(UInt8.self, at: 5) == nil)
        #expect(bytes.littleEndian(UInt8.self, at: -1) == nil)
        #expect(bytes.littleEndian(UInt64.self, at: 0) == nil)
        #expect(bytes.littleEndian(UInt64.self, at: .max) == nil)
        #expect(bytes.littleEndian(UInt16.self, at: .min) == nil)
        #expect([UInt8]().littleEndian(UInt8.self, at: 0) == nil)
    }
}
