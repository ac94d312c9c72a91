/// Guest-physical memory as the VMM sees it: a set of disjoint regions, each
/// a contiguous run of host memory. Every access is checked here, once, at the
/// boundary: a guest-supplied address or length that overflows, falls in a
/// hole, or runs off the end of a region is an error, never a host access.
///
/// The guest can change its memory at any time from another vCPU, so callers
/// must treat every value read as untrusted and read it once.
public protocol GuestMemory: AnyObject {
    /// Disjoint regions sorted by guest address; fixed for the memory's lifetime.
    var regions: [GuestMemoryRegion] { get }
}

/// One contiguous range of guest-physical memory and its host mapping.
public struct GuestMemoryRegion: @unchecked Sendable, Equatable { // `host` is fixed while its memory lives
    public let guestAddress: UInt64
    public let size: UInt64
    /// The host address of `guestAddress`; valid for `size` bytes while the
    /// owning `GuestMemory` lives.
    public let host: UnsafeMutableRawPointer

    public init(guestAddress: UInt64, size: UInt64, host: UnsafeMutableRawPointer) {
        self.guestAddress = guestAddress
        self.size = size
        self.host = host
    }

    /// One past the last guest address; regions are validated not to overflow.
    public var guestEnd: UInt64 { guestAddress + size }

    public func contains(_ address: UInt64) -> Bool {
        address >= guestAddress && address - guestAddress < size
    }
}

/// A guest access that the memory refuses.
public struct GuestMemoryError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Reason: Equatable, Sendable {
        /// address + length does not fit in 64 bits.
        case overflow
        /// Some byte of the range is outside every region (or spans two).
        case outOfBounds
    }

    public let address: UInt64
    public let length: UInt64
    public let reason: Reason

    public init(address: UInt64, length: UInt64, reason: Reason) {
        self.address = address
        self.length = length
        self.reason = reason
    }

    public var description: String {
        let range = "guest range 0x\(String(address, radix: 16)) + \(length)"
        switch reason {
        case .overflow: return "\(range): address overflows"
        case .outOfBounds: return "\(range): not inside guest memory"
        }
    }
}

/// Layout problems found when regions are built.
public enum GuestMemoryLayoutError: Error, Equatable, CustomStringConvertible, Sendable {
    case noRegions
    case emptyRegion(GuestRange)
    case unalignedRegion(GuestRange)
    case wrappingRegion(GuestRange)
    /// Regions must be sorted and disjoint.
    case regionOutOfOrder(GuestRange)
    case tooLargeInTotal
    /// More than one host mapping can hold.
    case mappingTooLarge
    /// Heap memory is for tests of a few pages, not for a guest.
    case heapTooLarge
    /// The machine's own bounds on its memory size.
    case belowMinimum(bytes: UInt64)
    case aboveMaximum(bytes: UInt64)
    case notWholePages

    public var description: String {
        switch self {
        case .noRegions: "no memory regions"
        case .emptyRegion(let range): "region \(range) is empty"
        case .unalignedRegion(let range): "region \(range) is not page aligned"
        case .wrappingRegion(let range): "region \(range) wraps the address space"
        case .regionOutOfOrder(let range): "region \(range) overlaps or precedes the one before it"
        case .tooLargeInTotal: "regions are too large in total"
        case .mappingTooLarge: "guest memory too large"
        case .heapTooLarge: "heap guest memory is for small tests"
        case .belowMinimum(let bytes): "guest memory must be at least \(bytes >> 20) MiB"
        case .aboveMaximum(let bytes): "guest memory must be at most \(bytes >> 30) GiB"
        case .notWholePages: "guest memory must be whole pages"
        }
    }
}

/// A requested region before it has host memory: guest address and size.
public struct GuestRange: Equatable, Sendable, CustomStringConvertible {
    public let address: UInt64
    public let size: UInt64

    public init(address: UInt64, size: UInt64) {
        self.address = address
        self.size = size
    }

    public var description: String {
        "[0x\(String(address, radix: 16)), +0x\(String(size, radix: 16)))"
    }

    /// Checks that ranges are non-empty, sorted, disjoint, page aligned and
    /// do not wrap the address space; returns their total size.
    public static func validate(_ ranges: [GuestRange], pageSize: UInt64 = 4096) throws -> UInt64 {
        guard !ranges.isEmpty else { throw GuestMemoryLayoutError.noRegions }
        var total: UInt64 = 0
        var previousEnd: UInt64 = 0
        for (index, range) in ranges.enumerated() {
            guard range.size > 0 else { throw GuestMemoryLayoutError.emptyRegion(range) }
            guard range.address % pageSize == 0, range.size % pageSize == 0 else {
                throw GuestMemoryLayoutError.unalignedRegion(range)
            }
            let (end, wraps) = range.address.addingReportingOverflow(range.size)
            guard !wraps else { throw GuestMemoryLayoutError.wrappingRegion(range) }
            guard index == 0 || range.address >= previousEnd else {
                throw GuestMemoryLayoutError.regionOutOfOrder(range)
            }
            let (sum, tooBig) = total.addingReportingOverflow(range.size)
            guard !tooBig else { throw GuestMemoryLayoutError.tooLargeInTotal }
            total = sum
            previousEnd = end
        }
        return total
    }
}

