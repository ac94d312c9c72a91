// The test guest's virtio-vsock driver (virtio 1.2 §5.10): the rx, tx and
// event queues, stream connections with credit-based flow control (§5.10.6.3),
// and an echo service the host reaches both ways, as Firecracker's host side
// maps them: a host process's `CONNECT <port>` on `uds_path` arrives here as
// a REQUEST to that port, and a connection made here to CID 2 port P reaches
// the host's listener on `<uds_path>_P`.
//
// Chosen on the command line:
//   vsock.listen=P     accept the host's connections to port P
//   vsock.accepts=N    finish after N of them have ended (default 1)
//   vsock.connect=P    connect to the host's port P, one connection after another
//   vsock.connects=N   finish after N of those have ended (default 1)
//   vsock.seconds=S    give up after S seconds (default 30)
// Every connection echoes what it receives until the peer stops sending,
// then closes (§5.10.6.5). The first few connections to end each print one
// line with their byte count and the FNV-1a hash of what arrived, so a test
// can check the guest saw every byte (vsock.nohash: no hash, for the
// benchmark); the last line is a summary.
//
// Polled, like the rest of the driver: the used rings are spun on while
// packets flow, and the PIT's 1 ms ticks bound each wait when they do not.

/// §5.10.6: header fields, operations, types and flags.
enum VsockWire {
    static let deviceID: UInt32 = 19
    static let hostCID: UInt64 = 2
    static let headerSize: UInt = 44
    static let typeStream: UInt16 = 1
    static let request: UInt16 = 1, response: UInt16 = 2, reset: UInt16 = 3, shutdown: UInt16 = 4
    static let readWrite: UInt16 = 5, creditUpdate: UInt16 = 6, creditRequest: UInt16 = 7
    static let shutdownReceive: UInt32 = 1, shutdownSend: UInt32 = 2
    /// §5.10.3: the stream feature bit (a device offering none supports streams only).
    static let featureStream: UInt64 = 1 << 0
    /// §5.10.6.2: the event queue's one event, a transport reset.
    static let transportReset: UInt32 = 0
}

/// Where the driver keeps its queues, buffers and connections in the
/// device's 512 KiB of the virtio area.
enum VsockLayout {
    static let receiveQueue: UInt = 0x0_0000, transmitQueue: UInt = 0x0_4000, eventQueue: UInt = 0x0_8000
    static let eventBuffers: UInt = 0x0_c000, eventSlots: UInt16 = 4
    static let streams: UInt = 0x0_d000
    /// Receive buffers: each takes a header and up to 4052 bytes (§5.10.6.1).
    static let receiveBuffers: UInt = 0x1_0000, receiveBufferSize: UInt = 4096, receiveSlots: UInt32 = 32
    /// Transmit slots: a header descriptor chained to a data one (§2.7.5).
    static let transmitHeaders: UInt = 0x3_0000, transmitData: UInt = 0x4_0000
    static let transmitDataSize: UInt = 4096, transmitSlots: UInt32 = 16
    /// One echo ring per connection; its size is the buf_alloc the guest
    /// advertises, so a peer that keeps to its credit never overflows it.
    static let rings: UInt = 0x5_0000, ringSize: UInt = 0x1_0000, streamSlots = 3
}

/// One stream connection's state (§5.10.6.3-5).
struct VsockStream {
    static let free: UInt8 = 0, connecting: UInt8 = 1, established: UInt8 = 2, closing: UInt8 = 3
    var state = VsockStream.free
    var accepted = false
    var localPort: UInt32 = 0, peerPort: UInt32 = 0
    /// The echo ring: `ringCount` bytes from `ringStart`.
    var ringStart: UInt = 0, ringCount: UInt = 0
    var received: UInt64 = 0
    var hash: UInt32 = 0
    /// fwd_cnt (bytes taken out of the ring) and tx_cnt (bytes sent), both
    /// wrapping u32 counters (§5.10.6.3).
    var forwarded: UInt32 = 0, sent: UInt32 = 0
    var peerBufferAllocation: UInt32 = 0, peerForwarded: UInt32 = 0
    var peerDoneSending = false
    var sawShutdown = false
    /// A tick deadline: for the RESPONSE while connecting, the RST while closing.
    var deadline: UInt32 = 0
    var creditAskedAt: UInt32 = 0
}

