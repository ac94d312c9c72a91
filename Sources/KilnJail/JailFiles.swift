import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// `--jail-file HOST_PATH[:NAME]`: a file the VMM must read inside the jail
/// (a kernel, an initrd, a config file), placed read-only at `/NAME` in the
/// jail root. It lives in the jail folder, so the rollback of a failed launch
/// and `kiln-jailer cleanup` remove it with the folder.
public struct JailFile: Equatable, Sendable {
    public let hostPath: String
    /// A single file name in the jail root (default: HOST_PATH's last component).
    public let name: String

    /// Names the jail root already uses.
    static let reservedNames: Set<String> = ["dev", JailPaths.runFolderName, JailPaths.bundleName]

    /// `HOST_PATH[:NAME]`, split at the last ':' when what follows is a
    /// plain name; checked for form only.
    static func parse(_ text: String, execFileName: String) throws -> JailFile {
        var hostPath = text
        var name: String?
        if let colon = text.utf8.lastIndex(of: UInt8(ascii: ":")) {
            hostPath = String(text[..<colon])
            name = String(text[text.index(after: colon)...])
        }
        try JailArguments.checkAbsolute(hostPath, flag: "--jail-file")
        let fileName = name ?? JailPaths.lastComponent(hostPath)
        guard (1...255).contains(fileName.utf8.count), fileName != ".", fileName != "..",
            fileName.utf8.allSatisfy({ JailArguments.isAlphanumeric($0) || "-_.".utf8.contains($0) })
        else {
            throw JailArguments.usage(
                "--jail-file \"\(text)\": the name in the jail \"\(fileName)\" must be one file name of [A-Za-z0-9-_.]")
        }
        guard !reservedNames.contains(fileName), fileName != execFileName, fileName != execFileName + ".pid" else {
            throw JailArguments.usage("--jail-file \"\(text)\": the name \"\(fileName)\" is taken by the jail itself")
        }
        return JailFile(hostPath: hostPath, name: fileName)
    }

    /// Refuses two files with one name.
    static func checkUnique(_ files: [JailFile]) throws {
        var seen: Set<String> = []
        for file in files where !seen.insert(file.name).inserted {
            throw JailArguments.usage("--jail-file: two files are named \"\(file.name)\" in the jail")
        }
    }
}

/// A `JailFile` the host accepted at step 1: a regular file, as it was then.
struct ValidatedJailFile {
    let file: JailFile
    let host: ValidatedHostFile

    /// Follows symbolic links: the jail gets the file the path names.
    static func validate(_ file: JailFile) throws -> ValidatedJailFile {
        var info = stat()
        guard stat(file.hostPath, &info) == 0 else {
            let error = SystemError.current("stat", subject: file.hostPath)
            throw JailFailure(
                .validation,
                error.errno == ENOENT ? "--jail-file \(file.hostPath) does not exist" : "--jail-file: \(error)")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw JailFailure(.validation, "--jail-file \(file.hostPath) is not a regular file")
        }
        return ValidatedJailFile(file: file, host: ValidatedHostFile(flag: "--jail-file", path: file.hostPath, info))
    }

    /// Step 3: read-only at `/NAME`.
    func place(in root: FileDescriptor, rootPath: String, uid: UInt32, gid: UInt32) throws {
        try host.place(named: file.name, mode: 0o444, in: root, rootPath: rootPath, uid: uid, gid: gid)
    }
}

/// A host file the jail receives (the exec file, each `--jail-file`),
/// identified as step 1 saw it, by device and inode: the jail gets that very
/// file, never one put at its path since.
struct ValidatedHostFile {
    /// The flag that named it, for messages.
    let flag: String
    let path: String
    let device: UInt64
    let inode: UInt64

    init(flag: String, path: String, _ info: stat) {
        self.flag = flag
        self.path = path
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }

    /// Step 3: a hard link when the VMM's user can read the file but not
    /// write it and it is not set-user-ID or set-group-ID (no copy of a multi-megabyte binary, kernel or initrd on
    /// every launch); else a copy owned by root with `mode`, so that the VMM
    /// can never change a host file through its jail. The file is opened
    /// once (following symbolic links, as step 1's stat did) and must still
    /// be the one validated.
    func place(
        named name: String, mode: mode_t, in root: FileDescriptor, rootPath: String,
        uid: UInt32, gid: UInt32
    ) throws {
        let source = try FileDescriptor.open(path, O_RDONLY)
        defer { source.close() }
        var info = stat()
        try check("stat", subject: path) { fstat(source.rawValue, &info) }
        guard UInt64(info.st_dev) == device, UInt64(info.st_ino) == inode else {
            throw JailFailure(.jailFolder, "\(flag) \(path) was replaced after it was validated")
        }
        let subject = JailPaths.join(rootPath, name)
        // Never a link to a set-user-ID or set-group-ID file (chmod(2)): it
        // would be a second host path to it, which outlives an update of the
        // original; the copy has `mode`, without those bits.
        if Self.readOnlyFor(uid: uid, gid: gid, info) && info.st_mode & (S_ISUID | S_ISGID) == 0 {
            // AT_EMPTY_PATH links the open file itself: no second path look-up.
            if linkat(source.rawValue, "", root.rawValue, name, Self.atEmptyPath) == 0 { return }
            guard errno == EXDEV || errno == EPERM || errno == EMLINK else {
                throw SystemError.current("link \(path) into", subject: subject)
            }
        }
        // Anyone may walk into the jail root, so a copy of a file other host
        // users could not read keeps it from them: no bits for others, and
        // the VMM reads it through its group (root stays the owner).
        let hidden = info.st_mode & 0o004 == 0
        try JailFolder.copy(
            source, size: UInt64(info.st_size), named: name, mode: hidden ? mode & ~0o007 : mode,
            group: hidden ? gid : nil, in: root, subject: subject)
    }

    /// AT_EMPTY_PATH (linux/fcntl.h), which Glibc's module does not export.
    static let atEmptyPath: Int32 = 0x1000

    /// The group or other permission bits that apply to uid/gid allow reading
    /// and forbid writing (the VMM has no capabilities to override them). A
    /// file the VMM's user owns is never linked: an owner may chmod it.
    static func readOnlyFor(uid: UInt32, gid: UInt32, _ info: stat) -> Bool {
        guard info.st_uid != uid else { return false }
        let bits = info.st_gid == gid ? (info.st_mode >> 3) & 7 : info.st_mode & 7
        return bits & 4 != 0 && bits & 2 == 0
    }
}
