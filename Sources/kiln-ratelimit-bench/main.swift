import KilnMachine
import KilnMemory
import KilnSystem
import KilnVirtio

// kiln-ratelimit-bench: how close a rate-limited virtio-blk device runs to
// its configured rate, in one run per limiter.
//
//   kiln-ratelimit-bench [--seconds S] [--request-kib K] [--depth D]
//
// The lane-1 guest has no block tools, so this drives KilnVirtio's
// BlockDevice itself: a split queue in heap guest memory kept full of
// D read requests of K KiB, a sparse file behind FileBlockBackend (pread,
// so mostly page-cache copies), the monotonic clock, and KilnSystem's
// EventLoop with a one-shot timer to resume a throttled queue, as the VMM's
// ThrottleResumer does. It measures the device model and the limiter, not
// a guest's driver or the exits a real notification costs.
//
// Printed per limiter: bytes and requests moved, the measured rate, and
// its ratio to the configured rate, raw and after taking off what the full
// bucket (and burst) allowed at once.
#if canImport(Glibc)
    import Glibc
#endif

let arguments = Array(CommandLine.arguments.dropFirst())
func number(_ flag: String, default fallback: UInt64) -> UInt64 {
    guard let index = arguments.firstIndex(of: flag), index + 1 < arguments.count,
        let value = UInt64(arguments[index + 1])
    else { return fallback }
    return value
}
let seconds = number("--seconds", default: 3)
let requestBytes = number("--request-kib", default: 64) * 1024
let depth = Int(number("--depth", default: 16))
let queueSize: UInt16 = 256
precondition(
    depth * 3 <= Int(queueSize) && requestBytes > 0 && requestBytes % 512 == 0 && seconds > 0,
    "depth × 3 descriptors must fit the queue; requests are whole sectors")

/// The guest side: one read request per slot, three descriptors each
/// (header, data, status), re-offered as soon as it is used.
final class Driver {
    let memory: HeapGuestMemory
    let queue: Virtqueue
    let table: UInt64 = 0x1000, available: UInt64 = 0x2000, used: UInt64 = 0x3000
    let dataBase: UInt64 = 0x10_0000
    private var availableIndex: UInt16 = 0
    private var usedSeen: UInt16 = 0
    private(set) var bytes: UInt64 = 0
    private(set) var requests: UInt64 = 0

    init(diskSectors: UInt64) throws {
        memory = try HeapGuestMemory(size: dataBase + UInt64(depth) * requestBytes)
        let configuration = QueueConfiguration(
            size: queueSize, descriptorTable: table, availableRing: available,
            usedRing: used)
        queue = try Virtqueue(index: 0, configuration: configuration, memory: memory, features: 0)
        let sectorsPerRequest = requestBytes / 512
        for slot in 0..<depth {
            let header = 0x8000 + UInt64(slot) * 32
            let status = header + 16
            // VIRTIO_BLK_T_IN at a sector of its own, wrapped inside the disk.
            try memory.write(UInt32(0), at: header)
            try memory.write(UInt64(slot) * sectorsPerRequest % (diskSectors - sectorsPerRequest), at: header + 8)
            let data = dataBase + UInt64(slot) * requestBytes
            let first = UInt16(slot * 3)
            try describe(first, header, 16, flags: 1, next: first + 1)
            try describe(first + 1, data, UInt32(requestBytes), flags: 3, next: first + 2)
            try describe(first + 2, status, 1, flags: 2, next: 0)
            try offer(first)
        }
    }

    private func describe(_ index: UInt16, _ address: UInt64, _ length: UInt32, flags: UInt16, next: UInt16) throws {
        let entry = table + 16 * UInt64(index)
        try memory.write(address, at: entry)
        try memory.write(length, at: entry + 8)
        try memory.write(flags, at: entry + 12)
        try memory.write(next, at: entry + 14)
    }

    private func offer(_ head: UInt16) throws {
        try memory.write(UInt8(0xFF), at: 0x8000 + UInt64(head / 3) * 32 + 16)
        try memory.write(head, at: available + 4 + 2 * UInt64(availableIndex % queueSize))
        availableIndex &+= 1
        try memory.write(availableIndex, at: available + 2)
    }

    /// Counts what the device finished and offers it again.
    func recycle() throws {
        let usedIndex: UInt16 = try memory.read(at: used + 2)
        while usedSeen != usedIndex {
            let head = UInt16(
                truncatingIfNeeded: try memory.read(UInt32.self, at: used + 4 + 8 * UInt64(usedSeen % queueSize)))
            let status: UInt8 = try memory.read(at: 0x8000 + UInt64(head / 3) * 32 + 16)
            precondition(status == 0, "request failed with status \(status)")
            bytes += requestBytes
            requests += 1
            usedSeen &+= 1
            try offer(head)
        }
    }
}

struct Figures {
    let bytes: UInt64
    let requests: UInt64
    let nanoseconds: UInt64
    var bytesPerSecond: Double { Double(bytes) * 1e9 / Double(nanoseconds) }
    var requestsPerSecond: Double { Double(requests) * 1e9 / Double(nanoseconds) }
}

