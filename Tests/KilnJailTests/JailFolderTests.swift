import KilnSystem
import Testing

@testable import KilnJail

#if canImport(Glibc)
    import Glibc
#endif

/// How a host file (the exec file, a --jail-file) reaches the jail root.
@Suite(.enabled(if: getuid() == 0, "linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH: run as root"))
struct JailFolderTests {
    static let vmm = (uid: UInt32(1000), gid: UInt32(1000))

    /// A scratch folder with `kiln-real` (mode 0755, owned by `owner`), a
    /// symbolic link `kiln-link` to it and an empty `root`.
    final class Scratch {
        let folder = String(cString: mkdtemp(strdup("/tmp/kiln-jail-folder-XXXXXX")))
        var real: String { folder + "/kiln-real" }
        var link: String { folder + "/kiln-link" }

        init(owner: UInt32 = 0) throws {
            try FileSystem.writeAtomically(real, Array("static binary".utf8), mode: 0o755)
            #expect(chown(real, owner, 0) == 0)
            #expect(symlink(real, link) == 0)
            #expect(mkdir(folder + "/root", 0o755) == 0)
        }

        deinit {
            for file in ["root/kiln", "kiln-link", "kiln-real", "kiln-other"] { unlink(folder + "/" + file) }
            rmdir(folder + "/root")
            rmdir(folder)
        }

        func validated(_ path: String) -> ValidatedHostFile {
            var info = stat()
            #expect(stat(path, &info) == 0)
            return ValidatedHostFile(flag: "--exec-file", path: path, info)
        }

        func place(_ file: ValidatedHostFile, mode: mode_t = 0o755) throws {
            try FileDescriptor.open(folder + "/root", O_RDONLY | O_DIRECTORY).closeAfter { root in
                try file.place(
                    named: "kiln", mode: mode, in: root, rootPath: folder + "/root", uid: vmm.uid, gid: vmm.gid)
            }
        }

        func placed() -> stat? {
            var info = stat()
            return lstat(folder + "/root/kiln", &info) == 0 ? info : nil
        }
    }

    /// Validation stats through symbolic links; the jail must then hold that
    /// file, not a link to the symbolic link, whose target means nothing (or
    /// something else) inside the new root.
    @Test func placesTheFileASymbolicLinkNames() throws {
        let scratch = try Scratch()
        try scratch.place(scratch.validated(scratch.link))
        let placed = try #require(scratch.placed())
        #expect(placed.st_mode & S_IFMT == S_IFREG)
        var real = stat()
        #expect(stat(scratch.real, &real) == 0)
        #expect(placed.st_ino == real.st_ino, "a root-owned 0755 file is linked, not copied")
    }

    /// A file put at the path after step 1 (which checked another one) is
    /// refused, and nothing is placed.
    @Test func refusesAFileReplacedAfterValidation() throws {
        let scratch = try Scratch()
        let validated = scratch.validated(scratch.real)
        try FileSystem.writeAtomically(scratch.folder + "/kiln-other", Array("#!/bin/sh\n".utf8), mode: 0o755)
        #expect(rename(scratch.folder + "/kiln-other", scratch.real) == 0)
        let error = #expect(throws: JailFailure.self) { try scratch.place(validated) }
        #expect(error?.message.contains("was replaced after it was validated") == true)
        #expect(scratch.placed() == nil)
    }

    /// An exec file the VMM's user owns is copied (root's, 0755): a hard
    /// link would leave the jailed VMM owning, so able to chmod, a host file.
    @Test func copiesAFileTheVMMOwns() throws {
        let scratch = try Scratch(owner: Self.vmm.uid)
        try scratch.place(scratch.validated(scratch.real))
        let placed = try #require(scratch.placed())
        var real = stat()
        #expect(stat(scratch.real, &real) == 0)
        #expect(placed.st_ino != real.st_ino)
        #expect(placed.st_uid == 0 && placed.st_mode & 0o7777 == 0o755)
        #expect(try FileSystem.readFile(scratch.folder + "/root/kiln", limit: 64) == Array("static binary".utf8))
    }

    /// A --jail-file only root may read (a kernel or initrd kept 0600) is
    /// copied for the VMM's group alone: the jail root is open to every host
    /// user, and a 0444 copy would hand them the file.
    @Test func aCopyOfAFileOthersCannotReadStaysHiddenFromThem() throws {
        let scratch = try Scratch()
        #expect(chmod(scratch.real, 0o600) == 0)
        try scratch.place(scratch.validated(scratch.real), mode: 0o444)
        let placed = try #require(scratch.placed())
        #expect(placed.st_uid == 0 && placed.st_gid == Self.vmm.gid, "owner \(placed.st_uid):\(placed.st_gid)")
        #expect(placed.st_mode & 0o7777 == 0o440, "mode \(String(placed.st_mode & 0o7777, radix: 8))")
        #expect(try FileSystem.readFile(scratch.folder + "/root/kiln", limit: 64) == Array("static binary".utf8))
    }

    /// A set-user-ID or set-group-ID file is copied without those bits: a
    /// hard link would be a second host path to it, which outlives an update
    /// of the original (the old, perhaps vulnerable, binary stays setuid).
    @Test(arguments: [mode_t(0o4755), 0o2755, 0o6755])
    func copiesASetIDFileWithoutItsBits(_ mode: mode_t) throws {
        let scratch = try Scratch()
        #expect(chmod(scratch.real, mode) == 0)
        try scratch.place(scratch.validated(scratch.real))
        let placed = try #require(scratch.placed())
        var real = stat()
        #expect(stat(scratch.real, &real) == 0)
        #expect(placed.st_ino != real.st_ino, "linked: the jail folder holds a second path to a set-ID file")
        #expect(placed.st_uid == 0 && placed.st_mode & 0o7777 == 0o755)
    }
}
