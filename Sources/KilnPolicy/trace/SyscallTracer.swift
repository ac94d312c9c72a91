import CKiln
import KilnSeccomp
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a command under ptrace with every seccomp role it installs switched
/// to its recording variant, and records each call of each role.
///
/// Why SECCOMP_RET_TRACE and ptrace: a seccomp stop gives the tracer the
/// call's registers, so every argument a condition looks at, and the
/// filter's return data, so the role and whether a rule matched; the traced
/// thread waits until the tracer resumes it, so the tracer can also answer a
/// rule's errno and swap the programs being installed. SECCOMP_RET_LOG's
/// audit records carry the call number but no argument; a
/// SECCOMP_RET_USER_NOTIF listener is allowed once per filter stack (the
/// kernel refuses a second with EBUSY), while kiln stacks two or three
/// roles on every thread. (Documentation/userspace-api/seccomp_filter.rst.)
///
/// The binaries stay as shipped: the tracer installs a small filter before
/// the command's exec that traces every call, and when a traced thread
/// installs a program that is exactly one of the policy folder's roles,
/// writes that role's recording variant below the thread's stack pointer
/// and points the call at it. A program it does not know ends the trace with
/// an error (the binary was built from other policies).
///
/// Start-up: from each exec until the program installs its launch role, a
/// thread's calls are kept; a program that does install it (kiln) has them
/// recorded as its start-up, the C library's and the Swift runtime's work
/// before kiln's first line, which runs under the pre-exec role when jailed
/// and under no filter when not. Programs that never install it (the shell,
/// python, the jailer itself) have theirs dropped.
public final class SyscallTracer {
    public struct Outcome {
        public var recorder: TraceRecorder
        /// The command's exit status (128 + N when signal N ended it).
        public var status: Int32
    }

    /// Why a trace stopped: the command did not start, or one of its
    /// threads did what the recording filters cannot follow.
    public enum TraceError: Error, CustomStringConvertible {
        case cannotRun(command: String, SystemError)
        /// A SECCOMP_RET_TRACE stop whose data no recording filter returns.
        case unknownFilterData(thread: pid_t, command: String, data: UInt16)
        /// A filter that is none of the traced roles' programs.
        case unknownProgram(thread: pid_t, command: String, instructions: Int)
        case cannotPlaceRecording(thread: pid_t, command: String, role: String, SystemError)

        public var description: String {
            switch self {
            case .cannotRun(let command, let error): "cannot run \(command): \(error.errnoName)"
            case .unknownFilterData(let thread, let command, let data):
                "thread \(thread) (\(command)) stopped with seccomp data 0x\(String(data, radix: 16)), from no filter of this trace"
            case .unknownProgram(let thread, let command, let instructions):
                "thread \(thread) (\(command)) installs a seccomp program of \(instructions) instructions "
                    + "that is none of the traced policies' roles: was it built from other policies? (make policies, then rebuild it)"
            case .cannotPlaceRecording(let thread, let command, let role, let error):
                "thread \(thread) (\(command)): cannot place the recording program of role \(role): \(error.errnoName)"
            }
        }
    }

    private let bundle: RecordingBundle
    private var recorder: TraceRecorder
    /// Each live thread's filter stack, outermost role first.
    private var stacks: [pid_t: [String]] = [:]
    /// A placeholder a thread's roles were resolved with (its process's
    /// own pid), inherited as the filters are.
    private var resolutions: [pid_t: (placeholder: UInt64, value: UInt64)] = [:]
    /// Threads that have had the stop every new tracee starts with.
    private var started: Set<pid_t> = []
    /// New threads seen before their creator's clone event: held stopped
    /// until it says which filters they inherited.
    private var orphans: Set<pid_t> = []
    /// Threads between an exec and their launch role: the calls so far, and
    /// whether a pre-exec filter was on at the exec.
    private var startUps: [pid_t: (calls: [(number: Int32, arguments: [UInt64])], jailed: Bool)] = [:]
    /// Start-up calls kept per thread, at most: kiln's start-up makes about
    /// a hundred; a program past this bound is not one whose start-up is traced.
    static let startUpCallLimit = 20_000

    public init(bundle: RecordingBundle) {
        self.bundle = bundle
        recorder = TraceRecorder(policies: bundle.policies)
    }

    private static let seccompNumber = SyscallTable.number(of: "seccomp")!
    private static let prctlNumber = SyscallTable.number(of: "prctl")!
    private static let setModeFilter: UInt64 = 1 // SECCOMP_SET_MODE_FILTER
    private static let prSetSeccomp: UInt64 = 22 // PR_SET_SECCOMP
    private static let modeFilter: UInt64 = 2 // SECCOMP_MODE_FILTER
    // PTRACE_EVENT_* (linux/ptrace.h)
    private static let forkEvent: Int32 = 1, vforkEvent: Int32 = 2, cloneEvent: Int32 = 3
    private static let execEvent: Int32 = 4, seccompEvent: Int32 = 7

