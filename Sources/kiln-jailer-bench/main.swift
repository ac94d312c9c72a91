import CKiln
import KilnJail
import KilnSeccomp
import KilnSystem

// kiln-jailer-bench: the time from jailer start to the exec'd probe's first
// instruction of `main`, over sequential and concurrent launches.
//
//   kiln-jailer-bench [--runs N] [--concurrent N] [--no-cgroups] [--new-net-ns]
//                     [--jailer PATH] [--probe PATH]
//
// Two figures per launch, both CLOCK_MONOTONIC:
//   spawn -> probe main     from posix_spawn of kiln-jailer to the probe's main:
//                           both static binaries' start-up, all twelve steps, exec
//   jailer main -> probe    from the jailer's own main (its --start-time-us) to
//                           the probe's main: what the jailer's steps cost
// Each jail is removed after its run (not timed). Needs root.
#if canImport(Glibc)
    import Glibc
#endif

let arguments = Array(CommandLine.arguments.dropFirst())
func value(_ flag: String) -> String? {
    arguments.firstIndex(of: flag).flatMap { $0 + 1 < arguments.count ? arguments[$0 + 1] : nil }
}

let buildFolder: String = {
    var buffer = [CChar](repeating: 0, count: 4097)
    let length = readlink("/proc/self/exe", &buffer, 4096)
    let path = String(decoding: buffer[0..<max(length, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
}()
let jailer = value("--jailer") ?? buildFolder + "/kiln-jailer"
let probe = value("--probe") ?? buildFolder + "/kiln-jail-probe"
let sequentialRuns = value("--runs").flatMap { Int($0) } ?? 1000
let concurrentRuns = value("--concurrent").flatMap { Int($0) } ?? 100
let useCgroups = !arguments.contains("--no-cgroups")
let newNetNamespace = arguments.contains("--new-net-ns")

guard getuid() == 0 else { print("kiln-jailer-bench: needs root"); exit(2) }
let unique = "\(getpid())"
let sandbox = "/tmp/kiln-jailer-bench-\(unique)"
let base = sandbox + "/jails"
let bundlePath = sandbox + "/bench.kbundle"
let parentCgroup = "kiln-bench-\(unique)"
_ = mkdir(sandbox, 0o755)

/// A "jailer" program of a realistic shape: the architecture check, then a
/// linear scan over 60 refused system calls before allowing the rest.
func benchBundle() throws -> SeccompBundle {
    let returns = BPF.ret | BPF.k
    var program = [
        BPFInstruction(code: BPF.ld | BPF.w | BPF.abs, k: SeccompData.architectureOffset),
        BPFInstruction(code: BPF.jmp | BPF.jeq | BPF.k, jt: 1, jf: 0, k: 0xC000_003E),
        BPFInstruction(code: returns, k: SeccompAction.killProcess.rawValue),
        BPFInstruction(code: BPF.ld | BPF.w | BPF.abs, k: SeccompData.syscallNumberOffset),
    ]
    for number in UInt32(400)..<460 {
        program.append(BPFInstruction(code: BPF.jmp | BPF.jeq | BPF.k, jt: 0, jf: 1, k: number))
        program.append(BPFInstruction(code: returns, k: SeccompAction.errno(UInt16(EPERM)).rawValue))
    }
    program.append(BPFInstruction(code: returns, k: SeccompAction.allow.rawValue))
    return try SeccompBundle(architecture: 0xC000_003E, programs: [SeccompBundle.jailerRole: program])
}

do { try FileSystem.writeAtomically(bundlePath, try benchBundle().encoded()) } catch {
    print("kiln-jailer-bench: \(error)"); exit(1)
}

struct Launch {
    let id: String
    let pid: pid_t
    let output: Int32
    let spawnedAt: UInt64
}

func launch(_ index: Int) throws -> Launch {
    let id = "bench-\(index)"
    var launchArguments = [
        jailer, "--id", id, "--exec-file", probe, "--uid", "64123", "--gid", "64123",
        "--chroot-base-dir", base, "--seccomp-bundle", bundlePath, "--parent-cgroup", parentCgroup,
    ]
    if useCgroups {
        launchArguments += [
            "--cgroup", "pids.max=64", "--cgroup", "memory.limit_in_bytes=134217728", "--cgroup",
            "cpu.cfs_quota_us=100000",
        ]
    }
    if newNetNamespace { launchArguments.append("--new-net-ns") }
    launchArguments += ["--", "--bench"]
    var pipeEnds: [Int32] = [0, 0]
    try check("pipe2") { ckiln_pipe_cloexec(&pipeEnds) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 1)
    let argv = launchArguments.map { strdup($0) } + [nil]
    defer { for argument in argv { free(argument) } }
    var pid: pid_t = 0
    let spawnedAt = MonotonicClock.nanoseconds()
    let result = posix_spawn(&pid, jailer, &actions, nil, argv, nil)
    close(pipeEnds[1])
    guard result == 0 else { throw SystemError("posix_spawn", subject: jailer, errno: result) }
    return Launch(id: id, pid: pid, output: pipeEnds[0], spawnedAt: spawnedAt)
}

/// Reads the probe's line, reaps the jailer (now the probe), removes the jail.
func finish(_ launch: Launch) throws -> (spawnToProbe: UInt64, jailerToProbe: UInt64) {
    let text = String(
        decoding: try FileDescriptor(rawValue: launch.output).closeAfter { try $0.readAll(limit: 4096) }, as: UTF8.self)
    var status: Int32 = 0
    _ = waitpid(launch.pid, &status, 0)
    var cleanup = CleanupOptions(id: launch.id, execFile: probe)
    cleanup.chrootBaseDir = base
    cleanup.parentCgroup = parentCgroup
    try JailCleanup.run(cleanup)
    let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
    guard status == 0, fields.count == 4, let probeStart = UInt64(fields[1]),
        let jailerStartMicroseconds = UInt64(fields[3])
    else {
        throw SystemError("launch \(launch.id) (status \(status)) printed \"\(text)\"", errno: EPROTO)
    }
    return (probeStart - launch.spawnedAt, probeStart - jailerStartMicroseconds * 1000)
}

func summary(_ label: String, _ samples: [UInt64]) {
    let sorted = samples.sorted()
    func at(_ fraction: Double) -> String {
        let index = min(sorted.count - 1, Int((Double(sorted.count - 1) * fraction).rounded(.up)))
        return String(format3(Double(sorted[index]) / 1e6))
    }
    print("  \(label): median \(at(0.5)) ms, p99 \(at(0.99)) ms, min \(at(0)) ms, max \(at(1)) ms (n=\(sorted.count))")
}

func format3(_ value: Double) -> String {
    let thousandths = Int((value * 1000).rounded())
    let fraction = String(thousandths % 1000)
    return "\(thousandths / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
}

var exitCode: Int32 = 0
do {
    print("kiln-jailer-bench: \(jailer)")
    print(
        "  probe \(probe); cgroups \(useCgroups ? "pids+memory+cpu (v1)" : "none"); network namespace \(newNetNamespace ? "new" : "caller's")"
    )
    var spawnToProbe: [UInt64] = [], jailerToProbe: [UInt64] = []
    for index in 0..<sequentialRuns {
        let result = try finish(try launch(index))
        spawnToProbe.append(result.spawnToProbe)
        jailerToProbe.append(result.jailerToProbe)
    }
    print("sequential, \(sequentialRuns) runs:")
    summary("spawn -> probe main      ", spawnToProbe)
    summary("jailer main -> probe main", jailerToProbe)

    let burstStart = MonotonicClock.nanoseconds()
    let launches = try (0..<concurrentRuns).map { try launch(sequentialRuns + $0) }
    let results = try launches.map(finish)
    let lastProbe = zip(launches, results).map { $0.spawnedAt + $1.spawnToProbe }.max() ?? burstStart
    print(
        "concurrent, \(concurrentRuns) launched at once (the last probe started \(format3(Double(lastProbe - burstStart) / 1e6)) ms after the first spawn):"
    )
    summary("spawn -> probe main      ", results.map(\.spawnToProbe))
    summary("jailer main -> probe main", results.map(\.jailerToProbe))
} catch {
    print("kiln-jailer-bench: \(error)")
    exitCode = 1
}
// The shared parents (the jails themselves are gone).
let layout = CgroupLayout(mountInfo: (try? FileSystem.readText("/proc/self/mountinfo")) ?? "")
for mount in layout.allMounts { _ = rmdir(mount + "/" + parentCgroup) }
_ = unlink(bundlePath)
_ = rmdir(base)
_ = rmdir(sandbox)
exit(exitCode)
