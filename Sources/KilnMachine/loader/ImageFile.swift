import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Reads a kernel or initrd image whole, sized once from fstat: images are
/// tens of MiB, and growing a buffer chunk by chunk costs more than the read.
///
/// Everything about the file is checked before a byte is read: the open is
/// non-blocking (a FIFO with no writer would otherwise block the event loop
/// forever, fifo(7)) and takes no controlling terminal, then fstat must show
/// a regular file no larger than the guest could hold.
enum ImageFile {
    enum Kind: String {
        case kernel, initrd
    }

    /// No kernel is bigger than this, whatever the guest's memory.
    static let kernelCap = 512 << 20

    static let openFlags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY

    /// The most bytes an image of `kind` may have for a guest of `guestMemoryMiB`,
    /// and why: it must fit in guest RAM (and a kernel under its cap).
    static func limit(_ kind: Kind, guestMemoryMiB: Int) -> (bytes: Int, reason: String) {
        let ram = guestMemoryMiB << 20
        let ramReason = "the guest's memory (\(guestMemoryMiB) MiB)"
        if kind == .kernel && kernelCap < ram {
            return (kernelCap, "the kernel image cap (\(kernelCap >> 20) MiB)")
        }
        return (ram, ramReason)
    }

    static func read(_ path: String, _ kind: Kind, guestMemoryMiB: Int) throws -> [UInt8] {
        // The C string would end at the NUL and name another file.
        guard !path.utf8.contains(0) else { throw BootInputError.imagePathContainsNUL(image: kind.rawValue) }
        let fd = try FileDescriptor.open(path, openFlags)
        return try fd.closeAfter { fd in
            var info = stat()
            try check("fstat", subject: path) { fstat(fd.rawValue, &info) }
            guard (info.st_mode & S_IFMT) == S_IFREG else {
                throw BootInputError.imageNotRegularFile(
                    image: kind.rawValue, path: path, fileType: fileTypeName(info.st_mode))
            }
            let size = Int(info.st_size)
            let (limit, reason) = limit(kind, guestMemoryMiB: guestMemoryMiB)
            guard size <= limit else {
                throw BootInputError.imageTooLarge(image: kind.rawValue, path: path, bytes: size, limit: reason)
            }
            return try [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                count = 0
                while count < size {
                    let got = try fd.read(
                        into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[count...]))
                    guard got > 0 else { break } // the file shrank under us: use what is there
                    count += got
                }
            }
        }
    }

    static func fileTypeName(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFDIR: "a directory"
        case S_IFSOCK: "a socket"
        case S_IFLNK: "a symbolic link"
        default: "of an unknown type"
        }
    }
}
