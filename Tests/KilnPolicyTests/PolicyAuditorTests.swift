import KilnJSON
import KilnSeccomp
import Testing

@testable import KilnPolicy

@Suite struct PolicyAuditorTests {
    typealias Support = PolicyTestSupport

    /// The minimal other roles a bundle needs, around a role under test.
    static func audit(vmm: String, jailer: String = "@default kill-process\nexecve # exec the VMM\n") throws
        -> AuditReport
    {
        try PolicyAuditor.audit(
            policies: try Support.load([
                "vmm.policy": vmm,
                "api.policy": "@default trap\nread # requests\n",
                "vcpu.policy": "@default trap\nwrite # console\n",
                "jailer.policy": jailer,
            ]), firecracker: nil)
    }

    static func findings(_ report: AuditReport, role: String = "vmm") -> [String] {
        report.roles.first { $0.role == role }!.findings.map {
            "\($0.severity.rawValue) \($0.syscall ?? "-"): \($0.message)"
        }
    }

    @Test func flagsDangerousAndUnconditionedCalls() throws {
        let report = try Self.audit(
            vmm: """
                @default trap
                ptrace          # no good reason
                ioctl           # any request at all
                socket          # any family
                clone           # any flags
                execve          # a thread role must never exec
                read
                """)
        let findings = Self.findings(report)
        #expect(
            findings.contains(
                "critical ptrace: dangerous system call allowed: controls other processes: reads and writes their memory and registers"
            ))
        #expect(
            findings.contains(
                "critical execve: dangerous system call allowed: runs a new program, shedding the VMM's own restrictions on its code"
            ))
        #expect(findings.contains("high ioctl: allowed with no argument conditions"))
        #expect(findings.contains("medium socket: allowed with no argument conditions"))
        #expect(findings.contains("high clone: allowed with no argument conditions"))
        #expect(findings.contains("low read: rule has no justification comment"))
        // Sorted most severe first.
        #expect(report.roles.first { $0.role == "vmm" }!.findings.first!.severity == .critical)
        // The jailer's execve is by design: info, explained.
        #expect(
            Self.findings(report, role: "jailer").contains(
                "info execve: allowed by design: the jailer execs the VMM under this filter; each thread's own filter, stacked on top, must deny it"
            ))
    }

    @Test func judgesTheJailersOwnRulesNotTheUnion() throws {
        // The jailer's own brk has no justification: the vmm role's does not cover it.
        let report = try Self.audit(
            vmm: "@default trap\nbrk # malloc\n", jailer: "@default kill-process\nexecve # exec\nbrk\n")
        #expect(Self.findings(report, role: "jailer").contains("low brk: rule has no justification comment"))
        #expect(!Self.findings(report, role: "vmm").contains { $0.hasPrefix("low brk") })
    }

    @Test func flagsAPermissiveDefault() throws {
        let report = try Self.audit(vmm: "@default log\nread # r\n")
        #expect(
            Self.findings(report).first == "critical -: the default action log lets every unlisted system call through")
    }

    @Test func provesExecutableMappingsWithTheInterpreter() throws {
        // Looks like a guard, but PROT_READ|PROT_EXEC is not PROT_EXEC.
        let leaky = try Self.audit(
            vmm: "@default trap\nmmap: arg2 != PROT_EXEC # malloc\nmprotect: arg2 == PROT_READ # read-only\n")
        let findings = Self.findings(leaky)
        #expect(
            findings.contains(
                "critical mmap: can map executable memory: the compiled filter allows mmap(arg0=0x0, arg1=0x0, arg2=0x5, arg3=0x0, arg4=0x0, arg5=0x0)"
            ))
        #expect(!findings.contains { $0.hasPrefix("critical mprotect") })
        let tight = try Self.audit(vmm: "@default trap\nmmap: arg2 & PROT_EXEC == 0 # malloc\n")
        #expect(!Self.findings(tight).contains { $0.contains("executable") })
        let open = try Self.audit(vmm: "@default trap\nmprotect # anything\n")
        #expect(Self.findings(open).contains { $0.hasPrefix("critical mprotect: can map executable memory") })
    }

    @Test func flagsShadowedDuplicatedAndIneffectiveRules() throws {
        let report = try Self.audit(
            vmm: """
                @default trap
                futex: arg1 in {FUTEX_WAKE, FUTEX_WAKE} # twice
                fcntl: arg1 == F_GETFD || arg1 == F_GETFD && arg2 == 0 # the second is covered by the first
                getpid -> trap # same as the default
                """)
        let findings = Self.findings(report)
        #expect(findings.contains("low futex: alternative 'arg1 == FUTEX_WAKE' is duplicated"))
        #expect(
            findings.contains("low fcntl: alternative 'arg1 == F_GETFD && arg2 == 0' is shadowed by 'arg1 == F_GETFD'"))
        #expect(findings.contains("low getpid: rule has the default action (trap) and changes nothing"))
    }

    @Test func thresholdsForCheck() throws {
        let report = try Self.audit(vmm: "@default trap\nioctl # anything\nread\n")
        #expect(report.findings(atLeast: .critical).isEmpty)
        // The jailer's union inherits the unconditioned ioctl.
        #expect(
            report.findings(atLeast: .high).map { "\($0.role) \($0.finding.syscall!)" } == [
                "jailer ioctl", "vmm ioctl",
            ])
        #expect(report.findings(atLeast: .low).count == 3) // + read without a justification
        #expect(report.findings(atLeast: .info).count == 4) // + the jailer's execve
    }

    @Test func shippedPoliciesHaveNoFindingsAboveInfo() throws {
        let report = try PolicyAuditor.audit(
            policies: try PolicyLoader.load(directory: Support.shippedPoliciesDirectory), firecracker: nil)
        #expect(report.findings(atLeast: .low).map { "\($0.role): \($0.finding)" } == [])
        #expect(report.roles.map(\.role) == ["api", "jailer", "launch", "vcpu", "vmm"])
    }

    @Test func jsonReportHasTheDocumentedShape() throws {
        let report = try Self.audit(vmm: "@default trap\nioctl # anything\nread # r\n")
        let json = try JSONParser.parse(report.json())
        guard case let .object(roles)? = json["roles"] else { Issue.record("no roles object"); return }
        #expect(roles.map(\.key) == ["api", "jailer", "vcpu", "vmm"])
        let vmm = json["roles"]!["vmm"]!
        #expect(vmm["allowed_syscalls"] == .array([.string("ioctl"), .string("read")]))
        #expect(vmm["rule_count"] == .integer(2))
        guard case let .array(findings)? = vmm["findings"] else { Issue.record("no findings"); return }
        #expect(findings.count == 1)
        #expect(findings[0]["severity"] == .string("high"))
        #expect(findings[0]["syscall"] == .string("ioctl"))
        #expect(findings[0]["message"] == .string("allowed with no argument conditions"))
    }

    @Test func comparesWithFirecrackerJSON() throws {
        let firecracker = try FirecrackerFilter.parse(
            Array(
                """
                {"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [
                    {"syscall": "read"},
                    {"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "eq", "val": 44672, "comment": "KVM_RUN"}]},
                    {"syscall": "mmap", "args": [{"index": 2, "type": "dword", "op": {"masked_eq": 4}, "val": 0}]},
                    {"syscall": "socket", "comment": "vsock"}
                ]}}
                """.utf8))
        let policies = try Support.load([
            "vmm.policy":
                "@default trap\nread: arg0 == 3 # r\nioctl # any\nmmap: arg2 & PROT_EXEC == 0 # m\nwrite # w\n",
            "api.policy": "@default trap\nread # r\n", "vcpu.policy": "@default trap\nread # r\n",
            "jailer.policy": "@default kill-process\nexecve # e\n",
        ])
        let report = try PolicyAuditor.audit(policies: policies, firecracker: firecracker)
        let c = report.roles.first { $0.role == "vmm" }!.comparison!
        #expect(c.ours == ["ioctl", "mmap", "read", "write"])
        #expect(c.theirs == ["ioctl", "mmap", "read", "socket"])
        #expect(c.onlyOurs == ["write"])
        #expect(c.onlyTheirs == ["socket"])
        #expect(c.conditionedOnlyByUs == ["read"])
        #expect(c.conditionedOnlyByThem == ["ioctl"])
        #expect(report.roles.first { $0.role == "api" }!.comparison == nil)
        #expect(report.text().contains("only Firecracker allows:                 socket"))
        #expect(
            c.sideBySide.map { "\($0.syscall) \($0.kiln.rawValue) | \($0.firecracker.rawValue)" } == [
                "ioctl allowed | allowed if args", "mmap allowed if args | allowed if args",
                "read allowed if args | allowed",
                "socket - | allowed", "write allowed | -",
            ])
    }

    @Test func firecrackerParserIsStrict() {
        #expect(throws: JSONDecodingError.self) {
            try FirecrackerFilter.parse(
                Array(#"{"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [], "extra": 1}}"#.utf8))
        }
        #expect(throws: JSONDecodingError.self) {
            try FirecrackerFilter.parse(
                Array(
                    #"{"vmm": {"default_action": "trap", "filter_action": "allow", "filter": [{"syscall": "read", "args": [{"index": 9, "type": "dword", "op": "eq", "val": 1}]}]}}"#
                        .utf8))
        }
    }

    @Test func readsTheShippedFirecrackerReference() throws {
        let path = Support.shippedPoliciesDirectory + "/reference/firecracker-seccomp-x86_64.json"
        let filter = try FirecrackerFilter.load(path)
        #expect(filter.roles.map(\.name).sorted() == ["api", "vcpu", "vmm"])
        #expect(filter.role("vmm")!.syscalls.count == 50)
        #expect(filter.role("api")!.syscalls.count == 31)
        #expect(filter.role("vcpu")!.syscalls.count == 27)
    }
}
