/// The ACPI hardware-reduced sleep control register (ACPI 6.4 §4.8.3.7):
/// SLP_TYPx in bits 2-4 and SLP_EN in bit 5. Writing SLP_EN with the S5
/// type powers the machine off. The FADT's SLEEP_CONTROL_REG and the DSDT's
/// \_S5 package (KilnACPI) point here; the status register beside it reads
/// WAK_STS clear. `LegacyDevices.wire` says where `poweroff` goes (the
/// machine stops with `.poweroff`).
// @unchecked Sendable: `poweroff` requests an exit, safe from any thread
public final class SleepControlDevice: BusDevice, @unchecked Sendable {
    /// The SLP_TYP value the DSDT's \_S5 object must announce.
    public static let s5SleepType: UInt8 = 5
    static let sleepEnable: UInt8 = 1 << 5

    private let poweroff: () -> Void

    public init(poweroff: @escaping () -> Void) { self.poweroff = poweroff }

    public func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        data.initializeMemory(as: UInt8.self, repeating: 0)
    }

    public func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        guard offset == 0, let value = data.first else { return }
        if value & SleepControlDevice.sleepEnable != 0 && (value >> 2) & 0x7 == SleepControlDevice.s5SleepType {
            poweroff()
        }
    }
}
