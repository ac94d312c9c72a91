#if canImport(Glibc)
import Glibc
#endif
import CKiln
import KilnConfig
import KilnMemory
import KilnSystem

/// How the machine talks to the host: the console and the log.
public struct MachineHost {
    /// Where guest serial output goes (stdout, a file or a FIFO).
    public var consoleOutput: FileDescriptor
    /// Where guest serial input comes from; nil for none.
    public var consoleInput: FileDescriptor?
    /// Log lines (already formatted) from the machine.
    public var log: (String) -> Void
    /// Per-exit trace lines; nil unless tracing.
    public var trace: ((String) -> Void)?
    /// CLOCK_MONOTONIC at the VMM's start, for the boot timer.
    public var startNanoseconds: UInt64
    /// Log the guest's boot time when it writes the boot-timer device.
    public var bootTimer: Bool
    /// ACPI table builder (KilnACPI); nil boots without ACPI.
    public var firmware: FirmwareTableBuilder?
    /// The machine's counters, in the VMM's metrics registry.
    public var metrics = MachineMetrics()
    /// Runs on each vCPU thread before its first KVM_RUN (role, seccomp).
    public var vcpuThreadStarted: ((Int) throws -> Void)?
    /// Runs on the event loop once every vCPU thread exists (the vmm
    /// filter, which has no clone, goes on here).
    public var vcpusStarted: (() throws -> Void)?
    /// A descriptor the event loop also waits on (the API's requests), and
    /// what to do when it is readable.
    public var requests: (descriptor: FileDescriptor, service: () -> Void)?
    /// Called on every housekeeping tick of the event loop (periodic metrics).
    public var tick: (() -> Void)?

    public init(consoleOutput: FileDescriptor = .standardOutput, consoleInput: FileDescriptor? = nil,
                log: @escaping (String) -> Void = { _ in }, startNanoseconds: UInt64 = MonotonicClock.nanoseconds(),
                bootTimer: Bool = false, firmware: FirmwareTableBuilder? = nil, trace: ((String) -> Void)? = nil) {
        self.trace = trace
        self.bootTimer = bootTimer
        self.consoleOutput = consoleOutput
        self.consoleInput = consoleInput
        self.log = log
        self.startNanoseconds = startNanoseconds
        self.firmware = firmware
    }
}

/// A configured microVM on KVM: guest memory with the boot image in it, the
/// VM with its irqchip and PIT, the buses and legacy devices, and the vCPUs,
/// ready to run. Building one reads the kernel and initrd and refuses bad
/// input before any vCPU exists.
public final class Machine: @unchecked Sendable {
    public let memory: MappedGuestMemory
    public let plan: BootPlan
    let system: KVMSystem
    let vm: KVMVirtualMachine
    let portBus = Bus(name: "port I/O")
    let memoryBus = Bus(name: "MMIO")
    let exitSignal: ExitSignal
    let wakeEvent: FileDescriptor
    let serial: SerialDevice
    let keyboard: I8042Controller
    let host: MachineHost
    let pauseGate = PauseGate()
    private var threads: [VCPUThread] = []
    private var vcpusRunning = false

