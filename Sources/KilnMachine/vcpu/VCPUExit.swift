import CKiln

/// Why KVM_RUN returned, decoded from the shared `kvm_run` page (api.rst §5,
/// "The kvm_run structure") into a value, so that what the VMM does with an
/// exit (`VCPUExitDispatcher`) is tested without KVM.
///
/// The data of an I/O or MMIO access stays where KVM put it, in the run
/// page: `data` points there (no copy, no allocation on the vCPU's hot
/// path), and a read is answered by filling it before the next KVM_RUN.
enum VCPUExit {
    /// `in`/`out`, `count` repetitions of `size` bytes (string I/O).
    case portIO(port: UInt16, isWrite: Bool, size: Int, data: UnsafeMutableRawBufferPointer)
    /// A load or store outside the memory slots (1 to 8 bytes).
    case mmio(address: UInt64, isWrite: Bool, data: UnsafeMutableRawBufferPointer)
    /// HLT reached userspace (only without an in-kernel LAPIC).
    case halt
    /// A triple fault.
    case shutdown
    /// KVM_SYSTEM_EVENT_* (PSCI-style reset or shutdown requests).
    case systemEvent(type: UInt32)
    case internalError(suberror: UInt32)
    case failEntry(reason: UInt64)
    /// KVM_EXIT_INTR: a signal interrupted the run.
    case interrupted
    case unknown(reason: UInt32)

    /// Reads the exit out of `run`. KVM wrote it; the fields that size or
    /// place the data are still checked against the page, so a confused
    /// kernel (or a test) cannot point the VMM outside it.
    static func decode(_ run: UnsafeMutablePointer<kvm_run>, pageSize: Int) -> VCPUExit {
        switch Int32(run.pointee.exit_reason) {
        case KVM_EXIT_IO:
            let io = run.pointee.io
            let size = Int(io.size), total = Int(io.size) * Int(io.count)
            let offset = Int(io.data_offset)
            guard [1, 2, 4].contains(size), offset >= 0, total <= pageSize - min(offset, pageSize) else {
                return .unknown(reason: run.pointee.exit_reason)
            }
            let data = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(run) + offset, count: total)
            return .portIO(port: io.port, isWrite: io.direction == UInt8(KVM_EXIT_IO_OUT), size: size, data: data)
        case KVM_EXIT_MMIO:
            let length = Int(min(run.pointee.mmio.len, 8))
            let data = UnsafeMutableRawBufferPointer(start: ckiln_kvm_run_mmio_data(run), count: length)
            return .mmio(address: run.pointee.mmio.phys_addr, isWrite: run.pointee.mmio.is_write != 0, data: data)
        case KVM_EXIT_HLT: return .halt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_SYSTEM_EVENT: return .systemEvent(type: run.pointee.system_event.type)
        case KVM_EXIT_INTERNAL_ERROR: return .internalError(suberror: run.pointee.internal.suberror)
        case KVM_EXIT_FAIL_ENTRY: return .failEntry(reason: run.pointee.fail_entry.hardware_entry_failure_reason)
        case KVM_EXIT_INTR: return .interrupted
        default: return .unknown(reason: run.pointee.exit_reason)
        }
    }
}

/// What the VMM does with each exit: port and MMIO accesses go to their
/// bus, the rest become the machine's exit reason. Needs no KVM: the vCPU
/// thread decodes, calls `handle`, and re-enters.
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
                let claimed = isWrite ? portBus.write(UInt64(port), from: UnsafeRawBufferPointer(access))
                                      : portBus.read(UInt64(port), into: access)
                trace?("vcpu\(index): \(isWrite ? "out" : "in") port 0x\(String(port, radix: 16)) \(Array(access))"
                       + (claimed ? "" : " (unclaimed)"))
            }
            return .resume
        case let .mmio(address, isWrite, data):
            (isWrite ? exits.mmioWrite : exits.mmioRead).increment()
            let claimed = isWrite ? memoryBus.write(address, from: UnsafeRawBufferPointer(data))
                                  : memoryBus.read(address, into: data)
            trace?("vcpu\(index): mmio \(isWrite ? "write" : "read") 0x\(String(address, radix: 16)) \(Array(data))"
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
            return .stop(.reset("triple fault on vCPU \(index), KVM_EXIT_SHUTDOWN: a reboot=t reboot, or a guest crash; "
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
            return .stop(.failure("KVM internal error, suberror \(suberror), rip 0x\(rip()); on kvm-pvm check `dmesg | tail`"))
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
