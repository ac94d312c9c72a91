import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Lane 2: Debian's stock cloud kernel booted by `kiln` on a real KVM, the
/// kvm_amd of a Debian level-1 guest under QEMU TCG (integration/nested).
/// `make test` builds the assets first (`make nested-assets`). kiln runs with
/// the shipped policies compiled, so its per-thread seccomp filters are
/// exercised by a real Linux guest too. Each boot takes 10 to 60 s here.
/// One run also gives the guest kiln's virtio devices, driven by Debian's
/// own modules, with kiln jailed and configured through its API.
enum NestedLane {
    static let qemu = "/usr/bin/qemu-system-x86_64"
    static var ready: Bool {
        Lanes.executable(qemu) && Lanes.readable(Lanes.nestedReady) && Lanes.executable(Lanes.kiln)
            && Lanes.executable(Lanes.jailer) && Lanes.executable(Lanes.policyCompiler)
    }
    static let skipReason: Comment = {
        var missing: [String] = []
        if !Lanes.executable(qemu) {
            missing.append("QEMU (\(qemu)) is not installed, so there is no TCG level 1: make nested-deps")
        }
        if !Lanes.readable(Lanes.nestedReady) { missing.append("the nested assets are not built: make nested-assets") }
        if !Lanes.executable(Lanes.kiln) || !Lanes.executable(Lanes.jailer) || !Lanes.executable(Lanes.policyCompiler) {
            missing.append("kiln, kiln-jailer and kiln-policy are not built")
        }
        return Comment(rawValue: "nested lane skipped: " + missing.joined(separator: "; "))
    }()

    /// run.sh's output as lines, and the end of it for failure messages.
    struct Output {
        let status: Int32
        let lines: [String]
        let context: Comment

        init(_ arguments: [String], seconds: Int = 300) throws {
            let run = try ChildProcess.run([Lanes.nestedRun] + arguments, seconds: seconds)
            status = run.status
            // Level 2's console lines keep their "\r" through level 1's; split
            // on bytes, since Swift reads "\r\n" as one Character.
            lines = run.stdout.utf8.split(separator: UInt8(ascii: "\n"))
                .map { String(decoding: $0.filter { $0 != UInt8(ascii: "\r") }, as: UTF8.self) }
            context = Comment(
                rawValue: "run.sh status \(run.status)\n\(run.stdout.suffix(5000))\n\(run.stderr.suffix(2000))")
        }

        /// What follows `prefix` on the first line that starts with it.
        func after(_ prefix: String) -> String? {
            lines.first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
        }
    }

    struct Boot: CustomTestStringConvertible, Sendable {
        enum Kernel: String, Sendable {
            case bzImage = "bzimage"
            case elf
        }
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

        let run = try NestedLane.Output(
            [
                "--vmm", folder + "/kiln", "--vcpus", String(boot.vcpus),
                "--l2-kernel", boot.kernel.rawValue,
            ] + boot.end.kernelArguments)
        let lines = run.lines, context = run.context