/// How a stream ended: after a SHUTDOWN exchange, by an RST without one,
/// or before it ever connected. (Constants, not an enum: an enum's
/// synthesized hashing needs a random seed this guest has no source for.)
enum VsockEnding {
    static let closed: UInt8 = 0, reset: UInt8 = 1, neverConnected: UInt8 = 2
}

private let fnvOffsetBasis: UInt32 = 0x811c_9dc5, fnvPrime: UInt32 = 0x0100_0193
private let printedStreams: UInt32 = 8
private let waitTicks: UInt32 = 2000

private func load16(_ address: UInt) -> UInt16 { UnsafeRawPointer(bitPattern: address)!.loadUnaligned(as: UInt16.self) }
private func load32(_ address: UInt) -> UInt32 { UnsafeRawPointer(bitPattern: address)!.loadUnaligned(as: UInt32.self) }
private func load64(_ address: UInt) -> UInt64 { UnsafeRawPointer(bitPattern: address)!.loadUnaligned(as: UInt64.self) }
private func copy(to destination: UInt, from source: UInt, _ count: UInt) {
    if count > 0 { UnsafeMutableRawPointer(bitPattern: destination)!.copyMemory(from: UnsafeRawPointer(bitPattern: source)!, byteCount: Int(count)) }
}

/// FNV-1a over `count` bytes at `address`, continuing from `hash`. Read a
/// word at a time: each guest memory access is dear under kvm-pvm.
private func fnv1a(_ start: UInt32, _ address: UInt, _ count: UInt) -> UInt32 {
    var hash = start
    var offset: UInt = 0
    while offset + 8 <= count {
        var word = load64(address + offset)
        for _ in 0..<8 {
            hash = (hash ^ UInt32(word & 0xff)) &* fnvPrime
            word >>= 8
        }
        offset += 8
    }
    while offset < count { hash = (hash ^ UInt32(peek8(address + offset))) &* fnvPrime; offset += 1 }
    return hash
}

/// The number after `key` (a whole word's start) on the command line.
func commandLineNumber(_ line: UnsafePointer<UInt8>, _ key: StaticString) -> UInt64? {
    var index = 0
    while line[index] != 0 && index < 2048 {
        if (index == 0 || line[index - 1] == 0x20) && matches(line, at: index, key) {
            var cursor = index + key.utf8CodeUnitCount
            return parseNumber(line, &cursor)
        }
        index += 1
    }
    return nil
}

/// The command line `probeVirtioDevices` was given, for devices whose
/// behaviour it selects.
var virtioCommandLine: UnsafePointer<UInt8>? = nil

func runVsock(_ base: UInt, memory: UInt) {
    guard negotiate(base, wanted: VsockWire.featureStream) != nil else { return }
    let receiveLimit = VsockLayout.receiveSlots, transmitLimit = VsockLayout.transmitSlots * 2
    guard let receive = Queue(device: base, index: 0, memory: memory + VsockLayout.receiveQueue, limit: receiveLimit) else {
        return queueFailed(base, 0)
    }
    guard let transmit = Queue(device: base, index: 1, memory: memory + VsockLayout.transmitQueue, limit: transmitLimit),
          transmit.size >= 2 else { return queueFailed(base, 1) }
    guard let events = Queue(device: base, index: 2, memory: memory + VsockLayout.eventQueue, limit: UInt32(VsockLayout.eventSlots)) else {
        return queueFailed(base, 2)
    }
    driverOK(base)
    var driver = VsockDriver(base: base, memory: memory, receive: receive, transmit: transmit, events: events)
    put("guest: virtio-vsock@"); putHex(UInt64(base)); put(" cid "); putDecimal64(driver.guestCID); put("\n")
    guard let line = virtioCommandLine else { return }
    driver.serve(line)
}

