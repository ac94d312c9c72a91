import KilnConfig
import KilnSystem

/// What kiln-jailer cost before kiln's `main`, from the start times it passes
/// (`--start-time-us`, `--start-time-cpu-us`, Firecracker's flags): the wall
/// time from the jailer's start, and the CPU time it used, which the process
/// keeps across exec.
struct JailerOverhead: CustomStringConvertible {
    let wallMicroseconds: UInt64
    let cpuMicroseconds: UInt64?

    /// nil unless kiln was started by a jailer (`--start-time-us` given).
    init?(
        options: KilnCommandLineOptions, kilnStart: UInt64,
        kilnStartCPU: UInt64 = MonotonicClock.processCPUNanoseconds()
    ) {
        guard let jailerStart = options.jailerStartMicroseconds else { return nil }
        // A start time from the future (a wrong flag) reads as no overhead, not a wrap.
        let kilnMicroseconds = kilnStart / 1000
        wallMicroseconds = kilnMicroseconds >= jailerStart ? kilnMicroseconds - jailerStart : 0
        cpuMicroseconds = options.jailerStartCPUMicroseconds.map { jailerCPU in
            let now = kilnStartCPU / 1000
            // The parent's CPU before it forked counts too, as in Firecracker.
            return (now >= jailerCPU ? now - jailerCPU : 0) + (options.parentCPUMicroseconds ?? 0)
        }
    }

    var description: String {
        "jailer overhead: \(Self.milliseconds(wallMicroseconds)) ms wall from kiln-jailer's start to kiln's"
            + (cpuMicroseconds.map { ", \(Self.milliseconds($0)) ms CPU" } ?? "")
    }

    static func milliseconds(_ microseconds: UInt64) -> String {
        // Both figures are differences of this boot's clocks: far from overflowing.
        MonotonicClock.millisecondsText(microseconds * 1000, decimals: 3)
    }
}
