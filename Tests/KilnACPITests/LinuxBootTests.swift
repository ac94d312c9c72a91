import Foundation
import Testing

@testable import KilnACPI

private let packageRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
private let bootScript = packageRoot.appendingPathComponent("integration/acpi/boot-with-tables.sh")
private let cloudKernel = packageRoot.appendingPathComponent("integration/out/nested/l2-bzImage")
private let canBootLinux =
    FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")
    && FileManager.default.fileExists(atPath: cloudKernel.path)

/// The real judge: Debian's cloud kernel, booted under QEMU TCG on these
/// tables alone (QEMU's own ACPI off), must find the CPUs, the IOAPIC, S5, the
/// serial port and every virtio-mmio device with its window, then power off
/// through the sleep control register. About 4 s.
@Suite(
    .enabled(
        if: canBootLinux,
        "needs qemu-system-x86_64 and the Debian cloud kernel: run `make nested-assets`"))
struct LinuxBootTests {
    @Test func debianCloudKernelParsesTheTables() throws {
        let platform = ACPIPlatform(
            vcpuCount: 2,
            virtioDevices: [
                VirtioMMIODevice(base: 0xD000_0000, gsi: 5),
                VirtioMMIODevice(base: 0xD000_1000, gsi: 6, trigger: .level),
            ],
            sleepControlRegister: .ioPort(0x600), sleepStatusRegister: .ioPort(0x601),
            tablesAddress: 0xE1000, rsdpAddress: 0xE0000)
        let tables = try ACPITables(platform: platform)

        // One image from the RSDP's address up, as the VMM would lay it out.
        let base = tables.rsdpAddress
        let end = tables.blobs.map { $0.address + UInt64($0.bytes.count) }.max()!
        var image = [UInt8](repeating: 0, count: Int(end - base))
        for blob in tables.blobs {
            let offset = Int(blob.address - base)
            image.replaceSubrange(offset..<(offset + blob.bytes.count), with: blob.bytes)
        }
        let report = try IASLDisassemblyTests.withTemporaryDirectory { directory -> String in
            let file = directory.appendingPathComponent("acpi.bin")
            try Data(image).write(to: file)
            let process = Process()
            process.executableURL = bootScript
            process.arguments = [file.path, "0x" + String(base, radix: 16), "\(platform.vcpuCount)"]
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            return String(decoding: output, as: UTF8.self)
        }

        let lines = Set(report.split(separator: "\n").map(String.init))
        #expect(lines.contains("KILN-ACPI-REPORT-END"), "the guest did not finish its report:\n\(report)")
        #expect(lines.contains("cpus 2"), "\(report)")
        for device in ["LNRO0005:00", "LNRO0005:01", "PNP0501:00"] {
            #expect(lines.contains("acpi-device \(device)"), "\(report)")
        }
        #expect(lines.contains("resource d0000000-d0000fff : LNRO0005:00"), "\(report)")
        #expect(lines.contains("resource d0001000-d0001fff : LNRO0005:01"), "\(report)")
        #expect(lines.contains("resource 03f8-03ff : serial"), "\(report)")
        #expect(report.contains("IOAPIC[0]: apic_id 0, version 32, address 0xfec00000, GSI 0-23"))
        #expect(report.contains("ACPI: INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2 dfl dfl)"))
        #expect(report.contains("ACPI: LAPIC_NMI (acpi_id[0xff] dfl dfl lint[0x1])"))
        #expect(report.contains("smpboot: Allowing 2 CPUs"))
        #expect(report.contains("ACPI: PM: (supports S0 S5)"), "\\_S5 and the sleep registers were accepted")
        // virtio_mmio bound to both devices and read their windows (nothing
        // backs them here, hence the complaint).
        #expect(report.contains("virtio-mmio LNRO0005:00: Wrong magic value 0x00000000!"), "\(report)")
        #expect(report.contains("virtio-mmio LNRO0005:01: Wrong magic value 0x00000000!"), "\(report)")

        // `poweroff -f`: Linux wrote SLP_TYP from \_S5 with SLP_EN to port
        // 0x600, where isa-debug-exit made QEMU exit with (value << 1) | 1.
        let exit = try #require(lines.first { $0.hasPrefix("qemu-exit ") }.flatMap { Int($0.dropFirst(10)) })
        #expect(exit & 1 == 1, "QEMU did not exit through the sleep control register: status \(exit)")
        #expect(SleepRegisters.requestsPowerOff(UInt8(truncatingIfNeeded: exit >> 1)), "wrote \(exit >> 1)")
    }
}