struct VsockDriver {
    let base: UInt
    let memory: UInt
    var receive: Queue
    var transmit: Queue
    var events: Queue
    var guestCID: UInt64 = 0
    let streams: UnsafeMutablePointer<VsockStream>
    /// Bit i set: transmit slot i is free.
    var freeTransmitSlots: UInt32 = 0
    let transmitSlots: UInt32

    var listenPort: UInt32? = nil
    var connectPort: UInt32? = nil
    var nextLocalPort: UInt32 = 50000
    var accepted: UInt32 = 0, connected: UInt32 = 0, refused: UInt32 = 0
    var acceptsEnded: UInt32 = 0, connectsEnded: UInt32 = 0, connectsStarted: UInt32 = 0
    var resets: UInt32 = 0, ended: UInt32 = 0
    var bytes: UInt64 = 0
    var failed = false
    /// Off with `vsock.nohash` (the benchmark): the guest's own work per byte
    /// is what limits lane 1 (its code runs slowly under kvm-pvm).
    var hashing = true

    init(base: UInt, memory: UInt, receive: Queue, transmit: Queue, events: Queue) {
        self.base = base
        self.memory = memory
        self.receive = receive
        self.transmit = transmit
        self.events = events
        streams = UnsafeMutablePointer<VsockStream>(bitPattern: memory + VsockLayout.streams)!
        streams.initialize(repeating: VsockStream(), count: VsockLayout.streamSlots)
        transmitSlots = min(UInt32(transmit.size) / 2, VsockLayout.transmitSlots)
        freeTransmitSlots = transmitSlots == 32 ? 0xffff_ffff : (1 << transmitSlots) - 1
        readCID()
        // §5.10.6.1: the driver fills the rx and event queues with buffers.
        for slot in 0..<self.receive.size {
            self.receive.describe(slot, address: receiveBuffer(slot), length: UInt32(VsockLayout.receiveBufferSize),
                                  flags: descriptorWrite)
            self.receive.make(available: slot, notify: slot == self.receive.size - 1)
        }
        for slot in 0..<self.events.size {
            self.events.describe(slot, address: memory + VsockLayout.eventBuffers + UInt(slot) * 8, length: 4,
                                 flags: descriptorWrite)
            self.events.make(available: slot, notify: slot == self.events.size - 1)
        }
    }

    /// §5.10.4: guest_cid, a le64 at config offset 0, read as two halves.
    mutating func readCID() {
        guestCID = UInt64(read32(base + Reg.config + 4)) << 32 | UInt64(read32(base + Reg.config))
    }

    func receiveBuffer(_ slot: UInt16) -> UInt { memory + VsockLayout.receiveBuffers + UInt(slot) * VsockLayout.receiveBufferSize }
    func ring(_ index: Int) -> UInt { memory + VsockLayout.rings + UInt(index) * VsockLayout.ringSize }

    // MARK: The service loop

