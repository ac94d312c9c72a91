import Testing

@testable import KilnJail

@Suite struct CgroupLayoutTests {
    /// This machine's layout: v1 controllers, one per hierarchy, and a cgroup2
    /// mount that holds only hugetlb.
    static let hybrid = """
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
        34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        """

    static let pureV2 = """
        22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
        25 22 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
        """

    @Test func readsAHybridHost() {
        let layout = CgroupLayout(mountInfo: Self.hybrid)
        #expect(
            layout.v1Mounts == [
                "cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                "cpuset": "/sys/fs/cgroup/cpuset", "memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids",
            ])
        #expect(layout.v2Mount == "/sys/fs/cgroup/unified")
        #expect(layout.defaultVersion == .v1)
        #expect(
            layout.allMounts == [
                "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuset", "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified",
            ])
    }

    @Test func readsAPureV2Host() {
        let layout = CgroupLayout(mountInfo: Self.pureV2)
        #expect(layout.v1Mounts.isEmpty && layout.v2Mount == "/sys/fs/cgroup" && layout.defaultVersion == .v2)
    }

    @Test func decodesEscapedMountPointsAndSkipsJunk() {
        let layout = CgroupLayout(
            mountInfo: "garbage line\n50 1 0:9 / /mnt/my\\040cgroups rw - cgroup cgroup rw,pids\n")
        #expect(layout.v1Mounts == ["pids": "/mnt/my cgroups"])
        #expect(CgroupLayout(mountInfo: "").v2Mount == nil)
    }

    @Test func plansOneCgroupPerV1HierarchyWithCpusetInheritance() throws {
        let settings = [
            CgroupSetting(file: "cpu.cfs_quota_us", value: "5000"), CgroupSetting(file: "pids.max", value: "9"),
            CgroupSetting(file: "cpuacct.x", value: "1"), CgroupSetting(file: "cpuset.cpus", value: "0"),
        ]
        let targets = try CgroupPlan.targets(
            for: settings, version: .v1, layout: CgroupLayout(mountInfo: Self.hybrid),
            v2Controllers: [], parent: "a/b", id: "vm")
        #expect(
            targets.map(\.path) == [
                "/sys/fs/cgroup/cpu,cpuacct/a/b/vm", "/sys/fs/cgroup/pids/a/b/vm", "/sys/fs/cgroup/cpuset/a/b/vm",
            ])
        #expect(targets[0].settings.map(\.file) == ["cpu.cfs_quota_us", "cpuacct.x"])
        #expect(targets.map(\.inheritsCpuset) == [false, false, true])
    }

    @Test func plansTheUnifiedCgroupWithItsControllers() throws {
        let settings = [
            CgroupSetting(file: "memory.max", value: "1M"), CgroupSetting(file: "pids.max", value: "9"),
            CgroupSetting(file: "memory.high", value: "900K"),
        ]
        let targets = try CgroupPlan.targets(
            for: settings, version: .v2, layout: CgroupLayout(mountInfo: Self.pureV2),
            v2Controllers: ["memory", "pids", "cpu"], parent: "kiln", id: "vm")
        #expect(
            targets == [
                CgroupTarget(
                    version: .v2, mount: "/sys/fs/cgroup", components: ["kiln", "vm"],
                    settings: settings, controllers: ["memory", "pids"])
            ])
        // Validation reads each one's cgroup.procs: the root may hold processes, these may not.
        #expect(targets.first?.ancestors == ["/sys/fs/cgroup/kiln"])
        let deep = try CgroupPlan.targets(
            for: settings, version: .v2, layout: CgroupLayout(mountInfo: Self.pureV2),
            v2Controllers: ["memory", "pids"], parent: "a/b", id: "vm")
        #expect(deep.first?.ancestors == ["/sys/fs/cgroup/a", "/sys/fs/cgroup/a/b"])
    }

    @Test func refusesControllersTheHostLacks() throws {
        let hybrid = CgroupLayout(mountInfo: Self.hybrid)
        #expect(
            throws: JailFailure(
                .validation,
                "unknown cgroup controller \"bogus\" in --cgroup bogus.max: this host mounts these v1 controllers: cpu, cpuacct, cpuset, memory, pids"
            )
        ) {
            try CgroupPlan.targets(
                for: [CgroupSetting(file: "bogus.max", value: "1")], version: .v1, layout: hybrid, v2Controllers: [],
                parent: "p", id: "i")
        }
        // On this hybrid host the cgroup2 mount offers hugetlb only.
        #expect(
            throws: JailFailure(
                .validation,
                "unknown cgroup controller \"memory\" in --cgroup memory.max: the cgroup2 hierarchy at /sys/fs/cgroup/unified offers: hugetlb"
            )
        ) {
            try CgroupPlan.targets(
                for: [CgroupSetting(file: "memory.max", value: "1")], version: .v2, layout: hybrid,
                v2Controllers: ["hugetlb"], parent: "p", id: "i")
        }
        #expect(throws: JailFailure(.validation, "--cgroup-version 2: this host has no cgroup2 mount")) {
            try CgroupPlan.targets(
                for: [CgroupSetting(file: "pids.max", value: "1")], version: .v2, layout: CgroupLayout(),
                v2Controllers: [], parent: "p", id: "i")
        }
        #expect(
            try CgroupPlan.targets(
                for: [], version: .v2, layout: CgroupLayout(), v2Controllers: [], parent: "p", id: "i"
            ).isEmpty)
    }

    /// Firecracker's v2 case without --cgroup: the VMM joins the parent as
    /// it is; with a --cgroup, on v1, or with no parent named, it does not.
    @Test func joinsTheParentOnV2OnlyWithoutSettings() {
        let pure = CgroupLayout(mountInfo: Self.pureV2)
        var expected = CgroupTarget(
            version: .v2, mount: "/sys/fs/cgroup", components: ["pool", "a"], settings: [], controllers: [])
        expected.joinsExisting = true
        #expect(CgroupPlan.existingParent(settings: [], version: .v2, layout: pure, parent: "pool/a") == expected)
        #expect(
            CgroupPlan.existingParent(
                settings: [CgroupSetting(file: "pids.max", value: "9")], version: .v2, layout: pure,
                parent: "pool") == nil)
        #expect(
            CgroupPlan.existingParent(
                settings: [], version: .v1, layout: CgroupLayout(mountInfo: Self.hybrid), parent: "pool") == nil)
        #expect(CgroupPlan.existingParent(settings: [], version: .v2, layout: pure, parent: nil) == nil)
        #expect(CgroupPlan.existingParent(settings: [], version: .v2, layout: CgroupLayout(), parent: "pool") == nil)
    }
}
