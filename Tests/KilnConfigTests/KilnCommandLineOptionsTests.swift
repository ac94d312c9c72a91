import Testing

@testable import KilnConfig

@Test func firecrackerFlagsParse() throws {
    let options = try KilnCommandLineOptions(arguments: [
        "--no-api", "--no-seccomp", "--config-file", "vm.json", "--id", "vm-1", "--level", "debug",
        "--log-path", "/tmp/log", "--boot-timer",
    ])
    #expect(options.noAPI && options.noSeccomp && options.bootTimer)
    #expect(options.configFile == "vm.json")
    #expect(options.id == "vm-1")
    #expect(options.level == .debug)
    #expect(options.logPath == "/tmp/log")
}

/// Every flag Firecracker's VMM takes is either served or refused at once,
/// naming the feature; none is accepted and then ignored.
@Test func everyFirecrackerFlagIsHandled() throws {
    let options = try KilnCommandLineOptions(arguments: [
        "--api-sock", "/tmp/a.sock", "--id", "vm-2", "--seccomp-filter", "/f", "--start-time-us", "1",
        "--start-time-cpu-us", "2", "--parent-cpu-time-us", "3", "--config-file", "vm.json", "--log-path", "/l",
        "--level", "Warn", "--show-level", "--metrics-path", "/m", "--boot-timer", "--http-api-max-payload-size",
        "4096",
    ])
    #expect(options.apiSocketPath == "/tmp/a.sock" && options.id == "vm-2" && options.seccompFilter == "/f")
    #expect(
        options.jailerStartMicroseconds == 1 && options.jailerStartCPUMicroseconds == 2
            && options.parentCPUMicroseconds == 3)
    #expect(options.configFile == "vm.json" && options.logPath == "/l" && options.level == .warning)
    #expect(options.metricsPath == "/m" && options.bootTimer && options.httpAPIMaxPayloadSize == 4096)
    #expect(try KilnCommandLineOptions(arguments: ["--no-api", "--no-seccomp"]).noAPI)
    // Accepted (microheart always passes it); kiln logs that the devices stay virtio-mmio.
    #expect(try KilnCommandLineOptions(arguments: ["--enable-pci"]).enablePCI)
    #expect(try !KilnCommandLineOptions(arguments: []).enablePCI)
    // --version and --help win wherever they stand, as in Firecracker.
    #expect(try KilnCommandLineOptions(arguments: ["--bogus", "--version"]).version)
    #expect(try KilnCommandLineOptions(arguments: ["--id", "x", "-h"]).help)
    let refused: [([String], String)] = [
        (["--metadata", "m.json"], "--metadata: Kiln does not implement the microVM metadata service (MMDS) yet"),
        (
            ["--mmds-size-limit", "100"],
            "--mmds-size-limit: Kiln does not implement the microVM metadata service (MMDS)"
        ),
        (["--snapshot-version"], "--snapshot-version: Kiln does not implement snapshots"),
        (["--describe-snapshot", "s"], "--describe-snapshot: Kiln does not implement snapshots"),
        (["--module", "vmm"], "--module: Kiln does not implement a log filter by source module"),
        (["--show-log-origin"], "--show-log-origin: Kiln does not implement log lines with their source file"),
    ]
    for (arguments, message) in refused {
        do {
            _ = try KilnCommandLineOptions(arguments: arguments)
            Issue.record("\(arguments) was accepted")
        } catch {
            #expect("\(error)".hasPrefix(message), "\(arguments): \(error)")
        }
    }
}

/// Firecracker's parser: the value is the next argument; `--flag=VALUE`, a
/// flag given twice and a value that starts with `--` are refused; what
/// follows `--` is ignored.
@Test func valuesAreParsedAsFirecrackerParsesThem() throws {
    expectRefusal(
        ["--api-sock=/s"], .valueAfterEquals(argument: "--api-sock=/s", flag: "--api-sock"),
        #""--api-sock=/s": write --api-sock VALUE; like Firecracker, kiln takes a flag's value as the next argument"#)
    expectRefusal(["--id", "a", "--id", "b"], .repeated(flag: "--id"), "--id given more than once")
    expectRefusal(["--log-path", "--boot-timer"], .missingValue(flag: "--log-path"), "--log-path needs a value")
    expectRefusal(
        ["stray"], .unexpectedArgument("stray"), "unexpected argument \"stray\" (every value follows its flag)")
    let extra = try KilnCommandLineOptions(arguments: ["--no-seccomp", "--", "--bogus", "x"])
    #expect(extra.noSeccomp)
}

@Test func badFlagsAreRefusedWithTheReason() {
    expectRefusal(["--bogus"], .unknownArgument("--bogus"), "unknown argument \"--bogus\"")
    expectRefusal(["--config-file"], .missingValue(flag: "--config-file"), "--config-file needs a value")
    expectRefusal(
        ["--id", "has space"], .badID("has space"),
        "--id must be 1 to 64 characters of A-Z, a-z, 0-9 and -, got \"has space\"")
    expectRefusal(
        ["--level", "loud"], .badLevel("loud"), "--level expects Off, Error, Warn, Info, Debug or Trace, got \"loud\"")
    expectRefusal(
        ["--vcpus", "33"], .notAnInteger(flag: "--vcpus", range: MachineConfig.vcpuRange, got: "33"),
        "--vcpus expects an integer from 1 to 32, got \"33\"")
}

/// Refuses `arguments` for `reason`, with `message` as kiln prints it.
private func expectRefusal(
    _ arguments: [String], _ reason: KilnCommandLineOptions.UsageError, _ message: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let error = #expect(throws: KilnCommandLineOptions.UsageError.self, sourceLocation: sourceLocation) {
        try KilnCommandLineOptions(arguments: arguments)
    }
    #expect(error == reason, sourceLocation: sourceLocation)
    #expect(error?.description == message, sourceLocation: sourceLocation)
}

