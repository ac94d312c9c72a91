/// One parsed HTTP/1.x request (RFC 9112). Header names are kept lower-cased;
/// the body is the exact Content-Length bytes.
public struct HTTPRequest: Equatable, Sendable {
    public var method: String
    public var target: String
    public var version: HTTPVersion
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(
        method: String, target: String, version: HTTPVersion = .http11,
        headers: [(name: String, value: String)] = [], body: [UInt8] = []
    ) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
    }

    public static func == (lhs: HTTPRequest, rhs: HTTPRequest) -> Bool {
        lhs.method == rhs.method && lhs.target == rhs.target && lhs.version == rhs.version
            && lhs.body == rhs.body && lhs.headers.count == rhs.headers.count
            && zip(lhs.headers, rhs.headers).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }

    /// The first value of a header, by lower-case name.
    public func header(_ name: String) -> String? {
        headers.first { $0.name == name }?.value
    }

    /// The path without its query string.
    public var path: Substring {
        target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
    }

    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    public var keepsConnectionAlive: Bool {
        let connection = header("connection")?.lowercased()
        switch version {
        case .http11: return connection != "close"
        case .http10: return connection == "keep-alive"
        }
    }
}

public enum HTTPVersion: String, Sendable {
    case http10 = "HTTP/1.0"
    case http11 = "HTTP/1.1"
}
