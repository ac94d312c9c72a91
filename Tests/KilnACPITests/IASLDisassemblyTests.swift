import Foundation
import KilnTestSupport
import Testing

@testable import KilnACPI

let iaslPath = "/usr/bin/iasl"

/// Checks the tables with an independent decoder: ACPICA's `iasl -d` (Debian
/// package acpica-tools). A disassembly must finish without errors or
/// warnings and show what the platform describes.
@Suite(
    .enabled(
        if: FileManager.default.isExecutableFile(atPath: iaslPath),
        "iasl is not installed (Debian package acpica-tools; `make deps` installs it)"))
struct IASLDisassemblyTests {
    /// One disassembly: iasl's own messages and the text it wrote.
    struct Disassembly {
        let log: String
        let text: String
        /// The text with every run of whitespace collapsed to one space.
        var flat: String { text.split(whereSeparator: \.isWhitespace).joined(separator: " ") }
    }

    static func run(_ arguments: [String], in directory: URL) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: iaslPath)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    static func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("kiln-acpi-\(getpid())-\(UInt64.random(in: 0...UInt64.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        return try body(directory)
    }

    /// Disassembles every table, keyed by signature. Not the RSDP: iasl
    /// 20200925 rejects a standalone RSDP file ("does not contain a valid ACPI
    /// table"), so ACPITablesTests checks it field by field instead.
    static func disassemble(_ tables: ACPITables) throws -> [String: Disassembly] {
        try withTemporaryDirectory { directory in try disassemble(tables, in: directory) }
    }

    static func disassemble(_ tables: ACPITables, in directory: URL) throws -> [String: Disassembly] {
        var result: [String: Disassembly] = [:]
        for blob in tables.blobs where blob.signature != "RSD PTR " {
            let name = blob.signature.lowercased()
            try Data(blob.bytes).write(to: directory.appendingPathComponent("\(name).dat"))
            let (status, log) = try run(["-d", "\(name).dat"], in: directory)
            #expect(status == 0, "iasl -d \(name).dat exited \(status):\n\(log)")
            let text = (try? String(contentsOf: directory.appendingPathComponent("\(name).dsl"), encoding: .utf8)) ?? ""
            result[blob.signature] = Disassembly(log: log, text: text)
        }
        return result
    }

    static func expectClean(_ disassembly: Disassembly, _ signature: String) {
        for word in ["Error", "Warning", "Invalid", "Incorrect", "invalid", "incorrect", "Unknown"] {
            #expect(
                !disassembly.log.contains(word) && !disassembly.text.contains(word),
                "\(signature): iasl reports \"\(word)\":\n\(disassembly.log)\n\(disassembly.text)")
        }
        #expect(!disassembly.text.isEmpty, "\(signature): no disassembly written")
    }

    @Test func everyTableDisassemblesCleanlyAndShowsThePlatform() throws {
        var platform = ACPIPlatform.sample(vcpus: 3, devices: 2)
        platform.virtioDevices.append(VirtioMMIODevice(base: 0x40_0000_0000, gsi: 12, trigger: .level))
        let tables = try ACPITables(platform: platform)
        let disassembled = try Self.disassemble(tables)
        for (signature, disassembly) in disassembled { Self.expectClean(disassembly, signature) }

        let dsdt = try #require(disassembled["DSDT"]).flat
        #expect(dsdt.components(separatedBy: #"Name (_HID, "LNRO0005")"#).count - 1 == 3)
        #expect(dsdt.contains("Device (V000)") && dsdt.contains("Device (V001)") && dsdt.contains("Device (V002)"))
        #expect(dsdt.contains("Memory32Fixed (ReadWrite, 0xD0000000, // Address Base 0x00001000, // Address Length )"))
        #expect(dsdt.contains("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000005, }"))
        #expect(dsdt.contains("Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000006, }"))
        #expect(
            dsdt.contains(
                "QWordMemory (ResourceConsumer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x0000000000000000, // Granularity 0x0000004000000000, // Range Minimum 0x0000004000000FFF, // Range Maximum"
            ))
        #expect(dsdt.contains("Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, ) { 0x0000000C, }"))
        #expect(dsdt.contains(#"Name (_HID, EisaId ("PNP0501")"#))
        #expect(
            dsdt.contains(
                "IO (Decode16, 0x03F8, // Range Minimum 0x03F8, // Range Maximum 0x01, // Alignment 0x08, // Length )"))
        #expect(dsdt.contains("IRQNoFlags () {4}"))
        #expect(dsdt.contains("Name (_S5, Package (0x02)") && dsdt.contains("{ 0x05, Zero })"))

        let madt = try #require(disassembled["APIC"]).flat
        #expect(madt.components(separatedBy: "[Processor Local APIC]").count - 1 == 3)
        for id in 0..<3 { #expect(madt.contains("Local Apic ID : 0\(id)")) }
        #expect(madt.contains("[I/O APIC]") && madt.contains("Address : FEC00000"))
        #expect(
            madt.contains("[Interrupt Source Override]") && madt.contains("Source : 00")
                && madt.contains("Interrupt : 00000002"))
        #expect(madt.contains("[Local APIC NMI]") && madt.contains("Interrupt Input LINT : 01"))

        let fadt = try #require(disassembled["FACP"]).flat
        #expect(fadt.contains("Hardware Reduced (V5) : 1"))
        #expect(
            fadt.contains("Sleep Control Register : [Generic Address Structure] [0F4h 0244 1] Space ID : 01 [SystemIO]")
        )
        #expect(fadt.contains("[0F8h 0248 8] Address : 0000000000000600"))
        #expect(
            fadt.contains("Sleep Status Register : [Generic Address Structure] [100h 0256 1] Space ID : 01 [SystemIO]"))
        #expect(fadt.contains("[104h 0260 8] Address : 0000000000000601"))
        #expect(fadt.contains("CMOS RTC Not Present (V5) : 1"))

        let xsdt = try #require(disassembled["XSDT"]).flat
        for (index, signature) in ["FACP", "APIC"].enumerated() {
            let address = String(try #require(tables.blob(signature)).address, radix: 16, uppercase: true)
            let padded = String(repeating: "0", count: 16 - address.count) + address
            #expect(xsdt.contains("ACPI Table Address \(index) : \(padded)"))
        }
    }

    /// The disassembled DSDT compiles back to the same AML, byte for byte.
    @Test func dsdtRoundTripsThroughTheCompiler() throws {
        let tables = try ACPITables(platform: .sample(vcpus: 2, devices: 4))
        let dsdt = try #require(tables.blob("DSDT")).bytes
        try Self.withTemporaryDirectory { directory in
            _ = try Self.disassemble(tables, in: directory)
            // -oa: no optimizations, so iasl keeps the name paths as written.
            let compile = try Self.run(["-oa", "-p", "compiled", "dsdt.dsl"], in: directory)
            #expect(compile.status == 0 && compile.output.contains("0 Errors, 0 Warnings"), "\(compile.output)")
            let compiled = [UInt8](try Data(contentsOf: directory.appendingPathComponent("compiled.aml")))
            #expect(Array(compiled.dropFirst(36)) == Array(dsdt.dropFirst(36)), "AML body differs after a round trip")
        }
    }

    @Test func randomPlatformsDisassembleCleanly() throws {
        var rng = SplitMix64(seed: RandomizedPlatformTests.seed ^ 0x1A51)
        for _ in 0..<12 {
            let platform = RandomizedPlatformTests.randomPlatform(&rng)
            let disassembled = try Self.disassemble(try ACPITables(platform: platform))
            for (signature, disassembly) in disassembled { Self.expectClean(disassembly, signature) }
            let dsdt = try #require(disassembled["DSDT"]).flat
            #expect(dsdt.components(separatedBy: #"Name (_HID, "LNRO0005")"#).count - 1 == platform.virtioDevices.count)
            let madt = try #require(disassembled["APIC"]).flat
            #expect(madt.components(separatedBy: "[Processor Local APIC]").count - 1 == platform.vcpuCount)
        }
    }
}
