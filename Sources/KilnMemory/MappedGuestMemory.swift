import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Guest RAM backed by one private anonymous `MAP_NORESERVE` mapping:
/// untouched pages cost nothing, and the kernel may back it with
/// transparent huge pages when asked (MADV_HUGEPAGE; machine-config
/// `huge_pages` "Transparent", as Firecracker's API defines it), which a
/// shared (shmem) mapping would not get under the default
/// `shmem_enabled=never`. Not by default: a small guest's first touches
/// would each fault in and zero 2 MiB.
/// Nothing else needs to map guest RAM (no vhost-user, no snapshots), so it
/// need not be shared. Each guest range gets a slice of it, so the host side
/// is contiguous even where the guest side has the MMIO hole.
// @unchecked Sendable: bytes shared with the guest, copied in and out
public final class MappedGuestMemory: GuestMemory, @unchecked Sendable {
    public let regions: [GuestMemoryRegion]
    private let mapping: UnsafeMutableRawPointer
    private let mappingSize: Int

    public init(ranges: [GuestRange], transparentHugePages: Bool = false) throws {
        let total = try GuestRange.validate(ranges)
        guard total <= UInt64(Int.max) else { throw GuestMemoryLayoutError.mappingTooLarge }
        let size = Int(total)
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let address, address != MAP_FAILED else {
            throw SystemError.current("mmap", subject: "\(size >> 20) MiB of guest memory")
        }
        // Advice only: a host with THP disabled still runs the guest.
        if transparentHugePages { _ = madvise(address, size, MADV_HUGEPAGE) }
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
