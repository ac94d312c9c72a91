/// The statuses this API answers with (RFC 9110 §15).
public struct HTTPStatus: Equatable, Hashable, Sendable {
    public let code: Int
    public let reason: String

    public static let ok = HTTPStatus(code: 200, reason: "OK")
    public static let noContent = HTTPStatus(code: 204, reason: "No Content")
    public static let badRequest = HTTPStatus(code: 400, reason: "Bad Request")
    public static let notFound = HTTPStatus(code: 404, reason: "Not Found")
    public static let methodNotAllowed = HTTPStatus(code: 405, reason: "Method Not Allowed")
    public static let payloadTooLarge = HTTPStatus(code: 413, reason: "Payload Too Large")
    public static let uriTooLong = HTTPStatus(code: 414, reason: "URI Too Long")
    public static let unsupportedMediaType = HTTPStatus(code: 415, reason: "Unsupported Media Type")
    public static let requestHeaderFieldsTooLarge = HTTPStatus(code: 431, reason: "Request Header Fields Too Large")
    public static let internalServerError = HTTPStatus(code: 500, reason: "Internal Server Error")
    public static let notImplemented = HTTPStatus(code: 501, reason: "Not Implemented")
    public static let serviceUnavailable = HTTPStatus(code: 503, reason: "Service Unavailable")
    public static let httpVersionNotSupported = HTTPStatus(code: 505, reason: "HTTP Version Not Supported")
}

public struct HTTPResponse: Equatable, Sendable {
    public var status: HTTPStatus
    public var contentType: String?
    public var body: [UInt8]
    public var closesConnection: Bool

    public init(status: HTTPStatus, contentType: String? = nil, body: [UInt8] = [], closesConnection: Bool = false) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.closesConnection = closesConnection
    }

    public static func json(_ status: HTTPStatus, _ text: String) -> HTTPResponse {
        HTTPResponse(status: status, contentType: "application/json", body: Array(text.utf8))
    }

    /// The interim answer to `Expect: 100-continue` (RFC 9110 §15.2.1): a
    /// status line alone; the final response follows once the body is in.
    public static let interimContinue = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    /// The response on the wire. 204 carries no body and no length (RFC 9110 §15.3.5).
    public func encoded() -> [UInt8] {
        var head = "HTTP/1.1 \(status.code) \(status.reason)\r\nServer: Kiln\r\n"
        if status != .noContent {
            if let contentType { head += "Content-Type: \(contentType)\r\n" }
            head += "Content-Length: \(body.count)\r\n"
        }
        if closesConnection { head += "Connection: close\r\n" }
        head += "\r\n"
        return Array(head.utf8) + (status == .noContent ? [] : body)
    }
}
