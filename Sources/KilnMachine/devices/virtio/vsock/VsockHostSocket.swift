import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// vsock's `uds_path`: the Unix socket host peers connect to, bound and
/// listening from the moment the device is configured (`PUT /vsock`, or a
/// config file's `vsock`), as Firecracker's `VsockBuilder::insert` creates
/// it while the request is answered: clients wait for the file before they
/// start the guest. The device serves it from InstanceStart on.
///
/// Whoever configured the device owns the file: `remove` (or the last
/// reference going) closes the socket and unlinks the path, once. That runs
/// under the vmm filter, which has no stat, so only a replacement (before
/// boot) looks whether the file there is still the one bound.
public final class VsockHostSocket {
    public let path: String
    let listener: FileDescriptor
    /// The socket file bound at `path`, by device and inode: someone may
    /// delete it, or put another file there, while kiln holds the listener.
    private let file: (device: UInt64, inode: UInt64)
    private var removed = false

    /// Binds and listens on `path`. A file already there is refused by name
    /// and left alone (kiln removes only what it made); a failure leaves
    /// nothing behind.
    public init(path: String) throws {
        if Self.identity(of: path) != nil {
            throw BootInputError.vsockPathTaken(path: path)
        }
        do {
            listener = try UnixSocket.listen(path: path, backlog: 64)
        } catch let error as SystemError {
            throw BootInputError.vsockListen(path: path, error)
        }
        guard let bound = Self.identity(of: path) else {
            // Deleted between bind and lstat: nobody could reach it.
            listener.close()
            throw BootInputError.vsockListen(path: path, SystemError("lstat", subject: path, errno: ENOENT))
        }
        self.path = path
        file = bound
    }

    /// True while `path` is still the socket file this listener was bound
    /// to: host peers that connect to `path` reach it.
    public var holdsPath: Bool {
        guard !removed, let now = Self.identity(of: path) else { return false }
        return now == file
    }

    /// The socket for a `PUT /vsock` of `path` when `current` was bound
    /// before: `current` itself while it still holds the same path (a new
    /// CID keeps the listener); else a new socket, bound before `current`
    /// goes, so a refused bind (a file someone else put there) leaves the
    /// earlier one as it was. Firecracker removes the old file and binds
    /// anew every time, and fails when the file was deleted meanwhile.
    public static func replacing(_ current: VsockHostSocket?, path: String) throws -> VsockHostSocket {
        guard let current else { return try VsockHostSocket(path: path) }
        let ours = current.holdsPath
        if current.path == path && ours { return current }
        let socket = try VsockHostSocket(path: path)
        // Its file deleted or taken by another: not unlinked (at the same
        // path, the file is the new socket's by now).
        current.close(unlinking: ours)
        return socket
    }

    /// Closes the socket and removes its file; later calls do nothing.
    public func remove() { close(unlinking: true) }

    private func close(unlinking: Bool) {
        guard !removed else { return }
        removed = true
        listener.close()
        if unlinking { unlink(path) }
    }

    deinit { remove() }

    private static func identity(of path: String) -> (device: UInt64, inode: UInt64)? {
        var status = stat()
        guard lstat(path, &status) == 0 else { return nil }
        return (UInt64(status.st_dev), UInt64(status.st_ino))
    }
}
