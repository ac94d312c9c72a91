import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Lane 1: the Embedded Swift test guest (integration/guest) booted by the
/// real `kiln` binary on this machine's KVM. Asserts on the guest's serial
/// output and on kiln's exit code.
enum Lane1 {
    static let packageRoot = ChildProcess.packageRoot()

    static let guest = packageRoot + "/integration/out/kiln-test-guest.elf"

    /// `kiln` sits beside the test bundle in SwiftPM's build directory.
    static let kiln = ChildProcess.buildFolder + "/kiln"

    static var kvmAvailable: Bool { access("/dev/kvm", R_OK | W_OK) == 0 }
    static var guestBuilt: Bool { access(guest, R_OK) == 0 }
    static var kilnBuilt: Bool { access(kiln, X_OK) == 0 }
    static var ready: Bool { kvmAvailable && guestBuilt && kilnBuilt }
    /// Names exactly what is missing.
    static let skipReason: Comment = {
        var missing: [String] = []
        if !kvmAvailable { missing.append("/dev/kvm is absent or not read-write") }
        if !guestBuilt { missing.append("the test guest \(guest) is not built (make guest)") }
        if !kilnBuilt { missing.append("the kiln binary \(kiln) is not built") }
        return Comment(rawValue: "lane 1 skipped: " + missing.joined(separator: "; "))
    }()

    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
        var guestLines: [String] { stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("guest: ") } }
    }

    /// Runs kiln under timeout(1) so a hang fails the test instead of the suite.
    static func run(_ arguments: [String], input: String? = nil, seconds: Int = 20) throws -> Run {
        let finished = try ChildProcess.run([kiln] + arguments, input: input, seconds: seconds)
        return Run(status: finished.status, stdout: finished.stdout, stderr: finished.stderr)
    }

    /// Starts kiln under timeout(1) with its standard streams on files.
    static func spawn(
        _ arguments: [String], stdin: String? = nil, stdout: String, stderr: String,
        seconds: Int = 20
    ) throws -> pid_t {
        try ChildProcess.spawn([kiln] + arguments, stdin: stdin, stdout: stdout, stderr: stderr, seconds: seconds)
    }

    static func wait(_ pid: pid_t) -> Int32 { ChildProcess.wait(pid) }

    static func read(_ path: String) -> String { ChildProcess.read(path) }

    static let baseFlags = ["--no-api", "--no-seccomp"]

    /// A scratch file with `text` in it; the caller unlinks it.
    /// A new file each call: tests run in parallel, and several write the
    /// same kind of file (a config) at once.
    static func scratchFile(_ name: String, _ text: String) -> String {
        let path = "/tmp/kiln-lane1-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let file = fopen(path, "w")!
        fputs(text, file)
        fclose(file)
        return path
    }
}

@Suite(.enabled(if: Lane1.ready, Lane1.skipReason))
struct TestGuestTests {
    @Test func guestPrintsBootParamsTakesTimerInterruptsAndResets() throws {
        let run = try Lane1.run(
            Lane1.baseFlags + [
                "--kernel", Lane1.guest, "--cmdline", "console=ttyS0 lane1 marker=42", "--mem", "128", "--boot-timer",
            ])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        let lines = run.guestLines
        #expect(lines.first == "guest: hello from the kiln test guest")
        // The guest's PVH note wins over its ELF entry (GuestBoot).
        #expect(lines.contains("guest: boot protocol: pvh"))
        #expect(lines.contains("guest: cmdline: console=ttyS0 lane1 marker=42"))
        // 128 MiB: low RAM, EBDA..1 MiB reserved, RAM from 1 MiB, the MMIO hole.
        #expect(lines.contains("guest: e820 entries: 4"))
        #expect(lines.contains("guest: e820: 0x0 size 0x9fc00 type 1"))
        #expect(lines.contains("guest: e820: 0x9fc00 size 0x60400 type 2"))
        #expect(lines.contains("guest: e820: 0x100000 size 0x7f00000 type 1"))
        #expect(lines.contains("guest: e820: 0xc0000000 size 0x40000000 type 2"))
        #expect(lines.contains { $0.hasPrefix("guest: timer interrupts: ") })
        // THR-empty interrupts through kiln's UART model and KVM_IRQ_LINE.
        let serial = lines.first { $0.hasPrefix("guest: serial interrupts: ") }
        #expect(serial.flatMap { Int($0.dropFirst("guest: serial interrupts: ".count)) }.map { $0 >= 2 } == true)
        #expect(lines.last == "guest: ready")
        #expect(run.stderr.contains("boot-timer: guest boot time"))
        #expect(run.stderr.contains("guest reset (i8042 reset)"))
    }

    @Test func stdinReachesTheGuestThroughTheUART() throws {
        let run = try Lane1.run(
            Lane1.baseFlags + ["--kernel", Lane1.guest, "--cmdline", "echo"],
            input: "typed into kiln\nrest")
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        #expect(run.guestLines.contains("guest: echo: typed into kiln"))
        #expect(run.guestLines.last == "guest: ready")
    }

