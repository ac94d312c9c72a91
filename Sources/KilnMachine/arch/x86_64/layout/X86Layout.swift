import KilnMemory

/// Where everything sits in guest-physical memory on x86_64. The low
/// addresses follow the Linux boot protocol's conventions (and Firecracker's
/// choices, so guests tuned for it behave the same).
///
/// ```
/// 0x0000_0500  GDT                   0x0000_9000  PML4, PDPT, 4 page directories
/// 0x0000_0520  IDT (empty)           0x0002_0000  kernel command line
/// 0x0000_6000  PVH start info
/// 0x0000_7000  zero page             0x0009_fc00  EBDA .. 1 MiB: reserved
/// 0x0000_8ff0  boot stack top        0x000e_0000  ACPI tables (reserved)
/// 0x0010_0000  RAM for kernel, initrd ... up to the MMIO hole
/// 0xc000_0000  MMIO hole: boot timer, virtio-mmio, IOAPIC, LAPIC, TSS
/// 0x1_0000_0000 RAM above 4 GiB when the guest has more than 3 GiB
/// ```
public enum X86Layout {
    public static let pageSize: UInt64 = 4096

    public static let gdt: UInt64 = 0x500
    public static let idt: UInt64 = 0x520
    /// PVH boots: hvm_start_info, module list and memory map (one page).
    public static let pvhStartInfo: UInt64 = 0x6000
    public static let zeroPage: UInt64 = 0x7000
    public static let bootStackTop: UInt64 = 0x8ff0
    public static let pml4: UInt64 = 0x9000
    public static let pdpt: UInt64 = 0xa000
    /// Four page directories of 2 MiB pages identity-map the first 4 GiB,
    /// MMIO hole included (the boot timer is written with paging on).
    public static let pageDirectories: UInt64 = 0xb000
    public static let identityMappedGiB = 4
    public static let commandLine: UInt64 = 0x20000
    public static let commandLineLimit: UInt64 = 0x10000

    /// Extended BIOS data area up to 1 MiB: legacy reserved space.
    public static let ebdaStart: UInt64 = 0x9fc00
    /// The window the ACPI tables are written to (ACPI 6.4 §5.2.5.1: the
    /// RSDP is searched for in 0xE0000-0xFFFFF); marked reserved in e820.
    public static let acpiTables = 0xe_0000 as UInt64..<0x10_0000
    public static let highMemory: UInt64 = 0x10_0000

    public static let mmioHoleStart: UInt64 = 0xc000_0000
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000

    /// The boot-timer device: one page at the start of the device window.
    public static let bootTimer: UInt64 = 0xd000_0000
    /// virtio-mmio devices, 4 KiB each, after the boot timer (virtio 1.2 §4.2.2).
    public static let virtioMMIOStart: UInt64 = 0xd000_1000
    public static let virtioMMIOSize: UInt64 = 0x1000
    public static let ioapic: UInt64 = 0xfec0_0000
    public static let lapic: UInt64 = 0xfee0_0000
    /// KVM_SET_IDENTITY_MAP_ADDR takes one page and KVM_SET_TSS_ADDR three, in
    /// guest-physical space no RAM or device uses (KVM api.rst 4.49, 4.48).
    public static let identityMapPage: UInt64 = 0xfeff_c000
    public static let tss: UInt64 = 0xfeff_d000

    /// The legacy I/O ports.
    public static let serialPort: UInt16 = 0x3f8
    public static let serialIRQ: UInt32 = 4
    public static let i8042Ports: UInt16 = 0x60
    /// The keyboard interrupt (ISA IRQ 1).
    public static let i8042IRQ: UInt32 = 1
    public static let cmosPorts: UInt16 = 0x70
    /// The ACPI hardware-reduced sleep control and status registers
    /// (ACPI 6.4 §4.8.3.7); the FADT's SLEEP_CONTROL_REG points here.
    public static let sleepControlPort: UInt16 = 0x600

    /// The largest guest RAM accepted: 64 GiB keeps the page tables and e820
    /// small and is far above microVM sizes.
    public static let maximumMemory: UInt64 = 64 << 30

    /// Guest RAM ranges for `bytes` of memory: below the hole, then the rest
    /// from 4 GiB. Each becomes one KVM memory slot.
    public static func ramRanges(bytes: UInt64) throws -> [GuestRange] {
        guard bytes >= 16 << 20 else { throw GuestMemoryLayoutError.belowMinimum(bytes: 16 << 20) }
        guard bytes <= maximumMemory else {
            throw GuestMemoryLayoutError.aboveMaximum(bytes: maximumMemory)
        }
        guard bytes % pageSize == 0 else { throw GuestMemoryLayoutError.notWholePages }
        if bytes <= mmioHoleStart { return [GuestRange(address: 0, size: bytes)] }
        return [
            GuestRange(address: 0, size: mmioHoleStart),
            GuestRange(address: mmioHoleEnd, size: bytes - mmioHoleStart),
        ]
    }
}
