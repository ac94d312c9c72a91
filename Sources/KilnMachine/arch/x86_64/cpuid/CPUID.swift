/// One CPUID leaf/subleaf as KVM describes it (`struct kvm_cpuid_entry2`),
/// kept as a plain value so normalisation is pure and testable.
public struct CPUIDEntry: Equatable, Sendable {
    public var function: UInt32
    public var index: UInt32
    /// KVM_CPUID_FLAG_SIGNIFCANT_INDEX (1): the subleaf index matters.
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    public init(
        function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
        eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0
    ) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }
}

/// The CPU topology the guest is shown: `vcpuCount` logical CPUs in one
/// socket, two threads per core when SMT is on.
public struct CPUTopology: Equatable, Sendable {
    public let vcpuCount: Int
    public let threadsPerCore: Int

    public init(vcpuCount: Int, smt: Bool) {
        self.vcpuCount = vcpuCount
        threadsPerCore = smt && vcpuCount > 1 ? 2 : 1
    }

    public var coresPerSocket: Int { vcpuCount / threadsPerCore }

    /// Bits of the APIC id that number threads within a core and cores
    /// within the package (Intel SDM Vol. 3A §8.9.1).
    public var threadBits: UInt32 { UInt32(threadsPerCore > 1 ? 1 : 0) }
    public var coreBits: UInt32 { ceilLog2(coresPerSocket) }

    private func ceilLog2(_ value: Int) -> UInt32 {
        var bits: UInt32 = 0
        while (1 << bits) < value { bits += 1 }
        return bits
    }
}

/// Turns KVM_GET_SUPPORTED_CPUID into what one vCPU should see (Intel SDM
/// Vol. 2A "CPUID"; AMD APM Vol. 3 Appendix E; KVM api.rst "KVM_GET_SUPPORTED_CPUID";
/// Documentation/virt/kvm/x86/cpuid.rst for the 0x4000_00xx leaves).
public enum CPUIDNormalizer {
    enum Bit {
        static let leaf1ECXMonitor: UInt32 = 1 << 3
        static let leaf1ECXVMX: UInt32 = 1 << 5
        static let leaf1ECXHypervisor: UInt32 = 1 << 31
        static let leaf1EDXHTT: UInt32 = 1 << 28
        static let leaf6ECXEnergyPerfBias: UInt32 = 1 << 3
        static let extendedECXSVM: UInt32 = 1 << 2
    }

    public static func normalize(_ supported: [CPUIDEntry], vcpuIndex: Int, topology: CPUTopology) -> [CPUIDEntry] {
        let apicID = UInt32(vcpuIndex)
        var result: [CPUIDEntry] = []
        for var entry in supported {
            switch entry.function {
            case 0x1:
                // EBX: [31:24] initial APIC id, [23:16] logical CPUs per package,
                // [15:8] CLFLUSH line size in qwords (8 = 64 bytes).
                entry.ebx = (apicID << 24) | (UInt32(topology.vcpuCount) << 16) | (8 << 8) | (entry.ebx & 0xff)
                entry.ecx |= Bit.leaf1ECXHypervisor
                // No MONITOR/MWAIT emulation and no nested VMX offered.
                entry.ecx &= ~(Bit.leaf1ECXMonitor | Bit.leaf1ECXVMX)
                if topology.vcpuCount > 1 { entry.edx |= Bit.leaf1EDXHTT } else { entry.edx &= ~Bit.leaf1EDXHTT }
            case 0x4:
                // Deterministic cache parameters: EAX[25:14] threads sharing
                // this cache - 1, EAX[31:26] cores per package - 1.
                let level = (entry.eax >> 5) & 0x7
                let sharing = level >= 3 ? topology.vcpuCount : topology.threadsPerCore
                entry.eax &= 0x3fff
                entry.eax |= UInt32(sharing - 1) << 14
                entry.eax |= UInt32(topology.coresPerSocket - 1) << 26
            case 0x6:
                // Energy-performance bias MSR is not emulated.
                entry.ecx &= ~Bit.leaf6ECXEnergyPerfBias
            case 0xa:
                // No virtual PMU: architectural performance monitoring off.
                entry.eax = 0; entry.ebx = 0; entry.ecx = 0; entry.edx = 0
            case 0xb, 0x1f:
                // Extended topology: subleaf 0 = SMT level, 1 = core level.
                entry.edx = apicID
                switch entry.index {
                case 0:
                    entry.eax = topology.threadBits
                    entry.ebx = UInt32(topology.threadsPerCore)
                    entry.ecx = (1 << 8) | entry.index
                case 1:
                    entry.eax = topology.threadBits + topology.coreBits
                    entry.ebx = UInt32(topology.vcpuCount)
                    entry.ecx = (2 << 8) | entry.index
                default:
                    entry.eax = 0; entry.ebx = 0
                    entry.ecx = entry.index
                }
            case 0x8000_0001:
                entry.ecx &= ~Bit.extendedECXSVM
            case 0x8000_0008:
                // ECX[7:0]: logical CPUs per package - 1 (AMD).
                entry.ecx = (entry.ecx & ~0xff) | UInt32(topology.vcpuCount - 1)
            default:
                break
            }
            result.append(entry)
        }
        return result
    }
}