        let marker = lines.first { $0.hasPrefix("KILN-L2-USERSPACE-MARKER") }
        #expect(marker?.hasSuffix(" cpus=\(boot.vcpus)") == true, context)
        #expect(lines.contains("KILN-L1-VMM-STATUS vmm=kiln run=1 status=0"), context)
        // kiln's JSON log line for the outcome, from the event loop.
        #expect(
            lines.contains { $0.contains("\"level\":\"info\",\"thread\":\"vmm\",\"msg\":\"\(boot.end.logged)") },
            context)
        #expect(lines.contains { $0.hasPrefix("nested: PASS vcpus=\(boot.vcpus) ") }, context)
        #expect(run.status == 0, context)
    }

    /// kiln-jailer jails kiln (uid 1000, the shipped filters) in level 1;
    /// curl configures it through the API socket in the jail, as an
    /// orchestrator would, after level 1 links the drives into the jail
    /// root. Level 2 loads Debian's virtio modules, boots from the ext4 root
    /// drive, and checks each device; level 1 is its network peer and reads
    /// the root drive back after the guest ends. vsock: Debian's
    /// vmw_vsock_virtio_transport against kiln's device, level 1 speaking
    /// Firecracker's protocol to the sockets in the jail. cgroup v2 on level
    /// 1, a pure v2 host: the jailer's limits hold while the guest runs, the
    /// refusals and the join without --cgroup (l1-cgroup). One level-1 boot.
    @Test func jailedKilnServesDebiansVirtioDrivers() throws {
        let folder = Lanes.scratchFolder("nested-devices")
        defer { Lanes.removeTree(folder) }
        // run.sh takes the kiln and the bundle beside the jailer.
        _ = try Lanes.compilePolicies(into: folder)
        symlink(Lanes.jailer, folder + "/kiln-jailer")
        symlink(Lanes.kiln, folder + "/kiln")
        // run.sh's own bound for this boot is 496 s; the test's is past it.
        let run = try NestedLane.Output(
            ["--vmm", folder + "/kiln-jailer", "--devices", "--vsock", "--vcpus", "2", "--cgroup-v2"],
            seconds: 600)
        let lines = run.lines, context = run.context

        // Block: the root drive is the ext4 image, read and written.
        #expect(lines.contains("KILN-L2-ROOT /dev/vda ext4 rw"), context)
        #expect(
            run.after("KILN-L2-BLOCK-OK read: ") == "KILN-HOST-FILE written by the host into the root drive image",
            context)
        let token = run.after("KILN-L2-WRITE token=")
        #expect(token?.count == 36, context)
        #expect(
            run.after("KILN-L1-WRITEBACK-OK vmm=kiln-jailer run=1 file: ")
                == "written by level 2, token \(token ?? "?")", context)
        // The read-only data disk: its signature and checksum read as the
        // host wrote them, a write is refused and the file is unchanged.
        #expect(run.after("KILN-L2-DATA read: ") == "KILN-DATA-DISK written by the host", context)
        #expect(lines.contains("KILN-L2-DATA-RO-OK ro=1"), context)
        let original = run.after("KILN-L1-DATA-UNCHANGED vmm=kiln-jailer run=1 md5=")
        #expect(original?.count == 32, context)
        #expect(run.after("KILN-L2-DATA md5=") == "\(original ?? "?") bytes=262144", context)
        // Entropy: 16 bytes of /dev/hwrng from virtio-rng, not all zero.
        let rng = run.after("KILN-L2-RNG-OK source=virtio_rng.0 bytes=") ?? ""
        #expect(rng.count == 32 && rng.allSatisfy(\.isHexDigit) && rng != String(repeating: "0", count: 32), context)
        // Network: level 1 fetched level 2's page and pinged it.
        #expect(run.after("KILN-L1-HTTP-OK vmm=kiln-jailer run=1 bytes=") != nil, context)
        #expect(
            run.after("KILN-L1-GOT KILN-L2-PAGE hello from level 2: Linux ")?.hasSuffix("root /dev/vda ext4") == true,
            context)
        #expect(run.after("KILN-L1-GOT KILN-L2-PAGE eth0 06:00:ac:10:00:02, hwrng virtio_rng.0: ") == rng, context)
        // The data disk's 256 KiB, through the block device and back over the
        // net device, equal to the host's image (level 1 compares them).
        #expect(run.after("KILN-L1-HTTP-BULK-OK vmm=kiln-jailer run=1 bytes=")?.hasPrefix("262144 ") == true, context)
        #expect(lines.contains("KILN-L1-PING-OK vmm=kiln-jailer run=1 received=3/3"), context)
        // vsock, host → guest: level 1's CONNECT 5000 through uds_path got an
        // OK, and 64 MiB came back from level 2's echo, checked byte for byte
        // by level 1 and counted by level 2.
        let echo = run.after("KILN-L1-VSOCK-ECHO vmm=kiln-jailer run=1 handshake OK ") ?? ""
        #expect(echo.contains(" ok unix-connect bytes=67108864 seconds="), context)
        #expect(
            run.after("KILN-L2-VSOCK-LISTENER ok vsock-listen connections=1 bytes=")?.hasPrefix("67108864 ") == true,
            context)
        // Guest → host: level 2 connected to CID 2 port 5001, level 1's
        // listener on <uds_path>_5001 echoed 1 MiB, and level 2 checked it.
        #expect(run.after("KILN-L2-VSOCK-CONNECT ok vsock-connect bytes=")?.hasPrefix("1048576 ") == true, context)
        #expect(
            run.after("KILN-L1-VSOCK-LISTENER vmm=kiln-jailer run=1 ok unix-listen connections=1 bytes=")?.hasPrefix(
                "1048576 ") == true,
            context)
        // Whole: level 1's console reader once lost this line's head to
        // busybox's `read` (integration/nested/README.md, "Lost console bytes").
        #expect(lines.contains("KILN-L2-END asked by level 1"), context)

        #expect(!lines.contains { $0.contains("KILN-L2-FAIL") || $0.contains("KILN-L1-FAIL") }, context)
        #expect(
            lines.contains { $0.contains("\"level\":\"info\",\"thread\":\"vmm\",\"msg\":\"guest reset (i8042 reset)") },
            context)
        #expect(lines.contains("KILN-L1-VMM-STATUS vmm=kiln-jailer run=1 status=0"), context)
        #expect(lines.contains { $0.hasPrefix("kiln-jailer: jail l2-") && $0.hasSuffix(" cleaned up") }, context)

        // cgroup v2: a value the kernel refuses is named and leaves nothing
        // (no cgroup, no parent the launch made, no jail).
        let refused = run.after("KILN-L1-CGROUP-REFUSED-OK ") ?? ""
        #expect(
            refused.contains("left=nothing")
                && refused.contains("write \"lots\" to /sys/fs/cgroup/kiln-vms/bad-value/memory.max"),
            context)
        // Without --cgroup the VMM joins the cgroup level 1 made, alone; a
        // --cgroup under it then is refused (no-internal-process rule).
        let joined = run.after("KILN-L1-CGROUP-JOINED-OK parent=kiln-pool procs=") ?? "?"
        #expect(
            joined.hasPrefix("\(joined.prefix { $0 != " " }) vmm=\(joined.prefix { $0 != " " }) pids.max=32"), context)
        #expect(run.after("KILN-L1-CGROUP-BUSY-REFUSED-OK ")?.contains("left=nothing") == true, context)
        // The jailed boot's limits, read back while the guest ran; kiln in
        // its cgroup with only KVM's worker of its VM; the cgroup removed
        // by cleanup.
        for value in ["memory.max=536870912", "pids.max=64", "cpu.max=100000 100000"] {
            #expect(lines.contains("KILN-L1-CGROUP-HOLDS \(value)"), context)
        }
        let member = run.after("KILN-L1-CGROUP-MEMBER cgroup=/sys/fs/cgroup/kiln-vms/l2-") ?? ""
        #expect(member.contains(" comm=kiln kvm-workers="), context)
        #expect(lines.contains { $0.hasPrefix("KILN-L1-CGROUP-GONE /sys/fs/cgroup/kiln-vms/l2-") }, context)
        #expect(
            lines.contains {
                $0.hasPrefix("nested: PASS vcpus=2 ") && $0.hasSuffix(" devices=ok vsock=ok cgroup-v2=ok")
            }, context)
        #expect(run.status == 0, context)
    }
}