    mutating func serve(_ line: UnsafePointer<UInt8>) {
        listenPort = commandLineNumber(line, "vsock.listen=").map { UInt32(truncatingIfNeeded: $0) }
        connectPort = commandLineNumber(line, "vsock.connect=").map { UInt32(truncatingIfNeeded: $0) }
        if listenPort == nil && connectPort == nil { return }
        hashing = !commandLine(line, contains: "vsock.nohash")
        let accepts = listenPort == nil ? 0 : UInt32(truncatingIfNeeded: commandLineNumber(line, "vsock.accepts=") ?? 1)
        let connects = connectPort == nil ? 0 : UInt32(truncatingIfNeeded: commandLineNumber(line, "vsock.connects=") ?? 1)
        let seconds = UInt32(truncatingIfNeeded: min(commandLineNumber(line, "vsock.seconds=") ?? 30, 3600))
        if let listenPort { put("guest: vsock listening on port "); putDecimal(listenPort); put("\n") }
        let deadline = timerTicks() &+ seconds &* 1000
        var idle = 0
        while !failed && (acceptsEnded < accepts || connectsEnded < connects) {
            if timerTicks() >= deadline {
                put("guest: vsock timed out\n")
                break
            }
            if let connectPort, connectsStarted < connects, connectsStarted == connectsEnded {
                startConnection(to: connectPort)
            }
            var progress = pollReceive()
            progress = pollEvents() || progress
            progress = reclaimTransmitSlots() || progress
            progress = pump() || progress
            checkTimers()
            if progress {
                idle = 0
            } else {
                idle += 1
                // Spin while packets flow; halt until the next tick when they do not.
                if idle > 20 { waitForInterrupt() }
            }
        }
        put("guest: vsock done accepted "); putDecimal(accepted); put(" connected "); putDecimal(connected)
        put(" refused "); putDecimal(refused); put(" reset "); putDecimal(resets); put(" bytes "); putDecimal64(bytes)
        put("\n")
    }

    // MARK: Receiving (§5.10.6.1)

    mutating func pollReceive() -> Bool {
        var taken = false
        while let used = receive.takeUsed() {
            taken = true
            if used.id >= UInt32(receive.size) {
                put("guest: vsock bad rx used id "); putDecimal(used.id); put("\n")
                failed = true
                return true
            }
            let slot = UInt16(used.id)
            handle(receiveBuffer(slot), written: UInt(used.length))
            receive.make(available: slot, notify: false)
        }
        if taken { write32(base + Reg.queueNotify, receive.index) }
        return taken
    }

    mutating func handle(_ packet: UInt, written: UInt) {
        let length = UInt(load32(packet + 24))
        if written < VsockWire.headerSize || written > VsockLayout.receiveBufferSize
            || length > written - VsockWire.headerSize {
            put("guest: vsock bad rx packet: "); putDecimal64(UInt64(written)); put(" bytes written, len ")
            putDecimal64(UInt64(length)); put("\n")
            return
        }
        let sourceCID = load64(packet), destinationCID = load64(packet + 8)
        let sourcePort = load32(packet + 16), destinationPort = load32(packet + 20)
        let type = load16(packet + 28), operation = load16(packet + 30), flags = load32(packet + 32)
        if sourceCID != VsockWire.hostCID || destinationCID != guestCID || type != VsockWire.typeStream {
            put("guest: vsock unexpected packet from cid "); putDecimal64(sourceCID); put(" to cid ")
            putDecimal64(destinationCID); put(" type "); putDecimal(UInt32(type)); put("\n")
            if operation != VsockWire.reset { replyReset(to: sourcePort, from: destinationPort) }
            return
        }
        guard let index = find(local: destinationPort, peer: sourcePort) else {
            if operation == VsockWire.request { accept(from: sourcePort, to: destinationPort, packet: packet) }
            else if operation != VsockWire.reset { replyReset(to: sourcePort, from: destinationPort) }
            return
        }
        // Every packet carries the peer's credit (§5.10.6.3).
        streams[index].peerBufferAllocation = load32(packet + 36)
        streams[index].peerForwarded = load32(packet + 40)
        switch operation {
        case VsockWire.response:
            if streams[index].state == VsockStream.connecting {
                streams[index].state = VsockStream.established
                connected &+= 1
                if connected <= printedStreams {
                    put("guest: vsock connected to host port "); putDecimal(streams[index].peerPort)
                    put(" from port "); putDecimal(streams[index].localPort); put("\n")
                }
            } else {
                send(index, VsockWire.reset)
                end(index, how: VsockEnding.reset)
            }
        case VsockWire.reset:
            if streams[index].state == VsockStream.connecting {
                refused &+= 1
                put("guest: vsock connect to host port "); putDecimal(streams[index].peerPort); put(" refused\n")
                end(index, how: VsockEnding.neverConnected)
            } else {
                end(index, how: streams[index].sawShutdown ? VsockEnding.closed : VsockEnding.reset)
            }
        case VsockWire.shutdown:
            streams[index].sawShutdown = true
            if flags & VsockWire.shutdownSend != 0 { streams[index].peerDoneSending = true }
            // A peer that takes no more data cannot be echoed to: close now (§5.10.6.5).
            if flags & VsockWire.shutdownReceive != 0 {
                send(index, VsockWire.reset)
                end(index, how: VsockEnding.closed)
            }
        case VsockWire.readWrite:
            take(index, packet + VsockWire.headerSize, length)
        case VsockWire.creditRequest:
            send(index, VsockWire.creditUpdate)
        case VsockWire.creditUpdate:
            break
        default:
            put("guest: vsock unknown op "); putDecimal(UInt32(operation)); put("\n")
            send(index, VsockWire.reset)
            end(index, how: VsockEnding.reset)
        }
    }

