import KilnJSON
import KilnSeccomp
import Testing

@testable import KilnPolicy

/// `kiln-policy trace`'s pure parts: the recording variants of the roles,
/// the recorder and the report. (The tracer itself runs in KilnLaneTests.)
struct PolicyTraceTests {
    static let shipped = try! PolicyLoader.load(directory: PolicyTestSupport.shippedPoliciesDirectory)
    static let bundle = try! RecordingBundle(policies: shipped)

    /// Calls that probe each rule: its first alternative made true (other
    /// arguments zero), the same with the condition's argument off by one,
    /// and a few calls no role names.
    static func probes(_ policy: Policy) -> [SeccompInput] {
        var inputs: [SeccompInput] = []
        for rule in policy.rules {
            var arguments = [UInt64](repeating: 0, count: 6)
            for comparison in rule.alternatives.first ?? [] where comparison.op == .equal {
                arguments[comparison.argument] = comparison.value
            }
            inputs.append(
                SeccompInput(
                    architecture: PolicyCompiler.architecture, syscallNumber: rule.number, arguments: arguments))
            if let first = rule.alternatives.first?.first {
                var off = arguments
                off[first.argument] &+= 1
                inputs.append(
                    SeccompInput(architecture: PolicyCompiler.architecture, syscallNumber: rule.number, arguments: off))
            }
        }
        for name in ["execve", "ptrace", "openat2", "kexec_load"] {
            inputs.append(
                SeccompInput(architecture: PolicyCompiler.architecture, syscallNumber: SyscallTable.number(of: name)!))
        }
        return inputs
    }

