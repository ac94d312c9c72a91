// A small polling virtio-mmio driver for the test guest (virtio 1.2: §4.2
// MMIO transport version 2, §2.7 split virtqueues, §5.2 block, §5.1 net,
// §5.4 entropy). It finds devices on the command line, Linux's
// `virtio_mmio.device=<size>@<base>:<irq>`, identifies each by its
// registers, and prints every result as a `guest: ` line.
//
// No interrupts from the devices: the driver polls the used ring between
// the PIT's 1 ms ticks, so every wait is bounded in time.
//
// Queues and buffers live in guest RAM at 16-20 MiB (identity-mapped, above
// the guest image and below any initrd kiln places high): 512 KiB a device.

enum VirtioArea {
    static let start: UInt64 = 0x100_0000
    static let end: UInt64 = 0x140_0000
    static let slotSize: UInt = 0x8_0000
    static let slots = 8
}

/// §4.2.2, the MMIO register map.
enum Reg {
    static let magic: UInt = 0x000, version: UInt = 0x004, deviceID: UInt = 0x008
    static let deviceFeatures: UInt = 0x010, deviceFeaturesSel: UInt = 0x014
    static let driverFeatures: UInt = 0x020, driverFeaturesSel: UInt = 0x024
    static let queueSel: UInt = 0x030, queueNumMax: UInt = 0x034, queueNum: UInt = 0x038
    static let queueReady: UInt = 0x044, queueNotify: UInt = 0x050
    static let status: UInt = 0x070
    static let queueDescLow: UInt = 0x080, queueDescHigh: UInt = 0x084
    static let queueDriverLow: UInt = 0x090, queueDriverHigh: UInt = 0x094
    static let queueDeviceLow: UInt = 0x0a0, queueDeviceHigh: UInt = 0x0a4
    static let config: UInt = 0x100
}

/// §2.1 device status bits.
enum Status {
    static let acknowledge: UInt32 = 1, driver: UInt32 = 2, driverOK: UInt32 = 4
    static let featuresOK: UInt32 = 8, failed: UInt32 = 128
}

let featureVersion1: UInt64 = 1 << 32 // §6
let descriptorNext: UInt16 = 1, descriptorWrite: UInt16 = 2 // §2.7.5
let timedOut: UInt32 = 0xffff_ffff

// Plain RAM accesses for buffers; ordering against the device comes from
// the opaque calls (write16 of the avail index, write32 of QueueNotify).
func poke8(_ address: UInt, _ value: UInt8) { UnsafeMutablePointer<UInt8>(bitPattern: address)!.pointee = value }
func peek8(_ address: UInt) -> UInt8 { UnsafeMutablePointer<UInt8>(bitPattern: address)!.pointee }
func poke16(_ address: UInt, _ value: UInt16) { UnsafeMutableRawPointer(bitPattern: address)!.storeBytes(of: value, as: UInt16.self) }
func poke32(_ address: UInt, _ value: UInt32) { UnsafeMutableRawPointer(bitPattern: address)!.storeBytes(of: value, as: UInt32.self) }
func poke64(_ address: UInt, _ value: UInt64) { UnsafeMutableRawPointer(bitPattern: address)!.storeBytes(of: value, as: UInt64.self) }
func zero(_ address: UInt, _ count: UInt) {
    var index: UInt = 0
    while index + 8 <= count { poke64(address + index, 0); index += 8 }
    while index < count { poke8(address + index, 0); index += 1 }
}
/// Network byte order (big-endian) 16-bit fields.
func peekBE16(_ address: UInt) -> UInt16 { UInt16(peek8(address)) << 8 | UInt16(peek8(address + 1)) }
func pokeBE16(_ address: UInt, _ value: UInt16) { poke8(address, UInt8(value >> 8)); poke8(address + 1, UInt8(value & 0xff)) }

func putHexByte(_ byte: UInt8) {
    let high = byte >> 4, low = byte & 0xf
    putByte(high < 10 ? 0x30 + high : 0x57 + high)
    putByte(low < 10 ? 0x30 + low : 0x57 + low)
}

func putDecimal64(_ value: UInt64) {
    if value >= 10 { putDecimal64(value / 10) }
    putByte(0x30 + UInt8(value % 10))
}

func putHexBytes(_ address: UInt, _ count: UInt) {
    var index: UInt = 0
    while index < count { putHexByte(peek8(address + index)); index += 1 }
}

