// kiln-jailer: argument parsing and wiring only; the steps live in KilnJail.
#if canImport(Glibc)
import Glibc
#endif
import CKilnStart
import KilnJail
import KilnSystem

// Taken first: the VMM reports the time from here to its own start.
let startMonotonic = MonotonicClock.nanoseconds()
let startCPU = MonotonicClock.processCPUNanoseconds()
ckiln_start_anchor()

func fail(_ message: String, _ code: Int32) -> Never {
    let line = "kiln-jailer: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(code)
}

/// `policies.kbundle` beside this executable, which `make jailer` puts there.
func defaultBundlePath() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard length > 0 else { return "policies.kbundle" }
    let executable = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let folder = executable.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
    return folder + "/policies.kbundle"
}

do {
    switch try JailArguments.parse(Array(CommandLine.arguments.dropFirst())) {
    case .help:
        print(JailHelp.text, terminator: "")
    case .version:
        print(JailHelp.version)
    case let .cleanup(options):
        try JailCleanup.run(options)
    case let .launch(options):
        _ = try Jailer.launch(options, defaultBundle: defaultBundlePath,
                              startMonotonicNanoseconds: startMonotonic, startCPUNanoseconds: startCPU)
    }
    exit(0)
} catch let failure as JailFailure {
    fail(failure.message + (failure.step == .usage ? " (see kiln-jailer --help)" : ""), failure.exitCode)
} catch {
    fail("\(error)", 1)
}
