import KilnSeccomp
import KilnSystem
import KilnTestSupport
import Testing

@testable import KilnPolicy

#if canImport(Glibc)
    import Glibc
#endif

/// Every rule of every shipped role, proven against its compiled BPF with
/// the interpreter.
@Suite struct CompiledPolicyTests {
    typealias Support = PolicyTestSupport

    static func shippedRoles() throws -> [Policy] {
        try PolicyBundleBuilder.resolvedRoles(try PolicyLoader.load(directory: Support.shippedPoliciesDirectory))
    }

    /// Inputs that sit on and around each comparison: the allowed value, its
    /// neighbours (the next ioctl number), an extra flag bit, and junk in the
    /// upper half that the kernel ignores for 32-bit arguments only.
    static func probes(for rule: PolicyRule) -> [(arguments: [UInt64], satisfying: Bool)] {
        var probes: [([UInt64], Bool)] = []
        for alternative in rule.alternatives {
            var base = [UInt64](repeating: 0, count: 6)
            for test in alternative { base[test.argument] = PolicyAuditor.satisfyingValue(test) }
            probes.append((base, true))
            for test in alternative {
                let v = base[test.argument]
                let mask: UInt64 = test.mask ?? .max
                var freeBit: UInt64 = 0
                for shift in 0..<UInt64(test.width)
                where (UInt64(1) << shift) & v == 0 && (UInt64(1) << shift) & mask != 0 {
                    freeBit = UInt64(1) << shift
                    break
                }
                for mutated in [v &+ 1, v &- 1, v | freeBit, v ^ 1, v | 0xDEAD_0000_0000_0000, ~v] {
                    var arguments = base
                    arguments[test.argument] = mutated
                    probes.append((arguments, false))
                }
            }
        }
        return probes
    }