// MARK: The command line

let deviceArgument: StaticString = "virtio_mmio.device="

func matches(_ line: UnsafePointer<UInt8>, at index: Int, _ prefix: StaticString) -> Bool {
    let target = prefix.utf8Start
    for offset in 0..<prefix.utf8CodeUnitCount where line[index + offset] != target[offset] { return false }
    return true
}

func hasVirtioDevices(_ line: UnsafePointer<UInt8>) -> Bool {
    var index = 0
    while line[index] != 0 && index < 2048 {
        if (index == 0 || line[index - 1] == 0x20) && matches(line, at: index, deviceArgument) { return true }
        index += 1
    }
    return false
}

/// A number as Linux's memparse reads it: decimal, or hex after "0x", with
/// an optional K/M/G suffix. Returns nil when no digit is there.
func parseNumber(_ line: UnsafePointer<UInt8>, _ index: inout Int) -> UInt64? {
    var value: UInt64 = 0
    var digits = 0
    var hex = false
    if line[index] == 0x30 && (line[index + 1] == 0x78 || line[index + 1] == 0x58) { hex = true; index += 2 }
    while true {
        let c = line[index]
        var digit: UInt64
        if c >= 0x30 && c <= 0x39 { digit = UInt64(c - 0x30) }
        else if hex && c >= 0x61 && c <= 0x66 { digit = UInt64(c - 0x61 + 10) }
        else if hex && c >= 0x41 && c <= 0x46 { digit = UInt64(c - 0x41 + 10) }
        else { break }
        value = value &* (hex ? 16 : 10) &+ digit
        digits += 1
        index += 1
    }
    if digits == 0 { return nil }
    switch line[index] {
    case 0x4b, 0x6b: value <<= 10; index += 1 // K
    case 0x4d, 0x6d: value <<= 20; index += 1 // M
    case 0x47, 0x67: value <<= 30; index += 1 // G
    default: break
    }
    return value
}

/// Walks every `virtio_mmio.device=` argument and probes its device.
func probeVirtioDevices(_ line: UnsafePointer<UInt8>) {
    virtioCommandLine = line
    var index = 0
    var slot = 0
    let hostile = Hostile.parse(line)
    var attacked: (base: UInt, memory: UInt)?
    while line[index] != 0 && index < 2048 {
        if (index == 0 || line[index - 1] == 0x20) && matches(line, at: index, deviceArgument) {
            var cursor = index + deviceArgument.utf8CodeUnitCount
            let size = parseNumber(line, &cursor)
            var base: UInt64?
            var irq: UInt64?
            if line[cursor] == 0x40 { cursor += 1; base = parseNumber(line, &cursor) }   // "@"
            if base != nil && line[cursor] == 0x3a { cursor += 1; irq = parseNumber(line, &cursor) } // ":"
            if let size, let base, let irq, size >= 0x100 + 8, base < 0x1_0000_0000 {
                put("guest: virtio-mmio "); putHex(base); put(" size "); putDecimal64(size)
                put(" irq "); putDecimal64(irq); put("\n")
                let memory = UInt(VirtioArea.start) + UInt(slot) * VirtioArea.slotSize
                if slot < VirtioArea.slots, let hostile, attacked == nil, isBlock(UInt(base)) {
                    zero(memory, VirtioArea.slotSize)
                    attack(hostile, UInt(base), memory: memory)
                    attacked = (UInt(base), memory)
                } else if slot < VirtioArea.slots {
                    probe(UInt(base), memory: memory)
                } else {
                    put("guest: virtio: too many devices\n")
                }
                slot += 1
            } else {
                put("guest: virtio: bad device argument\n")
            }
            index = cursor
            continue
        }
        index += 1
    }
    if let hostile, let attacked {
        // §2.1.2: reset, then initialise again, whatever the attack left.
        put("guest: hostile "); put(hostile.name); put(" again virtio@"); putHex(UInt64(attacked.base)); put("\n")
        probe(attacked.base, memory: attacked.memory)
    }
}

/// A virtio-mmio version 2 block device answers at `base`.
func isBlock(_ base: UInt) -> Bool {
    read32(base + Reg.magic) == 0x7472_6976 && read32(base + Reg.version) == 2 && read32(base + Reg.deviceID) == 2
}

// MARK: Device initialization (§3.1.1, §4.2.3)

