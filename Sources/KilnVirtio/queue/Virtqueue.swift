import KilnMemory
import Synchronization

/// A queue's configuration as the driver wrote it through the transport's
/// registers (virtio 1.2 §4.2.2: QueueNum, QueueDesc, QueueDriver, QueueDevice).
public struct QueueConfiguration: Equatable, Sendable {
    public var size: UInt16 = 0
    public var descriptorTable: UInt64 = 0
    /// The driver area: the available ring.
    public var availableRing: UInt64 = 0
    /// The device area: the used ring.
    public var usedRing: UInt64 = 0

    public init(size: UInt16 = 0, descriptorTable: UInt64 = 0, availableRing: UInt64 = 0, usedRing: UInt64 = 0) {
        self.size = size
        self.descriptorTable = descriptorTable
        self.availableRing = availableRing
        self.usedRing = usedRing
    }

    /// A split queue laid out in one piece from `base` (virtio 1.2 §2.7):
    /// the descriptor table, then the available ring, then the used ring on
    /// the next 4-byte boundary. How test and fuzzing drivers place theirs.
    public static func contiguous(base: UInt64, size: UInt16) -> QueueConfiguration {
        let availableRing = base + 16 * UInt64(size)
        return QueueConfiguration(
            size: size, descriptorTable: base, availableRing: availableRing,
            usedRing: (availableRing + 6 + 2 * UInt64(size) + 3) & ~3)
    }
}

/// A live split virtqueue (virtio 1.2 §2.7): pops available chains and
/// pushes used elements. Built only from a layout that passed `init`'s
/// checks, so the ring offsets below stay inside guest memory; every guest
/// value read afterwards (indices, heads, descriptors) is checked again.
public final class Virtqueue {
    public let index: Int
    public let configuration: QueueConfiguration
    let memory: GuestMemory
    let eventIndex: Bool
    let indirectDescriptors: Bool

    /// The next available-ring slot to read (the device's copy, §2.7.6).
    public private(set) var lastAvailable: UInt16 = 0
    /// The next used-ring slot to write; mirrors used->idx (§2.7.8).
    public private(set) var nextUsed: UInt16 = 0
    /// used->idx when the driver was last notified, for EVENT_IDX (§2.7.7).
    private var usedAtLastNotification: UInt16 = 0

    /// Chains `pop` may still hand out in this service call; see `beginService`.
    private var budget = Int.max
    /// Whether the last call was a `pop` that returned a chain, which
    /// `undoPop` may then give back.
    private var canUndoPop = false

    private var size: UInt16 { configuration.size }

    /// Checks the layout against §2.7 (sizes, alignment) and guest memory.
    public init(index: Int, configuration: QueueConfiguration, memory: GuestMemory, features: UInt64) throws {
        self.index = index
        self.configuration = configuration
        self.memory = memory
        self.eventIndex = features & VirtioFeature.eventIndex != 0
        self.indirectDescriptors = features & VirtioFeature.indirectDescriptors != 0
        try validateLayout()
    }

    private func validateLayout() throws {
        let size = UInt64(configuration.size)
        // §2.7: a split queue's size is a power of two, at most 32768.
        guard size > 0, size <= 32768, size & (size - 1) == 0 else {
            throw VirtqueueError(queue: index, .badLayout("size \(size) is not a power of two in 1...32768"))
        }
        // §2.7 table "Virtqueue Part Alignment and Size": 16, 2 and 4 bytes;
        // both rings carry the event-index word after their entries.
        let parts: [(String, UInt64, UInt64, UInt64)] = [
            ("descriptor table", configuration.descriptorTable, 16, 16 * size),
            ("available ring", configuration.availableRing, 2, 6 + 2 * size),
            ("used ring", configuration.usedRing, 4, 6 + 8 * size),
        ]
        for (name, address, alignment, length) in parts {
            guard address % alignment == 0 else {
                throw VirtqueueError(
                    queue: index,
                    .badLayout("\(name) at 0x\(String(address, radix: 16)) is not \(alignment)-byte aligned"))
            }
            guard memory.contains(address, length: Int(length)) else {
                throw VirtqueueError(queue: index, .memory(GuestRange(address: address, size: length)))
            }
        }
        // §2.7: three separate parts. Overlapping ones would have the device
        // write (§2.7.8, the used ring) what it then reads as the driver's.
        for first in parts.indices {
            for second in parts.indices where second > first {
                let (firstName, firstAddress, _, firstLength) = parts[first]
                let (secondName, secondAddress, _, secondLength) = parts[second]
                // Both ranges passed the memory check: no sum overflows.
                if firstAddress < secondAddress + secondLength && secondAddress < firstAddress + firstLength {
                    throw VirtqueueError(queue: index, .badLayout("\(firstName) overlaps the \(secondName)"))
                }
            }
        }
    }

    // MARK: Ring fields (§2.7.6, §2.7.8)

    private var availableFlagsAddress: UInt64 { configuration.availableRing }
    private var availableIndexAddress: UInt64 { configuration.availableRing + 2 }
    private func availableSlotAddress(_ slot: UInt16) -> UInt64 {
        configuration.availableRing + 4 + 2 * UInt64(slot % size)
    }
    /// used_event: the driver's "interrupt me after this used index".
    private var usedEventAddress: UInt64 { configuration.availableRing + 4 + 2 * UInt64(size) }

    private var usedFlagsAddress: UInt64 { configuration.usedRing }
    private var usedIndexAddress: UInt64 { configuration.usedRing + 2 }
    private func usedSlotAddress(_ slot: UInt16) -> UInt64 {
        configuration.usedRing + 4 + 8 * UInt64(slot % size)
    }
    /// avail_event: the device's "notify me after this available index".
    private var availableEventAddress: UInt64 { configuration.usedRing + 4 + 8 * UInt64(size) }

