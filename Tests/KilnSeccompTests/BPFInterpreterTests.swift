import CKiln
import Testing

@testable import KilnSeccomp

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct BPFInterpreterTests {
    // AUDIT_ARCH_X86_64, named for the architecture as the kernel spells it.
    // swift-format-ignore: AlwaysUseLowerCamelCase
    static let x86_64: UInt32 = 0xC000_003E

    static func ret(_ action: SeccompAction) -> BPFInstruction {
        BPFInstruction(code: BPF.ret | BPF.k, k: action.rawValue)
    }
    static func load(_ offset: UInt32) -> BPFInstruction { BPFInstruction(code: BPF.ld | BPF.w | BPF.abs, k: offset) }
    static func jeq(_ k: UInt32, _ jt: UInt8, _ jf: UInt8) -> BPFInstruction {
        BPFInstruction(code: BPF.jmp | BPF.jeq | BPF.k, jt: jt, jf: jf, k: k)
    }

    @Test func readsEveryFieldOfSeccompData() throws {
        let input = SeccompInput(
            architecture: Self.x86_64, syscallNumber: 16,
            arguments: [1, 0xAE80, 0x1_0000_0002, 3, 4, 0xFFFF_FFFF_0000_0005],
            instructionPointer: 0x1234_5678_9ABC_DEF0)
        let expected: [(UInt32, UInt32)] = [
            (0, 16), (4, Self.x86_64), (8, 0x9ABC_DEF0), (12, 0x1234_5678),
            (16, 1), (20, 0), (24, 0xAE80), (32, 2), (36, 1), (56, 5), (60, 0xFFFF_FFFF),
        ]
        for (offset, value) in expected {
            // Return A: the word itself comes back as the action value.
            let program = [Self.load(offset), BPFInstruction(code: BPF.ret | BPF.a)]
            #expect(try BPFInterpreter(program).returnValue(for: input) == value, "offset \(offset)")
        }
    }

    @Test func jumpsCompareUnsigned() throws {
        // if nr > 0x7fffffff (a negative int) -> kill, jset bit 1 -> errno(1), >= 10 -> trap, else allow
        let program: [BPFInstruction] = [
            Self.load(0),
            BPFInstruction(code: BPF.jmp | BPF.jgt | BPF.k, jt: 5, jf: 0, k: 0x7FFF_FFFF),
            BPFInstruction(code: BPF.jmp | BPF.jset | BPF.k, jt: 2, jf: 0, k: 0x2),
            BPFInstruction(code: BPF.jmp | BPF.jge | BPF.k, jt: 2, jf: 0, k: 10),
            Self.ret(.allow),
            Self.ret(.errno(1)),
            Self.ret(.trap),
            Self.ret(.killProcess),
        ]
        let interpreter = try BPFInterpreter(program)
        func run(_ nr: Int32) -> SeccompAction {
            interpreter.evaluate(SeccompInput(architecture: Self.x86_64, syscallNumber: nr))
        }
        #expect(run(-1) == .killProcess)
        #expect(run(2) == .errno(1))
        #expect(run(12) == .trap)
        #expect(run(9) == .allow)
        #expect(run(1) == .allow)
    }

    @Test func arithmeticScratchMemoryAndRegisters() throws {
        // A = nr; A = (A + 3) * 4 - 2; X = A; mem[5] = X; A = 0; A = mem[5]; A ^= 0xF; A <<= 1; A >>= 2; A |= 0x100; A &= 0x1FF; neg twice
        let program: [BPFInstruction] = [
            Self.load(0),
            BPFInstruction(code: BPF.alu | BPF.add | BPF.k, k: 3),
            BPFInstruction(code: BPF.alu | BPF.mul | BPF.k, k: 4),
            BPFInstruction(code: BPF.alu | BPF.sub | BPF.k, k: 2),
            BPFInstruction(code: BPF.misc | BPF.tax),
            BPFInstruction(code: BPF.stx, k: 5),
            BPFInstruction(code: BPF.ld | BPF.imm, k: 0),
            BPFInstruction(code: BPF.ld | BPF.mem, k: 5),
            BPFInstruction(code: BPF.alu | BPF.xor | BPF.k, k: 0xF),
            BPFInstruction(code: BPF.alu | BPF.lsh | BPF.k, k: 1),
            BPFInstruction(code: BPF.alu | BPF.rsh | BPF.k, k: 2),
            BPFInstruction(code: BPF.alu | BPF.or | BPF.k, k: 0x100),
            BPFInstruction(code: BPF.alu | BPF.and | BPF.k, k: 0x1FF),
            BPFInstruction(code: BPF.alu | BPF.neg),
            BPFInstruction(code: BPF.alu | BPF.neg),
            BPFInstruction(code: BPF.alu | BPF.div | BPF.x),
            BPFInstruction(code: BPF.ret | BPF.a),
        ]
        let nr: UInt32 = 7
        var a = (nr + 3) * 4 - 2
        let x = a
        a ^= 0xF; a <<= 1; a >>= 2; a |= 0x100; a &= 0x1FF
        a /= x
        let result = try BPFInterpreter(program).returnValue(
            for: SeccompInput(architecture: Self.x86_64, syscallNumber: Int32(nr)))
        #expect(result == a)
    }

    @Test func divisionByZeroInXEndsWithKillThread() throws {
        let program: [BPFInstruction] = [
            BPFInstruction(code: BPF.ldx | BPF.imm, k: 0),
            BPFInstruction(code: BPF.ld | BPF.imm, k: 10),
            BPFInstruction(code: BPF.alu | BPF.div | BPF.x),
            Self.ret(.allow),
        ]
        #expect(
            try BPFInterpreter.evaluate(program, SeccompInput(architecture: Self.x86_64, syscallNumber: 0))
                == .killThread)
    }

    @Test func lengthLoadsGiveTheSizeOfSeccompData() throws {
        let program = [BPFInstruction(code: BPF.ld | BPF.w | BPF.len), BPFInstruction(code: BPF.ret | BPF.a)]
        #expect(try BPFInterpreter(program).returnValue(for: SeccompInput(architecture: 0, syscallNumber: 0)) == 64)
    }

    @Test func refusesWhatTheKernelRefuses() {
        let cases: [([BPFInstruction], String)] = [
            ([], "0 instructions, expected 1...4096"),
            (
                [BPFInstruction(code: BPF.alu | BPF.mod | BPF.k, k: 3), Self.ret(.allow)],
                "instruction 0: opcode 0x94 is not permitted in a seccomp filter"
            ),
            (
                [BPFInstruction(code: BPF.ld | BPF.h | BPF.abs, k: 0), Self.ret(.allow)],
                "instruction 0: opcode 0x28 is not permitted in a seccomp filter"
            ),
            (
                [Self.load(2), Self.ret(.allow)],
                "instruction 0: load from offset 2 outside struct seccomp_data or unaligned"
            ),
            (
                [Self.load(64), Self.ret(.allow)],
                "instruction 0: load from offset 64 outside struct seccomp_data or unaligned"
            ),
            (
                [BPFInstruction(code: BPF.st, k: 16), Self.ret(.allow)],
                "instruction 0: scratch memory index 16 out of range 0...15"
            ),
            (
                [BPFInstruction(code: BPF.alu | BPF.div | BPF.k, k: 0), Self.ret(.allow)],
                "instruction 0: division by constant zero"
            ),
            ([BPFInstruction(code: BPF.alu | BPF.lsh | BPF.k, k: 32), Self.ret(.allow)], "instruction 0: shift by 32"),
            ([Self.jeq(0, 1, 0), Self.ret(.allow)], "instruction 0: jump past the end"),
            ([BPFInstruction(code: BPF.jmp | BPF.ja, k: 1), Self.ret(.allow)], "instruction 0: jump past the end"),
            ([Self.load(0)], "instruction 0: the last instruction must return"),
            (
                [BPFInstruction(code: BPF.ld | BPF.mem, k: 3), Self.ret(.allow)],
                "instruction 0: scratch memory 3 read before it is written"
            ),
            // Written on one path only: the jump's target sees it unwritten.
            (
                [
                    Self.load(0), Self.jeq(1, 0, 1), BPFInstruction(code: BPF.st, k: 2),
                    BPFInstruction(code: BPF.ldx | BPF.mem, k: 2), Self.ret(.allow),
                ],
                "instruction 3: scratch memory 2 read before it is written"
            ),
            (Array(repeating: Self.ret(.allow), count: 4097), "instruction 0: 4097 instructions, expected 1...4096"),
        ]
        for (program, message) in cases {
            #expect(throws: BPFInterpreterError.self) { try BPFInterpreter(program) }
            do {
                _ = try BPFInterpreter(program)
            } catch {
                let text = (error as? BPFInterpreterError)?.description ?? "\(error)"
                #expect(text == message || (program.isEmpty && text == "instruction 0: \(message)"), "got \(text)")
            }
            // The kernel's own checker (seccomp_check_filter, bpf_check_classic) agrees.
            #expect(
                Self.kernelLoadErrno(program) == EINVAL, "the kernel loads what the interpreter refuses: \(message)")
        }
        // And loads a program the interpreter accepts.
        #expect(Self.kernelLoadErrno([Self.load(0), Self.ret(.allow)]) == 0)
    }

    /// Loads `program` into the kernel in a forked child (a program that
    /// loads must not filter the test process) and returns seccomp(2)'s
    /// errno, 0 when it loaded. The child makes raw calls only.
    static func kernelLoadErrno(_ program: [BPFInstruction]) -> Int32 {
        let filters = program.map { sock_filter(code: $0.code, jt: $0.jt, jf: $0.jf, k: $0.k) }
        return filters.withUnsafeBufferPointer { buffer -> Int32 in
            let pid = fork()
            if pid == 0 {
                if ckiln_set_no_new_privs() != 0 { _exit(255) }
                _exit(ckiln_seccomp_load(buffer.baseAddress, UInt16(buffer.count), 0) == 0 ? 0 : min(errno, 254))
            }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            return status & 0x7F == 0 ? (status >> 8) & 0xFF : -1
        }
    }
}

