import KilnSystem
import KilnTelemetry
import Testing

@testable import KilnMachine

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct UART8250Tests {
    typealias R = UART8250.Register

    @Test func transmitGoesOutAndTHRStaysEmpty() {
        var uart = UART8250()
        #expect(uart.write(R.data, 0x41).output == [0x41])
        #expect(uart.read(R.lineStatus) & 0x60 == 0x60)
        #expect(uart.read(R.interruptID) == 0x01) // nothing enabled, nothing pending
    }

    @Test func thrEmptyInterruptFollowsTheDatasheet() {
        var uart = UART8250()
        // Enabling ETBEI with THR empty raises the interrupt at once.
        #expect(uart.write(R.interruptEnable, 0x02).interrupt)
        #expect(uart.read(R.interruptID) == 0x02)
        // Reading IIR cleared it.
        #expect(uart.read(R.interruptID) == 0x01)
        // Each transmitted byte empties THR again: another interrupt.
        #expect(uart.write(R.data, 0x42).interrupt)
        #expect(uart.read(R.interruptID) == 0x02)
        // Disabled: no interrupt.
        _ = uart.write(R.interruptEnable, 0)
        #expect(!uart.write(R.data, 0x43).interrupt)
    }

    @Test func receivedDataHasPriorityAndIsBounded() {
        var uart = UART8250()
        _ = uart.write(R.interruptEnable, 0x03)
        let raised = uart.receive([0x61, 0x62])
        #expect(raised)
        #expect(uart.read(R.interruptID) == 0x04)
        #expect(uart.read(R.lineStatus) & 0x01 == 0x01)
        #expect(uart.read(R.data) == 0x61)
        #expect(uart.read(R.data) == 0x62)
        #expect(uart.read(R.lineStatus) & 0x01 == 0)
        #expect(uart.read(R.data) == 0)
        let raisedForNothing = uart.receive([])
        #expect(!raisedForNothing)
        _ = uart.receive([UInt8](repeating: 1, count: UART8250.inputCapacity + 10))
        #expect(!uart.canReceive)
        let raisedWhenFull = uart.receive([2])
        #expect(!raisedWhenFull)
    }

    /// A guest that reads one byte per interrupt while the host keeps the
    /// FIFO topped up must not grow the buffer behind it: storage stays
    /// within the FIFO's capacity, and bytes still come out in order.
    @Test func inputStorageStaysBoundedWhenNeverFullyDrained() {
        var uart = UART8250()
        _ = uart.receive([UInt8](repeating: 0, count: UART8250.inputCapacity))
        for step in 0..<(4 * UART8250.inputCapacity) {
            _ = uart.read(R.data)
            _ = uart.receive([UInt8(truncatingIfNeeded: step)])
            #expect(uart.input.count <= UART8250.inputCapacity)
            if uart.input.count > UART8250.inputCapacity { break }
        }
        for _ in 0..<(UART8250.inputCapacity - 1) { _ = uart.read(R.data) }
        #expect(uart.read(R.data) == UInt8(truncatingIfNeeded: 4 * UART8250.inputCapacity - 1))
        #expect(uart.read(R.lineStatus) & 0x01 == 0)
    }

    @Test func linuxProbeSeesLoopbackAndFIFO() {
        var uart = UART8250()
        // 8250_port.c autoconfig: scratch register, loopback MSR == 0x90, FIFO bits.
        _ = uart.write(R.scratch, 0xa5)
        #expect(uart.read(R.scratch) == 0xa5)
        _ = uart.write(R.modemControl, 0x1a)
        #expect(uart.read(R.modemStatus) & 0xf0 == 0x90)
        _ = uart.write(R.modemControl, 0x08)
        #expect(uart.read(R.modemStatus) == 0xb0)
        _ = uart.write(R.interruptID, 0x01)
        #expect(uart.read(R.interruptID) & 0xc0 == 0xc0)
        // Loopback sends transmitted bytes back to the receiver, not out.
        _ = uart.write(R.modemControl, 0x10)
        #expect(uart.write(R.data, 0x55).output.isEmpty)
        #expect(uart.read(R.data) == 0x55)
    }

    @Test func divisorLatchShadowsDataAndIER() {
        var uart = UART8250()
        _ = uart.write(R.lineControl, 0x80)
        _ = uart.write(R.data, 0x01)
        _ = uart.write(R.interruptEnable, 0x00)
        #expect(uart.read(R.data) == 0x01)
        #expect(uart.divisor == 1)
        _ = uart.write(R.lineControl, 0x03)
        #expect(uart.read(R.interruptEnable) == 0)
    }
}

