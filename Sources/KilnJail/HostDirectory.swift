import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Directory operations relative to a directory descriptor (openat(2) and
/// friends), so that they keep working on the host's tree from inside the
/// jail's mount namespace, and never follow a symbolic link planted in a path.
enum HostDirectory {
    /// An O_PATH descriptor: enough to be the `dirfd` of *at calls, no more.
    static func open(_ path: String) throws -> FileDescriptor {
        try FileDescriptor.open(path, ckiln_o_path() | ckiln_o_directory())
    }

    /// `followingLinks` is for the administrator's own path (the base folder,
    /// which may well sit under a link such as /var/run); never for the
    /// folders the jailer creates under it.
    static func open(_ name: String, in parent: FileDescriptor, followingLinks: Bool = false) throws -> FileDescriptor {
        let flags = ckiln_o_path() | ckiln_o_directory() | O_CLOEXEC | (followingLinks ? 0 : ckiln_o_nofollow())
        let fd = try check("open", subject: name) { ckiln_openat(parent.rawValue, name, flags, 0) }
        return FileDescriptor(rawValue: fd)
    }

    /// Why a folder the jail hangs from would let another user change what
    /// its names lead to, or nil: whoever owns a folder, or may write to it,
    /// can rename(2) or replace its entries (such as a jail folder, swapped
    /// for a symbolic link to their own tree) while the jailer works.
    static func untrustedReason(_ info: stat) -> String? {
        if info.st_uid != 0 { return "is owned by uid \(info.st_uid), not by root" }
        let writers = [(0o020, "its group"), (0o002, "others")].filter { info.st_mode & mode_t($0.0) != 0 }.map(\.1)
        if !writers.isEmpty {
            return
                "is writable by \(writers.joined(separator: " and ")) (mode \(String(info.st_mode & 0o7777, radix: 8)))"
        }
        return nil
    }

    /// The refusal of a folder that `description` names, or nil when root
    /// owns it and only root may write to it.
    static func trustProblem(_ description: String, _ info: stat) -> String? {
        untrustedReason(info).map {
            "\(description) \($0): another user could redirect the jail; make it root's, mode 0755"
        }
    }

    /// `trustProblem` of the open folder `directory`: fstat(2) of the
    /// descriptor itself, so that the folder checked is the one used.
    static func requireTrusted(_ directory: FileDescriptor, _ description: String, step: JailStep) throws {
        var info = stat()
        try check("stat", subject: description) { fstat(directory.rawValue, &info) }
        if let problem = trustProblem(description, info) { throw JailFailure(step, problem) }
    }

    /// Opens the folder `name` in `parent` that the jailer may have created
    /// itself, never through a symbolic link (O_NOFOLLOW, openat(2)).
    static func openOwnFolder(_ name: String, in parent: FileDescriptor, _ description: String, step: JailStep) throws
        -> FileDescriptor
    {
        do { return try open(name, in: parent) } catch let error as SystemError
            where error.errno == ELOOP || error.errno == ENOTDIR
        {
            throw JailFailure(
                step, "\(description) is a symbolic link or not a folder: the jailer never follows a link there")
        }
    }

    /// mkdir; returns false when the directory was already there.
    @discardableResult
    static func makeDirectory(_ name: String, in parent: FileDescriptor, mode: mode_t = 0o755, subject: String) throws
        -> Bool
    {
        if mkdirat(parent.rawValue, name, mode) == 0 { return true }
        if errno == EEXIST {
            var info = stat()
            if fstatat(parent.rawValue, name, &info, 0) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
                return false // the caller's open decides whether a link may lead here
            }
            throw SystemError("mkdir", subject: subject + " (exists and is not a directory)", errno: EEXIST)
        }
        throw SystemError.current("mkdir", subject: subject)
    }

    /// Runs `body` again (three tries in all) when a folder it walks through
    /// vanished: a concurrent cleanup or rollback removes a shared parent (the
    /// exec file's folder, a parent cgroup) once its last jail is gone, and
    /// may do so between this launch's mkdir of that parent and its use.
    static func retryingIfAParentVanishes<T>(_ body: () throws -> T) throws -> T {
        var tries = 1
        while true {
            do { return try body() } catch let error as SystemError where error.errno == ENOENT && tries < 3 {
                tries += 1
            }
        }
    }

    /// rmdir that treats "already gone" as done.
    static func removeDirectory(_ name: String, in parent: FileDescriptor, subject: String) throws {
        if unlinkat(parent.rawValue, name, ckiln_at_removedir()) == 0 || errno == ENOENT { return }
        throw SystemError.current("rmdir", subject: subject)
    }

    /// rmdir of a folder this run created but others may share (such as
    /// `<base>/<exec-file-name>`): left alone while another jail uses it.
    static func removeIfEmpty(_ name: String, in parent: FileDescriptor, subject: String) throws {
        if unlinkat(parent.rawValue, name, ckiln_at_removedir()) == 0 { return }
        if [ENOENT, ENOTEMPTY, EEXIST, EBUSY].contains(errno) { return }
        throw SystemError.current("rmdir", subject: subject)
    }

    /// Removes `name` and everything under it, without following symbolic
    /// links. An absent `name` is not an error, so cleanup may run twice.
    static func removeTree(_ name: String, in parent: FileDescriptor, subject: String) throws {
        let fd = ckiln_openat(parent.rawValue, name, O_RDONLY | ckiln_o_directory() | ckiln_o_nofollow() | O_CLOEXEC, 0)
        if fd < 0 {
            if errno == ENOENT { return }
            if errno == ENOTDIR || errno == ELOOP {
                try check("unlink", subject: subject) { unlinkat(parent.rawValue, name, 0) }
                return
            }
            throw SystemError.current("open", subject: subject)
        }
        guard let stream = fdopendir(fd) else {
            close(fd)
            throw SystemError.current("fdopendir", subject: subject)
        }
        defer { closedir(stream) }
        var children: [String] = []
        while let entry = readdir(stream) {
            let child = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if child != "." && child != ".." { children.append(child) }
        }
        let directory = FileDescriptor(rawValue: fd)
        for child in children {
            let childSubject = subject + "/" + child
            var info = stat()
            try check("stat", subject: childSubject) { fstatat(fd, child, &info, ckiln_at_symlink_nofollow()) }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                try removeTree(child, in: directory, subject: childSubject)
            } else {
                try check("unlink", subject: childSubject) { unlinkat(fd, child, 0) }
            }
        }
        try removeDirectory(name, in: parent, subject: subject)
    }

    /// One write of `text` to an existing file such as a cgroup knob: the
    /// kernel parses each write whole, so it must not be split.
    static func write(_ text: String, to name: String, in directory: FileDescriptor, subject: String) throws {
        let fd = try check("open", subject: subject) {
            ckiln_openat(directory.rawValue, name, O_WRONLY | O_CLOEXEC | ckiln_o_nofollow(), 0)
        }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        let written = try check("write \"\(text)\" to", subject: subject) {
            bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        }
        guard written == bytes.count else { throw SystemError("write (short) to", subject: subject, errno: EIO) }
    }

    static func read(_ name: String, in directory: FileDescriptor, subject: String) throws -> String {
        let fd = try check("open", subject: subject) {
            ckiln_openat(directory.rawValue, name, O_RDONLY | O_CLOEXEC | ckiln_o_nofollow(), 0)
        }
        return try FileDescriptor(rawValue: fd).closeAfter {
            String(decoding: try $0.readAll(limit: 1 << 20), as: UTF8.self)
        }
    }
}
