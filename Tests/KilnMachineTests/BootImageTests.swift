import KilnMemory
import Testing

@testable import KilnMachine

/// A minimal bzImage: setup sectors, the setup header fields the loader
/// reads, and a protected-mode payload.
func makeBzImage(
    version: UInt16 = 0x020f, setupSectors: UInt8 = 4, payload: Int = 0x3000,
    initSize: UInt32 = 0x10000, prefAddress: UInt64 = 0x100_0000, relocatable: Bool = true,
    xloadFlags: UInt16 = 0x7f, commandLineSize: UInt32 = 2047
) -> [UInt8] {
    var image = [UInt8](repeating: 0, count: (Int(setupSectors) + 1) * 512 + payload)
    func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { image.replaceSubrange(offset..<offset + $0.count, with: $0) }
    }
    put(setupSectors, 0x1f1)
    put(UInt16(0xaa55), 0x1fe)
    put(UInt8(0xeb), 0x200)
    put(UInt8(0x6a), 0x201) // header ends at 0x26c
    put(UInt32(0x5372_6448), 0x202)
    put(version, 0x206)
    put(UInt8(0x01), 0x211)
    put(UInt32(0x37ff_ffff), 0x22c)
    put(UInt32(0x20_0000), 0x230)
    put(UInt8(relocatable ? 1 : 0), 0x234)
    put(xloadFlags, 0x236)
    put(commandLineSize, 0x238)
    put(prefAddress, 0x258)
    put(initSize, 0x260)
    let start = (Int(setupSectors) + 1) * 512
    for index in 0..<payload { image[start + index] = UInt8(truncatingIfNeeded: index) }
    return image
}

/// A minimal ELF64 executable with one PT_LOAD and optionally a Xen PVH note.
func makeELF(
    entry: UInt64 = 0x100000, address: UInt64 = 0x100000, code: [UInt8] = [0xf4, 0xeb, 0xfd],
    bss: UInt64 = 0x100, pvhEntry: UInt32? = nil
) -> [UInt8] {
    var image = [UInt8](repeating: 0, count: 0x200)
    func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { image.replaceSubrange(offset..<offset + $0.count, with: $0) }
    }
    image.replaceSubrange(0..<4, with: [0x7f, 0x45, 0x4c, 0x46])
    image[4] = 2; image[5] = 1; image[6] = 1
    put(UInt16(2), 16); put(UInt16(62), 18); put(UInt32(1), 20)
    put(entry, 24); put(UInt64(64), 32)
    put(UInt16(64), 52); put(UInt16(56), 54)
    put(UInt16(pvhEntry == nil ? 1 : 2), 56)
    // PT_LOAD at file offset 0x100.
    put(UInt32(1), 64); put(UInt64(0x100), 72); put(address, 80); put(address, 88)
    put(UInt64(code.count), 96); put(UInt64(code.count) + bss, 104)
    image.replaceSubrange(0x100..<0x100 + code.count, with: code)
    if let pvhEntry {
        // PT_NOTE at 0x180: an unrelated note, then Xen's PHYS32_ENTRY.
        put(UInt32(4), 120); put(UInt64(0x180), 128); put(UInt64(40), 152)
        put(UInt32(4), 0x180); put(UInt32(4), 0x184); put(UInt32(1), 0x188)
        image.replaceSubrange(0x18c..<0x190, with: Array("GNU\0".utf8)); put(UInt32(7), 0x190)
        put(UInt32(4), 0x194); put(UInt32(4), 0x198); put(UInt32(18), 0x19c)
        image.replaceSubrange(0x1a0..<0x1a4, with: Array("Xen\0".utf8)); put(pvhEntry, 0x1a4)
    }
    return image
}

func smallMemory() throws -> HeapGuestMemory {
    try HeapGuestMemory(ranges: [GuestRange(address: 0, size: 64 << 20)])
}

