import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The real kiln and kiln-jailer answer as Firecracker's binaries do where
/// clients read the answers: the version output Kata parses, and the API's
/// version fields.
@Suite(.enabled(if: Lane1.kilnBuilt, "kiln is not built (swift build)"))
struct DropInTests {
    /// The Firecracker version of the API spec Kiln implements.
    static let specVersion: String = {
        let spec = ChildProcess.read(Lane1.packageRoot + "/integration/api/reference/firecracker-api.yaml")
        let line = spec.split(separator: "\n").first { $0.hasPrefix("  version: ") } ?? ""
        return String(line.dropFirst("  version: ".count))
    }()

    /// As Kata reads `firecracker --version`: the first line's second word, less "v".
    static func kataVersion(_ output: String) -> String? {
        let fields = (output.split(separator: "\n", omittingEmptySubsequences: false).first ?? "").split(separator: " ")
        return fields.count > 1 ? String(fields[1].trimmingPrefix("v")) : nil
    }

    @Test func versionOutputsLeadWithTheImplementedFirecrackerVersion() throws {
        #expect(!Self.specVersion.isEmpty)
        let vmm = try ChildProcess.run([Lane1.kiln, "--version"], seconds: 10)
        #expect(vmm.status == 0)
        #expect(vmm.stdout.hasPrefix("Firecracker v\(Self.specVersion)\nKiln v"), "\(vmm.stdout)")
        #expect(Self.kataVersion(vmm.stdout) == Self.specVersion)
        let jailer = try ChildProcess.run([ChildProcess.buildFolder + "/kiln-jailer", "--version"], seconds: 10)
        #expect(jailer.status == 0)
        #expect(jailer.stdout.hasPrefix("Jailer v\(Self.specVersion)\nkiln-jailer v"), "\(jailer.stdout)")
    }

    /// GET /version and GET / give the version `--version` leads with.
    @Test func theAPIReportsTheSameVersion() throws {
        let socketPath = "/tmp/kiln-dropin-\(getpid()).sock", errors = "/tmp/kiln-dropin-\(getpid()).err"
        defer { unlink(socketPath); unlink(errors) }
        let pid = try Lane1.spawn(["--api-sock", socketPath], stdout: "/dev/null", stderr: errors)
        defer { kill(pid, SIGTERM); _ = Lane1.wait(pid) }
        let client = try UnixHTTPClient(path: socketPath)
        let version = try client.request("GET", "/version")
        #expect(
            version.status == 200 && version.body == "{\"firecracker_version\":\"\(Self.specVersion)\"}", "\(version)")
        let described = try client.request("GET", "/")
        #expect(described.body.contains("\"vmm_version\":\"\(Self.specVersion)\""), "\(described)")
    }

    /// Flags for features Kiln lacks end it at once, naming the feature.
    @Test func aMissingFeatureFlagFailsAtOnce() throws {
        let origin = try ChildProcess.run(
            [Lane1.kiln, "--no-api", "--show-log-origin", "--kernel", Lane1.guest], seconds: 10)
        #expect(origin.status == 1)
        #expect(
            origin.stderr.hasPrefix(
                "kiln: --show-log-origin: Kiln does not implement log lines with their source file"),
            "\(origin.stderr)")
        #expect(origin.stdout.isEmpty)
    }

    /// --enable-pci (microheart passes it always) boots the guest on virtio-mmio and says so in the log.
    @Test(.enabled(if: Lane1.ready, Lane1.skipReason))
    func enablePCIBootsOnVirtioMMIOAndSaysSo() throws {
        let run = try Lane1.run([
            "--no-api", "--enable-pci", "--level", "Info", "--kernel", Lane1.guest,
            "--cmdline", "console=ttyS0 lane1",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(
            run.stderr.contains("--enable-pci: Kiln has no PCI transport; the guest gets every device on virtio-mmio"),
            "\(run.stderr)")
    }

    /// A filter file in another format (such as Firecracker's) is refused, saying which kiln reads.
    @Test func aForeignFilterFileIsRefusedByName() throws {
        let filter = Lane1.scratchFile("foreign-filter", "{\"vmm\": {}}")
        defer { unlink(filter) }
        let run = try ChildProcess.run(
            [Lane1.kiln, "--no-api", "--seccomp-filter", filter, "--kernel", Lane1.guest], seconds: 10)
        #expect(run.status == 1)
        #expect(
            run.stderr.contains("--seccomp-filter \(filter): ")
                && run.stderr.contains("not Firecracker's compiled filters"), "\(run.stderr)")
    }

    /// --metrics-path: metrics from the start, flushed at exit.
    @Test(.enabled(if: Lane1.ready, Lane1.skipReason))
    func metricsPathWritesMetrics() throws {
        let metrics = Lane1.scratchFile("metrics", "")
        defer { unlink(metrics) }
        let run = try Lane1.run([
            "--no-api", "--metrics-path", metrics, "--kernel", Lane1.guest, "--cmdline", "console=ttyS0 lane1",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(Lane1.read(metrics).contains("\"vcpu\""), "metrics: \(Lane1.read(metrics))")
    }
}
