/// Guest memory on the heap, for tests and pure tools: the same checks as
/// the mapped form, no system calls.
public final class HeapGuestMemory: GuestMemory, @unchecked Sendable { // bytes shared with the guest, copied in and out
    public let regions: [GuestMemoryRegion]
    private let storage: UnsafeMutableRawPointer

    public init(ranges: [GuestRange]) throws {
        let total = try GuestRange.validate(ranges, pageSize: 1)
        guard total <= 1 << 32 else { throw GuestMemoryLayoutError.heapTooLarge }
        let base = UnsafeMutableRawPointer.allocate(byteCount: Int(total), alignment: 4096)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Int(total))
        storage = base
        var offset = 0
        regions = ranges.map { range in
            defer { offset += Int(range.size) }
            return GuestMemoryRegion(guestAddress: range.address, size: range.size, host: base + offset)
        }
    }

    /// One region at guest address 0.
    public convenience init(size: UInt64) throws {
        try self.init(ranges: [GuestRange(address: 0, size: size)])
    }

    deinit { storage.deallocate() }
}
