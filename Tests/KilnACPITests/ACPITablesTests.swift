import Testing

@testable import KilnACPI

@Suite struct ACPITablesTests {
    @Test func rsdpPointsAtTheXSDTWithBothChecksums() throws {
        let tables = try ACPITables(platform: .sample())
        let rsdp = try #require(tables.blob("RSD PTR "))
        #expect(rsdp.address == 0xE0000 && tables.rsdpAddress == 0xE0000)
        #expect(rsdp.bytes.count == 36)
        #expect(Array(rsdp.bytes[0..<8]) == Array("RSD PTR ".utf8))
        #expect(Array(rsdp.bytes[0..<20]).byteSum == 0, "ACPI 1.0 checksum over bytes 0-19")
        #expect(rsdp.bytes.byteSum == 0, "extended checksum over the whole RSDP")
        #expect(rsdp.bytes[15] == 2, "revision 2")
        #expect(rsdp.bytes.read(UInt32.self, at: 16) == 0, "no RSDT")
        #expect(rsdp.bytes.read(UInt32.self, at: 20) == 36)
        #expect(rsdp.bytes.read(UInt64.self, at: 24) == tables.blob("XSDT")?.address)
    }

    @Test func everyTableHasItsLengthChecksumAndIdentity() throws {
        let tables = try ACPITables(platform: .sample())
        #expect(tables.blobs.map(\.signature) == ["RSD PTR ", "DSDT", "FACP", "APIC", "XSDT"])
        for blob in tables.blobs.dropFirst() {
            #expect(Array(blob.bytes[0..<4]) == Array(blob.signature.utf8))
            #expect(Int(blob.bytes.read(UInt32.self, at: 4)) == blob.bytes.count, "\(blob.signature) length")
            #expect(blob.bytes.byteSum == 0, "\(blob.signature) checksum")
            #expect(Array(blob.bytes[10..<16]) == Array("KILN  ".utf8), "\(blob.signature) OEM id")
            #expect(Array(blob.bytes[28..<32]) == Array("KILN".utf8), "\(blob.signature) creator id")
            #expect(blob.address % 8 == 0)
        }
    }

