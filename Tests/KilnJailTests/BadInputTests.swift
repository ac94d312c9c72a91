import KilnSeccomp
import KilnSystem
import Testing

@testable import KilnJail

#if canImport(Glibc)
    import Glibc
#endif

/// Bad input through the real binary: each case exits with its step's code
/// and message, and leaves no folder and no cgroup behind.
@Suite(
    .serialized,
    .enabled(if: JailHarness.canJail, "needs root and the kiln-jailer and kiln-jail-probe executables (swift build)"))
struct BadInputTests {
    enum Case: String, CaseIterable {
        case missingUID, invalidID, relativeExecFile, missingExecFile, dynamicExecFile, scriptExecFile,
            unexecutableExecFile, existingJail, unknownController, unparsableLimit, missingBundle,
            bundleWithoutJailerRole, bundleForAnotherArchitecture, notANetworkNamespace, kernelRefusesCgroupValue,
            relativeJailFile, missingJailFile, jailFileIsAFolder, jailFileNameTaken, jailFileNameWithSlash,
            duplicateJailFileName, jailFileAfterAMissingOne,
            worldWritableBase, baseOwnedByAnotherUser, execFolderOwnedByAnotherUser, execFolderWritableByOthers
    }

    func expectation(_ sandbox: JailHarness.Sandbox, _ testCase: Case) throws -> (
        arguments: [String], code: Int32, message: String
    ) {
        let probe = JailHarness.probe
        func replacing(_ flag: String, with value: String) -> [String] {
            var arguments = sandbox.launchArguments()
            arguments[arguments.firstIndex(of: flag)! + 1] = value
            return arguments
        }
        /// A folder with exactly `mode` (mkdir(2) applies the umask) and `owner`.
        func makeFolder(_ path: String, mode: mode_t = 0o755, owner: UInt32 = 0) throws {
            try check("mkdir", subject: path) { mkdir(path, mode) }
            try check("chmod", subject: path) { chmod(path, mode) }
            try check("chown", subject: path) { chown(path, owner, 0) }
        }
        switch testCase {
        case .missingUID:
            return (
                sandbox.launchArguments().filter { $0 != "--uid" && $0 != "\(JailHarness.uid)" }, 2,
                "missing required flag --uid"
            )
        case .invalidID:
            return (replacing("--id", with: "no/slashes"), 2, "invalid --id \"no/slashes\"")
        case .relativeExecFile:
            return (replacing("--exec-file", with: "kiln-jail-probe"), 2, "is not an absolute path")
        case .missingExecFile:
            return (replacing("--exec-file", with: probe + "-absent"), 3, "--exec-file \(probe)-absent does not exist")
        case .dynamicExecFile:
            return (replacing("--exec-file", with: "/bin/true"), 3, "is dynamically linked")
        case .scriptExecFile:
            let script = sandbox.folder + "/script.sh"
            try FileSystem.writeAtomically(script, Array("#!/bin/sh\nexit 0\n".utf8), mode: 0o755)
            return (replacing("--exec-file", with: script), 3, "is not an ELF executable")
        case .unexecutableExecFile:
            let copy = sandbox.folder + "/private-probe"
            try FileSystem.writeAtomically(copy, try FileSystem.readFile(probe), mode: 0o700)
            return (replacing("--exec-file", with: copy), 3, "is not executable by uid 64123")
        case .existingJail:
            try check("mkdir") { mkdir(sandbox.base, 0o755) }
            try check("mkdir") { mkdir(sandbox.paths.execFolder, 0o755) }
            // A prepared jail folder is used (PreparedJailTests); a file there is not one.
            try FileSystem.writeAtomically(sandbox.paths.jailFolder, Array("x".utf8))
            return (
                sandbox.launchArguments(), 3,
                "the existing jail \(sandbox.paths.jailFolder) is a symbolic link or not a folder"
            )
        case .unknownController:
            return (sandbox.launchArguments(["--cgroup", "bogus.max=1"]), 3, "unknown cgroup controller \"bogus\"")
        case .unparsableLimit:
            return (
                sandbox.launchArguments(["--resource-limit", "no-file=lots"]), 2, "\"lots\" is not a decimal number"
            )
        case .missingBundle:
            return (
                replacing("--seccomp-bundle", with: sandbox.folder + "/absent.kbundle"), 3,
                "seccomp bundle \(sandbox.folder)/absent.kbundle"
            )
        case .bundleWithoutJailerRole:
            let bundle = sandbox.folder + "/vmm-only.kbundle"
            let allow = try JailHarness.testBundle().program(for: "vmm")!
            try FileSystem.writeAtomically(
                bundle, try SeccompBundle(architecture: 0xC000_003E, programs: ["vmm": allow]).encoded())
            return (replacing("--seccomp-bundle", with: bundle), 3, "has no \"jailer\" program")
        case .bundleForAnotherArchitecture:
            let bundle = sandbox.folder + "/i386.kbundle"
            let programs = ["jailer": try JailHarness.testBundle().program(for: "jailer")!]
            try FileSystem.writeAtomically(
                bundle, try SeccompBundle(architecture: 0x4000_0003, programs: programs).encoded())
            return (
                replacing("--seccomp-bundle", with: bundle), 3,
                "was compiled for architecture 0x40000003, this host is 0xc000003e"
            )
        case .notANetworkNamespace:
            return (
                sandbox.launchArguments(["--netns", "/proc/self/ns/mnt"]), 3,
                "--netns /proc/self/ns/mnt is not a network namespace"
            )
        case .kernelRefusesCgroupValue:
            // Passes every check; the kernel refuses the value at step 4, after
            // folders and cgroups exist: the rollback must remove them all.
            return (
                sandbox.launchArguments(["--cgroup", "memory.limit_in_bytes=\(64 << 20)", "--cgroup", "pids.max=lots"]),
                6,
                "write \"lots\" to /sys/fs/cgroup/pids/\(sandbox.parentCgroup)/\(sandbox.id)/pids.max"
            )
        case .relativeJailFile:
            return (
                sandbox.launchArguments(["--jail-file", "vmlinux"]), 2,
                "--jail-file \"vmlinux\" is not an absolute path"
            )
        case .missingJailFile:
            return (
                sandbox.launchArguments(["--jail-file", sandbox.folder + "/absent"]), 3,
                "--jail-file \(sandbox.folder)/absent does not exist"
            )
        case .jailFileIsAFolder:
            return (sandbox.launchArguments(["--jail-file", "/etc:etc"]), 3, "--jail-file /etc is not a regular file")
        case .jailFileNameTaken:
            return (
                sandbox.launchArguments(["--jail-file", "/etc/hostname:seccomp.kbundle"]), 2,
                "the name \"seccomp.kbundle\" is taken"
            )
        case .jailFileNameWithSlash:
            return (sandbox.launchArguments(["--jail-file", "/etc/hostname:a/b"]), 2, "must be one file name")
        case .duplicateJailFileName:
            return (
                sandbox.launchArguments(["--jail-file", "/etc/hostname", "--jail-file", "/etc/passwd:hostname"]), 2,
                "two files are named \"hostname\""
            )
        case .jailFileAfterAMissingOne:
            // The first file is fine: nothing may be placed before all are checked.
            return (
                sandbox.launchArguments(["--jail-file", "/etc/hostname", "--jail-file", sandbox.folder + "/absent:x"]),
                3,
                "--jail-file \(sandbox.folder)/absent does not exist"
            )
        // Folders another user could change: the attacker would plant
        // `<base>/<exec-file name>`, or swap `<id>` for a link to their tree.
        case .worldWritableBase:
            try makeFolder(sandbox.base, mode: 0o777)
            return (
                sandbox.launchArguments(), 3,
                "--chroot-base-dir \(sandbox.base) is writable by its group and others (mode 777): another user could redirect the jail"
            )
        case .baseOwnedByAnotherUser:
            try makeFolder(sandbox.base, owner: JailHarness.uid)
            return (
                sandbox.launchArguments(), 3,
                "--chroot-base-dir \(sandbox.base) is owned by uid \(JailHarness.uid), not by root"
            )
        case .execFolderOwnedByAnotherUser:
            try makeFolder(sandbox.base)
            try makeFolder(sandbox.paths.execFolder, owner: JailHarness.uid)
            return (
                sandbox.launchArguments(), 3,
                "the exec file's folder \(sandbox.paths.execFolder) is owned by uid \(JailHarness.uid), not by root"
            )
        case .execFolderWritableByOthers:
            // The sticky bit (restricted deletion) does not let others in: they may still create `<id>`.
            try makeFolder(sandbox.base)
            try makeFolder(sandbox.paths.execFolder, mode: 0o1757)
            return (
                sandbox.launchArguments(), 3,
                "the exec file's folder \(sandbox.paths.execFolder) is writable by others (mode 1757)"
            )
        }
    }

