import CKilnStart
import KilnBuiltinPolicies
import KilnJail
import KilnSystem

// kiln-jailer: argument parsing and wiring only; the steps live in KilnJail.
#if canImport(Glibc)
    import Glibc
#endif

// Taken first: the VMM reports the time from here to its own start.
let startMonotonic = MonotonicClock.nanoseconds()
let startCPU = MonotonicClock.processCPUNanoseconds()
ckiln_start_anchor()

func fail(_ message: String, _ code: Int32) -> Never {
    let line = "kiln-jailer: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(code)
}

do {
    switch try JailArguments.parse(Array(CommandLine.arguments.dropFirst())) {
    case .help:
        print(JailHelp.text, terminator: "")
    case .version:
        print(JailHelp.version, terminator: "")
    case let .cleanup(options):
        try JailCleanup.run(options)
    case let .launch(options):
        _ = try Jailer.launch(
            options, builtinBundle: { BuiltinPolicies.bytes },
            startMonotonicNanoseconds: startMonotonic, startCPUNanoseconds: startCPU)
    }
    exit(0)
} catch let failure as JailFailure {
    fail(failure.message + (failure.step == .usage ? " (see kiln-jailer --help)" : ""), failure.exitCode)
} catch {
    fail("\(error)", 1)
}
