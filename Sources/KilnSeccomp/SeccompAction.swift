/// What a seccomp program returns for a system call (linux/seccomp.h).
/// The high 16 bits select the action, the low 16 carry its data.
public enum SeccompAction: Hashable, Sendable, CustomStringConvertible {
    case allow
    case errno(UInt16)
    case log
    case trap
    case trace(UInt16)
    case killThread
    case killProcess
    /// An action value this code does not know; the kernel treats it as kill.
    case unknown(UInt32)

    public init(rawValue: UInt32) {
        let data = UInt16(truncatingIfNeeded: rawValue)
        switch rawValue & 0xFFFF_0000 {
        case 0x7FFF_0000: self = .allow
        case 0x0005_0000: self = .errno(data)
        case 0x7FFC_0000: self = .log
        case 0x0003_0000: self = .trap
        case 0x7FF0_0000: self = .trace(data)
        case 0x0000_0000: self = .killThread
        case 0x8000_0000: self = .killProcess
        default: self = .unknown(rawValue)
        }
    }

    public var rawValue: UInt32 {
        switch self {
        case .allow: return 0x7FFF_0000
        case let .errno(value): return 0x0005_0000 | UInt32(value)
        case .log: return 0x7FFC_0000
        case .trap: return 0x0003_0000
        case let .trace(value): return 0x7FF0_0000 | UInt32(value)
        case .killThread: return 0x0000_0000
        case .killProcess: return 0x8000_0000
        case let .unknown(value): return value
        }
    }

    public var description: String {
        switch self {
        case .allow: return "allow"
        case let .errno(value): return "errno(\(value))"
        case .log: return "log"
        case .trap: return "trap"
        case let .trace(value): return "trace(\(value))"
        case .killThread: return "kill-thread"
        case .killProcess: return "kill-process"
        case let .unknown(value): return "unknown(0x\(String(value, radix: 16)))"
        }
    }
}