    public init(configuration: VMConfiguration, host: MachineHost) throws {
        try configuration.validate()
        guard let bootSource = configuration.bootSource else {
            throw BootInputError("no boot source: set boot-source.kernel_image_path")
        }
        self.host = host
        let machineConfig = configuration.machine
        try Machine.refuseUnbuiltDevices(configuration)

        // 1. Guest memory and the boot image: no KVM involved yet.
        let kernelImage = try ImageFile.read(bootSource.kernelImagePath, .kernel, guestMemoryMiB: machineConfig.memSizeMiB)
        let initrd = try bootSource.initrdPath.map { try ImageFile.read($0, .initrd, guestMemoryMiB: machineConfig.memSizeMiB) }
        let ram = try X86Layout.ramRanges(bytes: UInt64(machineConfig.memSizeMiB) << 20)
        memory = try MappedGuestMemory(ranges: ram)
        let platform = PlatformDescription(vcpuCount: machineConfig.vcpuCount)
        do {
            plan = try GuestBoot.prepare(
                memory: memory, kernelImage: kernelImage, initrd: initrd, commandLine: bootSource.bootArgs ?? "",
                platform: platform, firmware: host.firmware)
        } catch let error as KernelImageError {
            throw BootInputError("kernel \(bootSource.kernelImagePath): \(error)")
        } catch let error as InitrdPlacementError {
            throw BootInputError("initrd \(bootSource.initrdPath ?? ""): \(error)")
        }

        // 2. The VM: system pages, irqchip, PIT, memory slots.
        system = try KVMSystem()
        try system.requireCapabilities()
        vm = try system.createVM()
        try vm.setSystemAddresses(tss: X86Layout.tss, identityMap: X86Layout.identityMapPage)
        try vm.createInterruptController()
        try vm.setInterruptRouting(InterruptRouting.pc)
        try vm.createPIT()
        for (slot, region) in memory.regions.enumerated() {
            try vm.setMemoryRegion(slot: UInt32(slot), region: region, logDirtyPages: machineConfig.trackDirtyPages)
        }

        // 3. Devices. Their interrupt lines first: the VM owns those, while
        // the wake eventfd below is ours until `self` is whole (deinit closes
        // it), so nothing may throw between the two.
        let serialInterrupt = try vm.interruptEventFD(gsi: X86Layout.serialIRQ)
        let keyboardInterrupt = try vm.interruptEventFD(gsi: X86Layout.i8042IRQ)
        // An eventfd wakes the event loop when a vCPU or device asks to stop.
        let wake = try check("eventfd") { ckiln_eventfd(0) }
        wakeEvent = FileDescriptor(rawValue: wake)
        exitSignal = ExitSignal {
            var one: UInt64 = 1
            _ = Glibc.write(wake, &one, 8)
        }
        let console = host.consoleOutput
        serial = SerialDevice(output: { bytes in try? console.writeAll(bytes) },
                              interrupt: { serialInterrupt.trigger() })
        let exitSignal = self.exitSignal, metrics = host.metrics
        keyboard = I8042Controller(reset: { exitSignal.request(.reset("i8042 reset")) },
                                   interrupt: { keyboardInterrupt.trigger() })
        try portBus.insert(metrics.counted(serial, "uart"), base: UInt64(X86Layout.serialPort), size: 8)
        try portBus.insert(metrics.counted(keyboard, "i8042"), base: UInt64(X86Layout.i8042Ports), size: 5)
        try portBus.insert(metrics.counted(CMOSClock(), "cmos"), base: UInt64(X86Layout.cmosPorts), size: 2)
        try portBus.insert(metrics.counted(SleepControl { exitSignal.request(.poweroff("ACPI S5")) }, "sleep_control"),
                           base: UInt64(X86Layout.sleepControlPort), size: 2)
        let start = host.startNanoseconds, log = host.log
        if host.bootTimer {
            try memoryBus.insert(metrics.counted(BootTimer {
                let elapsed = MonotonicClock.nanoseconds() - start
                let cpu = MonotonicClock.processCPUNanoseconds()
                metrics.bootTimeMicroseconds.set(elapsed / 1000)
                metrics.bootCPUMicroseconds.set(cpu / 1000)
                log("boot-timer: guest boot time \(Machine.milliseconds(elapsed)) ms since kiln start, "
                    + "VMM CPU \(Machine.milliseconds(cpu)) ms")
            }, "boot_timer"), base: X86Layout.bootTimer, size: X86Layout.pageSize)
        }

        // 4. vCPUs: CPUID, MSRs, registers, FPU, LAPIC.
        let supported = try system.supportedCPUID()
        let topology = CPUTopology(vcpuCount: machineConfig.vcpuCount, smt: machineConfig.smt)
        for index in 0..<machineConfig.vcpuCount {
            let vcpu = try vm.createVCPU(index: index)
            try Machine.configure(vcpu, cpuid: CPUIDNormalizer.normalize(supported, vcpuIndex: index, topology: topology),
                                  plan: plan)
            let firstRun: ((Int) -> Void)? = index == 0 ? { _ in
                log("vcpu0: first KVM_RUN \(Machine.milliseconds(MonotonicClock.nanoseconds() - start)) ms since kiln start, "
                    + "VMM CPU \(Machine.milliseconds(MonotonicClock.processCPUNanoseconds())) ms")
            } : nil
            threads.append(VCPUThread(vcpu: vcpu, portBus: portBus, memoryBus: memoryBus, exitSignal: exitSignal,
                                      pauseGate: pauseGate, exits: metrics.exits, onThreadStart: host.vcpuThreadStarted,
                                      onFirstRun: firstRun, trace: host.trace))
        }
    }

    deinit { wakeEvent.close() }

    /// Devices the configuration may name but this machine cannot build yet
    /// (virtio arrives with its own issue): refusing beats booting without them.
    static func refuseUnbuiltDevices(_ configuration: VMConfiguration) throws {
        if !configuration.drives.isEmpty {
            throw BootInputError("drives: virtio-block devices are not supported yet")
        }
        if !configuration.networkInterfaces.isEmpty {
            throw BootInputError("network-interfaces: virtio-net devices are not supported yet")
        }
        if configuration.vsock != nil {
            throw BootInputError("vsock: virtio-vsock devices are not supported yet")
        }
    }

