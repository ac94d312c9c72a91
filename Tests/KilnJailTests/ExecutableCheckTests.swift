import Testing

@testable import KilnJail

@Suite struct ExecutableCheckTests {
    /// An ELF64 header with `types` as its program headers, placed at 64.
    static func elf(type: UInt16 = 2, programHeaders types: [UInt32]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 64 + 56 * types.count)
        bytes[0...3] = [0x7F, 0x45, 0x4C, 0x46]
        bytes[4] = 2
        bytes[5] = 1
        bytes[16] = UInt8(type)
        bytes[18] = UInt8(ExecutableCheck.hostMachine & 0xFF)
        bytes[32] = 64 // e_phoff
        bytes[54] = 56 // e_phentsize
        bytes[56] = UInt8(types.count)
        for (index, kind) in types.enumerated() { bytes[64 + 56 * index] = UInt8(kind) }
        return bytes
    }

    @Test func acceptsStaticExecutables() {
        #expect(ExecutableCheck.problem(in: Self.elf(programHeaders: [1, 1, 4])) == nil)
        #expect(ExecutableCheck.problem(in: Self.elf(type: 3, programHeaders: [6, 1])) == nil) // static-pie
    }

    @Test func refusesWhatCannotRunInAnEmptyJail() {
        #expect(
            ExecutableCheck.problem(in: Self.elf(programHeaders: [6, 3, 1]))?.contains("dynamically linked") == true)
        #expect(
            ExecutableCheck.problem(in: Array("#!/bin/sh\necho hi\n".utf8) + [UInt8](repeating: 0, count: 64))?
                .contains("not an ELF") == true)
        #expect(
            ExecutableCheck.problem(in: Self.elf(type: 1, programHeaders: []))?.contains("not an executable") == true)
        var thirtyTwoBit = Self.elf(programHeaders: [1])
        thirtyTwoBit[4] = 1
        #expect(ExecutableCheck.problem(in: thirtyTwoBit)?.contains("64-bit") == true)
        var foreign = Self.elf(programHeaders: [1])
        foreign[18] = 40 // EM_ARM
        #expect(ExecutableCheck.problem(in: foreign)?.contains("another architecture") == true)
        var outside = Self.elf(programHeaders: [1])
        outside[32] = 0xFF
        outside[33] = 0xFF
        #expect(ExecutableCheck.problem(in: outside)?.contains("outside") == true)
        // An e_phoff above Int.max is refused, not a trap converting it.
        var beyondInt = Self.elf(programHeaders: [1])
        beyondInt[32...39] = [0, 0, 0, 0, 0, 0, 0, 0x80]
        #expect(ExecutableCheck.problem(in: beyondInt)?.contains("outside") == true)
        var hugeCount = Self.elf(programHeaders: [1])
        hugeCount[56] = 0xFF
        hugeCount[57] = 0xFF
        #expect(ExecutableCheck.problem(in: hugeCount)?.contains("outside") == true)
        for length in 0..<64 {
            #expect(ExecutableCheck.problem(in: Array(Self.elf(programHeaders: [1]).prefix(length))) != nil)
        }
    }
}
