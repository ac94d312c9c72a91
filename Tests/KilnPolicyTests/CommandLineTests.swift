import KilnSeccomp
import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The kiln-policy executable: exit codes and messages for good and bad use.
@Suite(
    .enabled(
        if: BuiltProducts.path(of: "kiln-policy") != nil,
        "kiln-policy is not built beside the tests: run swift build first"))
struct CommandLineTests {
    struct Result {
        var status: Int32
        var output: String
        var errors: String
    }

    /// Runs kiln-policy with `arguments`, from the package root.
    static func run(_ arguments: [String]) throws -> Result {
        let binary = BuiltProducts.path(of: "kiln-policy")!
        var outputPipe: [Int32] = [0, 0], errorPipe: [Int32] = [0, 0]
        try check("pipe") { pipe(&outputPipe) }
        try check("pipe") { pipe(&errorPipe) }
        let argv = ([binary] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        let root = PolicyTestSupport.shippedPoliciesDirectory.dropLast("/policies".count)
        let pid = try String(root).withCString { directory in
            try check("fork") { () -> Int32 in
                let pid = fork()
                if pid == 0 {
                    dup2(outputPipe[1], 1)
                    dup2(errorPipe[1], 2)
                    if chdir(directory) != 0 { _exit(126) }
                    execv(binary, argv)
                    _exit(127)
                }
                return pid
            }
        }
        close(outputPipe[1])
        close(errorPipe[1])
        let output = try FileDescriptor(rawValue: outputPipe[0]).readAll()
        let errors = try FileDescriptor(rawValue: errorPipe[0]).readAll()
        close(outputPipe[0])
        close(errorPipe[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        return Result(
            status: (status >> 8) & 0xFF, output: String(decoding: output, as: UTF8.self),
            errors: String(decoding: errors, as: UTF8.self))
    }

    @Test(
        arguments: [
            ([], "kiln-policy: missing command (see kiln-policy --help)\n"),
            (["frob"], "kiln-policy: unknown command 'frob' (see kiln-policy --help)\n"),
            (
                ["audit", "--policy", "policies"],
                "kiln-policy: unknown option '--policy' for audit (see kiln-policy --help)\n"
            ),
            (["audit", "--policies"], "kiln-policy: --policies needs a value (see kiln-policy --help)\n"),
            (
                ["audit", "--policies", "policies", "--format", "xml"],
                "kiln-policy: --format must be text, json or markdown, not 'xml' (see kiln-policy --help)\n"
            ),
            (["compile", "--policies", "policies"], "kiln-policy: compile needs --output (see kiln-policy --help)\n"),
            (
                ["check", "--policies", "policies", "--fail-on", "info"],
                "kiln-policy: --fail-on must be low, medium, high or critical, not 'info' (see kiln-policy --help)\n"
            ),
            (
                ["check", "--policies", "a", "--policies", "b"],
                "kiln-policy: --policies given twice (see kiln-policy --help)\n"
            ),
            (["trace", "kiln"], "kiln-policy: trace needs the command after -- (see kiln-policy --help)\n"),
            (["trace", "--"], "kiln-policy: trace needs a command after -- (see kiln-policy --help)\n"),
        ] as [([String], String)])
    func badUsageIsAnErrorWithExitStatus2(_ arguments: [String], _ message: String) throws {
        let result = try Self.run(arguments)
        #expect(result.status == 2)
        #expect(result.errors == message)
        #expect(result.output.isEmpty)
    }

    /// A folder a user got wrong: the error names the file (and the line of
    /// an @include), and a FIFO among the files is refused, not waited on.
    @Test func aMissingIncludeOrAFIFONamesTheFileAndNeverWaits() throws {
        let binary = try #require(BuiltProducts.path(of: "kiln-policy"))
        try PolicyTestSupport.withPolicyFolder([
            "vcpu.policy": "@default trap\n# the role\n@include \"shared.policy\"\n"
        ]) { folder in
            let output = folder + "/out.kbundle"
            let missing = try ChildProcess.run(
                [binary, "compile", "--policies", folder, "--output", output], seconds: 20)
            #expect(missing.status == 1, "\(missing.stderr)")
            #expect(
                missing.stderr.contains("vcpu.policy:3:10: @include \"shared.policy\": ")
                    && missing.stderr.contains("shared.policy does not exist"), "\(missing.stderr)")
            try check("mkfifo") { mkfifo(folder + "/shared.policy", 0o600) }
            let fifo = try ChildProcess.run(
                [binary, "compile", "--policies", folder, "--output", output], seconds: 20)
            #expect(fifo.status == 1, "exit 124 is a wait on the FIFO: \(fifo.stderr)")
            #expect(fifo.stderr.contains("shared.policy is not a regular file"), "\(fifo.stderr)")
            #expect(!FileSystem.exists(output))
            let compared = try ChildProcess.run(
                [
                    binary, "audit", "--policies", PolicyTestSupport.shippedPoliciesDirectory, "--compare",
                    folder + "/shared.policy",
                ], seconds: 20)
            #expect(compared.status == 1, "exit 124 is a wait on the FIFO: \(compared.stderr)")
            #expect(compared.stderr.contains("shared.policy is not a regular file"), "\(compared.stderr)")
        }
    }

    @Test func checkFailsOnFindingsAtTheThreshold() throws {
        let files = [
            "vmm.policy": "@default trap\nioctl # any request\n", "api.policy": "@default trap\nread # r\n",
            "vcpu.policy": "@default trap\nread # r\n", "jailer.policy": "@default kill-process\nexecve # exec\n",
        ]
        try PolicyTestSupport.withPolicyFolder(files) { directory in
            let high = try Self.run(["check", "--policies", directory, "--fail-on", "high"])
            #expect(high.status == 1)
            #expect(high.output.contains("vmm: [high] ioctl: allowed with no argument conditions (vmm.policy:2:1)"))
            #expect(high.errors == "kiln-policy: 2 finding(s) at or above high\n") // vmm and the jailer's union
            let critical = try Self.run(["check", "--policies", directory, "--fail-on", "critical"])
            #expect(critical.status == 0)
        }
    }

    @Test func helpAndTheShippedPolicies() throws {
        let help = try Self.run(["--help"])
        #expect(help.status == 0 && help.output.hasPrefix("usage:"))
        let check = try Self.run(["check", "--policies", "policies", "--fail-on", "low"])
        #expect(check.status == 0)
        #expect(check.output == "no findings at or above low\n")
        let json = try Self.run(["audit", "--policies", "policies", "--format", "json"])
        #expect(json.status == 0 && json.output.hasPrefix("{\n  \"roles\": {"))
        let bundlePath = "/tmp/kiln-policy-cli-\(getpid()).kbundle"
        defer { unlink(bundlePath) }
        let compile = try Self.run(["compile", "--policies", "policies", "--output", bundlePath])
        #expect(compile.status == 0 && compile.output.hasSuffix("wrote \(bundlePath)\n"))
        #expect(
            try SeccompBundle(decoding: try FileSystem.readFile(bundlePath)).roles == [
                "api", "jailer", "launch", "vcpu", "vmm",
            ])
        let compared = try Self.run([
            "audit", "--policies", "policies", "--compare", "policies/reference/firecracker-seccomp-x86_64.json",
        ])
        #expect(compared.status == 0, "\(compared.errors)")
        #expect(compared.output.contains("against Firecracker's vcpu filter: Kiln "), "\(compared.output)")
        let missing = try Self.run(["audit", "--policies", "/nonexistent"])
        #expect(missing.status == 1)
        #expect(missing.errors == "kiln-policy: opendir /nonexistent: No such file or directory (ENOENT)\n")
    }

    /// The README's figure for system calls allowed per role (vmm / api /
    /// vcpu, and Firecracker's) is what `audit --compare` counts today.
    @Test func theReadmesPerRoleCountsAreTheAuditsCounts() throws {
        let compared = try Self.run([
            "audit", "--policies", "policies", "--compare", "policies/reference/firecracker-seccomp-x86_64.json",
        ])
        #expect(compared.status == 0, "\(compared.errors)")
        func counts(_ role: String) -> (kiln: Substring, firecracker: Substring)? {
            guard
                let line = compared.output.split(separator: "\n").first(where: {
                    $0.contains("against Firecracker's \(role) filter: ")
                })
            else {
                return nil
            }
            let words = line.split(separator: " ")
            guard let kiln = words.firstIndex(of: "Kiln"), let firecracker = words.firstIndex(of: "Firecracker") else {
                return nil
            }
            return (words[kiln + 1].filter(\.isNumber), words[firecracker + 1].filter(\.isNumber))
        }
        let roles = ["vmm", "api", "vcpu"].compactMap(counts)
        try #require(roles.count == 3, "\(compared.output)")
        let readme = try FileSystem.readText(
            PolicyTestSupport.shippedPoliciesDirectory.dropLast("policies".count) + "README.md")
        let row =
            readme.split(separator: "\n").first { $0.contains("system calls allowed per role (vmm / api / vcpu)") }
            ?? ""
        let kiln = roles.map(\.kiln).joined(separator: " / "),
            firecracker = roles.map(\.firecracker).joined(separator: " / ")
        #expect(
            row.contains("| \(kiln) with") && row.contains("Firecracker: \(firecracker) |"),
            "README.md's row should read \(kiln) and Firecracker: \(firecracker): \(row)")
    }
}
