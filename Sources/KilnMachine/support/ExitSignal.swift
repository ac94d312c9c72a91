import KilnSystem

/// Why the machine stopped. The first reason recorded wins.
public enum MachineExitReason: Equatable, Sendable, CustomStringConvertible {
    /// The guest reset itself (i8042 0xFE, KVM_SYSTEM_EVENT_RESET, or a
    /// triple fault, as `reboot=t` does): exit 0.
    case reset(String)
    /// ACPI S5 or KVM_SYSTEM_EVENT_SHUTDOWN: exit 0.
    case poweroff(String)
    /// Every vCPU halted with interrupts disabled: nothing can wake the guest.
    case allVCPUsHalted
    /// The guest or KVM failed: internal error, failed entry, bad exit.
    case failure(String)

    public var exitCode: Int32 {
        switch self {
        case .reset, .poweroff: return 0
        case .allVCPUsHalted: return 3
        case .failure: return 2
        }
    }

    public var description: String {
        switch self {
        case .reset(let how): return "guest reset (\(how))"
        case .poweroff(let how): return "guest powered off (\(how))"
        case .allVCPUsHalted: return "all vCPUs halted with interrupts disabled; the guest can never run again"
        case .failure(let what): return "guest failed: \(what)"
        }
    }
}

/// Where devices and vCPU threads report that the machine must stop; the
/// main thread waits on it. Thread-safe; the first reason is kept.
public final class ExitSignal: @unchecked Sendable { // `wake` is an eventfd write, safe from any thread
    private let recorded = Locked<MachineExitReason?>(nil)
    private let wake: () -> Void

    /// `wake` nudges the waiting thread (an eventfd write).
    public init(wake: @escaping () -> Void = {}) { self.wake = wake }

    public func request(_ reason: MachineExitReason) {
        let first = recorded.withLock { recorded in
            guard recorded == nil else { return false }
            recorded = reason
            return true
        }
        if first { wake() }
    }

    public var reason: MachineExitReason? { recorded.withLock { $0 } }
}