final class Recorder: @unchecked Sendable {
    var events: [String] = []
}

func access(_ device: BusDevice, write offset: UInt64, _ value: UInt8) {
    withUnsafeBytes(of: value) { device.write(offset: offset, from: $0) }
}

func access(_ device: BusDevice, read offset: UInt64) -> UInt8 {
    var value: UInt8 = 0
    withUnsafeMutableBytes(of: &value) { device.read(offset: offset, into: $0) }
    return value
}

@Suite struct LegacyDeviceTests {
    @Test func i8042ResetsOnlyOn0xFE() {
        let recorder = Recorder()
        let controller = I8042Controller { recorder.events.append("reset") }
        access(controller, write: 4, 0xaa)
        #expect(access(controller, read: 4) & 1 == 1)
        #expect(access(controller, read: 0) == 0x55)
        access(controller, write: 4, 0x60)
        access(controller, write: 0, 0x47)
        access(controller, write: 4, 0x20)
        #expect(access(controller, read: 0) == 0x47)
        #expect(recorder.events.isEmpty)
        access(controller, write: 0, 0xfe) // data port: not a command
        #expect(recorder.events.isEmpty)
        access(controller, write: 4, 0xfe)
        #expect(recorder.events == ["reset"])
    }

    @Test func ctrlAltDelIsTypedOneByteAndOneIRQ1PerRead() {
        let recorder = Recorder()
        let controller = I8042Controller(
            reset: { recorder.events.append("reset") },
            interrupt: { recorder.events.append("irq1") })
        #expect(controller.pressCtrlAltDel())
        #expect(recorder.events == ["irq1"]) // the first byte is in the output register
        var typed: [UInt8] = []
        while access(controller, read: 4) & 1 == 1 { typed.append(access(controller, read: 0)) }
        #expect(typed == [0x14, 0x11, 0xe0, 0x71])
        #expect(recorder.events == ["irq1", "irq1", "irq1", "irq1"])

        // Keyboard interrupts disabled in the control register: bytes, no IRQ.
        recorder.events = []
        access(controller, write: 4, 0x60)
        access(controller, write: 0, 0x00)
        #expect(controller.pressCtrlAltDel())
        #expect(recorder.events.isEmpty)
        #expect(access(controller, read: 0) == 0x14)

        // A guest that never reads fills the buffer, and the press is refused.
        let deaf = I8042Controller(reset: {})
        var accepted = 0
        while deaf.pressCtrlAltDel() { accepted += 1; if accepted > 100 { break } }
        // One byte in the output register, 15 of the 16 buffered: the fifth press does not fit.
        #expect(accepted == 4)
    }

    @Test func pauseGateParksUntilOpened() throws {
        let gate = PauseGate()
        #expect(!gate.parkWhileClosed())
        #expect(!gate.waitUntilParked(1, timeoutNanoseconds: 10_000_000))
        gate.close()
        let parked = Locked(false)
        let thread = try SystemThread.spawn(name: "parking") {
            let result = gate.parkWhileClosed()
            parked.withLock { $0 = result }
        }
        #expect(gate.waitUntilParked(1, timeoutNanoseconds: 5_000_000_000))
        gate.open()
        thread.join()
        #expect(parked.withLock { $0 })
    }

    @Test func sleepControlPowersOffOnS5Only() {
        let recorder = Recorder()
        let register = SleepControlDevice { recorder.events.append("off") }
        access(register, write: 0, 5 << 2) // SLP_TYP without SLP_EN
        access(register, write: 0, (3 << 2) | 0x20) // S3
        #expect(recorder.events.isEmpty)
        access(register, write: 0, (5 << 2) | 0x20)
        #expect(recorder.events == ["off"])
    }

    @Test func bootTimerReportsTheMagicOnce() {
        let recorder = Recorder()
        let timer = BootTimer { recorder.events.append("boot") }
        access(timer, write: 0, 1)
        access(timer, write: 1, 123)
        access(timer, write: 0, 123)
        access(timer, write: 0, 123)
        #expect(recorder.events == ["boot"])
    }

