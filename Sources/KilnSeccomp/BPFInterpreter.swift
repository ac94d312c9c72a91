/// The input a seccomp program sees for one system call (`struct seccomp_data`).
public struct SeccompInput: Hashable, Sendable {
    public var architecture: UInt32
    public var syscallNumber: Int32
    public var instructionPointer: UInt64
    public var arguments: [UInt64]

    public init(architecture: UInt32, syscallNumber: Int32, arguments: [UInt64] = [], instructionPointer: UInt64 = 0) {
        precondition(arguments.count <= 6, "seccomp_data holds six arguments")
        self.architecture = architecture
        self.syscallNumber = syscallNumber
        self.instructionPointer = instructionPointer
        self.arguments = arguments + Array(repeating: 0, count: 6 - arguments.count)
    }

    /// The 32-bit word at `offset`, as BPF_LD|BPF_W|BPF_ABS reads it (host order, little-endian).
    func word(at offset: UInt32) -> UInt32 {
        switch offset {
        case SeccompData.syscallNumberOffset: return UInt32(bitPattern: syscallNumber)
        case SeccompData.architectureOffset: return architecture
        case SeccompData.instructionPointerOffset: return UInt32(truncatingIfNeeded: instructionPointer)
        case SeccompData.instructionPointerOffset + 4: return UInt32(truncatingIfNeeded: instructionPointer >> 32)
        default:
            let relative = Int(offset - SeccompData.argumentOffset(0))
            let argument = arguments[relative / 8]
            return UInt32(truncatingIfNeeded: relative % 8 == 0 ? argument : argument >> 32)
        }
    }
}

public enum BPFInterpreterError: Error, Equatable, CustomStringConvertible {
    case invalidProgram(index: Int, reason: String)

    public var description: String {
        switch self {
        case let .invalidProgram(index, reason): return "instruction \(index): \(reason)"
        }
    }
}

/// A classic-BPF interpreter with the kernel's seccomp rules: it accepts
/// exactly the instructions `seccomp_check_filter` (kernel/seccomp.c) and
/// `bpf_check_classic` (net/core/filter.c) accept, and runs them the way the
/// kernel does. Pure Swift, so tests and the audit can ask "what does this
/// program do for this call?" without installing it.
public struct BPFInterpreter {
    public let program: [BPFInstruction]

    /// Validates `program` as the kernel would before loading it.
    public init(_ program: [BPFInstruction]) throws {
        try Self.validate(program)
        self.program = program
    }

    /// Runs the program; the result is the action the kernel would take.
    public func evaluate(_ input: SeccompInput) -> SeccompAction {
        SeccompAction(rawValue: returnValue(for: input))
    }

    public static func evaluate(_ program: [BPFInstruction], _ input: SeccompInput) throws -> SeccompAction {
        try BPFInterpreter(program).evaluate(input)
    }

    /// Runs the program and returns its 32-bit result as is.
    public func returnValue(for input: SeccompInput) -> UInt32 {
        var a: UInt32 = 0, x: UInt32 = 0
        var memory = [UInt32](repeating: 0, count: 16)
        var pc = 0
        // Validation guarantees every jump lands inside the program and the
        // last instruction returns, so this loop always ends in a return.
        while true {
            let i = program[pc]
            pc += 1
            let operand = i.code & BPF.x != 0 ? x : i.k
            switch i.code & 0x07 {
            case BPF.ld:
                switch i.code {
                case BPF.ld | BPF.w | BPF.abs: a = input.word(at: i.k)
                case BPF.ld | BPF.w | BPF.len: a = UInt32(SeccompData.size)
                case BPF.ld | BPF.imm: a = i.k
                default: a = memory[Int(i.k)] // BPF_LD|BPF_MEM, written first (see validate)
                }
            case BPF.ldx:
                switch i.code {
                case BPF.ldx | BPF.w | BPF.len: x = UInt32(SeccompData.size)
                case BPF.ldx | BPF.imm: x = i.k
                default: x = memory[Int(i.k)] // BPF_LDX|BPF_MEM
                }
            case BPF.st: memory[Int(i.k)] = a
            case BPF.stx: memory[Int(i.k)] = x
            case BPF.alu:
                switch i.code & 0xF0 {
                case BPF.add: a = a &+ operand
                case BPF.sub: a = a &- operand
                case BPF.mul: a = a &* operand
                case BPF.div:
                    // Division by a zero X ends the program with 0 (kill).
                    if operand == 0 { return 0 }
                    a /= operand
                case BPF.and: a &= operand
                case BPF.or: a |= operand
                case BPF.xor: a ^= operand
                case BPF.lsh: a = operand >= 32 ? 0 : a << operand
                case BPF.rsh: a = operand >= 32 ? 0 : a >> operand
                default: a = 0 &- a // BPF_NEG
                }
            case BPF.jmp:
                let op = i.code & 0xF0
                if op == BPF.ja { pc += Int(i.k); continue }
                let taken: Bool
                switch op {
                case BPF.jeq: taken = a == operand
                case BPF.jgt: taken = a > operand
                case BPF.jge: taken = a >= operand
                default: taken = a & operand != 0 // BPF_JSET
                }
                pc += Int(taken ? i.jt : i.jf)
            case BPF.ret:
                return i.code & 0x18 == BPF.a ? a : i.k
            default:
                if i.code == BPF.misc | BPF.tax { x = a } else { a = x } // BPF_TXA
            }
        }
    }

