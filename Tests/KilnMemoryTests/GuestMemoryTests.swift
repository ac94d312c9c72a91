import Testing

@testable import KilnMemory

#if canImport(Glibc)
    import Glibc
#endif

/// Two regions around a hole, as the machine lays out RAM around the MMIO gap.
private func splitMemory() throws -> HeapGuestMemory {
    try HeapGuestMemory(ranges: [
        GuestRange(address: 0, size: 0x1000),
        GuestRange(address: 0x4000, size: 0x2000),
    ])
}

@Test func littleEndianIntegersRoundTripAtAnyAlignment() throws {
    let memory = try splitMemory()
    try memory.write(UInt32(0x1122_3344), at: 0x4001)
    #expect(try memory.readBytes(at: 0x4001, count: 4) == [0x44, 0x33, 0x22, 0x11])
    #expect(try memory.read(UInt32.self, at: 0x4001) == 0x1122_3344)
    try memory.write(UInt64.max - 1, at: 0xff8)
    #expect(try memory.read(UInt64.self, at: 0xff8) == UInt64.max - 1)
    #expect(try memory.read(UInt16.self, at: 0x4002) == 0x2233)
}

@Test func accessesOutsideRegionsAreRefused() throws {
    let memory = try splitMemory()
    // In the hole, straddling a region's end, and past the last region.
    #expect(throws: GuestMemoryError(address: 0x2000, length: 1, reason: .outOfBounds)) {
        try memory.read(UInt8.self, at: 0x2000)
    }
    #expect(throws: GuestMemoryError(address: 0xffe, length: 4, reason: .outOfBounds)) {
        try memory.read(UInt32.self, at: 0xffe)
    }
    #expect(throws: GuestMemoryError(address: 0x5fff, length: 2, reason: .outOfBounds)) {
        try memory.write(UInt16(1), at: 0x5fff)
    }
    #expect(throws: GuestMemoryError(address: 0x6000, length: 1, reason: .outOfBounds)) {
        try memory.write([1], at: 0x6000)
    }
    #expect(!memory.contains(0x3fff, length: 2))
    #expect(memory.contains(0x4000, length: 0x2000))
}

@Test func addressOverflowIsRefusedNotWrapped() throws {
    let memory = try splitMemory()
    #expect(throws: GuestMemoryError(address: UInt64.max - 1, length: 4, reason: .overflow)) {
        try memory.read(UInt32.self, at: UInt64.max - 1)
    }
    #expect(throws: GuestMemoryError.self) { try memory.readBytes(at: 0, count: -1) }
}

@Test func bulkBytesAndCStrings() throws {
    let memory = try splitMemory()
    try memory.write(Array("console=ttyS0\0junk".utf8), at: 0x4100)
    #expect(try memory.readCString(at: 0x4100, limit: 64) == "console=ttyS0")
    #expect(throws: GuestMemoryError.self) { try memory.readCString(at: 0x4100, limit: 4) }
    try memory.fill(0xaa, at: 0x10, count: 3)
    #expect(try memory.readBytes(at: 0xf, count: 5) == [0, 0xaa, 0xaa, 0xaa, 0])
    var buffer = [UInt8](repeating: 0, count: 3)
    try buffer.withUnsafeMutableBytes { try memory.read(into: $0, at: 0x10) }
    #expect(buffer == [0xaa, 0xaa, 0xaa])
}

@Test func layoutValidationRejectsBadRanges() {
    #expect(throws: GuestMemoryLayoutError.noRegions) { try GuestRange.validate([]) }
    #expect(throws: GuestMemoryLayoutError.emptyRegion(GuestRange(address: 0, size: 0))) {
        try GuestRange.validate([GuestRange(address: 0, size: 0)])
    }
    let overlapping = #expect(
        throws: GuestMemoryLayoutError.regionOutOfOrder(GuestRange(address: 0x2000, size: 0x1000))
    ) {
        try GuestRange.validate([GuestRange(address: 0x1000, size: 0x2000), GuestRange(address: 0x2000, size: 0x1000)])
    }
    #expect(overlapping?.description == "region [0x2000, +0x1000) overlaps or precedes the one before it")
    #expect(throws: GuestMemoryLayoutError.unalignedRegion(GuestRange(address: 0x800, size: 0x1000))) {
        try GuestRange.validate([GuestRange(address: 0x800, size: 0x1000)])
    }
    #expect(throws: GuestMemoryLayoutError.wrappingRegion(GuestRange(address: UInt64.max - 0xfff, size: 0x2000))) {
        try GuestRange.validate([GuestRange(address: UInt64.max - 0xfff, size: 0x2000)])
    }
    #expect(
        (try? GuestRange.validate([GuestRange(address: 0, size: 0x1000), GuestRange(address: 0x3000, size: 0x1000)]))
            == 0x2000)
}

@Test func mappedMemorySlicesOneMappingAcrossTheHole() throws {
    let memory = try MappedGuestMemory(ranges: [
        GuestRange(address: 0, size: 1 << 20),
        GuestRange(address: 4 << 20, size: 2 << 20),
    ])
    #expect(memory.regions.count == 2)
    #expect(memory.regions[1].host == memory.regions[0].host + (1 << 20))
    try memory.write(UInt64(0xdead_beef), at: (6 << 20) - 8)
    #expect(try memory.read(UInt64.self, at: (6 << 20) - 8) == 0xdead_beef)
    // Fresh anonymous memory reads as zero.
    #expect(try memory.read(UInt64.self, at: 4 << 20) == 0)
    #expect(throws: GuestMemoryError.self) { try memory.read(UInt8.self, at: 2 << 20) }
    #expect(memory.guestEnd == 6 << 20)
}

/// The VmFlags of the /proc/self/smaps entry holding `address` (the kernel
/// may merge neighbours with the same flags into one entry).
private func mappingFlags(at address: UnsafeMutableRawPointer) throws -> [Substring] {
    let descriptor = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { throw SmapsLookupError(description: "cannot open /proc/self/smaps") }
    defer { close(descriptor) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    let text = String(decoding: bytes, as: UTF8.self)
    let wanted = UInt(bitPattern: address)
    var inMapping = false
    for line in text.split(separator: "\n") {
        let bounds = line.split(separator: " ").first?.split(separator: "-").compactMap { UInt($0, radix: 16) } ?? []
        if bounds.count == 2 {
            inMapping = bounds[0] <= wanted && wanted < bounds[1]
        } else if inMapping && line.hasPrefix("VmFlags:") {
            return line.split(separator: " ").dropFirst().map { $0 }
        }
    }
    throw SmapsLookupError(description: "no mapping holds 0x\(String(wanted, radix: 16)) in /proc/self/smaps")
}

/// The test could not read the flags it asked `/proc/self/smaps` for.
private struct SmapsLookupError: Error, CustomStringConvertible {
    let description: String
}

@Test func transparentHugePagesAreAskedForOnlyWhenConfigured() throws {
    let plain = try MappedGuestMemory(ranges: [GuestRange(address: 0, size: 4 << 20)])
    let huge = try MappedGuestMemory(ranges: [GuestRange(address: 0, size: 4 << 20)], transparentHugePages: true)
    // "hg": the mapping carries MADV_HUGEPAGE (proc(5), VmFlags).
    #expect(!(try mappingFlags(at: plain.regions[0].host).contains("hg")))
    #expect(try mappingFlags(at: huge.regions[0].host).contains("hg"))
}
