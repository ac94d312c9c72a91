import KilnMemory

/// One BIOS e820 memory map entry (ACPI 6.4 §15.1, "INT 15H E820H"), as
/// stored in boot_params.e820_table: 8-byte address, 8-byte size, 4-byte type.
public struct E820Entry: Equatable, Sendable {
    public enum Kind: UInt32, Sendable {
        case ram = 1
        case reserved = 2
        case acpiReclaimable = 3
    }

    public var address: UInt64
    public var size: UInt64
    public var kind: Kind

    public init(address: UInt64, size: UInt64, kind: Kind) {
        self.address = address
        self.size = size
        self.kind = kind
    }

    public static let encodedSize = 20
    /// boot_params holds at most this many (E820_MAX_ENTRIES_ZEROPAGE).
    public static let zeroPageCapacity = 128

    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(E820Entry.encodedSize)
        withUnsafeBytes(of: address.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: size.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: kind.rawValue.littleEndian) { bytes += $0 }
        return bytes
    }
}

extension X86Layout {
    /// The guest's memory map: low RAM, the reserved EBDA/BIOS/ACPI area,
    /// RAM from 1 MiB to the hole, the MMIO hole itself, and RAM above 4 GiB.
    public static func e820Map(ram: [GuestRange]) -> [E820Entry] {
        var map: [E820Entry] = []
        for range in ram {
            if range.address == 0 {
                let end = range.address + range.size
                map.append(E820Entry(address: 0, size: ebdaStart, kind: .ram))
                map.append(E820Entry(address: ebdaStart, size: highMemory - ebdaStart, kind: .reserved))
                if end > highMemory {
                    map.append(E820Entry(address: highMemory, size: end - highMemory, kind: .ram))
                }
            } else {
                map.append(E820Entry(address: range.address, size: range.size, kind: .ram))
            }
        }
        // Reserved whatever the RAM size: the devices, IOAPIC and LAPIC live there.
        map.append(E820Entry(address: mmioHoleStart, size: mmioHoleEnd - mmioHoleStart, kind: .reserved))
        return map.sorted { $0.address < $1.address }
    }

    /// The end of RAM below the MMIO hole: where the kernel, initrd and boot
    /// structures must fit (32-bit boot fields address them).
    public static func lowMemoryEnd(ram: [GuestRange]) -> UInt64 {
        ram.first.map { min($0.address + $0.size, mmioHoleStart) } ?? 0
    }
}
