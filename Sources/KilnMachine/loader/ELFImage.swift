/// An x86_64 ELF executable (a vmlinux or the test guest), parsed and
/// checked without loading: System V ABI, "ELF Header" and "Program Header".
public struct ELFImage: Equatable, Sendable {
    public struct Segment: Equatable, Sendable {
        public let fileOffset: Int
        public let fileSize: Int
        public let physicalAddress: UInt64
        public let memorySize: UInt64
    }

    public let entry: UInt64
    /// PT_LOAD segments, loaded at their physical addresses.
    public let segments: [Segment]
    /// The 32-bit PVH entry from a Xen note (XEN_ELFNOTE_PHYS32_ENTRY), if any.
    public let pvhEntry: UInt64?

    static let magic: [UInt8] = [0x7f, 0x45, 0x4c, 0x46] // "\x7fELF"
    // EM_X86_64 (elf.h): the architecture's own spelling, kept.
    // swift-format-ignore: AlwaysUseLowerCamelCase
    static let machineX86_64: UInt16 = 62
    static let pointLoad: UInt32 = 1
    static let pointNote: UInt32 = 4
    static let xenNotePhys32Entry: UInt32 = 18

    public static func isELF(_ image: [UInt8]) -> Bool { image.starts(with: magic) }

    public init(image: [UInt8]) throws {
        let reader = KernelImageReader(image)
        guard ELFImage.isELF(image) else { throw KernelImageError.notAKernel("no ELF magic") }
        guard image.count >= 64 else {
            throw KernelImageError.truncated("ELF header needs 64 bytes, file has \(image.count)")
        }
        guard image[4] == 2, image[5] == 1 else {
            throw KernelImageError.unsupported("only 64-bit little-endian ELF is supported")
        }
        let type = try reader.u16(16)
        guard type == 2 else { throw KernelImageError.unsupported("ELF type \(type) is not an executable (ET_EXEC)") }
        guard try reader.u16(18) == ELFImage.machineX86_64 else {
            throw KernelImageError.unsupported("ELF machine is not x86_64")
        }
        entry = try reader.u64(24)
        let headerOffset = try reader.u64(32)
        let headerSize = Int(try reader.u16(54))
        let headerCount = Int(try reader.u16(56))
        guard headerSize >= 56 else {
            throw KernelImageError.malformed("program header size \(headerSize) is below 56")
        }
        guard headerCount > 0 else { throw KernelImageError.malformed("no program headers") }
        guard headerOffset <= UInt64(image.count),
            UInt64(headerCount * headerSize) <= UInt64(image.count) - headerOffset
        else { throw KernelImageError.truncated("program headers run past the end of the file") }

        var segments: [Segment] = []
        var pvhEntry: UInt64?
        for index in 0..<headerCount {
            let base = Int(headerOffset) + index * headerSize
            let kind = try reader.u32(base)
            let offset = try reader.u64(base + 8)
            let physical = try reader.u64(base + 24)
            let fileSize = try reader.u64(base + 32)
            let memorySize = try reader.u64(base + 40)
            guard offset <= UInt64(image.count), fileSize <= UInt64(image.count) - offset else {
                throw KernelImageError.truncated("segment \(index) runs past the end of the file")
            }
            switch kind {
            case ELFImage.pointLoad:
                guard fileSize <= memorySize else {
                    throw KernelImageError.malformed("segment \(index): file size exceeds memory size")
                }
                guard !physical.addingReportingOverflow(memorySize).overflow else {
                    throw KernelImageError.malformed("segment \(index): address overflows")
                }
                segments.append(
                    Segment(
                        fileOffset: Int(offset), fileSize: Int(fileSize),
                        physicalAddress: physical, memorySize: memorySize))
            case ELFImage.pointNote:
                pvhEntry = try ELFImage.pvhEntry(in: image, from: Int(offset), count: Int(fileSize)) ?? pvhEntry
            default:
                continue
            }
        }
        guard !segments.isEmpty else { throw KernelImageError.malformed("no PT_LOAD segments") }
        self.segments = segments
        self.pvhEntry = pvhEntry
    }

    /// Walks one PT_NOTE segment for Xen's PHYS32_ENTRY note (Linux
    /// arch/x86/platform/pvh; note layout: System V ABI "Note Section").
    static func pvhEntry(in image: [UInt8], from start: Int, count: Int) throws -> UInt64? {
        let reader = KernelImageReader(image)
        var cursor = start
        let end = start + count
        func aligned(_ value: Int) -> Int { (value + 3) & ~3 }
        while cursor + 12 <= end {
            let nameSize = Int(try reader.u32(cursor))
            let descriptorSize = Int(try reader.u32(cursor + 4))
            let type = try reader.u32(cursor + 8)
            let name = cursor + 12
            let descriptor = name + aligned(nameSize)
            // The name and the descriptor lie inside the segment (only the
            // last one's padding may be cut off); the sizes are bounded
            // first, so the sums cannot overflow.
            guard nameSize <= count, descriptorSize <= count, descriptor + descriptorSize <= end else {
                throw KernelImageError.malformed("ELF note at offset \(cursor) overruns its segment")
            }
            if type == xenNotePhys32Entry, nameSize == 4, Array(image[name..<name + 4]) == Array("Xen\0".utf8) {
                switch descriptorSize {
                case 4: return UInt64(try reader.u32(descriptor))
                case 8: return try reader.u64(descriptor)
                default: throw KernelImageError.malformed("PVH entry note has \(descriptorSize) bytes")
                }
            }
            cursor = descriptor + aligned(descriptorSize)
        }
        return nil
    }
}
