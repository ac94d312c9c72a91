#if canImport(Glibc)
    import Glibc
#endif

/// Whole-file helpers for small files: policies, bundles, configs, cgroup
/// knobs. Large or guest-facing I/O goes through `FileDescriptor` directly.
public enum FileSystem {
    public static func readFile(_ path: String, limit: Int = 64 << 20) throws -> [UInt8] {
        let fd = try FileDescriptor.open(path, O_RDONLY)
        return try fd.closeAfter { fd in
            do { return try fd.readAll(limit: limit) } catch let error as SystemError {
                throw SystemError(error.operation, subject: path, errno: error.errno)
            }
        }
    }

    public static func readText(_ path: String, limit: Int = 64 << 20) throws -> String {
        String(decoding: try readFile(path, limit: limit), as: UTF8.self)
    }

    /// Writes `bytes` to a temporary file beside `path`, flushes it and
    /// renames it over `path`, so that a reader sees the old file or the whole
    /// new one, never a partial write. The temporary file is removed on failure.
    public static func writeAtomically<C: Collection>(
        _ path: String, _ bytes: C, mode: UInt32 = 0o644
    ) throws where C.Element == UInt8 {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = try FileDescriptor.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC, mode: mode)
        do {
            try fd.writeAll(bytes)
            try check("fsync", subject: temporary) { fsync(fd.rawValue) }
            fd.close()
            try check("rename", subject: path) { rename(temporary, path) }
        } catch {
            fd.close()
            unlink(temporary)
            throw error
        }
    }

    public static func exists(_ path: String) -> Bool {
        access(path, F_OK) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    public static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    /// The names in a directory, sorted, without "." and "..".
    public static func listDirectory(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else { throw SystemError.current("opendir", subject: path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }
}