    private func load<T: FixedWidthInteger>(_ type: T.Type, at address: UInt64) throws -> T {
        do { return try memory.read(T.self, at: address) } catch {
            throw VirtqueueError(
                queue: index, .memory(GuestRange(address: address, size: UInt64(MemoryLayout<T>.size))))
        }
    }

    private func store<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws {
        do { try memory.write(value, at: address) } catch {
            throw VirtqueueError(
                queue: index, .memory(GuestRange(address: address, size: UInt64(MemoryLayout<T>.size))))
        }
    }

    // MARK: Popping and pushing

    /// Caps the chains popped until the next call. A driver that keeps
    /// adding buffers while the device drains them would otherwise hold the
    /// event loop forever; with a cap the loop serves other devices and comes
    /// back.
    public func beginService(budget: Int) {
        self.budget = budget
    }

    /// True when the last service stopped at its cap, not at an empty ring.
    public var budgetExhausted: Bool { budget <= 0 }

    /// The next available chain, or nil when the driver has offered none
    /// (or the service budget is spent).
    public func pop() throws -> DescriptorChain? {
        canUndoPop = false
        guard budget > 0 else { return nil }
        let available: UInt16 = try load(UInt16.self, at: availableIndexAddress)
        let pending = available &- lastAvailable
        if pending == 0 { return nil }
        // §2.7.13.3 (driver side): idx never runs more than the queue size ahead.
        guard pending <= size else {
            throw VirtqueueError(queue: index, .availableIndexJump(last: lastAvailable, now: available))
        }
        // Pairs with the driver's barrier before it moved idx (§2.7.13.3):
        // the ring slot and descriptors are read only after idx.
        atomicMemoryFence(ordering: .acquiring)
        let head: UInt16 = try load(UInt16.self, at: availableSlotAddress(lastAvailable))
        lastAvailable &+= 1
        budget -= 1
        guard head < size else { throw VirtqueueError(queue: index, .descriptorIndexOutOfRange(UInt32(head))) }
        let walker = DescriptorChainWalker(
            memory: memory, queue: index, tableAddress: configuration.descriptorTable,
            queueSize: size, indirectAllowed: indirectDescriptors)
        let chain = try walker.walk(head: head)
        canUndoPop = true
        return chain
    }

    /// Puts the chain the last `pop` returned back at the head of the ring,
    /// for a device that may not serve it yet (a rate limiter said no).
    ///
    /// Only lastAvailable moves back; nothing was written to the guest. The
    /// next `pop` reads that ring slot and walks its descriptors again, so a
    /// driver that rewrote them meanwhile (the spec forbids it while the
    /// buffer is the device's) gets its new chain checked like any other,
    /// and one that moved idx backwards trips the index-jump check. Only
    /// one undo per pop, so a device bug cannot step behind chains already
    /// used.
    public func undoPop() {
        precondition(canUndoPop, "undoPop without a chain just popped")
        canUndoPop = false
        lastAvailable &-= 1
        budget += 1
    }

    /// Returns a chain to the driver with the count of bytes the device
    /// wrote into it (§2.7.8: the element first, then the index).
    public func pushUsed(_ chain: DescriptorChain, written: UInt32) throws {
        canUndoPop = false
        // §2.7.8.1: len is at most the total writable length, never more.
        let length = UInt32(clamping: min(UInt64(written), chain.writableLength))
        let slot = usedSlotAddress(nextUsed)
        try store(UInt32(chain.head), at: slot)
        try store(length, at: slot + 4)
        // §2.7.8: the element must be visible before the index that publishes it.
        atomicMemoryFence(ordering: .releasing)
        nextUsed &+= 1
        try store(nextUsed, at: usedIndexAddress)
    }

    /// Whether the driver wants a used-buffer notification for what was
    /// pushed since the last call (§2.7.7: VIRTQ_AVAIL_F_NO_INTERRUPT, or
    /// used_event with EVENT_IDX).
    public func needsNotification() throws -> Bool {
        let old = usedAtLastNotification
        let new = nextUsed
        usedAtLastNotification = new
        guard new != old else { return false }
        // The used idx store must be ordered before the used_event or flags
        // load (store-load: a full fence even on x86), or a driver that just
        // re-enabled interrupts could be missed.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let usedEvent: UInt16 = try load(UInt16.self, at: usedEventAddress)
            // vring_need_event: did new pass used_event since old?
            return new &- usedEvent &- 1 < new &- old
        }
        let flags: UInt16 = try load(UInt16.self, at: availableFlagsAddress)
        return flags & 1 == 0
    }

    /// Asks the driver to notify, or not, when it adds buffers (§2.7.10:
    /// VIRTQ_USED_F_NO_NOTIFY, or avail_event with EVENT_IDX). Only a
    /// hint: the driver may notify anyway, and the device re-checks the ring
    /// after enabling, so no buffer is missed.
    public func setDriverNotifications(enabled: Bool) throws {
        if eventIndex {
            if enabled { try store(lastAvailable, at: availableEventAddress) }
        } else {
            try store(UInt16(enabled ? 0 : 1), at: usedFlagsAddress)
        }
        // The caller re-reads avail idx next: store-load ordering again.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// True when the driver has offered chains not yet popped.
    public func hasAvailable() throws -> Bool {
        try load(UInt16.self, at: availableIndexAddress) != lastAvailable
    }
}
