import KilnBytes

/// One classic-BPF instruction, as `struct sock_filter` lays it out
/// (linux/filter.h): a 16-bit opcode, two 8-bit jump offsets, a 32-bit operand.
public struct BPFInstruction: Hashable, Sendable, CustomStringConvertible {
    public var code: UInt16
    public var jt: UInt8
    public var jf: UInt8
    public var k: UInt32

    public init(code: UInt16, jt: UInt8 = 0, jf: UInt8 = 0, k: UInt32 = 0) {
        self.code = code
        self.jt = jt
        self.jf = jf
        self.k = k
    }

    public static let encodedSize = 8

    public var description: String {
        "{0x\(String(code, radix: 16)), \(jt), \(jf), 0x\(String(k, radix: 16))}"
    }

    /// Little-endian bytes, as the kernel reads them on x86_64.
    public func encode(into bytes: inout [UInt8]) {
        bytes.appendLittleEndian(code)
        bytes.append(jt)
        bytes.append(jf)
        bytes.appendLittleEndian(k)
    }

    public init<C: Collection>(decoding bytes: C) where C.Element == UInt8, C.Index == Int {
        precondition(bytes.count == Self.encodedSize)
        let b = bytes.startIndex
        code = UInt16(bytes[b]) | UInt16(bytes[b + 1]) << 8
        jt = bytes[b + 2]
        jf = bytes[b + 3]
        k = UInt32(bytes[b + 4]) | UInt32(bytes[b + 5]) << 8 | UInt32(bytes[b + 6]) << 16 | UInt32(bytes[b + 7]) << 24
    }
}

/// Classic-BPF opcode fields (linux/bpf_common.h), for building and reading programs.
public enum BPF {
    // Instruction classes.
    public static let ld: UInt16 = 0x00
    public static let ldx: UInt16 = 0x01
    public static let st: UInt16 = 0x02
    public static let stx: UInt16 = 0x03
    public static let alu: UInt16 = 0x04
    public static let jmp: UInt16 = 0x05
    public static let ret: UInt16 = 0x06
    public static let misc: UInt16 = 0x07
    // Sizes and modes.
    public static let w: UInt16 = 0x00
    public static let h: UInt16 = 0x08
    public static let b: UInt16 = 0x10
    public static let imm: UInt16 = 0x00
    public static let abs: UInt16 = 0x20
    public static let ind: UInt16 = 0x40
    public static let mem: UInt16 = 0x60
    public static let len: UInt16 = 0x80
    // ALU and jump operations.
    public static let add: UInt16 = 0x00, sub: UInt16 = 0x10, mul: UInt16 = 0x20, div: UInt16 = 0x30
    public static let or: UInt16 = 0x40, and: UInt16 = 0x50, lsh: UInt16 = 0x60, rsh: UInt16 = 0x70
    public static let neg: UInt16 = 0x80, mod: UInt16 = 0x90, xor: UInt16 = 0xa0
    public static let ja: UInt16 = 0x00, jeq: UInt16 = 0x10, jgt: UInt16 = 0x20, jge: UInt16 = 0x30
    public static let jset: UInt16 = 0x40
    public static let k: UInt16 = 0x00
    public static let x: UInt16 = 0x08
    public static let a: UInt16 = 0x10
    public static let tax: UInt16 = 0x00
    public static let txa: UInt16 = 0x80

    /// The kernel's limit on one program (BPF_MAXINSNS, linux/bpf_common.h).
    public static let maximumInstructions = 4096
}

/// Offsets into `struct seccomp_data` (linux/seccomp.h), the packet a
/// seccomp program reads.
public enum SeccompData {
    public static let syscallNumberOffset: UInt32 = 0
    public static let architectureOffset: UInt32 = 4
    public static let instructionPointerOffset: UInt32 = 8
    /// args[i] is 64 bits at 16 + 8i; the low half comes first on little-endian.
    public static func argumentOffset(_ index: Int) -> UInt32 { 16 + 8 * UInt32(index) }
    public static let size = 64
}
