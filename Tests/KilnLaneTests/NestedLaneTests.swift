#if canImport(Glibc)
import Glibc
#endif
import KilnTestSupport
import Testing

/// Lane 2: Debian's stock cloud kernel booted by `kiln` on a real KVM, the
/// kvm_amd of a Debian level-1 guest under QEMU TCG (integration/nested).
/// `make test` builds the assets first (`make nested-assets`). kiln runs with
/// the shipped policies compiled, so its per-thread seccomp filters are
/// exercised by a real Linux guest too. Each boot takes 10 to 60 s here.
enum NestedLane {
    static let qemu = "/usr/bin/qemu-system-x86_64"
    static var ready: Bool {
        Lanes.executable(qemu) && Lanes.readable(Lanes.nestedReady) && Lanes.executable(Lanes.kiln)
            && Lanes.executable(Lanes.policyCompiler)
    }
    static let skipReason: Comment = {
        var missing: [String] = []
        if !Lanes.executable(qemu) { missing.append("QEMU (\(qemu)) is not installed, so there is no TCG level 1: make nested-deps") }
        if !Lanes.readable(Lanes.nestedReady) { missing.append("the nested assets are not built: make nested-assets") }
        if !Lanes.executable(Lanes.kiln) || !Lanes.executable(Lanes.policyCompiler) { missing.append("kiln and kiln-policy are not built") }
        return Comment(rawValue: "nested lane skipped: " + missing.joined(separator: "; "))
    }()

    struct Boot: CustomTestStringConvertible, Sendable {
        enum Kernel: String, Sendable { case bzImage = "bzimage", elf }
        /// How level 2's init ends the guest, and what kiln must log for it.
        enum End: String, Sendable {
            case i8042Reset = "reboot=k (i8042)"
            case acpiPowerOff = "poweroff (ACPI S5)"
            case tripleFault = "reboot=t (triple fault)"

            var kernelArguments: [String] {
                switch self {
                case .i8042Reset: return []
                case .acpiPowerOff: return ["--l2-append", "kiln.end=poweroff"]
                case .tripleFault: return ["--l2-append", "reboot=t"]
                }
            }

            var logged: String {
                switch self {
                case .i8042Reset: return "guest reset (i8042 reset)"
                case .acpiPowerOff: return "guest powered off (ACPI S5)"
                case .tripleFault: return "guest reset (triple fault on vCPU"
                }
            }
        }
        let vcpus: Int
        let kernel: Kernel
        let end: End
        var testDescription: String { "\(vcpus) vCPU(s), \(kernel.rawValue), \(end.rawValue)" }
    }
}

@Suite(.serialized, .enabled(if: NestedLane.ready, NestedLane.skipReason))
struct NestedLaneTests {
    @Test(arguments: [
        NestedLane.Boot(vcpus: 1, kernel: .bzImage, end: .i8042Reset),
        NestedLane.Boot(vcpus: 2, kernel: .bzImage, end: .acpiPowerOff),
        NestedLane.Boot(vcpus: 2, kernel: .elf, end: .i8042Reset),
        NestedLane.Boot(vcpus: 1, kernel: .elf, end: .tripleFault),
    ])
    func kilnBootsDebianLinuxToUserspace(_ boot: NestedLane.Boot) throws {
        // run.sh gives a VMM named kiln its config file, and the bundle beside it.
        let folder = Lanes.scratchFolder("nested")
        defer { Lanes.removeTree(folder) }
        _ = try Lanes.compilePolicies(into: folder)
        symlink(Lanes.kiln, folder + "/kiln")

        var arguments = [Lanes.nestedRun, "--vmm", folder + "/kiln", "--vcpus", String(boot.vcpus),
                         "--l2-kernel", boot.kernel.rawValue]
        arguments += boot.end.kernelArguments
        let run = try ChildProcess.run(arguments, seconds: 300)
        // Level 2's console lines keep their "\r" through level 1's; split on
        // bytes, since Swift reads "\r\n" as one Character.
        let lines = run.stdout.utf8.split(separator: UInt8(ascii: "\n"))
            .map { String(decoding: $0.filter { $0 != UInt8(ascii: "\r") }, as: UTF8.self) }
        let context = Comment(rawValue: "run.sh status \(run.status)\n\(run.stdout.suffix(4000))\n\(run.stderr.suffix(2000))")

        let marker = lines.first { $0.hasPrefix("KILN-L2-USERSPACE-MARKER") }
        #expect(marker?.hasSuffix(" cpus=\(boot.vcpus)") == true, context)
        #expect(lines.contains("KILN-L1-VMM-STATUS vmm=kiln run=1 status=0"), context)
        // kiln's JSON log line for the outcome, from the event loop.
        #expect(lines.contains { $0.contains("\"level\":\"info\",\"thread\":\"vmm\",\"msg\":\"\(boot.end.logged)") }, context)
        #expect(lines.contains { $0.hasPrefix("nested: PASS vcpus=\(boot.vcpus) ") }, context)
        #expect(run.status == 0, context)
    }
}
