// The density benchmark's network service: with `udpecho=A.B.C.D` on the
// command line the guest answers ARP for that address (RFC 826) and echoes
// every UDP datagram to it on port 7 (RFC 862), for ever, on the first
// virtio-net device its command line names (Virtio.swift's driver).
//
// Unlike the probe in Virtio.swift it waits on the device's interrupt, not
// on the PIT (stopped before this runs: a ticking PIT costs the host a timer
// wake-up a millisecond even while masked), so that hundreds of idle guests
// cost the host nothing: the
// receive and send queues ask for used-buffer notifications (§2.7.7), the
// device's IRQ line is the only one unmasked, and the InterruptStatus bits
// are acknowledged (§4.2.2) before the rings are read, so a level-triggered
// line (QEMU's) drops and its next notification is a fresh edge for the
// 8259, which this guest runs edge-triggered.

@_extern(c, "guest_install_device_interrupt") func installDeviceInterrupt(_ vector: UInt8)

enum UDPEcho {
    static let argument: StaticString = "udpecho="
    static let interruptStatus: UInt = 0x060, interruptACK: UInt = 0x064 // §4.2.2

    /// The IPv4 address after `udpecho=`, most significant byte first; nil
    /// when the argument is absent or not a dotted quad.
    static func address(_ line: UnsafePointer<UInt8>) -> UInt32? {
        var index = 0
        while line[index] != 0 && index < 2048 {
            if (index == 0 || line[index - 1] == 0x20) && matches(line, at: index, argument) {
                var cursor = index + argument.utf8CodeUnitCount
                var value: UInt32 = 0
                for part in 0..<4 {
                    if part > 0 {
                        if line[cursor] != 0x2e { return nil } // "."
                        cursor += 1
                    }
                    var octet: UInt32 = 0, digits = 0
                    while line[cursor] >= 0x30 && line[cursor] <= 0x39 && digits < 3 {
                        octet = octet * 10 + UInt32(line[cursor] - 0x30)
                        cursor += 1
                        digits += 1
                    }
                    if digits == 0 || octet > 255 { return nil }
                    value = value << 8 | octet
                }
                return line[cursor] == 0 || line[cursor] == 0x20 ? value : nil
            }
            index += 1
        }
        return nil
    }

    /// The first `virtio_mmio.device=` whose registers say net (device ID 1).
    static func netDevice(_ line: UnsafePointer<UInt8>) -> (base: UInt, irq: UInt8)? {
        var index = 0
        while line[index] != 0 && index < 2048 {
            if (index == 0 || line[index - 1] == 0x20) && matches(line, at: index, deviceArgument) {
                var cursor = index + deviceArgument.utf8CodeUnitCount
                _ = parseNumber(line, &cursor)
                var base: UInt64?, irq: UInt64?
                if line[cursor] == 0x40 { cursor += 1; base = parseNumber(line, &cursor) }
                if base != nil && line[cursor] == 0x3a { cursor += 1; irq = parseNumber(line, &cursor) }
                if let base, let irq, base < 0x1_0000_0000, irq < 16,
                   read32(UInt(base) + Reg.magic) == 0x7472_6976, read32(UInt(base) + Reg.version) == 2,
                   read32(UInt(base) + Reg.deviceID) == 1 {
                    return (UInt(base), UInt8(irq))
                }
                index = cursor
                continue
            }
            index += 1
        }
        return nil
    }

    /// Only `irq` unmasked on the 8259 pair (IRQ 2 too when it is the slave's).
    static func unmaskOnly(_ irq: UInt8) {
        if irq < 8 {
            outb(Port.pic1Data, ~(UInt8(1) << irq))
            outb(Port.pic2Data, 0xff)
        } else {
            outb(Port.pic1Data, ~UInt8(0x04))
            outb(Port.pic2Data, ~(UInt8(1) << (irq - 8)))
        }
    }

    static func acknowledge(_ base: UInt) {
        let status = read32(base + interruptStatus)
        if status != 0 { write32(base + interruptACK, status) }
    }