    @Test func cmosAnswersTheTimeInBCD() {
        let time = RTCTime(year: 2026, month: 11, day: 28, weekday: 7, hour: 14, minute: 59, second: 3)
        let cmos = CMOSClock { time }
        func register(_ index: UInt8) -> UInt8 {
            access(cmos, write: 0, index | 0x80) // NMI-disable bit must be ignored
            return access(cmos, read: 1)
        }
        #expect(register(0x00) == 0x03)
        #expect(register(0x02) == 0x59)
        #expect(register(0x04) == 0x14)
        #expect(register(0x07) == 0x28)
        #expect(register(0x08) == 0x11)
        #expect(register(0x09) == 0x26)
        #expect(register(0x32) == 0x20)
        #expect(register(0x0a) & 0x80 == 0) // never mid-update
        #expect(register(0x0b) == 0x02) // 24-hour, BCD
        #expect(register(0x0d) == 0x80) // valid
        access(cmos, write: 0, 0x40)
        access(cmos, write: 1, 0x99)
        #expect(register(0x40) == 0x99)
        access(cmos, write: 0, 0x00)
        access(cmos, write: 1, 0x99) // the clock is read-only
        #expect(register(0x00) == 0x03)
    }
}

@Suite struct BusTests {
    final class Probe: BusDevice {
        var lastWrite: (UInt64, [UInt8])?
        func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
            for index in data.indices { data[index] = UInt8(truncatingIfNeeded: offset) + UInt8(index) }
        }
        func write(offset: UInt64, from data: UnsafeRawBufferPointer) { lastWrite = (offset, Array(data)) }
    }

    @Test func routesToTheWindowAndRefusesStraddlingAccesses() throws {
        let bus = Bus(name: "test")
        let low = Probe(), high = Probe()
        try bus.insert(high, base: 0x100, size: 0x10)
        try bus.insert(low, base: 0x10, size: 8)
        var bytes: [UInt8] = [0, 0]
        let claimed = bytes.withUnsafeMutableBytes { bus.read(0x12, into: $0) }
        #expect(claimed)
        #expect(bytes == [2, 3])
        #expect([UInt8(9)].withUnsafeBytes { bus.write(0x10f, from: $0) })
        #expect(high.lastWrite?.0 == 0xf)
        // Straddling the end of a window, or in a gap: unclaimed, reads all ones.
        let straddling = bytes.withUnsafeMutableBytes { bus.read(0x17, into: $0) }
        #expect(!straddling)
        #expect(bytes == [0xff, 0xff])
        let inGap = bytes.withUnsafeMutableBytes { bus.read(0x50, into: $0) }
        #expect(!inGap)
        let overlap = #expect(throws: Bus.OverlapError.self) { try bus.insert(Probe(), base: 0x108, size: 0x10) }
        #expect(overlap?.reason == .overlaps(base: 0x108, size: 0x10, existingBase: 0x100, existingSize: 0x10))
        #expect(overlap?.description == "test window 0x108+0x10 overlaps 0x100+0x10")
        let wrapping = #expect(throws: Bus.OverlapError.self) { try bus.insert(Probe(), base: UInt64.max, size: 2) }
        #expect(wrapping?.reason == .invalidSize(base: UInt64.max))
        #expect(throws: Bus.OverlapError(bus: "test", reason: .invalidSize(base: 0x200))) {
            try bus.insert(Probe(), base: 0x200, size: 0)
        }
    }

    /// A window's counters (the device's `reads`/`writes` metrics) see the
    /// accesses the window's device gets, and only those.
    @Test func aWindowCountsTheAccessesItsDeviceGets() throws {
        let bus = Bus(name: "test")
        let counted = Bus.AccessCounters(reads: Counter(), writes: Counter())
        let other = Bus.AccessCounters(reads: Counter(), writes: Counter())
        try bus.insert(Probe(), base: 0x10, size: 8, counters: counted)
        try bus.insert(Probe(), base: 0x20, size: 8, counters: other)
        try bus.insert(Probe(), base: 0x30, size: 8)
        var byte: [UInt8] = [0]
        for address: UInt64 in [0x10, 0x17, 0x18, 0x30] {
            _ = byte.withUnsafeMutableBytes { bus.read(address, into: $0) }
        }
        for address: UInt64 in [0x11, 0x40] { _ = byte.withUnsafeBytes { bus.write(address, from: $0) } }
        var pair: [UInt8] = [0, 0]
        _ = pair.withUnsafeMutableBytes { bus.read(0x17, into: $0) } // straddles the end: unclaimed
        #expect(counted.reads.value == 2)
        #expect(counted.writes.value == 1)
        #expect(other.reads.value == 0 && other.writes.value == 0)
    }
}
