import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// /dev/kvm: the API version check, capabilities, and the VM factory
/// (Documentation/virt/kvm/api.rst §4.1-4.4, §4.46).
public final class KVMSystem: @unchecked Sendable { // immutable: one fd, whose system ioctls any thread may make
    public static let devicePath = "/dev/kvm"
    /// The only stable KVM API version (api.rst §4.1).
    static let apiVersion: Int32 = 12

    public let fd: FileDescriptor

    public init(path: String = KVMSystem.devicePath) throws {
        fd = try FileDescriptor.open(path, O_RDWR)
        let version = try check("KVM_GET_API_VERSION") { ckiln_ioctl_int(fd.rawValue, ckiln_kvm_get_api_version(), 0) }
        guard version == KVMSystem.apiVersion else {
            fd.close()
            throw SystemError("KVM_GET_API_VERSION", subject: "version \(version), expected 12", errno: ENOTSUP)
        }
    }

    deinit { fd.close() }

    /// KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific value.
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, ckiln_ioctl_int(fd.rawValue, ckiln_kvm_check_extension(), UInt(capability)))
    }

    /// Refuses to go on without the capabilities this VMM relies on.
    public func requireCapabilities() throws {
        let required: [(Int32, String)] = [
            (KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"), (KVM_CAP_PIT2, "KVM_CAP_PIT2"),
            (KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"), (KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"),
            (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"), (KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"),
            (KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING"), (KVM_CAP_IRQFD, "KVM_CAP_IRQFD"),
        ]
        for (capability, name) in required where checkExtension(capability) == 0 {
            throw SystemError("KVM_CHECK_EXTENSION", subject: name, errno: ENOTSUP)
        }
    }

    public func vcpuMappingSize() throws -> Int {
        Int(try check("KVM_GET_VCPU_MMAP_SIZE") { ckiln_ioctl_int(fd.rawValue, ckiln_kvm_get_vcpu_mmap_size(), 0) })
    }

    /// KVM_GET_SUPPORTED_CPUID, growing the buffer on E2BIG.
    public func supportedCPUID() throws -> [CPUIDEntry] {
        var capacity: UInt32 = 128
        while true {
            var raw = [kvm_cpuid_entry2](repeating: kvm_cpuid_entry2(), count: Int(capacity))
            let count = ckiln_kvm_get_supported_cpuid(fd.rawValue, &raw, capacity)
            if count >= 0 {
                return raw.prefix(Int(count)).map {
                    CPUIDEntry(
                        function: $0.function, index: $0.index, flags: $0.flags,
                        eax: $0.eax, ebx: $0.ebx, ecx: $0.ecx, edx: $0.edx)
                }
            }
            guard errno == E2BIG, capacity < 4096 else { throw SystemError.current("KVM_GET_SUPPORTED_CPUID") }
            capacity *= 2
        }
    }

    /// The VM holds no reference to this object, so /dev/kvm is closed as
    /// soon as its owner lets go of it: a machine does, once its VM and vCPUs
    /// exist, and no second VM can be made from that descriptor.
    public func createVM() throws -> KVMVirtualMachine {
        let mappingSize = try vcpuMappingSize()
        let vm = try check("KVM_CREATE_VM") { ckiln_ioctl_int(fd.rawValue, ckiln_kvm_create_vm(), 0) }
        return KVMVirtualMachine(fd: FileDescriptor(rawValue: vm), vcpuMappingSize: mappingSize)
    }
}