func probe(_ base: UInt, memory: UInt) {
    zero(memory, VirtioArea.slotSize)
    let magic = read32(base + Reg.magic)
    let version = read32(base + Reg.version)
    let id = read32(base + Reg.deviceID)
    if magic != 0x7472_6976 {
        put("guest: virtio@"); putHex(UInt64(base)); put(" bad magic "); putHex(UInt64(magic)); put("\n")
        return
    }
    if version != 2 {
        put("guest: virtio@"); putHex(UInt64(base)); put(" version "); putDecimal(version); put(" unsupported\n")
        return
    }
    switch id {
    case 2: runBlock(base, memory: memory)
    case 1: runNet(base, memory: memory)
    case 4: runEntropy(base, memory: memory)
    case VsockWire.deviceID: runVsock(base, memory: memory)
    default:
        put("guest: virtio@"); putHex(UInt64(base)); put(" device "); putDecimal(id); put(" ignored\n")
    }
}

/// Reset, ACKNOWLEDGE, DRIVER, feature negotiation up to FEATURES_OK
/// (§3.1.1 steps 1-6). Returns the accepted features, or nil after FAILED.
func negotiate(_ base: UInt, wanted: UInt64) -> UInt64? {
    write32(base + Reg.status, 0)
    // §4.2.3.1: the reset is done when Status reads 0 again.
    var spins = 0
    while read32(base + Reg.status) != 0 {
        spins += 1
        if spins == 100_000 {
            put("guest: virtio@"); putHex(UInt64(base)); put(" did not reset\n")
            return nil
        }
    }
    write32(base + Reg.status, Status.acknowledge)
    write32(base + Reg.status, Status.acknowledge | Status.driver)
    write32(base + Reg.deviceFeaturesSel, 0)
    let low = read32(base + Reg.deviceFeatures)
    write32(base + Reg.deviceFeaturesSel, 1)
    let high = read32(base + Reg.deviceFeatures)
    let offered = UInt64(high) << 32 | UInt64(low)
    if offered & featureVersion1 == 0 {
        put("guest: virtio@"); putHex(UInt64(base)); put(" offers no VERSION_1\n")
        write32(base + Reg.status, Status.failed)
        return nil
    }
    let accepted = offered & (wanted | featureVersion1)
    write32(base + Reg.driverFeaturesSel, 0)
    write32(base + Reg.driverFeatures, UInt32(truncatingIfNeeded: accepted))
    write32(base + Reg.driverFeaturesSel, 1)
    write32(base + Reg.driverFeatures, UInt32(truncatingIfNeeded: accepted >> 32))
    write32(base + Reg.status, Status.acknowledge | Status.driver | Status.featuresOK)
    // §3.1.1 step 6: the device may refuse the subset.
    if read32(base + Reg.status) & Status.featuresOK == 0 {
        put("guest: virtio@"); putHex(UInt64(base)); put(" refused FEATURES_OK\n")
        write32(base + Reg.status, Status.failed)
        return nil
    }
    return accepted
}

func driverOK(_ base: UInt) {
    write32(base + Reg.status, Status.acknowledge | Status.driver | Status.featuresOK | Status.driverOK)
}

/// One split virtqueue (§2.7): descriptor table, driver (avail) and device
/// (used) areas in three pages at `memory`.
struct Queue {
    let device: UInt
    let index: UInt32
    let memory: UInt
    let size: UInt16
    var published: UInt16 = 0
    var consumed: UInt16 = 0

    var descriptors: UInt { memory }
    var driverArea: UInt { memory + 0x1000 }
    var deviceArea: UInt { memory + 0x2000 }

    /// §4.2.3.2: select, check it is unused, size (at most `limit`, a
    /// power of 2), addresses, ready.
    init?(device: UInt, index: UInt32, memory: UInt, limit: UInt32 = 8) {
        write32(device + Reg.queueSel, index)
        let maximum = read32(device + Reg.queueNumMax)
        if maximum == 0 || read32(device + Reg.queueReady) != 0 { return nil }
        self.device = device
        self.index = index
        self.memory = memory
        self.size = UInt16(min(maximum, limit))
        placeQueue(device, size: UInt32(size), descriptors: memory, driverArea: memory + 0x1000,
                   deviceArea: memory + 0x2000)
        // §2.7.7: VIRTQ_AVAIL_F_NO_INTERRUPT, as this driver polls.
        poke16(memory + 0x1000, 1)
        write32(device + Reg.queueReady, 1)
    }

