import CKiln
import KilnConfig
import KilnMemory
import KilnSystem
import KilnVirtio

#if canImport(Glibc)
    import Glibc
#endif

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
    /// vsock's `uds_path`, bound when the device was configured (the VMM
    /// removes it when it ends); nil binds it when the machine is built.
    public var vsockSocket: VsockHostSocket?
    public init(
        consoleOutput: FileDescriptor = .standardOutput, consoleInput: FileDescriptor? = nil,
        log: @escaping (String) -> Void = { _ in }, startNanoseconds: UInt64 = MonotonicClock.nanoseconds(),
        bootTimer: Bool = false, firmware: FirmwareTableBuilder? = nil, trace: ((String) -> Void)? = nil
    ) {
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
public final class Machine: @unchecked Sendable { // driven on the event loop's thread; others reach only Sendable parts
    public let memory: MappedGuestMemory
    public let plan: BootPlan
    let vm: KVMVirtualMachine
    let portBus = Bus(name: "port I/O")
    let memoryBus = Bus(name: "MMIO")
    let exitSignal: ExitSignal
    let wakeEvent: EventFD
    /// The serial port, i8042, CMOS clock, sleep control and boot timer.
    let legacy: LegacyDevices
    let host: MachineHost
    let pauseGate = PauseGate()
    let virtio: VirtioDeviceManager
    private var threads: [VCPUThread] = []
    private var vcpusRunning = false
    /// What `start(on:)` put on the event loop, cancelled when `run` ends.
    private var subscriptions: [EventLoop.Token] = []
    /// The next halted-guest check (a new timer each time, its delay growing).
    private var haltCheck: EventLoop.Token?

    public init(configuration: VMConfig, host: MachineHost) throws {
        try configuration.validate()
        guard let bootSource = configuration.bootSource else {
            throw BootInputError.noBootSource
        }
        self.host = host
        let machineConfig = configuration.machine
        try VirtioDeviceManager.refuseUnsupported(configuration)

        // 1. Guest memory, the devices' backends and the boot image: no KVM
        // involved yet.
        let kernelImage = try ImageFile.read(
            bootSource.kernelImagePath, .kernel, guestMemoryMiB: machineConfig.memSizeMiB)
        let initrd = try bootSource.initrdPath.map {
            try ImageFile.read($0, .initrd, guestMemoryMiB: machineConfig.memSizeMiB)
        }
        let ram = try X86Layout.ramRanges(bytes: UInt64(machineConfig.memSizeMiB) << 20)
        memory = try MappedGuestMemory(ranges: ram, transparentHugePages: machineConfig.hugePages == .transparent)
        virtio = try VirtioDeviceManager(
            configuration: configuration, memory: memory, registry: host.metrics.registry,
            vsockSocket: host.vsockSocket, log: host.log)
        let platform = PlatformDescription(vcpuCount: machineConfig.vcpuCount, virtioDevices: virtio.platformDevices)
        let commandLine = Machine.commandLine(bootSource.bootArgs ?? "", adding: virtio.commandLine)
        do {
            plan = try GuestBoot.prepare(
                memory: memory, kernelImage: kernelImage, initrd: initrd, commandLine: commandLine,
                platform: platform, firmware: host.firmware)
        } catch let error as KernelImageError {
            throw BootInputError.kernelImage(path: bootSource.kernelImagePath, error)
        } catch let error as InitrdPlacementError {
            throw BootInputError.initrdPlacement(path: bootSource.initrdPath ?? "", error)
        }

        // 2. The VM: system pages, irqchip, PIT, memory slots. /dev/kvm is
        // this local's alone (the VM keeps no reference): it is closed by the
        // time this initialiser returns, with the VM and vCPUs made, so that
        // nothing later can create a second VM (KVM_CREATE_VM) with it.
        let system = try KVMSystem()
        try system.requireCapabilities()
        vm = try system.createVM()
        try vm.setSystemAddresses(tss: X86Layout.tss, identityMap: X86Layout.identityMapPage)
        try vm.createInterruptController()
        try vm.setInterruptRouting(InterruptRouting.pc)
        try vm.createPIT()
        for (slot, region) in memory.regions.enumerated() {
            try vm.setMemoryRegion(slot: UInt32(slot), region: region, logDirtyPages: machineConfig.trackDirtyPages)
        }

        // 3. Devices, each wired with its window, interrupt line and
        // destinations in one function: `LegacyDevices.wire` and
        // `VirtioDeviceManager.wire`. The wake eventfd is ours until `self`
        // is whole (deinit closes it), so a failure before then closes it.
        // An eventfd wakes the event loop when a vCPU or device asks to stop.
        let wake = try EventFD()
        wakeEvent = wake
        exitSignal = ExitSignal { try? wake.signal() }
        let exitSignal = self.exitSignal, metrics = host.metrics
        let start = host.startNanoseconds, log = host.log
        do {
            legacy = try LegacyDevices.wire(
                vm: vm, portBus: portBus, memoryBus: memoryBus,
                to: .init(
                    console: host.consoleOutput, exitSignal: exitSignal, metrics: metrics,
                    bootTimer: host.bootTimer ? .init(startNanoseconds: start, log: log) : nil))
        } catch {
            wake.close()
            throw error
        }

        try virtio.wire(vm: vm, bus: memoryBus)

        // 4. vCPUs: CPUID, MSRs, registers, FPU, LAPIC.
        let supported = try system.supportedCPUID()
        let topology = CPUTopology(vcpuCount: machineConfig.vcpuCount, smt: machineConfig.smt)
        for index in 0..<machineConfig.vcpuCount {
            let vcpu = try vm.createVCPU(index: index)
            try Machine.configure(
                vcpu, cpuid: CPUIDNormalizer.normalize(supported, vcpuIndex: index, topology: topology),
                plan: plan)
            let firstRun: ((Int) -> Void)? =
                index == 0
                ? { _ in
                    log(
                        "vcpu0: first KVM_RUN \(Machine.milliseconds(MonotonicClock.nanoseconds() - start)) ms since kiln start, "
                            + "VMM CPU \(Machine.milliseconds(MonotonicClock.processCPUNanoseconds())) ms")
                } : nil
            threads.append(
                VCPUThread(
                    vcpu: vcpu, portBus: portBus, memoryBus: memoryBus, exitSignal: exitSignal,
                    pauseGate: pauseGate, exits: metrics.exits, onThreadStart: host.vcpuThreadStarted,
                    onFirstRun: firstRun, trace: host.trace))
        }
    }

    deinit { wakeEvent.close() }

    /// The user's boot arguments with the devices' words added, before a
    /// standalone `--` if there is one: what follows it goes to init.
    static func commandLine(_ bootArgs: String, adding words: String) -> String {
        guard !words.isEmpty else { return bootArgs }
        var parts = bootArgs.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        let position = parts.firstIndex(of: "--") ?? parts.count
        parts.insert(words, at: position)
        return parts.filter { !$0.isEmpty }.joined(separator: " ")
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

    /// How often the event loop checks whether every vCPU is stuck: 500 ms
    /// at first, then twice as long after each check that found the guest
    /// running, up to 8 s. Each check kicks every vCPU out of KVM_RUN, which
    /// would otherwise cost an idle guest two wake-ups a second.
    static let haltCheckMilliseconds: Int32 = 500
    static let haltCheckMaximumMilliseconds: Int32 = 8000

    /// Subscribes the machine's descriptors to `loop` (exit requests,
    /// console input, virtio queues and backends, the halted-guest check),
    /// then starts every vCPU thread and runs `host.vcpusStarted`. All
    /// subscribing happens first, while the event loop's filter is not on.
    public func start(on loop: EventLoop) throws {
        let wake = wakeEvent
        subscriptions.append(try loop.subscribe(wake.descriptor) { _ in _ = try? wake.drain() })
        if let input = host.consoleInput, let token = try subscribeConsole(input, on: loop) {
            subscriptions.append(token)
        }
        scheduleHaltCheck(on: loop, afterMilliseconds: Machine.haltCheckMilliseconds)
        subscriptions += try virtio.subscribe(to: loop)
        VCPUThread.installKickHandler()
        vcpusRunning = true
        for thread in threads { try thread.start() }
        try host.vcpusStarted?()
    }

    /// Serves the machine on `loop` until it stops, or until `interrupted`
    /// gives a reason to stop it (checked every round, so a stop request is
    /// never lost to a wake-up another handler consumed). The loop's other
    /// subscribers (the API's jobs) keep being served.
    public func run(on loop: EventLoop, interrupted: () -> String?) throws -> MachineExitReason {
        if !vcpusRunning { try start(on: loop) }
        defer {
            for token in subscriptions { loop.cancel(token) }
            subscriptions = []
            if let haltCheck { loop.cancel(haltCheck) }
            haltCheck = nil
        }
        while true {
            if let reason = exitSignal.reason { return reason }
            if let why = interrupted() { exitSignal.request(.failure(why)) }
            // No bound on the wait: an exit request, a signal and a job
            // each wake the loop, and timers bound it while one is set.
            try loop.runOnce(maximumMilliseconds: -1)
        }
    }

    /// Console input for the UART. While the UART's buffer is full the
    /// descriptor is not watched, and is looked at again a little later; at
    /// end of input it is dropped. Input epoll cannot watch (a regular file,
    /// /dev/null) is read on a timer instead, as far as the UART takes it.
    private func subscribeConsole(_ input: FileDescriptor, on loop: EventLoop) throws -> EventLoop.Token? {
        var buffer = [UInt8](repeating: 0, count: 256)
        var token: EventLoop.Token?
        let serial = legacy.serial
        let retryMilliseconds: UInt64 = 10
        /// Reads once if the UART has room; false once the input has ended.
        let pump: () -> Bool = {
            guard serial.canReceive else { return true }
            let count = buffer.withUnsafeMutableBytes { Glibc.read(input.rawValue, $0.baseAddress, $0.count) }
            if count > 0 { serial.enqueueInput(Array(buffer[0..<count])) }
            return count > 0 || (count < 0 && (errno == EINTR || errno == EAGAIN))
        }
        do {
            token = try loop.subscribe(input) { [weak loop] _ in
                guard let loop, let current = token else { return }
                if !serial.canReceive {
                    try? loop.modify(current, events: [])
                    loop.schedule(afterMilliseconds: retryMilliseconds) { try? loop.modify(current, events: .readable) }
                } else if !pump() {
                    loop.cancel(current) // end of input: the guest just sees no more bytes
                }
            }
        } catch let error as SystemError where error.errno == EPERM {
            token = loop.schedule(afterMilliseconds: retryMilliseconds, repeating: true) { [weak loop] in
                if !pump(), let current = token { loop?.cancel(current) }
            }
        }
        return token
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
            throw MachineControlError.vcpusDidNotStop
        }
    }

    /// Lets parked vCPUs run again (`PATCH /vm` "Resumed").
    public func resume() { pauseGate.open() }

    /// PUT /drives before boot: opens the drive's file as InstanceStart will
    /// and closes it again, so a path that cannot serve is refused while the
    /// request is answered, as Firecracker's PUT /drives is. A drive without
    /// `path_on_host` is left to the configuration's own validation.
    public static func checkDrive(_ drive: BlockDeviceConfig) throws {
        guard let path = drive.pathOnHost else { return }
        _ = try VirtioDeviceManager.openDriveFile(drive, path: path)
    }

    /// PUT /network-interfaces before boot: attaches to the TAP as
    /// InstanceStart will and lets it go, so a TAP that is missing or busy is
    /// refused while the request is answered, as Firecracker's is.
    public static func checkNetworkInterface(_ interface: NetworkInterfaceConfig) throws {
        try TapNetBackend.openTap(interface.hostDevName).close()
    }

    /// PATCH /drives after boot: a new file, new rate limiters. On the event loop.
    public func updateDrive(_ drive: BlockDeviceConfig) throws { try virtio.updateDrive(drive) }

    /// PATCH /network-interfaces after boot: new rate limiters.
    public func updateNetworkInterface(_ interface: NetworkInterfaceConfig) throws {
        guard
            virtio.updateRateLimiters(
                interfaceID: interface.ifaceID, receive: interface.rxRateLimiter,
                transmit: interface.txRateLimiter)
        else {
            throw MachineControlError.networkInterfaceNotAttached(interface.ifaceID)
        }
    }

    /// Presses Ctrl+Alt+Del on the i8042 keyboard (`SendCtrlAltDel`).
    public func sendCtrlAltDel() throws {
        guard legacy.keyboard.pressCtrlAltDel() else {
            throw MachineControlError.keyboardBufferFull
        }
        host.metrics.ctrlAltDelPresses.increment()
    }

    private func scheduleHaltCheck(on loop: EventLoop, afterMilliseconds delay: Int32) {
        haltCheck = loop.schedule(afterMilliseconds: UInt64(delay)) { [weak self, weak loop] in
            guard let self, let loop else { return }
            self.checkForStuckGuest()
            self.scheduleHaltCheck(on: loop, afterMilliseconds: min(delay * 2, Machine.haltCheckMaximumMilliseconds))
        }
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
public enum MachineControlError: Error, Equatable, CustomStringConvertible, Sendable {
    /// Pause: some vCPU did not park within the bound.
    case vcpusDidNotStop
    case driveNotAttached(String)
    case networkInterfaceNotAttached(String)
    /// Ctrl+Alt+Del: the guest leaves its keyboard's buffer full.
    case keyboardBufferFull

    public var description: String {
        switch self {
        case .vcpusDidNotStop: "the vCPUs did not stop within 2 s; the microVM keeps running"
        case .driveNotAttached(let driveID): "drive \(driveID) is not attached"
        case .networkInterfaceNotAttached(let ifaceID): "network interface \(ifaceID) is not attached"
        case .keyboardBufferFull: "the guest is not reading its i8042 keyboard: its buffer is full"
        }
    }
}