    @Test func everyRecordingVariantTracesWithItsRoleAndWhetherARuleMatched() throws {
        for policy in Self.bundle.policies {
            let program = try #require(Self.bundle.recordingPrograms[policy.role])
            for input in Self.probes(policy) {
                let expected = TraceRecorder.verdict(
                    of: policy, number: input.syscallNumber, arguments: input.arguments)
                let action = try BPFInterpreter.evaluate(program, input)
                guard case let .trace(data) = action else {
                    Issue.record("role \(policy.role), call \(input.syscallNumber): \(action), not a trace")
                    continue
                }
                let decoded = Self.bundle.decode(data: data)
                #expect(decoded?.role == policy.role, "call \(input.syscallNumber) \(input.arguments)")
                #expect(
                    decoded?.byRule == expected.byRule,
                    "role \(policy.role), call \(input.syscallNumber) \(input.arguments)")
            }
            // Another architecture is still killed, as by the real program.
            let foreign = SeccompInput(architecture: 0x4000_0003, syscallNumber: 1)
            #expect(try BPFInterpreter.evaluate(program, foreign) == .killProcess)
        }
    }

    /// The base filter stops every call with data 0 (no role): the calls
    /// that install a filter, and a program's start-up before its first one.
    @Test func theBaseFilterTracesEveryCallAsNoRole() throws {
        for name in ["seccomp", "prctl", "execve", "openat", "write", "arch_prctl"] {
            let input = SeccompInput(
                architecture: PolicyCompiler.architecture, syscallNumber: SyscallTable.number(of: name)!)
            let action = try BPFInterpreter.evaluate(Self.bundle.base, input)
            #expect(action == .trace(0), "\(name): \(action)")
            if case let .trace(data) = action { #expect(Self.bundle.decode(data: data)?.role == nil) }
        }
    }

    /// Start-up calls are checked against the pre-exec role, jailed and
    /// unjailed apart; a call it lacks is refused and counted.
    @Test func startUpIsRecordedAgainstThePreExecRoleAndItsRefusalsCount() throws {
        var recorder = TraceRecorder(policies: Self.bundle.policies)
        let archPrctl = SyscallTable.number(of: "arch_prctl")!, ptrace = SyscallTable.number(of: "ptrace")!
        let setFS: UInt64 = 0x1002
        recorder.recordStartUp([(archPrctl, [setFS, 0x5000, 0, 0, 0, 0])], jailed: false)
        recorder.recordStartUp(
            [(archPrctl, [setFS, 0x6000, 0, 0, 0, 0]), (ptrace, [16, 1, 0, 0, 0, 0])], jailed: true)
        #expect(
            recorder.startUp["unjailed"]?.threads == 1 && recorder.startUp["unjailed"]?.calls[archPrctl]?.matched == 1)
        #expect(recorder.startUp["jailed"]?.calls[ptrace]?.denied == 1)
        // Nothing is recorded under the roles themselves.
        #expect(recorder.roles.isEmpty)

        let report = TraceReport(recorder: recorder, status: 0)
        #expect(report.deniedCount == 1)
        let jailed = try #require(report.startUp.first { $0.role == "jailed" })
        #expect(jailed.denied.map(\.syscall) == ["ptrace"] && jailed.unusedRules.isEmpty)
        #expect(report.text().contains("== start-up, unjailed"))
        #expect(report.text().contains("arch_prctl x1: arg0 in {0x1002}; arg1 in {0x5000}"))
        let json = try JSONParser.parse(report.json())
        #expect(json["start_up"]?["unjailed"]?["used"]?["arch_prctl"] == .integer(1))
        guard case let .array(denied)? = json["start_up"]?["jailed"]?["denied"] else {
            Issue.record("no denied list for the jailed start-up")
            return
        }
        #expect(denied.map { $0["syscall"] } == [.string("ptrace")])
    }

    @Test func aRealProgramIsRecognisedByItsRoleAndAChangedOneIsNot() throws {
        for (role, program) in Self.bundle.realPrograms {
            #expect(Self.bundle.role(installing: program) == role)
            var changed = program
            changed[changed.count - 1].k ^= 1
            #expect(Self.bundle.role(installing: changed) == nil, "a changed \(role) program")
        }
    }

    @Test func programsFromOtherInstalledPoliciesAreRecognisedByRoleName() throws {
        let edited = try PolicyLoader.load(directory: PolicyTestSupport.shippedPoliciesDirectory).map {
            policy -> Policy in
            var policy = policy
            if policy.role == "vcpu" { policy.rules.removeAll { $0.syscall == "write" } }
            return policy
        }
        let traced = try RecordingBundle(policies: edited, installed: Self.shipped)
        let shippedVCPU = try #require(Self.bundle.realPrograms["vcpu"])
        #expect(traced.role(installing: shippedVCPU) == "vcpu")
        #expect(traced.recordingPrograms["vcpu"] != Self.bundle.recordingPrograms["vcpu"])
    }

    /// A program a process resolved at install time (a placeholder in an
    /// equality test replaced by its own pid) is still its role's, and the
    /// recording variant and the recorder resolve it the same way.
    @Test func aProgramWithItsOwnPIDWrittenInIsRecognisedAndResolved() throws {
        let placeholder: UInt32 = 0x7777_0001, pid: UInt32 = 4242
        let tgkill = SyscallTable.number(of: "tgkill")!
        let policies = Self.shipped.map { policy -> Policy in
            guard policy.role == "vcpu", let index = policy.rules.firstIndex(where: { $0.syscall == "tgkill" }) else {
                return policy
            }
            var policy = policy
            func equal(_ argument: Int, _ value: UInt64) -> ArgumentComparison {
                ArgumentComparison(
                    argument: argument, width: 32, mask: nil, op: .equal, value: value,
                    valueText: String(value), maskText: nil)
            }
            policy.rules[index].alternatives = [[equal(0, UInt64(placeholder)), equal(2, 6)]]
            return policy
        }
        let bundle = try RecordingBundle(policies: policies)
        let real = try #require(bundle.realPrograms["vcpu"])
        let installed = real.map { instruction -> BPFInstruction in
            var instruction = instruction
            if instruction.k == placeholder { instruction.k = pid }
            return instruction
        }
        #expect(installed != real)
        #expect(bundle.role(installing: installed) == nil)
        let match = try #require(bundle.role(installing: installed, processID: pid))
        #expect(match.role == "vcpu" && match.placeholder == placeholder)
        #expect(bundle.role(installing: installed, processID: pid + 1) == nil)

        let recording = try #require(bundle.recordingProgram(for: "vcpu", placeholder: placeholder, processID: pid))
        let policy = try #require(bundle.policies.first { $0.role == "vcpu" })
        for (target, byRule) in [(UInt64(pid), true), (UInt64(placeholder), false), (1, false)] {
            let input = SeccompInput(
                architecture: PolicyCompiler.architecture, syscallNumber: tgkill, arguments: [target, 7, 6])
            let code = UInt16(bundle.policies.firstIndex { $0.role == "vcpu" }! + 1)
            #expect(
                try BPFInterpreter.evaluate(recording, input) == .trace(code << 8 | (byRule ? 1 : 0)),
                "tgkill(\(target))")
            let verdict = TraceRecorder.verdict(
                of: policy, number: tgkill, arguments: input.arguments,
                resolved: (UInt64(placeholder), UInt64(pid)))
            #expect(verdict.byRule == byRule, "tgkill(\(target))")
        }
    }

    static let roles = try! PolicyTestSupport.load([
        "outer.policy":
            "@default kill-process\nwrite  # out\nclone3 -> errno(ENOSYS)  # fall back\nioctl: arg1 in {1, 2}  # two requests\n",
        "inner.policy": "@default trap\nwrite: arg0 == 1  # stdout\nread  # in\n",
    ])

    @Test func theRecorderCountsEachRoleOfTheStackAndTheKernelsPrecedence() {
        var recorder = TraceRecorder(policies: Self.roles)
        let write = SyscallTable.number(of: "write")!, read = SyscallTable.number(of: "read")!
        let clone3 = SyscallTable.number(of: "clone3")!, ioctl = SyscallTable.number(of: "ioctl")!
        let stack = ["outer", "inner"]
        #expect(
            recorder.record(number: write, arguments: [1, 0, 5, 0, 0, 0], stack: stack, kernelSaysRule: true) == .allow)
        #expect(
            recorder.record(number: write, arguments: [2, 0, 5, 0, 0, 0], stack: stack, kernelSaysRule: false) == .trap)
        // Allowed by the inner role, which the outer one kills: the outer wins.
        #expect(
            recorder.record(number: read, arguments: [0, 0, 0, 0, 0, 0], stack: stack, kernelSaysRule: true)
                == .killProcess)
        #expect(
            recorder.record(number: clone3, arguments: [0, 0, 0, 0, 0, 0], stack: ["outer"], kernelSaysRule: true)
                == .errno(38))
        recorder.record(number: ioctl, arguments: [3, 2, 0, 0, 0, 0], stack: ["outer"], kernelSaysRule: true)
        // A recording filter that disagrees with the policy is reported.
        recorder.record(number: read, arguments: [0, 0, 0, 0, 0, 0], stack: stack, kernelSaysRule: false)

        let inner = recorder.roles["inner"]!, outer = recorder.roles["outer"]!
        #expect(inner.calls[write]?.matched == 1 && inner.calls[write]?.denied == 1)
        #expect(inner.calls[write]?.values.first == [1, 2])
        #expect(outer.calls[write]?.matched == 2)
        #expect(outer.calls[read]?.denied == 2 && outer.calls[read]?.deniedSamples.count == 2)
        #expect(outer.calls[ioctl]?.alternativeHits == [0, 1])
        #expect(recorder.disagreements.count == 1)
    }

    @Test func theReportListsUnusedRulesWithTheirReasonsRefusedCallsAndArguments() throws {
        var recorder = TraceRecorder(policies: Self.roles)
        recorder.entered(role: "outer")
        recorder.entered(role: "inner")
        let write = SyscallTable.number(of: "write")!, ioctl = SyscallTable.number(of: "ioctl")!
        recorder.record(
            number: write, arguments: [7, 0, 5, 0, 0, 0], stack: ["outer", "inner"], kernelSaysRule: false)
        recorder.record(number: ioctl, arguments: [3, 2, 0, 0, 0, 0], stack: ["outer"], kernelSaysRule: true)
        let report = TraceReport(recorder: recorder, status: 0)
        #expect(report.deniedCount == 1)
        let outer = try #require(report.roles.first { $0.role == "outer" })
        #expect(outer.unusedRules.map(\.syscall) == ["clone3"])
        #expect(outer.unusedRules.first?.justification == "fall back")
        #expect(outer.unusedAlternatives.map(\.alternative) == ["arg1 == 1"])
        #expect(outer.unconditioned.first?.values.first == [7])
        let inner = try #require(report.roles.first { $0.role == "inner" })
        #expect(inner.denied.map(\.syscall) == ["write"] && inner.denied.first?.samples == [[7, 0, 5]])
        #expect(report.text().contains("write x1: (7, 0, 5)"))

        let json = try JSONParser.parse(report.json())
        #expect(json["denied_count"] == .integer(1))
        #expect(
            json["roles"]?["inner"]?["denied"]
                == .array([
                    .object([
                        ("syscall", .string("write")), ("count", .integer(1)),
                        ("samples", .array([.array([.integer(7), .integer(0), .integer(5)])])),
                    ])
                ]))
    }
}
