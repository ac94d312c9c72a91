/// The i8042 keyboard controller, kept to what a guest needs to reboot and to
/// probe it cleanly: the reset line (command 0xFE on port 0x64), the control
/// register (commands 0x20/0x60) and the self-test (0xAA -> 0x55), after the
/// IBM PC/AT technical reference. Ports 0x60 (data) and 0x64 (command/status)
/// map to offsets 0 and 4 of its window.
public final class I8042Controller: BusDevice, @unchecked Sendable {
    enum Command {
        static let readControl: UInt8 = 0x20
        static let writeControl: UInt8 = 0x60
        static let selfTest: UInt8 = 0xaa
        static let pulseReset: UInt8 = 0xfe
    }

    static let statusOutputFull: UInt8 = 0x01
    static let statusSystemFlag: UInt8 = 0x04
    static let selfTestPassed: UInt8 = 0x55

    private let lock = Lock()
    private var control: UInt8 = 0x01 // keyboard interrupt enabled
    private var output: UInt8?
    private var expectingControl = false
    private let reset: () -> Void

    public init(reset: @escaping () -> Void) { self.reset = reset }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        guard data.count == 1 else { return }
        data[0] = lock.withLock {
            switch offset {
            case 0:
                defer { output = nil }
                return output ?? 0
            case 4:
                return I8042Controller.statusSystemFlag | (output == nil ? 0 : I8042Controller.statusOutputFull)
            default:
                return 0xff
            }
        }
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard data.count == 1 else { return }
        let value = data[0]
        let resetRequested = lock.withLock { () -> Bool in
            switch offset {
            case 0 where expectingControl:
                control = value
                expectingControl = false
            case 4:
                switch value {
                case Command.readControl: output = control
                case Command.writeControl: expectingControl = true
                case Command.selfTest: output = I8042Controller.selfTestPassed
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