    @Test(arguments: Case.allCases)
    func refusesAndLeavesNothingBehind(_ testCase: Case) throws {
        if testCase == .kernelRefusesCgroupValue && !JailHarness.v1PidsAndMemory {
            try Test.cancel("needs the cgroup v1 pids and memory controllers")
        }
        let sandbox = try JailHarness.Sandbox("bad-\(testCase.rawValue.lowercased())")
        defer { sandbox.tearDown() }
        let (arguments, code, message) = try expectation(sandbox, testCase)
        let before = FileSystem.exists(sandbox.base) ? try FileSystem.listDirectory(sandbox.base) : []
        let finished = try JailHarness.run(arguments)
        #expect(finished.status == code, "\(testCase): \(finished.error)")
        #expect(
            finished.error.hasPrefix("kiln-jailer: ") && finished.error.contains(message),
            "\(testCase): \(finished.error)")
        #expect(finished.output.isEmpty)
        if [.execFolderOwnedByAnotherUser, .execFolderWritableByOthers].contains(testCase) {
            #expect(
                try FileSystem.listDirectory(sandbox.paths.execFolder).isEmpty,
                "\(testCase): nothing may be created in it")
        }
        if testCase == .existingJail {
            // Refused, and the file is as the test made it.
            #expect(try FileSystem.readFile(sandbox.paths.jailFolder) == Array("x".utf8))
        } else {
            let after = FileSystem.exists(sandbox.base) ? try FileSystem.listDirectory(sandbox.base) : []
            #expect(after == before, "\(testCase) left \(after)")
        }
        #expect(sandbox.cgroupFolders.isEmpty, "\(testCase) left cgroups \(sandbox.cgroupFolders)")
    }
}
