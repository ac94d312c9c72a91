import CKiln
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Lane 1 jailed, with virtio devices: kiln-jailer → kiln (non-root, the
/// built-in or shipped filters) boots the test guest from a config file
/// placed with `--jail-file`, its paths inside the jail. Part of the jailed
/// suite, so that they share its conditions and run one at a time.
extension JailedKilnTests {
    /// A read-only drive placed with --jail-file, a read-write one put in a
    /// prepared root as an orchestrator does (--jail-file makes files root's
    /// and read-only), and an entropy device, under the built-in filters.
    @Test func drivesAndEntropyWorkInsideTheJail() throws {
        let folder = Lanes.scratchFolder("jailed-virtio")
        defer { Lanes.removeTree(folder) }
        let base = folder + "/jails", id = "jailed-virtio"
        let jailFolder = base + "/kiln/" + id, root = jailFolder + "/root"
        let common = ["--id", id, "--exec-file", Lanes.kiln, "--chroot-base-dir", base]
        // Runs before removeTree: a failed test leaves no jail either.
        defer { _ = try? ChildProcess.run([Lanes.jailer, "cleanup"] + common, seconds: 30) }
        for path in [base, base + "/kiln", jailFolder, root] { mkdir(path, 0o755) }

        let readOnly = VirtioLane.makeDrive(at: folder + "/ro.img")
        let readWrite = VirtioLane.makeDrive(at: folder + "/rw.img")
        let original = ChildProcess.readBytes(readOnly)
        // Hard-linked, so the host file is the one the guest writes.
        let placed =
            chown(readWrite, uid_t(JailedLane.uid)!, gid_t(JailedLane.gid)!) == 0
            && chmod(readWrite, 0o600) == 0 && link(readWrite, root + "/rw.img") == 0
        try #require(placed, "placing the read-write drive: errno \(errno)")
        let config = folder + "/vm.json"
        ChildProcess.write(
            VirtioLane.configText(
                kernel: "/guest.elf",
                drives: [.init(path: "/ro.img", readOnly: true), .init(path: "/rw.img", readOnly: false)],
                entropy: true), to: config)

        let run = try ChildProcess.run(
            [Lanes.jailer] + common + [
                "--uid", JailedLane.uid, "--gid", JailedLane.gid,
                "--jail-file", Lanes.testGuest + ":guest.elf", "--jail-file", readOnly + ":ro.img",
                "--jail-file", config + ":vm.json", "--", "--no-api", "--config-file", "/vm.json",
            ],
            seconds: 30)
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        let lines = VirtioLane.guestLines(run.stdout)
        #expect(run.status == 0, context)
        #expect(!run.stderr.contains("Bad system call"), context)
        #expect(lines.last == "guest: virtio done", context)

        let readOnlyBlock = VirtioLane.section(lines, containing: " ro=1")
        #expect(readOnlyBlock.first == "guest: virtio-mmio 0xd0001000 size 4096 irq 5", context)
        #expect(readOnlyBlock.contains("guest: blk sector0 \(VirtioLane.sectorZeroHex)"), context)
        #expect(readOnlyBlock.contains("guest: blk write refused status 1"), context)
        // Compared apart: a failed #expect would print both megabytes.
        let unchanged = ChildProcess.readBytes(readOnly) == original
        #expect(unchanged, "the read-only drive file changed")

        let readWriteBlock = VirtioLane.section(lines, containing: " ro=0")
        #expect(readWriteBlock.contains("guest: blk sector0 \(VirtioLane.sectorZeroHex)"), context)
        #expect(readWriteBlock.contains("guest: blk write ok"), context)

        let draw = VirtioLane.entropyDraw(lines)
        #expect(draw != nil && draw != String(repeating: "0", count: 64), context)
        #expect(!lines.contains("guest: rng all zero"), context)

        let cleanup = try ChildProcess.run([Lanes.jailer, "cleanup"] + common, seconds: 30)
        #expect(cleanup.status == 0, Comment(rawValue: cleanup.stderr))
        #expect(!Lanes.exists(jailFolder), "the jail folder is left behind")
        // The write went to the host's file, and outlives the jail's link.
        let written = VirtioLane.holdsTheGuestsWrite(ChildProcess.readBytes(readWrite))
        #expect(written, "sectors 1-8 of \(readWrite) do not hold the guest's pattern (and only there)")
    }

    /// A TAP owned by the VMM's uid in a network namespace the jailer joins
    /// with --netns; the shipped filters. The test reads and writes the TAP
    /// through a packet socket opened in that namespace.
    @Test(
        .enabled(
            if: access(TapLane.ip, X_OK) == 0 && access("/dev/net/tun", R_OK | W_OK) == 0,
            "the jailed net test needs iproute2 and /dev/net/tun"))
    func aTapInTheJoinedNamespaceCarriesTheGuestsFrames() throws {
        let folder = Lanes.scratchFolder("jailed-net")
        defer { Lanes.removeTree(folder) }
        let name = "kjv\(getpid() % 1_000_000)", tap = name + "t"
        let added = try TapLane.ipTool(["netns", "add", name])
        try #require(added.status == 0, "ip netns add: \(added.stderr)")
        defer { _ = try? TapLane.ipTool(["netns", "del", name]) }
        let made = try TapLane.ipTool(["-n", name, "tuntap", "add", "dev", tap, "mode", "tap", "user", JailedLane.uid])
        try #require(made.status == 0, "ip tuntap add: \(made.stderr)")
        // Before the namespace goes: a persistent TAP must not outlive the test.
        defer { _ = try? TapLane.ipTool(["-n", name, "link", "del", tap]) }
        // No address: the test speaks raw Ethernet, and the namespace's stack stays out.
        _ = try TapLane.ipTool(["-n", name, "link", "set", tap, "up"])
        let namespace = "/var/run/netns/" + name
        let fd = try #require(
            Self.inNetworkNamespace(namespace) { TapLane.packetSocket(tap) } ?? nil,
            "AF_PACKET socket on \(tap) in \(namespace): errno \(errno)")
        defer { close(fd) }

        let bundle = try Lanes.compilePolicies(into: folder)
        let config = folder + "/vm.json"
        ChildProcess.write(
            VirtioLane.configText(kernel: "/guest.elf", tap: tap, mac: TapLane.macText(TapLane.guestMAC)),
            to: config)
        let base = folder + "/jails", id = "jailed-net"
        let common = ["--id", id, "--exec-file", Lanes.kiln, "--chroot-base-dir", base]
        defer { _ = try? ChildProcess.run([Lanes.jailer, "cleanup"] + common, seconds: 30) }
        let jailer = try ChildProcess.start(
            [Lanes.jailer] + common + [
                "--uid", JailedLane.uid, "--gid", JailedLane.gid, "--seccomp-bundle", bundle,
                "--netns", namespace, "--jail-file", Lanes.testGuest + ":guest.elf",
                "--jail-file", config + ":vm.json", "--", "--no-api", "--config-file", "/vm.json",
            ],
            seconds: 30)

        let exchange = TapLane.helloAndEcho(
            fd, while: jailer.pid,
            payload: Array("echo this, jailed kiln guest: \(getpid())".utf8))
        let run = jailer.wait()
        let context = Comment(rawValue: "status \(run.status)\nstdout:\n\(run.stdout)\nstderr:\n\(run.stderr)")
        #expect(
            exchange.hello?.payload == Array("kiln-guest-hello".utf8),
            "no hello frame from the guest\n\(context.rawValue)")
        #expect(exchange.hello == nil || exchange.sent > 0, "send: errno \(exchange.sendErrno)")
        #expect(
            exchange.echo?.payload == exchange.payload && exchange.echo?.destinationPort == 40007,
            "no echo from the guest\n\(context.rawValue)")
        #expect(run.status == 0, context)
        #expect(!run.stderr.contains("Bad system call"), context)
        let lines = VirtioLane.guestLines(run.stdout)
        #expect(lines.contains("guest: virtio-net@0xd0001000 mac \(TapLane.macText(TapLane.guestMAC))"), context)
        #expect(lines.contains("guest: net echoed \(exchange.payload.count) bytes"), context)
    }

    /// `body` run on this thread inside the network namespace at `path`;
    /// nil if the thread could not enter it. Sockets made there stay in it.
    static func inNetworkNamespace<T>(_ path: String, _ body: () -> T) -> T? {
        let home = open("/proc/thread-self/ns/net", O_RDONLY), target = open(path, O_RDONLY)
        defer { if home >= 0 { close(home) }; if target >= 0 { close(target) } }
        guard home >= 0, target >= 0, ckiln_setns(target, ckiln_clone_newnet()) == 0 else { return nil }
        // A thread left in the test's namespace would carry later tests there.
        defer { precondition(ckiln_setns(home, ckiln_clone_newnet()) == 0, "could not return to the host's namespace") }
        return body()
    }
}
