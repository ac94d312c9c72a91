import KilnMemory
import KilnTestSupport
import Testing

@testable import KilnMachine

/// Corrupted and truncated kernel images must be refused with an error,
/// never trap or write outside guest RAM: a trap here would abort the test
/// process. A fixed-seed generator keeps failures reproducible.
@Suite struct MalformedImageTests {

    /// Overwrites a few header bytes (where the parsers look) and sometimes truncates.
    static func mutate(_ image: [UInt8], _ random: inout SplitMix64, headerSpan: Int) -> [UInt8] {
        var bytes = image
        for _ in 0..<Int.random(in: 1...6, using: &random) {
            let index = Int.random(in: 0..<min(headerSpan, bytes.count), using: &random)
            bytes[index] = UInt8.random(in: 0...255, using: &random)
        }
        if Bool.random(using: &random) {
            bytes.removeLast(Int.random(in: 0..<bytes.count, using: &random))
        }
        return bytes
    }

    /// A Xen note cut short at the end of the file: its header fits the
    /// segment, its 4-byte name does not. Reading the name must be refused,
    /// not trap on the array's bounds.
    @Test func noteNamePastTheSegmentEndIsRefused() {
        var image = makeELF(pvhEntry: 0x100010)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { image.replaceSubrange(offset..<offset + $0.count, with: $0) }
        }
        let noteStart = image.count - 13
        put(UInt64(noteStart), 128); put(UInt64(13), 152) // PT_NOTE: the file's last 13 bytes
        put(UInt32(4), noteStart); put(UInt32(0), noteStart + 4); put(UInt32(18), noteStart + 8)
        #expect(throws: KernelImageError.self) { try ELFImage(image: image) }
    }

    @Test func mutatedImagesAreRefusedOrLoadedInsideRAM() throws {
        var random = SplitMix64(seed: 0x6b69_6c6e)
        let memory = try HeapGuestMemory(ranges: [GuestRange(address: 0, size: 32 << 20)])
        let seeds: [([UInt8], Int)] = [
            (makeELF(pvhEntry: 0x100010), 0x1b0),
            (makeBzImage(initSize: 0x8000, prefAddress: 0x40_0000), 0x270),
        ]
        var loaded = 0, refused = 0
        for _ in 0..<10_000 {
            let (seed, span) = seeds[Int.random(in: 0..<seeds.count, using: &random)]
            let image = Self.mutate(seed, &random, headerSpan: span)
            do {
                let kernel = try KernelLoader.load(image, into: memory, lowMemoryEnd: 32 << 20)
                #expect(kernel.end <= 32 << 20)
                #expect(kernel.entry < 32 << 20)
                loaded += 1
            } catch is KernelImageError {
                refused += 1
            } catch is GuestMemoryError {
                Issue.record("a malformed image reached guest memory out of bounds")
            }
        }
        // Both outcomes occur often, so the mutations exercise the checks
        // (seed 0x6b696c6e: 5,475 loaded, 4,525 refused).
        #expect(loaded + refused == 10_000)
        #expect(loaded >= 4000 && refused >= 3500, "loaded \(loaded), refused \(refused)")
    }
}
