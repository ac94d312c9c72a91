import KilnBytes
import KilnVirtio

/// One step of a hostile guest (or host input) against the legacy devices.
public enum LegacyFuzzOperation: FuzzOperation, Equatable, Sendable {
    /// A UART register access (offset 0–7 from 0x3f8).
    case uartWrite(register: UInt8, value: UInt8)
    case uartRead(register: UInt8)
    /// `count` bytes of host input (stdin) for the UART.
    case uartInput(count: Int)
    /// A port access in 0x50–0x7F through the port bus: the i8042 at
    /// 0x60–0x64, the CMOS at 0x70–0x71, and unclaimed ports around them.
    case portWrite(port: UInt16, size: Int, value: UInt32)
    case portRead(port: UInt16, size: Int)
    /// The VMM typing Ctrl+Alt+Del (a `SendCtrlAltDel` action).
    case ctrlAltDel

    static let sizes = [1, 1, 2, 4]
    static let firstPort: UInt16 = 0x50

    public static func decode(_ cursor: inout FuzzCursor) -> LegacyFuzzOperation {
        func port() -> UInt16 { firstPort + UInt16(cursor.byte() % 0x30) }
        switch cursor.byte() % 6 {
        case 0: return .uartWrite(register: cursor.byte() % 8, value: cursor.byte())
        case 1: return .uartRead(register: cursor.byte() % 8)
        case 2: return .uartInput(count: Int(cursor.byte()) * 8)
        case 3: return .portWrite(port: port(), size: sizes[Int(cursor.byte() % 4)], value: cursor.integer())
        case 4: return .portRead(port: port(), size: sizes[Int(cursor.byte() % 4)])
        default: return .ctrlAltDel
        }
    }

    public var bytes: [UInt8] {
        func size(_ value: Int) -> UInt8 { UInt8(Self.sizes.firstIndex(of: value) ?? 0) }
        func port(_ value: UInt16) -> UInt8 { UInt8(truncatingIfNeeded: value - Self.firstPort) }
        switch self {
        case .uartWrite(let register, let value): return [0, register, value]
        case .uartRead(let register): return [1, register]
        case .uartInput(let count): return [2, UInt8(count / 8)]
        case .portWrite(let address, let width, let value):
            var out: [UInt8] = [3, port(address), size(width)]
            out.appendLittleEndian(value)
            return out
        case .portRead(let address, let width): return [4, port(address), size(width)]
        case .ctrlAltDel: return [5]
        }
    }
}

/// The UART's register machine, and the i8042 and CMOS on a port bus as
/// the machine wires them, driven by a decoded program with what each
/// device promises checked after every step.
public final class LegacyFuzzHarness: FuzzHarness {
    /// What the i8042's callbacks did.
    final class Calls {
        var resets = 0
        var interrupts = 0
    }

    var uart = UART8250()
    let bus = Bus(name: "fuzz ports")
    let keyboard: I8042Controller
    let calls = Calls()
    /// Keyboard presses accepted since the guest last read port 0x60.
    var pressesUnread = 0
    /// What the guest wrote, as the devices must give it back.
    var divisor: UInt16 = 12
    var cmosIndex: UInt8 = 0
    var cmosRAM = [UInt8](repeating: 0, count: 128)
    let time: RTCTime
    /// Steps that reached a device's state, for the seeded tests.
    public private(set) var effective = 0

    static let keyboardData = UInt64(X86Layout.i8042Ports)
    static let keyboardCommand = UInt64(X86Layout.i8042Ports) + 4
    static let cmosIndexPort = UInt64(X86Layout.cmosPorts)
    static let cmosDataPort = UInt64(X86Layout.cmosPorts) + 1

    /// `control` picks the wall-clock time the CMOS reports.
    public init(control: UInt8) {
        let value = Int(control)
        let time = RTCTime(
            year: 1970 + value, month: 1 + value % 12, day: 1 + value % 28, weekday: 1 + value % 7,
            hour: value % 24, minute: value % 60, second: value * 7 % 60)
        self.time = time
        let calls = calls
        keyboard = I8042Controller(reset: { calls.resets += 1 }, interrupt: { calls.interrupts += 1 })
        try! bus.insert(keyboard, base: UInt64(X86Layout.i8042Ports), size: 5)
        try! bus.insert(CMOSClock(clock: { time }), base: UInt64(X86Layout.cmosPorts), size: 2)
    }