@Suite struct SetupHeaderTests {
    @Test func parsesTheFieldsTheLoaderUses() throws {
        let header = try SetupHeader(image: makeBzImage())
        #expect(header.version == 0x020f)
        #expect(header.setupSectors == 4)
        #expect(header.protectedModeOffset == 5 * 512)
        #expect(header.prefAddress == 0x100_0000)
        #expect(header.relocatable)
        #expect(header.bytes.count == 0x26c - 0x1f1)
    }

    @Test func zeroSetupSectorsMeansFour() throws {
        var image = makeBzImage(setupSectors: 4)
        image[0x1f1] = 0
        #expect(try SetupHeader(image: image).setupSectors == 4)
    }

    @Test func refusesWhatCannotBootIn64BitMode() {
        #expect(throws: KernelImageError.self) { try SetupHeader(image: [UInt8](repeating: 0, count: 100)) }
        #expect(throws: KernelImageError.self) { try SetupHeader(image: [UInt8](repeating: 0, count: 4096)) }
        #expect(throws: KernelImageError.self) { try SetupHeader(image: makeBzImage(version: 0x020b)) }
        #expect(throws: KernelImageError.self) { try SetupHeader(image: makeBzImage(xloadFlags: 0)) }
        var badAlignment = makeBzImage()
        badAlignment[0x230] = 3
        #expect(throws: KernelImageError.self) { try SetupHeader(image: badAlignment) }
        // Header end pointing past the file.
        var truncated = Array(makeBzImage().prefix(0x268))
        truncated[0x201] = 0x7f
        #expect(throws: KernelImageError.self) { try SetupHeader(image: truncated) }
    }
}

@Suite struct KernelLoaderTests {
    @Test func bzImageGoesToPrefAddressAndEntersAt0x200() throws {
        let memory = try smallMemory()
        let image = makeBzImage()
        let kernel = try KernelLoader.load(image, into: memory, lowMemoryEnd: 64 << 20)
        #expect(kernel.entry == 0x100_0200)
        #expect(kernel.end == 0x100_0000 + 0x10000)
        #expect(try memory.readBytes(at: 0x100_0000, count: 4) == [0, 1, 2, 3])
        #expect(kernel.commandLineLimit == 2047)
        #expect(kernel.initrdLimit == 64 << 20)
    }

    @Test func nonRelocatableBzImageGoesTo1MiB() throws {
        let kernel = try KernelLoader.load(
            makeBzImage(relocatable: false), into: try smallMemory(), lowMemoryEnd: 64 << 20)
        #expect(kernel.entry == 0x10_0200)
    }

