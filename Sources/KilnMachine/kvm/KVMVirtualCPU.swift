import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// A KVM vCPU: its shared `kvm_run` page and typed register access
/// (api.rst "vcpu ioctl"). Used only from the thread that runs it, except
/// `requestImmediateExit`, which any thread may call before signalling it.
// @unchecked Sendable: only its vCPU thread uses `run`, but for the kick's immediate_exit
public final class KVMVirtualCPU: @unchecked Sendable {
    public let fd: FileDescriptor
    public let index: Int
    public let run: UnsafeMutablePointer<kvm_run>
    let mappingSize: Int

    init(fd: FileDescriptor, index: Int, mappingSize: Int) throws {
        guard let mapping = mmap(nil, mappingSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.rawValue, 0),
            mapping != MAP_FAILED
        else {
            fd.close()
            throw SystemError.current("mmap", subject: "kvm_run of vCPU \(index)")
        }
        self.fd = fd
        self.index = index
        self.mappingSize = mappingSize
        run = mapping.bindMemory(to: kvm_run.self, capacity: 1)
    }

    deinit {
        munmap(run, mappingSize)
        fd.close()
    }

    /// One KVM_RUN. Returns false when interrupted by a signal (EINTR) or
    /// an immediate-exit request, true when `run.exit_reason` is valid.
    public func enter() throws -> Bool {
        if ckiln_ioctl_int(fd.rawValue, ckiln_kvm_run(), 0) == 0 { return true }
        if errno == EINTR || errno == EAGAIN { return false }
        throw SystemError.current("KVM_RUN", subject: "vCPU \(index)")
    }

    /// One KVM_RUN, its exit decoded (`VCPUExit`, next to this file); nil
    /// when interrupted by a signal or an immediate-exit request. What the
    /// VMM does with the exit is decided by `VCPUExitDispatcher`
    /// (`vcpu/VCPUThread.swift`), the next hop of a guest I/O.
    func runOnce() throws -> VCPUExit? {
        try enter() ? VCPUExit.decode(run, pageSize: mappingSize) : nil
    }

    private func get<T: BitwiseCopyable>(_ name: String, _ request: UInt, _ value: inout T) throws {
        try check(name, subject: "vCPU \(index)") { ckiln_ioctl_ptr(fd.rawValue, request, &value) }
    }

    private func set<T: BitwiseCopyable>(_ name: String, _ request: UInt, _ value: T) throws {
        var copy = value
        try check(name, subject: "vCPU \(index)") { ckiln_ioctl_ptr(fd.rawValue, request, &copy) }
    }

    public func registers() throws -> kvm_regs {
        var value = kvm_regs()
        try get("KVM_GET_REGS", ckiln_kvm_get_regs(), &value)
        return value
    }

    public func setRegisters(_ value: kvm_regs) throws { try set("KVM_SET_REGS", ckiln_kvm_set_regs(), value) }

    public func specialRegisters() throws -> kvm_sregs {
        var value = kvm_sregs()
        try get("KVM_GET_SREGS", ckiln_kvm_get_sregs(), &value)
        return value
    }

    public func setSpecialRegisters(_ value: kvm_sregs) throws {
        try set("KVM_SET_SREGS", ckiln_kvm_set_sregs(), value)
    }

    public func setFPU(_ value: kvm_fpu) throws { try set("KVM_SET_FPU", ckiln_kvm_set_fpu(), value) }

    public func lapic() throws -> kvm_lapic_state {
        var value = kvm_lapic_state()
        try get("KVM_GET_LAPIC", ckiln_kvm_get_lapic(), &value)
        return value
    }

    public func setLAPIC(_ value: kvm_lapic_state) throws { try set("KVM_SET_LAPIC", ckiln_kvm_set_lapic(), value) }

    public func multiprocessingState() throws -> UInt32 {
        var value = kvm_mp_state()
        try get("KVM_GET_MP_STATE", ckiln_kvm_get_mp_state(), &value)
        return value.mp_state
    }

    public func setCPUID(_ entries: [CPUIDEntry]) throws {
        let raw = entries.map { entry -> kvm_cpuid_entry2 in
            var value = kvm_cpuid_entry2()
            value.function = entry.function
            value.index = entry.index
            value.flags = entry.flags
            value.eax = entry.eax
            value.ebx = entry.ebx
            value.ecx = entry.ecx
            value.edx = entry.edx
            return value
        }
        try check("KVM_SET_CPUID2", subject: "vCPU \(index)") {
            ckiln_kvm_set_cpuid2(fd.rawValue, raw, UInt32(raw.count))
        }
    }

    public func setMSRs(_ values: [(index: UInt32, value: UInt64)]) throws {
        let raw = values.map { kvm_msr_entry(index: $0.index, reserved: 0, data: $0.value) }
        let written = try check("KVM_SET_MSRS", subject: "vCPU \(index)") {
            ckiln_kvm_set_msrs(fd.rawValue, raw, UInt32(raw.count))
        }
        guard written == raw.count else {
            let refused = values[Int(written)].index
            throw SystemError(
                "KVM_SET_MSRS", subject: "vCPU \(index) MSR 0x\(String(refused, radix: 16))", errno: EINVAL)
        }
    }
}
