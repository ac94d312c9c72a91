import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Step 9: the process that will exec the VMM, and its pid file.
///
/// With `--daemonize` or `--new-pid-ns` the jailer forks: the child goes on
/// (as pid 1 of the new PID namespace when one was asked for), and the parent
/// writes the child's host pid to the pid file and exits 0, as Firecracker's
/// jailer does. Otherwise the jailer itself becomes the VMM, whose pid the
/// caller knows: no fork, no pid file.
enum Daemon {
    enum Role { case parentDone, vmm }

    static func become(daemonize: Bool, pidFile: FileDescriptor?, devNull: FileDescriptor?) throws -> Role {
        if let pidFile {
            let child = try check("fork") { ckiln_fork() }
            if child > 0 {
                try writePID(child, to: pidFile)
                return .parentDone
            }
            pidFile.close()
        }
        if daemonize {
            // A new session without a controlling terminal; stdio goes to /dev/null.
            try check("setsid") { setsid() }
            if let devNull {
                for target: Int32 in 0...2 {
                    try check("dup2 /dev/null to", subject: "fd \(target)") { dup2(devNull.rawValue, target) }
                }
            }
        }
        return .vmm
    }

    static func writePID(_ pid: pid_t, to file: FileDescriptor) throws {
        do { try file.writeAll(Array("\(pid)\n".utf8)) } catch let error as SystemError {
            throw SystemError(error.operation, subject: "the pid file", errno: error.errno)
        }
    }
}
