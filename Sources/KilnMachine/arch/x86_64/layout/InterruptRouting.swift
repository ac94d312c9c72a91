/// Which interrupt-controller pins each GSI drives, as on a PC (and as QEMU
/// programs KVM): ISA IRQs 0-15 reach the 8259 pair, GSIs 0-23 the IOAPIC,
/// except that IRQ 0 (the PIT, which KVM raises on GSI 0) is wired to IOAPIC
/// pin 2. The MADT says so with an interrupt source override (IRQ 0 -> GSI 2,
/// ACPI 6.4 §5.2.12.5); GSI 2 itself is the PIC cascade and has no route.
public enum InterruptRouting {
    public enum Chip: UInt32, Sendable {
        // KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC.
        case picMaster = 0
        case picSlave = 1
        case ioapic = 2
    }

    public struct Route: Equatable, Sendable {
        public let gsi: UInt32
        public let chip: Chip
        public let pin: UInt32
    }

    public static let ioapicPins: UInt32 = 24

    public static let pc: [Route] = {
        var routes: [Route] = []
        for irq in UInt32(0)..<16 where irq != 2 {
            routes.append(Route(gsi: irq, chip: irq < 8 ? .picMaster : .picSlave, pin: irq % 8))
        }
        for gsi in UInt32(0)..<ioapicPins where gsi != 2 {
            routes.append(Route(gsi: gsi, chip: .ioapic, pin: gsi == 0 ? 2 : gsi))
        }
        return routes
    }()
}