    /// §2.7.5: addr u64, len u32, flags u16, next u16.
    func describe(_ slot: UInt16, address: UInt, length: UInt32, flags: UInt16, next: UInt16 = 0) {
        let entry = descriptors + UInt(slot) * 16
        poke64(entry, UInt64(address))
        poke32(entry + 8, length)
        poke16(entry + 12, flags)
        poke16(entry + 14, next)
    }

    /// §2.7.13: ring entry, then the index, then the notification.
    mutating func make(available head: UInt16, notify: Bool = true) {
        poke16(driverArea + 4 + UInt(published % size) * 2, head)
        published &+= 1
        write16(driverArea + 2, published)
        if notify { write32(device + Reg.queueNotify, index) }
    }

    /// The next used element (§2.7.8) if the device has returned one.
    mutating func takeUsed() -> (id: UInt32, length: UInt32)? {
        if read16(deviceArea + 2) == consumed { return nil }
        let element = deviceArea + 4 + UInt(consumed % size) * 8
        consumed &+= 1
        return (read32(element), read32(element + 4))
    }

    /// Polls for the next used element for up to `ticks` ms; the length
    /// written, or `timedOut`.
    mutating func waitUsed(ticks: UInt32 = 2000) -> UInt32 {
        let deadline = timerTicks() &+ ticks
        while true {
            if let used = takeUsed() { return used.length }
            if timerTicks() >= deadline { return timedOut }
            waitForInterrupt()
        }
    }
}

/// QueueNum and the three areas of the selected queue (§4.2.3.2), below 4 GiB.
func placeQueue(_ device: UInt, size: UInt32, descriptors: UInt, driverArea: UInt, deviceArea: UInt) {
    write32(device + Reg.queueNum, size)
    write32(device + Reg.queueDescLow, UInt32(truncatingIfNeeded: descriptors))
    write32(device + Reg.queueDescHigh, 0)
    write32(device + Reg.queueDriverLow, UInt32(truncatingIfNeeded: driverArea))
    write32(device + Reg.queueDriverHigh, 0)
    write32(device + Reg.queueDeviceLow, UInt32(truncatingIfNeeded: deviceArea))
    write32(device + Reg.queueDeviceHigh, 0)
}

func queueFailed(_ base: UInt, _ index: UInt32) {
    put("guest: virtio@"); putHex(UInt64(base)); put(" queue "); putDecimal(index); put(" unavailable\n")
    write32(base + Reg.status, Status.failed)
}

// MARK: Block (§5.2)

enum Block {
    static let featureReadOnly: UInt64 = 1 << 5
    static let featureFlush: UInt64 = 1 << 9
    static let typeIn: UInt32 = 0, typeOut: UInt32 = 1, typeFlush: UInt32 = 4, typeGetID: UInt32 = 8
    /// Sectors 1-8, the region the write test owns.
    static let testSector: UInt64 = 1
    static let testBytes: UInt = 4096
    /// The byte the guest writes at `offset` into the test region; the host
    /// test computes the same.
    static func pattern(_ offset: UInt) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 13 &+ 5) }
}

/// One request (§5.2.6): header, optional data, status byte. Returns the
/// status byte, or `timedOut`.
func blockRequest(_ queue: inout Queue, buffers: UInt, type: UInt32, sector: UInt64,
                  data: UInt, length: UInt32, deviceWrites: Bool) -> UInt32 {
    let header = buffers, status = buffers + 0x10
    poke32(header, type)
    poke32(header + 4, 0)
    poke64(header + 8, sector)
    poke8(status, 0xff)
    queue.describe(0, address: header, length: 16, flags: descriptorNext, next: 1)
    if length > 0 {
        queue.describe(1, address: data, length: length,
                       flags: descriptorNext | (deviceWrites ? descriptorWrite : 0), next: 2)
        queue.describe(2, address: status, length: 1, flags: descriptorWrite)
    } else {
        queue.describe(1, address: status, length: 1, flags: descriptorWrite)
    }
    queue.make(available: 0)
    if queue.waitUsed() == timedOut { return timedOut }
    return UInt32(peek8(status))
}