    @Test func tablesAreLaidOutWithoutOverlap() throws {
        let platform = ACPIPlatform.sample(vcpus: 4, devices: 8)
        let tables = try ACPITables(platform: platform)
        let ranges = tables.blobs.map { $0.address..<($0.address + UInt64($0.bytes.count)) }
        for (i, a) in ranges.enumerated() {
            for b in ranges[(i + 1)...] { #expect(!a.overlaps(b)) }
        }
        #expect(tables.blob("DSDT")?.address == platform.tablesAddress)
        let end = ranges.dropFirst().map(\.upperBound).max()!
        #expect(end - platform.tablesAddress <= platform.tablesSizeBound)
    }

    @Test func xsdtListsTheFADTAndMADT() throws {
        let tables = try ACPITables(platform: .sample())
        let xsdt = try #require(tables.blob("XSDT")).bytes
        #expect(xsdt.count == 36 + 16)
        #expect(xsdt.read(UInt64.self, at: 36) == tables.blob("FACP")?.address)
        #expect(xsdt.read(UInt64.self, at: 44) == tables.blob("APIC")?.address)
    }

    @Test func fadtIsHardwareReducedWithSleepRegisters() throws {
        var platform = ACPIPlatform.sample()
        platform.sleepControlRegister = .mmio(0xFED0_0000)
        platform.sleepStatusRegister = .ioPort(0x601)
        let tables = try ACPITables(platform: platform)
        let fadt = try #require(tables.blob("FACP")).bytes
        #expect(fadt.count == 276)
        #expect(fadt[8] == 6 && fadt[131] == 4, "FADT 6.4")
        #expect(fadt.read(UInt32.self, at: 112) & (1 << 20) != 0, "HW_REDUCED_ACPI")
        #expect(fadt.read(UInt32.self, at: 36) == 0 && fadt.read(UInt32.self, at: 40) == 0)
        #expect(fadt.read(UInt64.self, at: 140) == tables.blob("DSDT")?.address, "X_DSDT")
        // SLEEP_CONTROL_REG: system memory, 8 bits wide, offset 0, byte access.
        #expect(Array(fadt[244..<248]) == [0, 8, 0, 1])
        #expect(fadt.read(UInt64.self, at: 248) == 0xFED0_0000)
        // SLEEP_STATUS_REG: system I/O.
        #expect(Array(fadt[256..<260]) == [1, 8, 0, 1])
        #expect(fadt.read(UInt64.self, at: 260) == 0x601)
        // IAPC_BOOT_ARCH: 8042, no VGA, no MSI, no CMOS RTC.
        #expect(fadt.read(UInt16.self, at: 109) == 0b10_1110)
        // No PM1 or GPE blocks on hardware-reduced ACPI.
        #expect(fadt[56..<96].allSatisfy { $0 == 0 })
    }

    @Test func bootArchitectureFlagsFollowTheLegacyHardware() throws {
        var platform = ACPIPlatform.sample()
        platform.legacy = LegacyHardware(pic: false, i8042: false, cmosRTC: true, pit: false)
        let fadt = try #require(ACPITables(platform: platform).blob("FACP")).bytes
        #expect(fadt.read(UInt16.self, at: 109) == 0b00_1100)
    }

    @Test func madtDescribesEveryVCPUTheIOAPICAndThePCWiring() throws {
        var platform = ACPIPlatform.sample(vcpus: 3)
        platform.ioapic = IOAPIC(id: 3, address: 0xFEC0_1000)
        let madt = try #require(ACPITables(platform: platform).blob("APIC")).bytes
        #expect(madt[8] == 5)
        #expect(madt.read(UInt32.self, at: 36) == 0xFEE0_0000)
        #expect(madt.read(UInt32.self, at: 40) == 1, "PCAT_COMPAT with the 8259s")
        let entries = madtEntries(madt)
        #expect(entries.reduce(MADTLayout.firstEntryOffset) { $0 + $1.bytes.count } == madt.count)

        let lapics = entries.filter { $0.type == 0 }
        #expect(lapics.map { $0.bytes } == (0..<3).map { [0, 8, UInt8($0), UInt8($0), 1, 0, 0, 0] })
        let ioapics = entries.filter { $0.type == 1 }
        #expect(ioapics.map { $0.bytes } == [[1, 12, 3, 0, 0x00, 0x10, 0xC0, 0xFE, 0, 0, 0, 0]])
        let overrides = entries.filter { $0.type == 2 }
        #expect(overrides.map { $0.bytes } == [[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]], "ISA IRQ 0 -> GSI 2")
        let nmis = entries.filter { $0.type == 4 }
        #expect(nmis.map { $0.bytes } == [[4, 6, 0xFF, 0, 0, 1]], "LINT1 NMI on all processors")
    }

    @Test func madtWithoutPITOrPICHasNoOverrideAndNoPCATFlag() throws {
        var platform = ACPIPlatform.sample()
        platform.legacy = LegacyHardware(pic: false, i8042: true, cmosRTC: false, pit: false)
        let madt = try #require(ACPITables(platform: platform).blob("APIC")).bytes
        #expect(madt.read(UInt32.self, at: 40) == 0)
        #expect(madtEntries(madt).filter { $0.type == 2 }.isEmpty)
    }

    @Test func dsdtNamesEachVirtioDeviceAndTheSerialPort() throws {
        let dsdt = try #require(ACPITables(platform: .sample(devices: 3)).blob("DSDT")).bytes
        #expect(dsdt[8] == 2, "revision 2: 64-bit AML integers")
        #expect(dsdt.occurrences(of: AML.string("LNRO0005")) == 3)
        for index in 0..<3 {
            #expect(dsdt.occurrences(of: Array("V00\(index)".utf8)) == 1)
            let window = ResourceDescriptor.memory32Fixed(base: 0xD000_0000 + UInt32(index) * 0x1000, length: 0x1000)
            #expect(dsdt.occurrences(of: window.encoded) == 1)
            #expect(
                dsdt.occurrences(of: ResourceDescriptor.interrupt(gsi: UInt32(5 + index), trigger: .edge).encoded) == 1)
        }
        #expect(dsdt.occurrences(of: AML.eisaID("PNP0501")) == 1)
        #expect(dsdt.occurrences(of: AML.name("_S5", AML.package([AML.integer(5), AML.integer(0)]))) == 1)
    }

    @Test func devicesAbove4GiBUseQWordMemory() throws {
        var platform = ACPIPlatform.sample(devices: 0)
        platform.virtioDevices = [VirtioMMIODevice(base: 0x40_0000_0000, gsi: 9, trigger: .level)]
        let dsdt = try #require(ACPITables(platform: platform).blob("DSDT")).bytes
        #expect(dsdt.occurrences(of: ResourceDescriptor.qwordMemory(base: 0x40_0000_0000, length: 0x1000).encoded) == 1)
        #expect(dsdt.occurrences(of: ResourceDescriptor.interrupt(gsi: 9, trigger: .level).encoded) == 1)
    }

    @Test func sleepControlDecodesAPowerOffRequest() {
        #expect(SleepRegisters.requestsPowerOff(5 << 2 | 0x20))
        #expect(!SleepRegisters.requestsPowerOff(5 << 2), "SLP_EN clear")
        #expect(!SleepRegisters.requestsPowerOff(3 << 2 | 0x20), "S3, not S5")
        #expect(SleepRegisters.requestsPowerOff(0xC0 | 5 << 2 | 0x20), "other bits are ignored")
    }

