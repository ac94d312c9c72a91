import KilnPolicy

/// The commands and their flags, strictly parsed: an unknown or
/// repeated flag, a missing value or a missing required flag is an error.
enum CommandLineOptions {
    case compile(policies: String, output: String)
    case embed(policies: String, output: String)
    case audit(policies: String, format: AuditFormat, compare: String?)
    case check(policies: String, failOn: Severity)
    case trace(policies: String, installed: String?, json: String?, command: [String])

    enum AuditFormat: String { case text, json, markdown }

    /// Why the command line was refused: exit status 2, with a pointer to --help.
    enum UsageError: Error, Equatable, CustomStringConvertible {
        case traceWithoutSeparator
        case traceWithoutCommand
        case unknownCommand(String)
        case unknownOption(flag: String, command: String)
        case missingValue(flag: String)
        case repeated(flag: String)
        case missingFlag(command: String, flag: String)
        case badFormat(String)
        case badSeverity(String)

        var description: String {
            switch self {
            case .traceWithoutSeparator: "trace needs the command after --"
            case .traceWithoutCommand: "trace needs a command after --"
            case .unknownCommand(let command): "unknown command '\(command)'"
            case .unknownOption(let flag, let command): "unknown option '\(flag)' for \(command)"
            case .missingValue(let flag): "\(flag) needs a value"
            case .repeated(let flag): "\(flag) given twice"
            case .missingFlag(let command, let flag): "\(command) needs \(flag)"
            case .badFormat(let name): "--format must be text, json or markdown, not '\(name)'"
            case .badSeverity(let name): "--fail-on must be low, medium, high or critical, not '\(name)'"
            }
        }
    }

    static func parse(_ arguments: [String]) throws -> CommandLineOptions {
        let command = arguments[0]
        var arguments = arguments
        var traced: [String] = []
        if command == "trace" {
            // Everything after `--` is the command to trace, flags included.
            guard let separator = arguments.firstIndex(of: "--") else {
                throw UsageError.traceWithoutSeparator
            }
            traced = Array(arguments[(separator + 1)...])
            arguments = Array(arguments[..<separator])
            guard !traced.isEmpty else { throw UsageError.traceWithoutCommand }
        }
        let allowed: Set<String>
        switch command {
        case "compile", "embed": allowed = ["--policies", "--output"]
        case "audit": allowed = ["--policies", "--format", "--compare"]
        case "check": allowed = ["--policies", "--fail-on"]
        case "trace": allowed = ["--policies", "--installed", "--json"]
        default: throw UsageError.unknownCommand(command)
        }
        var flags: [String: String] = [:]
        var rest = arguments.dropFirst()
        while let flag = rest.popFirst() {
            guard allowed.contains(flag) else {
                throw UsageError.unknownOption(flag: flag, command: command)
            }
            guard let value = rest.popFirst(), !value.hasPrefix("--") else {
                throw UsageError.missingValue(flag: flag)
            }
            guard flags.updateValue(value, forKey: flag) == nil else {
                throw UsageError.repeated(flag: flag)
            }
        }
        func required(_ flag: String) throws -> String {
            guard let value = flags[flag] else { throw UsageError.missingFlag(command: command, flag: flag) }
            return value
        }
        switch command {
        case "compile":
            return .compile(policies: try required("--policies"), output: try required("--output"))
        case "embed":
            return .embed(policies: try required("--policies"), output: try required("--output"))
        case "audit":
            let formatName = flags["--format"] ?? "text"
            guard let format = AuditFormat(rawValue: formatName) else {
                throw UsageError.badFormat(formatName)
            }
            return .audit(policies: try required("--policies"), format: format, compare: flags["--compare"])
        case "trace":
            return .trace(
                policies: flags["--policies"] ?? "policies", installed: flags["--installed"], json: flags["--json"],
                command: traced)
        default:
            let name = flags["--fail-on"] ?? "high"
            guard let severity = Severity(rawValue: name), severity != .info else {
                throw UsageError.badSeverity(name)
            }
            return .check(policies: try required("--policies"), failOn: severity)
        }
    }
}
