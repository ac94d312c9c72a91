import KilnSeccomp
import KilnSystem

/// Parses one policy file. Pure: text in, `PolicyFile` out, so it can be
/// tested and fuzzed without a file system. Includes are resolved by
/// `PolicyLoader`.
///
/// Grammar (one statement per line; a line may continue after a binary
/// operator, inside braces, or when the next line starts with && or ||):
///
///     file       = { statement? comment? NEWLINE }
///     statement  = "@default" action | "@include" STRING | rule
///     rule       = SYSCALL [ ":" condition ] [ "->" action ]
///     condition  = all { "||" all }
///     all        = test { "&&" test }
///     test       = "(" condition ")" | ARG [ "&" value ] ( OP value | "in" "{" value { "," value } "}" )
///     value      = term { "|" term }
///     term       = NUMBER | CONSTANT | "~" term | "(" value ")"
///     action     = "allow" | "log" | "trap" | "kill-thread" | "kill-process" | "errno" "(" (ERRNO | NUMBER) ")"
///
/// Unlike C, `&` binds tighter than `==`: `arg2 & PROT_EXEC == 0` reads as
/// written. A rule's justification is the comment on its line(s), or else the
/// comment block directly above it.
public struct PolicyParser {
    /// A rule whose `in` sets and `||` multiply out to more alternatives
    /// than this is refused: it would not fit the BPF limit anyway.
    public static let maximumAlternatives = 512
    /// Parentheses and `~` nest at most this deep, so that hostile input
    /// cannot exhaust the stack through recursion.
    public static let maximumNesting = 32

    private let tokens: [LocatedToken]
    private let file: String
    private var index = 0
    private var trailingComments: [String] = []
    private var nesting = 0

    private init(tokens: [LocatedToken], file: String) {
        self.tokens = tokens
        self.file = file
    }

    public static func parse(_ text: String, file: String) throws -> PolicyFile {
        var parser = PolicyParser(tokens: try PolicyLexer.tokenize(text, file: file), file: file)
        return try parser.parseFile()
    }

    // MARK: Statements

    private mutating func parseFile() throws -> PolicyFile {
        var result = PolicyFile(name: file, defaultAction: nil, defaultLocation: nil, includes: [], rules: [])
        var commentBlock: [String] = []
        while true {
            let current = tokens[index]
            switch current.token {
            case .end:
                return result
            case .newline:
                commentBlock = []
                index += 1
            case let .comment(text):
                commentBlock.append(text)
                index += 1
                try expectEndOfLine()
            case let .directive(name):
                index += 1
                try parseDirective(name, at: current.location, into: &result)
                commentBlock = []
                skipTrailingComment()
                try expectEndOfLine()
            case .identifier:
                trailingComments = []
                var rule = try parseRule()
                let justification = trailingComments.isEmpty ? commentBlock : trailingComments
                rule.justification = justification.isEmpty ? nil : justification.joined(separator: " ")
                result.rules.append(rule)
                commentBlock = []
            default:
                throw PolicyError(
                    "expected a rule or a directive, found \(describe(current.token))", at: current.location)
            }
        }
    }

    private mutating func parseDirective(_ name: String, at location: SourceLocation, into file: inout PolicyFile)
        throws
    {
        switch name {
        case "default":
            if let previous = file.defaultLocation {
                throw PolicyError("@default given twice (first at \(previous))", at: location)
            }
            file.defaultAction = try parseAction()
            file.defaultLocation = location
            if file.defaultAction == .allow {
                throw PolicyError(
                    "@default allow lets every unlisted system call through; choose trap, errno(...), kill-thread or kill-process",
                    at: location)
            }
        case "include":
            let target = tokens[index]
            guard case let .string(path) = target.token else {
                throw PolicyError(
                    "@include expects a quoted file name, found \(describe(target.token))", at: target.location)
            }
            guard !path.isEmpty, !path.contains("/"), path.hasSuffix(".policy") else {
                throw PolicyError("@include \"\(path)\": name a .policy file in the same folder", at: target.location)
            }
            index += 1
            file.includes.append((path, target.location))
        default:
            let hint =
                Suggestion.closest(to: name, in: ["default", "include"]).map { "; did you mean '@\($0)'?" } ?? ""
            throw PolicyError("unknown directive '@\(name)'\(hint)", at: location)
        }
    }

