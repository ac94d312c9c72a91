import KilnJSON

/// An error answered in Firecracker's shape: `{"fault_message": "…"}`.
public struct APIError: Error, Equatable, CustomStringConvertible, Sendable {
    public let status: HTTPStatus
    public let message: String

    public init(status: HTTPStatus, message: String) {
        self.status = status
        self.message = message
    }

    public static func badRequest(_ message: String) -> APIError {
        APIError(status: .badRequest, message: message)
    }

    public var description: String { message }

    public var response: HTTPResponse {
        .json(status, JSONValue.object([("fault_message", .string(message))]).encoded())
    }
}
