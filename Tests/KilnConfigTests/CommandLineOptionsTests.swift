import Testing
@testable import KilnConfig

@Test func firecrackerFlagsParse() throws {
    let options = try CommandLineOptions(arguments: [
        "--no-api", "--no-seccomp", "--config-file", "vm.json", "--id", "vm-1", "--level", "debug",
        "--log-path=/tmp/log", "--boot-timer",
    ])
    #expect(options.noAPI && options.noSeccomp && options.bootTimer)
    #expect(options.configFile == "vm.json")
    #expect(options.id == "vm-1")
    #expect(options.level == .debug)
    #expect(options.logPath == "/tmp/log")
}

@Test func badFlagsAreRefusedWithTheReason() {
    #expect(throws: CommandLineOptions.UsageError("unknown argument \"--bogus\"")) {
        try CommandLineOptions(arguments: ["--bogus"])
    }
    #expect(throws: CommandLineOptions.UsageError("--config-file needs a value")) {
        try CommandLineOptions(arguments: ["--config-file"])
    }
    #expect(throws: CommandLineOptions.UsageError.self) { try CommandLineOptions(arguments: ["--id", "has space"]) }
    #expect(throws: CommandLineOptions.UsageError.self) { try CommandLineOptions(arguments: ["--level", "loud"]) }
    #expect(throws: CommandLineOptions.UsageError.self) { try CommandLineOptions(arguments: ["--vcpus", "33"]) }
}

@Test func contradictoryOrMissingFlagsAreRefusedWithTheReason() throws {
    let cases: [([String], String)] = [
        (["--no-api", "--no-seccomp", "--api-sock", "s", "--kernel", "k"], "--no-api and --api-sock"),
        (["--no-api", "--no-seccomp", "--seccomp-filter", "f", "--kernel", "k"], "--seccomp-filter and --no-seccomp"),
        (["--no-seccomp", "--kernel", "k"], "need --no-api"),
        (["--no-api", "--no-seccomp"], "--no-api needs --config-file or --kernel"),
    ]
    for (arguments, reason) in cases {
        let options = try CommandLineOptions(arguments: arguments)
        do {
            _ = try options.configuration(configFileBytes: nil)
            Issue.record("\(arguments) was accepted")
        } catch {
            #expect("\(error)".contains(reason), "\(arguments): \(error)")
        }
    }
}

/// Neither --seccomp-filter nor --no-seccomp: kiln runs under its built-in bundle.
@Test func noSeccompFlagIsAccepted() throws {
    let options = try CommandLineOptions(arguments: ["--no-api", "--kernel", "k"])
    #expect(options.seccompFilter == nil && !options.noSeccomp)
    #expect(try options.configuration(configFileBytes: nil) != nil)
}

@Test func theAPIProvidesTheConfigurationUnlessNoAPI() throws {
    let api = try CommandLineOptions(arguments: ["--api-sock", "/tmp/k.sock", "--seccomp-filter", "b"])
    #expect(try api.configuration(configFileBytes: nil) == nil)
    #expect(api.apiSocketPath == "/tmp/k.sock")
    let implicit = try CommandLineOptions(arguments: ["--no-seccomp"])
    #expect(implicit.apiSocketPath == CommandLineOptions.defaultAPISocket)
    #expect(try CommandLineOptions(arguments: ["--no-api"]).apiSocketPath == nil)
    let sized = try CommandLineOptions(arguments: ["--http-api-max-payload-size", "4096"])
    #expect(sized.httpAPIMaxPayloadSize == 4096)
    #expect(throws: CommandLineOptions.UsageError.self) {
        try CommandLineOptions(arguments: ["--http-api-max-payload-size", "0"])
    }
}

@Test func directBootBuildsTheSameModel() throws {
    let options = try CommandLineOptions(arguments: [
        "--no-api", "--no-seccomp", "--kernel", "vmlinux", "--initrd", "initrd", "--cmdline", "quiet", "--vcpus", "2", "--mem", "256",
    ])
    let config = try #require(try options.configuration(configFileBytes: nil))
    #expect(config.bootSource == BootSource(kernelImagePath: "vmlinux", initrdPath: "initrd", bootArgs: "quiet"))
    #expect(config.machine.vcpuCount == 2 && config.machine.memSizeMiB == 256)
    let mixed = try CommandLineOptions(arguments: ["--no-api", "--no-seccomp", "--kernel", "k"])
    #expect(throws: CommandLineOptions.UsageError.self) { try mixed.configuration(configFileBytes: Array("{}".utf8)) }
}

@Test func jailerHandoffFlags() throws {
    let options = try CommandLineOptions(arguments: [
        "--id", "vm-7", "--seccomp-filter", "/seccomp.kbundle", "--start-time-us", "123456789",
        "--start-time-cpu-us", "4321", "--no-api", "--kernel", "k",
    ])
    #expect(options.seccompFilter == "/seccomp.kbundle")
    #expect(options.jailerStartMicroseconds == 123_456_789)
    #expect(options.jailerStartCPUMicroseconds == 4321)
    _ = try options.configuration(configFileBytes: nil)

    for bad in ["-1", "", "12x", "99999999999999999999999"] {
        #expect(throws: CommandLineOptions.UsageError.self) { try CommandLineOptions(arguments: ["--start-time-us", bad]) }
        #expect(throws: CommandLineOptions.UsageError.self) { try CommandLineOptions(arguments: ["--start-time-cpu-us", bad]) }
    }
}
