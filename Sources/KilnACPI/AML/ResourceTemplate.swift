import KilnBytes

/// Resource data descriptors for a `_CRS` buffer (ACPI 6.4 §6.4,
/// "Resource Data Types for ACPI"). A template is the descriptors followed by
/// an End Tag, wrapped in an AML Buffer.
public enum ResourceDescriptor: Equatable, Sendable {
    /// I/O port range with 16-bit decode (§6.4.2.5, "I/O Port Descriptor").
    case ioPort(base: UInt16, length: UInt8, alignment: UInt8 = 1)
    /// Legacy ISA IRQ, edge-triggered active-high (§6.4.2.1, "IRQ Descriptor",
    /// the two-byte form that implies those flags).
    case irq(UInt8)
    /// A 32-bit fixed memory range (§6.4.3.4, "32-Bit Fixed Memory Range
    /// Descriptor").
    case memory32Fixed(base: UInt32, length: UInt32, writable: Bool = true)
    /// A 64-bit memory range, for windows above 4 GiB (§6.4.3.5.1, "QWord
    /// Address Space Descriptor", resource type 0 = memory).
    case qwordMemory(base: UInt64, length: UInt64, writable: Bool = true)
    /// One interrupt by GSI (§6.4.3.6, "Extended Interrupt Descriptor").
    case interrupt(gsi: UInt32, trigger: InterruptTrigger, activeLow: Bool = false, shared: Bool = false)

    var encoded: [UInt8] {
        var bytes: [UInt8] = []
        switch self {
        case let .ioPort(base, length, alignment):
            // Small item 0x08, length 7: information (bit 0 = 16-bit decode),
            // minimum and maximum base, alignment, range length.
            bytes = [0x47, 0x01]
            bytes.appendLittleEndian(base)
            bytes.appendLittleEndian(base)
            bytes += [alignment, length]
        case let .irq(line):
            precondition(line < 16, "an ISA IRQ descriptor names IRQ 0-15")
            bytes = [0x22]
            bytes.appendLittleEndian(UInt16(1) << line)
        case let .memory32Fixed(base, length, writable):
            // Large item 0x06, length 9: information (bit 0 = read-write), base, length.
            bytes = [0x86, 0x09, 0x00, writable ? 0x01 : 0x00]
            bytes.appendLittleEndian(base)
            bytes.appendLittleEndian(length)
        case let .qwordMemory(base, length, writable):
            // Large item 0x0A, length 43 (Table 6.44): resource type 0 (memory);
            // general flags 0x0D: bit 3 maximum fixed, bit 2 minimum fixed,
            // bit 0 consumer; type-specific flags: bit 0 read-write, bits 2-1
            // = 0 non-cacheable, as device registers are.
            bytes = [0x8A, 0x2B, 0x00, 0x00, 0x0D, writable ? 0x01 : 0x00]
            bytes.appendLittleEndian(UInt64(0)) // granularity
            bytes.appendLittleEndian(base) // range minimum
            bytes.appendLittleEndian(base &+ length &- 1) // range maximum, validated by the caller
            bytes.appendLittleEndian(UInt64(0)) // translation offset
            bytes.appendLittleEndian(length)
        case let .interrupt(gsi, trigger, activeLow, shared):
            // Large item 0x09, length 6: flags (bit 0 consumer, bit 1 edge,
            // bit 2 active-low, bit 3 shared), table length 1, the GSI.
            var flags: UInt8 = 0x01
            if trigger == .edge { flags |= 0x02 }
            if activeLow { flags |= 0x04 }
            if shared { flags |= 0x08 }
            bytes = [0x89, 0x06, 0x00, flags, 0x01]
            bytes.appendLittleEndian(gsi)
        }
        return bytes
    }
}

public enum InterruptTrigger: Equatable, Sendable {
    case edge, level
}

extension AML {
    /// `ResourceTemplate() { ... }`: the descriptors, then an End Tag (§6.4.2.9)
    /// whose checksum byte is 0, meaning "treat as correct", all in a Buffer.
    public static func resourceTemplate(_ descriptors: [ResourceDescriptor]) -> [UInt8] {
        buffer(descriptors.flatMap(\.encoded) + [0x79, 0x00])
    }
}