    private mutating func parseRule() throws -> PolicyRule {
        let start = tokens[index]
        guard case let .identifier(name) = start.token else { preconditionFailure("parseRule at a non-identifier") }
        index += 1
        guard let number = SyscallTable.number(of: name) else {
            throw PolicyError(
                "unknown system call '\(name)'\(Suggestion.phrase(for: name, in: SyscallTable.names))",
                at: start.location)
        }
        var alternatives: [RuleAlternative] = []
        var conditionText: String?
        if isSymbol(":") {
            index += 1
            skipLineBreaks()
            let condition = try parseCondition(syscall: name)
            conditionText = condition.text
            alternatives = try Self.alternatives(of: condition, syscall: name)
            guard !alternatives.isEmpty else { preconditionFailure("a condition yields at least one alternative") }
        }
        var action = SeccompAction.allow
        if isSymbol("->") {
            index += 1
            action = try parseAction()
        }
        skipTrailingComment()
        try expectEndOfLine()
        return PolicyRule(
            syscall: name, number: number, alternatives: alternatives, action: action,
            justification: nil, location: start.location, conditionText: conditionText)
    }

    private mutating func parseAction() throws -> SeccompAction {
        let current = tokens[index]
        guard case let .identifier(name) = current.token else {
            throw PolicyError("expected an action, found \(describe(current.token))", at: current.location)
        }
        index += 1
        switch name {
        case "allow": return .allow
        case "log": return .log
        case "trap": return .trap
        case "kill-thread": return .killThread
        case "kill-process": return .killProcess
        case "errno":
            try expectSymbol("(", "after errno")
            let argument = tokens[index]
            index += 1
            var value: UInt64
            switch argument.token {
            case let .number(number): value = number
            case let .identifier(errnoName):
                guard let known = ErrnoNames.value(named: errnoName) else {
                    throw PolicyError(
                        "unknown errno name '\(errnoName)'\(Suggestion.phrase(for: errnoName, in: ErrnoNames.all.map(\.name)))",
                        at: argument.location)
                }
                value = UInt64(known)
            default:
                throw PolicyError(
                    "errno(...) expects an errno name or a number, found \(describe(argument.token))",
                    at: argument.location)
            }
            // The kernel caps SECCOMP_RET_ERRNO data at MAX_ERRNO (4095).
            guard value >= 1 && value <= 4095 else {
                throw PolicyError("errno value \(value) is out of range 1...4095", at: argument.location)
            }
            try expectSymbol(")", "to close errno(")
            return .errno(UInt16(value))
        default:
            let actions = ["allow", "log", "trap", "kill-thread", "kill-process", "errno"]
            throw PolicyError(
                "unknown action '\(name)'\(Suggestion.phrase(for: name, in: actions))", at: current.location)
        }
    }

    // MARK: Conditions

    /// A parsed condition, before it is multiplied out.
    indirect enum Condition {
        case test(ArgumentTest)
        case all([Condition])
        case any([Condition])

        var text: String {
            switch self {
            case let .test(test): return test.text
            case let .all(parts): return parts.map { $0.isAny ? "(\($0.text))" : $0.text }.joined(separator: " && ")
            case let .any(parts): return parts.map(\.text).joined(separator: " || ")
            }
        }

        var isAny: Bool { if case .any = self { return true } else { return false } }
    }

    struct ArgumentTest {
        var argument: Int
        var location: SourceLocation
        var mask: Value?
        /// `op value` or, for `in`, one `==` per member.
        var op: ComparisonOperator
        var values: [Value]
        var isMembership: Bool

        var text: String {
            let subject = mask.map { "arg\(argument) & \($0.text)" } ?? "arg\(argument)"
            if isMembership { return "\(subject) in {\(values.map(\.text).joined(separator: ", "))}" }
            return "\(subject) \(op.rawValue) \(values[0].text)"
        }
    }

    struct Value {
        var bits: UInt64
        var text: String
        var location: SourceLocation
        /// `OWN_PID`, resolved when the filter is installed (KilnSeccomp's OwnProcessID).
        var isOwnProcessID: Bool { text == Self.ownProcessIDName }

