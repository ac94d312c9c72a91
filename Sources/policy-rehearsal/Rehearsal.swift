import CKiln
import KilnSeccomp
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// The rehearsal itself (see main.swift). Thread entry points live here, not
/// in main.swift (docs/platform.md, "Threads and Swift 6":
/// top-level closures there are @MainActor).
enum Rehearsal {
    /// The calls Glibc's Swift module does not declare (eventfd, epoll,
    /// accept4), by number (asm/unistd_64.h) and flag (UAPI headers).
    /// Raw calls also make the rehearsal issue exactly the call a filter sees.
    enum Raw {
        static let socket = 41, accept4 = 288, epollWait = 232, epollCtl = 233
        static let eventfd2 = 290, epollCreate1 = 291, tgkill = 234
        static let closeOnExec: UInt = 0o2000000, nonBlocking: UInt = 0o4000 // O_CLOEXEC, O_NONBLOCK
        static let epollAdd: UInt = 1, epollDelete: UInt = 2, epollIn: UInt32 = 1

        @discardableResult
        static func call(_ name: String, _ number: Int, _ a: [UInt]) throws -> Int {
            let args = a + Array(repeating: 0, count: 6 - a.count)
            return try check(name) { ckiln_syscall6(number, args[0], args[1], args[2], args[3], args[4], args[5]) }
        }
    }

    struct Options {
        var forbidden: String?
        var prepared = true
        var workouts: Set<String> = ["api", "vcpu", "vmm"]
        var signalOther: pid_t?
        var onceRace = false
    }

    static let usage =
        "usage: policy-rehearsal BUNDLE SOCKET-PATH [--forbidden ROLE] [--unprepared] [--workout ROLE] [--signal-other PID] [--once-race]\n"

    /// --forbidden ROLE: that role's thread then tries socket(). --unprepared:
    /// skip SeccompFilter.prepareProcess. --workout ROLE: only that role's
    /// thread does the allocation workout (every role by default).
    static func parse(_ flags: ArraySlice<String>) -> Options? {
        var options = Options()
        var rest = flags
        while let flag = rest.popFirst() {
            switch flag {
            case "--unprepared": options.prepared = false
            case "--once-race": options.onceRace = true
            case "--forbidden":
                guard let role = rest.popFirst() else { return nil }
                options.forbidden = role
            case "--workout":
                guard let role = rest.popFirst() else { return nil }
                options.workouts = [role]
            case "--signal-other":
                guard let pid = rest.popFirst().flatMap({ pid_t($0) }), pid > 0 else { return nil }
                options.signalOther = pid
            default: return nil
            }
        }
        return options
    }

    static func run(_ arguments: [String]) -> Int32 {
        guard arguments.count >= 2, let options = parse(arguments.dropFirst(2)) else {
            FileDescriptor.standardError.write(message: usage)
            return 2
        }
        let forbidden = options.forbidden
        do {
            // Start-up, under the jailer's filter only. A peer that hangs up
            // must give EPIPE, not kill the process, as in the VMM.
            signal(SIGPIPE, SIG_IGN)
            // As kiln does before its first thread (SeccompRoles.load).
            if options.prepared { try SeccompFilter.prepareProcess() }
            let bundle = try SeccompBundle(decoding: try FileSystem.readFile(arguments[0]))
            let listener = try listen(at: arguments[1])
            // As in kiln: the API server's epoll and the event loop's eventfd
            // exist before any thread filter.
            let apiEpoll = try Raw.call("epoll_create1", Raw.epollCreate1, [Raw.closeOnExec])
            let wakeup = Int32(try Raw.call("eventfd2", Raw.eventfd2, [0, Raw.closeOnExec | Raw.nonBlocking]))
            let workouts = options.workouts
            let onceRace = options.onceRace
            if onceRace { _ = OnceRace.progress } // its own lazy global, made before any thread
            try spawn(role: "api", bundle: bundle, forbidden: forbidden, done: wakeup) {
                if onceRace { _ = OnceRace.value }
                if workouts.contains("api") { allocationWorkout() }
                serveOneRequest(listener, epoll: apiEpoll)
            }
            try spawn(role: "vcpu", bundle: bundle, forbidden: forbidden, done: wakeup) {
                if onceRace && !OnceRace.contend() { exit(7) }
                if workouts.contains("vcpu") { allocationWorkout() }
                signalEventLoop(wakeup)
            }

            let kickTarget = try options.signalOther.map { _ in try KickTarget.start(bundle: bundle) }
            // The event loop, under the vmm role, installed once every other
            // thread exists. Like kiln's, it never joins a thread.
            // Its descriptors are subscribed before the filter, as kiln's are.
            var total: UInt64 = 0
            let loop = try EventLoop()
            _ = Unmanaged.passRetained(loop) // kept to exit, as kiln's: the vmm role has no close
            try loop.subscribe(FileDescriptor(rawValue: wakeup)) { _ in
                var count: UInt64 = 0
                if read(wakeup, &count, 8) == 8 { total += count }
            }
            try SeccompFilter.install(role: "vmm", from: bundle)
            if onceRace && !OnceRace.contend() { return 7 }
            if workouts.contains("vmm") { allocationWorkout() }
            let deadline = MonotonicClock.nanoseconds() + 5_000_000_000
            while total < signalsExpected {
                guard MonotonicClock.nanoseconds() < deadline else {
                    throw SystemError("epoll_wait", subject: "eventfd", errno: ETIMEDOUT)
                }
                try loop.runOnce(maximumMilliseconds: 1000)
            }
            if forbidden == "vmm" { tryForbiddenCall() }
            if let other = options.signalOther, let kickTarget { try kickThenSignal(kickTarget, other) }
            unlink(arguments[1]) // kiln removes its API socket at exit
            print("policy-rehearsal: every thread ran under its filter")
            return 0
        } catch {
            FileDescriptor.standardError.write(message: "policy-rehearsal: \(error)\n")
            return 1
        }
    }

