/// What the command line asks for.
public enum JailCommand: Equatable, Sendable {
    case launch(JailOptions)
    case cleanup(CleanupOptions)
    case help
    case version
}

/// Parses kiln-jailer's command line: Firecracker's jailer flags plus Kiln's
/// own. Pure: checks the form of every value and touches nothing on the host.
/// As in Firecracker, a value is the next argument (`--id a`; `--id=a` and a
/// value starting with `--` are refused); everything after `--` goes to the
/// VMM untouched.
public enum JailArguments {
    public static let maximumIDLength = 64

    enum Arity { case flag, value, repeatable }

    static let flags: [String: Arity] = [
        "--id": .value, "--exec-file": .value, "--uid": .value, "--gid": .value,
        "--chroot-base-dir": .value, "--netns": .value, "--daemonize": .flag,
        "--new-pid-ns": .flag, "--cgroup": .repeatable, "--cgroup-version": .value,
        "--parent-cgroup": .value, "--resource-limit": .repeatable,
        "--node": .value, "--seccomp-level": .value,
        "--seccomp-bundle": .value, "--new-net-ns": .flag, "--jail-file": .repeatable,
    ]

    public static func parse(_ arguments: [String]) throws -> JailCommand {
        var rest = arguments[...]
        let isCleanup = rest.first == "cleanup"
        if isCleanup { rest = rest.dropFirst() }

        // As in Firecracker's jailer, --help and --version win wherever they stand before `--`.
        let own = rest.prefix { $0 != "--" }
        if own.contains("--help") || own.contains("-h") { return .help }
        if own.contains("--version") { return .version }

        var values: [String: [String]] = [:]
        var vmmArguments: [String] = []
        while let argument = rest.popFirst() {
            if argument == "--" { vmmArguments = Array(rest); break }
            guard let arity = flags[argument] else {
                if argument.utf8.starts(with: "--".utf8), let equals = argument.utf8.firstIndex(of: UInt8(ascii: "=")),
                    let named = flags[String(argument[..<equals])]
                {
                    let name = String(argument[..<equals])
                    if named == .flag { throw usage("\(name) takes no value") }
                    throw usage(
                        "\"\(argument)\": write \(name) VALUE; like Firecracker's jailer, kiln-jailer takes a flag's value as the next argument"
                    )
                }
                throw usage(
                    argument.hasPrefix("-")
                        ? "unknown flag \(argument)" : "unexpected argument \"\(argument)\" (VMM arguments go after --)"
                )
            }
            if arity == .flag {
                values[argument, default: []].append("")
            } else {
                // `--id --` would take the VMM arguments' separator (or the
                // next flag) for a value.
                guard let value = rest.popFirst(), !value.utf8.starts(with: "--".utf8) else {
                    throw usage("\(argument) needs a value")
                }
                values[argument, default: []].append(value)
            }
            if arity != .repeatable, values[argument]!.count > 1 { throw usage("\(argument) given more than once") }
        }

        func single(_ name: String) -> String? { values[name]?.first }
        func required(_ name: String) throws -> String {
            guard let value = single(name) else { throw usage("missing required flag \(name)") }
            return value
        }

        let id = try required("--id")
        try checkID(id)
        let execFile = try required("--exec-file")
        try checkAbsolute(execFile, flag: "--exec-file")
        try checkExecFileName(execFile)
        let base = single("--chroot-base-dir") ?? JailOptions.defaultChrootBaseDir
        try checkAbsolute(base, flag: "--chroot-base-dir")
        let parent = single("--parent-cgroup")
        if let parent { try checkParentCgroup(parent) }

        if isCleanup {
            var options = CleanupOptions(id: id, execFile: execFile)
            options.chrootBaseDir = base
            options.parentCgroup = parent
            return .cleanup(options)
        }

        var options = JailOptions(
            id: id, execFile: execFile,
            uid: try checkID(try required("--uid"), flag: "--uid"),
            gid: try checkID(try required("--gid"), flag: "--gid"))
        options.chrootBaseDir = base
        options.parentCgroup = parent
        options.netns = single("--netns")
        if let netns = options.netns { try checkAbsolute(netns, flag: "--netns") }
        options.newNetNamespace = values["--new-net-ns"] != nil
        if options.netns != nil && options.newNetNamespace {
            throw usage("--netns and --new-net-ns exclude each other: join one namespace or create one")
        }
        options.daemonize = values["--daemonize"] != nil
        options.newPIDNamespace = values["--new-pid-ns"] != nil
        options.cgroups = try (values["--cgroup"] ?? []).map(parseCgroup)
        if let version = single("--cgroup-version") {
            guard let parsed = Int(version).flatMap(CgroupVersion.init(rawValue:)) else {
                throw usage("--cgroup-version must be 1 or 2, not \"\(version)\"")
            }
            options.cgroupVersion = parsed
        }
        options.resourceLimits = try (values["--resource-limit"] ?? []).map(parseResourceLimit)
        for kind in ResourceKind.allCases where options.resourceLimits.filter({ $0.kind == kind }).count > 1 {
            throw usage("--resource-limit \(kind.rawValue) given more than once")
        }
        if let node = single("--node") {
            guard node.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let number = UInt32(node), number < 1024 else {
                throw usage("--node must be a NUMA node number, not \"\(node)\"")
            }
            guard !options.cgroups.contains(where: { $0.controller == "cpuset" }) else {
                throw usage("--node sets cpuset.mems and cpuset.cpus itself: drop it or the --cgroup cpuset.* settings")
            }
            options.numaNode = number
        }
        // Older orchestrators pass the retired level; Kiln's filters always
        // check arguments (level 2), which serves level 1's callers too.
        if let level = single("--seccomp-level") {
            guard level == "1" || level == "2" else {
                throw usage(
                    level == "0"
                        ? "--seccomp-level 0 (no filters) is not offered: kiln-jailer always installs its filters"
                        : "--seccomp-level must be 0, 1 or 2, not \"\(level)\"")
            }
        }
        options.seccompBundle = single("--seccomp-bundle")
        if let bundle = options.seccompBundle { try checkAbsolute(bundle, flag: "--seccomp-bundle") }
        options.jailFiles = try (values["--jail-file"] ?? []).map {
            try JailFile.parse($0, execFileName: options.execFileName)
        }
        try JailFile.checkUnique(options.jailFiles)
        options.vmmArguments = vmmArguments
        return .launch(options)
    }