/// A drive whose first sector starts with this keeps the guest running as
/// `ctrlaltdel ticks` does: for clients that build their own command line
/// (the third-party client suite), the disk image is what the test controls.
let keepRunningMark: StaticString = "kiln-guest:ticks"
nonisolated(unsafe) var driveAsksToKeepRunning = false

func sectorStartsWith(_ data: UInt, _ mark: StaticString) -> Bool {
    let bytes = mark.utf8Start
    for index in 0..<mark.utf8CodeUnitCount where peek8(data + UInt(index)) != bytes[index] { return false }
    return true
}

func putStatusFailure(_ what: StaticString, _ status: UInt32) {
    put("guest: blk "); put(what)
    if status == timedOut { put(" timed out\n") } else { put(" failed status "); putDecimal(status); put("\n") }
}

func runBlock(_ base: UInt, memory: UInt) {
    guard let features = negotiate(base, wanted: Block.featureReadOnly | Block.featureFlush) else { return }
    guard var queue = Queue(device: base, index: 0, memory: memory) else { return queueFailed(base, 0) }
    driverOK(base)
    let readOnly = features & Block.featureReadOnly != 0
    // §5.2.4: capacity, a u64 at config offset 0, read as two 32-bit halves.
    let capacity = UInt64(read32(base + Reg.config + 4)) << 32 | UInt64(read32(base + Reg.config))
    put("guest: virtio-blk@"); putHex(UInt64(base)); put(" capacity "); putDecimal64(capacity)
    put(" sectors ro="); putByte(readOnly ? 0x31 : 0x30); put("\n")

    let buffers = memory + 0x1_0000
    let data = memory + 0x2_0000
    let readBack = memory + 0x3_0000

    // GET_ID: up to 20 bytes, NUL-padded when shorter (§5.2.6).
    zero(data, 32)
    var status = blockRequest(&queue, buffers: buffers, type: Block.typeGetID, sector: 0, data: data, length: 20,
                              deviceWrites: true)
    if status == 0 {
        put("guest: blk id ")
        var index: UInt = 0
        while index < 20 {
            let byte = peek8(data + index)
            if byte == 0 { break }
            putByte(byte >= 0x20 && byte < 0x7f ? byte : 0x3f)
            index += 1
        }
        put("\n")
    } else {
        putStatusFailure("get-id", status)
    }

    status = blockRequest(&queue, buffers: buffers, type: Block.typeIn, sector: 0, data: data, length: 512,
                          deviceWrites: true)
    if status != 0 { return putStatusFailure("read", status) }
    put("guest: blk sector0 "); putHexBytes(data, 16); put("\n")
    if sectorStartsWith(data, keepRunningMark) {
        driveAsksToKeepRunning = true
        put("guest: blk asks to keep running\n")
    }

    if capacity < Block.testSector + UInt64(Block.testBytes / 512) {
        put("guest: blk too small for the write test\n")
        return
    }
    var offset: UInt = 0
    while offset < Block.testBytes { poke8(data + offset, Block.pattern(offset)); offset += 1 }
    status = blockRequest(&queue, buffers: buffers, type: Block.typeOut, sector: Block.testSector, data: data,
                          length: UInt32(Block.testBytes), deviceWrites: false)
    if readOnly {
        // §5.2.6.2: a read-only device fails writes with VIRTIO_BLK_S_IOERR.
        if status == 0 { put("guest: blk write accepted on a read-only drive\n") }
        else if status == timedOut { putStatusFailure("write", status) }
        else { put("guest: blk write refused status "); putDecimal(status); put("\n") }
        return
    }
    if status != 0 { return putStatusFailure("write", status) }
    if features & Block.featureFlush != 0 {
        status = blockRequest(&queue, buffers: buffers, type: Block.typeFlush, sector: 0, data: 0, length: 0,
                              deviceWrites: false)
        if status != 0 { return putStatusFailure("flush", status) }
    }
    zero(readBack, Block.testBytes)
    status = blockRequest(&queue, buffers: buffers, type: Block.typeIn, sector: Block.testSector, data: readBack,
                          length: UInt32(Block.testBytes), deviceWrites: true)
    if status != 0 { return putStatusFailure("read-back", status) }
    offset = 0
    while offset < Block.testBytes && peek8(readBack + offset) == Block.pattern(offset) { offset += 1 }
    put(offset == Block.testBytes ? "guest: blk write ok\n" : "guest: blk write mismatch\n")
}

// MARK: Entropy (§5.4)