    @Test func bzImageLargerThanRAMIsRefused() throws {
        #expect(throws: KernelImageError.self) {
            try KernelLoader.load(makeBzImage(initSize: 0x400_0000), into: try smallMemory(), lowMemoryEnd: 64 << 20)
        }
    }

    /// pref_address near the top of the address space plus init_size wraps;
    /// the loader must refuse it, not trap (found by fuzz-kernel-image).
    @Test func bzImageWhosePrefAddressWrapsIsRefused() throws {
        #expect(throws: KernelImageError.self) {
            try KernelLoader.load(
                makeBzImage(initSize: 0xffff_ffff, prefAddress: 0xffff_ffff_ff00_0000),
                into: try smallMemory(), lowMemoryEnd: 64 << 20)
        }
    }

    @Test func elfSegmentsLoadWithZeroedBSS() throws {
        let memory = try smallMemory()
        try memory.fill(0xcc, at: 0x100000, count: 0x200)
        let kernel = try KernelLoader.load(makeELF(), into: memory, lowMemoryEnd: 64 << 20)
        #expect(kernel.entry == 0x100000)
        #expect(kernel.setupHeader == nil)
        #expect(try memory.readBytes(at: 0x100000, count: 4) == [0xf4, 0xeb, 0xfd, 0])
        #expect(try memory.read(UInt8.self, at: 0x100000 + 0x102) == 0)
        #expect(try memory.read(UInt8.self, at: 0x100000 + 0x103) == 0xcc)
        #expect(kernel.end == 0x100000 + 0x103)
    }

    @Test func elfPVHNoteIsFound() throws {
        let elf = try ELFImage(image: makeELF(pvhEntry: 0x100400))
        #expect(elf.pvhEntry == 0x100400)
        #expect(try ELFImage(image: makeELF()).pvhEntry == nil)
    }

    @Test func badELFsAreRefused() throws {
        let memory = try smallMemory()
        // Entry outside every segment; segment below 1 MiB; past RAM; truncated.
        #expect(throws: KernelImageError.self) {
            try KernelLoader.load(makeELF(entry: 0x200000), into: memory, lowMemoryEnd: 64 << 20)
        }
        #expect(throws: KernelImageError.self) {
            try KernelLoader.load(makeELF(entry: 0x8000, address: 0x8000), into: memory, lowMemoryEnd: 64 << 20)
        }
        #expect(throws: KernelImageError.self) {
            try KernelLoader.load(
                makeELF(entry: 0x3ff_ff00, address: 0x3ff_ff00, bss: 0x1000), into: memory, lowMemoryEnd: 64 << 20)
        }
        #expect(throws: KernelImageError.self) { try ELFImage(image: Array(makeELF().prefix(0x40))) }
        #expect(throws: KernelImageError.self) { try ELFImage(image: Array(makeELF().prefix(0x101))) }
        var bigEndian = makeELF()
        bigEndian[5] = 2
        #expect(throws: KernelImageError.self) { try ELFImage(image: bigEndian) }
    }

    @Test func initrdGoesHighAndAboveTheKernel() throws {
        let kernel = try KernelLoader.load(makeELF(), into: try smallMemory(), lowMemoryEnd: 64 << 20)
        let address = try KernelLoader.placeInitrd(size: 5000, kernel: kernel)
        #expect(address == (64 << 20) - 0x2000)
        #expect(address % 4096 == 0)
        #expect(throws: InitrdPlacementError.tooLarge(bytes: 65 << 20, limit: 64 << 20)) {
            try KernelLoader.placeInitrd(size: 65 << 20, kernel: kernel)
        }
        #expect(throws: InitrdPlacementError.belowKernelEnd(bytes: 64 << 20, kernelEnd: kernel.end, limit: 64 << 20)) {
            try KernelLoader.placeInitrd(size: 64 << 20, kernel: kernel)
        }
        #expect(throws: InitrdPlacementError.empty) { try KernelLoader.placeInitrd(size: 0, kernel: kernel) }
        // Above the kernel: a bzImage whose init_size reaches near the top leaves no room.
        let bzImage = try KernelLoader.load(
            makeBzImage(initSize: 0x2f0_0000), into: try smallMemory(), lowMemoryEnd: 64 << 20)
        let belowKernel = #expect(throws: InitrdPlacementError.self) {
            try KernelLoader.placeInitrd(size: 2 << 20, kernel: bzImage)
        }
        #expect(belowKernel == .belowKernelEnd(bytes: 2 << 20, kernelEnd: bzImage.end, limit: bzImage.initrdLimit))
        #expect(belowKernel?.description.hasPrefix("2048 KiB do not fit between the kernel end (0x") == true)
    }
}