    static func usage(_ message: String) -> JailFailure { JailFailure(.usage, message) }

    /// 1 to 64 characters of [A-Za-z0-9-], as Firecracker's jailer requires:
    /// the id becomes a folder and cgroup name, so nothing else is safe.
    static func checkID(_ id: String) throws {
        guard (1...maximumIDLength).contains(id.utf8.count) else {
            throw usage("invalid --id \"\(id)\": it must be 1 to \(maximumIDLength) characters long")
        }
        guard id.utf8.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") }) else {
            throw usage("invalid --id \"\(id)\": only letters, digits and '-' are allowed")
        }
    }

    /// The exec file's name becomes a folder, the file's name in the jail
    /// root, and the default parent cgroup: a plain name that the jail root
    /// does not already use (a clash would only fail at step 3, after
    /// folders and cgroups exist).
    static func checkExecFileName(_ execFile: String) throws {
        let name = JailPaths.lastComponent(execFile)
        guard !name.isEmpty else { throw usage("--exec-file \(execFile) names no file") }
        guard name != ".", name.utf8.allSatisfy({ isAlphanumeric($0) || "-_.".utf8.contains($0) }) else {
            throw usage(
                "--exec-file \(execFile): its name \"\(name)\" becomes a folder and a cgroup name, so it must be one file name of [A-Za-z0-9-_.]"
            )
        }
        guard !JailFile.reservedNames.contains(name) else {
            let taken = JailFile.reservedNames.sorted().joined(separator: ", ")
            throw usage(
                "--exec-file \(execFile): the name \"\(name)\" is taken by the jail root itself (\(taken)); rename the file"
            )
        }
    }

    /// A decimal user or group id. 0 is accepted, as Firecracker's jailer
    /// accepts it and Kata passes it (its Firecracker driver runs the VMM as
    /// root): Privileges leaves such a VMM no capability in any set, locked
    /// by securebits, and SECURITY.md says why one unprivileged uid per
    /// microVM is still the way to run it.
    static func checkID(_ text: String, flag: String) throws -> UInt32 {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let value = UInt32(text), value != UInt32.max
        else {
            throw usage("\(flag) must be a decimal number below 4294967295, not \"\(text)\"")
        }
        return value
    }

    static func checkAbsolute(_ path: String, flag: String) throws {
        guard path.utf8.first == UInt8(ascii: "/") else { throw usage("\(flag) \"\(path)\" is not an absolute path") }
        guard !JailPaths.components(path).contains("..") else {
            throw usage("\(flag) \"\(path)\" contains a '..' component")
        }
    }

    /// A relative cgroup path such as `kiln` or `tenants/a`: plain components only.
    static func checkParentCgroup(_ path: String) throws {
        let components = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard !path.isEmpty,
            components.allSatisfy({ component in
                !component.isEmpty && !component.elementsEqual(".".utf8) && !component.elementsEqual("..".utf8)
                    && component.allSatisfy { isAlphanumeric($0) || "-_.".utf8.contains($0) }
            })
        else {
            throw usage("invalid --parent-cgroup \"\(path)\": a relative path of [A-Za-z0-9-_.] components")
        }
    }

    /// `controller.name=value`; the value may hold neither '/' nor a newline,
    /// so that it can only ever be one write to one file of the jail's cgroup.
    static func parseCgroup(_ text: String) throws -> CgroupSetting {
        guard let equals = text.utf8.firstIndex(of: UInt8(ascii: "=")) else {
            throw usage("--cgroup \"\(text)\" must be FILE=VALUE")
        }
        let file = String(text[..<equals])
        let value = String(text[text.index(after: equals)...])
        let parts = file.utf8.split(separator: UInt8(ascii: "."), maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
            file.utf8.allSatisfy({ isAlphanumeric($0) || "_.".utf8.contains($0) })
        else {
            throw usage("--cgroup file \"\(file)\" must be controller.name, e.g. memory.limit_in_bytes")
        }
        guard !parts[0].elementsEqual("cgroup".utf8) else {
            throw usage("--cgroup \(file): the cgroup.* core files are managed by the jailer")
        }
        guard !value.isEmpty, !value.utf8.contains(UInt8(ascii: "/")), !value.utf8.contains(UInt8(ascii: "\n")) else {
            throw usage("--cgroup \(file): the value must be non-empty, without '/' or a newline")
        }
        return CgroupSetting(file: file, value: value)
    }

    /// `fsize=N` or `no-file=N`, N a decimal count.
    static func parseResourceLimit(_ text: String) throws -> ResourceLimit {
        guard let equals = text.utf8.firstIndex(of: UInt8(ascii: "=")) else {
            throw usage("--resource-limit \"\(text)\" must be RESOURCE=N")
        }
        let name = String(text[..<equals])
        let number = String(text[text.index(after: equals)...])
        guard let kind = ResourceKind(rawValue: name) else {
            let known = ResourceKind.allCases.map(\.rawValue).joined(separator: ", ")
            throw usage("--resource-limit: unknown resource \"\(name)\" (known: \(known))")
        }
        guard number.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let value = UInt64(number) else {
            throw usage("--resource-limit \(name): \"\(number)\" is not a decimal number")
        }
        return ResourceLimit(kind: kind, value: value)
    }

    static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
    }
}
