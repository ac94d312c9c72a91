import CKilnStart
import KilnJSON
import KilnSystem

// kiln-jail-probe: the exec file of the jail tests and the benchmark. It
// reports as one JSON line what it sees from inside the jail and the result
// of each escape attempt, then waits for stdin to close so that the test can
// inspect it from the host through /proc/<pid>.
//
//   --bench                only print "probe-start-ns N jailer-start-us M" (both
//                          CLOCK_MONOTONIC; M is the jailer's --start-time-us) and exit
//   --no-wait              exit right after the report
//   --pause                after the report, wait for a signal instead of stdin
//                          (a daemonized probe's stdin is /dev/null)
//   --loopback-port P      try a TCP connection to 127.0.0.1:P
//   --fork-limit N         fork up to N children (each waits on a pipe)
//   --memory-bytes N       in a child, touch N bytes of anonymous memory
#if canImport(Glibc)
    import Glibc
#endif

let startedAt = MonotonicClock.nanoseconds()
ckiln_start_anchor()

let arguments = Array(CommandLine.arguments.dropFirst())

func value(after flag: String) -> String? {
    guard let index = arguments.firstIndex(of: flag), index + 1 < arguments.count else { return nil }
    return arguments[index + 1]
}

func emit(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    try? FileDescriptor.standardOutput.writeAll(bytes)
}

if arguments.contains("--bench") {
    emit("probe-start-ns \(startedAt) jailer-start-us \(value(after: "--start-time-us") ?? "0")")
    exit(0)
}

var report: [(key: String, value: JSONValue)] = [
    ("startedAtNs", .integer(startedAt)),
    ("arguments", .array(CommandLine.arguments.map(JSONValue.string))),
]
report += ProbeInside.identity()
report.append(("root", ProbeInside.listing("/")))
report.append(("dev", ProbeInside.listing("/dev")))
report.append(("devNet", ProbeInside.listing("/dev/net")))
report.append(("rlimits", ProbeInside.resourceLimits()))
report.append(("environment", ProbeInside.environment()))
report.append(("openFds", .array(ProbeInside.openDescriptors().map { .integer($0) })))
report.append(("hostname", .string(ProbeInside.hostname())))
report += ProbeInside.processState()
report.append(("seccompMarker", ProbeInside.seccompMarker()))
report.append(
    (
        "escapes",
        .object(
            EscapeAttempts.all(
                loopbackPort: value(after: "--loopback-port").flatMap { UInt16($0) },
                forkLimit: value(after: "--fork-limit").flatMap { Int($0) },
                memoryBytes: value(after: "--memory-bytes").flatMap { Int($0) }))
    ))
// Last: it changes what the probe itself may call.
report.append(("stackedFilter", ProbeInside.stackedFilter()))
emit(JSONValue.object(report).encoded())

if arguments.contains("--pause") {
    while true { pause() }
} else if !arguments.contains("--no-wait") {
    var byte: UInt8 = 0
    while read(0, &byte, 1) > 0 {}
}
exit(0)