    /// --signal-other PID, on the event loop under the vmm role: first the
    /// kick kiln gives a vCPU (tgkill of a thread of this process with
    /// SIGUSR1, handled by a thread that waits for it), which must arrive;
    /// then the same tgkill aimed at another process, which the role's
    /// OWN_PID condition must stop (the process dies of SIGSYS before it
    /// prints anything more).
    static func kickThenSignal(_ target: pid_t, _ other: pid_t) throws {
        _ = ckiln_syscall6(Raw.tgkill, UInt(getpid()), UInt(target), UInt(SIGUSR1), 0, 0, 0)
        let deadline = MonotonicClock.nanoseconds() + 5_000_000_000
        var count: UInt64 = 0
        while read(KickTarget.kicked, &count, 8) != 8 {
            guard MonotonicClock.nanoseconds() < deadline else {
                throw SystemError("tgkill", subject: "the kicked thread never took SIGUSR1", errno: ETIMEDOUT)
            }
            sched_yield()
        }
        print("policy-rehearsal: kicked its own thread")
        fflush(nil)
        _ = ckiln_syscall6(Raw.tgkill, UInt(other), UInt(other), UInt(SIGUSR1), 0, 0, 0)
        print("policy-rehearsal: signalled process \(other)")
    }

    /// socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0): the jailer's filter
    /// allows it (start-up binds the API socket), no thread role does, so
    /// only a thread's own filter can stop it.
    static func tryForbiddenCall() {
        _ = ckiln_syscall6(Raw.socket, UInt(AF_UNIX), UInt(SOCK_STREAM.rawValue) | Raw.closeOnExec, 0, 0, 0, 0)
    }

