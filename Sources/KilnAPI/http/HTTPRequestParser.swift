/// A strict, bounded, incremental HTTP/1.x request parser.
///
/// Bytes arrive in any split; `nextRequest()` returns a request once all of it
/// is buffered and keeps the rest for the next one, so pipelined requests on a
/// keep-alive connection come out in order. Every limit is checked as bytes
/// arrive, so a client that streams an endless line or header section is
/// refused early and never grows the buffer past the limits.
public struct HTTPRequestParser {
    public struct Limits: Sendable {
        public var requestLine = 4096
        public var headerSection = 8192
        public var headerCount = 32
        /// Firecracker's default for `--http-api-max-payload-size`.
        public var body = 51_200

        public init() {}
    }

    public let limits: Limits
    private var buffer: [UInt8] = []
    private var failed: HTTPParseError?
    /// The interim answer to `Expect: 100-continue` for the request being
    /// received: at most one per request.
    private var interimContinue = InterimContinue.notAsked
    private enum InterimContinue { case notAsked, owed, taken }

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Bytes buffered but not yet returned as a request.
    public var bufferedByteCount: Int { buffer.count }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        buffer.append(contentsOf: bytes)
    }

    /// The next complete request, nil if more bytes are needed. After an
    /// error the connection is unusable: the same error is thrown again.
    public mutating func nextRequest() throws -> HTTPRequest? {
        if let failed { throw failed }
        do {
            switch try parseOne() {
            case .incomplete(let bodyAwaitedAfterExpect):
                if bodyAwaitedAfterExpect && interimContinue == .notAsked { interimContinue = .owed }
                return nil
            case .complete(let request, let consumed):
                buffer.removeFirst(consumed)
                interimContinue = .notAsked
                return request
            }
        } catch let error as HTTPParseError {
            failed = error
            buffer = []
            throw error
        }
    }

    /// Whether to send `HTTPResponse.interimContinue` now: true once for a
    /// request whose header section carried `Expect: 100-continue` (HTTP/1.1)
    /// and whose body has not all arrived, as Firecracker's micro_http
    /// answers it. A client such as curl otherwise waits a second before it
    /// sends the body (RFC 9110 §10.1.1).
    public mutating func takeInterimContinue() -> Bool {
        guard interimContinue == .owed else { return false }
        interimContinue = .taken
        return true
    }

    private enum Outcome {
        /// More bytes are needed; the flag says the header section is
        /// complete, asked for 100-continue, and a body is still to come.
        case incomplete(bodyAwaitedAfterExpect: Bool)
        case complete(HTTPRequest, consumed: Int)
    }

    private func parseOne() throws -> Outcome {
        // Request line; a stray CRLF before it is ignored (RFC 9112 §2.2).
        var start = 0
        while buffer.count >= start + 2 && buffer[start] == 0x0D && buffer[start + 1] == 0x0A { start += 2 }
        guard let lineEnd = try findLineEnd(from: start, limit: limits.requestLine, in: "request line") else {
            if buffer.count - start > limits.requestLine + 1 {
                throw HTTPParseError.requestLineTooLong(limit: limits.requestLine)
            }
            return .incomplete(bodyAwaitedAfterExpect: false)
        }
        if lineEnd - start > limits.requestLine { throw HTTPParseError.requestLineTooLong(limit: limits.requestLine) }
        let (method, target, version) = try parseRequestLine(buffer[start..<lineEnd])

        // Header fields, up to the empty line.
        var headers: [(name: String, value: String)] = []
        var position = lineEnd + 2
        let headerStart = position
        while true {
            let budget = limits.headerSection - (position - headerStart)
            guard let end = try findLineEnd(from: position, limit: budget, in: "header section") else {
                if buffer.count - headerStart > limits.headerSection {
                    throw HTTPParseError.headerSectionTooLarge(limit: limits.headerSection)
                }
                return .incomplete(bodyAwaitedAfterExpect: false)
            }
            if end == position { position += 2; break }
            guard headers.count < limits.headerCount else {
                throw HTTPParseError.tooManyHeaders(limit: limits.headerCount)
            }
            headers.append(try parseHeaderField(buffer[position..<end]))
            position = end + 2
        }

        // Body: Content-Length only; this API has no use for chunked uploads.
        if headers.contains(where: { $0.name == "transfer-encoding" }) {
            throw HTTPParseError.unsupportedTransferEncoding
        }
        let lengths = headers.filter { $0.name == "content-length" }.map(\.value)
        var bodyLength = 0
        if let first = lengths.first {
            guard lengths.allSatisfy({ $0 == first }),
                !first.isEmpty, first.utf8.count <= 10, first.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let length = Int(first)
            else {
                throw HTTPParseError.malformed("invalid Content-Length")
            }
            guard length <= limits.body else { throw HTTPParseError.payloadTooLarge(limit: limits.body) }
            bodyLength = length
        }
        guard buffer.count - position >= bodyLength else {
            let expectsContinue =
                version == .http11
                && headers.contains { $0.name == "expect" && $0.value.lowercased() == "100-continue" }
            return .incomplete(bodyAwaitedAfterExpect: expectsContinue)
        }
        let body = Array(buffer[position..<position + bodyLength])
        let request = HTTPRequest(method: method, target: target, version: version, headers: headers, body: body)
        return .complete(request, consumed: position + bodyLength)
    }

    /// The index of the CRLF that ends the line starting at `start`, if the
    /// line is complete within `limit` bytes. A lone CR or LF is refused
    /// (RFC 9112 §2.2): lenient line endings are a request-smuggling vector.
    private func findLineEnd(from start: Int, limit: Int, in part: String) throws -> Int? {
        let end = min(buffer.count, start + max(limit, 0) + 2)
        var index = start
        while index < end {
            switch buffer[index] {
            case 0x0A:
                throw HTTPParseError.malformed("bare LF in \(part)")
            case 0x0D:
                guard index + 1 < buffer.count else { return nil }
                guard buffer[index + 1] == 0x0A else { throw HTTPParseError.malformed("bare CR in \(part)") }
                return index
            default:
                index += 1
            }
        }
        return nil
    }

    private func parseRequestLine(_ line: ArraySlice<UInt8>) throws -> (String, String, HTTPVersion) {
        let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw HTTPParseError.malformed("request line must be 'METHOD TARGET VERSION'") }
        guard !parts[0].isEmpty, parts[0].allSatisfy(isTokenCharacter) else {
            throw HTTPParseError.malformed("invalid method")
        }
        // origin-form only (RFC 9112 §3.2.1): the API is reached over a Unix socket.
        guard parts[1].first == UInt8(ascii: "/"), parts[1].allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw HTTPParseError.malformed("invalid request target")
        }
        guard let version = HTTPVersion(rawValue: String(decoding: parts[2], as: UTF8.self)) else {
            throw HTTPParseError.unsupportedVersion
        }
        return (String(decoding: parts[0], as: UTF8.self), String(decoding: parts[1], as: UTF8.self), version)
    }

    private func parseHeaderField(_ line: ArraySlice<UInt8>) throws -> (name: String, value: String) {
        if line.first == 0x20 || line.first == 0x09 {
            throw HTTPParseError.malformed("obsolete line folding in header section")
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
            throw HTTPParseError.malformed("header field without ':'")
        }
        let name = line[line.startIndex..<colon]
        // No whitespace before the colon, no obsolete line folding (RFC 9112 §5.1, §5.2).
        guard !name.isEmpty, name.allSatisfy(isTokenCharacter) else {
            throw HTTPParseError.malformed("invalid header name")
        }
        var value = line[(colon + 1)...]
        while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
        while let last = value.last, last == 0x20 || last == 0x09 { value = value.dropLast() }
        guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
            throw HTTPParseError.malformed("invalid character in header value")
        }
        return (String(decoding: name, as: UTF8.self).lowercased(), String(decoding: value, as: UTF8.self))
    }
}

