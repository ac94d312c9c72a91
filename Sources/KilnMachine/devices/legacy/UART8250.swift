/// The register state machine of a 16550A-compatible UART, enough for
/// Linux's 8250 driver (register set: TI PC16550D datasheet, §8). Pure: it
/// holds no descriptors; its owner (`SerialDevice`) moves bytes and raises
/// the interrupt.
///
/// Transmit is instantaneous: a THR write is handed out at once, so the
/// transmitter is always empty and THRE/TEMT are always set. Interrupts
/// follow the datasheet's priorities: received data before THR empty.
public struct UART8250: Sendable {
    public enum Register {
        public static let data = 0 // RBR (read) / THR (write); DLL when DLAB
        public static let interruptEnable = 1 // IER; DLM when DLAB
        public static let interruptID = 2 // IIR (read) / FCR (write)
        public static let lineControl = 3
        public static let modemControl = 4
        public static let lineStatus = 5
        public static let modemStatus = 6
        public static let scratch = 7
    }

    enum IER {
        static let receivedData: UInt8 = 0x01
        static let transmitterEmpty: UInt8 = 0x02
    }

    enum IIR {
        static let noInterrupt: UInt8 = 0x01
        static let transmitterEmpty: UInt8 = 0x02
        static let receivedData: UInt8 = 0x04
        static let fifoEnabled: UInt8 = 0xc0
    }

    enum LSR {
        static let dataReady: UInt8 = 0x01
        static let transmitterHoldingEmpty: UInt8 = 0x20
        static let transmitterEmpty: UInt8 = 0x40
    }

    enum MCR {
        static let loopback: UInt8 = 0x10
    }

    static let lineControlDLAB: UInt8 = 0x80
    /// Carrier detect, data set ready, clear to send: a connected line.
    static let modemStatusConnected: UInt8 = 0xb0
    /// Bytes of guest input buffered; more is refused so a flood from stdin
    /// cannot grow memory without bound.
    public static let inputCapacity = 1024

    var interruptEnable: UInt8 = 0
    var lineControl: UInt8 = 0x03 // 8N1
    var modemControl: UInt8 = 0x08 // OUT2
    var scratch: UInt8 = 0
    var divisor: UInt16 = 12 // 9600 baud
    var fifoEnabled = false
    /// A THR-empty interrupt is pending until IIR reports it or THR is written.
    var transmitterEmptyPending = false
    var input: [UInt8] = []
    var inputHead = 0

    public init() {}

    /// What an access asks of the owner.
    public struct Effects: Equatable, Sendable {
        /// Bytes the guest transmitted.
        public var output: [UInt8] = []
        /// Raise the interrupt line (an edge: the IRQ is ISA edge-triggered).
        public var interrupt = false
    }

    var pendingInput: Int { input.count - inputHead }

    var dlab: Bool { lineControl & UART8250.lineControlDLAB != 0 }

    var loopback: Bool { modemControl & MCR.loopback != 0 }

    /// The highest-priority pending interrupt, as IIR reports it.
    var interruptIdentification: UInt8 {
        if interruptEnable & IER.receivedData != 0 && pendingInput > 0 { return IIR.receivedData }
        if interruptEnable & IER.transmitterEmpty != 0 && transmitterEmptyPending { return IIR.transmitterEmpty }
        return IIR.noInterrupt
    }

    public mutating func read(_ register: Int) -> UInt8 {
        switch register {
        case Register.data where dlab: return UInt8(truncatingIfNeeded: divisor)
        case Register.data:
            guard pendingInput > 0 else { return 0 }
            let byte = input[inputHead]
            inputHead += 1
            if inputHead == input.count { input.removeAll(keepingCapacity: true); inputHead = 0 }
            return byte
        case Register.interruptEnable where dlab: return UInt8(truncatingIfNeeded: divisor >> 8)
        case Register.interruptEnable: return interruptEnable
        case Register.interruptID:
            let identification = interruptIdentification
            // Reading IIR while it reports THR empty clears that source.
            if identification == IIR.transmitterEmpty { transmitterEmptyPending = false }
            return identification | (fifoEnabled ? IIR.fifoEnabled : 0)
        case Register.lineControl: return lineControl
        case Register.modemControl: return modemControl
        case Register.lineStatus:
            return (pendingInput > 0 ? LSR.dataReady : 0) | LSR.transmitterHoldingEmpty | LSR.transmitterEmpty
        case Register.modemStatus:
            guard loopback else { return UART8250.modemStatusConnected }
            // Loopback wires DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD; Linux's
            // probe checks this (drivers/tty/serial/8250/8250_port.c).
            let mcr = modemControl
            return ((mcr & 0x02) << 3) | ((mcr & 0x01) << 5) | ((mcr & 0x04) << 4) | ((mcr & 0x08) << 4)
        case Register.scratch: return scratch
        default: return 0
        }
    }

    public mutating func write(_ register: Int, _ value: UInt8) -> Effects {
        var effects = Effects()
        switch register {
        case Register.data where dlab:
            divisor = (divisor & 0xff00) | UInt16(value)
        case Register.data:
            if loopback {
                effects.interrupt = receive([value])
            } else {
                effects.output.append(value)
            }
            // The byte left at once: THR is empty again.
            transmitterEmptyPending = true
            effects.interrupt = effects.interrupt || interruptEnable & IER.transmitterEmpty != 0
        case Register.interruptEnable where dlab:
            divisor = (divisor & 0x00ff) | (UInt16(value) << 8)
        case Register.interruptEnable:
            let enabledTransmit = value & IER.transmitterEmpty != 0 && interruptEnable & IER.transmitterEmpty == 0
            interruptEnable = value & 0x0f
            // Enabling the THRE interrupt while THR is empty fires it at once
            // (PC16550D §8.6.2); so does enabling receive with data waiting.
            if enabledTransmit { transmitterEmptyPending = true }
            effects.interrupt = interruptIdentification != IIR.noInterrupt
        case Register.interruptID:
            fifoEnabled = value & 0x01 != 0
            if value & 0x02 != 0 { input.removeAll(); inputHead = 0 } // clear receive FIFO
        case Register.lineControl: lineControl = value
        case Register.modemControl: modemControl = value & 0x1f
        case Register.scratch: scratch = value
        default: break // LSR and MSR are read-only
        }
        return effects
    }

    /// Queues bytes from the host side; returns whether to raise the IRQ.
    /// Bytes beyond `inputCapacity` are dropped, as a real FIFO overruns.
    public mutating func receive(_ bytes: [UInt8]) -> Bool {
        let room = UART8250.inputCapacity - pendingInput
        guard room > 0, !bytes.isEmpty else { return false }
        // Drop what the guest already read, so a guest that never drains the
        // FIFO completely cannot grow the storage behind it.
        if inputHead > 0 { input.removeFirst(inputHead); inputHead = 0 }
        input.append(contentsOf: bytes.prefix(room))
        return interruptEnable & IER.receivedData != 0
    }

    /// Whether the guest can take more input now (for host-side flow control).
    public var canReceive: Bool { pendingInput < UART8250.inputCapacity }
}