@Test func contradictoryOrMissingFlagsAreRefusedWithTheReason() throws {
    let cases: [([String], KilnCommandLineOptions.UsageError, String)] = [
        (
            ["--no-api", "--no-seccomp", "--api-sock", "s", "--kernel", "k"], .contradiction("--no-api", "--api-sock"),
            "--no-api and --api-sock"
        ),
        (
            ["--no-api", "--no-seccomp", "--seccomp-filter", "f", "--kernel", "k"],
            .contradiction("--seccomp-filter", "--no-seccomp"), "--seccomp-filter and --no-seccomp"
        ),
        (["--no-seccomp", "--kernel", "k"], .directBootNeedsNoAPI, "need --no-api"),
        (["--no-api", "--no-seccomp"], .noAPIWithoutBootSource, "--no-api needs --config-file or --kernel"),
    ]
    for (arguments, reason, message) in cases {
        let options = try KilnCommandLineOptions(arguments: arguments)
        do {
            _ = try options.configuration(configFileBytes: nil)
            Issue.record("\(arguments) was accepted")
        } catch {
            #expect(error as? KilnCommandLineOptions.UsageError == reason, "\(arguments): \(error)")
            #expect("\(error)".contains(message), "\(arguments): \(error)")
        }
    }
}

/// Neither --seccomp-filter nor --no-seccomp: kiln runs under its built-in bundle.
@Test func noSeccompFlagIsAccepted() throws {
    let options = try KilnCommandLineOptions(arguments: ["--no-api", "--kernel", "k"])
    #expect(options.seccompFilter == nil && !options.noSeccomp)
    #expect(try options.configuration(configFileBytes: nil) != nil)
}

@Test func theAPIProvidesTheConfigurationUnlessNoAPI() throws {
    let api = try KilnCommandLineOptions(arguments: ["--api-sock", "/tmp/k.sock", "--seccomp-filter", "b"])
    #expect(try api.configuration(configFileBytes: nil) == nil)
    #expect(api.apiSocketPath == "/tmp/k.sock")
    let implicit = try KilnCommandLineOptions(arguments: ["--no-seccomp"])
    #expect(implicit.apiSocketPath == KilnCommandLineOptions.defaultAPISocket)
    #expect(try KilnCommandLineOptions(arguments: ["--no-api"]).apiSocketPath == nil)
    let sized = try KilnCommandLineOptions(arguments: ["--http-api-max-payload-size", "4096"])
    #expect(sized.httpAPIMaxPayloadSize == 4096)
    #expect(throws: KilnCommandLineOptions.UsageError.self) {
        try KilnCommandLineOptions(arguments: ["--http-api-max-payload-size", "0"])
    }
}

@Test func directBootBuildsTheSameModel() throws {
    let options = try KilnCommandLineOptions(arguments: [
        "--no-api", "--no-seccomp", "--kernel", "vmlinux", "--initrd", "initrd", "--cmdline", "quiet", "--vcpus", "2",
        "--mem", "256",
    ])
    let config = try #require(try options.configuration(configFileBytes: nil))
    #expect(config.bootSource == BootSourceConfig(kernelImagePath: "vmlinux", initrdPath: "initrd", bootArgs: "quiet"))
    #expect(config.machine.vcpuCount == 2 && config.machine.memSizeMiB == 256)
    let mixed = try KilnCommandLineOptions(arguments: ["--no-api", "--no-seccomp", "--kernel", "k"])
    #expect(throws: KilnCommandLineOptions.UsageError.directBootWithConfigFile) {
        try mixed.configuration(configFileBytes: Array("{}".utf8))
    }
}

@Test func jailerHandoffFlags() throws {
    let options = try KilnCommandLineOptions(arguments: [
        "--id", "vm-7", "--seccomp-filter", "/seccomp.kbundle", "--start-time-us", "123456789",
        "--start-time-cpu-us", "4321", "--no-api", "--kernel", "k",
    ])
    #expect(options.seccompFilter == "/seccomp.kbundle")
    #expect(options.jailerStartMicroseconds == 123_456_789)
    #expect(options.jailerStartCPUMicroseconds == 4321)
    _ = try options.configuration(configFileBytes: nil)

    for bad in ["-1", "", "12x", "99999999999999999999999"] {
        #expect(throws: KilnCommandLineOptions.UsageError.self) {
            try KilnCommandLineOptions(arguments: ["--start-time-us", bad])
        }
        #expect(throws: KilnCommandLineOptions.UsageError.self) {
            try KilnCommandLineOptions(arguments: ["--start-time-cpu-us", bad])
        }
    }
}
