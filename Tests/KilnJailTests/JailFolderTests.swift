#if canImport(Glibc)
import Glibc
#endif
import KilnSystem
import Testing
@testable import KilnJail

@Suite struct JailFolderTests {
    /// Validation stats the exec file through symbolic links; the jail must
    /// then hold that file, not a link to the symbolic link, whose target
    /// means nothing (or something else) inside the new root.
    @Test func placesTheFileASymbolicLinkNames() throws {
        let folder = String(cString: mkdtemp(strdup("/tmp/kiln-jail-folder-XXXXXX")))
        defer {
            for file in ["root/kiln", "kiln-link", "kiln-real"] { unlink(folder + "/" + file) }
            rmdir(folder + "/root")
            rmdir(folder)
        }
        let target = folder + "/kiln-real"
        try FileSystem.writeAtomically(target, Array("static binary".utf8), mode: 0o755)
        #expect(symlink(target, folder + "/kiln-link") == 0)
        #expect(mkdir(folder + "/root", 0o755) == 0)

        try FileDescriptor.open(folder + "/root", O_RDONLY | O_DIRECTORY).closeAfter { root in
            try JailFolder.placeExecutable(folder + "/kiln-link", named: "kiln", in: root, subject: folder + "/root")
        }
        var placed = stat()
        #expect(lstat(folder + "/root/kiln", &placed) == 0)
        #expect(placed.st_mode & S_IFMT == S_IFREG)
        #expect(try FileSystem.readFile(folder + "/root/kiln", limit: 64) == Array("static binary".utf8))
    }
}
