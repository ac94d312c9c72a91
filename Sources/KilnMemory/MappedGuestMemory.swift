#if canImport(Glibc)
import Glibc
#endif
import KilnSystem

/// Guest RAM backed by one anonymous `MAP_SHARED | MAP_NORESERVE` mapping:
/// untouched pages cost nothing, and the mapping can later be shared with a
/// vhost or snapshot process. Each guest range gets a slice of it, so the
/// host side is contiguous even where the guest side has the MMIO hole.
public final class MappedGuestMemory: GuestMemory, @unchecked Sendable {
    public let regions: [GuestMemoryRegion]
    private let mapping: UnsafeMutableRawPointer
    private let mappingSize: Int

    public init(ranges: [GuestRange]) throws {
        let total = try GuestRange.validate(ranges)
        guard total <= UInt64(Int.max) else { throw GuestMemoryLayoutError("guest memory too large") }
        let size = Int(total)
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let address, address != MAP_FAILED else {
            throw SystemError.current("mmap", subject: "\(size >> 20) MiB of guest memory")
        }
        mapping = address
        mappingSize = size
        var offset = 0
        regions = ranges.map { range in
            defer { offset += Int(range.size) }
            return GuestMemoryRegion(guestAddress: range.address, size: range.size, host: address + offset)
        }
    }

    deinit { munmap(mapping, mappingSize) }
}
