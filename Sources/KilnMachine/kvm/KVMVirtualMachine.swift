import CKiln
import KilnMemory
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// A KVM VM file descriptor: memory slots, the in-kernel irqchip and PIT,
/// interrupt lines, and the vCPU factory (api.rst §4.x "vm ioctl").
public final class KVMVirtualMachine: Sendable {
    public let fd: FileDescriptor
    /// KVM_GET_VCPU_MMAP_SIZE, asked once: the VM keeps no /dev/kvm descriptor
    /// (see `KVMSystem.createVM`).
    let vcpuMappingSize: Int

    init(fd: FileDescriptor, vcpuMappingSize: Int) {
        self.fd = fd
        self.vcpuMappingSize = vcpuMappingSize
    }

    deinit { fd.close() }

    /// KVM_SET_TSS_ADDR and KVM_SET_IDENTITY_MAP_ADDR: pages KVM needs on
    /// Intel for real-mode emulation; they must not overlap RAM or devices.
    public func setSystemAddresses(tss: UInt64, identityMap: UInt64) throws {
        try check("KVM_SET_TSS_ADDR") { ckiln_ioctl_int(fd.rawValue, ckiln_kvm_set_tss_addr(), UInt(tss)) }
        var address = identityMap
        try check("KVM_SET_IDENTITY_MAP_ADDR") {
            ckiln_ioctl_ptr(fd.rawValue, ckiln_kvm_set_identity_map_addr(), &address)
        }
    }

    /// KVM_CREATE_IRQCHIP: PIC, IOAPIC and per-vCPU LAPICs in the kernel;
    /// must precede vCPU creation.
    public func createInterruptController() throws {
        try check("KVM_CREATE_IRQCHIP") { ckiln_ioctl_int(fd.rawValue, ckiln_kvm_create_irqchip(), 0) }
    }

    /// KVM_CREATE_PIT2 with the speaker port dummy (flag KVM_PIT_SPEAKER_DUMMY)
    /// so port 0x61 reads do not exit to userspace.
    public func createPIT() throws {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        try check("KVM_CREATE_PIT2") { ckiln_ioctl_ptr(fd.rawValue, ckiln_kvm_create_pit2(), &config) }
    }

    /// KVM_SET_GSI_ROUTING: replaces KVM's default GSI table (api.rst §4.52).
    public func setInterruptRouting(_ routes: [InterruptRouting.Route]) throws {
        let gsis = routes.map(\.gsi), chips = routes.map(\.chip.rawValue), pins = routes.map(\.pin)
        try check("KVM_SET_GSI_ROUTING") {
            ckiln_kvm_set_irqchip_routes(fd.rawValue, gsis, chips, pins, UInt32(routes.count))
        }
    }

    /// Maps one guest memory region as a slot.
    public func setMemoryRegion(slot: UInt32, region: GuestMemoryRegion, logDirtyPages: Bool) throws {
        var description = kvm_userspace_memory_region(
            slot: slot, flags: logDirtyPages ? UInt32(KVM_MEM_LOG_DIRTY_PAGES) : 0,
            guest_phys_addr: region.guestAddress, memory_size: region.size,
            userspace_addr: UInt64(UInt(bitPattern: region.host)))
        try check("KVM_SET_USER_MEMORY_REGION", subject: "slot \(slot)") {
            ckiln_ioctl_ptr(fd.rawValue, ckiln_kvm_set_user_memory_region(), &description)
        }
    }

    /// KVM_IRQ_LINE: drives a GSI of the in-kernel PIC/IOAPIC.
    public func setInterruptLine(_ gsi: UInt32, high: Bool) throws {
        var level = kvm_irq_level()
        level.irq = gsi
        level.level = high ? 1 : 0
        try check("KVM_IRQ_LINE", subject: "GSI \(gsi)") { ckiln_ioctl_ptr(fd.rawValue, ckiln_kvm_irq_line(), &level) }
    }

    /// KVM_IRQFD: an eventfd whose every write pulses `gsi` in the kernel
    /// (api.rst §4.75), one syscall per interrupt instead of two ioctls.
    /// The VM keeps the descriptor open for its lifetime.
    public func interruptEventFD(gsi: UInt32) throws -> InterruptEventFD {
        let event = try EventFD()
        var request = kvm_irqfd()
        request.fd = UInt32(event.descriptor.rawValue)
        request.gsi = gsi
        do {
            try check("KVM_IRQFD", subject: "GSI \(gsi)") { ckiln_ioctl_ptr(fd.rawValue, ckiln_kvm_irqfd(), &request) }
        } catch {
            event.close()
            throw error
        }
        return InterruptEventFD(event)
    }

    /// KVM_IOEVENTFD (api.rst §4.59): a guest's 4-byte write of `queue` at
    /// `address` (a virtio-mmio QueueNotify register) signals `event` in the
    /// kernel, with no exit to a vCPU thread. The registration lives as
    /// long as the VM.
    func registerQueueNotify(address: UInt64, queue: UInt32, event: EventFD) throws {
        try check("KVM_IOEVENTFD", subject: "0x\(String(address, radix: 16)) queue \(queue)") {
            ckiln_kvm_register_ioeventfd(fd.rawValue, address, 4, UInt64(queue), event.descriptor.rawValue)
        }
    }

    public func createVCPU(index: Int) throws -> KVMVirtualCPU {
        // Once the vCPU fd exists, only KVMVirtualCPU.init may fail, and it
        // closes the fd when it does.
        let mappingSize = vcpuMappingSize
        let vcpu = try check("KVM_CREATE_VCPU", subject: "\(index)") {
            ckiln_ioctl_int(fd.rawValue, ckiln_kvm_create_vcpu(), UInt(index))
        }
        return try KVMVirtualCPU(fd: FileDescriptor(rawValue: vcpu), index: index, mappingSize: mappingSize)
    }
}

/// An eventfd registered with KVM_IRQFD: `trigger()` raises its GSI.
/// A class so that the descriptor closes once, when the last device lets go.
public final class InterruptEventFD: Sendable {
    public let event: EventFD

    init(_ event: EventFD) { self.event = event }

    deinit { event.close() }

    /// Cannot fail for an irqfd: the counter would have to reach 2^64 - 2
    /// with KVM consuming nothing.
    public func trigger() {
        try? event.signal()
    }
}