        static let ownProcessIDName = "OWN_PID"

        /// `OWN_PID` may only stand alone: its value is not known here, so
        /// a mask, an ordering, `|` or `~` on it would test something else.
        func refusingOwnProcessID(_ what: String) throws -> Value {
            guard !isOwnProcessID else {
                throw PolicyError(
                    "\(Self.ownProcessIDName) is the installing process's id, known only at run time: it can only be compared with == or in, alone, not \(what)",
                    at: location)
            }
            return self
        }

        /// Any other value whose upper or lower 32 bits are the placeholder
        /// would compile to a comparison `SeccompFilter.install` rewrites.
        func refusingThePlaceholder() throws -> Value {
            let placeholder = UInt64(OwnProcessID.placeholder)
            guard isOwnProcessID || (bits & 0xFFFF_FFFF != placeholder && bits >> 32 != placeholder) else {
                throw PolicyError(
                    "\(text): 0x\(String(placeholder, radix: 16)) in either half of a value is reserved: it stands for \(Self.ownProcessIDName) in compiled filters",
                    at: location)
            }
            return self
        }
    }

    private mutating func parseCondition(syscall: String) throws -> Condition {
        var parts = [try parseAll(syscall: syscall)]
        while continues(with: "||") {
            index += 1
            skipLineBreaks()
            parts.append(try parseAll(syscall: syscall))
        }
        return parts.count == 1 ? parts[0] : .any(parts)
    }

    private mutating func parseAll(syscall: String) throws -> Condition {
        var parts = [try parseTest(syscall: syscall)]
        while continues(with: "&&") {
            index += 1
            skipLineBreaks()
            parts.append(try parseTest(syscall: syscall))
        }
        return parts.count == 1 ? parts[0] : .all(parts)
    }

    /// Enters one level of nesting, refusing to go deeper than the limit.
    private mutating func nested<T>(_ body: (inout PolicyParser) throws -> T) throws -> T {
        guard nesting < Self.maximumNesting else {
            throw PolicyError("nesting deeper than \(Self.maximumNesting) levels", at: tokens[index].location)
        }
        nesting += 1
        defer { nesting -= 1 }
        return try body(&self)
    }

    private mutating func parseTest(syscall: String) throws -> Condition {
        if isSymbol("(") {
            return try nested { try $0.parseParenthesised(syscall: syscall) }
        }
        return try parseComparison(syscall: syscall)
    }

    private mutating func parseParenthesised(syscall: String) throws -> Condition {
        index += 1
        skipLineBreaks()
        let inner = try parseCondition(syscall: syscall)
        skipLineBreaks()
        try expectSymbol(")", "to close '('")
        return inner
    }