@Suite struct ZeroPageTests {
    @Test func e820MapCoversRAMReservedAreasAndTheHole() throws {
        let small = X86Layout.e820Map(ram: try X86Layout.ramRanges(bytes: 128 << 20))
        #expect(
            small == [
                E820Entry(address: 0, size: 0x9fc00, kind: .ram),
                E820Entry(address: 0x9fc00, size: 0x60400, kind: .reserved),
                E820Entry(address: 0x100000, size: (128 << 20) - 0x100000, kind: .ram),
                E820Entry(address: 0xc000_0000, size: 0x4000_0000, kind: .reserved),
            ])
        let large = X86Layout.e820Map(ram: try X86Layout.ramRanges(bytes: 5 << 30))
        #expect(large.last == E820Entry(address: 1 << 32, size: 2 << 30, kind: .ram))
        #expect(large[2] == E820Entry(address: 0x100000, size: 0xc000_0000 - 0x100000, kind: .ram))
        #expect(
            E820Entry(address: 0x1122, size: 0x33, kind: .reserved).encoded
                == [0x22, 0x11, 0, 0, 0, 0, 0, 0, 0x33, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0])
    }

    @Test func ramRangesSplitAroundTheHole() throws {
        #expect(try X86Layout.ramRanges(bytes: 3 << 30) == [GuestRange(address: 0, size: 3 << 30)])
        #expect(
            try X86Layout.ramRanges(bytes: 4 << 30)
                == [GuestRange(address: 0, size: 3 << 30), GuestRange(address: 4 << 30, size: 1 << 30)])
        let tooSmall = #expect(throws: GuestMemoryLayoutError.belowMinimum(bytes: 16 << 20)) {
            try X86Layout.ramRanges(bytes: 1 << 20)
        }
        #expect(tooSmall?.description == "guest memory must be at least 16 MiB")
        let tooLarge = #expect(throws: GuestMemoryLayoutError.aboveMaximum(bytes: 64 << 30)) {
            try X86Layout.ramRanges(bytes: 65 << 30)
        }
        #expect(tooLarge?.description == "guest memory must be at most 64 GiB")
    }

    @Test func fieldsLandAtTheirZeroPageOffsets() throws {
        let header = try SetupHeader(image: makeBzImage())
        let page = try ZeroPage(
            header: header, commandLine: 0x20000, initrd: (0x300_0000, 0x1234),
            e820: [E820Entry(address: 0, size: 0x9fc00, kind: .ram)], acpiRSDP: 0xe0000)
        let memory = try HeapGuestMemory(size: 4096)
        try memory.write(page.bytes, at: 0)
        #expect(try memory.read(UInt16.self, at: 0x1fe) == 0xaa55)
        #expect(try memory.read(UInt32.self, at: 0x202) == 0x5372_6448)
        #expect(try memory.read(UInt8.self, at: 0x210) == 0xff)
        #expect(try memory.read(UInt8.self, at: 0x211) & 0x81 == 0x81)
        #expect(try memory.read(UInt32.self, at: 0x228) == 0x20000)
        #expect(try memory.read(UInt32.self, at: 0x218) == 0x300_0000)
        #expect(try memory.read(UInt32.self, at: 0x21c) == 0x1234)
        #expect(try memory.read(UInt64.self, at: 0x070) == 0xe0000)
        #expect(try memory.read(UInt8.self, at: 0x1e8) == 1)
        #expect(try memory.read(UInt64.self, at: 0x2d8) == 0x9fc00)
        #expect(try memory.read(UInt32.self, at: 0x2e0) == 1)
        // The copied header keeps the kernel's own fields.
        #expect(try memory.read(UInt64.self, at: 0x258) == 0x100_0000)
    }

    @Test func tooManyE820EntriesAreRefused() {
        let entries = [E820Entry](repeating: E820Entry(address: 0, size: 1, kind: .ram), count: 129)
        #expect(throws: KernelImageError.self) {
            try ZeroPage(header: nil, commandLine: 0, initrd: nil, e820: entries, acpiRSDP: nil)
        }
    }
}

@Suite struct GuestBootTests {
    func prepare(
        _ image: [UInt8], initrd: [UInt8]? = nil, commandLine: String = "console=ttyS0",
        firmware: FirmwareTableBuilder? = nil
    ) throws -> (HeapGuestMemory, BootPlan) {
        let memory = try HeapGuestMemory(ranges: [GuestRange(address: 0, size: 64 << 20)])
        let plan = try GuestBoot.prepare(
            memory: memory, kernelImage: image, initrd: initrd, commandLine: commandLine,
            platform: PlatformDescription(vcpuCount: 2), firmware: firmware)
        return (memory, plan)
    }