func runEntropy(_ base: UInt, memory: UInt) {
    guard negotiate(base, wanted: 0) != nil else { return }
    guard var queue = Queue(device: base, index: 0, memory: memory) else { return queueFailed(base, 0) }
    driverOK(base)
    put("guest: virtio-rng@"); putHex(UInt64(base)); put("\n")
    let buffer = memory + 0x1_0000
    // The device may fill less than asked (§5.4.6); ask again for the rest.
    var filled: UInt32 = 0
    var requests = 0
    while filled < 32 && requests < 8 {
        queue.describe(0, address: buffer + UInt(filled), length: 32 - filled, flags: descriptorWrite)
        queue.make(available: 0)
        let length = queue.waitUsed()
        if length == timedOut { put("guest: rng timed out\n"); return }
        filled += min(length, 32 - filled)
        requests += 1
    }
    if filled < 32 { put("guest: rng short read\n"); return }
    put("guest: rng "); putHexBytes(buffer, 32); put("\n")
    var index: UInt = 0
    while index < 32 && peek8(buffer + index) == 0 { index += 1 }
    if index == 32 { put("guest: rng all zero\n") }
}

// MARK: Net (§5.1)

enum Net {
    static let featureMAC: UInt64 = 1 << 5
    /// virtio_net_hdr with VERSION_1 and without MRG_RXBUF: 12 bytes (§5.1.6).
    static let headerSize: UInt = 12
    static let bufferSize: UInt = 2048
    static let echoPort: UInt16 = 7
    static let helloPort: UInt16 = 7777
    static let listenTicks: UInt32 = 5000
}

/// The IPv4 header checksum (RFC 791): ones' complement of the ones'
/// complement sum of the header's 16-bit words.
func ipChecksum(_ header: UInt, _ length: UInt) -> UInt16 {
    var sum: UInt32 = 0
    var index: UInt = 0
    while index < length { sum += UInt32(peekBE16(header + index)); index += 2 }
    while sum > 0xffff { sum = (sum & 0xffff) + (sum >> 16) }
    return ~UInt16(sum)
}

func copyBytes(_ to: UInt, _ from: UInt, _ count: UInt) {
    var index: UInt = 0
    while index < count { poke8(to + index, peek8(from + index)); index += 1 }
}

/// Sends one frame from `frame` (the header goes right before it) and waits
/// for the device to return the buffer.
func transmit(_ queue: inout Queue, frame: UInt, length: UInt) -> Bool {
    zero(frame - Net.headerSize, Net.headerSize)
    queue.describe(0, address: frame - Net.headerSize, length: UInt32(Net.headerSize + length), flags: 0)
    queue.make(available: 0)
    return queue.waitUsed() != timedOut
}