    private mutating func parseComparison(syscall: String) throws -> Condition {
        let start = tokens[index]
        guard case let .identifier(name) = start.token, name.hasPrefix("arg"),
            let argument = Int(name.dropFirst(3)), name.count > 3, name.dropFirst(3).allSatisfy(\.isASCII)
        else {
            throw PolicyError("expected an argument (arg0...arg5), found \(describe(start.token))", at: start.location)
        }
        guard (0...5).contains(argument) else {
            throw PolicyError(
                "argument index \(argument) is out of range: system calls have arg0...arg5", at: start.location)
        }
        if let count = SyscallTable.argumentCounts[syscall], argument >= count {
            throw PolicyError(
                "\(syscall) takes \(count) argument\(count == 1 ? "" : "s") (arg0...arg\(count - 1)): arg\(argument) is a register the kernel ignores and the caller fills, so testing it restricts nothing",
                at: start.location)
        }
        index += 1
        let width = SyscallTable.argumentWidth(syscall, argument)
        var mask: Value?
        if isSymbol("&") {
            index += 1
            skipLineBreaks()
            mask = try fitted(try parseValue().refusingOwnProcessID("used as a mask"), width: width, what: "mask")
        }
        let opToken = tokens[index]
        if case .identifier("in") = opToken.token {
            index += 1
            skipLineBreaks()
            try expectSymbol("{", "after 'in'")
            var values: [Value] = []
            repeat {
                if !values.isEmpty { index += 1 }
                skipLineBreaks()
                let value = try fitted(try parseValue(), width: width, what: "value").refusingThePlaceholder()
                values.append(mask == nil ? value : try value.refusingOwnProcessID("in a masked set"))
                skipLineBreaks()
            } while isSymbol(",")
            try expectSymbol("}", "to close the set")
            return .test(
                ArgumentTest(
                    argument: argument, location: start.location, mask: mask, op: .equal,
                    values: values, isMembership: true))
        }
        guard case let .symbol(symbol) = opToken.token, let op = ComparisonOperator(rawValue: symbol) else {
            throw PolicyError(
                "expected a comparison (==, !=, <, <=, >, >=, in) after arg\(argument), found \(describe(opToken.token))",
                at: opToken.location)
        }
        index += 1
        if mask != nil && op != .equal {
            throw PolicyError(
                "a masked test supports only == and in (seccomp has no masked '\(op.rawValue)')", at: opToken.location)
        }
        // A 32-bit argument's upper half is the caller's to fill: tests that
        // an arbitrary upper half could satisfy cannot be enforced.
        if width == 32 && (op == .notEqual || op == .greater || op == .greaterOrEqual) {
            throw PolicyError(
                "'\(op.rawValue)' cannot be enforced on arg\(argument) of \(syscall): the kernel reads only its low 32 bits and the caller controls the rest; use ==, in, a mask, < or <=",
                at: opToken.location)
        }
        skipLineBreaks()
        var value = try fitted(try parseValue(), width: width, what: "value").refusingThePlaceholder()
        if op != .equal || mask != nil { value = try value.refusingOwnProcessID("with '\(op.rawValue)' or a mask") }
        return .test(
            ArgumentTest(
                argument: argument, location: start.location, mask: mask, op: op,
                values: [value], isMembership: false))
    }

    private mutating func parseValue() throws -> Value {
        var value = try parseTerm()
        while isSymbol("|") {
            index += 1
            skipLineBreaks()
            let next = try parseTerm().refusingOwnProcessID("combined with '|'")
            _ = try value.refusingOwnProcessID("combined with '|'")
            value = Value(bits: value.bits | next.bits, text: "\(value.text)|\(next.text)", location: value.location)
        }
        return value
    }

    private mutating func parseTerm() throws -> Value {
        let current = tokens[index]
        switch current.token {
        case let .number(bits):
            index += 1
            let text =
                Int64(bitPattern: bits) < 0
                ? String(Int64(bitPattern: bits))
                : bits < 10 ? String(bits) : "0x" + String(bits, radix: 16)
            return Value(bits: bits, text: text, location: current.location)
        case let .identifier(name) where name == Value.ownProcessIDName:
            index += 1
            return Value(bits: UInt64(OwnProcessID.placeholder), text: name, location: current.location)
        case let .identifier(name):
            index += 1
            guard let constant = PolicyConstants.value(named: name) else {
                let hint = Suggestion.phrase(for: name, in: PolicyConstants.all.keys)
                throw PolicyError("unknown constant '\(name)'\(hint)", at: current.location)
            }
            return Value(bits: UInt64(bitPattern: constant), text: name, location: current.location)
        case .symbol("~"):
            index += 1
            let inner = try nested { try $0.parseTerm() }.refusingOwnProcessID("complemented with '~'")
            return Value(bits: ~inner.bits, text: "~\(inner.text)", location: current.location)
        case .symbol("("):
            index += 1
            let inner = try nested { try $0.parseValue() }.refusingOwnProcessID("in parentheses")
            try expectSymbol(")", "to close '('")
            return Value(bits: inner.bits, text: "(\(inner.text))", location: current.location)
        default:
            throw PolicyError("expected a number or a constant, found \(describe(current.token))", at: current.location)
        }
    }

    /// Narrows a value to a 32-bit argument, refusing one that does not fit
    /// as either a signed or an unsigned 32-bit integer.
    private func fitted(_ value: Value, width: Int, what: String) throws -> Value {
        guard width == 32 else { return value }
        let signed = Int64(bitPattern: value.bits)
        guard signed >= Int64(Int32.min) && signed <= Int64(UInt32.max) else {
            throw PolicyError("\(what) \(value.text) does not fit this 32-bit argument", at: value.location)
        }
        var narrowed = value
        narrowed.bits = value.bits & 0xFFFF_FFFF
        return narrowed
    }

