#if canImport(Glibc)
import Glibc
#endif
import CKiln
import KilnSystem

/// Step 3: `<base>/<exec-file-name>/<id>/root`, holding the exec file, the
/// seccomp bundle and the mount point of /dev, plus, when the launch forks,
/// the pid file beside the root.
///
/// Walked by descriptor (openat(2) and friends), each name looked up once:
/// the base and the exec file's folder must be root's and writable by root
/// alone, so that no other user can rename or replace anything below them,
/// and every later step reaches the root through the descriptor held here,
/// never through its path.
struct JailFolder {
    /// The folder that becomes `/` (O_PATH).
    let root: FileDescriptor
    /// Opened now, written at step 9 (it lives outside the root); only when
    /// the launch forks, as with Firecracker's jailer: otherwise the VMM's pid
    /// is the jailer's own, which the caller already knows.
    let pidFile: FileDescriptor?

    static func create(_ launch: ValidatedLaunch, ledger: CleanupLedger) throws -> JailFolder {
        let paths = launch.options.paths
        let execFolder = try HostDirectory.retryingIfAParentVanishes { () throws -> FileDescriptor in
            let base = try walkToBase(paths.base, ledger: ledger)
            try HostDirectory.requireTrusted(base, "--chroot-base-dir \(paths.base)", step: .jailFolder)
            let description = "the exec file's folder \(paths.execFolder)"
            let created = try HostDirectory.makeDirectory(paths.execFileName, in: base, subject: paths.execFolder)
            if created {
                ledger.record("folder \(paths.execFolder)") {
                    try HostDirectory.removeIfEmpty(paths.execFileName, in: base, subject: paths.execFolder)
                }
            }
            defer { if !created { base.close() } }
            let execFolder = try HostDirectory.openOwnFolder(paths.execFileName, in: base, description, step: .jailFolder)
            try HostDirectory.requireTrusted(execFolder, description, step: .jailFolder)
            // The jail's own folder must be new: two launches with one id never share it.
            guard mkdirat(execFolder.rawValue, paths.id, 0o755) == 0 else {
                let error = SystemError.current("mkdir", subject: paths.jailFolder)
                if error.errno == EEXIST { throw JailFailure(.jailFolder, "the jail \(paths.jailFolder) already exists: an id is never reused") }
                throw error
            }
            return execFolder
        }
        ledger.record("jail folder \(paths.jailFolder)") {
            try HostDirectory.removeTree(paths.id, in: execFolder, subject: paths.jailFolder)
        }
        let jailFolder = try HostDirectory.openOwnFolder(paths.id, in: execFolder, "the jail \(paths.jailFolder)", step: .jailFolder)
        defer { jailFolder.close() }
        try HostDirectory.makeDirectory("root", in: jailFolder, subject: paths.root)
        let root = try HostDirectory.openOwnFolder("root", in: jailFolder, "the jail root \(paths.root)", step: .jailFolder)

        // The mount point of the jail's private /dev (step 8).
        try HostDirectory.makeDirectory("dev", in: root, subject: paths.root + "/dev")
        // The VMM's writable folder (its API socket); the root stays root's.
        try HostDirectory.makeDirectory(JailPaths.runFolderName, in: root, mode: 0o700, subject: paths.root + "/run")
        try check("chown \(launch.options.uid):\(launch.options.gid)", subject: paths.root + "/run") {
            fchownat(root.rawValue, JailPaths.runFolderName, launch.options.uid, launch.options.gid, AT_SYMLINK_NOFOLLOW)
        }
        try launch.execFile.place(named: paths.execFileName, mode: 0o755, in: root, rootPath: paths.root,
                                  uid: launch.options.uid, gid: launch.options.gid)
        try writeFile(launch.bundleBytes, named: JailPaths.bundleName, mode: 0o444, in: root, subject: paths.root)
        for file in launch.jailFiles {
            try file.place(in: root, rootPath: paths.root, uid: launch.options.uid, gid: launch.options.gid)
        }

        var pidFile: FileDescriptor?
        if launch.options.forks {
            pidFile = FileDescriptor(rawValue: try check("create", subject: paths.pidFile) {
                ckiln_openat(jailFolder.rawValue, JailPaths.lastComponent(paths.pidFile), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            })
        }
        return JailFolder(root: root, pidFile: pidFile)
    }

    /// Opens the base folder from `/`, creating each missing folder (0755,
    /// root's: the umask is 0). Symbolic links are followed here, as the
    /// base is the administrator's own path (it may sit under /var/run);
    /// what counts is the folder reached, which the caller checks. Every
    /// descriptor but the base's is closed, unless the ledger needs it to
    /// remove a folder this run created.
    static func walkToBase(_ base: String, ledger: CleanupLedger) throws -> FileDescriptor {
        var parent = try HostDirectory.open("/")
        var walked = ""
        for component in JailPaths.components(base) {
            let subject = walked + "/" + component
            let enclosing = parent
            let created = try HostDirectory.makeDirectory(component, in: enclosing, subject: subject)
            if created {
                ledger.record("folder \(subject)") { try HostDirectory.removeIfEmpty(component, in: enclosing, subject: subject) }
            }
            defer { if !created { enclosing.close() } }
            parent = try HostDirectory.open(component, in: enclosing, followingLinks: true)
            walked = subject
        }
        return parent
    }

    /// A new file `name` in `directory` (owned by the jailer, that is root)
    /// with `size` bytes of `input`.
    static func copy(_ input: FileDescriptor, size: UInt64, named name: String, mode: mode_t,
                     in directory: FileDescriptor, subject: String) throws {
        let output = try check("create", subject: subject) {
            ckiln_openat(directory.rawValue, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, UInt32(mode))
        }
        defer { close(output) }
        try check("copy into", subject: subject) { ckiln_copy_file(input.rawValue, output, size) }
    }

    static func writeFile(_ bytes: [UInt8], named name: String, mode: mode_t, in directory: FileDescriptor, subject: String) throws {
        let fd = try check("create", subject: subject + "/" + name) {
            ckiln_openat(directory.rawValue, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, UInt32(mode))
        }
        try FileDescriptor(rawValue: fd).closeAfter { try $0.writeAll(bytes) }
    }
}
