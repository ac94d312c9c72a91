import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// One vCPU's thread: the KVM_RUN loop. `KVMVirtualCPU.runOnce` returns
/// each exit decoded (`kvm/VCPUExit.swift`); the `VCPUExitDispatcher` below
/// decides what it means: a port or MMIO access goes to its `Bus`
/// (`bus/Bus.swift`, the next hop), anything else becomes the machine's exit
/// reason. The dispatcher needs no KVM.
/// Entry points live here, not in an executable's main.swift (where Swift
/// would infer them main-actor isolated; docs/platform.md, "Threads and Swift 6").
final class VCPUThread: @unchecked Sendable { // `thread` is set by start() and read by kick(), both on the event loop
    let vcpu: KVMVirtualCPU
    let dispatcher: VCPUExitDispatcher
    let exitSignal: ExitSignal
    /// Called once, just before the first KVM_RUN (for start-up figures).
    let onFirstRun: ((Int) -> Void)?
    /// Receives one line per exit when tracing (kiln --level trace).
    let trace: ((String) -> Void)?
    /// Runs first on the new thread, before any KVM_RUN: the thread's role
    /// and seccomp filter. A throw stops the machine.
    let onThreadStart: ((Int) throws -> Void)?
    let pauseGate: PauseGate
    let exits: VCPUExitCounters
    /// Set by `start`, read by `kick`: both on the event loop's thread.
    private var thread: SystemThread?
    private let stuck = Locked(false)

    init(
        vcpu: KVMVirtualCPU, portBus: Bus, memoryBus: Bus, exitSignal: ExitSignal, pauseGate: PauseGate,
        exits: VCPUExitCounters, onThreadStart: ((Int) throws -> Void)?,
        onFirstRun: ((Int) -> Void)?, trace: ((String) -> Void)?
    ) {
        self.trace = trace
        self.pauseGate = pauseGate
        self.exits = exits
        self.onThreadStart = onThreadStart
        self.vcpu = vcpu
        dispatcher = VCPUExitDispatcher(portBus: portBus, memoryBus: memoryBus, exits: exits, trace: trace)
        self.exitSignal = exitSignal
        self.onFirstRun = onFirstRun
    }

    /// True when the last kick found this vCPU unable ever to run again by
    /// itself: halted with interrupts disabled, or an AP never started.
    var isStuck: Bool { stuck.withLock { $0 } }

    func start() throws {
        thread = try SystemThread.spawn(name: "kiln-vcpu\(vcpu.index)") { [self] in runLoop() }
    }

    /// Makes KVM_RUN return at once (immediate_exit, api.rst §5 kvm_run)
    /// and interrupts it if it is already inside, so the thread re-checks
    /// its state.
    func kick() {
        guard let thread else { return }
        vcpu.run.pointee.immediate_exit = 1
        thread.send(VCPUThread.kickSignal)
    }

    static let kickSignal = SIGUSR1

    /// Installs a no-op handler for the kick signal, without SA_RESTART, so
    /// the signal interrupts KVM_RUN with EINTR instead of killing us.
    static func installKickHandler() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(kickSignal, &action, nil)
    }

    private func runLoop() {
        // A parent may have started us with signals blocked; the kick must
        // get through or a halted guest is never noticed.
        var kickOnly = sigset_t()
        sigemptyset(&kickOnly)
        sigaddset(&kickOnly, VCPUThread.kickSignal)
        pthread_sigmask(SIG_UNBLOCK, &kickOnly, nil)
        do {
            try onThreadStart?(vcpu.index)
            onFirstRun?(vcpu.index)
            while exitSignal.reason == nil {
                guard let exit = try vcpu.runOnce() else {
                    exits.interrupted.increment()
                    vcpu.run.pointee.immediate_exit = 0
                    // A pause always kicks, so an interrupted run is where
                    // a vCPU parks (PATCH /vm "Paused").
                    if pauseGate.parkWhileClosed() { continue }
                    updateStuckState()
                    continue
                }
                stuck.withLock { $0 = false }
                handle(exit)
            }
        } catch {
            exitSignal.request(.failure("vCPU \(vcpu.index): \(error)"))
        }
    }

    private func updateStuckState() {
        guard let state = try? vcpu.multiprocessingState() else { return }
        let value: Bool
        switch Int32(state) {
        case KVM_MP_STATE_HALTED:
            let interruptsEnabled = ((try? vcpu.registers().rflags) ?? 0x200) & 0x200 != 0
            value = !interruptsEnabled
        case KVM_MP_STATE_UNINITIALIZED, KVM_MP_STATE_INIT_RECEIVED:
            value = true
        default:
            value = false
        }
        stuck.withLock { $0 = value }
        if let trace, let regs = try? vcpu.registers() {
            trace(
                "vcpu\(vcpu.index): kicked, mp_state \(state), rip 0x\(String(regs.rip, radix: 16)), "
                    + "rflags 0x\(String(regs.rflags, radix: 16))")
        }
    }

    private func handle(_ exit: VCPUExit) {
        switch dispatcher.handle(exit, vcpu: vcpu.index, rip: { ripText }) {
        case .resume: break
        case .halted:
            stuck.withLock { $0 = true }
            exitSignal.request(.allVCPUsHalted)
        case let .stop(reason):
            exitSignal.request(reason)
        }
    }

    private var ripText: String { (try? String(vcpu.registers().rip, radix: 16)) ?? "?" }
}

