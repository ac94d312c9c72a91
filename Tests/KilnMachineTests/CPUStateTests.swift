import KilnMemory
import Testing

@testable import KilnMachine

@Suite struct CPUIDTests {
    let supported = [
        CPUIDEntry(function: 0, eax: 0xd),
        CPUIDEntry(function: 1, ebx: 0x0000_0800, ecx: 0x0000_0028, edx: 0x1000_0000),
        CPUIDEntry(function: 4, index: 0, flags: 1, eax: 0xfc00_4121),
        CPUIDEntry(function: 4, index: 3, flags: 1, eax: 0xfc0f_c163),
        CPUIDEntry(function: 0xa, eax: 0x0730_0805, ebx: 1, edx: 0x603),
        CPUIDEntry(function: 0xb, index: 0, flags: 1),
        CPUIDEntry(function: 0xb, index: 1, flags: 1),
        CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4b4d_564b),
    ]

    @Test func leafOneCarriesApicIdCountAndHypervisorBit() {
        let topology = CPUTopology(vcpuCount: 4, smt: false)
        let entries = CPUIDNormalizer.normalize(supported, vcpuIndex: 2, topology: topology)
        let leaf1 = entries.first { $0.function == 1 }!
        #expect(leaf1.ebx >> 24 == 2)
        #expect((leaf1.ebx >> 16) & 0xff == 4)
        #expect(leaf1.ecx & (1 << 31) != 0)
        #expect(leaf1.ecx & (1 << 3) == 0) // MONITOR cleared
        #expect(leaf1.ecx & (1 << 5) == 0) // VMX cleared
        #expect(leaf1.edx & (1 << 28) != 0)
        let single = CPUIDNormalizer.normalize(supported, vcpuIndex: 0, topology: CPUTopology(vcpuCount: 1, smt: false))
        #expect(single.first { $0.function == 1 }!.edx & (1 << 28) == 0)
    }

    @Test func topologyLeavesDescribeThreadsAndCores() {
        let topology = CPUTopology(vcpuCount: 4, smt: true)
        #expect(topology.threadsPerCore == 2)
        #expect(topology.coresPerSocket == 2)
        let entries = CPUIDNormalizer.normalize(supported, vcpuIndex: 3, topology: topology)
        let smt = entries.first { $0.function == 0xb && $0.index == 0 }!
        let core = entries.first { $0.function == 0xb && $0.index == 1 }!
        #expect(smt.edx == 3 && core.edx == 3)
        #expect(smt.eax == 1 && smt.ebx == 2 && smt.ecx == 0x100)
        #expect(core.eax == 2 && core.ebx == 4 && core.ecx == 0x201)
        let l1 = entries.first { $0.function == 4 && $0.index == 0 }!
        let l3 = entries.first { $0.function == 4 && $0.index == 3 }!
        #expect((l1.eax >> 14) & 0xfff == 1) // shared by the 2 threads of a core
        #expect((l3.eax >> 14) & 0xfff == 3) // shared by all 4
        #expect(l1.eax >> 26 == 1) // 2 cores
        #expect(l1.eax & 0x3fff == 0x0121) // cache description kept
    }

    @Test func pmuIsHiddenAndKVMLeavesKept() {
        let entries = CPUIDNormalizer.normalize(
            supported, vcpuIndex: 0, topology: CPUTopology(vcpuCount: 1, smt: false))
        #expect(entries.first { $0.function == 0xa } == CPUIDEntry(function: 0xa))
        #expect(entries.first { $0.function == 0x4000_0000 }?.ebx == 0x4b4d_564b)
        #expect(entries.count == supported.count)
    }
}

@Suite struct LongModeStateTests {
    @Test func gdtEntriesEncodeTheFlatSegments() {
        #expect(BootGDT.code64.encoded == 0x00af_9b00_0000_ffff)
        #expect(BootGDT.data.encoded == 0x00cf_9300_0000_ffff)
        #expect(BootGDT.tss.encoded == 0x008f_8b00_0000_ffff)
        #expect(BootGDT.code64.long && !BootGDT.code64.defaultBig && BootGDT.code64.granular)
        #expect(BootGDT.code64.byteLimit == 0xffff_ffff)
        #expect(BootGDT.tss.isSystem && !BootGDT.data.isSystem)
        #expect(BootGDT.limit == 31)
    }