    @Test func elfBootLaysOutEverything() throws {
        let (memory, plan) = try prepare(makeELF(), initrd: [1, 2, 3])
        #expect(plan.entry == 0x100000)
        #expect(plan.mode == .long64)
        #expect(plan.bootInfo == X86Layout.zeroPage)
        #expect(try memory.readCString(at: X86Layout.commandLine, limit: 64) == "console=ttyS0")
        let initrd = try #require(plan.initrd)
        #expect(try memory.readBytes(at: initrd.address, count: 3) == [1, 2, 3])
        #expect(try memory.read(UInt32.self, at: X86Layout.zeroPage + 0x218) == UInt32(initrd.address))
        #expect(try memory.read(UInt8.self, at: X86Layout.zeroPage + 0x1e8) == 4)
        // Page tables and GDT are in place.
        #expect(try memory.read(UInt64.self, at: X86Layout.pml4) == X86Layout.pdpt | 3)
        #expect(try memory.read(UInt64.self, at: X86Layout.gdt + 8) == BootGDT.code64.encoded)
        #expect(plan.rsdpAddress == nil)
    }

    @Test func elfWithAPVHNoteIsEnteredThere() throws {
        let (memory, plan) = try prepare(makeELF(bss: 0x1000, pvhEntry: 0x100400), initrd: [9, 9])
        #expect(plan.mode == .pvh32)
        #expect(plan.entry == 0x100400)
        #expect(plan.bootInfo == X86Layout.pvhStartInfo)
        let info = X86Layout.pvhStartInfo
        #expect(try memory.read(UInt32.self, at: info) == PVHStartInfo.magic)
        #expect(try memory.read(UInt32.self, at: info + 4) == 1)
        #expect(try memory.read(UInt32.self, at: info + 12) == 1) // nr_modules
        #expect(try memory.read(UInt64.self, at: info + 24) == X86Layout.commandLine)
        let modules = try memory.read(UInt64.self, at: info + 16)
        #expect(try memory.read(UInt64.self, at: modules) == plan.initrd?.address)
        #expect(try memory.read(UInt64.self, at: modules + 8) == 2)
        let map = try memory.read(UInt64.self, at: info + 40)
        #expect(try memory.read(UInt32.self, at: info + 48) == 4)
        #expect(try memory.read(UInt64.self, at: map + 24) == 0x9fc00) // second entry's address
        #expect(try memory.read(UInt32.self, at: map + 24 + 16) == 2) // reserved
        // The GDT's code segment is 32-bit for this entry.
        #expect(try memory.read(UInt64.self, at: X86Layout.gdt + 8) == BootGDT.code32.encoded)
        // A PVH entry outside the image is refused.
        #expect(throws: KernelImageError.self) { try prepare(makeELF(pvhEntry: 0x900000)) }
    }

