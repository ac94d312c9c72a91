import CKiln
import KilnSeccomp
import KilnTestSupport
import Testing

@testable import KilnPolicy

#if canImport(Glibc)
    import Glibc
#endif

/// The kernel as the judge: random inputs, each made as a real system call
/// in a forked child under the role's compiled filter, must get what the
/// policy says. The interpreter and `expectedAction` are this project's own
/// code; the kernel's seccomp evaluation is not.
///
/// No call may really run (its arguments are random), so the child installs
/// a catch-all filter first that answers every call with errno 4095 but exit,
/// exit_group, rt_sigreturn and seccomp (which loads the role's filter next);
/// the random inputs never make those four. The kernel runs the newest filter first and
/// keeps the first verdict of the highest precedence (seccomp(2), "Filter
/// return values"): the role's kill, trap or errno wins, and its allow (or
/// log) leaves the catch-all's errno 4095. A trap's SIGSYS handler makes the
/// call return errno 4094; a kill ends the child, which the parent sees.
enum KernelVerdict: Equatable, CustomStringConvertible {
    case letThrough
    case errno(Int32)
    case trap, killed
    /// The call ran: the catch-all failed to stop it.
    case ran(Int64)

    static let letThroughErrno: Int64 = 4095, trapErrno: Int64 = 4094

    /// What the kernel should answer for a policy's action.
    init(expected action: SeccompAction) {
        switch action {
        case .allow, .log, .trace: self = .letThrough // trace and log rank below the catch-all's errno
        case let .errno(code): self = .errno(Int32(code))
        case .trap: self = .trap
        case .killThread, .killProcess, .unknown: self = .killed
        }
    }

    init(result: Int64) {
        switch result {
        case -Self.letThroughErrno: self = .letThrough
        case -Self.trapErrno: self = .trap
        case ..<0: self = .errno(Int32(-result))
        default: self = .ran(result)
        }
    }

    var description: String {
        switch self {
        case .letThrough: return "let through"
        case let .errno(code): return "errno \(code)"
        case .trap: return "trap"
        case .killed: return "killed"
        case let .ran(result): return "ran, returning \(result)"
        }
    }

    /// The calls the child itself needs: to load the role's filter, to
    /// return from its SIGSYS handler and to end.
    static let passedByCatchAll = ["seccomp", "rt_sigreturn", "exit", "exit_group"]

    /// The catch-all filter: errno 4095 for every call but `passedByCatchAll`.
    static func catchAll() -> [BPFInstruction] {
        let passed = passedByCatchAll.map { UInt32(SyscallTable.number(of: $0)!) }
        var program = [BPFInstruction(code: BPF.ld | BPF.w | BPF.abs, k: SeccompData.syscallNumberOffset)]
        for (index, number) in passed.enumerated() {
            // Jump to the final allow, past the remaining comparisons and the errno.
            program.append(
                BPFInstruction(code: BPF.jmp | BPF.jeq | BPF.k, jt: UInt8(passed.count - index), jf: 0, k: number))
        }
        program.append(BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.errno(UInt16(letThroughErrno)).rawValue))
        program.append(BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.allow.rawValue))
        return program
    }

    /// Replays `inputs` under `program` in forked children, one child until
    /// one is killed, then a fresh one from the next input. Returns each
    /// input's verdict, or throws when a child ends any other way.
    static func replay(_ inputs: [SeccompInput], under program: [BPFInstruction]) throws -> [KernelVerdict] {
        let filters = [catchAll(), program].map { $0.map { sock_filter(code: $0.code, jt: $0.jt, jf: $0.jf, k: $0.k) } }
        let calls = inputs.flatMap {
            [UInt64(UInt32(bitPattern: $0.syscallNumber))] + $0.arguments
                + [UInt64](repeating: 0, count: 6 - $0.arguments.count)
        }
        // Shared with the children: [0] the input being made, then one result each.
        let size = (inputs.count + 1) * MemoryLayout<Int64>.stride
        guard let raw = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0), raw != MAP_FAILED
        else {
            throw KernelVerdictFailure("mmap of the shared results failed: errno \(Glibc.errno)")
        }
        defer { munmap(raw, size) }
        let shared = raw.bindMemory(to: Int64.self, capacity: inputs.count + 1)
        var action = sigaction()
        action.__sigaction_handler = .init(sa_sigaction: returnTrapErrno)
        action.sa_flags = SA_SIGINFO
        var verdicts: [KernelVerdict] = []
        var next = 0
        while next < inputs.count {
            shared[0] = Int64(next)
            let pid = filters[0].withUnsafeBufferPointer { catchAll in
                filters[1].withUnsafeBufferPointer { role in
                    calls.withUnsafeBufferPointer { calls in
                        let pid = fork()
                        guard pid == 0 else { return pid }
                        // The child: raw calls only (the parent's other threads may hold libc locks).
                        alarm(30) // a child stuck in a call fails the test rather than hanging it
                        if sigaction(SIGSYS, &action, nil) != 0 { _exit(100) }
                        if ckiln_set_no_new_privs() != 0 { _exit(101) }
                        if ckiln_seccomp_load(catchAll.baseAddress, UInt16(catchAll.count), 0) != 0 { _exit(102) }
                        if ckiln_seccomp_load(role.baseAddress, UInt16(role.count), 0) != 0 { _exit(103) }
                        var index = Int(shared[0])
                        while index < inputs.count {
                            shared[0] = Int64(index)
                            let a = calls.baseAddress! + index * 7
                            let result = ckiln_syscall6(
                                Int(a[0]), UInt(a[1]), UInt(a[2]), UInt(a[3]), UInt(a[4]), UInt(a[5]), UInt(a[6]))
                            shared[1 + index] = result == -1 ? -Int64(Glibc.errno) : Int64(result)
                            index += 1
                        }
                        shared[0] = Int64(index)
                        _exit(0)
                    }
                }
            }
            guard pid > 0 else { throw KernelVerdictFailure("fork failed: errno \(Glibc.errno)") }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && Glibc.errno == EINTR {}
            let reached = Int(shared[0])
            let signal = status & 0x7F
            verdicts += (next..<reached).map { KernelVerdict(result: shared[1 + $0]) }
            if reached == inputs.count { break }
            guard signal == SIGSYS else {
                throw KernelVerdictFailure(
                    "the child ended with status \(status) at input \(reached): \(inputs[reached])")
            }
            verdicts.append(.killed)
            next = reached + 1
        }
        return verdicts
    }
}

