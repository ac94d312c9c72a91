// Hostile mode: with `hostile=<case>` on the command line the driver breaks
// one rule of virtio 1.2 on the first block device it finds, then prints
// that device's Status and InterruptStatus registers. The other devices are
// then driven as usual, and the attacked one is reset and driven again
// (§2.1.2: a driver answers DEVICE_NEEDS_RESET with a reset), so a test
// sees that the VMM failed that device only.
//
// Every attack is bounded in time: the guest never waits on the device for
// more than a few seconds, whatever the device does.

enum Hostile: UInt8 {
    case loop, outsideRAM, mmioHole, wrap, zeroLength, availAhead, overlap, nestedIndirect
    case notifyStorm, garbageRegisters, noAck, driverOKEarly, resetDuringIO

    static let count: UInt8 = 13

    var name: StaticString {
        switch self {
        case .loop: return "loop"
        case .outsideRAM: return "outside-ram"
        case .mmioHole: return "mmio-hole"
        case .wrap: return "wrap"
        case .zeroLength: return "zero-length"
        case .availAhead: return "avail-ahead"
        case .overlap: return "overlap"
        case .nestedIndirect: return "nested-indirect"
        case .notifyStorm: return "notify-storm"
        case .garbageRegisters: return "garbage-registers"
        case .noAck: return "no-ack"
        case .driverOKEarly: return "driver-ok-early"
        case .resetDuringIO: return "reset-during-io"
        }
    }

    /// The case a `hostile=<name>` word names, if any.
    static func parse(_ line: UnsafePointer<UInt8>) -> Hostile? {
        let prefix: StaticString = "hostile="
        var index = 0
        while line[index] != 0 && index < 2048 {
            if (index == 0 || line[index - 1] == 0x20) && matches(line, at: index, prefix) {
                let start = index + prefix.utf8CodeUnitCount
                var raw: UInt8 = 0
                while raw < count {
                    let attack = Hostile(rawValue: raw)!
                    let name = attack.name
                    let end = line[start + name.utf8CodeUnitCount]
                    if matchesWord(line, at: start, name) && (end == 0 || end == 0x20) { return attack }
                    raw += 1
                }
                put("guest: hostile: unknown case\n")
                return nil
            }
            index += 1
        }
        return nil
    }
}

/// `matches`, but stopping at the end of the line.
func matchesWord(_ line: UnsafePointer<UInt8>, at index: Int, _ word: StaticString) -> Bool {
    let target = word.utf8Start
    for offset in 0..<word.utf8CodeUnitCount where line[index + offset] != target[offset] { return false }
    return true
}

enum HostileReg {
    static let interruptStatus: UInt = 0x060, interruptACK: UInt = 0x064
    static let needsReset: UInt32 = 0x40
}

let featureIndirect: UInt64 = 1 << 28 // VIRTIO_F_INDIRECT_DESC (§6)
let descriptorIndirect: UInt16 = 4    // §2.7.5.3

/// One 16-byte descriptor anywhere in memory (§2.7.5).
func writeDescriptor(_ table: UInt, _ slot: UInt, address: UInt, length: UInt32, flags: UInt16, next: UInt16 = 0) {
    let entry = table + slot * 16
    poke64(entry, UInt64(address))
    poke32(entry + 8, length)
    poke16(entry + 12, flags)
    poke16(entry + 14, next)
}

func putHostile(_ attack: Hostile, _ what: StaticString) {
    put("guest: hostile "); put(attack.name); put(" "); put(what)
}

