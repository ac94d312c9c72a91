import KilnACPI

/// The machine's `FirmwareTableBuilder`: KilnACPI's RSDP, XSDT,
/// hardware-reduced FADT, MADT and DSDT for a `PlatformDescription`.
///
/// Debian's kernels read no MP table and ignore `virtio_mmio.device=`, so
/// these tables are how a stock guest finds its APs, the IOAPIC, COM1, the
/// poweroff register and every virtio-mmio device (docs/platform.md,
/// "Debian's kernels").
public enum ACPIFirmware {
    /// The RSDP sits at the start of the reserved window (Linux also finds it
    /// there by scanning 0xE0000-0xFFFFF, ACPI 6.4 §5.2.5.1); the other tables
    /// follow one page later.
    static let tablesOffset: UInt64 = 0x1000

    /// What kiln's device model backs: the in-kernel 8259 pair and PIT (with
    /// IRQ 0 on GSI 2, as `InterruptRouting.pc` wires it) and the CMOS clock
    /// (`CMOSClock`), so the FADT does not claim "CMOS RTC not present".
    ///
    /// The i8042 is only a reset port, so the FADT does not announce an 8042
    /// (ACPI 6.4 Table 5.11 bit 1): announced, Linux's i8042 driver probes
    /// it for a keyboard and mouse and gives up after about 6 s of timeouts
    /// (measured at level 2). `reboot=k` still works: Linux writes 0xFE to
    /// port 0x64 whatever the FADT says (arch/x86/kernel/reboot.c, BOOT_KBD).
    static let legacy = LegacyHardware(pic: true, i8042: false, cmosRTC: true, pit: true)

    public static func tables(for platform: PlatformDescription) throws -> FirmwareTables {
        guard let ioapicAddress = UInt32(exactly: platform.ioapicAddress), platform.ioapicGSIBase == 0,
            let serialIRQ = UInt8(exactly: platform.serial.gsi)
        else {
            throw BootInputError.platformNotDescribable
        }
        // The DSDT's \_S5 announces KilnACPI's SLP_TYP; the device must agree.
        guard platform.s5SleepType == SleepRegisters.s5SleepType else {
            throw BootInputError.sleepTypeMismatch(platform.s5SleepType)
        }
        let acpi = ACPIPlatform(
            vcpuCount: platform.vcpuCount,
            ioapic: IOAPIC(id: 0, address: ioapicAddress, pinCount: Int(InterruptRouting.ioapicPins)),
            serial: SerialPort(port: platform.serial.port, irq: serialIRQ),
            // Edge-triggered: kiln signals virtio interrupts through irqfds
            // without a resample fd, as Firecracker does.
            virtioDevices: platform.virtioDevices.map {
                VirtioMMIODevice(base: $0.base, size: $0.size, gsi: $0.gsi, trigger: .edge)
            },
            legacy: legacy,
            sleepControlRegister: .ioPort(platform.sleepControlPort),
            sleepStatusRegister: .ioPort(platform.sleepStatusPort),
            tablesAddress: platform.tableWindow.lowerBound + tablesOffset,
            rsdpAddress: platform.tableWindow.lowerBound)
        let tables = try ACPITables(platform: acpi)
        return FirmwareTables(
            blobs: tables.blobs.map { FirmwareBlob(address: $0.address, bytes: $0.bytes) },
            rsdpAddress: tables.rsdpAddress)
    }
}