    func find(local: UInt32, peer: UInt32) -> Int? {
        for index in 0..<VsockLayout.streamSlots {
            let stream = streams[index]
            if stream.state != VsockStream.free && stream.localPort == local && stream.peerPort == peer { return index }
        }
        return nil
    }

    func freeStream() -> Int? {
        for index in 0..<VsockLayout.streamSlots where streams[index].state == VsockStream.free { return index }
        return nil
    }

    /// A host-initiated REQUEST (§5.10.6.4): answered with RESPONSE on the
    /// listening port while a connection slot is free, else with RST.
    mutating func accept(from peerPort: UInt32, to localPort: UInt32, packet: UInt) {
        guard localPort == listenPort, let index = freeStream() else {
            return replyReset(to: peerPort, from: localPort)
        }
        open(index, local: localPort, peer: peerPort, accepted: true)
        streams[index].peerBufferAllocation = load32(packet + 36)
        streams[index].peerForwarded = load32(packet + 40)
        streams[index].state = VsockStream.established
        accepted &+= 1
        send(index, VsockWire.response)
        if accepted <= printedStreams {
            put("guest: vsock accepted port "); putDecimal(localPort); put(" from host port "); putDecimal(peerPort); put("\n")
        }
    }

    mutating func open(_ index: Int, local: UInt32, peer: UInt32, accepted: Bool) {
        streams[index] = VsockStream()
        streams[index].localPort = local
        streams[index].peerPort = peer
        streams[index].accepted = accepted
        streams[index].hash = fnvOffsetBasis
    }

    mutating func startConnection(to port: UInt32) {
        guard let index = freeStream() else { return }
        open(index, local: nextLocalPort, peer: port, accepted: false)
        nextLocalPort = nextLocalPort == 0xffff_fffe ? 50000 : nextLocalPort + 1
        streams[index].state = VsockStream.connecting
        streams[index].deadline = timerTicks() &+ waitTicks
        connectsStarted &+= 1
        send(index, VsockWire.request)
    }

    /// RW data (§5.10.6.3): the peer may send no more than the free space it
    /// was told of; more is a broken peer, and the connection is reset.
    mutating func take(_ index: Int, _ data: UInt, _ length: UInt) {
        guard streams[index].state == VsockStream.established, !streams[index].peerDoneSending else {
            send(index, VsockWire.reset)
            return end(index, how: VsockEnding.reset)
        }
        let stream = streams[index]
        if stream.ringCount + length > VsockLayout.ringSize {
            put("guest: vsock peer overran its credit on port "); putDecimal(stream.localPort); put("\n")
            send(index, VsockWire.reset)
            return end(index, how: VsockEnding.reset)
        }
        let ringBase = ring(index)
        let tail = (stream.ringStart + stream.ringCount) % VsockLayout.ringSize
        let first = min(length, VsockLayout.ringSize - tail)
        copy(to: ringBase + tail, from: data, first)
        copy(to: ringBase, from: data + first, length - first)
        if hashing { streams[index].hash = fnv1a(stream.hash, data, length) }
        streams[index].ringCount += length
        streams[index].received &+= UInt64(length)
    }

