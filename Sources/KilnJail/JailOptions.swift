/// One cgroup knob to write, as `--cgroup FILE=VALUE` gives it.
public struct CgroupSetting: Equatable, Sendable {
    /// The file name, `controller.name` (e.g. `memory.limit_in_bytes`).
    public let file: String
    public let value: String

    /// The controller the file belongs to: the part before the first dot.
    public var controller: String { String(file.prefix { $0 != "." }) }
}

public enum CgroupVersion: Int, Equatable, Sendable {
    case v1 = 1
    case v2 = 2
}

/// The limits `--resource-limit` accepts, named as Firecracker's jailer names them.
public enum ResourceKind: String, CaseIterable, Equatable, Sendable {
    /// RLIMIT_FSIZE: the largest file the VMM may write.
    case fileSize = "fsize"
    /// RLIMIT_NOFILE: one more than the highest descriptor number.
    case openFiles = "no-file"
}

public struct ResourceLimit: Equatable, Sendable {
    public let kind: ResourceKind
    public let value: UInt64
}

/// A launch, fully parsed and checked for form (`JailArguments`), not yet
/// checked against the host (`JailValidation`).
public struct JailOptions: Equatable, Sendable {
    public static let defaultChrootBaseDir = "/srv/jailer"
    /// Firecracker's jailer default for RLIMIT_NOFILE.
    public static let defaultOpenFiles: UInt64 = 2048

    public var id: String
    public var execFile: String
    public var uid: UInt32
    public var gid: UInt32
    public var chrootBaseDir: String = JailOptions.defaultChrootBaseDir
    /// A network namespace to join (a path such as /var/run/netns/NAME).
    public var netns: String?
    public var newNetNamespace = false
    public var daemonize = false
    public var newPIDNamespace = false
    public var cgroups: [CgroupSetting] = []
    /// Old jailers' --node: the VMM is confined to this NUMA node's memory
    /// and CPUs (cpuset.mems and cpuset.cpus, the CPUs read from sysfs).
    public var numaNode: UInt32?
    /// nil: detect from /proc/self/mountinfo (v2 on a pure cgroup2 host, else v1).
    public var cgroupVersion: CgroupVersion?
    /// Relative to each hierarchy's root; nil means the exec file's name, as in Firecracker.
    public var parentCgroup: String?
    public var resourceLimits: [ResourceLimit] = []
    /// nil: the policies built into kiln-jailer.
    public var seccompBundle: String?
    /// Host files placed read-only in the jail root (`--jail-file`).
    public var jailFiles: [JailFile] = []
    public var vmmArguments: [String] = []

    public init(id: String, execFile: String, uid: UInt32, gid: UInt32) {
        self.id = id
        self.execFile = execFile
        self.uid = uid
        self.gid = gid
    }

    /// The last component of the exec file path: the folder under the base
    /// and the binary's name inside the jail.
    public var execFileName: String { JailPaths.lastComponent(execFile) }

    public var effectiveParentCgroup: String { parentCgroup ?? execFileName }

    /// Whether step 9 forks: the VMM is then not the process the caller started.
    public var forks: Bool { daemonize || newPIDNamespace }

    /// The limits to apply: the ones given, plus Firecracker's default for
    /// open files when none was given.
    public var effectiveResourceLimits: [ResourceLimit] {
        var limits = resourceLimits
        if !limits.contains(where: { $0.kind == .openFiles }) {
            limits.append(ResourceLimit(kind: .openFiles, value: Self.defaultOpenFiles))
        }
        return limits
    }

    public var paths: JailPaths { JailPaths(base: chrootBaseDir, execFileName: execFileName, id: id) }
}

/// The arguments of `kiln-jailer cleanup`: the launch's own flags, so that an
/// orchestrator can pass the same ones; only these matter.
public struct CleanupOptions: Equatable, Sendable {
    public var id: String
    public var execFile: String
    public var chrootBaseDir: String = JailOptions.defaultChrootBaseDir
    public var parentCgroup: String?

    public init(id: String, execFile: String) {
        self.id = id
        self.execFile = execFile
    }

    public var execFileName: String { JailPaths.lastComponent(execFile) }
    public var effectiveParentCgroup: String { parentCgroup ?? execFileName }
    public var paths: JailPaths { JailPaths(base: chrootBaseDir, execFileName: execFileName, id: id) }
}

/// Where a jail lives on the host: `<base>/<exec-file-name>/<id>/root`.
public struct JailPaths: Equatable, Sendable {
    public let base: String
    public let execFileName: String
    public let id: String

    /// `<base>/<exec-file-name>`: shared by every jail of that binary.
    public var execFolder: String { JailPaths.join(base, execFileName) }
    /// `<base>/<exec-file-name>/<id>`: this jail's own folder.
    public var jailFolder: String { JailPaths.join(execFolder, id) }
    /// The folder that becomes `/` for the VMM.
    public var root: String { JailPaths.join(jailFolder, "root") }
    /// In the root, where Firecracker's jailer writes it and Kata reads it
    /// (root's, 0644: the VMM may read it, not change it). Written when the launch forks.
    public var pidFile: String { JailPaths.join(root, pidFileName) }
    public var pidFileName: String { "\(execFileName).pid" }

    /// Names inside the root.
    public static let bundleName = "seccomp.kbundle"
    /// The VMM's own folder (its user's, 0700), the one place in the jail it
    /// may create files: its API socket, /run/firecracker.socket by default, as
    /// Firecracker's lands in its jail's /run.
    public static let runFolderName = "run"
    public var execInJail: String { "/" + execFileName }
    public var bundleInJail: String { "/" + JailPaths.bundleName }

    static func join(_ a: String, _ b: String) -> String {
        a.hasSuffix("/") ? a + b : a + "/" + b
    }

    static func lastComponent(_ path: String) -> String {
        components(path).last ?? ""
    }

    /// The non-empty components of a path, split on bytes (a launch's hot path
    /// needs no grapheme breaking).
    static func components(_ path: String) -> [String] {
        path.utf8.split(separator: UInt8(ascii: "/")).map { String(decoding: $0, as: UTF8.self) }
    }
}
