import KilnTestSupport
import Testing

@testable import KilnACPI

/// Random platform descriptions from a fixed seed: whatever the counts and
/// addresses, every table keeps its checksum, length and structure.
@Suite struct RandomizedPlatformTests {
    static let seed: UInt64 = 0x4B49_4C4E_4143_5049 // "KILNACPI"
    /// The README's 10,000 inputs per seeded pass: about 2 ms a round in a
    /// debug build on this 2-core machine when quiet.
    static let rounds = 10_000

    /// A valid platform: 1-255 vCPUs, an IOAPIC of 24-120 pins, and devices
    /// with distinct free GSIs and disjoint windows, some above 4 GiB.
    static func randomPlatform(_ rng: inout SplitMix64) -> ACPIPlatform {
        let pins = Int.random(in: 24...120, using: &rng)
        var freeGSIs = Array(UInt32(5)..<UInt32(pins))
        freeGSIs.shuffle(using: &rng)
        let deviceCount = Int.random(in: 0...min(freeGSIs.count, 64), using: &rng)
        var base: UInt64 = Bool.random(using: &rng) ? 0xC000_0000 : 0xFFFF_0000 // some cross 4 GiB
        var devices: [VirtioMMIODevice] = []
        for index in 0..<deviceCount {
            let size = UInt64(0x200) << UInt64.random(in: 0...4, using: &rng)
            base += UInt64.random(in: 0...3, using: &rng) * 0x1000
            devices.append(
                VirtioMMIODevice(
                    base: base, size: size, gsi: freeGSIs[index],
                    trigger: Bool.random(using: &rng) ? .edge : .level))
            base += size
        }
        let sleep: RegisterAddress =
            Bool.random(using: &rng)
            ? .ioPort(UInt16.random(in: 1...0xFFFE, using: &rng))
            : .mmio(UInt64.random(in: 0x1000...0xFFFF_F000, using: &rng))
        return ACPIPlatform(
            vcpuCount: Int.random(in: 1...255, using: &rng),
            ioapic: IOAPIC(id: UInt8.random(in: 0...15, using: &rng), pinCount: pins),
            serial: Bool.random(using: &rng) ? .com1 : nil,
            virtioDevices: devices,
            legacy: LegacyHardware(
                pic: .random(using: &rng), i8042: .random(using: &rng),
                cmosRTC: .random(using: &rng), pit: .random(using: &rng)),
            sleepControlRegister: sleep, sleepStatusRegister: sleep,
            tablesAddress: 0x000E_1000 + UInt64.random(in: 0...0x100, using: &rng) * 16,
            rsdpAddress: 0x000E_0000 + UInt64.random(in: 0...0xFF, using: &rng) * 16)
    }

    @Test func everyTableChecksumsAndDescribesThePlatform() throws {
        var rng = SplitMix64(seed: Self.seed)
        var checked = 0, withDevices = 0, withAPs = 0
        for round in 0..<Self.rounds {
            let platform = Self.randomPlatform(&rng)
            if !platform.virtioDevices.isEmpty { withDevices += 1 }
            if platform.vcpuCount > 1 { withAPs += 1 }
            let tables = try ACPITables(platform: platform)
            let rsdp = try #require(tables.blob("RSD PTR ")).bytes
            #expect(Array(rsdp[0..<20]).byteSum == 0 && rsdp.byteSum == 0, "round \(round)")
            for blob in tables.blobs.dropFirst() {
                #expect(
                    Int(blob.bytes.read(UInt32.self, at: 4)) == blob.bytes.count, "round \(round) \(blob.signature)")
                #expect(blob.bytes.byteSum == 0, "round \(round) \(blob.signature)")
            }
            let madt = try #require(tables.blob("APIC")).bytes
            let entries = madtEntries(madt)
            #expect(entries.filter { $0.type == 0 }.count == platform.vcpuCount, "round \(round)")
            #expect(entries.reduce(MADTLayout.firstEntryOffset) { $0 + $1.bytes.count } == madt.count)
            let dsdt = try #require(tables.blob("DSDT")).bytes
            #expect(dsdt.occurrences(of: AML.string("LNRO0005")) == platform.virtioDevices.count, "round \(round)")
            let end = tables.blobs.dropFirst().map { $0.address + UInt64($0.bytes.count) }.max()!
            #expect(end - platform.tablesAddress <= platform.tablesSizeBound, "round \(round)")
            checked += 1
        }
        // Every round reached its last check, and the platforms vary (seed:
        // 98% with virtio devices, 99.7% with APs).
        #expect(
            checked == Self.rounds && withDevices >= Self.rounds * 9 / 10 && withAPs >= Self.rounds * 95 / 100,
            "checked \(checked), with virtio devices \(withDevices), with APs \(withAPs)")
    }
}