/// What the VMM does with each exit: port and MMIO accesses go to their
/// bus (`Bus.read`/`Bus.write`, which find the device's window), the rest
/// become the machine's exit reason. Needs no KVM: the vCPU thread gets the
/// decoded exit, calls `handle`, and re-enters.
struct VCPUExitDispatcher {
    let portBus: Bus
    let memoryBus: Bus
    let exits: VCPUExitCounters
    /// One line per access when tracing.
    let trace: ((String) -> Void)?

    /// What the vCPU thread does next.
    enum Outcome: Equatable {
        case resume
        /// This vCPU halted in userspace (no in-kernel LAPIC).
        case halted
        case stop(MachineExitReason)
    }

    /// `rip` is asked only for failure messages.
    func handle(_ exit: VCPUExit, vcpu index: Int, rip: () -> String) -> Outcome {
        switch exit {
        case let .portIO(port, isWrite, size, data):
            (isWrite ? exits.ioOut : exits.ioIn).increment()
            for start in stride(from: 0, to: data.count, by: size) {
                let access = UnsafeMutableRawBufferPointer(rebasing: data[start..<start + size])
                let claimed =
                    isWrite
                    ? portBus.write(UInt64(port), from: UnsafeRawBufferPointer(access))
                    : portBus.read(UInt64(port), into: access)
                trace?(
                    "vcpu\(index): \(isWrite ? "out" : "in") port 0x\(String(port, radix: 16)) \(Array(access))"
                        + (claimed ? "" : " (unclaimed)"))
            }
            return .resume
        case let .mmio(address, isWrite, data):
            (isWrite ? exits.mmioWrite : exits.mmioRead).increment()
            let claimed =
                isWrite
                ? memoryBus.write(address, from: UnsafeRawBufferPointer(data))
                : memoryBus.read(address, into: data)
            trace?(
                "vcpu\(index): mmio \(isWrite ? "write" : "read") 0x\(String(address, radix: 16)) \(Array(data))"
                    + (claimed ? "" : " (unclaimed)"))
            return .resume
        case .halt:
            exits.halt.increment()
            return .halted
        case .shutdown:
            exits.shutdown.increment()
            // A triple fault resets a PC, and Linux's `reboot=t` relies on it
            // (arch/x86/kernel/reboot.c, BOOT_TRIPLE). kiln has no reset in
            // place, so it ends as for the i8042 reset, saying how.
            return .stop(
                .reset(
                    "triple fault on vCPU \(index), KVM_EXIT_SHUTDOWN: a reboot=t reboot, or a guest crash; "
                        + "on kvm-pvm check `dmesg | tail`"))
        case let .systemEvent(type):
            exits.systemEvent.increment()
            switch Int32(type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: return .stop(.poweroff("KVM_SYSTEM_EVENT_SHUTDOWN"))
            case KVM_SYSTEM_EVENT_RESET: return .stop(.reset("KVM_SYSTEM_EVENT_RESET"))
            default: return .stop(.failure("system event \(type)"))
            }
        case let .internalError(suberror):
            exits.internalError.increment()
            return .stop(
                .failure("KVM internal error, suberror \(suberror), rip 0x\(rip()); on kvm-pvm check `dmesg | tail`"))
        case let .failEntry(reason):
            exits.failEntry.increment()
            return .stop(.failure("VM entry failed, reason 0x\(String(reason, radix: 16))"))
        case .interrupted:
            exits.interrupted.increment()
            return .resume
        case let .unknown(reason):
            exits.other.increment()
            return .stop(.failure("unexpected KVM exit \(reason) on vCPU \(index), rip 0x\(rip())"))
        }
    }
}
