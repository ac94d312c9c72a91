import KilnSystem

/// The machine's legacy devices, each wired in this one function with its
/// bus window, its counters, its interrupt line and where its effects go,
/// as Firecracker's device manager wires each device in one place. A guest
/// access reaches a device from its `Bus` window (`bus/Bus.swift`); what
/// the device does then goes to the destinations written here:
///
/// | device | window | interrupt | effects go to |
/// |---|---|---|---|
/// | `SerialDevice` (COM1) | ports `serialPort`…+7 | irqfd, GSI `serialIRQ` | transmitted bytes: the console (`MachineHost.consoleOutput`: stdout, a file or a FIFO) |
/// | `I8042Controller` | ports `i8042Ports`…+4 | irqfd, GSI `i8042IRQ` | CPU reset (command 0xFE): the machine stops, `.reset` |
/// | `CMOSClock` | ports `cmosPorts`…+1 | none | none |
/// | `SleepControlDevice` | ports `sleepControlPort`…+1 | none | S5: the machine stops, `.poweroff` |
/// | `BootTimer` (with `--boot-timer`) | MMIO page `bootTimer` | none | the log line and the `boot` metrics |
///
/// Places are `X86Layout`'s. The console input, which the event loop feeds
/// to the serial device, is subscribed in `Machine.start`.
struct LegacyDevices {
    let serial: SerialDevice
    let keyboard: I8042Controller

    /// What the devices report to, besides the buses.
    struct Destinations {
        let console: FileDescriptor
        let exitSignal: ExitSignal
        let metrics: MachineMetrics
        /// The boot timer's report; nil leaves the device out.
        let bootTimer: BootTimerReport?
    }

    /// The boot timer's figures: kiln's start and where the line goes.
    struct BootTimerReport {
        let startNanoseconds: UInt64
        let log: (String) -> Void
    }

    static func wire(
        vm: KVMVirtualMachine, portBus: Bus, memoryBus: Bus,
        to destinations: Destinations
    ) throws -> LegacyDevices {
        let exitSignal = destinations.exitSignal, metrics = destinations.metrics, console = destinations.console

        let serialInterrupt = try vm.interruptEventFD(gsi: X86Layout.serialIRQ)
        let serial = SerialDevice(
            output: { bytes in try? console.writeAll(bytes) },
            interrupt: { serialInterrupt.trigger() })
        try portBus.insert(
            serial, base: UInt64(X86Layout.serialPort), size: 8, counters: metrics.accessCounters("uart"))

        let keyboardInterrupt = try vm.interruptEventFD(gsi: X86Layout.i8042IRQ)
        let keyboard = I8042Controller(
            reset: { exitSignal.request(.reset("i8042 reset")) },
            interrupt: { keyboardInterrupt.trigger() })
        try portBus.insert(
            keyboard, base: UInt64(X86Layout.i8042Ports), size: 5, counters: metrics.accessCounters("i8042"))

        try portBus.insert(
            CMOSClock(), base: UInt64(X86Layout.cmosPorts), size: 2, counters: metrics.accessCounters("cmos"))

        try portBus.insert(
            SleepControlDevice { exitSignal.request(.poweroff("ACPI S5")) },
            base: UInt64(X86Layout.sleepControlPort), size: 2,
            counters: metrics.accessCounters("sleep_control"))

        if let report = destinations.bootTimer {
            let start = report.startNanoseconds, log = report.log
            let timer = BootTimer {
                let elapsed = MonotonicClock.nanoseconds() - start
                let cpu = MonotonicClock.processCPUNanoseconds()
                metrics.bootTimeMicroseconds.set(elapsed / 1000)
                metrics.bootCPUMicroseconds.set(cpu / 1000)
                log(
                    "boot-timer: guest boot time \(Machine.milliseconds(elapsed)) ms since kiln start, "
                        + "VMM CPU \(Machine.milliseconds(cpu)) ms")
            }
            try memoryBus.insert(
                timer, base: X86Layout.bootTimer, size: X86Layout.pageSize,
                counters: metrics.accessCounters("boot_timer"))
        }
        return LegacyDevices(serial: serial, keyboard: keyboard)
    }
}
