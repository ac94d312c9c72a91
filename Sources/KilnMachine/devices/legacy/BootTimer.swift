import KilnSystem

/// The boot-timer device: when the guest writes the magic byte (123, as
/// Firecracker's guest tooling does) at offset 0, the VMM logs how long the
/// boot took from its own start. One MMIO page. `LegacyDevices.wire` says
/// where `report` goes (the log and the `boot` metrics).
public final class BootTimer: BusDevice, @unchecked Sendable { // `report` runs once (under `reported`), from any thread
    public static let magic: UInt8 = 123
    private let report: () -> Void
    private let reported = Locked(false)

    public init(report: @escaping () -> Void) { self.report = report }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        data.initializeMemory(as: UInt8.self, repeating: 0)
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard offset == 0, data.first == BootTimer.magic else { return }
        let first = reported.withLock { reported in
            defer { reported = true }
            return !reported
        }
        if first { report() }
    }
}