extension GuestMemory {
    /// The host bytes for `[address, address + length)`, which must lie in
    /// one region. This is the single bounds check every accessor goes through.
    public func hostBuffer(at address: UInt64, length: Int) throws -> UnsafeMutableRawBufferPointer {
        guard length >= 0 else {
            throw GuestMemoryError(address: address, length: 0, reason: .outOfBounds)
        }
        let count = UInt64(length)
        guard !address.addingReportingOverflow(count).overflow else {
            throw GuestMemoryError(address: address, length: count, reason: .overflow)
        }
        // Regions are few (two around the MMIO hole); a linear scan is fastest.
        for region in regions where region.contains(address) || (count == 0 && address == region.guestEnd) {
            let offset = address - region.guestAddress
            guard count <= region.size - offset else { break }
            return UnsafeMutableRawBufferPointer(start: region.host + Int(offset), count: length)
        }
        throw GuestMemoryError(address: address, length: count, reason: .outOfBounds)
    }

    /// True when the whole range is backed by one region.
    public func contains(_ address: UInt64, length: Int) -> Bool {
        (try? hostBuffer(at: address, length: length)) != nil
    }

    /// The highest guest address plus one.
    public var guestEnd: UInt64 { regions.last?.guestEnd ?? 0 }

    public func readBytes(at address: UInt64, count: Int) throws -> [UInt8] {
        let source = try hostBuffer(at: address, length: count)
        return Array(UnsafeRawBufferPointer(source))
    }

    public func read(into destination: UnsafeMutableRawBufferPointer, at address: UInt64) throws {
        let source = try hostBuffer(at: address, length: destination.count)
        if let base = destination.baseAddress, let from = source.baseAddress {
            base.copyMemory(from: from, byteCount: destination.count)
        }
    }

    // The generic accessors are inlinable so that callers in other modules
    // get them specialized: unspecialized, each call looks the collection's
    // or integer's witnesses up at run time (loading a kernel image spent
    // 170 k instructions there, 6% of a launch). Callers hold an
    // `any GuestMemory`, and the optimizer does not specialize for `C` alone
    // while `Self` stays open, so this one is inlined outright.
    @inlinable @inline(__always)
    public func write<C: Collection>(_ bytes: C, at address: UInt64) throws where C.Element == UInt8 {
        let destination = try hostBuffer(at: address, length: bytes.count)
        // Arrays and their slices (kernel images of tens of MiB) copy as one
        // block; the element-wise path is for other collections.
        let copied = bytes.withContiguousStorageIfAvailable { source -> Bool in
            if let base = destination.baseAddress, let from = source.baseAddress {
                base.copyMemory(from: from, byteCount: source.count)
            }
            return true
        }
        if copied == nil { _ = destination.initializeMemory(as: UInt8.self, from: bytes) }
    }

    /// Fills a range with one byte value (zeroing the boot structures).
    public func fill(_ value: UInt8, at address: UInt64, count: Int) throws {
        let destination = try hostBuffer(at: address, length: count)
        if let base = destination.baseAddress { base.initializeMemory(as: UInt8.self, repeating: value, count: count) }
    }

    /// A little-endian integer at any alignment (guest structures are packed).
    @inlinable
    public func read<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: UInt64) throws -> T {
        let source = try hostBuffer(at: address, length: MemoryLayout<T>.size)
        return T(littleEndian: source.loadUnaligned(as: T.self))
    }

    @inlinable
    public func write<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws {
        let destination = try hostBuffer(at: address, length: MemoryLayout<T>.size)
        destination.storeBytes(of: value.littleEndian, as: T.self)
    }

    /// A NUL-terminated string of at most `limit` bytes (the NUL excluded).
    public func readCString(at address: UInt64, limit: Int) throws -> String {
        var bytes: [UInt8] = []
        var cursor = address
        while bytes.count < limit {
            let byte: UInt8 = try read(at: cursor)
            if byte == 0 { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
            cursor += 1
        }
        throw GuestMemoryError(address: address, length: UInt64(limit), reason: .outOfBounds)
    }
}