    /// The API socket, bound before the filters as the VMM binds --api-sock.
    static func listen(at path: String) throws -> Int32 {
        unlink(path)
        let fd = try check("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        _ = try withAddress(path) { address, length in
            try check("bind", subject: path) { bind(fd, address, length) }
        }
        try check("listen") { Glibc.listen(fd, 8) }
        return fd
    }

    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R) throws -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw SystemError("bind", subject: path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        return try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }

    /// The vCPU thread's exits plus one "done" from each of the two threads.
    static let signalsExpected: UInt64 = 1000 + 2

    /// Starts a thread that installs `role` before doing anything else, and
    /// signals `done` (an eventfd) when it has finished.
    static func spawn(
        role: String, bundle: SeccompBundle, forbidden: String?, done: Int32,
        _ work: sending @escaping () -> Void
    ) throws {
        guard let program = bundle.program(for: role) else { throw SeccompBundleError.missingRole(role) }
        let isForbidden = forbidden == role
        try startFiltered(role: role, program: program) {
            work()
            if isForbidden { Rehearsal.tryForbiddenCall() }
            var one: UInt64 = 1
            _ = write(done, &one, 8)
        }
    }

    /// A detached thread that installs `program` (the role's filter) before
    /// anything else, then runs `work`.
    static func startFiltered(role: String, program: [BPFInstruction], _ work: sending @escaping () -> Void) throws {
        try SystemThread.spawn(name: "rehearsal-" + role) {
            do {
                try SeccompFilter.install(program, role: role)
            } catch {
                FileDescriptor.standardError.write(message: "policy-rehearsal: \(error)\n")
                exit(1)
            }
            work()
        }.detach()
    }

    /// The API thread, as kiln's APIServer: wait on epoll, accept one
    /// connection (non-blocking, close-on-exec), read the request, answer
    /// with send(MSG_NOSIGNAL), close. The test is the client.
    static func serveOneRequest(_ listener: Int32, epoll: Int) {
        do {
            try waitUntilReadable(listener, epoll: epoll)
            let connection = Int32(
                try Raw.call(
                    "accept4", Raw.accept4,
                    [UInt(listener), 0, 0, Raw.closeOnExec | Raw.nonBlocking]))
            try waitUntilReadable(connection, epoll: epoll)
            var request = [UInt8](repeating: 0, count: 256)
            _ = read(connection, &request, request.count)
            var headers: [String: String] = [:] // hashing and allocation, as a parser does
            for index in 0..<64 { headers["X-Header-\(index)"] = String(index) }
            let response = Array("HTTP/1.1 204 No Content\r\n\r\n".utf8)
            _ = send(connection, response, response.count, Int32(MSG_NOSIGNAL))
            close(connection)
        } catch {
            FileDescriptor.standardError.write(message: "policy-rehearsal: api: \(error)\n")
            exit(3)
        }
    }

    /// What a VMM thread can make the C library do, at sizes beyond the
    /// usual ones, under the thread's own filter: blocks just under the mmap
    /// threshold in bulk (the heap grows, then trims once they are freed),
    /// many small blocks (a parsed request, log lines), buffers that double
    /// up to megabytes (a large request body: heap, then mmap and munmap),
    /// realloc and aligned blocks of every size, and the first calendar-time
    /// conversion (the CMOS clock, on a vCPU thread). Every byte is touched.
    static func allocationWorkout() {
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<128 {
            let block = malloc(100_000)!
            memset(block, 0xa5, 100_000)
            blocks.append(block)
        }
        for block in blocks { free(block) }
        blocks.removeAll()

        var table: [String: [UInt64]] = [:]
        for index in 0..<20_000 { table["key \(index)"] = Array(repeating: UInt64(index), count: index % 40) }
        table.removeAll()

        var body: [UInt8] = []
        let chunk = [UInt8](repeating: 0x20, count: 4096)
        while body.count < 16 << 20 { body.append(contentsOf: chunk) }
        body = []
        let text = String(repeating: "a", count: 16_000) + String(repeating: " ", count: 40_000)
        _ = text.utf8.reduce(0) { $0 &+ Int($1) }

        var grown: UnsafeMutableRawPointer? = nil
        var size = 1024
        while size <= 16 << 20 {
            guard let larger = realloc(grown, size) else { exit(4) }
            memset(larger, 0x5a, size)
            grown = larger
            size *= 2
        }
        free(grown)
        for shift in 10...24 {
            var aligned: UnsafeMutableRawPointer?
            guard posix_memalign(&aligned, 4096, 1 << shift) == 0, let aligned else { exit(5) }
            memset(aligned, 0x3c, 1 << shift)
            free(aligned)
        }

        var now = time(nil)
        var parts = tm()
        guard gmtime_r(&now, &parts) != nil, parts.tm_year > 100 else { exit(6) }
    }

    /// The vCPU thread: allocate (as device emulation does) and signal the event loop.
    static func signalEventLoop(_ eventfd: Int32) {
        var log: [String] = []
        for exit in 0..<1000 { log.append("exit \(exit)") }
        var one: UInt64 = UInt64(log.count)
        _ = write(eventfd, &one, 8)
    }

    /// Registers `fd` with the epoll instance and waits for it (5 s at most).
    static func waitUntilReadable(_ fd: Int32, epoll: Int) throws {
        // struct epoll_event is packed on x86_64: u32 events, u64 data.
        var event = [UInt8](repeating: 0, count: 12)
        withUnsafeBytes(of: Raw.epollIn.littleEndian) { event.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: UInt64(fd).littleEndian) { event.replaceSubrange(4..<12, with: $0) }
        _ = try event.withUnsafeBytes { raw in
            try Raw.call(
                "epoll_ctl", Raw.epollCtl, [UInt(epoll), Raw.epollAdd, UInt(fd), UInt(bitPattern: raw.baseAddress)])
        }
        var ready = [UInt8](repeating: 0, count: 12 * 4)
        let count = try ready.withUnsafeMutableBytes { raw in
            try Raw.call("epoll_wait", Raw.epollWait, [UInt(epoll), UInt(bitPattern: raw.baseAddress), 4, 5000])
        }
        guard count > 0 else { throw SystemError("epoll_wait", subject: "fd \(fd)", errno: ETIMEDOUT) }
        _ = try Raw.call("epoll_ctl", Raw.epollCtl, [UInt(epoll), Raw.epollDelete, UInt(fd), 0])
    }
}