    public func run(_ command: [String]) throws -> Outcome {
        precondition(!command.isEmpty)
        let root = try spawn(command)
        stacks[root] = []
        started.insert(root)
        // Stopped at its exec event, which the spawn consumed.
        startUps[root] = ([], false)
        resume(root)
        var status: Int32 = 0
        do {
            while true {
                var kind: Int32 = 0, value: Int32 = 0
                let tid = ckiln_trace_wait(&kind, &value)
                if tid < 0 {
                    if errno == ECHILD { break }
                    throw SystemError.current("waitpid")
                }
                switch Int(kind) {
                case Int(CKILN_TRACE_EXITED.rawValue), Int(CKILN_TRACE_KILLED.rawValue):
                    stacks[tid] = nil
                    resolutions[tid] = nil
                    startUps[tid] = nil
                    started.remove(tid)
                    if tid == root { status = kind == Int32(CKILN_TRACE_EXITED.rawValue) ? value : 128 + value }
                case Int(CKILN_TRACE_EVENT.rawValue):
                    try event(value, tid)
                default:
                    signalStop(value, tid)
                }
            }
        } catch {
            // PTRACE_O_EXITKILL would end them when this process exits; end
            // them now so that nothing outlives a failed trace.
            for tid in stacks.keys { kill(tid, SIGKILL) }
            kill(root, SIGKILL)
            var kind: Int32 = 0, value: Int32 = 0
            while ckiln_trace_wait(&kind, &value) >= 0 {}
            throw error
        }
        return Outcome(recorder: recorder, status: status)
    }

    private func spawn(_ command: [String]) throws -> pid_t {
        let filters = bundle.base.map { sock_filter(code: $0.code, jt: $0.jt, jf: $0.jf, k: $0.k) }
        var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let pid = filters.withUnsafeBufferPointer { ckiln_trace_spawn(&argv, $0.baseAddress, UInt16($0.count)) }
        guard pid > 0 else { throw TraceError.cannotRun(command: command[0], SystemError.current("exec")) }
        return pid
    }

    private func resume(_ tid: pid_t, signal: Int32 = 0) {
        // ESRCH: the thread died meanwhile (a SIGKILL); its exit is reported next.
        _ = ckiln_trace_resume(tid, signal)
    }

    private func eventMessage(_ tid: pid_t) -> UInt {
        var message: UInt = 0
        _ = ckiln_trace_event_message(tid, &message)
        return message
    }

    private func event(_ event: Int32, _ tid: pid_t) throws {
        switch event {
        case Self.seccompEvent:
            try seccompStop(tid)
        case Self.cloneEvent, Self.forkEvent, Self.vforkEvent:
            // A new thread or process inherits its creator's filters.
            let child = pid_t(truncatingIfNeeded: eventMessage(tid))
            stacks[child] = stacks[tid] ?? []
            resolutions[child] = resolutions[tid]
            for role in stacks[child]! { recorder.entered(role: role) }
            if orphans.remove(child) != nil {
                started.insert(child)
                resume(child)
            }
            resume(tid)
        case Self.execEvent:
            // The exec'ing thread takes the process's id (ptrace(2), execve under ptrace).
            let former = pid_t(truncatingIfNeeded: eventMessage(tid))
            if former != tid, let stack = stacks.removeValue(forKey: former) {
                stacks[tid] = stack
                resolutions[tid] = resolutions.removeValue(forKey: former)
            }
            startUps[former] = nil
            startUps[tid] = ([], !(stacks[tid] ?? []).isEmpty)
            resume(tid)
        default:
            resume(tid)
        }
    }

    private func signalStop(_ signal: Int32, _ tid: pid_t) {
        if !started.contains(tid) && signal == SIGSTOP {
            // A new tracee's first stop: held until its creator's event
            // gives its filters, then resumed without the SIGSTOP.
            if stacks[tid] == nil {
                orphans.insert(tid)
            } else {
                started.insert(tid)
                resume(tid)
            }
            return
        }
        resume(tid, signal: signal)
    }