/// RFC 9110 §5.6.2 token characters.
private func isTokenCharacter(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
        UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    default:
        return Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
    }
}

public enum HTTPParseError: Error, Equatable, CustomStringConvertible, Sendable {
    case malformed(String)
    case requestLineTooLong(limit: Int)
    case headerSectionTooLarge(limit: Int)
    case tooManyHeaders(limit: Int)
    case payloadTooLarge(limit: Int)
    case unsupportedVersion
    case unsupportedTransferEncoding

    /// The status the server answers with before it closes the connection.
    public var status: HTTPStatus {
        switch self {
        case .malformed, .tooManyHeaders: return .badRequest
        case .requestLineTooLong: return .uriTooLong
        case .headerSectionTooLarge: return .requestHeaderFieldsTooLarge
        case .payloadTooLarge: return .payloadTooLarge
        case .unsupportedVersion: return .httpVersionNotSupported
        case .unsupportedTransferEncoding: return .notImplemented
        }
    }

    public var description: String {
        switch self {
        case let .malformed(reason): return "malformed request: \(reason)"
        case let .requestLineTooLong(limit): return "request line longer than \(limit) bytes"
        case let .headerSectionTooLarge(limit): return "header section larger than \(limit) bytes"
        case let .tooManyHeaders(limit): return "more than \(limit) header fields"
        case let .payloadTooLarge(limit): return "request body larger than \(limit) bytes"
        case .unsupportedVersion: return "only HTTP/1.0 and HTTP/1.1 are supported"
        case .unsupportedTransferEncoding: return "Transfer-Encoding is not supported; send Content-Length"
        }
    }
}
