import KilnBytes

/// The compiled policies that travel from `kiln-policy compile` through the
/// jailer to the VMM: one BPF program per thread role, in one file.
///
/// Layout (all integers little-endian):
///
///     magic        8 bytes  "KILNSECC"
///     version      u16      1
///     architecture u32      AUDIT_ARCH_* the programs were compiled for
///     role count   u16      1...16
///     per role, sorted by name:
///       name length u8, name (ASCII [a-z0-9-], 1...32 bytes)
///       instruction count u16 (1...4096), then 8 bytes per instruction
///
/// Nothing may follow the last role. The parser checks every length before it
/// reads, so a truncated or hostile file is an error, never a crash.
public struct SeccompBundle: Equatable, Sendable {
    public static let magic: [UInt8] = Array("KILNSECC".utf8)
    public static let version: UInt16 = 1
    public static let maximumRoles = 16
    public static let maximumRoleNameLength = 32

    /// The role whose program the jailer installs before it execs the VMM:
    /// the union of every thread role plus what exec and start-up need.
    public static let jailerRole = "jailer"
    /// kiln's own filter from its first line of Swift code (launch.policy).
    public static let launchRole = "launch"

    public var architecture: UInt32
    public private(set) var programs: [(role: String, instructions: [BPFInstruction])]

    public static func == (lhs: SeccompBundle, rhs: SeccompBundle) -> Bool {
        lhs.architecture == rhs.architecture && lhs.programs.count == rhs.programs.count
            && zip(lhs.programs, rhs.programs).allSatisfy { $0.role == $1.role && $0.instructions == $1.instructions }
    }

    /// Builds a bundle; roles are sorted by name so the encoding is deterministic.
    public init(architecture: UInt32, programs: [String: [BPFInstruction]]) throws {
        self.architecture = architecture
        self.programs = programs.map { (role: $0.key, instructions: $0.value) }.sorted { $0.role < $1.role }
        try validate()
    }

    public var roles: [String] { programs.map(\.role) }

    public func program(for role: String) -> [BPFInstruction]? {
        programs.first { $0.role == role }?.instructions
    }

    public func encoded() -> [UInt8] {
        var bytes = Self.magic
        bytes.appendLittleEndian(Self.version)
        bytes.appendLittleEndian(architecture)
        bytes.appendLittleEndian(UInt16(programs.count))
        for (role, instructions) in programs {
            bytes.append(UInt8(role.utf8.count))
            bytes.append(contentsOf: role.utf8)
            bytes.appendLittleEndian(UInt16(instructions.count))
            for instruction in instructions { instruction.encode(into: &bytes) }
        }
        return bytes
    }

    public init<C: Collection>(decoding input: C) throws where C.Element == UInt8 {
        var reader = SeccompBundleReader(Array(input))
        guard Array(try reader.bytes(Self.magic.count, "magic")) == Self.magic else {
            throw SeccompBundleError.malformed("not a Kiln seccomp bundle (bad magic)")
        }
        let version: UInt16 = try reader.integer("version")
        guard version == Self.version else {
            throw SeccompBundleError.malformed("unsupported bundle version \(version), expected \(Self.version)")
        }
        architecture = try reader.integer("architecture")
        let roleCount: UInt16 = try reader.integer("role count")
        programs = []
        for _ in 0..<roleCount {
            guard programs.count < Self.maximumRoles else {
                throw SeccompBundleError.malformed("more than \(Self.maximumRoles) roles")
            }
            let nameLength: UInt8 = try reader.integer("role name length")
            let role = String(decoding: try reader.bytes(Int(nameLength), "role name"), as: UTF8.self)
            let count: UInt16 = try reader.integer("instruction count of role \(role)")
            guard count >= 1 && Int(count) <= BPF.maximumInstructions else {
                throw SeccompBundleError.malformed(
                    "role \(role): \(count) instructions, expected 1...\(BPF.maximumInstructions)")
            }
            let raw = Array(try reader.bytes(Int(count) * BPFInstruction.encodedSize, "instructions of role \(role)"))
            let instructions = stride(from: 0, to: raw.count, by: BPFInstruction.encodedSize).map {
                BPFInstruction(decoding: raw[$0..<$0 + BPFInstruction.encodedSize])
            }
            programs.append((role, instructions))
        }
        guard reader.isAtEnd else {
            throw SeccompBundleError.malformed("\(reader.remaining) unexpected bytes after the last role")
        }
        try validate()
    }

    private func validate() throws {
        guard !programs.isEmpty && programs.count <= Self.maximumRoles else {
            throw SeccompBundleError.malformed("a bundle holds 1...\(Self.maximumRoles) roles, not \(programs.count)")
        }
        var previous: String?
        for (role, instructions) in programs {
            guard (1...Self.maximumRoleNameLength).contains(role.utf8.count),
                role.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D })
            else {
                throw SeccompBundleError.malformed("invalid role name \"\(role)\"")
            }
            if let previous, previous >= role {
                throw SeccompBundleError.malformed("roles out of order or duplicated at \"\(role)\"")
            }
            previous = role
            guard !instructions.isEmpty else {
                throw SeccompBundleError.malformed("role \(role) has an empty program")
            }
            guard instructions.count <= BPF.maximumInstructions else {
                throw SeccompBundleError.programTooLong(role: role, instructions: instructions.count)
            }
        }
    }
}

public enum SeccompBundleError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    case programTooLong(role: String, instructions: Int)
    case missingRole(String)

    public var description: String {
        switch self {
        case let .malformed(reason): return "malformed seccomp bundle: \(reason)"
        case let .programTooLong(role, count):
            return "role \(role): \(count) BPF instructions exceed the kernel's limit of \(BPF.maximumInstructions)"
        case let .missingRole(role): return "the seccomp bundle has no program for role \"\(role)\""
        }
    }
}

/// A bounds-checked cursor over untrusted bytes.
struct SeccompBundleReader {
    private let storage: [UInt8]
    private var offset = 0

    init(_ storage: [UInt8]) { self.storage = storage }

    var isAtEnd: Bool { offset == storage.count }
    var remaining: Int { storage.count - offset }

    mutating func bytes(_ count: Int, _ what: String) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else {
            throw SeccompBundleError.malformed("truncated at \(what) (offset \(offset))")
        }
        defer { offset += count }
        return storage[offset..<offset + count]
    }

    mutating func integer<T: FixedWidthInteger>(_ what: String) throws -> T {
        guard let value: T = storage.littleEndian(at: offset) else {
            throw SeccompBundleError.malformed("truncated at \(what) (offset \(offset))")
        }
        offset += MemoryLayout<T>.size
        return value
    }
}
