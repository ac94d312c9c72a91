import CKiln
import KilnSeccomp
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// A launch whose every input the host has accepted: the launch's first step,
/// done before anything is created.
public struct ValidatedLaunch {
    public let options: JailOptions
    public let bundleBytes: [UInt8]
    public let bundle: SeccompBundle
    /// The exec file, a static ELF executable, as it was checked.
    let execFile: ValidatedHostFile
    public let cgroupTargets: [CgroupTarget]
    /// `--jail-file`s, each a regular file, in the order given.
    let jailFiles: [ValidatedJailFile]
    /// What the launch does differently from what was asked, for stderr.
    public let notices: [String]
}

public enum JailValidation {
    /// The largest bundle accepted: 16 roles of 4096 instructions, with room.
    static let maximumBundleBytes = 1 << 20

    public static func validate(_ options: JailOptions, builtinBundle: () -> [UInt8]) throws -> ValidatedLaunch {
        func refuse(_ message: String) -> JailFailure { JailFailure(.validation, message) }

        // The exec file: a regular, static ELF executable.
        var info = stat()
        guard stat(options.execFile, &info) == 0 else {
            let error = SystemError.current("stat", subject: options.execFile)
            throw refuse(
                error.errno == ENOENT ? "--exec-file \(options.execFile) does not exist" : "--exec-file: \(error)")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw refuse("--exec-file \(options.execFile) is not a regular file")
        }
        let head: [UInt8]
        do {
            head = try FileDescriptor.open(options.execFile, O_RDONLY).closeAfter { fd in
                // The bytes checked must be those of the file stat(2) saw,
                // whose identity step 3 holds the jail's copy to.
                var opened = stat()
                try check("stat", subject: options.execFile) { fstat(fd.rawValue, &opened) }
                guard opened.st_dev == info.st_dev, opened.st_ino == info.st_ino else {
                    throw refuse("--exec-file \(options.execFile) was replaced while it was checked")
                }
                var buffer = [UInt8](repeating: 0, count: ExecutableCheck.inspectedBytes)
                let count = try buffer.withUnsafeMutableBytes { try fd.read(into: $0) }
                return Array(buffer[0..<count])
            }
        } catch let failure as JailFailure {
            throw failure
        } catch { throw refuse("--exec-file \(options.execFile): \(error)") }
        if let problem = ExecutableCheck.problem(in: head) {
            throw refuse("--exec-file \(options.execFile) \(problem)")
        }
        // exec(2) checks permission as the VMM's user, after the drop: check now.
        let executable =
            info.st_uid == options.uid
            ? info.st_mode & 0o100 != 0
            : info.st_gid == options.gid ? info.st_mode & 0o010 != 0 : info.st_mode & 0o001 != 0
        guard executable else {
            throw refuse(
                "--exec-file \(options.execFile) (mode \(String(info.st_mode & 0o7777, radix: 8)), owner \(info.st_uid):\(info.st_gid)) is not executable by uid \(options.uid) gid \(options.gid)"
            )
        }

        // The base folder and the exec file's folder may exist, as folders
        // only root may change; the jail must not. Step 3 checks the folders
        // it opens again: these checks name the problem before anything exists.
        let paths = options.paths
        var folderInfo = stat()
        if stat(paths.base, &folderInfo) == 0 {
            guard (folderInfo.st_mode & S_IFMT) == S_IFDIR else {
                throw refuse("--chroot-base-dir \(paths.base) exists and is not a folder")
            }
            if let problem = HostDirectory.trustProblem("--chroot-base-dir \(paths.base)", folderInfo) {
                throw refuse(problem)
            }
        }
        if lstat(paths.execFolder, &folderInfo) == 0 {
            let description = "the exec file's folder \(paths.execFolder)"
            guard (folderInfo.st_mode & S_IFMT) != S_IFLNK else {
                throw refuse("\(description) is a symbolic link: the jailer never follows a link there")
            }
            guard (folderInfo.st_mode & S_IFMT) == S_IFDIR else {
                throw refuse("\(description) exists and is not a folder")
            }
            if let problem = HostDirectory.trustProblem(description, folderInfo) { throw refuse(problem) }
        }
        // An existing jail folder is an orchestrator's, prepared for this
        // launch: refused early here when it could not pass step 3's checks.
        var jailInfo = stat()
        if lstat(paths.jailFolder, &jailInfo) == 0 {
            let description = "the existing jail \(paths.jailFolder)"
            guard (jailInfo.st_mode & S_IFMT) == S_IFDIR else {
                throw refuse("\(description) is a symbolic link or not a folder: the jailer never follows a link there")
            }
            if let problem = HostDirectory.trustProblem(description, jailInfo) { throw refuse(problem) }
        }

        if let netns = options.netns {
            let type: Int32
            do {
                type = try FileDescriptor.open(netns, O_RDONLY).closeAfter { fd in ckiln_namespace_type(fd.rawValue) }
            } catch { throw refuse("--netns: \(error)") }
            guard type == ckiln_clone_newnet() else {
                throw refuse(
                    "--netns \(netns) is not a network namespace (such as /var/run/netns/NAME or /proc/PID/ns/net)")
            }
        }

        // The seccomp bundle: parsed whole now, copied into the jail later from
        // these very bytes, so that the file cannot change in between.
        let bundlePath = options.seccompBundle.map { "seccomp bundle \($0)" } ?? "the built-in seccomp bundle"
        let bundleBytes: [UInt8]
        let bundle: SeccompBundle
        do {
            bundleBytes =
                try options.seccompBundle.map { try FileSystem.readFile($0, limit: maximumBundleBytes) }
                ?? builtinBundle()
            bundle = try SeccompBundle(decoding: bundleBytes)
        } catch {
            throw refuse("\(bundlePath): \(error)")
        }
        let hostArchitecture = SeccompBundle.hostArchitecture
        guard bundle.architecture == hostArchitecture else {
            throw refuse(
                "\(bundlePath) was compiled for architecture 0x\(String(bundle.architecture, radix: 16)), this host is 0x\(String(hostArchitecture, radix: 16))"
            )
        }
        guard bundle.program(for: SeccompBundle.jailerRole) != nil else {
            throw refuse(
                "\(bundlePath) has no \"\(SeccompBundle.jailerRole)\" program, the filter installed before exec")
        }

        // cgroups: every controller mounted, and no cgroup of this id left over.
        var targets: [CgroupTarget] = []
        var notices: [String] = []
        var settings = options.cgroups
        if let node = options.numaNode {
            let list = try readHostFile("/sys/devices/system/node/node\(node)/cpulist") {
                refuse("--node \(node): \($0)")
            }
            let cpus = String(decoding: list.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
            guard !cpus.isEmpty else { throw refuse("--node \(node): the NUMA node has no CPUs") }
            // mems first: a v1 cpuset takes no task until both are set.
            settings =
                [CgroupSetting(file: "cpuset.mems", value: "\(node)"), CgroupSetting(file: "cpuset.cpus", value: cpus)]
                + settings
        }
        if !settings.isEmpty {
            let layout = CgroupLayout(mountInfo: try readHostFile("/proc/self/mountinfo", refuse))
            let version = options.cgroupVersion ?? layout.defaultVersion
            var v2Controllers: Set<String> = []
            if version == .v2, let mount = layout.v2Mount {
                let text = try readHostFile(JailPaths.join(mount, "cgroup.controllers"), refuse)
                v2Controllers = Set(
                    text.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\n") })
                        .map { String(decoding: $0, as: UTF8.self) })
            }
            targets = try CgroupPlan.targets(
                for: settings, version: version, layout: layout,
                v2Controllers: v2Controllers, parent: options.effectiveParentCgroup, id: options.id)
            for target in targets where FileSystem.exists(target.path) {
                throw refuse(
                    "the cgroup \(target.path) already exists: an id is never reused; run `kiln-jailer cleanup` for it")
            }
            // cgroup v2's no-internal-process rule (cgroup-v2.rst): a cgroup
            // other than the root that holds a process cannot also delegate
            // controllers to the jail's cgroup below it. Checked here, so that
            // no ancestor's cgroup.subtree_control is changed for a launch
            // that cannot succeed.
            for target in targets where target.version == .v2 {
                for ancestor in target.ancestors where FileSystem.isDirectory(ancestor) {
                    let members = try readHostFile(JailPaths.join(ancestor, "cgroup.procs"), refuse)
                    if members.contains(where: { $0 != UInt8(ascii: "\n") }) {
                        throw refuse(
                            "--parent-cgroup: the cgroup \(ancestor) holds processes, so cgroup v2 (its no-internal-process rule)"
                                + " lets it delegate no controller to the jail's cgroup below it; give a parent that holds none"
                        )
                    }
                }
            }
        } else if options.parentCgroup != nil {
            let layout = CgroupLayout(mountInfo: try readHostFile("/proc/self/mountinfo", refuse))
            if let target = CgroupPlan.existingParent(
                settings: settings, version: options.cgroupVersion ?? layout.defaultVersion,
                layout: layout, parent: options.parentCgroup)
            {
                // A parent that does not exist is no error, as with Firecracker's jailer.
                if FileSystem.isDirectory(target.path) {
                    targets = [target]
                } else {
                    notices.append(
                        "--parent-cgroup \(options.parentCgroup!): \(target.path) does not exist, so the VMM stays in the jailer's cgroup (as Firecracker's jailer does)"
                    )
                }
            }
        }

        let jailFiles = try options.jailFiles.map(ValidatedJailFile.validate)

        return ValidatedLaunch(
            options: options, bundleBytes: bundleBytes, bundle: bundle,
            execFile: ValidatedHostFile(flag: "--exec-file", path: options.execFile, info),
            cgroupTargets: targets, jailFiles: jailFiles, notices: notices)
    }

    static func readHostFile(_ path: String, _ refuse: (String) -> JailFailure) throws -> [UInt8] {
        do { return try FileSystem.readFile(path, limit: 4 << 20) } catch { throw refuse("\(error)") }
    }
}
