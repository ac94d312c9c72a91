import KilnConfig
import KilnSystem
import Testing

@testable import KilnMachine

#if canImport(Glibc)
    import Glibc
#endif

/// Boot files are checked before a byte of them is read: a FIFO must not
/// block the event loop, and an image the guest cannot hold must not be
/// read into kiln's memory first.
@Suite(.serialized) struct ImageFileTests {
    static func scratch(_ name: String) -> String { "/tmp/kiln-image-\(getpid())-\(name)" }

    /// A tiny regular file: enough to be read as a kernel before the initrd.
    static func smallFile(_ name: String) throws -> String {
        let path = scratch(name)
        let fd = try FileDescriptor.open(path, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        defer { fd.close() }
        try fd.writeAll([UInt8](repeating: 0x90, count: 4096))
        return path
    }

    /// Boots through the real call site: Machine reads the images before it
    /// needs KVM, so this runs on any host.
    static func bootError(kernel: String, initrd: String? = nil, memoryMiB: Int = 64) -> String {
        let configuration = VMConfig(
            bootSource: BootSourceConfig(kernelImagePath: kernel, initrdPath: initrd),
            machine: MachineConfig(memSizeMiB: memoryMiB))
        do {
            _ = try Machine(configuration: configuration, host: MachineHost())
            return "booted"
        } catch {
            return "\(error)"
        }
    }

    /// A kernel path naming a FIFO with no writer: open(2) without
    /// O_NONBLOCK waits for a writer forever, and with it the event loop.
    @Test func fifoKernelIsRefusedWithoutAWriter() throws {
        let fifo = Self.scratch("fifo")
        unlink(fifo)
        try #require(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        let message = Locked<String?>(nil)
        let thread = try SystemThread.spawn(name: "fifo-kernel") {
            let error = Self.bootError(kernel: fifo)
            message.withLock { $0 = error }
        }
        let deadline = MonotonicClock.nanoseconds() + 2_000_000_000
        while message.withLock({ $0 == nil }) && MonotonicClock.nanoseconds() < deadline { usleep(5_000) }
        let finished = message.withLock { $0 }
        if finished == nil {
            // Release the blocked open so the test can end: a writer arrives and leaves.
            let writer = open(fifo, O_WRONLY | O_NONBLOCK)
            if writer >= 0 { Glibc.close(writer) }
        }
        thread.join()
        #expect(finished != nil, "the FIFO kernel blocked the boot for 2 s")
        #expect(finished?.contains("kernel \(fifo): a FIFO, not a regular file; not read") == true, "\(finished ?? "")")
    }

    /// A 2 GiB sparse initrd for a 64 MiB guest: refused from fstat's size,
    /// not read whole first (which took seconds and 2 GB of RSS).
    @Test func oversizedSparseInitrdIsRefusedBeforeReading() throws {
        let kernel = try Self.smallFile("kernel")
        defer { unlink(kernel) }
        let initrd = Self.scratch("sparse-initrd")
        let fd = try FileDescriptor.open(initrd, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        defer { unlink(initrd) }
        let size = 2 << 30
        try #require(ftruncate(fd.rawValue, off_t(size)) == 0)
        fd.close()

        var before = rusage(), after = rusage()
        getrusage(RUSAGE_SELF.rawValue, &before)
        let start = MonotonicClock.nanoseconds()
        let message = Self.bootError(kernel: kernel, initrd: initrd, memoryMiB: 64)
        let elapsed = MonotonicClock.nanoseconds() - start
        getrusage(RUSAGE_SELF.rawValue, &after)

        #expect(
            message.contains(
                "initrd \(initrd): \(size) bytes (2048 MiB), larger than the guest's memory (64 MiB); not read"),
            "\(message)")
        #expect(elapsed < 500_000_000, "took \(elapsed / 1_000_000) ms")
        let grownKiB = after.ru_maxrss - before.ru_maxrss
        #expect(grownKiB < 256 << 10, "peak RSS grew by \(grownKiB >> 10) MiB")
    }

    @Test func limitsFollowTheGuestMemory() {
        #expect(ImageFile.limit(.initrd, guestMemoryMiB: 64).bytes == 64 << 20)
        #expect(ImageFile.limit(.kernel, guestMemoryMiB: 64).bytes == 64 << 20)
        #expect(ImageFile.limit(.kernel, guestMemoryMiB: 4096).bytes == ImageFile.kernelCap)
        #expect(ImageFile.limit(.initrd, guestMemoryMiB: 4096).bytes == 4096 << 20)
    }

    @Test func directoryAndNulPathAreRefused() throws {
        let directory = #expect(
            throws: BootInputError.imageNotRegularFile(image: "initrd", path: "/tmp", fileType: "a directory")
        ) {
            try ImageFile.read("/tmp", .initrd, guestMemoryMiB: 64)
        }
        #expect(directory?.description == "initrd /tmp: a directory, not a regular file; not read")
        let nul = #expect(throws: BootInputError.imagePathContainsNUL(image: "kernel")) {
            try ImageFile.read("/etc/hostname\u{0}/x", .kernel, guestMemoryMiB: 64)
        }
        #expect(nul?.description == "kernel path contains a NUL byte")
    }
}

