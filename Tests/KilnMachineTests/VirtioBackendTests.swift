import KilnSystem
import KilnTelemetry
import KilnVirtio
import Testing

@testable import KilnMachine

#if canImport(Glibc)
    import Glibc
#endif

/// The host side of the virtio devices, which KilnVirtio reaches only through
/// its backend protocols.
@Suite struct VirtioBackendTests {
    static func scratchFile(_ bytes: [UInt8]) throws -> (path: String, file: FileDescriptor) {
        var template = Array("/tmp/kiln-backend-XXXXXX".utf8CString)
        let raw = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        #expect(raw >= 0)
        let file = FileDescriptor(rawValue: raw)
        try file.writeAll(bytes)
        return (String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), file)
    }

    @Test func aFileBackendReadsWritesAndHidesATrailingPartialSector() throws {
        let disk: [UInt8] = (0..<8).flatMap { [UInt8](repeating: UInt8($0), count: 512) } + [1, 2, 3]
        let (path, file) = try Self.scratchFile(disk)
        defer { file.close(); unlink(path) }
        let backend = try FileBlockBackend(file: file, readOnly: false, syncOnFlush: true, identifier: "file")
        #expect(backend.sectorCount == 8)
        var sector = [UInt8](repeating: 0, count: 512)
        try sector.withUnsafeMutableBytes { try backend.read(into: $0, at: 7 * 512) }
        #expect(sector == [UInt8](repeating: 7, count: 512))
        try [UInt8](repeating: 0xEE, count: 512).withUnsafeBytes { try backend.write($0, at: 0) }
        try backend.flush()
        var check = [UInt8](repeating: 0, count: 4)
        _ = check.withUnsafeMutableBytes { pread(file.rawValue, $0.baseAddress, 4, 0) }
        #expect(check == [0xEE, 0xEE, 0xEE, 0xEE])
    }

    @Test func aReadOnlyFileBackendRefusesWritesAndLeavesTheFile() throws {
        let (path, file) = try Self.scratchFile([UInt8](repeating: 5, count: 1024))
        defer { file.close(); unlink(path) }
        let backend = try FileBlockBackend(file: file, readOnly: true, identifier: "ro")
        #expect(throws: SystemError.self) {
            try [UInt8](repeating: 1, count: 512).withUnsafeBytes { try backend.write($0, at: 0) }
        }
        var check = [UInt8](repeating: 0, count: 1)
        _ = check.withUnsafeMutableBytes { pread(file.rawValue, $0.baseAddress, 1, 0) }
        #expect(check == [5])
    }

    @Test func aFileThatShrankUnderTheVMMIsAnErrorNotStaleBytes() throws {
        let (path, file) = try Self.scratchFile([UInt8](repeating: 9, count: 4096))
        defer { file.close(); unlink(path) }
        let backend = try FileBlockBackend(file: file, readOnly: false, identifier: "shrunk")
        #expect(ftruncate(file.rawValue, 512) == 0)
        var sector = [UInt8](repeating: 0, count: 512)
        #expect(throws: SystemError.self) {
            try sector.withUnsafeMutableBytes { try backend.read(into: $0, at: 3 * 512) }
        }
    }

    @Test func theRandomSourceFillsAndCounts() throws {
        let registry = MetricsRegistry()
        let source = RandomEntropySource(registry: registry, group: "entropy")
        var bytes = [UInt8](repeating: 0, count: 64)
        try bytes.withUnsafeMutableBytes { try source.fill($0) }
        // 64 zero bytes from getrandom: probability 2^-512.
        #expect(bytes != [UInt8](repeating: 0, count: 64))
        #expect(source.bytes.value == 64)
    }
}
