import KilnSystem

/// The 8250 UART on the port bus: the pure register state machine
/// (`UART8250`) behind a lock, with the console sink and the interrupt line
/// wired to the VMM. The last hop of a guest port write: the bus hands the
/// access here (`Bus.write`), and `LegacyDevices.wire` says where `output`
/// and `interrupt` go (the console, the irqfd of GSI 4).
public final class SerialDevice: BusDevice, @unchecked Sendable { // its closures capture only thread-safe objects
    private let uart = Locked(UART8250())
    private let output: ([UInt8]) -> Void
    private let interrupt: () -> Void

    /// - Parameters:
    ///   - output: receives transmitted bytes (stdout, a file or a FIFO).
    ///   - interrupt: pulses the UART's IRQ line.
    public init(output: @escaping ([UInt8]) -> Void, interrupt: @escaping () -> Void) {
        self.output = output
        self.interrupt = interrupt
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard data.count == 1 else { data.initializeMemory(as: UInt8.self, repeating: 0); return }
        data[0] = uart.withLock { $0.read(Int(offset)) }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard data.count == 1 else { return }
        let effects = uart.withLock { $0.write(Int(offset), data[0]) }
        if !effects.output.isEmpty { output(effects.output) }
        if effects.interrupt { interrupt() }
    }

    /// Host input (stdin) for the guest.
    public func enqueueInput(_ bytes: [UInt8]) {
        if uart.withLock({ $0.receive(bytes) }) { interrupt() }
    }

    public var canReceive: Bool { uart.withLock { $0.canReceive } }
}