@Suite struct BPFInterpreterOpcodeTests {
    /// Every ALU operation, with K and with X, against Swift's arithmetic.
    @Test func everyALUOperationWithKAndX() throws {
        let operations: [(UInt16, (UInt32, UInt32) -> UInt32)] = [
            (BPF.add, { $0 &+ $1 }), (BPF.sub, { $0 &- $1 }), (BPF.mul, { $0 &* $1 }), (BPF.div, { $0 / $1 }),
            (BPF.and, { $0 & $1 }), (BPF.or, { $0 | $1 }), (BPF.xor, { $0 ^ $1 }),
            (BPF.lsh, { $0 << $1 }), (BPF.rsh, { $0 >> $1 }),
        ]
        for (op, reference) in operations {
            for (a, k): (UInt32, UInt32) in [(0xF0F0_1234, 3), (7, 31), (0xFFFF_FFFF, 2), (100, 7)] {
                for source in [BPF.k, BPF.x] {
                    let program: [BPFInstruction] = [
                        BPFInstruction(code: BPF.ldx | BPF.imm, k: k),
                        BPFInstruction(code: BPF.ld | BPF.imm, k: a),
                        BPFInstruction(code: BPF.alu | op | source, k: k),
                        BPFInstruction(code: BPF.ret | BPF.a),
                    ]
                    let result = try BPFInterpreter(program).returnValue(
                        for: SeccompInput(architecture: 0, syscallNumber: 0))
                    #expect(result == reference(a, k), "op 0x\(String(op, radix: 16)) source \(source) \(a) \(k)")
                }
            }
        }
    }

