import KilnMemory

/// A position in a list of checked guest buffers, handing out host spans.
/// Shared by the reader and the writer below.
struct BufferCursor {
    let memory: GuestMemory
    let buffers: [GuestBuffer]
    private var bufferIndex = 0
    private var offsetInBuffer: UInt32 = 0
    private(set) var remaining: UInt64

    init(memory: GuestMemory, buffers: [GuestBuffer], total: UInt64) {
        self.memory = memory
        self.buffers = buffers
        self.remaining = total
    }

    /// Moves `count` bytes on, passing each host span to `body` (or, with
    /// `visit` false, without touching memory). `count` must be <= remaining.
    mutating func advance(
        _ count: Int, visit: Bool = true,
        _ body: (UnsafeMutableRawBufferPointer) throws -> Void
    ) throws {
        precondition(count >= 0 && UInt64(count) <= remaining, "caller checks the length")
        var left = count
        while left > 0 {
            let buffer = buffers[bufferIndex]
            let take = min(left, Int(buffer.length - offsetInBuffer))
            if take > 0, visit {
                // Buffers were checked when the chain was walked; the memory
                // accessor checks again, cheaply, rather than trust that.
                try body(memory.hostBuffer(at: buffer.address + UInt64(offsetInBuffer), length: take))
            }
            offsetInBuffer += UInt32(take)
            remaining -= UInt64(take)
            left -= take
            if offsetInBuffer == buffer.length {
                bufferIndex += 1
                offsetInBuffer = 0
            }
        }
    }
}

/// Sequential reads across a chain's device-readable buffers, however the
/// driver split them (virtio 1.2 §2.7.4 "Message Framing": the device must
/// not assume any particular arrangement of descriptors).
public struct ChainReader {
    private var cursor: BufferCursor
    public var remaining: UInt64 { cursor.remaining }

    public init(memory: GuestMemory, chain: DescriptorChain) {
        cursor = BufferCursor(memory: memory, buffers: chain.readable, total: chain.readableLength)
    }

    /// Exactly `count` bytes, or nil (and nothing consumed) if fewer remain.
    public mutating func read(_ count: Int) throws -> [UInt8]? {
        guard count >= 0, UInt64(count) <= remaining else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        try cursor.advance(count) { span in bytes.append(contentsOf: UnsafeRawBufferPointer(span)) }
        return bytes
    }

    /// Hands the next `count` bytes to `body` as host spans of guest memory,
    /// without copying (a backend's pwrite). `count` must be <= remaining.
    public mutating func forEachSpan(_ count: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try cursor.advance(count) { try body(UnsafeRawBufferPointer($0)) }
    }
}

/// Sequential writes across a chain's device-writable buffers, counting the
/// bytes written for the used element's `len` (§2.7.8).
public struct ChainWriter {
    private var cursor: BufferCursor
    public private(set) var written: UInt32 = 0
    public var remaining: UInt64 { cursor.remaining }

    public init(memory: GuestMemory, chain: DescriptorChain) {
        cursor = BufferCursor(memory: memory, buffers: chain.writable, total: chain.writableLength)
    }

    /// Writes all of `bytes`, or nothing if they do not fit.
    @discardableResult
    public mutating func write(_ bytes: [UInt8]) throws -> Bool {
        guard UInt64(bytes.count) <= remaining else { return false }
        var offset = 0
        try forEachSpan(bytes.count) { span in
            bytes.withUnsafeBytes { source in
                span.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[offset..<offset + span.count]))
            }
            offset += span.count
        }
        return true
    }

    /// Hands the next `count` writable bytes to `body` as host spans of guest
    /// memory (a backend's pread); they count as written.
    public mutating func forEachSpan(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        try cursor.advance(count) { span in
            try body(span)
            // Saturates: a used element's len is 32 bits (§2.7.8).
            written = UInt32(clamping: UInt64(written) + UInt64(span.count))
        }
    }

    /// Moves past `count` bytes without writing them.
    public mutating func skip(_ count: Int) throws {
        try cursor.advance(count, visit: false) { _ in }
    }
}