    // MARK: Sending (§5.10.6.2)

    /// Echoes what the rings hold, within each peer's credit; closes a
    /// stream whose peer has stopped sending once its ring is empty.
    mutating func pump() -> Bool {
        var progress = false
        for index in 0..<VsockLayout.streamSlots where streams[index].state == VsockStream.established {
            while streams[index].ringCount > 0 && freeTransmitSlots != 0 {
                let stream = streams[index]
                let credit = UInt(stream.peerBufferAllocation &- (stream.sent &- stream.peerForwarded))
                if credit == 0 || credit > UInt(UInt32.max / 2) {
                    askForCredit(index)
                    break
                }
                let count = min(min(stream.ringCount, credit), VsockLayout.transmitDataSize)
                if !send(index, VsockWire.readWrite, fromRing: count) { break }
                progress = true
            }
            if streams[index].ringCount == 0 && streams[index].peerDoneSending {
                // §5.10.6.5: nothing more either way, then wait for the peer's RST.
                if send(index, VsockWire.shutdown, flags: VsockWire.shutdownReceive | VsockWire.shutdownSend) {
                    streams[index].state = VsockStream.closing
                    streams[index].deadline = timerTicks() &+ waitTicks
                    progress = true
                }
            }
        }
        return progress
    }

    /// Out of the peer's credit with data to send: ask for an update, at
    /// most every 100 ms, in case the peer's own went astray.
    mutating func askForCredit(_ index: Int) {
        let now = timerTicks()
        if now &- streams[index].creditAskedAt >= 100 {
            streams[index].creditAskedAt = now
            send(index, VsockWire.creditRequest)
        }
    }

    mutating func checkTimers() {
        let now = timerTicks()
        for index in 0..<VsockLayout.streamSlots {
            let stream = streams[index]
            guard stream.state == VsockStream.connecting || stream.state == VsockStream.closing, now >= stream.deadline else {
                continue
            }
            // §5.10.6.5: no RST in time, so force the close.
            send(index, VsockWire.reset)
            if stream.state == VsockStream.connecting {
                put("guest: vsock connect to host port "); putDecimal(stream.peerPort); put(" timed out\n")
                end(index, how: VsockEnding.neverConnected)
            } else {
                end(index, how: VsockEnding.closed)
            }
        }
    }

    /// Ends a stream: counts it and, for the first few, prints how it ended.
    mutating func end(_ index: Int, how: UInt8) {
        let stream = streams[index]
        streams[index].state = VsockStream.free
        if stream.accepted { acceptsEnded &+= 1 } else { connectsEnded &+= 1 }
        if how == VsockEnding.neverConnected { return }
        ended &+= 1
        bytes &+= stream.received
        if how == VsockEnding.reset { resets &+= 1 }
        if ended <= printedStreams {
            put("guest: vsock "); put(how == VsockEnding.reset ? "reset" : "closed"); put(stream.accepted ? " accepted" : " connected"); put(" port ")
            putDecimal(stream.localPort); put(" peer "); putDecimal(stream.peerPort); put(" received ")
            putDecimal64(stream.received)
            if hashing { put(" fnv1a "); putHex(UInt64(stream.hash)) }
            put("\n")
        }
    }

    /// RST to a packet that names no connection of ours.
    mutating func replyReset(to peerPort: UInt32, from localPort: UInt32) {
        _ = transmitPacket(local: localPort, peer: peerPort, operation: VsockWire.reset, flags: 0,
                           forwarded: 0, sent: 0, ring: nil)
    }

    @discardableResult
    mutating func send(_ index: Int, _ operation: UInt16, flags: UInt32 = 0, fromRing count: UInt = 0) -> Bool {
        let stream = streams[index]
        return transmitPacket(local: stream.localPort, peer: stream.peerPort, operation: operation, flags: flags,
                              forwarded: stream.forwarded, sent: stream.sent,
                              ring: count > 0 ? (index, count) : nil)
    }

