import KilnSystem

/// The i8042 keyboard controller, kept to what a guest needs to reboot and to
/// probe it cleanly: the reset line (command 0xFE on port 0x64), the control
/// register (commands 0x20/0x60) and the self-test (0xAA -> 0x55), after the
/// IBM PC/AT technical reference. Ports 0x60 (data) and 0x64 (command/status)
/// map to offsets 0 and 4 of its window. The VMM can also type on the
/// keyboard: `pressCtrlAltDel()` queues the keys' scancodes and raises IRQ 1
/// for each byte the guest has not read yet, which Linux's atkbd turns into
/// a reboot. `LegacyDevices.wire` says where `reset` and `interrupt` go (the
/// machine stops with `.reset`; the irqfd of GSI 1).
public final class I8042Controller: BusDevice, @unchecked Sendable { // its closures capture only thread-safe objects
    enum Command {
        static let readControl: UInt8 = 0x20
        static let writeControl: UInt8 = 0x60
        static let selfTest: UInt8 = 0xaa
        static let pulseReset: UInt8 = 0xfe
    }

    static let statusOutputFull: UInt8 = 0x01
    static let statusSystemFlag: UInt8 = 0x04
    static let selfTestPassed: UInt8 = 0x55

    private struct State {
        var control: UInt8 = 0x01 // keyboard interrupt enabled
        var output: UInt8?
        var expectingControl = false
        /// Keyboard bytes not yet in the output register; bounded, as a
        /// real keyboard's buffer is.
        var keyboard: [UInt8] = []

        /// Moves the next keyboard byte into an empty output register.
        /// Returns whether to raise IRQ 1.
        mutating func loadKeyboardByte() -> Bool {
            guard output == nil, !keyboard.isEmpty else { return false }
            output = keyboard.removeFirst()
            return control & I8042Controller.controlKeyboardInterrupt != 0
        }
    }
    private let state = Locked(State())
    private let reset: () -> Void
    private let interrupt: () -> Void

    /// Set-2 make codes (the keyboard's native set; the i8042 translates
    /// only when the guest sets the control register's XLATE bit, and Linux
    /// reads raw set 2 otherwise): Left Ctrl, Left Alt, Delete (E0 71).
    static let ctrlAltDelScancodes: [UInt8] = [0x14, 0x11, 0xe0, 0x71]
    static let keyboardBufferLimit = 16
    static let controlKeyboardInterrupt: UInt8 = 0x01

    /// `interrupt` raises IRQ 1 (an edge: one per byte made available).
    public init(reset: @escaping () -> Void, interrupt: @escaping () -> Void = {}) {
        self.reset = reset
        self.interrupt = interrupt
    }

    /// Queues Ctrl+Alt+Del. Returns false when the keyboard buffer is full
    /// (the guest is not reading its keyboard).
    @discardableResult
    public func pressCtrlAltDel() -> Bool {
        let (queued, raise) = state.withLock { state -> (Bool, Bool) in
            guard state.keyboard.count + Self.ctrlAltDelScancodes.count <= Self.keyboardBufferLimit else {
                return (false, false)
            }
            state.keyboard += Self.ctrlAltDelScancodes
            return (true, state.loadKeyboardByte())
        }
        if raise { interrupt() }
        return queued
    }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard data.count == 1 else { return }
        let (value, raise) = state.withLock { state -> (UInt8, Bool) in
            switch offset {
            case 0:
                let value = state.output ?? 0
                state.output = nil
                return (value, state.loadKeyboardByte())
            case 4:
                return (
                    I8042Controller.statusSystemFlag | (state.output == nil ? 0 : I8042Controller.statusOutputFull),
                    false
                )
            default:
                return (0xff, false)
            }
        }
        data[0] = value
        if raise { interrupt() }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard data.count == 1 else { return }
        let value = data[0]
        let resetRequested = state.withLock { state -> Bool in
            switch offset {
            case 0 where state.expectingControl:
                state.control = value
                state.expectingControl = false
            case 4:
                switch value {
                case Command.readControl: state.output = state.control
                case Command.writeControl: state.expectingControl = true
                case Command.selfTest: state.output = I8042Controller.selfTestPassed
                case Command.pulseReset: return true
                default: break // port enables/disables and tests: accepted, no effect
                }
            default:
                break
            }
            return false
        }
        if resetRequested { reset() }
    }
}
