/// The steps of a launch, in the order the jailer runs them (`Jailer.launch`), but
/// for the resource limits, set last of all before the privilege drop. Each
/// has its own exit code so that an orchestrator can tell from the status
/// alone where a launch stopped; `kiln-jailer --help` prints this table.
public enum JailStep: Int32, CaseIterable, Sendable {
    case usage = 2
    case validation = 3
    case processState = 4
    case jailFolder = 5
    case cgroups = 6
    case resourceLimits = 7
    case namespaces = 8
    case rootSwitch = 9
    case deviceNodes = 10
    case daemonize = 11
    case privileges = 12
    case seccomp = 13
    case exec = 14
    case cleanup = 15

    public var exitCode: Int32 { rawValue }

    public var summary: String {
        switch self {
        case .usage: return "bad command line: unknown or missing flag, malformed value"
        case .validation: return "input refused by a host check (exec file, jail folder, cgroup layout, bundle)"
        case .processState: return "closing inherited descriptors or clearing the environment failed"
        case .jailFolder: return "creating the jail folder or placing the exec file or bundle failed"
        case .cgroups: return "creating, writing or joining a cgroup failed"
        case .resourceLimits: return "setting a resource limit failed"
        case .namespaces: return "joining or creating a namespace failed"
        case .rootSwitch: return "making mounts private, bind-mounting or pivot_root failed"
        case .deviceNodes: return "creating a device node failed"
        case .daemonize: return "forking, setsid or writing the pid file failed"
        case .privileges: return "dropping groups, ids or capabilities failed"
        case .seccomp: return "installing the pre-exec seccomp filter failed"
        case .exec: return "exec of the VMM failed"
        case .cleanup: return "the cleanup subcommand could not remove everything"
        }
    }
}

/// Why a launch or a cleanup stopped: the step, and a message naming the
/// problem and the value or path involved.
public struct JailFailure: Error, Equatable, CustomStringConvertible, Sendable {
    public let step: JailStep
    public let message: String

    public init(_ step: JailStep, _ message: String) {
        self.step = step
        self.message = message
    }

    public var exitCode: Int32 { step.exitCode }
    public var description: String { message }
}

/// Runs `body` and files whatever it throws under `step`, keeping the message.
@inline(__always)
func during<T>(_ step: JailStep, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let failure as JailFailure {
        throw failure
    } catch {
        throw JailFailure(step, "\(error)")
    }
}
