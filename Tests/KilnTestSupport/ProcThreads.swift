#if canImport(Glibc)
    import Glibc
#endif

/// A process's threads as /proc shows them: for tests that count how
/// often a thread went to sleep (an idle thread should not wake).
public enum ProcThreads {
    /// The first child of `pid` (kiln under timeout(1)).
    public static func child(of pid: pid_t) -> pid_t? {
        let text = ChildProcess.read("/proc/\(pid)/task/\(pid)/children")
        return text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first.flatMap { pid_t($0) }
    }

    /// The thread of `pid` whose name (comm) is `name`.
    public static func thread(named name: String, in pid: pid_t) -> pid_t? {
        guard let folder = opendir("/proc/\(pid)/task") else { return nil }
        defer { closedir(folder) }
        while let entry = readdir(folder) {
            let tid = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let id = pid_t(tid) else { continue }
            if ChildProcess.read("/proc/\(pid)/task/\(id)/comm") == name + "\n" {
                return id
            }
        }
        return nil
    }

    /// How often the thread went to sleep by itself (proc(5), status).
    public static func voluntarySwitches(_ pid: pid_t, _ tid: pid_t) -> Int? {
        let status = ChildProcess.read("/proc/\(pid)/task/\(tid)/status")
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("voluntary_ctxt_switches:") }) else {
            return nil
        }
        return Int(line.dropFirst("voluntary_ctxt_switches:".count).filter { $0 != " " && $0 != "\t" })
    }
}
