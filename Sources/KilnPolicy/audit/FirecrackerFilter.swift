import KilnJSON
import KilnSystem

/// Firecracker's JSON seccomp filter format (resources/seccomp/*.json in the
/// Firecracker repository): per thread role a default action, the action of
/// matching rules, and a list of rules, each a syscall with optional
/// argument conditions (`index`, `type` dword|qword, `op`, `val`). Rules of
/// one syscall are alternatives; conditions of one rule must all hold.
public struct FirecrackerFilter: Sendable {
    public struct Condition: Sendable, CustomStringConvertible {
        public var index: Int
        public var isDword: Bool
        /// eq, ne, lt, le, gt, ge, or masked_eq(MASK).
        public var op: String
        public var value: UInt64
        public var comment: String?

        public var description: String {
            let name = comment.map { " (\($0))" } ?? ""
            return "arg\(index) \(op) \(value)\(name)"
        }
    }

    public struct Rule: Sendable {
        public var syscall: String
        public var conditions: [Condition]
        public var comment: String?
    }

    public struct Role: Sendable {
        public var name: String
        public var defaultAction: String
        public var filterAction: String
        public var rules: [Rule]

        public var syscalls: [String] { Array(Set(rules.map(\.syscall))).sorted() }

        /// A syscall is conditional only when every one of its rules has conditions.
        public func isConditional(_ syscall: String) -> Bool {
            let matching = rules.filter { $0.syscall == syscall }
            return !matching.isEmpty && matching.allSatisfy { !$0.conditions.isEmpty }
        }
    }

    public var roles: [Role]

    public static func load(_ path: String) throws -> FirecrackerFilter {
        do {
            return try parse(try PolicyLoader.readRegularFile(path, limit: 8 << 20))
        } catch let error as JSONDecodingError {
            throw PolicyError("\(path): \(error)", at: nil)
        } catch let error as JSONParseError {
            throw PolicyError("\(path):\(error)", at: nil)
        }
    }

    public static func parse(_ bytes: [UInt8]) throws -> FirecrackerFilter {
        guard case let .object(members) = try JSONParser.parse(bytes) else {
            throw JSONDecodingError(path: "", message: "expected an object of thread roles")
        }
        var roles: [Role] = []
        for (name, value) in members {
            var role = try JSONObjectReader(value, path: name)
            let defaultAction = try role.requiredString("default_action")
            let filterAction = try role.requiredString("filter_action")
            var rules: [Rule] = []
            for (position, element) in (try role.array("filter") ?? []).enumerated() {
                var rule = try JSONObjectReader(element, path: "\(name).filter[\(position)]")
                let syscall = try rule.requiredString("syscall")
                let comment = try rule.string("comment")
                var conditions: [Condition] = []
                for (argPosition, argument) in (try rule.array("args") ?? []).enumerated() {
                    var reader = try JSONObjectReader(argument, path: "\(rule.path).args[\(argPosition)]")
                    let index: Int = try reader.requiredInteger("index", in: 0...5)
                    let type = try reader.requiredString("type")
                    guard type == "dword" || type == "qword" else {
                        throw JSONDecodingError(
                            path: reader.fieldPath("type"), message: "expected dword or qword, got \(type)")
                    }
                    let opValue = try reader.required("op")
                    let op: String
                    switch opValue {
                    case let .string(text) where ["eq", "ne", "lt", "le", "gt", "ge"].contains(text):
                        op = text
                    case .object:
                        var masked = try JSONObjectReader(opValue, path: reader.fieldPath("op"))
                        let mask: UInt64 = try masked.requiredInteger("masked_eq")
                        try masked.finish()
                        op = "masked_eq(0x\(String(mask, radix: 16)))"
                    default:
                        throw JSONDecodingError(path: reader.fieldPath("op"), message: "unknown comparison")
                    }
                    let value: UInt64 = try reader.requiredInteger("val")
                    let argComment = try reader.string("comment")
                    try reader.finish()
                    conditions.append(
                        Condition(index: index, isDword: type == "dword", op: op, value: value, comment: argComment))
                }
                _ = try rule.string("action")
                try rule.finish()
                rules.append(Rule(syscall: syscall, conditions: conditions, comment: comment))
            }
            try role.finish()
            roles.append(Role(name: name, defaultAction: defaultAction, filterAction: filterAction, rules: rules))
        }
        return FirecrackerFilter(roles: roles)
    }

    public func role(_ name: String) -> Role? { roles.first { $0.name == name } }
}
