import KilnSeccomp
import Testing

@testable import KilnPolicy

@Suite struct PolicyParserTests {
    typealias Support = PolicyTestSupport

    @Test func parsesRulesConditionsActionsAndJustifications() throws {
        let policy = try Support.role(
            """
            # header comment, separated by a blank line: not a justification

            @default trap
            # the loop needs this
            read
            write -> log   # trailing justification
            ioctl: arg1 in {KVM_RUN, KVM_SET_REGS} # run and reset
            mmap: arg2 & PROT_EXEC == 0 && arg3 == MAP_PRIVATE|MAP_ANONYMOUS || arg0 == 0  # memory
            futex: arg1 & ~FUTEX_PRIVATE_FLAG in {FUTEX_WAIT, FUTEX_WAKE} # locks
            openat: arg0 == AT_FDCWD -> errno(EACCES)   # refuse politely
            clone3 -> errno(38)  # numeric errno
            lseek: arg1 < 0x1000 && arg2 <= 2 # small seeks
            mremap: arg2 > 4096 || arg2 >= 0o20000 || arg2 != 0b1 # sizes
            """)
        #expect(policy.role == "test")
        #expect(policy.defaultAction == .trap)
        #expect(
            policy.rules.map(\.syscall) == [
                "read", "write", "ioctl", "mmap", "futex", "openat", "clone3", "lseek", "mremap",
            ])
        let rules = Dictionary(uniqueKeysWithValues: policy.rules.map { ($0.syscall, $0) })
        #expect(rules["read"]!.justification == "the loop needs this")
        #expect(rules["read"]!.isUnconditional)
        #expect(rules["write"]!.action == .log)
        #expect(rules["write"]!.justification == "trailing justification")

        let ioctl = rules["ioctl"]!
        #expect(ioctl.alternatives.count == 2)
        #expect(ioctl.alternatives[0].count == 1)
        #expect(ioctl.alternatives[0][0].value == 0xAE80)
        #expect(ioctl.alternatives[0][0].width == 32)
        #expect(ioctl.alternatives[1][0].value == 0x4090_AE82)
        #expect(ioctl.conditionText == "arg1 in {KVM_RUN, KVM_SET_REGS}")

        // && binds tighter than ||; & binds tighter than ==.
        let mmap = rules["mmap"]!
        #expect(mmap.alternatives.count == 2)
        #expect(mmap.alternatives[0].map(\.argument) == [2, 3])
        #expect(mmap.alternatives[0][0].mask == 4 && mmap.alternatives[0][0].value == 0)
        #expect(mmap.alternatives[0][1].value == 0x22 && mmap.alternatives[0][1].width == 64)
        #expect(mmap.alternatives[1].map(\.argument) == [0])

        // ~ is narrowed to the 32 bits the kernel reads of futex's op.
        let futex = rules["futex"]!
        #expect(futex.alternatives.map { $0[0].mask } == [0xFFFF_FF7F, 0xFFFF_FF7F])
        #expect(futex.alternatives.map { $0[0].value } == [0, 1])

