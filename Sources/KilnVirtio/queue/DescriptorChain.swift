import KilnMemory

/// One guest buffer of a chain, checked to lie inside one region of guest
/// memory when the chain was walked.
public struct GuestBuffer: Equatable, Sendable {
    public let address: UInt64
    public let length: UInt32

    public init(address: UInt64, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// A descriptor chain read once out of guest memory and fully checked:
/// every index in range, no loop, the length within limits, readable
/// buffers before writable ones, every buffer inside guest memory. Devices
/// then work on these copies, never on the guest's descriptors, so a driver
/// that rewrites its table meanwhile changes nothing (virtio 1.2 §2.7.5).
public struct DescriptorChain: Equatable, Sendable {
    /// The head index, which goes back in the used element (§2.7.8).
    public let head: UInt16
    /// Device-readable buffers, in chain order (§2.7.4).
    public let readable: [GuestBuffer]
    /// Device-writable buffers, in chain order, all after the readable ones.
    public let writable: [GuestBuffer]

    public var readableLength: UInt64 { readable.reduce(0) { $0 + UInt64($1.length) } }
    public var writableLength: UInt64 { writable.reduce(0) { $0 + UInt64($1.length) } }
}

/// Split-queue descriptor layout and flags (virtio 1.2 §2.7.5).
enum SplitDescriptor {
    static let size: UInt64 = 16
    static let next: UInt16 = 1
    static let write: UInt16 = 2
    static let indirect: UInt16 = 4

    /// The largest indirect table accepted, in entries. The spec leaves the
    /// bound to the device (§2.7.5.3.1); QEMU and Linux use 1024.
    static let maxIndirectEntries: UInt32 = 1024
}

/// Walks one chain from its head. Pure: reads descriptors through the
/// `GuestMemory` protocol and returns a `DescriptorChain` or a reason.
struct DescriptorChainWalker {
    let memory: GuestMemory
    let queue: Int
    let tableAddress: UInt64
    let queueSize: UInt16
    let indirectAllowed: Bool

    func walk(head: UInt16) throws -> DescriptorChain {
        var readable: [GuestBuffer] = []
        var writable: [GuestBuffer] = []
        try follow(
            table: tableAddress, entries: UInt32(queueSize), from: UInt32(head),
            insideIndirect: false, readable: &readable, writable: &writable)
        return DescriptorChain(head: head, readable: readable, writable: writable)
    }

    /// Follows `next` links through one table. The number of descriptors
    /// visited is capped at the table's size (§2.7.5.2: no chain longer than
    /// the queue size), which also ends any loop.
    private func follow(
        table: UInt64, entries: UInt32, from start: UInt32, insideIndirect: Bool,
        readable: inout [GuestBuffer], writable: inout [GuestBuffer]
    ) throws {
        var index = start
        var visited: UInt32 = 0
        while true {
            guard index < entries else { throw fail(.descriptorIndexOutOfRange(index)) }
            guard visited < entries else { throw fail(.chainTooLong(limit: Int(entries))) }
            visited += 1
            // index < entries <= 32768 or 1024, so the offset cannot overflow
            // before the memory check, which catches table + offset.
            let entry = try readDescriptor(table: table, index: index)

            if entry.flags & SplitDescriptor.indirect != 0 {
                // §2.7.5.3.1: one level only, never with NEXT, only when negotiated.
                guard indirectAllowed, !insideIndirect, entry.flags & SplitDescriptor.next == 0 else {
                    throw fail(.indirectNotAllowed)
                }
                // §2.7.5.3.2: the WRITE flag of the descriptor naming the table is ignored.
                let count = entry.length / UInt32(SplitDescriptor.size)
                guard entry.length > 0, entry.length % UInt32(SplitDescriptor.size) == 0,
                    count <= SplitDescriptor.maxIndirectEntries
                else {
                    throw fail(.badIndirectTable(length: entry.length))
                }
                try checkInMemory(entry.address, UInt64(entry.length))
                try follow(
                    table: entry.address, entries: count, from: 0, insideIndirect: true,
                    readable: &readable, writable: &writable)
                return
            }

            try checkInMemory(entry.address, UInt64(entry.length))
            let buffer = GuestBuffer(address: entry.address, length: entry.length)
            if entry.flags & SplitDescriptor.write != 0 {
                writable.append(buffer)
            } else {
                // §2.7.4.2: device-writable descriptors come after all readable ones.
                guard writable.isEmpty else { throw fail(.readableAfterWritable) }
                readable.append(buffer)
            }
            guard entry.flags & SplitDescriptor.next != 0 else { return }
            index = UInt32(entry.next)
        }
    }

    private struct Entry {
        let address: UInt64
        let length: UInt32
        let flags: UInt16
        let next: UInt16
    }

    /// One 16-byte descriptor, copied out of guest memory in one read.
    private func readDescriptor(table: UInt64, index: UInt32) throws -> Entry {
        let offset = UInt64(index) * SplitDescriptor.size
        let (address, overflow) = table.addingReportingOverflow(offset)
        guard !overflow else { throw fail(.memory(GuestRange(address: table, size: offset))) }
        var raw = (UInt64(0), UInt64(0))
        do {
            try withUnsafeMutableBytes(of: &raw) { try memory.read(into: $0, at: address) }
        } catch {
            throw fail(.memory(GuestRange(address: address, size: SplitDescriptor.size)))
        }
        let second = UInt64(littleEndian: raw.1)
        return Entry(
            address: UInt64(littleEndian: raw.0),
            length: UInt32(truncatingIfNeeded: second),
            flags: UInt16(truncatingIfNeeded: second >> 32),
            next: UInt16(truncatingIfNeeded: second >> 48))
    }

    private func checkInMemory(_ address: UInt64, _ length: UInt64) throws {
        guard memory.contains(address, length: Int(length)) else {
            throw fail(.memory(GuestRange(address: address, size: length)))
        }
    }

    private func fail(_ reason: VirtqueueError.Reason) -> VirtqueueError {
        VirtqueueError(queue: queue, reason)
    }
}
