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
/// reference going) closes the socket and unlinks the path, once.
public final class VsockHostSocket {
    public let path: String
    let listener: FileDescriptor
    private var removed = false

    /// Binds and listens on `path`. A file already there is refused by name
    /// and left alone (kiln removes only what it made); a failure leaves
    /// nothing behind.
    public init(path: String) throws {
        var status = stat()
        if lstat(path, &status) == 0 {
            throw BootInputError.vsockPathTaken(path: path)
        }
        do {
            listener = try UnixSocket.listen(path: path, backlog: 64)
        } catch let error as SystemError {
            throw BootInputError.vsockListen(path: path, error)
        }
        self.path = path
    }

    /// Closes the socket and removes its file; later calls do nothing.
    public func remove() {
        guard !removed else { return }
        removed = true
        listener.close()
        unlink(path)
    }

    deinit { remove() }
}
