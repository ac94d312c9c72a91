import KilnMemory

/// Identity page tables for the 64-bit boot: PML4[0] -> one PDPT whose first
/// entries point at page directories of 2 MiB pages (Intel SDM Vol. 3A §4.5,
/// Tables 4-15 and 4-17). 2 MiB, not 1 GiB pages: kvm-pvm faults on 1 GiB
/// pages with a reserved-bit error, and every 64-bit CPU has 2 MiB pages.
public enum IdentityPageTables {
    static let present: UInt64 = 1 << 0
    static let writable: UInt64 = 1 << 1
    static let pageSize: UInt64 = 1 << 7
    static let twoMiB: UInt64 = 2 << 20

    /// Writes the tables at the layout's addresses, mapping `gib` GiB.
    public static func write(
        into memory: GuestMemory, pml4: UInt64 = X86Layout.pml4,
        pdpt: UInt64 = X86Layout.pdpt, directories: UInt64 = X86Layout.pageDirectories,
        gib: Int = X86Layout.identityMappedGiB
    ) throws {
        precondition(gib >= 1 && gib <= 512)
        try memory.fill(0, at: pml4, count: 4096)
        try memory.fill(0, at: pdpt, count: 4096)
        try memory.write(pdpt | present | writable, at: pml4)
        for directory in 0..<gib {
            let table = directories + UInt64(directory) * 4096
            try memory.write(table | present | writable, at: pdpt + UInt64(directory) * 8)
            for entry in 0..<512 {
                let physical = (UInt64(directory) * 512 + UInt64(entry)) * twoMiB
                try memory.write(physical | present | writable | pageSize, at: table + UInt64(entry) * 8)
            }
        }
    }
}
