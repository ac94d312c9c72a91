/// What the VMM tells the guest through ACPI: its vCPUs, interrupt controller,
/// legacy devices and virtio-mmio devices, where the sleep registers are, and
/// where in guest-physical memory the tables go.
///
/// Debian's kernels parse no MP table and ignore `virtio_mmio.device=`, so this
/// is the only way such a guest learns about CPUs beyond the first, the IOAPIC
/// and virtio-mmio devices (docs/platform.md, "Debian's kernels").
public struct ACPIPlatform: Equatable, Sendable {
    /// vCPUs 0..<vcpuCount, each with local APIC id = ACPI processor UID = its index.
    public var vcpuCount: Int
    public var ioapic: IOAPIC
    /// The ISA serial port announced in the DSDT, if any.
    public var serial: SerialPort?
    public var virtioDevices: [VirtioMMIODevice]
    /// Legacy PC hardware the VMM backs; reported in the FADT and MADT flags.
    public var legacy: LegacyHardware
    /// The hardware-reduced sleep registers (ACPI 6.4 §4.8.3.7). The VMM
    /// implements them; a guest powers off by writing SLP_TYP=5 with SLP_EN to
    /// the control register (see `SleepRegisters`).
    public var sleepControlRegister: RegisterAddress
    public var sleepStatusRegister: RegisterAddress
    /// Where the XSDT, FADT, MADT and DSDT go, one after another.
    public var tablesAddress: UInt64
    /// Where the RSDP goes. Linux without `acpi_rsdp_addr` in boot_params
    /// scans 0xE0000-0xFFFFF on 16-byte boundaries (ACPI 6.4 §5.2.5.1).
    public var rsdpAddress: UInt64

    public init(
        vcpuCount: Int, ioapic: IOAPIC = IOAPIC(), serial: SerialPort? = .com1,
        virtioDevices: [VirtioMMIODevice] = [], legacy: LegacyHardware = .pc,
        sleepControlRegister: RegisterAddress, sleepStatusRegister: RegisterAddress,
        tablesAddress: UInt64, rsdpAddress: UInt64 = 0xE0000
    ) {
        self.vcpuCount = vcpuCount
        self.ioapic = ioapic
        self.serial = serial
        self.virtioDevices = virtioDevices
        self.legacy = legacy
        self.sleepControlRegister = sleepControlRegister
        self.sleepStatusRegister = sleepStatusRegister
        self.tablesAddress = tablesAddress
        self.rsdpAddress = rsdpAddress
    }

    /// At most 255 vCPUs: xAPIC ids are 8 bits and 0xFF is the broadcast id.
    public static let maximumVCPUCount = 255
    /// Device names are "V" and three hex digits, V000 to VFFF.
    public static let maximumVirtioDeviceCount = 4096
}

public struct IOAPIC: Equatable, Sendable {
    public var id: UInt8
    public var address: UInt32
    /// Input pins, GSIs 0..<pinCount. KVM's in-kernel IOAPIC has 24.
    public var pinCount: Int

    public init(id: UInt8 = 0, address: UInt32 = 0xFEC0_0000, pinCount: Int = 24) {
        self.id = id
        self.address = address
        self.pinCount = pinCount
    }
}

public struct SerialPort: Equatable, Sendable {
    public var port: UInt16
    public var irq: UInt8

    public init(port: UInt16, irq: UInt8) {
        self.port = port
        self.irq = irq
    }

    public static let com1 = SerialPort(port: 0x3F8, irq: 4)
}

/// One virtio-mmio transport (virtio 1.2 §4.2), announced as a DSDT device
/// with `_HID "LNRO0005"`, the id Linux's virtio_mmio driver matches.
public struct VirtioMMIODevice: Equatable, Sendable {
    public var base: UInt64
    public var size: UInt64
    public var gsi: UInt32
    /// Edge suits a VMM that signals through an irqfd without a resample fd,
    /// as Firecracker does; level needs the VMM to lower the line when the
    /// guest acknowledges (QEMU's microvm). Linux's virtio_mmio driver works
    /// with either: its handler reads and acknowledges InterruptStatus.
    public var trigger: InterruptTrigger

    public init(base: UInt64, size: UInt64 = 0x1000, gsi: UInt32, trigger: InterruptTrigger = .edge) {
        self.base = base
        self.size = size
        self.gsi = gsi
        self.trigger = trigger
    }
}

public struct LegacyHardware: Equatable, Sendable {
    /// A dual 8259 PIC (MADT flag PCAT_COMPAT, ACPI 6.4 §5.2.12 Table 5.20).
    public var pic: Bool
    /// An 8042 keyboard controller (FADT IAPC_BOOT_ARCH bit 1, §5.2.9.3);
    /// `reboot=k` resets through it.
    public var i8042: Bool
    /// A CMOS real-time clock. Without one the FADT says "CMOS RTC Not
    /// Present" (IAPC_BOOT_ARCH bit 5) and Linux skips the CMOS probe that
    /// otherwise costs a stock guest about 5 s (docs/platform.md, "Debian's kernels").
    public var cmosRTC: Bool
    /// The PIT on ISA IRQ 0. The MADT then says IRQ 0 arrives on GSI 2, as on
    /// a PC. KVM's default routing sends GSI 0, the line its in-kernel PIT
    /// raises, to IOAPIC pin 0; so a VMM must set routing (KVM_SET_GSI_ROUTING)
    /// that sends GSI 0 to IOAPIC pin 2 and PIC pin 0, as QEMU does.
    public var pit: Bool

    public init(pic: Bool, i8042: Bool, cmosRTC: Bool, pit: Bool) {
        self.pic = pic
        self.i8042 = i8042
        self.cmosRTC = cmosRTC
        self.pit = pit
    }

    /// What a KVM microVM with the in-kernel irqchip and PIT has: PIC, PIT,
    /// an 8042 for the reset, no CMOS clock.
    public static let pc = LegacyHardware(pic: true, i8042: true, cmosRTC: false, pit: true)
}

/// An ACPI Generic Address of a byte-wide register (ACPI 6.4 §5.2.3.2).
public struct RegisterAddress: Equatable, Sendable {
    public enum Space: UInt8, Sendable {
        case systemMemory = 0
        case systemIO = 1
    }

    public var space: Space
    public var address: UInt64

    public init(space: Space, address: UInt64) {
        self.space = space
        self.address = address
    }

    public static func ioPort(_ port: UInt16) -> RegisterAddress {
        RegisterAddress(space: .systemIO, address: UInt64(port))
    }

    public static func mmio(_ address: UInt64) -> RegisterAddress {
        RegisterAddress(space: .systemMemory, address: address)
    }
}

/// The hardware-reduced sleep control and status registers as the VMM sees
/// them (ACPI 6.4 §4.8.3.7 and §4.8.3.8).
public enum SleepRegisters {
    /// The SLP_TYP value the DSDT's `\_S5` package announces.
    public static let s5SleepType: UInt8 = 5
    /// Sleep control register: SLP_EN is bit 5, SLP_TYP bits 4-2.
    public static let sleepEnable: UInt8 = 1 << 5
    /// Sleep status register: WAK_STS is bit 7. Linux clears it before it
    /// sleeps and polls it afterwards.
    public static let wakeStatus: UInt8 = 1 << 7

    /// True when a byte written to the sleep control register asks for S5,
    /// that is a poweroff.
    public static func requestsPowerOff(_ value: UInt8) -> Bool {
        value & sleepEnable != 0 && (value >> 2) & 0x7 == s5SleepType
    }
}
