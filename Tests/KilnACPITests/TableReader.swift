@testable import KilnACPI

/// Little-endian field access for assertions on built tables.
extension Array where Element == UInt8 {
    func read<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value |= T(self[offset + index]) << (8 * index) }
        return value
    }

    var byteSum: UInt8 { reduce(0, &+) }

    /// Counts (overlapping) matches, comparing in place: a copy of each
    /// window would cost the randomized pass most of its time.
    func occurrences(of needle: [UInt8]) -> Int {
        guard let first = needle.first, needle.count <= count else { return 0 }
        var found = 0
        for start in 0...(count - needle.count) where self[start] == first {
            if self[start..<(start + needle.count)].elementsEqual(needle) { found += 1 }
        }
        return found
    }
}

extension ACPITables {
    func blob(_ signature: String) -> Blob? { blobs.first { $0.signature == signature } }
}

/// One entry of the MADT's interrupt controller structure list.
struct MADTEntry {
    let type: UInt8
    let bytes: [UInt8]
}

func madtEntries(_ madt: [UInt8]) -> [MADTEntry] {
    var entries: [MADTEntry] = []
    var offset = MADTLayout.firstEntryOffset
    while offset + 2 <= madt.count {
        let length = Int(madt[offset + 1])
        guard length >= 2, offset + length <= madt.count else { break }
        entries.append(MADTEntry(type: madt[offset], bytes: Array(madt[offset..<(offset + length)])))
        offset += length
    }
    return entries
}

extension ACPIPlatform {
    static func sample(vcpus: Int = 2, devices: Int = 3) -> ACPIPlatform {
        ACPIPlatform(
            vcpuCount: vcpus,
            virtioDevices: (0..<devices).map {
                VirtioMMIODevice(base: 0xD000_0000 + UInt64($0) * 0x1000, gsi: UInt32(5 + $0))
            },
            sleepControlRegister: .ioPort(0x600), sleepStatusRegister: .ioPort(0x601),
            tablesAddress: 0x000E_1000, rsdpAddress: 0x000E_0000)
    }
}