    /// A vCPU's boot state. Every vCPU gets the same registers; with the
    /// in-kernel LAPIC the APs wait for INIT/SIPI and KVM resets them then,
    /// so only the boot vCPU starts at the kernel entry.
    static func configure(_ vcpu: KVMVirtualCPU, cpuid: [CPUIDEntry], plan: BootPlan) throws {
        try vcpu.setCPUID(cpuid)
        try vcpu.setMSRs(BootMSRs.values)
        try vcpu.setRegisters(BootCPUState.registers(entry: plan.entry, mode: plan.mode, bootInfo: plan.bootInfo))
        try vcpu.setSpecialRegisters(BootCPUState.specialRegisters(for: plan.mode, from: try vcpu.specialRegisters()))
        try vcpu.setFPU(BootCPUState.fpu())
        try vcpu.setLAPIC(BootCPUState.lapic(from: try vcpu.lapic()))
    }

    static func milliseconds(_ nanoseconds: UInt64) -> String {
        MonotonicClock.millisecondsText(nanoseconds, decimals: 2)
    }

    /// How often the event loop checks whether every vCPU is stuck.
    static let haltCheckMilliseconds: Int32 = 500

    /// Starts the vCPUs and runs the event loop (console input, exit
    /// requests, the halted-guest check) until the machine stops.
    public func run() throws -> MachineExitReason {
        if !vcpusRunning { try startVCPUs() }
        var input = host.consoleInput
        var buffer = [UInt8](repeating: 0, count: 256)
        let interval = UInt64(Machine.haltCheckMilliseconds) * 1_000_000
        var nextCheck = MonotonicClock.nanoseconds() + interval
        while true {
            if let reason = exitSignal.reason { return reason }
            // The halt check runs on a deadline, so a busy console cannot starve it.
            let now = MonotonicClock.nanoseconds()
            if now >= nextCheck {
                checkForStuckGuest()
                host.tick?()
                nextCheck = now + interval
            }
            let timeout = Int32((nextCheck - min(now, nextCheck)) / 1_000_000) + 1
            var descriptors = [pollfd(fd: wakeEvent.rawValue, events: Int16(POLLIN), revents: 0),
                               pollfd(fd: host.requests?.descriptor.rawValue ?? -1, events: Int16(POLLIN), revents: 0)]
            // Stop reading input while the UART's buffer is full.
            if let input, serial.canReceive {
                descriptors.append(pollfd(fd: input.rawValue, events: Int16(POLLIN), revents: 0))
            }
            let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
            if ready < 0 && errno != EINTR { throw SystemError.current("poll") }
            if ready > 0, descriptors[1].revents != 0 { host.requests?.service() }
            if ready > 0, descriptors.count > 2, descriptors[2].revents != 0, let source = input {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(source.rawValue, $0.baseAddress, $0.count) }
                if count > 0 {
                    serial.enqueueInput(Array(buffer[0..<count]))
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    input = nil // end of input: the guest just sees no more bytes
                }
            }
        }
    }

    /// Starts every vCPU thread, then runs `host.vcpusStarted`. `run()`
    /// does it when it has not been done.
    public func startVCPUs() throws {
        VCPUThread.installKickHandler()
        vcpusRunning = true
        for thread in threads { try thread.start() }
        try host.vcpusStarted?()
    }

    /// Ends `run()` with `reason` (unless another reason came first).
    public func stop(_ reason: MachineExitReason) { exitSignal.request(reason) }

    /// Pauses the guest (`PATCH /vm` "Paused"): every vCPU leaves KVM_RUN
    /// and parks. Call from the event loop.
    public func pause() throws {
        pauseGate.close()
        for thread in threads { thread.kick() }
        guard pauseGate.waitUntilParked(threads.count, timeoutNanoseconds: 2_000_000_000) else {
            pauseGate.open()
            throw MachineControlError("the vCPUs did not stop within 2 s; the microVM keeps running")
        }
    }

    /// Lets parked vCPUs run again (`PATCH /vm` "Resumed").
    public func resume() { pauseGate.open() }

    /// Presses Ctrl+Alt+Del on the i8042 keyboard (`SendCtrlAltDel`).
    public func sendCtrlAltDel() throws {
        guard keyboard.pressCtrlAltDel() else {
            throw MachineControlError("the guest is not reading its i8042 keyboard: its buffer is full")
        }
        host.metrics.ctrlAltDelPresses.increment()
    }

    /// Kicks every vCPU out of KVM_RUN so it re-reads its state; when all
    /// were found stuck at the previous check, the guest can never continue.
    /// A paused guest is not stuck: its vCPUs are parked on purpose.
    private func checkForStuckGuest() {
        guard !pauseGate.isClosed else { return }
        if threads.allSatisfy(\.isStuck) {
            exitSignal.request(.allVCPUsHalted)
            return
        }
        for thread in threads { thread.kick() }
    }
}

/// A control request (pause, Ctrl+Alt+Del) the machine could not carry out.
public struct MachineControlError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