    struct InvalidPlatform: Sendable, CustomTestStringConvertible {
        let name: String
        let message: String
        let change: @Sendable (inout ACPIPlatform) -> Void
        init(_ name: String, _ message: String, _ change: @escaping @Sendable (inout ACPIPlatform) -> Void) {
            self.name = name
            self.message = message
            self.change = change
        }
        var testDescription: String { name }
    }

    static let invalidPlatforms: [InvalidPlatform] = [
        InvalidPlatform("no vCPUs", "vCPU count 0 is outside 1...255") { p in p.vcpuCount = 0 },
        InvalidPlatform("too many vCPUs", "vCPU count 256 is outside 1...255") { p in p.vcpuCount = 256 },
        InvalidPlatform("GSI past the IOAPIC", "virtio-mmio device 0 uses GSI 24, but the IOAPIC has GSIs 0..<24") {
            p in p.virtioDevices[0].gsi = 24
        },
        InvalidPlatform("shared GSI", "virtio-mmio device 1 and virtio-mmio device 0 both use GSI 5") { p in
            p.virtioDevices[1].gsi = 5
        },
        InvalidPlatform("GSI of the PIT", "virtio-mmio device 0 and the PIT (ISA IRQ 0) both use GSI 2") { p in
            p.virtioDevices[0].gsi = 2
        },
        InvalidPlatform("GSI of the UART", "virtio-mmio device 2 and the serial port both use GSI 4") { p in
            p.virtioDevices[2].gsi = 4
        },
        InvalidPlatform(
            "overlapping windows", "virtio-mmio device 1 window 0xd0000800..<0xd0001800 overlaps virtio-mmio device 0"
        ) { p in p.virtioDevices[1].base = 0xD000_0800 },
        InvalidPlatform("empty window", "virtio-mmio device 0 has an empty or wrapping window 0xd0000000 + 0x0") { p in
            p.virtioDevices[0].size = 0
        },
        InvalidPlatform(
            "wrapping window", "virtio-mmio device 0 has an empty or wrapping window 0xfffffffffffff001 + 0x1000"
        ) { p in p.virtioDevices[0].base = UInt64.max - 0xFFF + 1 },
        InvalidPlatform("misaligned RSDP", "RSDP address 0xe0008 is not 16-byte aligned") { p in p.rsdpAddress = 0xE0008
        },
        InvalidPlatform("RSDP inside the tables", "the RSDP at 0xe1010 overlaps the tables at 0xe1000..<") { p in
            p.rsdpAddress = 0xE1010
        },
        InvalidPlatform("tables at the top", "the ACPI tables do not fit below the top of the address space") { p in
            p.tablesAddress = UInt64.max - 100
        },
        InvalidPlatform(
            "no sleep register", "the sleep control register address is 0, which ACPI reads as \"not present\""
        ) { p in p.sleepControlRegister = .mmio(0) },
        InvalidPlatform("port above 64 KiB", "the sleep status register port 0x10000 is above 0xffff") { p in
            p.sleepStatusRegister = RegisterAddress(space: .systemIO, address: 0x10000)
        },
        InvalidPlatform(
            "window on the IOAPIC", "virtio-mmio device 0 window 0xfec00000..<0xfec01000 overlaps the IOAPIC"
        ) { p in p.virtioDevices[0].base = 0xFEC0_0000 },
        InvalidPlatform(
            "window on the local APIC", "virtio-mmio device 1 window 0xfee00000..<0xfee01000 overlaps the local APIC"
        ) { p in p.virtioDevices[1].base = 0xFEE0_0000 },
        InvalidPlatform("IOAPIC at 0", "IOAPIC address 0x0 is not a non-zero 1 KiB-aligned address") { p in
            p.ioapic.address = 0
        },
        InvalidPlatform("too many IOAPIC pins", "IOAPIC pin count 257 is outside 1...256") { p in
            p.ioapic.pinCount = 257
        },
        InvalidPlatform("serial IRQ not ISA", "serial port IRQ 16 is not an ISA IRQ (0-15)") { p in
            p.serial = SerialPort(port: 0x3F8, irq: 16)
        },
    ]

    @Test(arguments: invalidPlatforms)
    func rejectsWhatTheTablesCannotExpress(_ invalid: InvalidPlatform) {
        let (name, message) = (invalid.name, invalid.message)
        var platform = ACPIPlatform.sample(devices: 3)
        invalid.change(&platform)
        do {
            _ = try ACPITables(platform: platform)
            Issue.record("\(name): accepted")
        } catch let error as ACPIError {
            #expect(error.description.hasPrefix(message), "\(name)")
        } catch {
            Issue.record("\(name): \(error)")
        }
    }
}
