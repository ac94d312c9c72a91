import Glibc
import Testing

@testable import KilnSystem

@Suite struct FileSystemTests {
    @Test func writesAtomicallyAndReadsBack() throws {
        let directory = String(cString: mkdtemp(strdup("/tmp/kiln-fs-XXXXXX")))
        defer {
            for name in (try? FileSystem.listDirectory(directory)) ?? [] { unlink("\(directory)/\(name)") }
            rmdir(directory)
        }
        let path = "\(directory)/file"
        try FileSystem.writeAtomically(path, Array("first".utf8))
        try FileSystem.writeAtomically(path, Array("second".utf8))
        #expect(try FileSystem.readText(path) == "second")
        #expect(try FileSystem.listDirectory(directory) == ["file"])
    }

    @Test func failedWriteLeavesNothing() throws {
        #expect(throws: SystemError.self) {
            try FileSystem.writeAtomically("/nonexistent-kiln-dir/file", [1, 2, 3])
        }
    }

    @Test func errorsNameTheirSubjectAndErrno() {
        do {
            _ = try FileSystem.readFile("/nonexistent-kiln-file")
            Issue.record("reading a missing file succeeded")
        } catch let error as SystemError {
            #expect(error.errno == ENOENT)
            #expect(error.description.contains("/nonexistent-kiln-file"))
            #expect(error.description.contains("ENOENT"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func readAllRefusesOversizedInput() throws {
        #expect(throws: SystemError.self) { try FileSystem.readFile("/proc/self/status", limit: 8) }
    }
}

@Suite struct MonotonicClockTests {
    @Test func formatsMillisecondsTruncatedWithPaddedFractions() {
        #expect(MonotonicClock.millisecondsText(7_950_000, decimals: 2) == "7.95")
        #expect(MonotonicClock.millisecondsText(7_059_999, decimals: 2) == "7.05")
        #expect(MonotonicClock.millisecondsText(164_010_000, decimals: 3) == "164.010")
        #expect(MonotonicClock.millisecondsText(5_000, decimals: 3) == "0.005")
        #expect(MonotonicClock.millisecondsText(12_345_678, decimals: 0) == "12")
    }
}