    /// Builds one packet in a free transmit slot and makes it available.
    /// RW data comes out of the stream's ring, which advances fwd_cnt and
    /// tx_cnt by the same count (the echo frees exactly what it sends).
    mutating func transmitPacket(local: UInt32, peer: UInt32, operation: UInt16, flags: UInt32,
                                 forwarded: UInt32, sent: UInt32, ring source: (index: Int, count: UInt)?) -> Bool {
        guard let slot = takeTransmitSlot() else {
            put("guest: vsock no transmit slot came back\n")
            failed = true
            return false
        }
        let header = memory + VsockLayout.transmitHeaders + UInt(slot) * 64
        let data = memory + VsockLayout.transmitData + UInt(slot) * VsockLayout.transmitDataSize
        var length: UInt = 0
        var forwardCount = forwarded
        if let source {
            let stream = streams[source.index]
            length = source.count
            let ringBase = ring(source.index)
            let first = min(length, VsockLayout.ringSize - stream.ringStart)
            copy(to: data, from: ringBase + stream.ringStart, first)
            copy(to: data + first, from: ringBase, length - first)
            streams[source.index].ringStart = (stream.ringStart + length) % VsockLayout.ringSize
            streams[source.index].ringCount -= length
            streams[source.index].forwarded = stream.forwarded &+ UInt32(length)
            streams[source.index].sent = stream.sent &+ UInt32(length)
            forwardCount = streams[source.index].forwarded
        }
        poke64(header, guestCID)
        poke64(header + 8, VsockWire.hostCID)
        poke32(header + 16, local)
        poke32(header + 20, peer)
        poke32(header + 24, UInt32(length))
        poke16(header + 28, VsockWire.typeStream)
        poke16(header + 30, operation)
        poke32(header + 32, flags)
        poke32(header + 36, UInt32(VsockLayout.ringSize))
        poke32(header + 40, forwardCount)
        let head = UInt16(slot * 2)
        if length > 0 {
            transmit.describe(head, address: header, length: UInt32(VsockWire.headerSize), flags: descriptorNext, next: head + 1)
            transmit.describe(head + 1, address: data, length: UInt32(length), flags: 0)
        } else {
            transmit.describe(head, address: header, length: UInt32(VsockWire.headerSize), flags: 0)
        }
        transmit.make(available: head)
        return true
    }

    /// A free transmit slot, waiting up to 2 s for the device to return one.
    mutating func takeTransmitSlot() -> UInt32? {
        let deadline = timerTicks() &+ waitTicks
        while freeTransmitSlots == 0 {
            if !reclaimTransmitSlots() {
                if timerTicks() >= deadline { return nil }
                waitForInterrupt()
            }
        }
        let slot = UInt32(freeTransmitSlots.trailingZeroBitCount)
        freeTransmitSlots &= ~(1 << slot)
        return slot
    }

    mutating func reclaimTransmitSlots() -> Bool {
        var taken = false
        while let used = transmit.takeUsed() {
            taken = true
            let slot = used.id / 2
            if used.id % 2 != 0 || slot >= transmitSlots {
                put("guest: vsock bad tx used id "); putDecimal(used.id); put("\n")
                failed = true
                return true
            }
            freeTransmitSlots |= 1 << slot
        }
        return taken
    }

    /// §5.10.6.6: a transport reset drops every connection; the CID may
    /// have changed.
    mutating func pollEvents() -> Bool {
        var taken = false
        while let used = events.takeUsed() {
            taken = true
            let slot = UInt16(truncatingIfNeeded: used.id) % events.size
            let id = load32(memory + VsockLayout.eventBuffers + UInt(slot) * 8)
            put("guest: vsock event "); putDecimal(id); put("\n")
            if id == VsockWire.transportReset {
                for index in 0..<VsockLayout.streamSlots where streams[index].state != VsockStream.free {
                    end(index, how: VsockEnding.reset)
                }
                readCID()
            }
            events.make(available: slot)
        }
        return taken
    }
}