        // AT_FDCWD is an int: -100 in the low 32 bits.
        #expect(rules["openat"]!.alternatives[0][0].value == 0xFFFF_FF9C)
        #expect(rules["openat"]!.action == .errno(13))
        #expect(rules["clone3"]!.action == .errno(38))
        #expect(rules["lseek"]!.alternatives[0].map(\.op) == [.less, .lessOrEqual])
        #expect(rules["mremap"]!.alternatives.map { $0[0].value } == [4096, 0o20000, 1])
    }

    @Test func conditionsMaySpanLines() throws {
        let policy = try Support.role(
            """
            @default kill-process
            ioctl: arg1 in {KVM_RUN,      # run
                            KVM_IRQ_LINE} # interrupts
            mmap: arg2 & PROT_EXEC == 0
                && arg3 == MAP_SHARED     # guest memory
            """)
        #expect(policy.rules[0].alternatives.count == 2)
        #expect(policy.rules[0].justification == "run interrupts")
        #expect(policy.rules[1].alternatives[0].count == 2)
        #expect(policy.rules[1].justification == "guest memory")
    }

    @Test func mergesTestsOfOneArgumentIntoOneComparison() throws {
        let policy = try Support.role(
            """
            @default trap
            mmap: arg3 & MAP_SHARED == MAP_SHARED && arg3 & MAP_FIXED == 0 # two masks, one argument
            ioctl: arg1 == KVM_RUN && arg1 < 0x10000  # exact value decides the range
            """)
        let mmap = policy.rules[0].alternatives[0]
        #expect(mmap.count == 1)
        #expect(mmap[0].mask == 0x11 && mmap[0].value == 0x1)
        #expect(policy.rules[1].alternatives[0].count == 1)
        #expect(policy.rules[1].alternatives[0][0].op == .equal)
    }

    /// Each invalid input and the exact message it gets.
    @Test(
        arguments: [
            ("@default trap\niotcl\n", "t.policy:2:1: unknown system call 'iotcl'; did you mean 'ioctl'?"),
            (
                "@default trap\nioctl: arg1 == KVM_RUM\n",
                "t.policy:2:16: unknown constant 'KVM_RUM'; did you mean 'KVM_RUN'?"
            ),
            (
                "@default trap\nioctl: arg1 == KVM_FROBNICATE_EVERYTHING\n",
                "t.policy:2:16: unknown constant 'KVM_FROBNICATE_EVERYTHING'"
            ),
            (
                "@default trap\nread: arg6 == 1\n",
                "t.policy:2:7: argument index 6 is out of range: system calls have arg0...arg5"
            ),
            (
                "@default trap\nclose: arg3 == 0\n",
                "t.policy:2:8: close takes 1 argument (arg0...arg0): arg3 is a register the kernel ignores and the caller fills, so testing it restricts nothing"
            ),
            (
                "@default trap\nioctl: arg1 == KVM_RUN && arg5 == 0\n",
                "t.policy:2:27: ioctl takes 3 arguments (arg0...arg2): arg5 is a register the kernel ignores and the caller fills, so testing it restricts nothing"
            ),
            (
                "@default trap\nread: arg0 == 1 && arg0 == 2\n",
                "t.policy:2:20: contradiction: 'arg0 == 1' and 'arg0 == 2' can never both hold"
            ),
            (
                "@default trap\nmmap: arg1 > 10 && arg1 < 5\n",
                "t.policy:2:20: contradiction: 'arg1 > 0xa' and 'arg1 < 5' can never both hold"
            ),
            (
                "@default trap\nmmap: arg1 > 10 && arg1 < 50\n",
                "t.policy:2:20: 'arg1 > 0xa' and 'arg1 < 0x32' test the same argument; seccomp (libseccomp) compares each argument once per alternative: split them with ||"
            ),
            (
                "@default trap\nmmap: arg2 & PROT_EXEC == PROT_WRITE\n",
                "t.policy:2:7: 'arg2 & PROT_EXEC == PROT_WRITE' can never hold: the value has bits outside the mask"
            ),
            (
                "@default trap\nioctl: arg1 != KVM_RUN\n",
                "t.policy:2:13: '!=' cannot be enforced on arg1 of ioctl: the kernel reads only its low 32 bits and the caller controls the rest; use ==, in, a mask, < or <="
            ),
            (
                "@default trap\nioctl: arg1 == 0x100000000\n",
                "t.policy:2:16: value 0x100000000 does not fit this 32-bit argument"
            ),
            (
                "@default trap\nmmap: arg2 & PROT_EXEC < 1\n",
                "t.policy:2:24: a masked test supports only == and in (seccomp has no masked '<')"
            ),
            ("@default trap\nread -> kill\n", "t.policy:2:9: unknown action 'kill'; did you mean 'kill-process'?"),
            (
                "@default trap\nread -> errno(EPREM)\n",
                "t.policy:2:15: unknown errno name 'EPREM'; did you mean 'EPERM'?"
            ),
            ("@default trap\nread -> errno(5000)\n", "t.policy:2:15: errno value 5000 is out of range 1...4095"),
            ("@defualt trap\n", "t.policy:1:1: unknown directive '@defualt'; did you mean '@default'?"),
            ("@default trap\n@default trap\n", "t.policy:2:1: @default given twice (first at t.policy:1:1)"),
            (
                "@default allow\n",
                "t.policy:1:1: @default allow lets every unlisted system call through; choose trap, errno(...), kill-thread or kill-process"
            ),
            ("@default trap\nread: arg0 = 1\n", "t.policy:2:12: unexpected '='; comparisons use '=='"),
            ("@default trap\nread: arg0 == 1 extra\n", "t.policy:2:17: expected the end of the line, found 'extra'"),
            (
                "@default trap\nread: arg0 in {1, 2\n",
                "t.policy:3:1: expected '}' to close the set, found the end of the file"
            ),
            ("@default trap\nread: fd == 1\n", "t.policy:2:7: expected an argument (arg0...arg5), found 'fd'"),
            ("@default trap\nread: arg0 == 0x\n", "t.policy:2:15: expected digits after the base prefix"),
            ("@default trap\nread: arg0 == 99999999999999999999\n", "t.policy:2:15: number does not fit in 64 bits"),
            ("@default trap\nread: arg0 == 12ab\n", "t.policy:2:15: invalid digit 'a' in a base-10 number"),
            ("@default trap\n@include common\n", "t.policy:2:10: @include expects a quoted file name, found 'common'"),
            (
                "@default trap\n@include \"../etc/passwd\"\n",
                "t.policy:2:10: @include \"../etc/passwd\": name a .policy file in the same folder"
            ),
            ("@default trap\nread $\n", "t.policy:2:6: unexpected '$'"),
            ("@default trap\n: read\n", "t.policy:2:1: expected a rule or a directive, found ':'"),
            ("@default trap\n@include \"x.policy\n", "t.policy:2:10: unterminated string"),
            (
                "@default trap\nread: " + String(repeating: "(", count: 40) + "arg0 == 1\n",
                "t.policy:2:39: nesting deeper than 32 levels"
            ),
            (
                "@default trap\nread: arg0 == " + String(repeating: "~", count: 40) + "1\n",
                "t.policy:2:48: nesting deeper than 32 levels"
            ),
        ] as [(String, String)])
    func rejectsWithMessage(_ text: String, _ message: String) {
        #expect(Support.error(["t.policy": text]) == message)
    }

    /// OWN_PID stands for the installing process's id: alone with == or in
    /// it compiles to the placeholder; anything that would compute with it
    /// (a mask, an ordering, |, ~) is refused, and so is the placeholder
    /// written as a number.
    @Test func ownProcessIDIsAWholeValueOnly() throws {
        let policy = try Support.load([
            "t.policy": "@default trap\ntgkill: arg0 == OWN_PID && arg2 in {SIGABRT, SIGUSR1}\n"
        ])
        .first { $0.role == "t" }!
        let tests = policy.rules[0].alternatives.flatMap { $0 }.filter { $0.argument == 0 }
        #expect(
            !tests.isEmpty
                && tests.allSatisfy { $0.value == UInt64(OwnProcessID.placeholder) && $0.valueText == "OWN_PID" })
        for condition in [
            "arg0 & OWN_PID == 1", "arg0 < OWN_PID", "arg0 == OWN_PID|1", "arg0 == ~OWN_PID",
            "arg0 == (OWN_PID)", "arg0 & 0xff in {OWN_PID}",
        ] {
            let message = Support.error(["t.policy": "@default trap\ntgkill: \(condition)\n"]) ?? ""
            #expect(message.contains("OWN_PID is the installing process's id"), "\(condition): \(message)")
        }
        for value in ["0x50494421", "0x50494420|1", "~0xffffffffafb6bbde", "0x5049442100000000"] {
            let syscall = value.count > 12 ? "mmap: arg1" : "tgkill: arg0"
            let message = Support.error(["t.policy": "@default trap\n\(syscall) == \(value)\n"]) ?? ""
            #expect(message.contains("is reserved"), "\(value): \(message)")
        }
    }

    @Test func loaderErrors() {
        #expect(
            Support.error([
                "a.policy": "@default trap\n@include \"b.policy\"\nread # r\n",
                "b.policy": "read # again\n",
            ])
                == "b.policy:1:1: duplicate rule for 'read' (first at a.policy:3:1); a role has one rule per system call: join the conditions with ||"
        )
        #expect(
            Support.error([
                "a.policy": "@default trap\n@include \"b.policy\"\n",
                "b.policy": "@include \"c.policy\"\n",
                "c.policy": "@include \"b.policy\"\n",
            ]) == "c.policy:1:10: include cycle: b.policy -> c.policy -> b.policy")
        #expect(
            Support.error([
                "a.policy": "@default trap\n@include \"a.policy\"\n"
            ]) == "a.policy:2:10: include cycle: a.policy -> a.policy")
        #expect(
            Support.error([
                "a.policy": "@default trap\n@include \"b.policy\"\n",
                "b.policy": "@default trap\n",
            ]) == "b.policy:1:1: b.policy sets @default, so it is a role of its own and cannot be included")
        #expect(
            Support.error([
                "a.policy": "@default trap\n",
                "orphan.policy": "read # nobody includes me\n",
            ]) == "orphan.policy:1:1: orphan.policy has no @default and no role includes it")
        #expect(
            Support.error([
                "a.policy": "@default trap\n@include \"missing.policy\"\n"
            ]) == "a.policy:2:10: @include \"missing.policy\": no such file missing.policy")
    }

    @Test func includesAreSharedBetweenRoles() throws {
        let roles = try Support.load([
            "common.policy": "exit # end a thread\n",
            "a.policy": "@default trap\n@include \"common.policy\"\nread # a\n",
            "b.policy": "@default errno(EPERM)\n@include \"common.policy\"\nwrite # b\n",
        ])
        #expect(roles.map(\.role) == ["a", "b"])
        #expect(roles[0].rules.map(\.syscall) == ["read", "exit"])
        #expect(roles[1].rules.map(\.syscall) == ["write", "exit"])
        #expect(roles[1].defaultAction == .errno(1))
    }

    @Test func aDiamondIncludeContributesItsRulesOnce() throws {
        let roles = try Support.load([
            "common.policy": "exit # end a thread\n",
            "memory.policy": "@include \"common.policy\"\nbrk # malloc\n",
            "signals.policy": "@include \"common.policy\"\nrt_sigreturn # handlers\n",
            "a.policy":
                "@default trap\n@include \"memory.policy\"\n@include \"signals.policy\"\n@include \"memory.policy\"\n",
        ])
        #expect(roles.map(\.role) == ["a"])
        #expect(roles[0].rules.map(\.syscall) == ["brk", "exit", "rt_sigreturn"])
    }

    @Test func suggestionsUseEditDistance() {
        #expect(Suggestion.editDistance("kitten", "sitting") == 3)
        #expect(Suggestion.editDistance("ioctl", "iotcl") == 1) // a transposition is one edit
        #expect(Suggestion.closest(to: "epol_wait", in: SyscallTable.names) == "epoll_wait")
        #expect(Suggestion.closest(to: "zzzzzzzz", in: SyscallTable.names) == nil)
    }
}