    @discardableResult
    public func run(_ operation: LegacyFuzzOperation) -> Bool {
        let resets = calls.resets, interrupts = calls.interrupts
        switch operation {
        case .uartWrite(let register, let value): uartWrite(Int(register), value)
        case .uartRead(let register): uartRead(Int(register))
        case .uartInput(let count):
            let pending = uart.pendingInput
            let raise = uart.receive((0..<count).map { UInt8(truncatingIfNeeded: $0) })
            precondition(
                uart.pendingInput == min(UART8250.inputCapacity, pending + count) || pending >= UART8250.inputCapacity,
                "input kept \(uart.pendingInput) of \(pending) + \(count)")
            precondition(
                !raise || uart.interruptEnable & UART8250.IER.receivedData != 0, "input interrupt while disabled")
        case .portWrite(let port, let size, let value): portWrite(UInt64(port), size, value)
        case .portRead(let port, let size): portRead(UInt64(port), size)
        case .ctrlAltDel:
            if keyboard.pressCtrlAltDel() {
                pressesUnread += 1
                precondition(keyboardStatus & I8042Controller.statusOutputFull != 0, "typed keys but nothing to read")
            }
        }
        // A FIFO's worth of input at most, however the guest reads (the
        // storage behind it too, not just the unread part).
        precondition(
            uart.input.count <= UART8250.inputCapacity && uart.inputHead <= uart.input.count,
            "UART input holds \(uart.input.count) bytes, head \(uart.inputHead)")
        // The i8042 buffers 16 keyboard bytes: four Ctrl+Alt+Del presses.
        precondition(pressesUnread <= 4, "\(pressesUnread) presses queued unread")
        // Reset only for 0xFE written to 0x64, one byte wide.
        var wantReset = false
        if case .portWrite(let port, 1, let value) = operation, UInt64(port) == Self.keyboardCommand,
            value & 0xFF == 0xFE
        {
            wantReset = true
        }
        precondition(calls.resets - resets == (wantReset ? 1 : 0), "reset callback for \(operation)")
        // IRQ 1 is raised once per byte made readable: on a data read or a press.
        var mayInterrupt = false
        switch operation {
        case .portRead(let port, 1) where UInt64(port) == Self.keyboardData: mayInterrupt = true
        case .ctrlAltDel: mayInterrupt = true
        default: break
        }
        precondition(calls.interrupts - interrupts <= (mayInterrupt ? 1 : 0), "IRQ 1 raised for \(operation)")
        if resets != calls.resets || interrupts != calls.interrupts { effective += 1 }
        return true
    }

    /// The status register, read without side effects.
    var keyboardStatus: UInt8 {
        var byte: UInt8 = 0
        withUnsafeMutableBytes(of: &byte) { _ = bus.read(Self.keyboardCommand, into: $0) }
        return byte
    }

    // MARK: UART (PC16550D §8)

    func uartWrite(_ register: Int, _ value: UInt8) {
        let dlab = uart.dlab, loopback = uart.loopback
        let effects = uart.write(register, value)
        if register == UART8250.Register.data && !dlab && !loopback {
            precondition(effects.output == [value], "THR write sent \(effects.output)")
            effective += 1
        } else {
            precondition(effects.output.isEmpty, "bytes sent by a write to register \(register)")
        }
        if dlab && register == UART8250.Register.data { divisor = divisor & 0xFF00 | UInt16(value) }
        if dlab && register == UART8250.Register.interruptEnable { divisor = divisor & 0x00FF | UInt16(value) << 8 }
        precondition(
            !effects.interrupt
                || uart.interruptEnable & (UART8250.IER.receivedData | UART8250.IER.transmitterEmpty) != 0,
            "an interrupt with every source disabled")
    }

    func uartRead(_ register: Int) {
        let pending = uart.pendingInput, dlab = uart.dlab
        let value = uart.read(register)
        switch register {
        case UART8250.Register.data where dlab:
            precondition(value == UInt8(truncatingIfNeeded: divisor), "DLL reads back wrong")
        case UART8250.Register.data:
            precondition(
                uart.pendingInput == max(0, pending - 1), "a data read took \(pending - uart.pendingInput) bytes")
            if pending == 0 { precondition(value == 0, "an empty receiver read \(value)") } else { effective += 1 }
        case UART8250.Register.interruptEnable where dlab:
            precondition(value == UInt8(divisor >> 8), "DLM reads back wrong")
        case UART8250.Register.interruptEnable:
            precondition(value & 0xF0 == 0, "IER reads reserved bits")
        case UART8250.Register.interruptID:
            precondition(
                [1, 2, 4].contains(value & 0x0F) && value & 0x30 == 0, "IIR read 0x\(String(value, radix: 16))")
        case UART8250.Register.modemControl:
            precondition(value & 0xE0 == 0, "MCR reads reserved bits")
        case UART8250.Register.lineStatus:
            // Transmit is instantaneous: THRE and TEMT always; DR iff input waits.
            precondition(
                value & 0x60 == 0x60 && value & 0x9E == 0 && (value & 1 != 0) == (pending > 0),
                "LSR read 0x\(String(value, radix: 16)) with \(pending) bytes waiting")
        default:
            break
        }
    }