struct KernelVerdictFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The trapped call returns -4094: the SIGSYS handler rewrites the saved
/// RAX (x86_64 <sys/ucontext.h>: gregs[REG_RAX], REG_RAX = 13), which
/// rt_sigreturn restores as the call's return value.
private func returnTrapErrno(
    _ signal: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?
) {
    guard let context else { return }
    let userContext = context.assumingMemoryBound(to: ucontext_t.self)
    withUnsafeMutableBytes(of: &userContext.pointee.uc_mcontext.gregs) {
        $0.storeBytes(of: Int64(-4094), toByteOffset: 13 * MemoryLayout<Int64>.stride, as: Int64.self)
    }
}

@Suite(.enabled(if: SeccompSupport.available, "the kernel has no seccomp filter mode (CONFIG_SECCOMP_FILTER)"))
struct KernelVerdictTests {
    /// Every shipped role, 2,000 random inputs each, all 64 bits of every
    /// argument random (`CompiledPolicyTests.randomInputs`).
    @Test func randomInputsGetThePolicysVerdictFromTheKernel() throws {
        var generator = SplitMix64(seed: 0x6B65_726E)
        var seen: [String: Int] = [:]
        for policy in try CompiledPolicyTests.shippedRoles() {
            let program = try PolicyCompiler.compile(policy)
            let interpreter = try BPFInterpreter(program)
            let inputs = CompiledPolicyTests.randomInputs(for: policy, count: 2000, using: &generator)
            let verdicts = try KernelVerdict.replay(inputs, under: program)
            #expect(verdicts.count == inputs.count)
            var mismatches = 0
            for (input, verdict) in zip(inputs, verdicts) {
                let expected = KernelVerdict(expected: PolicyTestSupport.expectedAction(policy, input))
                if verdict != expected && mismatches < 10 {
                    Issue.record(
                        "\(policy.role): syscall \(input.syscallNumber) \(input.arguments.map { "0x" + String($0, radix: 16) }): kernel \(verdict), policy \(expected), interpreter \(interpreter.evaluate(input))"
                    )
                }
                if verdict != expected { mismatches += 1 }
                seen[String(describing: verdict).split(separator: " ").first.map(String.init) ?? "", default: 0] += 1
            }
            #expect(mismatches == 0, "\(policy.role): \(mismatches) of \(inputs.count) inputs")
        }
        // The pass reaches every outcome the roles use: calls let through,
        // trapped (thread roles) and killed (the jailer's pre-exec filter).
        #expect(
            seen["let", default: 0] >= 1000 && seen["trap", default: 0] >= 1000 && seen["killed", default: 0] >= 100,
            "\(seen)")
        #expect(seen["ran"] == nil, "\(seen)")
    }

    /// The catch-all alone: getpid gets errno 4095 instead of running, and
    /// a trapping filter on top gives 4094 (the replay's own mechanism).
    @Test func theReplayStopsEveryCallAndTellsTrapFromAllow() throws {
        let getpid = SyscallTable.number(of: "getpid")!
        let allowAll = [BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.allow.rawValue)]
        // Trap all but rt_sigreturn, which the SIGSYS handler returns through.
        let trapAll = [
            BPFInstruction(code: BPF.ld | BPF.w | BPF.abs, k: SeccompData.syscallNumberOffset),
            BPFInstruction(
                code: BPF.jmp | BPF.jeq | BPF.k, jt: 0, jf: 1, k: UInt32(SyscallTable.number(of: "rt_sigreturn")!)),
            BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.allow.rawValue),
            BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.trap.rawValue),
        ]
        let killAll = [BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.killProcess.rawValue)]
        let errnoAll = [BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.errno(UInt16(EPERM)).rawValue)]
        let input = SeccompInput(architecture: PolicyCompiler.architecture, syscallNumber: getpid)
        #expect(try KernelVerdict.replay([input, input], under: allowAll) == [.letThrough, .letThrough])
        #expect(try KernelVerdict.replay([input, input], under: trapAll) == [.trap, .trap])
        #expect(try KernelVerdict.replay([input, input], under: killAll) == [.killed, .killed])
        #expect(try KernelVerdict.replay([input], under: errnoAll) == [.errno(EPERM)])
    }
}