/// Attacks the block device at `base`, whose queue and buffers live at `memory`.
func attack(_ attack: Hostile, _ base: UInt, memory: UInt) {
    putHostile(attack, "on virtio-blk@"); putHex(UInt64(base)); put("\n")
    switch attack {
    case .driverOKEarly: driverOKWithoutFeaturesOK(base, memory: memory)
    case .overlap: overlappingRings(base, memory: memory)
    case .resetDuringIO: resetDuringIO(base, memory: memory)
    default:
        guard negotiate(base, wanted: attack == .nestedIndirect ? featureIndirect : 0) != nil,
              var queue = Queue(device: base, index: 0, memory: memory) else {
            putHostile(attack, "set-up failed\n")
            return
        }
        driverOK(base)
        switch attack {
        case .notifyStorm: notifyStorm(&queue, base, memory: memory)
        case .garbageRegisters: garbageRegisters(&queue, base, memory: memory)
        case .noAck: noAcknowledgement(&queue, base, memory: memory)
        default: brokenChain(attack, &queue, base, memory: memory)
        }
    }
    putHostile(attack, "status "); putHex(UInt64(read32(base + Reg.status))); put("\n")
    putHostile(attack, "interrupt status "); putHex(UInt64(read32(base + HostileReg.interruptStatus))); put("\n")
}

/// Waits up to `ticks` ms for DEVICE_NEEDS_RESET or a used element.
func waitForReaction(_ queue: Queue, _ base: UInt, ticks: UInt32 = 1000) {
    let deadline = timerTicks() &+ ticks
    while timerTicks() < deadline {
        if read32(base + Reg.status) & HostileReg.needsReset != 0 { return }
        if read16(queue.deviceArea + 2) != queue.consumed { return }
        waitForInterrupt()
    }
}

/// One chain the spec forbids, offered and notified; then how many used
/// elements the device returned (none is the only right answer).
func brokenChain(_ attack: Hostile, _ queue: inout Queue, _ base: UInt, memory: UInt) {
    let header = memory + 0x1_0000, status = memory + 0x1_0010, data = memory + 0x2_0000
    poke32(header, Block.typeIn)
    poke32(header + 4, 0)
    poke64(header + 8, 0)
    poke8(status, 0xff)
    // A read of sector 0 whose data buffer is `buffer`.
    func offerRead(into buffer: UInt, length: UInt32) {
        queue.describe(0, address: header, length: 16, flags: descriptorNext, next: 1)
        queue.describe(1, address: buffer, length: length, flags: descriptorNext | descriptorWrite, next: 2)
        queue.describe(2, address: status, length: 1, flags: descriptorWrite)
    }
    switch attack {
    case .loop:
        // §2.7.5.2: a chain no longer than the queue; this one never ends.
        queue.describe(0, address: header, length: 16, flags: descriptorNext, next: 1)
        queue.describe(1, address: data, length: 512, flags: descriptorNext, next: 0)
    case .outsideRAM:
        offerRead(into: 0x8000_0000, length: 512) // 2 GiB: past the RAM, below the MMIO hole
    case .mmioHole:
        offerRead(into: base, length: 512)        // the device's own registers
    case .wrap:
        offerRead(into: UInt(bitPattern: -0x200), length: 0x400) // address + length passes 2^64
    case .zeroLength:
        // §2.7.5: zero-length buffers everywhere, so no status byte (§5.2.6).
        queue.describe(0, address: header, length: 0, flags: descriptorNext, next: 1)
        queue.describe(1, address: status, length: 0, flags: descriptorWrite)
    case .availAhead:
        offerRead(into: data, length: 512)
        // §2.7.13.3: idx moves by the buffers added; this is 0x8000 ahead.
        poke16(queue.driverArea + 4, 0)
        write16(queue.driverArea + 2, 0x8000)
        write32(base + Reg.queueNotify, 0)
        waitForReaction(queue, base)
        putHostile(attack, "used "); putDecimal(UInt32(read16(queue.deviceArea + 2))); put("\n")
        return
    case .nestedIndirect:
        // §2.7.5.3.1: an indirect table holds no INDIRECT descriptor.
        let outer = memory + 0x4_0000, inner = memory + 0x4_1000
        writeDescriptor(inner, 0, address: status, length: 1, flags: descriptorWrite)
        writeDescriptor(outer, 0, address: inner, length: 16, flags: descriptorIndirect)
        queue.describe(0, address: outer, length: 16, flags: descriptorIndirect)
    default:
        return
    }
    queue.make(available: 0)
    waitForReaction(queue, base)
    putHostile(attack, "used "); putDecimal(UInt32(read16(queue.deviceArea + 2))); put("\n")
}

