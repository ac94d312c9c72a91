import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// An idle machine costs the host nothing: kiln's event loop sleeps until an
/// event, with no periodic tick. The one timer an idle guest keeps is the
/// halted-guest check, and each of its rounds kicks the vCPU, so the loop's
/// wake-ups are counted against the vCPU's.
@Suite(.enabled(if: Lane1.ready, Lane1.skipReason))
struct IdleWakeupTests {
    @Test func anIdleGuestsEventLoopWakesOnlyToCheckOnTheGuest() throws {
        let console = Lane1.scratchFile("idle-out", ""), errors = Lane1.scratchFile("idle-err", "")
        defer { for path in [console, errors] { unlink(path) } }
        let watchdog = try Lane1.spawn(
            Lane1.baseFlags + ["--kernel", Lane1.guest, "--cmdline", "console=ttyS0 idle"],
            stdout: console, stderr: errors, seconds: 30)
        defer {
            kill(watchdog, SIGTERM)
            _ = Lane1.wait(watchdog)
        }
        // The guest waits with interrupts on and no timer once it says so.
        let deadline = MonotonicClock.nanoseconds() + 15_000_000_000
        while !Lane1.read(console).contains("guest: idle") {
            try #require(MonotonicClock.nanoseconds() < deadline, "no 'guest: idle' in 15 s; \(Lane1.read(errors))")
            usleep(20_000)
        }
        let kiln = try #require(IdleThreads.child(of: watchdog), "kiln's pid under timeout(1)")
        let vcpu = try #require(IdleThreads.thread(named: "kiln-vcpu0", in: kiln), "the vCPU thread")
        let loopBefore = try #require(IdleThreads.voluntarySwitches(kiln, kiln))
        let vcpuBefore = try #require(IdleThreads.voluntarySwitches(kiln, vcpu))
        // Four seconds: a once-a-second tick would wake the loop 3 to 5 times.
        sleep(4)
        let loopWakes = try #require(IdleThreads.voluntarySwitches(kiln, kiln)) - loopBefore
        let kicks = try #require(IdleThreads.voluntarySwitches(kiln, vcpu)) - vcpuBefore
        // One spare: the loop may wait once on the vCPU's state lock.
        #expect(
            loopWakes <= kicks + 1,
            "the event loop slept \(loopWakes) times in 4 s while the vCPU was kicked \(kicks) times")
    }
}

/// The idle test's view of kiln's threads, from /proc.
enum IdleThreads {
    static func child(of pid: pid_t) -> pid_t? {
        let text = ChildProcess.read("/proc/\(pid)/task/\(pid)/children")
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first.flatMap { pid_t($0) }
    }

    static func thread(named name: String, in pid: pid_t) -> pid_t? {
        guard let folder = opendir("/proc/\(pid)/task") else { return nil }
        defer { closedir(folder) }
        while let entry = readdir(folder) {
            let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let id = pid_t(tid) else { continue }
            if ChildProcess.read("/proc/\(pid)/task/\(id)/comm") == name + "\n" {
                return id
            }
        }
        return nil
    }

    /// How often the thread went to sleep by itself (proc(5), status).
    static func voluntarySwitches(_ pid: pid_t, _ tid: pid_t) -> Int? {
        let status = ChildProcess.read("/proc/\(pid)/task/\(tid)/status")
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("voluntary_ctxt_switches:") }) else {
            return nil
        }
        return Int(line.dropFirst("voluntary_ctxt_switches:".count).filter { $0 != " " && $0 != "\t" })
    }
}