    /// `--level Trace` logs every port exit, and `--log-path` may name a
    /// FIFO: the test holds its read end open (non-blocking) while kiln runs.
    @Test func traceLevelLogsEachPortExitIntoAFIFO() throws {
        let fifo = "/tmp/kiln-lane1-fifo-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try #require(mkfifo(fifo, 0o600) == 0, "mkfifo \(fifo)")
        defer { unlink(fifo) }
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        try #require(reader >= 0)
        defer { close(reader) }
        let run = try Lane1.run(Lane1.baseFlags + ["--kernel", Lane1.guest, "--level", "Trace", "--log-path", fifo])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        var bytes: [UInt8] = [], buffer = [UInt8](repeating: 0, count: 65536)
        while case let count = read(reader, &buffer, buffer.count), count > 0 { bytes += buffer[0..<count] }
        let log = String(decoding: bytes, as: UTF8.self)
        #expect(log.contains("\"level\":\"trace\""), "\(log.prefix(2000))")
        #expect(log.contains("vcpu0: out port 0x3f8"), "the guest's console writes are traced: \(log.prefix(2000))")
        #expect(log.contains("guest reset (i8042 reset)"), "\(log.suffix(2000))")
    }

    @Test func acpiS5PoweroffEndsKilnWithZero() throws {
        let run = try Lane1.run(Lane1.baseFlags + ["--kernel", Lane1.guest, "--cmdline", "poweroff"])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        #expect(run.guestLines.last == "guest: ready")
        #expect(run.stderr.contains("guest powered off (ACPI S5)"))
    }

    @Test func memoryAboveTheHoleIsASecondRegion() throws {
        let run = try Lane1.run(Lane1.baseFlags + ["--kernel", Lane1.guest, "--mem", "4096", "--vcpus", "2"])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        #expect(run.guestLines.contains("guest: e820: 0x100000 size 0xbff00000 type 1"))
        #expect(run.guestLines.contains("guest: e820: 0x100000000 size 0x40000000 type 1"))
        #expect(run.guestLines.last == "guest: ready")
    }

    @Test func initrdIsLoadedAndAnnounced() throws {
        let path = Lane1.scratchFile("initrd", "INITRD-MARKER-0123456789")
        defer { unlink(path) }
        let run = try Lane1.run(Lane1.baseFlags + ["--kernel", Lane1.guest, "--initrd", path])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        #expect(run.guestLines.contains("guest: initrd: 24 bytes: INITRD-MARKER-01"))
    }