/// A thread that stands for a vCPU thread: under the vcpu role, it waits
/// (a condition nobody signals) for the event loop's kick, SIGUSR1, whose
/// handler reports it through an eventfd (write(2) is async-signal-safe).
enum KickTarget {
    /// Set before the handler that reads it is installed, never after.
    nonisolated(unsafe) static var kicked: Int32 = -1
    /// Waited on for ever: pthread_cond_wait, as a parked vCPU waits.
    static let parked = Locked(())

    /// Starts the thread; returns its tid once it is under its filter.
    static func start(bundle: SeccompBundle) throws -> pid_t {
        kicked = Int32(
            try Rehearsal.Raw.call(
                "eventfd2", Rehearsal.Raw.eventfd2, [0, Rehearsal.Raw.closeOnExec | Rehearsal.Raw.nonBlocking]))
        // Non-blocking, as every eventfd kiln makes (start-up allows no other).
        let ready = Int32(
            try Rehearsal.Raw.call(
                "eventfd2", Rehearsal.Raw.eventfd2, [0, Rehearsal.Raw.closeOnExec | Rehearsal.Raw.nonBlocking]))
        signal(SIGUSR1) { _ in
            var one: UInt64 = 1
            _ = write(KickTarget.kicked, &one, 8)
        }
        guard let program = bundle.program(for: "vcpu") else { throw SeccompBundleError.missingRole("vcpu") }
        try Rehearsal.startFiltered(role: "vcpu", program: program) {
            // A parent may have blocked SIGUSR1 (a test runner's threads do);
            // kiln's vCPU threads unblock their kick signal the same way.
            var kick = sigset_t()
            sigemptyset(&kick)
            sigaddset(&kick, SIGUSR1)
            pthread_sigmask(SIG_UNBLOCK, &kick, nil)
            var tid = UInt64(ckiln_gettid())
            _ = write(ready, &tid, 8)
            KickTarget.parked.withLock(waitingUntil: { _ in false }) { _, _ in }
        }
        var tid: UInt64 = 0
        let deadline = MonotonicClock.nanoseconds() + 5_000_000_000
        while read(ready, &tid, 8) != 8 {
            guard MonotonicClock.nanoseconds() < deadline else {
                throw SystemError("read", subject: "the kick target's tid", errno: ETIMEDOUT)
            }
            sched_yield()
        }
        return pid_t(tid)
    }
}

/// --once-race: the API thread, a vCPU thread and the event loop, each under
/// its role, first touch one lazy global at once, as kiln's threads can under
/// load. Its initialiser runs on the API thread holding swift_once's lock
/// until both others are on their way to it, so that they wait for the lock
/// (FUTEX_LOCK_PI_PRIVATE) and the initialiser's thread wakes them
/// (FUTEX_UNLOCK_PI_PRIVATE). A role without those calls kills the process.
enum OnceRace {
    struct Progress {
        var initialiserRunning = false
        var contenders = 0
    }

    static let progress = Locked(Progress())
    static let value: Int = holdTheOnceLock()

    /// Polls (sched_yield: no role has a monotonic-clock futex wait but the
    /// vmm's) until both contenders said they are about to touch `value`,
    /// then keeps the lock a while longer, for them to reach it and wait.
    static func holdTheOnceLock() -> Int {
        progress.withLock { $0.initialiserRunning = true }
        guard poll({ progress.withLock { $0.contenders == 2 } }) else { exit(8) }
        let end = MonotonicClock.nanoseconds() + 200_000_000
        while MonotonicClock.nanoseconds() < end { sched_yield() }
        return 42
    }

    /// Waits for the initialiser to be running, then touches `value`.
    static func contend() -> Bool {
        guard poll({ progress.withLock { $0.initialiserRunning } }) else { return false }
        progress.withLock { $0.contenders += 1 }
        return value == 42
    }

    /// Whether `condition` came true within 5 s.
    static func poll(_ condition: () -> Bool) -> Bool {
        let deadline = MonotonicClock.nanoseconds() + 5_000_000_000
        while !condition() {
            guard MonotonicClock.nanoseconds() < deadline else { return false }
            sched_yield()
        }
        return true
    }
}
