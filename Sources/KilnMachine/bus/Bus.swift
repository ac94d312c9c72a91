import KilnTelemetry

/// A device that answers reads and writes in an address window: the one
/// device protocol of both buses. `offset` is relative to the window's
/// base; `data` is the access (1, 2, 4 or 8 bytes for MMIO; 1, 2 or 4 for
/// port I/O), little-endian as on the wire.
public protocol BusDevice: AnyObject {
    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer)
    func write(offset: UInt64, from data: UnsafeRawBufferPointer)
}

/// An address space (port I/O or MMIO) mapping disjoint windows to devices.
/// Built before the vCPUs start and read-only afterwards, so lookups need no
/// lock; devices guard their own state.
///
/// A guest access arrives from `VCPUExitDispatcher` (`vcpu/VCPUThread.swift`)
/// and goes to the window's device, counted on the way: the devices and
/// their windows are wired in `LegacyDevices.wire`
/// (`devices/legacy/LegacyDevices.swift`) and `VirtioDeviceManager.wire`
/// (`devices/virtio/VirtioDeviceManager.swift`).
public final class Bus: @unchecked Sendable { // windows are added before the vCPUs start, only read after
    public struct Window {
        public let base: UInt64
        public let size: UInt64
        public let device: BusDevice
        /// The device's accesses in the metrics; nil for none.
        let counters: AccessCounters?
        public var end: UInt64 { base + size }
    }

    /// A window's reads and writes (a metrics group's `reads` and `writes`).
    public struct AccessCounters: Sendable {
        let reads: Counter
        let writes: Counter

        public init(reads: Counter, writes: Counter) {
            self.reads = reads
            self.writes = writes
        }
    }

    public let name: String
    public private(set) var windows: [Window] = []

    public init(name: String) { self.name = name }

    /// A window the bus cannot take: the machine's own layout is wrong.
    public struct OverlapError: Error, Equatable, CustomStringConvertible, Sendable {
        public enum Reason: Equatable, Sendable {
            /// Empty, or past the end of the address space.
            case invalidSize(base: UInt64)
            case overlaps(base: UInt64, size: UInt64, existingBase: UInt64, existingSize: UInt64)
        }

        public let bus: String
        public let reason: Reason

        public var description: String {
            switch reason {
            case .invalidSize(let base): "\(bus) window at 0x\(String(base, radix: 16)) has an invalid size"
            case .overlaps(let base, let size, let existingBase, let existingSize):
                "\(bus) window 0x\(String(base, radix: 16))+0x\(String(size, radix: 16)) "
                    + "overlaps 0x\(String(existingBase, radix: 16))+0x\(String(existingSize, radix: 16))"
            }
        }
    }

    public func insert(_ device: BusDevice, base: UInt64, size: UInt64, counters: AccessCounters? = nil) throws {
        guard size > 0, !base.addingReportingOverflow(size).overflow else {
            throw OverlapError(bus: name, reason: .invalidSize(base: base))
        }
        if let clash = windows.first(where: { base < $0.end && $0.base < base + size }) {
            throw OverlapError(
                bus: name,
                reason: .overlaps(
                    base: base, size: size, existingBase: clash.base,
                    existingSize: clash.size))
        }
        windows.append(Window(base: base, size: size, device: device, counters: counters))
        windows.sort { $0.base < $1.base }
    }

    /// The window and offset for an access, which must fit in one window.
    func route(_ address: UInt64, length: Int) -> (window: Window, offset: UInt64)? {
        var low = 0, high = windows.count
        while low < high {
            let middle = (low + high) / 2
            if windows[middle].end <= address { low = middle + 1 } else { high = middle }
        }
        guard low < windows.count else { return nil }
        let window = windows[low]
        guard address >= window.base, UInt64(length) <= window.end - address else { return nil }
        return (window, address - window.base)
    }

    /// Dispatches a read; unclaimed addresses read as all ones, like an
    /// unpopulated ISA bus. Returns false when no device claims it.
    @discardableResult
    public func read(_ address: UInt64, into data: UnsafeMutableRawBufferPointer) -> Bool {
        guard let (window, offset) = route(address, length: data.count) else {
            for index in data.indices { data[index] = 0xff }
            return false
        }
        window.counters?.reads.increment()
        window.device.read(offset: offset, into: data)
        return true
    }

    /// Dispatches a write; unclaimed writes are dropped. Returns false then.
    @discardableResult
    public func write(_ address: UInt64, from data: UnsafeRawBufferPointer) -> Bool {
        guard let (window, offset) = route(address, length: data.count) else { return false }
        window.counters?.writes.increment()
        window.device.write(offset: offset, from: data)
        return true
    }
}