    /// Serves until the machine stops; returns only when the device fails.
    static func serve(_ line: UnsafePointer<UInt8>, address: UInt32, memory: UInt) {
        guard let (base, irq) = netDevice(line) else {
            put("guest: udpecho: no virtio-net device\n")
            return
        }
        // Only the rings' headers are cleared (the VMM gave fresh, zeroed
        // RAM): clearing the whole slot would make the host back memory the
        // service never uses.
        for area: UInt in [0, 0x1000, 0x2000, 0x4000, 0x5000, 0x6000] { zero(memory + area, 16) }
        guard let features = negotiate(base, wanted: Net.featureMAC) else { return }
        guard var receive = Queue(device: base, index: 0, memory: memory) else { return queueFailed(base, 0) }
        guard var send = Queue(device: base, index: 1, memory: memory + 0x4000) else { return queueFailed(base, 1) }
        // Notifications on: Queue leaves VIRTQ_AVAIL_F_NO_INTERRUPT set for the polling probe.
        poke16(receive.driverArea, 0)
        poke16(send.driverArea, 0)
        let mac = memory + 0x1_0000
        for index in 0..<6 {
            let byte = features & Net.featureMAC != 0 ? read8(base + Reg.config + UInt(index)) : (index == 0 ? 0x02 : 0x01)
            poke8(mac + UInt(index), byte)
        }
        let receiveBuffers = memory + 0x2_0000
        for slot in 0..<receive.size {
            receive.describe(slot, address: receiveBuffers + UInt(slot) * Net.bufferSize, length: UInt32(Net.bufferSize),
                             flags: descriptorWrite)
            receive.make(available: slot, notify: false)
        }
        installDeviceInterrupt(0x20 &+ irq)
        unmaskOnly(irq)
        driverOK(base)
        write32(base + Reg.queueNotify, 0)
        put("guest: udpecho: serving "); putDecimal(address >> 24); put(".")
        putDecimal(address >> 16 & 0xff); put("."); putDecimal(address >> 8 & 0xff); put(".")
        putDecimal(address & 0xff); put(" on virtio-net@"); putHex(UInt64(base)); put("\n")

        let reply = memory + 0x1_1000 + Net.headerSize
        while true {
            acknowledge(base)
            while let used = receive.takeUsed() {
                if used.id >= UInt32(receive.size) {
                    put("guest: udpecho: bad used id\n")
                    return
                }
                let slot = UInt16(used.id)
                let buffer = receiveBuffers + UInt(slot) * Net.bufferSize
                let received = UInt(used.length)
                if received > Net.headerSize && received <= Net.bufferSize,
                   let length = answer(buffer + Net.headerSize, received - Net.headerSize, address: address, mac: mac,
                                       into: reply) {
                    zero(reply - Net.headerSize, Net.headerSize)
                    send.describe(0, address: reply - Net.headerSize, length: UInt32(Net.headerSize + length), flags: 0)
                    send.make(available: 0)
                    // One frame in flight: wait for its buffer before reusing it.
                    while true {
                        acknowledge(base)
                        if send.takeUsed() != nil { break }
                        waitForInterrupt()
                    }
                }
                receive.make(available: slot)
            }
            waitForInterrupt()
        }
    }

    /// The reply to one received frame, built at `reply`: an ARP reply for
    /// `address`, or the echo of a UDP datagram to it on port 7. nil for
    /// anything else.
    static func answer(_ frame: UInt, _ length: UInt, address: UInt32, mac: UInt, into reply: UInt) -> UInt? {
        if length < 14 + 28 { return nil }
        let type = peekBE16(frame + 12)
        if type == 0x0806 {
            // RFC 826: Ethernet (1), IPv4 (0x0800), lengths 6 and 4, request (1).
            let arp = frame + 14
            if peekBE16(arp) != 1 || peekBE16(arp + 2) != 0x0800 || peek8(arp + 4) != 6 || peek8(arp + 5) != 4
                || peekBE16(arp + 6) != 1 || readBE32(arp + 24) != address { return nil }
            copyBytes(reply, arp + 8, 6)         // to the asker
            copyBytes(reply + 6, mac, 6)
            pokeBE16(reply + 12, 0x0806)
            let answer = reply + 14
            copyBytes(answer, arp, 6)            // hardware and protocol types and lengths
            pokeBE16(answer + 6, 2)              // reply
            copyBytes(answer + 8, mac, 6)        // sender: us
            copyBytes(answer + 14, arp + 24, 4)
            copyBytes(answer + 18, arp + 8, 10)  // target: the asker's MAC and address
            zero(answer + 28, 60 - 14 - 28)      // padded to Ethernet's 60-byte minimum
            return 60
        }
        if type != 0x0800 || readBE32(frame + 14 + 16) != address { return nil }
        return echo(frame, length, mac: mac, into: reply)
    }

    static func readBE32(_ address: UInt) -> UInt32 {
        UInt32(peekBE16(address)) << 16 | UInt32(peekBE16(address + 2))
    }
}
