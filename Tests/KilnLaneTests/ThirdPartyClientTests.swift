import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Third-party Python clients from PyPI run their own VM lifecycles against
/// `kiln` installed as `firecracker` (integration/clients/README.md). Each
/// driver runs in its own network namespace, records every API exchange in
/// integration/out/clients/<client>/, and exits non-zero at the first step
/// that fails; the test then checks the record it left.
enum ThirdPartyClients {
    /// Client name (its requirements file) and its driver script.
    static let drivers = [
        ("firecracker-python", "firecracker_python_client.py"),
        ("microheart", "microheart_client.py"),
        ("bandsox", "bandsox_client.py"),
    ]
    static let folder = Lanes.packageRoot + "/integration/clients"
    static let venvs = Lanes.packageRoot + "/integration/out/client-venvs"

    static func python(_ client: String) -> String { venvs + "/" + client + "/bin/python" }

    static var laneReady: Bool {
        getuid() == 0 && access("/dev/kvm", R_OK | W_OK) == 0 && Lanes.readable(Lanes.testGuest)
            && Lanes.executable(Lanes.kiln) && Lanes.executable("/usr/bin/unshare")
    }
    static let laneSkipReason: Comment = {
        var missing: [String] = []
        if getuid() != 0 { missing.append("the clients make TAPs in a network namespace: root is needed") }
        if access("/dev/kvm", R_OK | W_OK) != 0 { missing.append("/dev/kvm is absent or not read-write") }
        if !Lanes.readable(Lanes.testGuest) { missing.append("the test guest is not built (make guest)") }
        if !Lanes.executable(Lanes.kiln) { missing.append("kiln is not built") }
        return Comment(rawValue: "third-party clients skipped: " + missing.joined(separator: "; "))
    }()

    /// Whether a client's virtual environment is there; if not, why:
    /// `make client-test-deps` leaves the reason (PyPI unreachable, a failed
    /// install) beside where it would be.
    static func installed(_ client: String) -> Bool { laneReady && Lanes.executable(python(client)) }
    static func skipReason(_ client: String) -> Comment {
        if !laneReady { return laneSkipReason }
        let reason = ChildProcess.read(venvs + "/" + client + ".failed")
        return Comment(
            rawValue: "\(client) skipped: "
                + (reason.isEmpty ? "its virtual environment is not installed (make client-test-deps)" : reason))
    }

    /// Runs the client's driver and checks the record it keeps.
    static func runLifecycle(_ client: String) throws {
        let driver = drivers.first { $0.0 == client }!.1
        let out = Lanes.packageRoot + "/integration/out/clients/" + client
        // The client's run folder, named here: whatever it leaves running
        // (a driver past its deadline leaves its VMM) is found by it and ended.
        let scratch = "/tmp/kcl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        defer {
            endProcesses(mentioning: scratch)
            Lanes.removeTree(scratch)
        }
        let run = try ChildProcess.run(
            [
                python(client), folder + "/" + driver, "--kiln", Lanes.kiln, "--jailer", Lanes.jailer,
                "--guest", Lanes.testGuest, "--out", out, "--scratch", scratch,
            ],
            seconds: 300)
        #expect(run.status == 0, "\(client) driver failed:\n\(run.stdout)\n\(run.stderr)")
        let steps = ChildProcess.read(out + "/steps.txt")
        #expect(
            steps.contains("stop") && steps.contains("API exchanges: ok") && !steps.contains("FAILED"),
            "steps: \(steps)")
        let transcript = ChildProcess.read(out + "/transcript.txt")
        #expect(transcript.contains("PATCH /vm {\"state\": \"Paused\"}\n  -> 204"), "transcript: \(transcript)")
        #expect(transcript.contains("PATCH /vm {\"state\": \"Resumed\"}\n  -> 204"), "transcript: \(transcript)")
        if vsockClients.contains(client) {
            // The client's own vsock set-up, and bytes both ways through it.
            #expect(
                transcript.contains("PUT /vsock") && steps.contains("vsock echo: ok"),
                "steps: \(steps)\ntranscript: \(transcript)")
        }
    }

    /// The clients whose runs turn vsock on (bandsox's is off: its driver
    /// says why; microheart has none).
    static let vsockClients: Set<String> = ["firecracker-python"]
}

/// SIGKILLs every process whose command line names `folder` (only this
/// test's clients use it: the name is random).
func endProcesses(mentioning folder: String) {
    for name in Lanes.list("/proc") {
        guard let pid = Int32(name), pid != getpid() else { continue }
        if ChildProcess.read("/proc/\(name)/cmdline").contains(folder) { kill(pid, SIGKILL) }
    }
}

/// One test per client, each skipped alone (saying why) when its install is missing.
@Suite(.serialized)
struct ThirdPartyClientTests {
    @Test(
        .enabled(
            if: ThirdPartyClients.installed("firecracker-python"), ThirdPartyClients.skipReason("firecracker-python")))
    func firecrackerPythonLifecycle() throws { try ThirdPartyClients.runLifecycle("firecracker-python") }

    @Test(.enabled(if: ThirdPartyClients.installed("microheart"), ThirdPartyClients.skipReason("microheart")))
    func microheartLifecycle() throws { try ThirdPartyClients.runLifecycle("microheart") }

    @Test(.enabled(if: ThirdPartyClients.installed("bandsox"), ThirdPartyClients.skipReason("bandsox")))
    func bandsoxLifecycle() throws { try ThirdPartyClients.runLifecycle("bandsox") }
}
