import KilnJSON

extension MachineConfig {
    /// `PATCH /machine-config`: only the fields present change, each checked
    /// as strictly as a full `PUT`.
    public mutating func patch(json reader: inout JSONObjectReader) throws {
        if let count: Int = try reader.integer("vcpu_count", in: MachineConfig.vcpuRange) { vcpuCount = count }
        if let size: Int = try reader.integer("mem_size_mib", in: 1...(1 << 20)) { memSizeMiB = size }
        if let flag = try reader.bool("smt") { smt = flag }
        if let flag = try reader.bool("track_dirty_pages") { trackDirtyPages = flag }
        if let pages = try reader.enumeration("huge_pages", as: HugePages.self) { hugePages = pages }
        if let template = try reader.string("cpu_template") { cpuTemplate = template }
        try reader.finish()
    }
}
