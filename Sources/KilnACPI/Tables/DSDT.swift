/// Differentiated System Description Table (ACPI 6.4 §5.2.11.1): the serial
/// port, every virtio-mmio device, and `\_S5` for poweroff, in AML. Revision 2
/// makes AML integers 64 bits wide.
func differentiatedSystemDescriptionTable(platform: ACPIPlatform) -> [UInt8] {
    var devices: [[UInt8]] = []
    if let serial = platform.serial {
        // An ISA 16550-compatible UART (PNP0501).
        devices.append(
            AML.device(
                "COM1",
                AML.name("_HID", AML.eisaID("PNP0501")),
                AML.name("_UID", AML.integer(1)),
                presentAndEnabled,
                AML.name(
                    "_CRS",
                    AML.resourceTemplate([
                        .ioPort(base: serial.port, length: 8),
                        .irq(serial.irq),
                    ]))))
    }
    for (index, device) in platform.virtioDevices.enumerated() {
        devices.append(
            AML.device(
                virtioDeviceName(index),
                AML.name("_HID", AML.string("LNRO0005")),
                AML.name("_UID", AML.integer(UInt64(index))),
                presentAndEnabled,
                AML.name(
                    "_CRS",
                    AML.resourceTemplate([
                        memoryWindow(base: device.base, size: device.size),
                        .interrupt(gsi: device.gsi, trigger: device.trigger),
                    ]))))
    }

    // \_S5: SLP_TYPa, SLP_TYPb (§7.4.2). A hardware-reduced OS writes SLP_TYPa
    // to the sleep control register.
    let s5 = AML.name("_S5", AML.package([AML.integer(UInt64(SleepRegisters.s5SleepType)), AML.integer(0)]))

    let aml = AML.scope("\\_SB", devices.flatMap { $0 }) + s5
    return systemDescriptionTable(signature: "DSDT", revision: 2, body: aml)
}

/// Method (_STA) { Return (0x0F) }: present, enabled, shown, functioning (§6.3.7).
private let presentAndEnabled = AML.method("_STA", AML.return(AML.integer(0x0F)))

/// "V000" to "VFFF".
func virtioDeviceName(_ index: Int) -> String {
    let digits = Array("0123456789ABCDEF")
    return "V" + String([digits[(index >> 8) & 0xF], digits[(index >> 4) & 0xF], digits[index & 0xF]])
}

/// Memory32Fixed below 4 GiB, QWordMemory above: both are what Linux's
/// `acpi_dev_resource_memory`/`_address_space` turn into an IORESOURCE_MEM.
private func memoryWindow(base: UInt64, size: UInt64) -> ResourceDescriptor {
    if base + size <= 1 << 32 && size <= UInt64(UInt32.max) {
        return .memory32Fixed(base: UInt32(base), length: UInt32(size))
    }
    return .qwordMemory(base: base, length: size)
}
