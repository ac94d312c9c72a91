import CKiln

/// Why KVM_RUN returned, decoded from the shared `kvm_run` page (api.rst §5,
/// "The kvm_run structure") into a value: the hypervisor's side of an exit,
/// apart from what the VMM does with it (`VCPUExitDispatcher`, in
/// `vcpu/VCPUThread.swift`), as Cloud Hypervisor's `VmExit` is apart from
/// its vCPU manager. `KVMVirtualCPU.runOnce` returns one.
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
