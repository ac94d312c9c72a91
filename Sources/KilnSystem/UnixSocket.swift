import CKiln

#if canImport(Glibc)
    import Glibc
#endif

/// Stream sockets in the AF_UNIX family, for the API and vsock's host side.
public enum UnixSocket {
    /// sun_path holds 108 bytes including the terminating NUL.
    public static let maximumPathLength = 107

    /// Binds and listens on `path`. The socket is non-blocking and close-on-exec.
    /// An existing file at `path` is an error: the caller decides whether a
    /// stale socket may be removed.
    public static func listen(path: String, backlog: Int32 = 16) throws -> FileDescriptor {
        guard !path.isEmpty, path.utf8.count <= maximumPathLength else {
            throw SystemError("bind", subject: path, errno: ENAMETOOLONG)
        }
        let raw = try check("socket(AF_UNIX)") {
            socket(
                AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        }
        let fd = FileDescriptor(rawValue: raw)
        var bound = false
        do {
            try withSocketAddress(path) { address, length in
                try check("bind", subject: path) { bind(raw, address, length) }
            }
            bound = true
            try check("listen", subject: path) { Glibc.listen(raw, backlog) }
        } catch {
            fd.close()
            // bind created the socket file; a failed listen must not leave it.
            if bound { unlink(path) }
            throw error
        }
        return fd
    }

    /// Like `listen`, except that the file at `path` appears only once the
    /// socket accepts. bind(2) makes the file and listen(2) makes it accept,
    /// so a client that connects the moment the file appears (Firecracker's
    /// SDKs poll for it) would get ECONNREFUSED in between. The socket is
    /// bound under a temporary name beside `path` and renamed into place
    /// with RENAME_NOREPLACE, which leaves a file already at `path` alone
    /// (refused as bind refuses it, EADDRINUSE). Where no temporary name
    /// can be had (the path too long for one, the name taken) or the file
    /// system has no RENAME_NOREPLACE (EINVAL), `path` is bound directly.
    public static func listenOnceReady(path: String, backlog: Int32 = 16) throws -> FileDescriptor {
        let directory = path.lastIndex(of: "/").map { String(path[...$0]) } ?? ""
        let temporary = directory + ".kiln-\(getpid())"
        guard temporary.utf8.count <= maximumPathLength else { return try listen(path: path, backlog: backlog) }
        let fd: FileDescriptor
        do {
            fd = try listen(path: temporary, backlog: backlog)
        } catch let error as SystemError {
            if error.errno == EADDRINUSE { return try listen(path: path, backlog: backlog) }
            // The caller named `path`, not the temporary name.
            throw SystemError(error.operation, subject: path, errno: error.errno)
        }
        guard ckiln_rename_noreplace(temporary, path) == 0 else {
            let failure = errno
            unlink(temporary)
            fd.close()
            switch failure {
            case EINVAL: return try listen(path: path, backlog: backlog)
            case EEXIST: throw SystemError("bind", subject: path, errno: EADDRINUSE)
            default: throw SystemError("rename", subject: path, errno: failure)
            }
        }
        return fd
    }

    /// Connects a close-on-exec client socket to `path`, blocking unless
    /// `nonBlocking`. A Unix connect completes or fails at once either
    /// way: ENOENT or ECONNREFUSED (no listener), EAGAIN (a non-blocking
    /// connect to a full backlog); it never leaves one in progress.
    public static func connect(path: String, nonBlocking: Bool = false) throws -> FileDescriptor {
        guard !path.isEmpty, path.utf8.count <= maximumPathLength else {
            throw SystemError("connect", subject: path, errno: ENAMETOOLONG)
        }
        let raw = try check("socket(AF_UNIX)") {
            socket(
                AF_UNIX,
                Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
                    | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0), 0)
        }
        do {
            try withSocketAddress(path) { address, length in
                try check("connect", subject: path) { Glibc.connect(raw, address, length) }
            }
        } catch {
            Glibc.close(raw)
            throw error
        }
        return FileDescriptor(rawValue: raw)
    }

    /// Accepts one pending connection as a non-blocking socket; nil when none is pending.
    public static func accept(_ listener: FileDescriptor) throws -> FileDescriptor? {
        let raw = ckiln_accept4(listener.rawValue, Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue))
        if raw == -1 {
            switch errno {
            case EAGAIN, EINTR, ECONNABORTED: return nil
            default: throw SystemError.current("accept4")
            }
        }
        return FileDescriptor(rawValue: raw)
    }

    @discardableResult
    private static func withSocketAddress<R>(
        _ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) throws -> R
    ) rethrows -> R {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        return try withUnsafePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try body($0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
    }
}