    private func seccompStop(_ tid: pid_t) throws {
        var call = ckiln_trace_call()
        guard ckiln_trace_read_call(tid, &call) == 0 else { resume(tid); return }
        let data = UInt16(truncatingIfNeeded: eventMessage(tid))
        guard let answer = bundle.decode(data: data) else {
            throw TraceError.unknownFilterData(thread: tid, command: Self.command(of: tid), data: data)
        }
        var stack = stacks[tid] ?? []
        if let role = answer.role, stack.last != role {
            stack.append(role)
            stacks[tid] = stack
            recorder.entered(role: role)
        }
        let number = Int32(truncatingIfNeeded: call.number)
        let arguments = withUnsafeBytes(of: call.arguments) { Array($0.bindMemory(to: UInt64.self)) }
        if var startUp = startUps.removeValue(forKey: tid), startUp.calls.count < Self.startUpCallLimit {
            startUp.calls.append((number, arguments))
            startUps[tid] = startUp
        }
        var action = SeccompAction.allow
        if !stack.isEmpty {
            action = recorder.record(
                number: number, arguments: arguments, stack: stack,
                kernelSaysRule: answer.role == nil ? nil : answer.byRule, resolved: resolutions[tid])
        }
        if case let .errno(value) = action {
            // The rule's answer, as the real filter gives it (clone3's ENOSYS,
            // TCGETS's ENOTTY): the call does not run.
            _ = ckiln_trace_skip_call(tid, -Int64(value))
        } else if Self.installsFilter(number, arguments) {
            try swapProgram(tid, address: arguments[2], stackPointer: call.stack_pointer)
        }
        // A call the real filters would trap or kill on is recorded as
        // denied and let run, so the trace goes on to find the next one.
        resume(tid)
    }

    private static func installsFilter(_ number: Int32, _ arguments: [UInt64]) -> Bool {
        (number == seccompNumber && arguments[0] == setModeFilter)
            || (number == prctlNumber && arguments[0] == prSetSeccomp && arguments[1] == modeFilter)
    }

    /// Reads the `struct sock_fprog` at `address`, and if it is one of the
    /// roles, writes the recording variant and its sock_fprog below the
    /// stack pointer (past the red zone, where a signal frame would go) and
    /// points the call's program argument there.
    private func swapProgram(_ tid: pid_t, address: UInt64, stackPointer: UInt64) throws {
        var header = [UInt8](repeating: 0, count: 16)
        guard ckiln_trace_peek(tid, address, &header, 16) == 0 else { return } // the kernel will say EFAULT
        let length = Int(header[0]) | Int(header[1]) << 8
        let pointer = header[8..<16].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard length > 0, length <= BPF.maximumInstructions else { return }
        var bytes = [UInt8](repeating: 0, count: length * BPFInstruction.encodedSize)
        guard ckiln_trace_peek(tid, pointer, &bytes, bytes.count) == 0 else { return }
        let program = stride(from: 0, to: bytes.count, by: BPFInstruction.encodedSize).map {
            BPFInstruction(decoding: bytes[$0..<$0 + BPFInstruction.encodedSize])
        }
        let processID = Self.ownProcessID(of: tid)
        guard let (role, placeholder) = bundle.role(installing: program, processID: processID),
            let recording = bundle.recordingProgram(for: role, placeholder: placeholder, processID: processID)
        else {
            throw TraceError.unknownProgram(thread: tid, command: Self.command(of: tid), instructions: length)
        }
        if role == SeccompBundle.launchRole, let startUp = startUps.removeValue(forKey: tid) {
            recorder.recordStartUp(startUp.calls, jailed: startUp.jailed)
        }
        var encoded: [UInt8] = []
        for instruction in recording { instruction.encode(into: &encoded) }
        let place = (stackPointer &- 4096 &- UInt64(16 + encoded.count)) & ~0xF
        var block = [UInt8](repeating: 0, count: 16)
        block[0] = UInt8(recording.count & 0xFF)
        block[1] = UInt8(recording.count >> 8)
        withUnsafeBytes(of: (place + 16).littleEndian) { block.replaceSubrange(8..<16, with: $0) }
        block += encoded
        guard ckiln_trace_poke(tid, place, block, block.count) == 0,
            ckiln_trace_set_argument(tid, 2, place) == 0
        else {
            throw TraceError.cannotPlaceRecording(
                thread: tid, command: Self.command(of: tid), role: role,
                SystemError.current("process_vm_writev"))
        }
        if let placeholder {
            // Filters only accumulate: one placeholder for the whole stack.
            resolutions[tid] = (UInt64(placeholder), UInt64(processID))
        }
    }

    /// The thread's process id as the thread itself sees it (its own pid
    /// namespace): the last field of NStgid in /proc/TID/status.
    static func ownProcessID(of tid: pid_t) -> UInt32 {
        let text =
            (try? FileSystem.readFile("/proc/\(tid)/status", limit: 1 << 16)).map {
                String(decoding: $0, as: UTF8.self)
            } ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("NStgid:") }
        return line.flatMap { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }).last }.flatMap { UInt32($0) }
            ?? UInt32(tid)
    }

    static func command(of tid: pid_t) -> String {
        let text =
            (try? FileSystem.readFile("/proc/\(tid)/comm", limit: 64)).map { String(decoding: $0, as: UTF8.self) }
            ?? "?"
        return text.hasSuffix("\n") ? String(text.dropLast()) : text
    }
}
