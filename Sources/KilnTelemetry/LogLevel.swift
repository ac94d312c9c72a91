/// Firecracker's logger levels (`PUT /logger`, `--level`), most severe first.
public enum LogLevel: Int, Comparable, CaseIterable, Sendable {
    case off = 0
    case error, warning, info, debug, trace

    public static func < (lhs: LogLevel, rhs: LogLevel) -> Bool { lhs.rawValue < rhs.rawValue }

    /// Accepts Firecracker's spellings ("Warning", "warn", "INFO", ...).
    public init?(name: String) {
        switch name.lowercased() {
        case "off": self = .off
        case "error": self = .error
        case "warning", "warn": self = .warning
        case "info": self = .info
        case "debug": self = .debug
        case "trace": self = .trace
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .off: return "off"
        case .error: return "error"
        case .warning: return "warning"
        case .info: return "info"
        case .debug: return "debug"
        case .trace: return "trace"
        }
    }
}