/// §3.1.1: DRIVER_OK without FEATURES_OK, then a queue set up and notified
/// anyway. §2.1.2: no buffer may be used before DRIVER_OK.
func driverOKWithoutFeaturesOK(_ base: UInt, memory: UInt) {
    write32(base + Reg.status, 0)
    while read32(base + Reg.status) != 0 {}
    write32(base + Reg.status, Status.acknowledge)
    write32(base + Reg.status, Status.acknowledge | Status.driver)
    write32(base + Reg.driverFeaturesSel, 1)
    write32(base + Reg.driverFeatures, UInt32(truncatingIfNeeded: featureVersion1 >> 32))
    write32(base + Reg.status, Status.acknowledge | Status.driver | Status.driverOK)
    guard var queue = Queue(device: base, index: 0, memory: memory) else {
        put("guest: hostile driver-ok-early queue unavailable\n")
        return
    }
    let status = memory + 0x1_0010
    _ = blockRequest(&queue, buffers: memory + 0x1_0000, type: Block.typeIn, sector: 0, data: memory + 0x2_0000,
                     length: 512, deviceWrites: true)
    put("guest: hostile driver-ok-early used "); putDecimal(UInt32(read16(queue.deviceArea + 2)))
    put(" status byte "); putHex(UInt64(peek8(status))); put("\n")
}

/// §2.7: three parts, each the driver's or the device's; here the device
/// area lies on the driver area, so the device would write the ring it
/// reads. Made ready, and no buffer offered: the device must judge the
/// layout itself.
func overlappingRings(_ base: UInt, memory: UInt) {
    guard negotiate(base, wanted: 0) != nil else { return }
    write32(base + Reg.queueSel, 0)
    placeQueue(base, size: 8, descriptors: memory, driverArea: memory + 0x1000, deviceArea: memory + 0x1000)
    write32(base + Reg.queueReady, 1)
    driverOK(base)
    put("guest: hostile overlap queue ready "); putDecimal(read32(base + Reg.queueReady)); put("\n")
}

/// A legal notification, an unknown queue's and a wrong-width one, as fast
/// as the vCPU can write them, for about 1.5 s; then one request that must
/// still work.
func notifyStorm(_ queue: inout Queue, _ base: UInt, memory: UInt) {
    put("guest: hostile notify-storm storming\n")
    let deadline = timerTicks() &+ 1500
    var notifications: UInt32 = 0
    while timerTicks() < deadline {
        var burst = 0
        while burst < 64 {
            write32(base + Reg.queueNotify, 0)
            burst += 1
        }
        write32(base + Reg.queueNotify, 7)       // no such queue (§4.2.3.3)
        write16(base + Reg.queueNotify, 0)       // not 32 bits wide (§4.2.2.2)
        notifications &+= 66
        waitForInterrupt()
    }
    put("guest: hostile notify-storm notifications "); putDecimal(notifications); put("\n")
    let status = blockRequest(&queue, buffers: memory + 0x1_0000, type: Block.typeIn, sector: 0,
                              data: memory + 0x2_0000, length: 512, deviceWrites: true)
    put("guest: hostile notify-storm read status "); putDecimal(status); put("\n")
}

