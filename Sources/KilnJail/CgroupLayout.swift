/// The cgroup hierarchies a host has mounted, read from /proc/self/mountinfo
/// (proc(5), "/proc/pid/mountinfo"). A host may mount v1 controllers, the
/// unified v2 hierarchy, or both: this machine is hybrid, with every
/// controller on v1 and a cgroup2 mount that holds only hugetlb.
public struct CgroupLayout: Equatable, Sendable {
    /// v1: each controller's mount point (`cpu` and `cpuacct` may share one).
    public var v1Mounts: [String: String] = [:]
    /// v2: the first cgroup2 mount point.
    public var v2Mount: String?

    public init(v1Mounts: [String: String] = [:], v2Mount: String? = nil) {
        self.v1Mounts = v1Mounts
        self.v2Mount = v2Mount
    }

    /// Parses mountinfo text. Each line is
    /// `id parent major:minor root mount-point options [optional...] - fstype source super-options`.
    /// Works on bytes: this runs on every launch that asks for cgroups.
    public init(mountInfo text: String) { self.init(mountInfo: Array(text.utf8)) }

    /// Scans each line's fields in place (one reused list of ranges): most
    /// lines are not cgroups and cost no allocation. Splitting every line and
    /// field into arrays was 37% of a jailer launch's instructions (callgrind).
    public init(mountInfo bytes: [UInt8]) {
        var fields: [Range<Int>] = []
        fields.reserveCapacity(16)
        var lineStart = 0
        while lineStart < bytes.count {
            let lineEnd = bytes[lineStart...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            fields.removeAll(keepingCapacity: true)
            var index = lineStart
            while index < lineEnd {
                if bytes[index] == UInt8(ascii: " ") {
                    index += 1
                    continue
                }
                let start = index
                while index < lineEnd && bytes[index] != UInt8(ascii: " ") { index += 1 }
                fields.append(start..<index)
            }
            read(line: fields, of: bytes)
            lineStart = lineEnd + 1
        }
    }

    /// One line's fields: a cgroup (v1) mount's controllers, or the first cgroup2 mount.
    mutating func read(line fields: [Range<Int>], of bytes: [UInt8]) {
        guard
            let separator = fields.firstIndex(where: { $0.count == 1 && bytes[$0.lowerBound] == UInt8(ascii: "-") }),
            separator >= 5, fields.count >= separator + 4
        else { return }
        let fstype = bytes[fields[separator + 1]]
        if fstype.elementsEqual("cgroup".utf8) {
            let mountPoint = Self.unescape(bytes[fields[4]])
            for option in bytes[fields[separator + 3]].split(separator: UInt8(ascii: ",")) {
                // Named hierarchies (name=systemd) and mount flags carry no controller.
                if option.contains(UInt8(ascii: "=")) { continue }
                let name = String(decoding: option, as: UTF8.self)
                if Self.mountFlags.contains(name) { continue }
                if v1Mounts[name] == nil { v1Mounts[name] = mountPoint }
            }
        } else if fstype.elementsEqual("cgroup2".utf8), v2Mount == nil {
            v2Mount = Self.unescape(bytes[fields[4]])
        }
    }

    static let mountFlags: Set<String> = [
        "rw", "ro", "noprefix", "clone_children", "xattr", "nosuid", "nodev", "noexec", "relatime", "favordynmods",
    ]

    /// mountinfo escapes space, tab, newline and backslash as \ooo octal.
    static func unescape(_ field: ArraySlice<UInt8>) -> String {
        var bytes: [UInt8] = []
        var input = field
        while let byte = input.popFirst() {
            let digits = input.prefix(3)
            if byte == UInt8(ascii: "\\"), digits.count == 3, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x37 }) {
                bytes.append(digits.reduce(0) { $0 &* 8 &+ ($1 - 0x30) })
                input = input.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Without `--cgroup-version`: v1 when the host mounts any v1 controller
    /// (Firecracker's default), v2 on a pure cgroup2 host.
    public var defaultVersion: CgroupVersion { v1Mounts.isEmpty && v2Mount != nil ? .v2 : .v1 }

    /// Every hierarchy root a jail's cgroup could live in, for cleanup.
    public var allMounts: [String] {
        var mounts = Array(Set(v1Mounts.values)).sorted()
        if let v2Mount { mounts.append(v2Mount) }
        return mounts
    }
}

/// One cgroup the jailer creates: `<mount>/<parent>/<id>`, the knobs to write
/// in it, and on v2 the controllers every ancestor must delegate.
public struct CgroupTarget: Equatable, Sendable {
    public let version: CgroupVersion
    public let mount: String
    /// Path components under the mount, the jail's own `<id>` last.
    public let components: [String]
    public let settings: [CgroupSetting]
    /// v2 only: controllers to write into each ancestor's cgroup.subtree_control.
    public let controllers: [String]
    /// v1 cpuset hierarchy: new cgroups start empty and must copy their parent's CPUs and memory nodes.
    public var inheritsCpuset = false
    /// v2 with `--parent-cgroup` and no `--cgroup`: `components` name a cgroup
    /// the caller made, which the VMM joins; nothing is created or written.
    public var joinsExisting = false

    public var path: String { ([mount] + components).joined(separator: "/") }

    /// The cgroups between the hierarchy's root and the jail's, outermost first.
    public var ancestors: [String] {
        components.indices.dropLast().map { ([mount] + components[...$0]).joined(separator: "/") }
    }
}

public enum CgroupPlan {
    /// Firecracker's jailer (docs/jailer.md, `--parent-cgroup`): on cgroup v2,
    /// with `--parent-cgroup` and no `--cgroup`, no cgroup is created; the VMM
    /// moves into the parent if it exists, and stays where it is if not.
    /// The cgroup to join, or nil when this case does not apply.
    public static func existingParent(
        settings: [CgroupSetting], version: CgroupVersion, layout: CgroupLayout, parent: String?
    ) -> CgroupTarget? {
        guard settings.isEmpty, version == .v2, let parent, let mount = layout.v2Mount else { return nil }
        var target = CgroupTarget(
            version: .v2, mount: mount, components: JailPaths.components(parent), settings: [], controllers: [])
        target.joinsExisting = true
        return target
    }

    /// Which cgroups to create for `settings`: on v1 one per hierarchy that a
    /// setting names, on v2 the single unified one. `v2Controllers` is the root
    /// cgroup's cgroup.controllers (what the host can delegate).
    /// Throws a validation failure naming any controller the host lacks.
    public static func targets(
        for settings: [CgroupSetting], version: CgroupVersion, layout: CgroupLayout,
        v2Controllers: Set<String>, parent: String, id: String
    ) throws -> [CgroupTarget] {
        if settings.isEmpty { return [] }
        let components = JailPaths.components(parent) + [id]
        switch version {
        case .v1:
            var byMount: [(mount: String, settings: [CgroupSetting])] = []
            for setting in settings {
                guard let mount = layout.v1Mounts[setting.controller] else {
                    let known = layout.v1Mounts.keys.sorted().joined(separator: ", ")
                    throw JailFailure(
                        .validation,
                        "unknown cgroup controller \"\(setting.controller)\" in --cgroup \(setting.file): this host mounts these v1 controllers: \(known.isEmpty ? "none" : known)"
                    )
                }
                if let index = byMount.firstIndex(where: { $0.mount == mount }) {
                    byMount[index].settings.append(setting)
                } else {
                    byMount.append((mount, [setting]))
                }
            }
            return byMount.map {
                var target = CgroupTarget(
                    version: .v1, mount: $0.mount, components: components, settings: $0.settings, controllers: [])
                target.inheritsCpuset = layout.v1Mounts["cpuset"] == $0.mount
                return target
            }
        case .v2:
            guard let mount = layout.v2Mount else {
                throw JailFailure(.validation, "--cgroup-version 2: this host has no cgroup2 mount")
            }
            var controllers: [String] = []
            for setting in settings where !controllers.contains(setting.controller) {
                guard v2Controllers.contains(setting.controller) else {
                    let known = v2Controllers.sorted().joined(separator: ", ")
                    throw JailFailure(
                        .validation,
                        "unknown cgroup controller \"\(setting.controller)\" in --cgroup \(setting.file): the cgroup2 hierarchy at \(mount) offers: \(known.isEmpty ? "none" : known)"
                    )
                }
                controllers.append(setting.controller)
            }
            return [
                CgroupTarget(
                    version: .v2, mount: mount, components: components, settings: settings, controllers: controllers)
            ]
        }
    }
}