/// The FIFO kernel through kiln's API, exec'd under the jailer's filter as
/// kiln-jailer leaves it (so the image's open flags must be allowed there):
/// InstanceStart used to hang the event loop, GET / with it, and SIGTERM was
/// ignored until SIGKILL, which left the socket file behind.
@Suite(
    .enabled(
        if: Lane1.kilnBuilt && access(APILane.kilnPolicy, X_OK) == 0, "kiln or kiln-policy is not built (swift build)"))
struct FIFOKernelAPITests {
    /// Reaps `pid` within `seconds`, else kills it and returns nil.
    static func reap(_ pid: pid_t, within seconds: Double) -> Int32? {
        var status: Int32 = 0
        let reaped = APILane.eventually(seconds: seconds) { waitpid(pid, &status, WNOHANG) == pid }
        if reaped { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
        kill(pid, SIGKILL)
        _ = Lane1.wait(pid)
        return nil
    }

    @Test func aFIFOKernelIsRefusedAtOnceAndKilnStaysResponsive() throws {
        let scratch = "/tmp/kiln-fifo-kernel-\(getpid())"
        let socketPath = scratch + ".sock", errors = scratch + ".err", fifo = scratch + ".fifo"
        unlink(fifo)
        try #require(mkfifo(fifo, 0o600) == 0)
        let bundle = try APILane.bundle()
        defer { unlink(socketPath); unlink(errors); unlink(fifo); unlink(bundle) }
        let pid = try APILane.spawnUnderJailerFilter(
            bundle: bundle, ["--api-sock", socketPath, "--seccomp-filter", bundle],
            stdout: "/dev/null", stderr: errors)
        var status: Int32?
        defer { if status == nil { _ = Self.reap(pid, within: 0) } }
        let client = try UnixHTTPClient(path: socketPath)
        #expect(try client.request("PUT", "/boot-source", "{\"kernel_image_path\": \"\(fifo)\"}").status == 204)
        let start = MonotonicClock.nanoseconds()
        let refused = try client.request("PUT", "/actions", "{\"action_type\": \"InstanceStart\"}")
        let elapsed = MonotonicClock.nanoseconds() - start
        #expect(
            refused.status == 400 && refused.body.contains("kernel \(fifo): a FIFO, not a regular file"),
            "\(refused); stderr: \(Lane1.read(errors))")
        #expect(elapsed < 1_000_000_000, "InstanceStart took \(elapsed / 1_000_000) ms")
        #expect(try client.request("GET", "/").status == 200)
        kill(pid, SIGTERM)
        status = Self.reap(pid, within: 5)
        #expect(status == 128 + SIGTERM, "stderr: \(Lane1.read(errors))")
        #expect(access(socketPath, F_OK) != 0, "the API socket must be removed on SIGTERM")
    }
}
