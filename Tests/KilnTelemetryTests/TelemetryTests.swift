import Glibc
import KilnJSON
import KilnSystem
import Testing

@testable import KilnTelemetry

@Suite(.serialized) struct TelemetryTests {
    @Test func logLevelsParseFirecrackerSpellings() {
        #expect(LogLevel(name: "Warning") == .warning)
        #expect(LogLevel(name: "warn") == .warning)
        #expect(LogLevel(name: "TRACE") == .trace)
        #expect(LogLevel(name: "verbose") == nil)
        #expect(LogLevel.error < LogLevel.info)
    }

    @Test func writesOneJSONObjectPerLineWithRoleAndLevelFilter() throws {
        let path = "/tmp/kiln-log-\(getpid()).jsonl"
        defer { unlink(path) }
        let logger = Logger()
        try logger.configure(path: path, level: .info)
        let thread = try SystemThread.spawn(name: "log-test") {
            ThreadRole.set("vcpu3")
            logger.info("guest \"said\" hi")
            logger.debug("filtered out")
        }
        thread.join()
        logger.error("from the test thread")
        try logger.configure(path: nil, level: .warning)
        let lines = try FileSystem.readText(path).split(separator: "\n")
        #expect(lines.count == 2)
        let first = try JSONParser.parse(String(lines[0]))
        #expect(first["level"] == .string("info"))
        #expect(first["thread"] == .string("vcpu3"))
        #expect(first["msg"] == .string("guest \"said\" hi"))
        guard case .number = first["ts_ns"] else { Issue.record("no timestamp"); return }
        #expect(try JSONParser.parse(String(lines[1]))["level"] == .string("error"))
    }

    @Test func guestTriggeredLinesAreRateLimitedAndTheDropIsSaid() throws {
        let path = "/tmp/kiln-ratelog-\(getpid()).jsonl"
        defer { unlink(path) }
        let logger = Logger()
        try logger.configure(path: path, level: .trace)
        let log = RateLimitedLog(level: .trace, burst: 3, perSecond: 1, logger: logger, now: 0)
        for index in 0..<10 { log.log("exit \(index)", now: 0) }
        log.log("later", now: 2_000_000_000) // two seconds refill two tokens
        try logger.configure(path: nil, level: .warning)
        let messages = try FileSystem.readText(path).split(separator: "\n").map {
            try JSONParser.parse(String($0))["msg"]
        }
        #expect(
            messages == [
                .string("exit 0"), .string("exit 1"), .string("exit 2"),
                .string("later (7 similar lines suppressed)"),
            ])
    }

    @Test func rateLimiterCapsBurstsAndCountsWhatItSuppressed() {
        var limiter = RateLimiter(burst: 3, perSecond: 2, now: 0)
        let burst = (0..<10).map { _ in limiter.admit(now: 0).allowed }
        #expect(burst == [true, true, true] + Array(repeating: false, count: 7))
        // Half a second refills one token: the next line reports the 7 dropped.
        let later = limiter.admit(now: 500_000_000)
        #expect(later.allowed && later.suppressedBefore == 7)
        #expect(!limiter.admit(now: 500_000_000).allowed)
    }

    @Test func metricsSnapshotIsCumulativeAndOrdered() throws {
        let registry = MetricsRegistry()
        let requests = registry.counter("api", "requests")
        let errors = registry.counter("api", "errors")
        let boot = registry.gauge("vmm", "boot_time_us")
        let threads = try (0..<4).map { _ in
            try SystemThread.spawn(name: "metric") { for _ in 0..<1000 { requests.increment() } }
        }
        for thread in threads { thread.join() }
        errors.increment(by: 2)
        boot.set(1234)
        let snapshot = registry.snapshot(now: 99)
        #expect(snapshot.encoded() == #"{"ts_ns":99,"api":{"requests":4000,"errors":2},"vmm":{"boot_time_us":1234}}"#)
    }
}

@Suite struct MetricsRegistryReuseTests {
    @Test func askingForACounterAgainReturnsTheSameOne() {
        let registry = MetricsRegistry()
        let first = registry.counter("block_rootfs", "read_bytes")
        first.increment(by: 5)
        let again = registry.counter("block_rootfs", "read_bytes")
        again.increment(by: 2)
        #expect(first.value == 7 && again.value == 7)
        #expect(
            registry.snapshot(now: 1)
                == .object([
                    ("ts_ns", .integer(1)),
                    ("block_rootfs", .object([("read_bytes", .integer(7))])),
                ]))
    }
}
