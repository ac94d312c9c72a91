/// A decoding error that names the field by its path, e.g.
/// `machine-config.vcpu_count: expected an integer from 1 to 32, got 0`.
public struct JSONDecodingError: Error, Equatable, CustomStringConvertible, Sendable {
    public let path: String
    public let message: String

    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// Reads the members of one JSON object strictly: each accessor checks the
/// type and range of one field, and `finish()` refuses any field that no
/// accessor asked for. Errors carry the dotted path of the field.
public struct JSONObjectReader {
    public let path: String
    private let members: [(key: String, value: JSONValue)]
    private var consumed = Set<String>()

    public init(_ value: JSONValue, path: String = "") throws {
        guard case let .object(members) = value else {
            throw JSONDecodingError(path: path, message: "expected an object, got \(value.typeName)")
        }
        self.path = path
        self.members = members
    }

    public func fieldPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The raw value of a field, marking it as known; nil when absent.
    public mutating func value(_ key: String) -> JSONValue? {
        consumed.insert(key)
        return members.first { $0.key == key }?.value
    }

    public mutating func required(_ key: String) throws -> JSONValue {
        guard let value = value(key) else {
            throw JSONDecodingError(path: fieldPath(key), message: "missing required field")
        }
        return value
    }

    public mutating func string(_ key: String) throws -> String? {
        guard let value = value(key), value != .null else { return nil }
        guard case let .string(text) = value else {
            throw JSONDecodingError(path: fieldPath(key), message: "expected a string, got \(value.typeName)")
        }
        return text
    }

    public mutating func requiredString(_ key: String) throws -> String {
        guard let text = try string(key) else {
            throw JSONDecodingError(path: fieldPath(key), message: "missing required field")
        }
        return text
    }

    public mutating func bool(_ key: String) throws -> Bool? {
        guard let value = value(key), value != .null else { return nil }
        guard case let .bool(flag) = value else {
            throw JSONDecodingError(path: fieldPath(key), message: "expected a boolean, got \(value.typeName)")
        }
        return flag
    }

    public mutating func requiredBool(_ key: String) throws -> Bool {
        guard let flag = try bool(key) else {
            throw JSONDecodingError(path: fieldPath(key), message: "missing required field")
        }
        return flag
    }

    /// An integer field within `range`; fractions, exponents and overflow are refused.
    public mutating func integer<T: FixedWidthInteger>(
        _ key: String, in range: ClosedRange<T> = T.min...T.max
    ) throws -> T? {
        guard let value = value(key), value != .null else { return nil }
        return try JSONObjectReader.integer(value, path: fieldPath(key), in: range)
    }

    public mutating func requiredInteger<T: FixedWidthInteger>(
        _ key: String, in range: ClosedRange<T> = T.min...T.max
    ) throws -> T {
        guard let number: T = try integer(key, in: range) else {
            throw JSONDecodingError(path: fieldPath(key), message: "missing required field")
        }
        return number
    }

    public static func integer<T: FixedWidthInteger>(
        _ value: JSONValue, path: String, in range: ClosedRange<T>
    ) throws -> T {
        let expectation =
            range == T.min...T.max
            ? "expected an integer"
            : "expected an integer from \(range.lowerBound) to \(range.upperBound)"
        guard case let .number(text) = value else {
            throw JSONDecodingError(path: path, message: "\(expectation), got \(value.typeName)")
        }
        guard let number = T(text, radix: 10) else {
            throw JSONDecodingError(path: path, message: "\(expectation), got \(text)")
        }
        guard range.contains(number) else {
            throw JSONDecodingError(path: path, message: "\(expectation), got \(text)")
        }
        return number
    }

    public mutating func array(_ key: String) throws -> [JSONValue]? {
        guard let value = value(key), value != .null else { return nil }
        guard case let .array(elements) = value else {
            throw JSONDecodingError(path: fieldPath(key), message: "expected an array, got \(value.typeName)")
        }
        return elements
    }

    /// A nested object field, read with its own reader.
    public mutating func object(_ key: String) throws -> JSONObjectReader? {
        guard let value = value(key), value != .null else { return nil }
        return try JSONObjectReader(value, path: fieldPath(key))
    }

    /// Refuses fields that no accessor asked for.
    public func finish() throws {
        if let unknown = members.first(where: { !consumed.contains($0.key) }) {
            throw JSONDecodingError(path: fieldPath(unknown.key), message: "unknown field")
        }
    }
}