/// Writes the driver must not make (§4.2.2.2: read-only registers, holes,
/// other widths; §2.1.1: status bits cleared or unknown; queue registers of
/// a live queue), then one request that must still work.
func garbageRegisters(_ queue: inout Queue, _ base: UInt, memory: UInt) {
    var offset: UInt = 0
    while offset < 0x100 {
        // QueueSel, QueueReady, QueueNotify, InterruptACK and Status are
        // written below, with values chosen to be refused.
        if offset != Reg.queueSel && offset != Reg.queueReady && offset != Reg.queueNotify
            && offset != HostileReg.interruptACK && offset != Reg.status {
            write32(base + offset, 0xdead_beef ^ UInt32(truncatingIfNeeded: offset))
        }
        _ = read32(base + offset)
        offset += 4
    }
    write16(base + Reg.status, 0)                    // a reset, but 16 bits wide
    write16(base + Reg.queueReady, 0)
    write32(base + Reg.status, 0xffff_ffff)          // unknown bits
    write32(base + Reg.status, Status.acknowledge)   // clears bits
    write32(base + Reg.queueNotify, 0xdead_beef)     // no such queue
    write32(base + Reg.queueSel, 0xbeef)             // no such queue: ready is refused
    write32(base + Reg.queueReady, 1)
    write32(base + Reg.queueSel, 0)
    offset = Reg.config
    while offset < 0x1000 {                          // config space and past its end
        write32(base + offset, 0xffff_ffff)
        offset += 4
    }
    let magic = read32(base + Reg.magic)
    put("guest: hostile garbage-registers magic "); putHex(UInt64(magic)); put("\n")
    let status = blockRequest(&queue, buffers: memory + 0x1_0000, type: Block.typeIn, sector: 0,
                              data: memory + 0x2_0000, length: 512, deviceWrites: true)
    put("guest: hostile garbage-registers read status "); putDecimal(status); put("\n")
}

/// Asks for a used-buffer interrupt on every request (§2.7.7) and never
/// acknowledges one (§4.2.2: InterruptACK).
func noAcknowledgement(_ queue: inout Queue, _ base: UInt, memory: UInt) {
    poke16(queue.driverArea, 0)
    var done: UInt32 = 0
    while done < 32 {
        // A different sector each time; also keeps the header stores out of
        // SSE registers, which kvm-pvm's instruction emulator lacks.
        let status = blockRequest(&queue, buffers: memory + 0x1_0000, type: Block.typeIn, sector: UInt64(done),
                                  data: memory + 0x2_0000, length: 512, deviceWrites: true)
        if status != 0 { break }
        done += 1
    }
    put("guest: hostile no-ack requests "); putDecimal(done); put("\n")
}

/// §4.2.3.1: a reset written right after a notification, while the device
/// may be serving it, sixteen times. Once Status reads 0 the device must
/// not touch the rings again (§2.1.2).
func resetDuringIO(_ base: UInt, memory: UInt) {
    var moved: UInt32 = 0
    var round: UInt32 = 0
    while round < 16 {
        zero(memory, 0x3000)
        guard negotiate(base, wanted: 0) != nil, var queue = Queue(device: base, index: 0, memory: memory) else {
            put("guest: hostile reset-during-io set-up failed\n")
            return
        }
        driverOK(base)
        let header = memory + 0x1_0000
        poke32(header, Block.typeIn)
        poke32(header + 4, 0)
        poke64(header + 8, 0)
        queue.describe(0, address: header, length: 16, flags: descriptorNext, next: 1)
        queue.describe(1, address: memory + 0x2_0000, length: 0x1_0000, flags: descriptorNext | descriptorWrite, next: 2)
        queue.describe(2, address: memory + 0x1_0010, length: 1, flags: descriptorWrite)
        queue.make(available: 0)
        write32(base + Reg.status, 0)
        while read32(base + Reg.status) != 0 {}
        let used = read16(queue.deviceArea + 2)
        let waited = timerTicks()
        while timerTicks() &- waited < 2 { waitForInterrupt() } // at least one whole tick
        if read16(queue.deviceArea + 2) != used { moved += 1 }
        round += 1
    }
    put("guest: hostile reset-during-io rounds "); putDecimal(round)
    put(" used after reset "); putDecimal(moved); put("\n")
}
