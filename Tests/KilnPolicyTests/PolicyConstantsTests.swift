import CPolicyConstantsCheck
import CSeccomp
import Testing

@testable import KilnPolicy

@Suite struct PolicyConstantsTests {
    /// Every named constant equals what the C compiler computes from the
    /// system headers (<linux/kvm.h> for the KVM ioctls, and so on).
    @Test func everyConstantMatchesTheCHeaders() {
        var fromC: [String: Int64] = [:]
        for index in 0..<cpolicy_constant_count() {
            let entry = cpolicy_constant_at(index)
            fromC[String(cString: entry.name)] = entry.value
        }
        let ours = PolicyConstants.headerChecked
        #expect(ours.count == fromC.count, "the C check must list every constant of the Swift table")
        for (name, value) in ours {
            #expect(
                fromC[name] == value,
                "\(name): Kiln has 0x\(String(UInt64(bitPattern: value), radix: 16)), C has \(fromC[name].map { "0x" + String(UInt64(bitPattern: $0), radix: 16) } ?? "nothing")"
            )
        }
    }

    @Test func kvmIoctlNumbersSpotCheck() {
        // Values printed by a C program including <linux/kvm.h> (also checked in bulk above).
        #expect(PolicyConstants.value(named: "KVM_RUN") == 0xAE80)
        #expect(PolicyConstants.value(named: "KVM_GET_IRQCHIP") == 0xC208_AE62)
        #expect(PolicyConstants.value(named: "KVM_SET_XSAVE") == 0x5000_AEA5)
        #expect(PolicyConstants.value(named: "KVM_SIGNAL_MSI") == 0x4020_AEA5)
        #expect(PolicyConstants.value(named: "TUNSETIFF") == 0x4004_54CA)
        #expect(PolicyConstants.value(named: "AT_FDCWD") == -100)
        #expect(PolicyConstants.value(named: "EPERM") == 1)
    }

    /// Our syscall table agrees with libseccomp's, name for name.
    @Test func syscallTableMatchesLibseccomp() {
        #expect(SyscallTable.names.count > 300)
        for name in SyscallTable.names {
            let number = seccomp_syscall_resolve_name(name)
            #expect(number == SyscallTable.number(of: name)!, "\(name)")
        }
    }

    @Test func thirtyTwoBitArgumentsNameRealSyscalls() {
        for (name, arguments) in SyscallTable.thirtyTwoBitArguments {
            #expect(SyscallTable.number(of: name) != nil, "\(name)")
            #expect(arguments.allSatisfy { (0...5).contains($0) })
        }
        #expect(SyscallTable.argumentWidth("ioctl", 1) == 32)
        #expect(SyscallTable.argumentWidth("ioctl", 2) == 64)
        #expect(SyscallTable.argumentWidth("mmap", 2) == 64)
    }

    /// Every 32-bit argument is one the call has, and every call the audit
    /// wants conditioned has its argument count listed.
    @Test func argumentCountsCoverTheTablesThatNameArguments() {
        for (name, count) in SyscallTable.argumentCounts {
            #expect(SyscallTable.number(of: name) != nil, "\(name)")
            #expect((1...6).contains(count), "\(name)")
        }
        for (name, arguments) in SyscallTable.thirtyTwoBitArguments {
            let count = SyscallTable.argumentCounts[name]
            #expect(count != nil, "\(name) has no argument count")
            #expect(arguments.allSatisfy { $0 < count ?? 0 }, "\(name): a 32-bit argument past its count")
        }
        for name in DangerousSyscalls.needConditions.keys {
            #expect(SyscallTable.argumentCounts[name] != nil, "\(name) has no argument count")
        }
        for (name, argument) in DangerousSyscalls.mappingCalls {
            #expect(argument < SyscallTable.argumentCounts[name] ?? 0, "\(name)")
        }
    }
}