/// Serves the queue on an event loop for `seconds`: a notification eventfd
/// re-signalled while work remains, a one-shot timer while throttled.
func run(limiter: IORateLimiter?, backend: BlockBackend) throws -> Figures {
    let driver = try Driver(diskSectors: backend.sectorCount)
    let device = BlockDevice(
        memory: driver.memory, backend: backend,
        throttle: IOThrottle(limiter: limiter, clock: MonotonicClock.nanoseconds))
    let loop = try EventLoop()
    let notify = try EventFD()
    defer { notify.close() }
    var armed = false
    try loop.subscribe(notify.descriptor) { _ in
        _ = try? notify.drain()
        driver.queue.beginService(budget: 2 * Int(queueSize))
        do {
            try device.process(queue: 0, queues: [driver.queue])
            try driver.recycle()
        } catch {
            fatalError("block device failed: \(error)")
        }
        guard let until = device.throttledUntil(queue: 0) else {
            try? notify.signal()
            return
        }
        guard !armed else { return }
        armed = true
        let now = MonotonicClock.nanoseconds()
        let wait = until > now ? until - now : 0
        loop.schedule(afterMilliseconds: max(1, (wait + 999_999) / 1_000_000)) {
            armed = false
            try? notify.signal()
        }
    }
    let start = MonotonicClock.nanoseconds()
    let end = start + seconds * 1_000_000_000
    try notify.signal()
    while MonotonicClock.nanoseconds() < end { try loop.runOnce(maximumMilliseconds: 100) }
    return Figures(bytes: driver.bytes, requests: driver.requests, nanoseconds: MonotonicClock.nanoseconds() - start)
}

/// `value` with `decimals` fraction digits, rounded (no Foundation here).
func fixed(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    let digits = String(scaled)
    let padded = String(repeating: "0", count: max(0, decimals + 1 - digits.count)) + digits
    return decimals == 0 ? padded : "\(padded.dropLast(decimals)).\(padded.suffix(decimals))"
}
func mib(_ bytes: Double) -> String { fixed(bytes / 1_048_576, 1) }
func ratio(_ value: Double) -> String { fixed(value, 3) }

// A sparse disk: four times what the deepest queue reads at once.
let path = "/tmp/kiln-ratelimit-bench-\(getpid()).img"
let file = try FileDescriptor.open(path, O_RDWR | O_CREAT | O_TRUNC)
defer { file.close(); unlink(path) }
guard ftruncate(file.rawValue, off_t(UInt64(depth) * requestBytes * 4 + (64 << 20))) == 0 else {
    fatalError("ftruncate \(path) failed")
}
let backend = try FileBlockBackend(file: file, readOnly: true, identifier: "bench")

print(
    "host: \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs; \(seconds) s per run, \(requestBytes / 1024) KiB reads, queue depth \(depth)"
)
let free = try run(limiter: nil, backend: backend)
print("no limiter:  \(mib(free.bytesPerSecond)) MiB/s, \(Int(free.requestsPerSecond)) requests/s (the ceiling)")

let cases:
    [(name: String, bandwidth: IOTokenBucket.Settings?, ops: IOTokenBucket.Settings?, perSecond: Double, unit: String)] =
        [
            (
                "bandwidth 20 MiB/s (size 2 MiB, refill 100 ms)",
                IOTokenBucket.Settings(size: 2 << 20, refillTimeMilliseconds: 100), nil, Double(20 << 20), "bytes"
            ),
            (
                "bandwidth 8 MiB/s with a 16 MiB one_time_burst (size 8 MiB, refill 1000 ms)",
                IOTokenBucket.Settings(size: 8 << 20, oneTimeBurst: 16 << 20, refillTimeMilliseconds: 1000), nil,
                Double(8 << 20), "bytes"
            ),
            (
                "ops 500/s (size 50, refill 100 ms)",
                nil, IOTokenBucket.Settings(size: 50, refillTimeMilliseconds: 100), 500, "requests"
            ),
        ]
for limit in cases {
    let limiter = IORateLimiter(bandwidth: limit.bandwidth, ops: limit.ops, now: MonotonicClock.nanoseconds())
    let figures = try run(limiter: limiter, backend: backend)
    let bucket = limit.bandwidth ?? limit.ops!
    let upFront = Double(bucket.size + bucket.oneTimeBurst)
    let moved = Double(limit.unit == "bytes" ? figures.bytes : figures.requests)
    let elapsed = Double(figures.nanoseconds) / 1e9
    let measured = moved / elapsed
    let steady = (moved - upFront) / (limit.perSecond * elapsed)
    let shown = limit.unit == "bytes" ? "\(mib(measured)) MiB/s" : "\(Int(measured.rounded())) requests/s"
    print(
        "\(limit.name): \(shown); ratio to configured \(ratio(measured / limit.perSecond)), "
            + "without the initial bucket \(ratio(steady))")
}
