import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// `kiln-jailer cleanup`: removes a finished jail's folder and cgroups. Safe
/// to run twice: what is already gone is not an error.
public enum JailCleanup {
    public static func run(_ options: CleanupOptions) throws {
        let paths = options.paths
        // A VMM still running in the jail would lose its files under it, with
        // or without cgroups to tell: it is found by its root directory.
        if let pid = processRooted(at: paths.root) {
            throw JailFailure(
                .cleanup, "process \(pid) still runs in the jail (its root is \(paths.root)); stop it first")
        }
        let mountInfo = try during(.cleanup) { try FileSystem.readFile("/proc/self/mountinfo", limit: 4 << 20) }

        // A folder with something mounted inside (a drive an orchestrator
        // bind-mounted into the jail) is refused: removing the tree would
        // delete the mounted file system's contents.
        let prefix = paths.jailFolder + "/"
        for line in mountInfo.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " "))
            guard fields.count > 4 else { continue }
            let mountPoint = CgroupLayout.unescape(fields[4])
            if mountPoint == paths.jailFolder || mountPoint.hasPrefix(prefix) {
                throw JailFailure(.cleanup, "\(mountPoint) is still mounted inside the jail; unmount it first")
            }
        }

        var problems: [String] = []
        let layout = CgroupLayout(mountInfo: mountInfo)
        let parentComponents = JailPaths.components(options.effectiveParentCgroup)
        for mount in layout.allMounts {
            let parentPath = ([mount] + parentComponents).joined(separator: "/")
            guard FileSystem.isDirectory(parentPath) else { continue }
            do {
                let parent = try HostDirectory.open(parentPath)
                defer { parent.close() }
                if FileSystem.exists(parentPath + "/" + options.id) {
                    try HostDirectory.removeDirectory(options.id, in: parent, subject: parentPath + "/" + options.id)
                }
            } catch let error as SystemError where error.errno == EBUSY {
                problems.append("the cgroup \(parentPath)/\(options.id) still has processes: is the VMM still running?")
            } catch { problems.append("\(error)") }
        }
        // A busy cgroup means a live VMM: its folder stays until it is gone.
        if !problems.isEmpty {
            throw JailFailure(.cleanup, problems.joined(separator: "; ") + "; the jail folder was left in place")
        }

        // The same walk as a launch's: the base as the administrator named it,
        // then only root's folders and never a link, each looked up once.
        if FileSystem.isDirectory(paths.base) {
            do {
                let base = try HostDirectory.open(paths.base)
                defer { base.close() }
                try HostDirectory.requireTrusted(base, "--chroot-base-dir \(paths.base)", step: .cleanup)
                let description = "the exec file's folder \(paths.execFolder)"
                var info = stat()
                if fstatat(base.rawValue, paths.execFileName, &info, ckiln_at_symlink_nofollow()) == 0 {
                    let execFolder = try HostDirectory.openOwnFolder(
                        paths.execFileName, in: base, description, step: .cleanup)
                    defer { execFolder.close() }
                    try HostDirectory.requireTrusted(execFolder, description, step: .cleanup)
                    try HostDirectory.removeTree(paths.id, in: execFolder, subject: paths.jailFolder)
                    // Shared by every jail of this binary: removed once the last one is gone.
                    try HostDirectory.removeIfEmpty(paths.execFileName, in: base, subject: paths.execFolder)
                }
            } catch { problems.append("\(error)") }
        }

        if !problems.isEmpty { throw JailFailure(.cleanup, problems.joined(separator: "; ")) }
    }

    /// A process whose root directory is `root`: after pivot_root a jailed
    /// process's /proc/PID/root is the jail root, the same device and inode
    /// as seen from the host (a bind mount keeps both). Nil when none, or
    /// when `root` is gone.
    static func processRooted(at root: String) -> pid_t? {
        var jail = stat()
        guard lstat(root, &jail) == 0, (jail.st_mode & S_IFMT) == S_IFDIR,
            let entries = try? FileSystem.listDirectory("/proc")
        else { return nil }
        for entry in entries {
            guard let pid = pid_t(entry), pid != getpid() else { continue }
            var processRoot = stat()
            if stat("/proc/\(pid)/root", &processRoot) == 0,
                processRoot.st_dev == jail.st_dev, processRoot.st_ino == jail.st_ino
            {
                return pid
            }
        }
        return nil
    }
}