func runNet(_ base: UInt, memory: UInt) {
    guard let features = negotiate(base, wanted: Net.featureMAC) else { return }
    guard var receive = Queue(device: base, index: 0, memory: memory) else { return queueFailed(base, 0) }
    guard var send = Queue(device: base, index: 1, memory: memory + 0x4000) else { return queueFailed(base, 1) }
    driverOK(base)

    let mac = memory + 0x1_0000
    if features & Net.featureMAC != 0 {
        // §5.1.4: mac[6] at config offset 0, read a byte at a time.
        for index in 0..<6 { poke8(mac + UInt(index), read8(base + Reg.config + UInt(index))) }
    } else {
        for index in 0..<6 { poke8(mac + UInt(index), index == 0 ? 0x02 : UInt8(index)) }
    }
    put("guest: virtio-net@"); putHex(UInt64(base)); put(" mac ")
    for index in 0..<6 {
        if index > 0 { put(":") }
        putHexByte(peek8(mac + UInt(index)))
    }
    put("\n")

    // §5.1.6.3: every receive descriptor a whole device-writable buffer.
    let receiveBuffers = memory + 0x2_0000
    for slot in 0..<receive.size {
        receive.describe(slot, address: receiveBuffers + UInt(slot) * Net.bufferSize, length: UInt32(Net.bufferSize),
                         flags: descriptorWrite)
        receive.make(available: slot, notify: slot == receive.size - 1)
    }

    // The hello: broadcast Ethernet, IPv4 10.0.0.2 -> 10.0.0.1, UDP 7777 -> 7777.
    let frame = memory + 0x1_1000 + Net.headerSize
    for index in 0..<6 { poke8(frame + UInt(index), 0xff) }
    copyBytes(frame + 6, mac, 6)
    pokeBE16(frame + 12, 0x0800)
    let payload: StaticString = "kiln-guest-hello"
    let payloadLength = UInt(payload.utf8CodeUnitCount)
    let ip = frame + 14
    zero(ip, 28)
    poke8(ip, 0x45)
    pokeBE16(ip + 2, UInt16(20 + 8 + payloadLength))
    poke8(ip + 8, 64)   // TTL
    poke8(ip + 9, 17)   // UDP
    poke8(ip + 12, 10); poke8(ip + 13, 0); poke8(ip + 14, 0); poke8(ip + 15, 2)
    poke8(ip + 16, 10); poke8(ip + 17, 0); poke8(ip + 18, 0); poke8(ip + 19, 1)
    pokeBE16(ip + 10, ipChecksum(ip, 20))
    let udp = ip + 20
    pokeBE16(udp, Net.helloPort)
    pokeBE16(udp + 2, Net.helloPort)
    pokeBE16(udp + 4, UInt16(8 + payloadLength))
    for index in 0..<payload.utf8CodeUnitCount { poke8(udp + 8 + UInt(index), payload.utf8Start[index]) }
    if transmit(&send, frame: frame, length: 14 + 28 + payloadLength) {
        put("guest: net sent hello\n")
    } else {
        put("guest: net send timed out\n")
        return
    }

    // Echo UDP to port 7 for up to 5 s, or 1 s after the last echo.
    var deadline = timerTicks() &+ Net.listenTicks
    while timerTicks() < deadline {
        guard let used = receive.takeUsed() else { waitForInterrupt(); continue }
        if used.id >= UInt32(receive.size) {
            put("guest: net bad used id "); putDecimal(used.id); put("\n")
            break
        }
        let slot = UInt16(used.id)
        let buffer = receiveBuffers + UInt(slot) * Net.bufferSize
        let received = UInt(used.length)
        if received > Net.headerSize + 14 + 28 && received <= Net.bufferSize,
           let length = echo(buffer + Net.headerSize, received - Net.headerSize, mac: mac,
                             into: memory + 0x1_1000 + Net.headerSize) {
            let reply = memory + 0x1_1000 + Net.headerSize
            if transmit(&send, frame: reply, length: length) {
                // N is the UDP payload: the UDP length field less its header.
                let udp = reply + 14 + UInt(peek8(reply + 14) & 0xf) * 4
                put("guest: net echoed "); putDecimal(UInt32(peekBE16(udp + 4)) - 8); put(" bytes\n")
            } else {
                put("guest: net send timed out\n")
            }
            deadline = min(deadline, timerTicks() &+ 1000)
        }
        receive.make(available: slot) // give the buffer back
    }
    put("guest: net done\n")
}

/// Builds the echo of a UDP datagram to port 7 in `reply`: MACs, IPv4
/// addresses and ports swapped, IPv4 checksum recomputed, UDP checksum 0
/// (RFC 768: none). Returns the reply's length, or nil for other frames.
func echo(_ frame: UInt, _ length: UInt, mac: UInt, into reply: UInt) -> UInt? {
    if peekBE16(frame + 12) != 0x0800 { return nil }
    let ip = frame + 14
    let headerLength = UInt(peek8(ip) & 0xf) * 4
    if peek8(ip) >> 4 != 4 || headerLength < 20 || peek8(ip + 9) != 17 { return nil }
    let total = UInt(peekBE16(ip + 2))
    if total < headerLength + 8 || 14 + total > length { return nil }
    let udp = ip + headerLength
    if peekBE16(udp + 2) != Net.echoPort { return nil }
    copyBytes(reply, frame, 14 + total)
    copyBytes(reply, frame + 6, 6)
    copyBytes(reply + 6, mac, 6)
    let replyIP = reply + 14
    copyBytes(replyIP + 12, ip + 16, 4)
    copyBytes(replyIP + 16, ip + 12, 4)
    pokeBE16(replyIP + 10, 0)
    pokeBE16(replyIP + 10, ipChecksum(replyIP, headerLength))
    let replyUDP = replyIP + headerLength
    pokeBE16(replyUDP, peekBE16(udp + 2))
    pokeBE16(replyUDP + 2, peekBE16(udp))
    pokeBE16(replyUDP + 6, 0)
    return 14 + total
}
