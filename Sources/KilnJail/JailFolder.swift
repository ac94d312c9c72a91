import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Step 3: `<base>/<exec-file-name>/<id>/root`, holding the exec file, the
/// seccomp bundle and the mount point of /dev, plus, when the launch forks,
/// the pid file.
///
/// Walked by descriptor (openat(2) and friends), each name looked up once:
/// the base and the exec file's folder must be root's and writable by root
/// alone, so that no other user can rename or replace anything below them,
/// and every later step reaches the root through the descriptor held here,
/// never through its path.
struct JailFolder {
    /// The folder that becomes `/` (O_PATH).
    let root: FileDescriptor
    /// Opened now, written at step 9; only when
    /// the launch forks, as with Firecracker's jailer: otherwise the VMM's pid
    /// is the jailer's own, which the caller already knows.
    let pidFile: FileDescriptor?

    static func create(_ launch: ValidatedLaunch, ledger: CleanupLedger) throws -> JailFolder {
        let paths = launch.options.paths
        let (execFolder, jailExisted) = try HostDirectory.retryingIfAParentVanishes {
            () throws -> (FileDescriptor, Bool) in
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
            let execFolder = try HostDirectory.openOwnFolder(
                paths.execFileName, in: base, description, step: .jailFolder)
            try HostDirectory.requireTrusted(execFolder, description, step: .jailFolder)
            // An existing jail folder is one an orchestrator prepared (Kata,
            // firecracker-containerd and the Go SDK link the kernel and drives
            // in before they start the jailer): used, never removed.
            guard mkdirat(execFolder.rawValue, paths.id, 0o755) == 0 else {
                guard errno == EEXIST else { throw SystemError.current("mkdir", subject: paths.jailFolder) }
                return (execFolder, true)
            }
            return (execFolder, false)
        }
        if !jailExisted {
            ledger.record("jail folder \(paths.jailFolder)") {
                try HostDirectory.removeTree(paths.id, in: execFolder, subject: paths.jailFolder)
            }
        }
        let jailFolder = try HostDirectory.openOwnFolder(
            paths.id, in: execFolder, "the jail \(paths.jailFolder)", step: .jailFolder)
        let rootExisted = try !makeOwnDirectory("root", in: jailFolder, subject: paths.root)
        if jailExisted {
            try HostDirectory.requireTrusted(jailFolder, "the existing jail \(paths.jailFolder)", step: .jailFolder)
        }
        let root = try HostDirectory.openOwnFolder(
            "root", in: jailFolder, "the jail root \(paths.root)", step: .jailFolder)
        if rootExisted {
            do {
                try HostDirectory.requireTrusted(root, "the existing jail root \(paths.root)", step: .jailFolder)
            } catch let failure as JailFailure
                where faccessat(root.rawValue, JailPaths.bundleName, F_OK, AT_SYMLINK_NOFOLLOW) == 0
            {
                // The root is the VMM user's because a launch made it so: an
                // id is never reused, and the old jail must go first.
                throw JailFailure(
                    failure.step,
                    "\(failure.message); it holds \(JailPaths.bundleName), so an earlier launch of id \(paths.id) "
                        + "left it: once its VMM has ended, run `kiln-jailer cleanup` for it")
            }
        }
        // In a prepared jail a failed launch removes only what it added:
        // through descriptors of its own (close-on-exec), as the jailer
        // may close `root` before a rollback.
        let undoIn: (FileDescriptor, String, String) throws -> Void
        if jailExisted {
            let rollbackJail = try HostDirectory.open(".", in: jailFolder)
            if !rootExisted {
                ledger.record("jail root \(paths.root)") {
                    try HostDirectory.removeTree("root", in: rollbackJail, subject: paths.root)
                }
            }
            let rollbackRoot = try HostDirectory.open("root", in: jailFolder)
            undoIn = { directory, name, subject in
                guard rootExisted || directory.rawValue != root.rawValue else { return }
                let parent = directory.rawValue == root.rawValue ? rollbackRoot : rollbackJail
                ledger.record(subject) { try HostDirectory.removeTree(name, in: parent, subject: subject) }
            }
        } else {
            undoIn = { _, _, _ in }
        }
        defer { jailFolder.close() }

        // The root becomes the VMM user's, as Firecracker's jailer makes it:
        // the VMM then creates its sockets there (a relative vsock
        // `uds_path`, Kata's `kata.hvsock`). It is checked above while still
        // root's; a later launch into this jail finds it the VMM's and
        // refuses it, so nothing the VMM does here reaches a later launch.
        var rootInfo = stat()
        try check("stat", subject: paths.root) {
            fstatat(jailFolder.rawValue, "root", &rootInfo, ckiln_at_symlink_nofollow())
        }
        if rootExisted {
            let (owner, group) = (rootInfo.st_uid, rootInfo.st_gid)
            let restore = try HostDirectory.open(".", in: jailFolder)
            ledger.record("owner of \(paths.root)") {
                defer { restore.close() }
                try check("chown \(owner):\(group)", subject: paths.root) {
                    fchownat(restore.rawValue, "root", owner, group, ckiln_at_symlink_nofollow())
                }
            }
        }
        try check("chown \(launch.options.uid):\(launch.options.gid)", subject: paths.root) {
            fchownat(jailFolder.rawValue, "root", launch.options.uid, launch.options.gid, ckiln_at_symlink_nofollow())
        }

        // The mount point of the jail's private /dev (step 8).
        if try makeOwnDirectory("dev", in: root, subject: paths.root + "/dev") {
            try undoIn(root, "dev", paths.root + "/dev")
        }
        // The VMM's own folder (its API socket, where firecracker-go-sdk looks).
        if try makeOwnDirectory(JailPaths.runFolderName, in: root, mode: 0o700, subject: paths.root + "/run") {
            try undoIn(root, JailPaths.runFolderName, paths.root + "/run")
        }
        // The VMM's user's alone, also when an orchestrator made it first.
        let run = FileDescriptor(
            rawValue: try check("open", subject: paths.root + "/run") {
                ckiln_openat(
                    root.rawValue, JailPaths.runFolderName,
                    O_RDONLY | ckiln_o_directory() | ckiln_o_nofollow() | O_CLOEXEC, 0)
            })
        try run.closeAfter { run in
            try check("chown \(launch.options.uid):\(launch.options.gid)", subject: paths.root + "/run") {
                fchown(run.rawValue, launch.options.uid, launch.options.gid)
            }
            try check("chmod 0700", subject: paths.root + "/run") { fchmod(run.rawValue, 0o700) }
        }
        try placing(paths.execFileName, in: root, paths.root, undoIn) {
            try launch.execFile.place(
                named: paths.execFileName, mode: 0o755, in: root, rootPath: paths.root,
                uid: launch.options.uid, gid: launch.options.gid)
        }
        try placing(JailPaths.bundleName, in: root, paths.root, undoIn) {
            try writeFile(launch.bundleBytes, named: JailPaths.bundleName, mode: 0o444, in: root, subject: paths.root)
        }
        for file in launch.jailFiles {
            try placing(file.file.name, in: root, paths.root, undoIn) {
                try file.place(in: root, rootPath: paths.root, uid: launch.options.uid, gid: launch.options.gid)
            }
        }

        var pidFile: FileDescriptor?
        if launch.options.forks {
            try placing(paths.pidFileName, in: root, paths.root, undoIn) {
                pidFile = FileDescriptor(
                    rawValue: try check("create", subject: paths.pidFile) {
                        ckiln_openat(root.rawValue, paths.pidFileName, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                    })
            }
        }
        return JailFolder(root: root, pidFile: pidFile)
    }

    /// Creates `name` in `directory` (never over an orchestrator's file) and
    /// has the rollback remove it.
    static func placing(
        _ name: String, in directory: FileDescriptor, _ directoryPath: String,
        _ undoIn: (FileDescriptor, String, String) throws -> Void, _ create: () throws -> Void
    ) throws {
        let subject = JailPaths.join(directoryPath, name)
        do {
            try create()
        } catch let error as SystemError where error.errno == EEXIST {
            throw JailFailure(
                .jailFolder,
                "\(subject) already exists: kiln-jailer puts it there itself and never replaces a file "
                    + "(left from an earlier launch? run `kiln-jailer cleanup`)")
        }
        try undoIn(directory, name, subject)
    }

    /// mkdir in the jail; an existing entry must be a real folder, never a
    /// symbolic link (AT_SYMLINK_NOFOLLOW). Returns whether it was created.
    static func makeOwnDirectory(_ name: String, in parent: FileDescriptor, mode: mode_t = 0o755, subject: String)
        throws -> Bool
    {
        if mkdirat(parent.rawValue, name, mode) == 0 { return true }
        guard errno == EEXIST else { throw SystemError.current("mkdir", subject: subject) }
        var info = stat()
        try check("stat", subject: subject) { fstatat(parent.rawValue, name, &info, ckiln_at_symlink_nofollow()) }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw JailFailure(
                .jailFolder,
                "\(subject) exists and is a symbolic link or not a folder: the jailer never follows a link there")
        }
        return false
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
                ledger.record("folder \(subject)") {
                    try HostDirectory.removeIfEmpty(component, in: enclosing, subject: subject)
                }
            }
            defer { if !created { enclosing.close() } }
            parent = try HostDirectory.open(component, in: enclosing, followingLinks: true)
            walked = subject
        }
        return parent
    }

    /// A new file `name` in `directory` (owned by the jailer, that is root)
    /// with `size` bytes of `input`.
    static func copy(
        _ input: FileDescriptor, size: UInt64, named name: String, mode: mode_t, group: gid_t? = nil,
        in directory: FileDescriptor, subject: String
    ) throws {
        let output = try check("create", subject: subject) {
            ckiln_openat(directory.rawValue, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, UInt32(mode))
        }
        defer { close(output) }
        if let group { try check("chown", subject: subject) { fchown(output, 0, group) } }
        try check("copy into", subject: subject) { ckiln_copy_file(input.rawValue, output, size) }
    }

    static func writeFile(
        _ bytes: [UInt8], named name: String, mode: mode_t, in directory: FileDescriptor, subject: String
    ) throws {
        let fd = try check("create", subject: subject + "/" + name) {
            ckiln_openat(directory.rawValue, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, UInt32(mode))
        }
        try FileDescriptor(rawValue: fd).closeAfter { try $0.writeAll(bytes) }
    }
}