    @Test func identityMapUses2MiBPages() throws {
        let memory = try HeapGuestMemory(size: 1 << 20)
        try IdentityPageTables.write(into: memory)
        #expect(try memory.read(UInt64.self, at: X86Layout.pml4) == X86Layout.pdpt | 0x3)
        for gib in 0..<4 {
            let directory = X86Layout.pageDirectories + UInt64(gib) * 4096
            #expect(try memory.read(UInt64.self, at: X86Layout.pdpt + UInt64(gib) * 8) == directory | 0x3)
            #expect(try memory.read(UInt64.self, at: directory) == (UInt64(gib) << 30) | 0x83)
        }
        // The last 2 MiB page below 4 GiB, and nothing mapped beyond.
        #expect(try memory.read(UInt64.self, at: X86Layout.pageDirectories + 3 * 4096 + 511 * 8) == 0xffe0_0000 | 0x83)
        #expect(try memory.read(UInt64.self, at: X86Layout.pdpt + 4 * 8) == 0)
    }

    @Test func registersAndControlBitsMatchTheBootProtocol() {
        #expect(BootCPUState.cr0 == 0x8000_0033)
        #expect(BootCPUState.cr4 == 0x620)
        #expect(BootCPUState.efer == 0x500)
        let regs = BootCPUState.registers(entry: 0x100_0200, bootInfo: 0x7000)
        #expect(regs.rip == 0x100_0200 && regs.rsi == 0x7000 && regs.rflags == 2)
        let pvh = BootCPUState.registers(entry: 0x100_0850, mode: .pvh32, bootInfo: 0x6000)
        #expect(pvh.rbx == 0x6000 && pvh.rsi == 0)
        let sregs = BootCPUState.specialRegisters(from: .init())
        #expect(sregs.cs.selector == 8 && sregs.cs.l == 1 && sregs.cs.db == 0 && sregs.cs.s == 1)
        #expect(sregs.ss.selector == 0x10 && sregs.tr.selector == 0x18 && sregs.tr.s == 0)
        #expect(sregs.cr3 == X86Layout.pml4 && sregs.gdt.base == X86Layout.gdt)
        let pvhSregs = BootCPUState.specialRegisters(for: .pvh32, from: .init())
        #expect(pvhSregs.cr0 & 0x8000_0001 == 1 && pvhSregs.cr4 == 0 && pvhSregs.efer == 0)
        #expect(
            pvhSregs.cs.l == 0 && pvhSregs.cs.db == 1 && pvhSregs.cs.selector == 8 && pvhSregs.cs.limit == 0xffff_ffff)
    }

    @Test func lapicLintsAreExtINTAndNMI() {
        var state = BootCPUState.lapic(from: .init())
        let (lint0, lint1) = withUnsafeBytes(of: &state.regs) {
            (
                $0.loadUnaligned(fromByteOffset: 0x350, as: UInt32.self),
                $0.loadUnaligned(fromByteOffset: 0x360, as: UInt32.self)
            )
        }
        #expect(lint0 == 0x700)
        #expect(lint1 == 0x400)
    }
}

@Suite struct InterruptRoutingTests {
    @Test func pitReachesIOAPICPin2AndISAIRQsTheirPICs() {
        let routes = InterruptRouting.pc
        func targets(_ gsi: UInt32) -> [String] {
            routes.filter { $0.gsi == gsi }.map { "\($0.chip)/\($0.pin)" }.sorted()
        }
        #expect(targets(0) == ["ioapic/2", "picMaster/0"])
        #expect(targets(2).isEmpty) // the cascade
        #expect(targets(4) == ["ioapic/4", "picMaster/4"])
        #expect(targets(12) == ["ioapic/12", "picSlave/4"])
        #expect(targets(20) == ["ioapic/20"])
        #expect(routes.count == 15 + 23)
    }
}
