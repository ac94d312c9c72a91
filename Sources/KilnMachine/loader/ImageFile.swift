#if canImport(Glibc)
import Glibc
#endif
import KilnSystem

/// Reads a kernel or initrd image whole, sized once from fstat: images are
/// tens of MiB, and growing a buffer chunk by chunk costs more than the read.
enum ImageFile {
    static func read(_ path: String, limit: Int, what: String) throws -> [UInt8] {
        let fd = try FileDescriptor.open(path, O_RDONLY)
        return try fd.closeAfter { fd in
            var info = stat()
            try check("fstat", subject: path) { fstat(fd.rawValue, &info) }
            guard (info.st_mode & S_IFMT) == S_IFREG else { throw BootInputError("\(what) \(path) is not a regular file") }
            let size = Int(info.st_size)
            guard size <= limit else { throw BootInputError("\(what) \(path) is \(size >> 20) MiB, over the \(limit >> 20) MiB limit") }
            return try [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                count = 0
                while count < size {
                    let got = try fd.read(into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[count...]))
                    guard got > 0 else { break } // the file shrank under us: use what is there
                    count += got
                }
            }
        }
    }
}
