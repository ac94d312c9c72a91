import KilnJSON
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `kiln-policy trace` on a short lane-1 workload (integration/policy-trace/
/// workload.sh --short: a boot with a read-only and a read-write drive and
/// entropy, console input, power-off): kiln under its shipped roles makes no
/// call a role does not allow, and the trace really recorded the roles.
/// Then the same workload traced against a vcpu role without `write`: the
/// trace must report the console writes it would have refused.
@Suite(.serialized, .enabled(if: PolicyTraceLane.ready, PolicyTraceLane.skipReason))
struct PolicyTraceLaneTests {
    static func trace(extraArguments: [String], folder: String) throws -> (
        run: ChildProcess.Finished, report: JSONValue?
    ) {
        let json = folder + "/trace.json"
        let run = try ChildProcess.run(
            ["/usr/bin/env", "KILN=" + Lanes.kiln, "GUEST=" + Lanes.testGuest, Lanes.policyCompiler, "trace"]
                + extraArguments + [
                    "--json", json, "--", Lanes.packageRoot + "/integration/policy-trace/workload.sh", "--short",
                ],
            seconds: 120)
        let text = ChildProcess.read(json)
        return (run, text.isEmpty ? nil : try JSONParser.parse(text))
    }

    static func used(_ report: JSONValue?, _ role: String, _ syscall: String) -> Bool {
        if case let .number(calls)? = report?["roles"]?[role]?["used"]?[syscall] { return Int(calls) ?? 0 > 0 }
        return false
    }

    @Test func theShortWorkloadMakesNoCallItsRolesRefuse() throws {
        let folder = Lanes.scratchFolder("policy-trace")
        defer { Lanes.removeTree(folder) }
        let (run, report) = try Self.trace(
            extraArguments: ["--policies", Lanes.packageRoot + "/policies"], folder: folder)
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        #expect(run.status == 0, context)
        #expect(report?["status"] == .integer(0), context)
        #expect(report?["denied_count"] == .integer(0), context)
        #expect(report?["disagreements"] == .array([]), context)
        // Recorded, not merely silent: each thread role's typical calls.
        #expect(Self.used(report, "vcpu", "ioctl"), "no KVM_RUN recorded for the vcpu role\n\(context.rawValue)")
        #expect(Self.used(report, "vmm", "pread64"), "no drive read recorded for the vmm role\n\(context.rawValue)")
        #expect(Self.used(report, "vmm", "pwrite64"), "no drive write recorded for the vmm role\n\(context.rawValue)")
        #expect(Self.used(report, "launch", "openat"), "no start-up recorded for the launch role\n\(context.rawValue)")
        // kiln's start-up before its launch filter, unjailed: glibc's TLS
        // set-up and kiln's first line (Landlock) are there.
        for syscall in ["arch_prctl", "landlock_restrict_self"] {
            if case let .number(calls)? = report?["start_up"]?["unjailed"]?["used"]?[syscall] {
                #expect(Int(calls) ?? 0 > 0)
            } else {
                Issue.record("no \(syscall) recorded in kiln's unjailed start-up\n\(context.rawValue)")
            }
        }
    }

    /// A jailed kiln's start-up, exec to its launch filter, runs under the
    /// jailer role alone: the trace records it there (glibc's TLS set-up,
    /// kiln's Landlock) and the jailer role refuses none of it; the launch
    /// role, which lacks that start-up's calls, then refuses nothing either.
    @Test(.enabled(if: getuid() == 0 && Lanes.executable(Lanes.jailer), "the jailer needs root and kiln-jailer built"))
    func aJailedKilnsStartUpIsRecordedUnderTheJailerRole() throws {
        let folder = Lanes.scratchFolder("policy-trace-jailed")
        defer { Lanes.removeTree(folder) }
        let json = folder + "/trace.json", id = "policy-trace-jailed"
        let common = ["--id", id, "--exec-file", Lanes.kiln, "--chroot-base-dir", folder + "/jails"]
        let run = try ChildProcess.run(
            [
                Lanes.policyCompiler, "trace", "--policies", Lanes.packageRoot + "/policies", "--json", json, "--",
                Lanes.jailer,
            ] + common + ["--uid", JailedLane.uid, "--gid", JailedLane.gid, "--", "--version"],
            seconds: 60)
        _ = try ChildProcess.run([Lanes.jailer, "cleanup"] + common, seconds: 30)
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        #expect(run.status == 0 && run.stdout.contains("Kiln v"), context)
        let text = ChildProcess.read(json)
        let report = text.isEmpty ? nil : try JSONParser.parse(text)
        #expect(report?["denied_count"] == .integer(0), context)
        #expect(report?["start_up"]?["jailed"]?["threads"] == .integer(1), context)
        for syscall in ["arch_prctl", "set_tid_address", "landlock_restrict_self"] {
            if case let .number(calls)? = report?["start_up"]?["jailed"]?["used"]?[syscall] {
                #expect(Int(calls) ?? 0 > 0)
            } else {
                Issue.record("no \(syscall) recorded in the jailed kiln's start-up\n\(context.rawValue)")
            }
        }
        #expect(report?["roles"]?["launch"]?["threads"] == .integer(1), context)
    }

    @Test func aCallThePolicyLacksIsReportedAsRefused() throws {
        let folder = Lanes.scratchFolder("policy-trace-missing")
        defer { Lanes.removeTree(folder) }
        let policies = folder + "/policies"
        mkdir(policies, 0o755)
        for name in Lanes.list(Lanes.packageRoot + "/policies") where name.hasSuffix(".policy") {
            var text = ChildProcess.read(Lanes.packageRoot + "/policies/" + name)
            if name == "vcpu.policy" {
                // Drop the rule `write` (console bytes, irqfds) from the vcpu role.
                text = text.split(separator: "\n", omittingEmptySubsequences: false)
                    .filter { $0 != "write" }.joined(separator: "\n")
            }
            ChildProcess.write(text, to: policies + "/" + name)
        }
        let (run, report) = try Self.trace(
            extraArguments: ["--policies", policies, "--installed", Lanes.packageRoot + "/policies"],
            folder: folder)
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        #expect(run.status == 1, context)
        #expect(run.stderr.contains("call(s) the roles do not allow"), context)
        guard case let .array(denied)? = report?["roles"]?["vcpu"]?["denied"] else {
            Issue.record("no denied list for the vcpu role\n\(context.rawValue)")
            return
        }
        #expect(denied.contains { $0["syscall"] == .string("write") }, context)
        // The workload itself went on: the refused calls were let through.
        #expect(report?["status"] == .integer(0), context)
    }
}

enum PolicyTraceLane {
    static var ready: Bool {
        access("/dev/kvm", R_OK | W_OK) == 0 && Lanes.readable(Lanes.testGuest) && Lanes.executable(Lanes.kiln)
            && Lanes.executable(Lanes.policyCompiler)
    }

    static let skipReason: Comment = {
        var missing: [String] = []
        if access("/dev/kvm", R_OK | W_OK) != 0 { missing.append("/dev/kvm is absent or not read-write") }
        if !Lanes.readable(Lanes.testGuest) { missing.append("the test guest is not built (make guest)") }
        if !Lanes.executable(Lanes.kiln) || !Lanes.executable(Lanes.policyCompiler) {
            missing.append("kiln and kiln-policy are not built")
        }
        return Comment(rawValue: "policy trace lane skipped: " + missing.joined(separator: "; "))
    }()
}