    /// The opcodes seccomp accepts (kernel/seccomp.c, seccomp_check_filter).
    /// BPF_MOD, packet loads other than 32-bit absolute ones, and the
    /// extensions are refused.
    static let permittedOpcodes: Set<UInt16> = {
        var codes: Set<UInt16> = [
            BPF.ld | BPF.w | BPF.abs, BPF.ld | BPF.w | BPF.len, BPF.ldx | BPF.w | BPF.len,
            BPF.ret | BPF.k, BPF.ret | BPF.a,
            BPF.alu | BPF.neg, BPF.ld | BPF.imm, BPF.ldx | BPF.imm, BPF.misc | BPF.tax, BPF.misc | BPF.txa,
            BPF.ld | BPF.mem, BPF.ldx | BPF.mem, BPF.st, BPF.stx, BPF.jmp | BPF.ja,
        ]
        for op in [BPF.add, BPF.sub, BPF.mul, BPF.div, BPF.and, BPF.or, BPF.xor, BPF.lsh, BPF.rsh] {
            codes.insert(BPF.alu | op | BPF.k)
            codes.insert(BPF.alu | op | BPF.x)
        }
        for op in [BPF.jeq, BPF.jge, BPF.jgt, BPF.jset] {
            codes.insert(BPF.jmp | op | BPF.k)
            codes.insert(BPF.jmp | op | BPF.x)
        }
        return codes
    }()

    public static func validate(_ program: [BPFInstruction]) throws {
        guard !program.isEmpty, program.count <= BPF.maximumInstructions else {
            throw BPFInterpreterError.invalidProgram(
                index: 0, reason: "\(program.count) instructions, expected 1...\(BPF.maximumInstructions)")
        }
        for (index, i) in program.enumerated() {
            func fail(_ reason: String) -> BPFInterpreterError { .invalidProgram(index: index, reason: reason) }
            guard permittedOpcodes.contains(i.code) else {
                throw fail("opcode 0x\(String(i.code, radix: 16)) is not permitted in a seccomp filter")
            }
            switch i.code {
            case BPF.ld | BPF.w | BPF.abs:
                guard i.k % 4 == 0, Int(i.k) < SeccompData.size else {
                    throw fail("load from offset \(i.k) outside struct seccomp_data or unaligned")
                }
            case BPF.ld | BPF.mem, BPF.ldx | BPF.mem, BPF.st, BPF.stx:
                guard i.k < 16 else { throw fail("scratch memory index \(i.k) out of range 0...15") }
            case BPF.alu | BPF.div | BPF.k:
                guard i.k != 0 else { throw fail("division by constant zero") }
            case BPF.alu | BPF.lsh | BPF.k, BPF.alu | BPF.rsh | BPF.k:
                guard i.k < 32 else { throw fail("shift by \(i.k)") }
            case BPF.jmp | BPF.ja:
                guard Int(i.k) < program.count - index - 1 else { throw fail("jump past the end") }
            default:
                if i.code & 0x07 == BPF.jmp {
                    guard Int(max(i.jt, i.jf)) < program.count - index - 1 else { throw fail("jump past the end") }
                }
            }
        }
        guard program.last!.code & 0x07 == BPF.ret else {
            throw BPFInterpreterError.invalidProgram(
                index: program.count - 1, reason: "the last instruction must return")
        }
        try checkScratchMemoryIsWrittenBeforeRead(program)
    }

    /// Scratch memory must be stored before it is loaded, on every path
    /// (net/core/filter.c, check_load_and_stores): the same forward pass,
    /// one bit per memory word.
    private static func checkScratchMemoryIsWrittenBeforeRead(_ program: [BPFInstruction]) throws {
        var masks = [UInt16](repeating: 0xFFFF, count: program.count)
        var valid: UInt16 = 0
        for (pc, i) in program.enumerated() {
            valid &= masks[pc]
            switch i.code {
            case BPF.st, BPF.stx:
                valid |= 1 << UInt16(i.k)
            case BPF.ld | BPF.mem, BPF.ldx | BPF.mem:
                guard valid & (1 << UInt16(i.k)) != 0 else {
                    throw BPFInterpreterError.invalidProgram(
                        index: pc, reason: "scratch memory \(i.k) read before it is written")
                }
            case BPF.jmp | BPF.ja:
                masks[pc + 1 + Int(i.k)] &= valid
                valid = 0xFFFF
            default:
                if i.code & 0x07 == BPF.jmp {
                    masks[pc + 1 + Int(i.jt)] &= valid
                    masks[pc + 1 + Int(i.jf)] &= valid
                    valid = 0xFFFF
                }
            }
        }
    }
}
