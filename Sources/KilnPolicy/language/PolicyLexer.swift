/// The tokens of the policy language.
enum PolicyToken: Equatable {
    case identifier(String) // syscall, constant, action, argN
    case directive(String) // @default, @include (without the @)
    case number(UInt64) // 42, 0x2a, 0o52, 0b101010, -100 (two's complement)
    case string(String) // "common.policy"
    case comment(String) // text after '#', trimmed
    case symbol(String) // : , { } ( ) & && | || ~ == != < <= > >= ->
    case newline
    case end
}

struct LocatedToken {
    var token: PolicyToken
    var location: SourceLocation
}

/// Splits policy text into tokens. Works on UTF-8 bytes; anything outside
/// the language's ASCII alphabet is an error (comments excepted).
struct PolicyLexer {
    private let bytes: [UInt8]
    private let file: String
    private var offset = 0
    private var line = 1
    private var lineStart = 0

    /// Policies are small; a bigger file is a mistake, not a policy.
    static let maximumSize = 1 << 20

    init(text: String, file: String) {
        self.bytes = Array(text.utf8)
        self.file = file
    }

    private var location: SourceLocation { SourceLocation(file: file, line: line, column: offset - lineStart + 1) }

    static func tokenize(_ text: String, file: String) throws -> [LocatedToken] {
        var lexer = PolicyLexer(text: text, file: file)
        guard lexer.bytes.count <= maximumSize else {
            throw PolicyError(
                "file is larger than \(maximumSize) bytes", at: SourceLocation(file: file, line: 1, column: 1))
        }
        var tokens: [LocatedToken] = []
        while true {
            let token = try lexer.next()
            tokens.append(token)
            if token.token == .end { return tokens }
        }
    }

    private mutating func next() throws -> LocatedToken {
        while offset < bytes.count, bytes[offset] == 0x20 || bytes[offset] == 0x09 || bytes[offset] == 0x0D {
            offset += 1
        }
        let start = location
        guard offset < bytes.count else { return LocatedToken(token: .end, location: start) }
        let byte = bytes[offset]
        switch byte {
        case 0x0A:
            offset += 1
            line += 1
            lineStart = offset
            return LocatedToken(token: .newline, location: start)
        case UInt8(ascii: "#"):
            let begin = offset + 1
            while offset < bytes.count, bytes[offset] != 0x0A { offset += 1 }
            let text = String(decoding: bytes[begin..<offset], as: UTF8.self)
            return LocatedToken(token: .comment(trimmed(text)), location: start)
        case UInt8(ascii: "\""):
            offset += 1
            let begin = offset
            while offset < bytes.count, bytes[offset] != UInt8(ascii: "\"") {
                guard bytes[offset] != 0x0A else { throw PolicyError("unterminated string", at: start) }
                offset += 1
            }
            guard offset < bytes.count else { throw PolicyError("unterminated string", at: start) }
            let text = String(decoding: bytes[begin..<offset], as: UTF8.self)
            offset += 1
            return LocatedToken(token: .string(text), location: start)
        case UInt8(ascii: "@"):
            offset += 1
            let name = word()
            guard !name.isEmpty else { throw PolicyError("expected a directive name after '@'", at: start) }
            return LocatedToken(token: .directive(name), location: start)
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            return LocatedToken(token: .number(try number(negative: false, at: start)), location: start)
        case UInt8(ascii: "-") where offset + 1 < bytes.count && isDigit(bytes[offset + 1]):
            offset += 1
            return LocatedToken(token: .number(try number(negative: true, at: start)), location: start)
        case _ where isIdentifierStart(byte):
            return LocatedToken(token: .identifier(word()), location: start)
        default:
            for symbol in [
                "&&", "||", "==", "!=", "<=", ">=", "->", ":", ",", "{", "}", "(", ")", "&", "|", "~", "<", ">",
            ] {
                let symbolBytes = Array(symbol.utf8)
                if bytes.count - offset >= symbolBytes.count,
                    Array(bytes[offset..<offset + symbolBytes.count]) == symbolBytes
                {
                    offset += symbolBytes.count
                    return LocatedToken(token: .symbol(symbol), location: start)
                }
            }
            if byte == UInt8(ascii: "=") {
                throw PolicyError("unexpected '='; comparisons use '=='", at: start)
            }
            let shown =
                byte >= 0x21 && byte < 0x7F
                ? "'\(Character(UnicodeScalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
            throw PolicyError("unexpected \(shown)", at: start)
        }
    }

    /// An identifier: letters, digits, '_' and inner '-' (for kill-thread).
    private mutating func word() -> String {
        let begin = offset
        while offset < bytes.count {
            let byte = bytes[offset]
            if isIdentifierStart(byte) || isDigit(byte) {
                offset += 1
            } else if byte == UInt8(ascii: "-"), offset + 1 < bytes.count, isIdentifierStart(bytes[offset + 1]),
                offset > begin
            {
                offset += 1
            } else {
                break
            }
        }
        return String(decoding: bytes[begin..<offset], as: UTF8.self)
    }

    private mutating func number(negative: Bool, at start: SourceLocation) throws -> UInt64 {
        var radix: UInt64 = 10
        if bytes[offset] == UInt8(ascii: "0"), offset + 1 < bytes.count {
            switch bytes[offset + 1] | 0x20 {
            case UInt8(ascii: "x"): radix = 16
            case UInt8(ascii: "o"): radix = 8
            case UInt8(ascii: "b"): radix = 2
            default: break
            }
            if radix != 10 { offset += 2 }
        }
        let begin = offset
        var value: UInt64 = 0
        while offset < bytes.count, isIdentifierStart(bytes[offset]) || isDigit(bytes[offset]) {
            let byte = bytes[offset]
            offset += 1
            if byte == UInt8(ascii: "_") { continue }
            guard let digit = digitValue(byte), digit < radix else {
                throw PolicyError(
                    "invalid digit '\(Character(UnicodeScalar(byte)))' in a base-\(radix) number", at: start)
            }
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: radix)
            let (sum, overflow2) = shifted.addingReportingOverflow(digit)
            guard !overflow1, !overflow2 else { throw PolicyError("number does not fit in 64 bits", at: start) }
            value = sum
        }
        guard offset > begin else { throw PolicyError("expected digits after the base prefix", at: start) }
        if negative {
            guard value <= UInt64(Int64.max) + 1 else { throw PolicyError("number does not fit in 64 bits", at: start) }
            return 0 &- value
        }
        return value
    }

    private func digitValue(_ byte: UInt8) -> UInt64? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt64(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt64(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt64(byte - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private func isIdentifierStart(_ byte: UInt8) -> Bool {
        (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z") || byte == UInt8(ascii: "_")
    }

    private func trimmed(_ text: String) -> String {
        var scalars = Substring(text)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" || last == "\r" { scalars.removeLast() }
        return String(scalars)
    }
}
