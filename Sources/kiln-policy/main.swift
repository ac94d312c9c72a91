import KilnPolicy
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

// kiln-policy: compile, audit and check the seccomp policies.
// Argument parsing and wiring only; the work is in KilnPolicy.

let usage = """
    usage:
      kiln-policy compile --policies DIR --output FILE
          Compile every role of DIR into one seccomp bundle (written atomically).
      kiln-policy embed --policies DIR --output FILE.c
          Compile as above and write the bundle as the C source built into kiln
          and kiln-jailer (`make policies` regenerates the committed one).
      kiln-policy audit --policies DIR [--format text|json|markdown] [--compare FILE]
          Report each role's allowed system calls, conditions and findings;
          with --compare, set each role beside a Firecracker JSON filter;
      markdown: one table row per role, as SECURITY.md shows them.
      kiln-policy check --policies DIR [--fail-on low|medium|high|critical]
          Exit 1 when a finding at or above the severity (default: high) exists.
      kiln-policy trace [--policies DIR] [--installed DIR] [--json FILE] -- COMMAND [ARGUMENTS...]
          Run COMMAND (kiln, kiln-jailer, or a script that runs them) with every
          role of DIR (default: policies) it installs switched to recording
          (SECCOMP_RET_TRACE under ptrace); report per role the rules that
          allowed nothing, the calls the role would have refused and the
          argument values of calls allowed without conditions; and what each
          program that installs the launch role (kiln) called between its exec
          and that filter, jailed and unjailed, checked against the jailer
          role (its start-up, before kiln's first line); with --json,
          write the report there too. --installed names the policies the
          binaries were built with, when not DIR (trace a changed policy
          before rebuilding). Exit 1 if a role would have refused a
          call, else the command's exit status.
      kiln-policy --help
    """

func fail(_ message: String, status: Int32 = 2) -> Never {
    FileDescriptor.standardError.write(message: "kiln-policy: \(message)\n")
    exit(status)
}

let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.isEmpty { fail("missing command (see kiln-policy --help)") }
// A traced command's own --help is the command's.
let ownArguments = arguments.prefix { $0 != "--" }
if ownArguments.contains("--help") || ownArguments.contains("-h") || arguments == ["help"] {
    print(usage)
    exit(0)
}

do {
    let command = try CommandLineOptions.parse(arguments)
    switch command {
    case let .compile(policies, output):
        let bundle = try PolicyBundleBuilder.compile(directory: policies, output: output)
        for (role, instructions) in bundle.programs {
            print("\(role): \(instructions.count) BPF instructions")
        }
        print("wrote \(output)")
    case let .embed(policies, output):
        let bundle = try PolicyBundleBuilder.embed(directory: policies, output: output)
        print("wrote \(output) (\(bundle.encoded().count) bytes of bundle)")
    case let .audit(policies, format, compare):
        let report = try PolicyAuditor.audit(
            policies: try PolicyLoader.load(directory: policies),
            firecracker: try compare.map(FirecrackerFilter.load))
        switch format {
        case .text: print(report.text(), terminator: "")
        case .json: print(report.json(), terminator: "")
        case .markdown: print(report.markdownTable(), terminator: "")
        }
    case let .check(policies, threshold):
        let report = try PolicyAuditor.audit(policies: try PolicyLoader.load(directory: policies), firecracker: nil)
        let failing = report.findings(atLeast: threshold)
        for (role, finding) in failing { print("\(role): \(finding)") }
        if !failing.isEmpty {
            fail("\(failing.count) finding(s) at or above \(threshold.rawValue)", status: 1)
        }
        print("no findings at or above \(threshold.rawValue)")
    case let .trace(policies, installed, json, traced):
        let bundle = try RecordingBundle(
            policies: try PolicyLoader.load(directory: policies),
            installed: try installed.map(PolicyLoader.load))
        let outcome = try SyscallTracer(bundle: bundle).run(traced)
        let report = TraceReport(recorder: outcome.recorder, status: outcome.status)
        if let json { try FileSystem.writeAtomically(json, Array(report.json().utf8)) }
        print(report.text(), terminator: "")
        if !report.disagreements.isEmpty {
            fail("the compiled filters and the policies disagree on \(report.disagreements.count) call(s)", status: 1)
        }
        if report.deniedCount > 0 { fail("\(report.deniedCount) call(s) the roles do not allow", status: 1) }
        exit(outcome.status)
    }
} catch let error as CommandLineOptions.UsageError {
    fail("\(error) (see kiln-policy --help)")
} catch {
    fail("\(error)", status: 1)
}
