#if canImport(Glibc)
import Glibc
#endif
import CKiln
import KilnSystem

/// One vCPU's thread: the KVM_RUN loop and its exit dispatch to the buses.
/// Entry points live here, not in an executable's main.swift (where Swift
/// would infer them main-actor isolated; platform notes).
final class VCPUThread: @unchecked Sendable {
    let vcpu: KVMVirtualCPU
    let portBus: Bus
    let memoryBus: Bus
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
    private(set) var thread: pthread_t?
    private let stateLock = Lock()
    private var stuck = false

    init(vcpu: KVMVirtualCPU, portBus: Bus, memoryBus: Bus, exitSignal: ExitSignal, pauseGate: PauseGate,
         exits: VCPUExitCounters, onThreadStart: ((Int) throws -> Void)?,
         onFirstRun: ((Int) -> Void)?, trace: ((String) -> Void)?) {
        self.trace = trace
        self.pauseGate = pauseGate
        self.exits = exits
        self.onThreadStart = onThreadStart
        self.vcpu = vcpu
        self.portBus = portBus
        self.memoryBus = memoryBus
        self.exitSignal = exitSignal
        self.onFirstRun = onFirstRun
    }

    /// True when the last kick found this vCPU unable ever to run again by
    /// itself: halted with interrupts disabled, or an AP never started.
    var isStuck: Bool { stateLock.withLock { stuck } }

    func start() throws {
        let context = Unmanaged.passRetained(self).toOpaque()
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { raw in
            let thread = Unmanaged<VCPUThread>.fromOpaque(raw!).takeRetainedValue()
            thread.runLoop()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<VCPUThread>.fromOpaque(context).release()
            throw SystemError("pthread_create", subject: "vCPU \(vcpu.index)", errno: result)
        }
        thread = handle
    }

    /// Makes KVM_RUN return at once (immediate_exit, api.rst §5 kvm_run)
    /// and interrupts it if it is already inside, so the thread re-checks
    /// its state.
    func kick() {
        guard let thread else { return }
        vcpu.run.pointee.immediate_exit = 1
        pthread_kill(thread, VCPUThread.kickSignal)
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
                guard try vcpu.enter() else {
                    exits.interrupted.increment()
                    vcpu.run.pointee.immediate_exit = 0
                    // A pause always kicks, so an interrupted run is where
                    // a vCPU parks (PATCH /vm "Paused").
                    if pauseGate.parkWhileClosed() { continue }
                    updateStuckState()
                    continue
                }
                stateLock.withLock { stuck = false }
                try handleExit()
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
        stateLock.withLock { stuck = value }
        if let trace, let regs = try? vcpu.registers() {
            trace("vcpu\(vcpu.index): kicked, mp_state \(state), rip 0x\(String(regs.rip, radix: 16)), "
                  + "rflags 0x\(String(regs.rflags, radix: 16))")
        }
    }

    private func handleExit() throws {
        let run = vcpu.run
        switch Int32(run.pointee.exit_reason) {
        case KVM_EXIT_IO:
            let io = run.pointee.io
            let size = Int(io.size)
            let base = UnsafeMutableRawPointer(run) + Int(io.data_offset)
            (io.direction == UInt8(KVM_EXIT_IO_OUT) ? exits.ioOut : exits.ioIn).increment()
            for index in 0..<Int(io.count) {
                let data = UnsafeMutableRawBufferPointer(start: base + index * size, count: size)
                let claimed: Bool
                if io.direction == UInt8(KVM_EXIT_IO_OUT) {
                    claimed = portBus.write(UInt64(io.port), from: UnsafeRawBufferPointer(data))
                } else {
                    claimed = portBus.read(UInt64(io.port), into: data)
                }
                trace?("vcpu\(vcpu.index): \(io.direction == UInt8(KVM_EXIT_IO_OUT) ? "out" : "in") port 0x"
                       + "\(String(io.port, radix: 16)) \(Array(data))\(claimed ? "" : " (unclaimed)")")
            }
        case KVM_EXIT_MMIO:
            let length = Int(min(run.pointee.mmio.len, 8))
            let address = run.pointee.mmio.phys_addr
            (run.pointee.mmio.is_write != 0 ? exits.mmioWrite : exits.mmioRead).increment()
            withUnsafeMutableBytes(of: &run.pointee.mmio.data) { raw in
                let data = UnsafeMutableRawBufferPointer(rebasing: raw[0..<length])
                let claimed: Bool
                if run.pointee.mmio.is_write != 0 {
                    claimed = memoryBus.write(address, from: UnsafeRawBufferPointer(data))
                } else {
                    claimed = memoryBus.read(address, into: data)
                }
                trace?("vcpu\(vcpu.index): mmio \(run.pointee.mmio.is_write != 0 ? "write" : "read") 0x"
                       + "\(String(address, radix: 16)) \(Array(data))\(claimed ? "" : " (unclaimed)")")
            }
        case KVM_EXIT_HLT:
            // Only without an in-kernel LAPIC; kept for completeness.
            exits.halt.increment()
            stateLock.withLock { stuck = true }
            exitSignal.request(.allVCPUsHalted)
        case KVM_EXIT_SHUTDOWN:
            exits.shutdown.increment()
            // A triple fault resets a PC, and Linux's `reboot=t` relies on it
            // (arch/x86/kernel/reboot.c, BOOT_TRIPLE). kiln has no reset in
            // place, so it ends as for the i8042 reset, saying how.
            exitSignal.request(.reset(
                "triple fault on vCPU \(vcpu.index), KVM_EXIT_SHUTDOWN: a reboot=t reboot, or a guest crash; on kvm-pvm check `dmesg | tail`"))
        case KVM_EXIT_SYSTEM_EVENT:
            exits.systemEvent.increment()
            switch Int32(run.pointee.system_event.type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: exitSignal.request(.poweroff("KVM_SYSTEM_EVENT_SHUTDOWN"))
            case KVM_SYSTEM_EVENT_RESET: exitSignal.request(.reset("KVM_SYSTEM_EVENT_RESET"))
            default: exitSignal.request(.failure("system event \(run.pointee.system_event.type)"))
            }
        case KVM_EXIT_INTERNAL_ERROR:
            exits.internalError.increment()
            exitSignal.request(.failure(
                "KVM internal error, suberror \(run.pointee.internal.suberror), rip 0x\(ripText); on kvm-pvm check `dmesg | tail`"))
        case KVM_EXIT_FAIL_ENTRY:
            exits.failEntry.increment()
            exitSignal.request(.failure(
                "VM entry failed, reason 0x\(String(run.pointee.fail_entry.hardware_entry_failure_reason, radix: 16))"))
        case KVM_EXIT_INTR:
            exits.interrupted.increment()
        case let other:
            exits.other.increment()
            exitSignal.request(.failure("unexpected KVM exit \(other) on vCPU \(vcpu.index), rip 0x\(ripText)"))
        }
    }

    private var ripText: String { (try? String(vcpu.registers().rip, radix: 16)) ?? "?" }
}