    @Test func everyRuleOfEveryShippedRoleMatchesItsBPF() throws {
        var checked = 0, nearMissesDenied = 0
        for policy in try Self.shippedRoles() {
            let interpreter = try BPFInterpreter(try PolicyCompiler.compile(policy))
            for rule in policy.rules {
                let probes =
                    rule.isUnconditional ? [([UInt64](repeating: 0x1234, count: 6), true)] : Self.probes(for: rule)
                for (arguments, satisfying) in probes {
                    let input = SeccompInput(
                        architecture: PolicyCompiler.architecture, syscallNumber: rule.number, arguments: arguments)
                    let expected = Support.expectedAction(policy, input)
                    if satisfying { #expect(expected == rule.action, "\(policy.role) \(rule.syscall) \(arguments)") }
                    if !satisfying && expected == policy.defaultAction { nearMissesDenied += 1 }
                    #expect(interpreter.evaluate(input) == expected, "\(policy.role) \(rule.syscall) \(arguments)")
                    checked += 1
                }
            }
            // Calls the role does not name get the default action.
            for name in ["ptrace", "execveat", "bpf", "mount", "socketpair"] where policy.rule(for: name) == nil {
                let input = SeccompInput(
                    architecture: PolicyCompiler.architecture, syscallNumber: SyscallTable.number(of: name)!)
                #expect(interpreter.evaluate(input) == policy.defaultAction, "\(policy.role) \(name)")
            }
        }
        #expect(checked > 1000)
        #expect(nearMissesDenied > 300, "near misses must reach the default action")
    }

    /// Only the jailer's pre-exec filter lets execve through; kiln's launch
    /// filter, on from its first line of Swift code, and every thread role
    /// stop it, so no thread of a running kiln can exec.
    @Test func onlyTheJailerAllowsExecve() throws {
        for policy in try Self.shippedRoles() {
            let interpreter = try BPFInterpreter(try PolicyCompiler.compile(policy))
            let verdict = interpreter.evaluate(
                SeccompInput(architecture: PolicyCompiler.architecture, syscallNumber: 59))
            if policy.role == SeccompBundle.jailerRole {
                #expect(verdict == .allow)
            } else {
                #expect(verdict == .trap, "\(policy.role) lets execve through: \(verdict)")
            }
        }
        #expect(try Self.shippedRoles().map(\.role).contains(SeccompBundle.launchRole))
    }

    /// The jailer's pre-exec filter stacks under kiln's launch filter and
    /// every thread role for kiln's whole life, so it cannot be narrower than
    /// what kiln ever calls; it is the launch role plus what runs in between:
    /// exec itself, glibc's and the Swift runtime's start-up, and kiln's
    /// Landlock set-up (SECURITY.md). Those the launch role leaves out: it
    /// goes on after them, and an unjailed kiln runs them under no filter.
    @Test func theJailerRoleIsTheLaunchRolePlusExecAndStartUp() throws {
        let roles = try Self.shippedRoles()
        let jailer = roles.first { $0.role == SeccompBundle.jailerRole }!,
            launch = roles.first { $0.role == SeccompBundle.launchRole }!
        #expect(
            Set(jailer.allowedSyscalls).subtracting(launch.allowedSyscalls)
                == [
                    "execve", "landlock_create_ruleset", "landlock_restrict_self",
                    "arch_prctl", "set_tid_address", "prlimit64", "readlink",
                ])
        #expect(Set(launch.allowedSyscalls).isSubset(of: jailer.allowedSyscalls))
        // Every launch rule's alternatives are among the jailer's (or its rule has no condition).
        for rule in launch.rules {
            let wider = try #require(jailer.rule(for: rule.syscall), "\(rule.syscall) is not in the jailer role")
            #expect(wider.action == rule.action, "\(rule.syscall) acts differently in launch and jailer")
            guard !wider.isUnconditional else { continue }
            #expect(!rule.isUnconditional, "\(rule.syscall): unconditional in launch, conditioned in jailer")
            for alternative in rule.alternatives {
                #expect(
                    wider.alternatives.contains { JailerUnion.same($0, alternative) },
                    "\(rule.syscall): launch's \(alternative.map(\.description).joined(separator: " && ")) is not the jailer's"
                )
            }
        }
        // And the start-up alternatives the jailer adds to shared calls are not launch's.
        // The values: O_RDONLY, GRND_NONBLOCK, SEEK_CUR.
        let onlyBefore: [(String, Int, UInt64)] = [("openat", 2, 0), ("getrandom", 2, 1), ("lseek", 2, 1)]
        for (syscall, argument, value) in onlyBefore {
            var arguments = [UInt64](repeating: 0, count: 6)
            arguments[argument] = value
            let number = SyscallTable.number(of: syscall)!
            #expect(
                TraceRecorder.verdict(of: jailer, number: number, arguments: arguments).byRule,
                "\(syscall) \(value) in jailer")
            #expect(
                !TraceRecorder.verdict(of: launch, number: number, arguments: arguments).byRule,
                "\(syscall) \(value) in launch")
        }
    }

    /// tgkill reaches only kiln's own threads: every role that allows it
    /// tests the target process against OWN_PID, which the compiled bundle
    /// holds as a placeholder no real process has (so an unresolved program
    /// fails closed) and SeccompFilter.install sets to getpid().
    @Test func tgkillReachesOnlyTheInstallingProcess() throws {
        let own: UInt64 = 4242, other: UInt64 = 4243
        func tgkill(_ program: [BPFInstruction], _ tgid: UInt64, _ signal: Int32) throws -> SeccompAction {
            try BPFInterpreter(program).evaluate(
                SeccompInput(
                    architecture: PolicyCompiler.architecture, syscallNumber: 234,
                    arguments: [tgid, own + 7, UInt64(signal)]))
        }
        var roles: [String] = []
        for policy in try Self.shippedRoles() where policy.rule(for: "tgkill") != nil {
            roles.append(policy.role)
            let compiled = try PolicyCompiler.compile(policy)
            #expect(OwnProcessID.sites(in: compiled) > 0, "\(policy.role): tgkill is not conditioned on OWN_PID")
            let resolved = OwnProcessID.resolve(compiled, pid: UInt32(own))
            #expect(OwnProcessID.sites(in: resolved) == 0)
            #expect(try tgkill(resolved, own, SIGABRT) == .allow, "\(policy.role): abort() at its own thread")
            #expect(
                try tgkill(resolved, other, SIGABRT) == policy.defaultAction, "\(policy.role) signals another process")
            #expect(try tgkill(resolved, UInt64(OwnProcessID.placeholder), SIGABRT) == policy.defaultAction)
            #expect(
                try tgkill(compiled, own, SIGABRT) == policy.defaultAction,
                "\(policy.role): unresolved must fail closed")
            // The upper half of the pid argument is ignored, as the kernel reads an int.
            #expect(try tgkill(resolved, own | 0xFFFF_FFFF_0000_0000, SIGABRT) == .allow)
        }
        #expect(
            Set(roles).isSuperset(of: ["vmm", "api", "vcpu", SeccompBundle.launchRole, SeccompBundle.jailerRole]),
            "\(roles)")
        // The event loop kicks its own vCPU threads (SIGUSR1); the API thread does not.
        let roleNamed = { (name: String) in try Self.shippedRoles().first { $0.role == name }! }
        let vmm = OwnProcessID.resolve(try PolicyCompiler.compile(try roleNamed("vmm")), pid: UInt32(own))
        #expect(try tgkill(vmm, own, SIGUSR1) == .allow)
        #expect(try tgkill(vmm, other, SIGUSR1) == .trap)
        let api = OwnProcessID.resolve(try PolicyCompiler.compile(try roleNamed("api")), pid: UInt32(own))
        #expect(try tgkill(api, own, SIGUSR1) == .trap)
    }

    /// The roles kiln's threads run once the machine exists cannot create a
    /// second VM: none allows KVM_CREATE_VM (and kiln has closed /dev/kvm by
    /// then; BuiltinFilterTests checks that on a running kiln).
    @Test func noThreadRoleCreatesAVM() throws {
        let request = UInt64(PolicyConstants.value(named: "KVM_CREATE_VM")!)
        for policy in try Self.shippedRoles() where ["vmm", "api", "vcpu"].contains(policy.role) {
            let verdict = try BPFInterpreter(try PolicyCompiler.compile(policy))
                .evaluate(
                    SeccompInput(architecture: PolicyCompiler.architecture, syscallNumber: 16, arguments: [3, request]))
            #expect(verdict == policy.defaultAction, "\(policy.role) allows KVM_CREATE_VM: \(verdict)")
        }
    }

    /// bind only takes a whole sockaddr_un (110 bytes), as kiln binds its API
    /// socket: an abstract name then spans all of sun_path, so the short
    /// abstract names of host services cannot be squatted. No thread role binds.
    @Test func bindTakesOnlyAWholeSocketAddress() throws {
        for policy in try Self.shippedRoles() {
            let interpreter = try BPFInterpreter(try PolicyCompiler.compile(policy))
            func bind(_ length: UInt64) -> SeccompAction {
                interpreter.evaluate(
                    SeccompInput(
                        architecture: PolicyCompiler.architecture, syscallNumber: 49, arguments: [3, 0x1000, length]))
            }
            let binds = [SeccompBundle.launchRole, SeccompBundle.jailerRole].contains(policy.role)
            #expect(bind(110) == (binds ? .allow : policy.defaultAction), "\(policy.role)")
            for length: UInt64 in [2, 3, 20, 109, 111] {
                #expect(bind(length) == policy.defaultAction, "\(policy.role) binds \(length) bytes")
            }
        }
    }

    @Test func neighbouringIoctlAndAddedFlagGetTheDefault() throws {
        let roles = try Self.shippedRoles()
        let vcpu = roles.first { $0.role == "vcpu" }!
        let interpreter = try BPFInterpreter(try PolicyCompiler.compile(vcpu))
        func ioctl(_ request: UInt64) -> SeccompAction {
            interpreter.evaluate(
                SeccompInput(architecture: PolicyCompiler.architecture, syscallNumber: 16, arguments: [5, request]))
        }
        #expect(ioctl(0xAE80) == .allow) // KVM_RUN
        #expect(ioctl(0xFFFF_FFFF_0000_AE80) == .allow) // upper half ignored, as the kernel does
        #expect(ioctl(0xAE81) == .trap) // KVM_GET_REGS without its size: a different request
        #expect(ioctl(0xAE7F) == .trap)
        #expect(ioctl(UInt64(PolicyConstants.value(named: "KVM_SET_USER_MEMORY_REGION")!)) == .trap)
        func mmap(_ prot: UInt64, _ flags: UInt64) -> SeccompAction {
            interpreter.evaluate(
                SeccompInput(
                    architecture: PolicyCompiler.architecture, syscallNumber: 9,
                    arguments: [0, 4096, prot, flags, UInt64.max, 0]))
        }
        #expect(mmap(0x3, 0x22) == .allow) // PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
        #expect(mmap(0x7, 0x22) == .trap) // + PROT_EXEC
        #expect(mmap(0x3, 0x32) == .trap) // + MAP_FIXED
        #expect(mmap(0x3, 0x1_0000_0022) == .trap) // mmap's flags are 64 bits wide in the kernel
    }

    @Test func otherArchitecturesAndX32AreKilled() throws {
        for policy in try Self.shippedRoles() {
            let interpreter = try BPFInterpreter(try PolicyCompiler.compile(policy))
            let read = SyscallTable.number(of: "read")!
            // AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64, and no architecture at all.
            for architecture: UInt32 in [0x4000_0003, 0xC000_00B7, 0] {
                #expect(
                    interpreter.evaluate(SeccompInput(architecture: architecture, syscallNumber: read)) == .killProcess)
            }
            let x32 = SeccompInput(
                architecture: PolicyCompiler.architecture, syscallNumber: read | PolicyCompiler.x32SyscallBit)
            #expect(interpreter.evaluate(x32) == .killProcess, "\(policy.role)")
        }
    }

    /// Random inputs for `policy`: a named call half the time, any number up
    /// to 460 otherwise (never exit, exit_group, rt_sigreturn or seccomp,
    /// which the kernel replay needs for itself, nor 335 and 336, which the
    /// development machines' kernel serves before seccomp sees them:
    /// docs/platform.md, "Seccomp"); each argument one of the policy's
    /// constants, that constant with random upper 32 bits (which the kernel
    /// ignores for a 32-bit argument only), or 64 random bits.
    static func randomInputs(for policy: Policy, count: Int, using generator: inout SplitMix64) -> [SeccompInput] {
        let numbers = policy.rules.map(\.number)
        let constants = policy.rules.flatMap { $0.alternatives.flatMap { $0.map(\.value) } }
        let reserved = Set(KernelVerdict.passedByCatchAll.compactMap { SyscallTable.number(of: $0) } + [335, 336])
        return (0..<count).map { _ in
            var number: Int32
            repeat {
                number =
                    Bool.random(using: &generator)
                    ? numbers.randomElement(using: &generator)! : Int32.random(in: 0...460, using: &generator)
            } while reserved.contains(number)
            let arguments = (0..<6).map { _ -> UInt64 in
                let constant = constants.randomElement(using: &generator) ?? 0
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: return constant
                case 1:
                    return constant & 0xFFFF_FFFF | UInt64.random(in: 0...UInt64(UInt32.max), using: &generator) << 32
                default: return UInt64.random(in: 0...UInt64.max, using: &generator)
                }
            }
            return SeccompInput(architecture: PolicyCompiler.architecture, syscallNumber: number, arguments: arguments)
        }
    }

    /// Random inputs: the compiled BPF and the policy's own meaning agree.
    /// (`KernelVerdictTests` replays them under the kernel's own filter.)
    @Test func randomInputsAgreeWithThePolicy() throws {
        var generator = SplitMix64(seed: 0x5EED)
        for policy in try Self.shippedRoles() {
            let interpreter = try BPFInterpreter(try PolicyCompiler.compile(policy))
            for input in Self.randomInputs(for: policy, count: 3000, using: &generator) {
                #expect(
                    interpreter.evaluate(input) == Support.expectedAction(policy, input),
                    "\(policy.role) \(input.syscallNumber) \(input.arguments)")
            }
        }
    }

    @Test func outputIsDeterministicAndDecodes() throws {
        let policies = try PolicyLoader.load(directory: Support.shippedPoliciesDirectory)
        let first = try PolicyBundleBuilder.bundle(for: policies).encoded()
        let second = try PolicyBundleBuilder.bundle(
            for: try PolicyLoader.load(directory: Support.shippedPoliciesDirectory)
        ).encoded()
        #expect(first == second)
        let decoded = try SeccompBundle(decoding: first)
        #expect(decoded.roles == ["api", "jailer", "launch", "vcpu", "vmm"])
        for role in decoded.roles { _ = try BPFInterpreter(decoded.program(for: role)!) }
    }

    @Test func theJailerRoleIsTheUnionOfTheThreadRoles() throws {
        let roles = try Self.shippedRoles()
        let jailer = roles.first { $0.role == "jailer" }!
        let union = try BPFInterpreter(try PolicyCompiler.compile(jailer))
        var generator = SplitMix64(seed: 42)
        for thread in roles where thread.role != "jailer" {
            for rule in thread.rules where rule.action.letsCallThrough {
                for (arguments, _) in rule.isUnconditional
                    ? [([UInt64](repeating: 7, count: 6), true)] : Self.probes(for: rule)
                {
                    let input = SeccompInput(
                        architecture: PolicyCompiler.architecture, syscallNumber: rule.number, arguments: arguments)
                    if Support.expectedAction(thread, input).letsCallThrough {
                        #expect(union.evaluate(input).letsCallThrough, "\(thread.role) \(rule.syscall) \(arguments)")
                    }
                }
            }
            _ = generator.next()
        }
        // Unconditional in one role, conditional in another: unconditional in the union.
        let roleSet = try Support.load([
            "a.policy": "@default trap\nread # a\n",
            "b.policy": "@default trap\nread: arg0 == 0 # b\nwrite: arg0 == 1 # b\n",
            "c.policy": "@default trap\nwrite: arg0 == 2 # c\n",
            "jailer.policy": "@default kill-process\nexecve # exec\n",
        ])
        let merged = JailerUnion.union(
            of: roleSet.filter { $0.role != "jailer" }, with: roleSet.first { $0.role == "jailer" }!)
        #expect(merged.rule(for: "read")!.isUnconditional)
        #expect(merged.rule(for: "write")!.alternatives.map { $0[0].value } == [1, 2])
        #expect(merged.rule(for: "execve")!.isUnconditional)
        #expect(merged.defaultAction == .killProcess)
    }

    @Test func programsOverTheKernelLimitAreRefused() throws {
        // Distinct value sets: libseccomp shares identical comparison chains.
        let names = ["read", "write", "close", "fstat", "lseek", "dup", "fsync", "fdatasync", "ftruncate", "pread64"]
        let rules = names.enumerated().map { index, name in
            let values = (1...500).map { String(index * 1000 + $0) }.joined(separator: ", ")
            return "\(name): arg0 in {\(values)} # many"
        }.joined(separator: "\n")
        let policy = try Support.role("@default trap\n\(rules)\n", name: "big.policy")
        do {
            _ = try PolicyCompiler.compile(policy)
            Issue.record("a filter over 4096 instructions compiled")
        } catch {
            let message = "\(error)"
            #expect(message.hasPrefix("role big: the compiled filter has "))
            #expect(
                message.hasSuffix(" BPF instructions, over the kernel's limit of 4096; remove rules or alternatives"))
        }
    }

    @Test func aBadPolicyLeavesNoOutput() throws {
        let files = ["vmm.policy": "@default trap\nread # ok\n", "api.policy": "@default trap\nreadd # typo\n"]
        try Support.withPolicyFolder(files) { directory in
            let output = directory + "/out.kbundle"
            #expect(throws: PolicyError.self) { try PolicyBundleBuilder.compile(directory: directory, output: output) }
            #expect(!FileSystem.exists(output))
            let names = try FileSystem.listDirectory(directory)
            #expect(names == ["api.policy", "vmm.policy"])
        }
    }
}