    // MARK: Port bus: i8042 and CMOS

    /// Whether the bus must route an access: inside one device's window.
    static func claimed(_ port: UInt64, _ size: Int) -> Bool {
        let windows: [(UInt64, UInt64)] = [(UInt64(X86Layout.i8042Ports), 5), (UInt64(X86Layout.cmosPorts), 2)]
        return windows.contains { port >= $0.0 && port + UInt64(size) <= $0.0 + $0.1 }
    }

    func portWrite(_ port: UInt64, _ size: Int, _ value: UInt32) {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(value)
        let routed = bytes.prefix(size).withUnsafeBytes { bus.write(port, from: $0) }
        precondition(routed == Self.claimed(port, size), "port 0x\(String(port, radix: 16)) routed: \(routed)")
        guard size == 1 else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        switch port {
        case Self.cmosIndexPort:
            cmosIndex = byte & 0x7F
        case Self.cmosDataPort where cmosIndex > 0x0D && cmosIndex != 0x32:
            cmosRAM[Int(cmosIndex)] = byte
            effective += 1
        case Self.keyboardCommand where byte == 0xAA || byte == 0x20:
            // Self-test and read-control answer on the data port.
            precondition(
                keyboardStatus & I8042Controller.statusOutputFull != 0,
                "command 0x\(String(byte, radix: 16)) left no answer")
            effective += 1
        default:
            break
        }
    }

    func portRead(_ port: UInt64, _ size: Int) {
        let statusBefore = keyboardStatus
        var bytes = [UInt8](repeating: 0xA5, count: size)
        let routed = bytes.withUnsafeMutableBytes { bus.read(port, into: $0) }
        precondition(routed == Self.claimed(port, size), "port 0x\(String(port, radix: 16)) routed: \(routed)")
        if !routed { return precondition(bytes.allSatisfy { $0 == 0xFF }, "an unclaimed port read \(bytes)") }
        guard size == 1 else { return }
        let value = bytes[0]
        switch port {
        case Self.keyboardData:
            if statusBefore & I8042Controller.statusOutputFull == 0 {
                precondition(value == 0, "an empty output register read 0x\(String(value, radix: 16))")
            } else {
                effective += 1
            }
            pressesUnread = 0
        case Self.keyboardCommand:
            precondition(
                value & ~0x05 == 0 && value & I8042Controller.statusSystemFlag != 0,
                "i8042 status 0x\(String(value, radix: 16))")
        case UInt64(X86Layout.i8042Ports) + 1...UInt64(X86Layout.i8042Ports) + 3:
            precondition(value == 0xFF, "an i8042 hole read 0x\(String(value, radix: 16))")
        case Self.cmosIndexPort:
            precondition(
                value == cmosIndex,
                "CMOS index read back 0x\(String(value, radix: 16)), not 0x\(String(cmosIndex, radix: 16))")
        case Self.cmosDataPort:
            precondition(
                value == expectedCMOS(cmosIndex),
                "CMOS register 0x\(String(cmosIndex, radix: 16)) read 0x\(String(value, radix: 16))")
            effective += 1
        default:
            break
        }
    }

    /// The MC146818 registers: the fixed time in BCD, the status registers
    /// as the clock promises them (24-hour BCD, never updating), RAM else.
    func expectedCMOS(_ index: UInt8) -> UInt8 {
        func bcd(_ value: Int) -> UInt8 { UInt8(value / 10 % 10 * 16 + value % 10) }
        switch index {
        case 0x00: return bcd(time.second)
        case 0x02: return bcd(time.minute)
        case 0x04: return bcd(time.hour)
        case 0x06: return bcd(time.weekday)
        case 0x07: return bcd(time.day)
        case 0x08: return bcd(time.month)
        case 0x09: return bcd(time.year % 100)
        case 0x32: return bcd(time.year / 100)
        case 0x0A: return 0x26
        case 0x0B: return 0x02
        case 0x0C: return 0x00
        case 0x0D: return 0x80
        default: return cmosRAM[Int(index)]
        }
    }
}

extension LegacyFuzzHarness {
    /// Byte 0 sets the CMOS time; the rest is a program of
    /// `LegacyFuzzOperation`s, at most 1024 steps. Returns the steps that
    /// reached device state (bytes moved, registers stored, callbacks).
    @discardableResult
    public static func run(_ bytes: UnsafeRawBufferPointer) -> Int {
        FuzzProgram.run(bytes, on: LegacyFuzzHarness.self, limit: 1024).effective
    }
}