    /// kiln enters the guest at its PVH note; with the note's type changed it
    /// takes the ELF entry and the 64-bit boot protocol, which the guest
    /// supports too, zero page and all.
    @Test func theGuestBootsThroughThe64BitProtocolWithoutItsPVHNote() throws {
        var image = ChildProcess.readBytes(Lane1.guest)
        let note: [UInt8] = [4, 0, 0, 0, 8, 0, 0, 0, 18, 0, 0, 0] + Array("Xen\0".utf8)
        let start = try #require(
            (0...(image.count - note.count)).first { image[$0..<$0 + note.count].elementsEqual(note) },
            "no PVH note in \(Lane1.guest)")
        image[start + 8] = 19 // any type but XEN_ELFNOTE_PHYS32_ENTRY
        let kernel = "/tmp/kiln-lane1-no-pvh-\(getpid()).elf"
        let file = try #require(fopen(kernel, "w"))
        _ = fwrite(image, 1, image.count, file)
        fclose(file)
        let initrd = Lane1.scratchFile("initrd-64", "INITRD-MARKER-0123456789")
        defer { unlink(kernel); unlink(initrd) }
        let run = try Lane1.run(Lane1.baseFlags + ["--kernel", kernel, "--initrd", initrd, "--cmdline", "no-pvh"])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        #expect(run.guestLines.contains("guest: boot protocol: linux 64-bit"))
        #expect(run.guestLines.contains("guest: cmdline: no-pvh"))
        #expect(run.guestLines.contains("guest: e820: 0x100000 size 0x7f00000 type 1"))
        #expect(run.guestLines.contains("guest: initrd: 24 bytes: INITRD-MARKER-01"))
        #expect(run.guestLines.last == "guest: ready")
    }

    @Test func consoleOutputCanGoToAFile() throws {
        let path = Lane1.scratchFile("console", "")
        defer { unlink(path) }
        let run = try Lane1.run(Lane1.baseFlags + ["--kernel", Lane1.guest, "--console-output", path])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        #expect(run.stdout.isEmpty)
        #expect(Lane1.read(path).contains("guest: ready\n"))
    }

    @Test func aVsockDeviceIsAnnouncedAndItsSocketRemovedAtExit() throws {
        let socket = Lane1.scratchFile("vsock.sock", "")
        unlink(socket)
        let path = Lane1.scratchFile(
            "vsock.json",
            """
            {"boot-source": {"kernel_image_path": "\(Lane1.guest)", "boot_args": "vsock-test"},
             "vsock": {"guest_cid": 3, "uds_path": "\(socket)"}}
            """)
        defer { unlink(path); unlink(socket) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", path])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        // The only virtio device: the first window and GSI.
        #expect(run.guestLines.contains("guest: cmdline: vsock-test virtio_mmio.device=4K@0xd0001000:5"))
        #expect(access(socket, F_OK) != 0, "uds_path is left behind")
    }

    @Test func aVsockPathAlreadyTakenIsRefusedAndKept() throws {
        let socket = Lane1.scratchFile("vsock-taken", "not a socket")
        let path = Lane1.scratchFile(
            "vsock.json",
            """
            {"boot-source": {"kernel_image_path": "\(Lane1.guest)"},
             "vsock": {"guest_cid": 3, "uds_path": "\(socket)"}}
            """)
        defer { unlink(path); unlink(socket) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", path])
        #expect(run.status == 1)
        #expect(run.stderr.contains("vsock: uds_path \(socket): a file already exists there"), "\(run.stderr)")
        #expect(run.stdout.isEmpty)
        #expect(Lane1.read(socket) == "not a socket")
    }

    @Test func configFileBootsTheGuest() throws {
        let path = Lane1.scratchFile(
            "config.json",
            """
            {"boot-source": {"kernel_image_path": "\(Lane1.guest)", "boot_args": "from-config-file"},
             "machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}
            """)
        defer { unlink(path) }
        let run = try Lane1.run(Lane1.baseFlags + ["--config-file", path])
        #expect(run.status == 0, "kiln stderr: \(run.stderr)")
        #expect(run.guestLines.contains("guest: cmdline: from-config-file"))
    }

    @Test func aGuestThatHaltsForGoodEndsKilnWithAnError() throws {
        let run = try Lane1.run(Lane1.baseFlags + ["--kernel", Lane1.guest, "--cmdline", "halt", "--vcpus", "2"])
        #expect(run.status == 3, "kiln stderr: \(run.stderr)")
        #expect(run.guestLines.last == "guest: halting with interrupts off")
        #expect(run.stderr.contains("all vCPUs halted"))
    }

    @Test func badInputIsRefusedBeforeAnyVCPURuns() throws {
        let notKernel = try Lane1.run(Lane1.baseFlags + ["--kernel", "/etc/hostname"])
        #expect(notKernel.status == 1)
        #expect(notKernel.stderr.contains("kernel /etc/hostname"))
        #expect(!notKernel.stderr.contains("first KVM_RUN"))

        let longLine = String(repeating: "x", count: 3000)
        let tooLong = try Lane1.run(Lane1.baseFlags + ["--kernel", Lane1.guest, "--cmdline", longLine])
        #expect(tooLong.status == 1)
        #expect(tooLong.stdout.isEmpty)

        let bigPath = Lane1.scratchFile("big-initrd", String(repeating: "z", count: 17 << 20))
        defer { unlink(bigPath) }
        let tooBig = try Lane1.run(Lane1.baseFlags + ["--kernel", Lane1.guest, "--initrd", bigPath, "--mem", "16"])
        #expect(tooBig.status == 1)
        #expect(tooBig.stderr.contains("initrd \(bigPath): "))
        #expect(tooBig.stdout.isEmpty)

        let missingInitrd = try Lane1.run(
            Lane1.baseFlags + ["--kernel", Lane1.guest, "--initrd", "/nonexistent/initrd"])
        #expect(missingInitrd.status == 1)
        #expect(missingInitrd.stderr.contains("/nonexistent/initrd"))
        #expect(missingInitrd.stdout.isEmpty)
    }

    @Test func badFlagsAndPathsAreRefusedAndLeaveNothingBehind() throws {
        // No seccomp flag: the built-in filters, no warning.
        let builtin = try Lane1.run(["--no-api", "--kernel", Lane1.guest, "--cmdline", "console=ttyS0 lane1"])
        #expect(builtin.status == 0, "\(builtin.stderr)")
        #expect(!builtin.stderr.contains("--no-seccomp"))
        let noBundle = try Lane1.run([
            "--no-api", "--seccomp-filter", "/nonexistent/f.kbundle", "--kernel", Lane1.guest,
        ])
        #expect(noBundle.status == 1)
        #expect(noBundle.stderr.contains("--seccomp-filter /nonexistent/f.kbundle"))
        #expect(noBundle.stdout.isEmpty)

        let socketInMissingFolder = "/tmp/kiln-lane1-missing-\(getpid())/api.sock"
        let badSocket = try Lane1.run(["--no-seccomp", "--api-sock", socketInMissingFolder])
        #expect(badSocket.status == 1)
        #expect(badSocket.stderr.contains(socketInMissingFolder))
        #expect(access(socketInMissingFolder, F_OK) != 0)

        // A file already at the socket path is never replaced nor removed.
        let taken = Lane1.scratchFile("taken.sock", "not a socket")
        defer { unlink(taken) }
        let busy = try Lane1.run(["--no-seccomp", "--api-sock", taken])
        #expect(busy.status == 1)
        #expect(busy.stderr.contains("already exists"))
        #expect(Lane1.read(taken) == "not a socket")
    }
}