    // MARK: Multiplying out

    /// The rule's alternatives: `||` and `in` become separate alternatives,
    /// each a conjunction with at most one comparison per argument.
    static func alternatives(of condition: Condition, syscall: String) throws -> [RuleAlternative] {
        let raw = try disjunctiveForm(condition)
        return try raw.map { try normalise($0, syscall: syscall) }
    }

    private struct LocatedComparison {
        var comparison: ArgumentComparison
        var location: SourceLocation
        var text: String
    }

    private static func disjunctiveForm(_ condition: Condition) throws -> [[LocatedComparison]] {
        switch condition {
        case let .test(test):
            return test.values.map { value in
                let comparison = ArgumentComparison(
                    argument: test.argument, width: 64, mask: test.mask?.bits, op: test.op, value: value.bits,
                    valueText: value.text, maskText: test.mask?.text)
                let text = test.mask.map { "arg\(test.argument) & \($0.text)" } ?? "arg\(test.argument)"
                return [
                    LocatedComparison(
                        comparison: comparison, location: test.location,
                        text: "\(text) \(test.op.rawValue) \(value.text)")
                ]
            }
        case let .any(parts):
            var result: [[LocatedComparison]] = []
            for part in parts {
                result += try disjunctiveForm(part)
                try checkSize(result.count, at: part)
            }
            return result
        case let .all(parts):
            var result: [[LocatedComparison]] = [[]]
            for part in parts {
                let next = try disjunctiveForm(part)
                try checkSize(result.count * next.count, at: part)
                result = result.flatMap { prefix in next.map { prefix + $0 } }
            }
            return result
        }
    }

    private static func checkSize(_ count: Int, at condition: Condition) throws {
        guard count <= maximumAlternatives else {
            throw PolicyError(
                "the condition multiplies out to more than \(maximumAlternatives) alternatives",
                at: firstLocation(condition))
        }
    }

    private static func firstLocation(_ condition: Condition) -> SourceLocation? {
        switch condition {
        case let .test(test): return test.location
        case let .all(parts), let .any(parts): return parts.first.flatMap(firstLocation)
        }
    }

    /// Fixes the width of each comparison, proves the conjunction can hold,
    /// and merges the tests of one argument into the single comparison
    /// libseccomp accepts per argument.
    private static func normalise(_ conjunction: [LocatedComparison], syscall: String) throws -> RuleAlternative {
        var byArgument: [Int: [LocatedComparison]] = [:]
        for var item in conjunction {
            item.comparison.width = SyscallTable.argumentWidth(syscall, item.comparison.argument)
            let c = item.comparison
            if let mask = c.mask, c.value & ~mask & c.widthMask != 0 {
                throw PolicyError(
                    "'\(item.text)' can never hold: the value has bits outside the mask", at: item.location)
            }
            if c.mask == nil, c.value & ~c.widthMask != 0 {
                throw PolicyError(
                    "'\(item.text)' compares a \(c.width)-bit argument with a wider value", at: item.location)
            }
            byArgument[c.argument, default: []].append(item)
        }
        return try byArgument.keys.sorted().map { argument in try merge(byArgument[argument]!) }
    }