    /// Every conditional jump, with K and with X.
    @Test func everyJumpWithKAndX() throws {
        let jumps: [(UInt16, (UInt32, UInt32) -> Bool)] = [
            (BPF.jeq, { $0 == $1 }), (BPF.jgt, { $0 > $1 }), (BPF.jge, { $0 >= $1 }), (BPF.jset, { $0 & $1 != 0 }),
        ]
        for (op, reference) in jumps {
            for (a, k): (UInt32, UInt32) in [(5, 5), (5, 6), (6, 5), (0x8000_0000, 1), (2, 1)] {
                for source in [BPF.k, BPF.x] {
                    let program: [BPFInstruction] = [
                        BPFInstruction(code: BPF.ldx | BPF.imm, k: k),
                        BPFInstruction(code: BPF.ld | BPF.imm, k: a),
                        BPFInstruction(code: BPF.jmp | op | source, jt: 1, jf: 0, k: k),
                        BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.trap.rawValue),
                        BPFInstruction(code: BPF.ret | BPF.k, k: SeccompAction.allow.rawValue),
                    ]
                    let result = try BPFInterpreter.evaluate(program, SeccompInput(architecture: 0, syscallNumber: 0))
                    #expect(
                        result == (reference(a, k) ? .allow : .trap),
                        "jump 0x\(String(op, radix: 16)) source \(source) \(a) \(k)")
                }
            }
        }
    }

    @Test func txaAndScratchStore() throws {
        let program: [BPFInstruction] = [
            BPFInstruction(code: BPF.ld | BPF.w | BPF.abs, k: 0),
            BPFInstruction(code: BPF.st, k: 0),
            BPFInstruction(code: BPF.ldx | BPF.mem, k: 0),
            BPFInstruction(code: BPF.ld | BPF.imm, k: 0),
            BPFInstruction(code: BPF.misc | BPF.txa),
            BPFInstruction(code: BPF.ldx | BPF.w | BPF.len),
            BPFInstruction(code: BPF.alu | BPF.add | BPF.x),
            BPFInstruction(code: BPF.jmp | BPF.ja, k: 1),
            BPFInstruction(code: BPF.ret | BPF.k, k: 0),
            BPFInstruction(code: BPF.ret | BPF.a),
        ]
        #expect(try BPFInterpreter(program).returnValue(for: SeccompInput(architecture: 0, syscallNumber: 9)) == 9 + 64)
    }
}
