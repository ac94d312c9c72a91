import KilnJSON
import KilnSystem
import Testing

@testable import KilnJail

#if canImport(Glibc)
    import Glibc
#endif

/// The jail is walked by descriptor: a symbolic link planted where the
/// jailer creates or enters a folder, before the launch or during it, never
/// leads it into another tree.
@Suite(
    .serialized,
    .enabled(if: JailHarness.canJail, "needs root and the kiln-jailer and kiln-jail-probe executables (swift build)"))
struct JailWalkTests {
    /// A tree outside the base shaped like a jail folder, whose root holds
    /// the probe and a marker file: a jailer that followed a link into it
    /// would run this probe, which would list the marker.
    final class Decoy {
        static let marker = "decoy-marker"
        let folder: String

        init(in sandbox: JailHarness.Sandbox) throws {
            folder = sandbox.folder + "/decoy"
            for path in [folder, folder + "/root", folder + "/root/dev", folder + "/root/run"] {
                try check("mkdir", subject: path) { mkdir(path, 0o755) }
            }
            try FileSystem.writeAtomically(
                folder + "/root/kiln-jail-probe", try FileSystem.readFile(JailHarness.probe), mode: 0o755)
            try FileSystem.writeAtomically(
                folder + "/root/seccomp.kbundle", try FileSystem.readFile(sandbox.bundle), mode: 0o444)
            try FileSystem.writeAtomically(folder + "/root/" + Self.marker, Array("not the jail".utf8), mode: 0o644)
        }

        /// Every path under the decoy with its type, mode, owner, size and
        /// modification time: "untouched" means this does not change.
        func snapshot() throws -> [String] {
            var lines: [String] = []
            func visit(_ path: String) throws {
                var info = stat()
                try check("lstat", subject: path) { lstat(path, &info) }
                lines.append(
                    "\(path) \(String(info.st_mode, radix: 8)) \(info.st_uid):\(info.st_gid) \(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
                )
                if (info.st_mode & S_IFMT) == S_IFDIR {
                    for name in try FileSystem.listDirectory(path) { try visit(path + "/" + name) }
                }
            }
            try visit(folder)
            return lines
        }
    }

    enum Planted: String, CaseIterable { case execFolder, jail }

    /// A link planted before the launch, at the exec file's folder or at the
    /// jail folder: refused at validation, and the tree it names untouched.
    @Test(arguments: Planted.allCases)
    func refusesALinkPlantedBeforeTheLaunch(_ planted: Planted) throws {
        let sandbox = try JailHarness.Sandbox("planted-\(planted.rawValue.lowercased())")
        defer { sandbox.tearDown() }
        let decoy = try Decoy(in: sandbox)
        try check("mkdir") { mkdir(sandbox.base, 0o755) }
        let link: String
        switch planted {
        case .execFolder:
            link = sandbox.paths.execFolder
        case .jail:
            try check("mkdir") { mkdir(sandbox.paths.execFolder, 0o755) }
            link = sandbox.paths.jailFolder
        }
        try check("symlink") { symlink(decoy.folder, link) }
        let before = try decoy.snapshot()

        let finished = try JailHarness.run(sandbox.launchArguments(vmm: ["--no-wait"]))
        #expect(finished.status == JailStep.validation.exitCode, "\(finished.error)")
        let message =
            planted == .execFolder
            ? "the exec file's folder \(link) is a symbolic link" : "the existing jail \(link) is a symbolic link"
        #expect(finished.error.contains(message), "\(finished.error)")
        #expect(finished.output.isEmpty, "the decoy's probe ran: \(finished.output)")
        #expect(try decoy.snapshot() == before)
        var info = stat()
        #expect(
            lstat(link, &info) == 0 && (info.st_mode & S_IFMT) == S_IFLNK,
            "the planted link is not the jailer's to remove")
    }

    /// The attack itself: once the jail's root exists, another thread renames
    /// `<id>` away and puts a link to the decoy in its place, while the
    /// jailer goes on to bind-mount, pivot into and exec from its jail. A
    /// jailer that looked the root up by path again would run the decoy's
    /// probe. The swap waits for a 16 MiB `--jail-file` to appear in the
    /// root: the jailer copies it (the VMM's user owns it), which holds the
    /// window open for milliseconds. Five rounds, as the attack won five of five.
    @Test func aJailSwappedForALinkMidLaunchIsNeverFollowed() throws {
        let sandbox = try JailHarness.Sandbox("swapped")
        defer { sandbox.tearDown() }
        let decoy = try Decoy(in: sandbox)
        let before = try decoy.snapshot()
        let big = sandbox.folder + "/big"
        try FileSystem.writeAtomically(big, [UInt8](repeating: 0x5A, count: 16 << 20), mode: 0o644)
        try check("chown", subject: big) { chown(big, JailHarness.uid, JailHarness.gid) }

        for round in 0..<5 {
            let id = "swapped-\(round)"
            let jail = JailPaths(base: sandbox.base, execFileName: "kiln-jail-probe", id: id).jailFolder
            let swapped = Locked(false), decoyFolder = decoy.folder
            let swapper = try SystemThread.spawn(name: "swapper") {
                var info = stat()
                let deadline = MonotonicClock.nanoseconds() + 5_000_000_000
                while lstat(jail + "/root/big", &info) != 0 {
                    if MonotonicClock.nanoseconds() > deadline { return }
                }
                let done = rename(jail, jail + "-moved") == 0 && symlink(decoyFolder, jail) == 0
                swapped.withLock { $0 = done }
            }
            var arguments = sandbox.launchArguments(["--jail-file", big], vmm: ["--no-wait"])
            arguments[arguments.firstIndex(of: "--id")! + 1] = id
            let running = try JailHarness.spawn(arguments)
            defer { running.stop() }
            let line = running.readLine()
            running.closeInput()
            let finished = running.wait()
            swapper.join()
            #expect(swapped.withLock { $0 }, "round \(round): the swap did not happen, so this round proves nothing")

            if let line {
                let report = try JSONParser.parse(line)
                guard case let .array(entries)? = report["root"] else {
                    Issue.record("no root listing: \(line)"); continue
                }
                let names = entries.compactMap { entry -> String? in
                    if case let .string(name)? = entry["name"] { return name }
                    return nil
                }
                #expect(
                    names == ["big", "dev", "kiln-jail-probe", "run", "seccomp.kbundle"],
                    "round \(round): the VMM ran in \(names)")
                #expect(finished.status == 0, "round \(round): \(finished.error)")
            } else {
                #expect(finished.status == JailStep.jailFolder.exitCode, "round \(round): \(finished.error)")
            }
            #expect(try decoy.snapshot() == before, "round \(round) touched the decoy")
        }
    }
}
