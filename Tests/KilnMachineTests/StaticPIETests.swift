import KilnSystem
import KilnTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// kiln is static-pie (Package.swift, linker/static-pie-ld): an ELF of type
/// ET_DYN with no interpreter, which the kernel loads at a new random
/// address each run (ASLR), with nothing to find in an empty jail.
@Suite(.enabled(if: Lane1.ready, Lane1.skipReason))
struct StaticPIETests {
    @Test func kilnHasNoInterpreterAndMovesEveryRun() throws {
        let layout = try ExecutableLayout(ChildProcess.readBytes(Lane1.kiln))
        #expect(layout.type == 3, "e_type is not ET_DYN: kiln is not position-independent")
        let types = layout.programHeaderTypes
        #expect(!types.contains(3), "kiln has a PT_INTERP: it is not static")
        #expect(types.contains(2), "kiln has no PT_DYNAMIC: glibc's static-pie start-up has nothing to relocate")

        var bases: [String] = []
        for _ in 0..<2 {
            let maps = try Lane1.mapsOfServingKiln()
            bases.append(String(maps.first { $0.hasSuffix("/kiln") }?.split(separator: "-").first ?? ""))
        }
        #expect(bases.allSatisfy { !$0.isEmpty } && bases[0] != bases[1], "kiln's load address in two runs: \(bases)")
    }
}

extension Lane1 {
    /// The lines of /proc/PID/maps of a kiln serving its API, read once it
    /// answers on its socket; kiln is stopped before this returns.
    static func mapsOfServingKiln() throws -> [Substring] {
        let socketPath = "/tmp/kiln-maps-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        defer { unlink(socketPath) }
        let parent = try Lane1.spawn(["--api-sock", socketPath], stdout: "/dev/null", stderr: "/dev/null", seconds: 30)
        defer { kill(parent, SIGTERM); _ = Lane1.wait(parent) }
        _ = try UnixHTTPClient(path: socketPath) // kiln is up
        let kiln = try #require(ProcThreads.child(of: parent), "no kiln under timeout(1)")
        return Lane1.read("/proc/\(kiln)/maps").split(separator: "\n")
    }
}