    @Test func commandLineLongerThanTheKernelAllowsIsRefused() throws {
        let tooLong = #expect(throws: BootInputError.commandLineTooLong(bytes: 17, limit: 16)) {
            try prepare(makeBzImage(commandLineSize: 16), commandLine: String(repeating: "a", count: 17))
        }
        #expect(tooLong?.description == "the kernel command line is 17 bytes; this kernel accepts at most 16")
        #expect(throws: BootInputError.commandLineContainsNUL) { try prepare(makeELF(), commandLine: "a\u{0}b") }
        _ = try prepare(makeBzImage(commandLineSize: 16), commandLine: String(repeating: "a", count: 16))
    }

    /// kiln's own tables (ACPIFirmware over KilnACPI), read back from guest
    /// memory the way Linux finds them: RSDP, XSDT, FADT, MADT.
    @Test func kilnsACPITablesDescribeTheMachine() throws {
        let (memory, plan) = try prepare(makeELF(), firmware: ACPIFirmware.tables)
        let rsdp = try #require(plan.rsdpAddress)
        #expect(rsdp == X86Layout.acpiTables.lowerBound)
        #expect(try memory.read(UInt64.self, at: X86Layout.zeroPage + 0x70) == rsdp)
        #expect(try memory.readBytes(at: rsdp, count: 8) == Array("RSD PTR ".utf8))

        func table(at address: UInt64) throws -> (signature: String, bytes: [UInt8]) {
            let length = Int(try memory.read(UInt32.self, at: address + 4))
            let bytes = try memory.readBytes(at: address, count: length)
            // ACPI 6.4 §5.2.6: every byte of a table sums to zero.
            #expect(bytes.reduce(UInt8(0), &+) == 0)
            return (String(decoding: bytes[0..<4], as: UTF8.self), bytes)
        }
        func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
        }
        let xsdt = try table(at: try memory.read(UInt64.self, at: rsdp + 24))
        #expect(xsdt.signature == "XSDT")
        let entries = try stride(from: 36, to: xsdt.bytes.count, by: 8).map { offset in
            try table(at: UInt64(u32(xsdt.bytes, offset)) | UInt64(u32(xsdt.bytes, offset + 4)) << 32)
        }
        let fadt = try #require(entries.first { $0.signature == "FACP" }).bytes
        let madt = try #require(entries.first { $0.signature == "APIC" }).bytes

        // IAPC_BOOT_ARCH (Table 5.11): no VGA, no MSI; no 8042 announced (a
        // reset port only); a CMOS clock present (bit 5 clear).
        #expect(UInt16(fadt[109]) | UInt16(fadt[110]) << 8 == (1 << 2) | (1 << 3))
        #expect(u32(fadt, 112) & (1 << 20) != 0, "HW_REDUCED_ACPI")
        #expect(fadt[244] == 1 && u32(fadt, 248) == 0x600, "SLEEP_CONTROL_REG: I/O port 0x600")
        #expect(fadt[256] == 1 && u32(fadt, 260) == 0x601, "SLEEP_STATUS_REG: I/O port 0x601")

        // MADT structures from offset 44 (§5.2.12): type, length, body.
        var localAPICs = 0, ioapics: [UInt32] = [], overrides: [(source: UInt8, gsi: UInt32)] = []
        var offset = 44
        while offset + 2 <= madt.count {
            let type = madt[offset], length = Int(madt[offset + 1])
            guard length >= 2 else { break }
            switch type {
            case 0: localAPICs += 1
            case 1: ioapics.append(u32(madt, offset + 4))
            case 2: overrides.append((madt[offset + 3], u32(madt, offset + 4)))
            default: break
            }
            offset += length
        }
        #expect(localAPICs == 2)
        #expect(ioapics == [UInt32(X86Layout.ioapic)])
        // The PIT's IRQ 0 arrives on GSI 2, as InterruptRouting.pc wires it.
        #expect(overrides.contains { $0.source == 0 && $0.gsi == 2 })
    }

    @Test func firmwareTablesAreWrittenOnlyInsideTheirWindow() throws {
        var described: PlatformDescription?
        let (memory, plan) = try prepare(
            makeELF(),
            firmware: { platform in
                described = platform
                return FirmwareTables(
                    blobs: [FirmwareBlob(address: 0xe0000, bytes: Array("RSD PTR ".utf8))], rsdpAddress: 0xe0000)
            })
        #expect(described?.vcpuCount == 2)
        #expect(described?.sleepControlPort == 0x600)
        #expect(plan.rsdpAddress == 0xe0000)
        #expect(try memory.read(UInt64.self, at: X86Layout.zeroPage + 0x70) == 0xe0000)
        #expect(try memory.readBytes(at: 0xe0000, count: 8) == Array("RSD PTR ".utf8))
        #expect(throws: BootInputError.firmwareTableOutsideWindow(address: 0xfffff, bytes: 2)) {
            try prepare(
                makeELF(),
                firmware: { _ in
                    FirmwareTables(blobs: [FirmwareBlob(address: 0xfffff, bytes: [1, 2])], rsdpAddress: 0xe0000)
                })
        }
    }
}
