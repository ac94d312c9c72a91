/// The line a host peer sends first on `uds_path` in Firecracker's vsock
/// model (docs/vsock.md there): `CONNECT <port>\n`, the guest port in
/// decimal. Fed a byte at a time, so nothing past the newline is ever
/// taken from the stream: what follows is the peer's data for the guest.
public struct VsockHostHandshake: Sendable {
    /// "CONNECT 4294967295\n" is 19 bytes; a little slack for spacing.
    public static let maxLength = 32

    public enum Outcome: Equatable, Sendable {
        case port(UInt32)
        case invalid(String)
    }

    private var line: [UInt8] = []

    public init() {}

    /// Takes one byte; an outcome once the line is complete or cannot be.
    public mutating func feed(_ byte: UInt8) -> Outcome? {
        if byte == UInt8(ascii: "\n") { return Self.parse(line) }
        guard line.count < Self.maxLength else { return .invalid("no newline in the first \(Self.maxLength) bytes") }
        line.append(byte)
        return nil
    }

    /// As Firecracker reads it: two words, the first `CONNECT` in any case,
    /// the second a decimal port.
    static func parse(_ line: [UInt8]) -> Outcome {
        let words = line.split { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }
        guard words.count == 2, String(decoding: words[0], as: UTF8.self).uppercased() == "CONNECT" else {
            return .invalid("expected \"CONNECT <port>\"")
        }
        let digits = words[1]
        guard digits.count <= 10, digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
            let port = UInt32(String(decoding: digits, as: UTF8.self))
        else {
            return .invalid("port is not a decimal number below 2^32")
        }
        return .port(port)
    }
}