    private static func merge(_ tests: [LocatedComparison]) throws -> ArgumentComparison {
        if tests.count == 1 { return tests[0].comparison }
        let equalities = tests.filter { $0.comparison.op == .equal }
        let others = tests.filter { $0.comparison.op != .equal }
        func contradiction(_ a: LocatedComparison, _ b: LocatedComparison) -> PolicyError {
            PolicyError("contradiction: '\(a.text)' and '\(b.text)' can never both hold", at: b.location)
        }
        // Equalities, masked or not, combine into one masked equality when
        // they agree on the bits they share.
        var merged: ArgumentComparison?
        var mergedFrom: LocatedComparison?
        for item in equalities {
            let c = item.comparison
            let mask = (c.mask ?? .max) & c.widthMask
            guard var current = merged, let first = mergedFrom else {
                merged = c
                merged!.mask = mask
                mergedFrom = item
                continue
            }
            let shared = mask & current.mask!
            guard c.value & shared == current.value & shared else { throw contradiction(first, item) }
            current.mask = current.mask! | mask
            current.value |= c.value
            current.valueText = "\(current.valueText) and \(c.valueText)"
            current.maskText = nil
            merged = current
        }
        if var result = merged {
            if result.mask == result.widthMask { result.mask = nil }
            for item in others {
                // An exact value decides every other test of the argument.
                guard result.mask == nil else {
                    throw PolicyError(
                        "'\(item.text)' cannot be combined with a masked test of the same argument; seccomp compares each argument once per alternative",
                        at: item.location)
                }
                guard item.comparison.op.holds(result.value, item.comparison.value) else {
                    throw contradiction(mergedFrom!, item)
                }
            }
            guard equalities.count > 1 else { return mergedFrom!.comparison }
            // Several equalities became one: show the merged numbers.
            result.valueText = "0x" + String(result.value, radix: 16)
            result.maskText = result.mask.map { "0x" + String($0, radix: 16) }
            return result
        }
        // Only orderings and !=: report an empty range, else the limitation.
        var low: UInt64 = 0, high: UInt64 = .max
        var lowFrom = others[0], highFrom = others[0]
        for item in others {
            let v = item.comparison.value
            switch item.comparison.op {
            case .greater:
                if v == .max { throw contradiction(item, item) }
                if v + 1 > low { low = v + 1; lowFrom = item }
            case .greaterOrEqual: if v > low { low = v; lowFrom = item }
            case .less:
                if v == 0 { throw PolicyError("'\(item.text)' can never hold", at: item.location) }
                if v - 1 < high { high = v - 1; highFrom = item }
            case .lessOrEqual: if v < high { high = v; highFrom = item }
            case .notEqual, .equal: break
            }
        }
        if low > high { throw contradiction(lowFrom, highFrom) }
        if low == high,
            let excluded = others.first(where: { $0.comparison.op == .notEqual && $0.comparison.value == low })
        {
            throw contradiction(lowFrom, excluded)
        }
        throw PolicyError(
            "'\(others[0].text)' and '\(others[1].text)' test the same argument; seccomp (libseccomp) compares each argument once per alternative: split them with ||",
            at: others[1].location)
    }

    // MARK: Tokens

    private func isSymbol(_ symbol: String) -> Bool { tokens[index].token == .symbol(symbol) }

    /// Whether the condition goes on with `symbol`, here or at the start of
    /// a following line.
    private mutating func continues(with symbol: String) -> Bool {
        if isSymbol(symbol) { return true }
        var probe = index
        var comments: [String] = []
        while true {
            switch tokens[probe].token {
            case .newline: probe += 1
            case let .comment(text): comments.append(text); probe += 1
            case .symbol(symbol) where probe > index:
                trailingComments += comments
                index = probe
                return true
            default: return false
            }
        }
    }

    /// Newlines and comments inside a condition: the comments count towards
    /// the rule's justification.
    private mutating func skipLineBreaks() {
        while true {
            switch tokens[index].token {
            case .newline: index += 1
            case let .comment(text): trailingComments.append(text); index += 1
            default: return
            }
        }
    }

    private mutating func skipTrailingComment() {
        if case let .comment(text) = tokens[index].token {
            trailingComments.append(text)
            index += 1
        }
    }

    private mutating func expectEndOfLine() throws {
        switch tokens[index].token {
        case .newline: index += 1
        case .end: break
        default:
            throw PolicyError(
                "expected the end of the line, found \(describe(tokens[index].token))", at: tokens[index].location)
        }
    }

    private mutating func expectSymbol(_ symbol: String, _ context: String) throws {
        guard isSymbol(symbol) else {
            throw PolicyError(
                "expected '\(symbol)' \(context), found \(describe(tokens[index].token))", at: tokens[index].location)
        }
        index += 1
    }

    private func describe(_ token: PolicyToken) -> String {
        switch token {
        case let .identifier(name): return "'\(name)'"
        case let .directive(name): return "'@\(name)'"
        case let .number(value): return "number \(value)"
        case let .string(text): return "\"\(text)\""
        case .comment: return "a comment"
        case let .symbol(symbol): return "'\(symbol)'"
        case .newline: return "the end of the line"
        case .end: return "the end of the file"
        }
    }
}
