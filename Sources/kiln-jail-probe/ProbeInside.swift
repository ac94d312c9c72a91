import CKiln
import KilnJSON
import KilnSeccomp
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// What the probe can see of its own state, from inside (there is no /proc).
enum ProbeInside {
    static func identity() -> [(key: String, value: JSONValue)] {
        var effective: UInt64 = 0, permitted: UInt64 = 0, inheritable: UInt64 = 0
        _ = ckiln_capget(&effective, &permitted, &inheritable)
        let last = ckiln_cap_last_cap()
        let bounding = (0...last).filter { ckiln_capbset_read($0) == 1 }.count
        let ambient = (0...last).filter { ckiln_cap_ambient_is_set($0) == 1 }.count
        return [
            ("uid", .integer(getuid())), ("euid", .integer(geteuid())),
            ("gid", .integer(getgid())), ("egid", .integer(getegid())),
            ("supplementaryGroups", .integer(getgroups(0, nil))),
            ("pid", .integer(getpid())), ("ppid", .integer(getppid())),
            (
                "capabilities",
                .object([
                    ("effective", .integer(effective)), ("permitted", .integer(permitted)),
                    ("inheritable", .integer(inheritable)), ("bounding", .integer(bounding)),
                    ("ambient", .integer(ambient)),
                ])
            ),
            ("noNewPrivs", .integer(ckiln_get_no_new_privs())),
            ("seccompMode", .integer(ckiln_get_seccomp())),
        ]
    }

    /// Each entry with its type, mode and owner, as ls -ln would show them.
    static func listing(_ path: String) -> JSONValue {
        guard let names = try? FileSystem.listDirectory(path) else { return .null }
        return .array(
            names.map { name in
                var info = stat()
                let full = path == "/" ? "/" + name : path + "/" + name
                guard lstat(full, &info) == 0 else {
                    return .object([("name", .string(name)), ("error", .string(ErrnoNames.name(of: errno) ?? "?"))])
                }
                let kind: String
                switch info.st_mode & S_IFMT {
                case S_IFDIR: kind = "directory"
                case S_IFREG: kind = "file"
                case S_IFCHR: kind = "char"
                case S_IFBLK: kind = "block"
                case S_IFLNK: kind = "symlink"
                default: kind = "other"
                }
                var members: [(key: String, value: JSONValue)] = [
                    ("name", .string(name)), ("type", .string(kind)),
                    ("mode", .string(String(info.st_mode & 0o7777, radix: 8))),
                    ("uid", .integer(info.st_uid)), ("gid", .integer(info.st_gid)),
                ]
                if kind == "char" {
                    members.append(("major", .integer(ckiln_major(UInt64(info.st_rdev)))))
                    members.append(("minor", .integer(ckiln_minor(UInt64(info.st_rdev)))))
                }
                return .object(members)
            })
    }

    static func resourceLimits() -> JSONValue {
        func limit(_ resource: Int32) -> JSONValue {
            var soft: UInt64 = 0, hard: UInt64 = 0
            guard ckiln_getrlimit(resource, &soft, &hard) == 0 else { return .null }
            return .object([("soft", .integer(soft)), ("hard", .integer(hard))])
        }
        return .object([("fsize", limit(ckiln_rlimit_fsize())), ("nofile", limit(ckiln_rlimit_nofile()))])
    }

    static func environment() -> JSONValue {
        var entries: [JSONValue] = []
        var cursor = environ
        while let entry = cursor.pointee {
            entries.append(.string(String(cString: entry)))
            cursor += 1
        }
        return .array(entries)
    }

    static func openDescriptors() -> [Int32] {
        (0..<1024).filter { ckiln_fcntl_int($0, F_GETFD, 0) >= 0 }
    }

    /// The umask the VMM inherited, and the signals it inherited blocked or ignored.
    static func processState() -> [(key: String, value: JSONValue)] {
        let mask = umask(0o077)
        umask(mask)
        let signals = 1..<ckiln_signal_count()
        return [
            ("umask", .string(String(mask, radix: 8))),
            ("blockedSignals", .array(signals.filter { ckiln_signal_is_blocked($0) == 1 }.map { .integer($0) })),
            ("ignoredSignals", .array(signals.filter { ckiln_signal_is_ignored($0) == 1 }.map { .integer($0) })),
        ]
    }

    /// The VMM installs its own per-thread filters under the jailer's: stack
    /// one that refuses getppid(2) with ENOTSUP and check both now apply.
    static func stackedFilter() -> JSONValue {
        let load = BPF.ld | BPF.w | BPF.abs, returns = BPF.ret | BPF.k
        let program = [
            BPFInstruction(code: load, k: SeccompData.syscallNumberOffset),
            BPFInstruction(code: BPF.jmp | BPF.jeq | BPF.k, jt: 0, jf: 1, k: 110), // getppid on x86_64
            BPFInstruction(code: returns, k: SeccompAction.errno(UInt16(EOPNOTSUPP)).rawValue),
            BPFInstruction(code: returns, k: SeccompAction.allow.rawValue),
        ]
        do { try SeccompFilter.install(program, role: "probe") } catch {
            return .object([("installed", .bool(false)), ("error", .string("\(error)"))])
        }
        let parent = ckiln_syscall6(110, 0, 0, 0, 0, 0, 0)
        let getppidErrno = parent < 0 ? ErrnoNames.name(of: errno) ?? "?" : "allowed"
        return .object([("installed", .bool(true)), ("getppid", .string(getppidErrno)), ("sync", seccompMarker())])
    }

    static func hostname() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// sync(2) is what the test's "jailer" program refuses with EDQUOT: the
    /// errno shows that the pre-exec filter is the one in force.
    static func seccompMarker() -> JSONValue {
        let result = ckiln_sync_syscall()
        return .string(result == 0 ? "allowed" : ErrnoNames.name(of: errno) ?? "errno \(errno)")
    }
}
