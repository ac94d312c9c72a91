/// The host side of the vsock device: one byte stream per connection key
/// (a Unix socket in the VMM). Every call returns at once; a stream that
/// cannot move bytes now says `.wouldBlock`, and the VMM tells the device
/// when it can (`VsockDevice.hostReady`).
public protocol VsockBackend: AnyObject {
    /// Opens the host stream for a guest REQUEST to `key.hostPort`; false
    /// when nobody listens there (the guest gets RST).
    func connect(_ key: VsockConnectionKey) -> Bool
    func read(_ key: VsockConnectionKey, into buffer: UnsafeMutableRawBufferPointer) -> VsockHostIO
    func write(_ key: VsockConnectionKey, _ bytes: UnsafeRawBufferPointer) -> VsockHostIO
    /// The guest sends no more: the host peer reads end of file.
    func shutdownWrite(_ key: VsockConnectionKey)
    /// The stream is over: release it.
    func close(_ key: VsockConnectionKey)
}

/// Where the device's counters go (the VMM's metrics registry).
public protocol VsockCounterSink: AnyObject {
    func add(_ counter: VsockCounter, _ value: UInt64)
}
