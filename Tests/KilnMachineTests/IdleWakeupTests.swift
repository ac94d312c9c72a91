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
        let kiln = try #require(ProcThreads.child(of: watchdog), "kiln's pid under timeout(1)")
        let vcpu = try #require(ProcThreads.thread(named: "kiln-vcpu0", in: kiln), "the vCPU thread")
        let loopBefore = try #require(ProcThreads.voluntarySwitches(kiln, kiln))
        let vcpuBefore = try #require(ProcThreads.voluntarySwitches(kiln, vcpu))
        // Four seconds: a once-a-second tick would wake the loop 3 to 5 times.
        sleep(4)
        let loopWakes = try #require(ProcThreads.voluntarySwitches(kiln, kiln)) - loopBefore
        let kicks = try #require(ProcThreads.voluntarySwitches(kiln, vcpu)) - vcpuBefore
        // One spare: the loop may wait once on the vCPU's state lock.
        #expect(
            loopWakes <= kicks + 1,
            "the event loop slept \(loopWakes) times in 4 s while the vCPU was kicked \(kicks) times")
    }
}
