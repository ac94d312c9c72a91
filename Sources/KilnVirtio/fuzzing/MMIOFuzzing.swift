import KilnBytes
import KilnMemory

/// One step of a fuzzed driver against a virtio-mmio transport.
public enum MMIOFuzzOperation: FuzzOperation, Equatable, Sendable {
    /// A register access anywhere in 0x000–0x1FF, config space included.
    case read(offset: UInt16, size: Int)
    case write(offset: UInt16, size: Int, value: UInt32)
    /// A QueueNotify write of `queue` (§4.2.2).
    case notify(queue: UInt16)
    /// Guest bytes written at a guest address (see `MMIOFuzzHarness.address`).
    case poke(address: UInt16, bytes: [UInt8])
    /// `processQueue` called by the VMM for a backend event (a readable TAP).
    case backendEvent(queue: UInt8)
    /// The §3.1.1 sequence through the registers: reset, features chosen by
    /// `features`' bits, every queue at the harness's layout, DRIVER_OK.
    case bringUp(features: UInt8, queueSize: UInt8)
    /// A chain offered on the ring the last bring-up laid out (not notified).
    case chain(queue: UInt8, buffers: [FuzzBuffer])
    /// A frame from the host for the net device's receive queue.
    case hostFrame(length: UInt16)
    /// The VMM's `configurationChanged` (§2.5.1).
    case configurationChanged

    /// Access widths by their code: mostly 4, the widths the bus delivers,
    /// and two it never does.
    static let sizes = [4, 4, 4, 1, 2, 8, 3, 0]

    public static func decode(_ cursor: inout FuzzCursor) -> MMIOFuzzOperation {
        switch cursor.byte() % 9 {
        case 0: return .read(offset: cursor.integer(UInt16.self) & 0x1FF, size: sizes[Int(cursor.byte() % 8)])
        case 1:
            return .write(
                offset: cursor.integer(UInt16.self) & 0x1FF, size: sizes[Int(cursor.byte() % 8)],
                value: cursor.integer())
        case 2: return .notify(queue: cursor.integer())
        case 3: return .poke(address: cursor.integer(), bytes: cursor.bytes(Int(cursor.byte() % 32)))
        case 4: return .backendEvent(queue: cursor.byte())
        case 5: return .bringUp(features: cursor.byte(), queueSize: cursor.byte())
        case 6: return .chain(queue: cursor.byte(), buffers: FuzzBuffer.decodeList(&cursor))
        case 7: return .hostFrame(length: cursor.integer())
        default: return .configurationChanged
        }
    }

    public var bytes: [UInt8] {
        var out: [UInt8] = []
        func size(_ value: Int) -> UInt8 { UInt8(Self.sizes.firstIndex(of: value) ?? 0) }
        switch self {
        case .read(let offset, let width):
            out = [0]; out.appendLittleEndian(offset); out.append(size(width))
        case .write(let offset, let width, let value):
            out = [1]; out.appendLittleEndian(offset); out.append(size(width)); out.appendLittleEndian(value)
        case .notify(let queue):
            out = [2]; out.appendLittleEndian(queue)
        case .poke(let address, let bytes):
            precondition(bytes.count < 32, "a poke is at most 31 bytes")
            out = [3]; out.appendLittleEndian(address); out.append(UInt8(bytes.count)); out += bytes
        case .backendEvent(let queue):
            out = [4, queue]
        case .bringUp(let features, let queueSize):
            out = [5, features, queueSize]
        case .chain(let queue, let buffers):
            out = [6, queue]; FuzzBuffer.encodeList(buffers, into: &out)
        case .hostFrame(let length):
            out = [7]; out.appendLittleEndian(length)
        case .configurationChanged:
            out = [8]
        }
        return out
    }
}

/// Counts interrupts instead of writing an irqfd.
public final class CountingSignal: InterruptSignal {
    public private(set) var count = 0
    public init() {}
    public func trigger() { count += 1 }
}

/// A virtio-mmio transport in front of a block, net or rng device over
/// small heap guest memory, driven by a decoded program, with the
/// transport's promises checked after every step.
public final class MMIOFuzzHarness: FuzzHarness {
    /// Bring-up feature bits (`MMIOFuzzOperation.bringUp`).
    public enum BringUp {
        public static let eventIndex: UInt8 = 1
        public static let indirect: UInt8 = 2
        public static let deviceFeatures: UInt8 = 4
        /// Leaves VERSION_1 out: FEATURES_OK must not stick (§2.2.2).
        public static let noVersion1: UInt8 = 8
        /// Asks for bit 30, never offered.
        public static let unoffered: UInt8 = 16
    }

    public let memory: HeapGuestMemory
    public let transport: VirtioMMIOTransport
    let interrupt = CountingSignal()
    let disk: MemoryBlockBackend?
    let net: NetDevice?
    let netBackend = RecordingNetBackend()
    let entropy: EntropyDevice?
    let entropySource: FuzzEntropySource
    let queueCount: Int
    /// Ring size of the last bring-up, for `chain`.
    var ringSize: UInt16 = 16
    /// The configuration space at the start: nothing in it is the driver's
    /// to change (§5.2.4, §5.1.4; rng has none, §5.4.4).
    let initialConfigSpace: [UInt8]
    /// Used elements pushed over the whole program, for the seeded tests.
    public private(set) var usedElements = 0

    /// Byte 0: bits 0–1 pick block, net or rng (3 is rng too); bit 2 makes
    /// the disk read-only; bits 4–7 make every n-th entropy fill fail.
    public init(control: UInt8) {
        memory = try! HeapGuestMemory(ranges: VirtioFuzzing.memoryRanges)
        entropySource = FuzzEntropySource(failEvery: Int(control >> 4))
        let device: VirtioDevice
        switch control & 3 {
        case 0:
            let backend = MemoryBlockBackend(bytes: VirtioFuzzing.disk, readOnly: control & 4 != 0)
            disk = backend
            net = nil
            entropy = nil
            device = BlockDevice(memory: memory, backend: backend)
        case 1:
            let netDevice = NetDevice(memory: memory, backend: netBackend, mac: [0x02, 0, 0, 0, 0, 1])
            disk = nil
            net = netDevice
            entropy = nil
            device = netDevice
        default:
            let rng = EntropyDevice(memory: memory, source: entropySource)
            disk = nil
            net = nil
            entropy = rng
            device = rng
        }
        queueCount = device.queueMaxSizes.count
        initialConfigSpace = device.configSpace
        transport = VirtioMMIOTransport(device: device, memory: memory, interrupt: interrupt)
    }

    /// A 16-bit input address spread over both regions of guest memory.
    static func address(_ value: UInt16) -> UInt64 {
        value < 0x8000 ? UInt64(value) : 0x10000 + UInt64(value - 0x8000)
    }

    /// Queue `index`'s layout in a bring-up: 8 KiB apart from 0x1000.
    func ring(_ index: Int) -> FuzzRing {
        FuzzRing(base: 0x1000 + 0x2000 * UInt64(index), size: ringSize)
    }

    /// The state the checks compare across one step.
    struct Snapshot {
        struct Queue {
            /// Held, so a queue rebuilt by a reset is never mistaken for it.
            let queue: Virtqueue
            let size: UInt16
            let lastAvailable: UInt16
            let nextUsed: UInt16
        }
        let status: DeviceStatus
        let interrupts: Int
        let configGeneration: UInt32
        let ignoredAccesses: Int
        let queues: [Queue?]
        let droppedTransmits: Int
        let droppedReceives: Int
        /// Each live queue's driver area (§2.7.6), as guest memory holds it.
        let driverAreas: [[UInt8]?]
    }

    func snapshot() -> Snapshot {
        Snapshot(
            status: transport.status, interrupts: interrupt.count, configGeneration: transport.configGeneration,
            ignoredAccesses: transport.ignoredAccesses,
            queues: (0..<queueCount).map { index in
                transport.queue(index).map {
                    Snapshot.Queue(
                        queue: $0, size: $0.configuration.size,
                        lastAvailable: $0.lastAvailable, nextUsed: $0.nextUsed)
                }
            },
            droppedTransmits: net?.droppedTransmits ?? 0, droppedReceives: net?.droppedReceives ?? 0,
            driverAreas: (0..<queueCount).map { index in
                transport.queue(index).flatMap {
                    try? memory.readBytes(at: $0.configuration.availableRing, count: 6 + 2 * Int($0.configuration.size))
                }
            })
    }

    /// Runs one step and checks what the transport promises. Traps on a
    /// broken promise: that is the finding.
    @discardableResult
    public func run(_ operation: MMIOFuzzOperation) -> Bool {
        let before = snapshot()
        var readValue: UInt64?
        var served: Int?
        switch operation {
        case .read(let offset, let size):
            readValue = transport.read(offset: UInt64(offset), size: size)
        case .write(let offset, let size, let value):
            transport.write(offset: UInt64(offset), size: size, value: UInt64(value))
            if UInt64(offset) == MMIORegister.queueNotify && size == 4 { served = Int(value) }
        case .notify(let queue):
            transport.write(offset: MMIORegister.queueNotify, size: 4, value: UInt64(queue))
            served = Int(queue)
        case .poke(let address, let bytes):
            _ = try? memory.write(bytes, at: Self.address(address))
        case .backendEvent(let queue):
            served = Int(queue) % (queueCount + 1)
            transport.processQueue(served!)
        case .bringUp(let features, let queueSize):
            bringUp(features: features, queueSize: queueSize)
        case .chain(let queue, let buffers):
            ring(Int(queue) % queueCount).offer(buffers, memory: memory, address: Self.address)
        case .hostFrame(let length):
            if net != nil { netBackend.inject(RecordingNetBackend.frame(length: Int(length))) }
        case .configurationChanged:
            transport.configurationChanged()
        }
        let after = snapshot()
        check(operation, before: before, after: after, readValue: readValue)
        if let served { checkService(served, before: before, after: after) }
        return true
    }

    /// §3.1.1 steps 1–8 as Linux's virtio_mmio does them.
    func bringUp(features: UInt8, queueSize: UInt8) {
        func write(_ offset: UInt64, _ value: UInt32) { transport.write(offset: offset, size: 4, value: UInt64(value)) }
        write(MMIORegister.status, 0)
        write(MMIORegister.status, DeviceStatus.acknowledge.rawValue)
        write(MMIORegister.status, DeviceStatus([.acknowledge, .driver]).rawValue)
        var wanted: UInt64 = 0
        if features & BringUp.eventIndex != 0 { wanted |= VirtioFeature.eventIndex }
        if features & BringUp.indirect != 0 { wanted |= VirtioFeature.indirectDescriptors }
        if features & BringUp.deviceFeatures != 0 { wanted |= transport.device.deviceFeatures }
        if features & BringUp.noVersion1 == 0 { wanted |= VirtioFeature.version1 }
        if features & BringUp.unoffered != 0 { wanted |= 1 << 30 }
        write(MMIORegister.driverFeaturesSelect, 0)
        write(MMIORegister.driverFeatures, UInt32(truncatingIfNeeded: wanted))
        write(MMIORegister.driverFeaturesSelect, 1)
        write(MMIORegister.driverFeatures, UInt32(truncatingIfNeeded: wanted >> 32))
        write(MMIORegister.status, DeviceStatus([.acknowledge, .driver, .featuresOK]).rawValue)
        ringSize = UInt16(1) << (UInt16(queueSize) % 9)
        for index in 0..<queueCount {
            let layout = ring(index)
            _ = try? memory.fill(
                0, at: layout.descriptorTable,
                count: Int(layout.usedRing - layout.descriptorTable) + 6 + 8 * Int(ringSize))
            write(MMIORegister.queueSelect, UInt32(index))
            write(MMIORegister.queueSize, UInt32(ringSize))
            for (register, address) in [
                (MMIORegister.queueDescriptorLow, layout.descriptorTable),
                (MMIORegister.queueDriverLow, layout.availableRing),
                (MMIORegister.queueDeviceLow, layout.usedRing),
            ] {
                write(register, UInt32(truncatingIfNeeded: address))
                write(register + 4, UInt32(truncatingIfNeeded: address >> 32))
            }
            write(MMIORegister.queueReady, 1)
        }
        write(MMIORegister.status, DeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue)
    }

    func check(_ operation: MMIOFuzzOperation, before: Snapshot, after: Snapshot, readValue: UInt64?) {
        let status = after.status
        // §2.1: only the bits this transport knows, each after its prerequisite.
        let known: DeviceStatus = [.acknowledge, .driver, .featuresOK, .driverOK, .needsReset, .failed]
        precondition(known.isSuperset(of: status), "unknown status bits \(status.rawValue)")
        let features = transport.driverFeatures
        if status.contains(.featuresOK) {
            precondition(
                features & ~transport.offeredFeatures == 0 && features & VirtioFeature.version1 != 0,
                "FEATURES_OK with features 0x\(String(features, radix: 16))")
            precondition(status.isSuperset(of: [.acknowledge, .driver]), "FEATURES_OK without DRIVER")
        }
        precondition(!status.contains(.driverOK) || status.contains(.featuresOK), "DRIVER_OK without FEATURES_OK")
        precondition(
            transport.interruptStatus & ~3 == 0, "interrupt status 0x\(String(transport.interruptStatus, radix: 16))")

        // §2.1.2: DEVICE_NEEDS_RESET, with its reason, until the driver resets.
        precondition((transport.failure != nil) == status.contains(.needsReset), "failure reason and status disagree")
        let resets: Bool
        switch operation {
        case .write(let offset, 4, 0) where UInt64(offset) == MMIORegister.status: resets = true
        case .bringUp: resets = true
        default: resets = false
        }
        if before.status.contains(.needsReset) && !resets {
            precondition(status.contains(.needsReset), "DEVICE_NEEDS_RESET cleared without a reset")
        }

        // Interrupts: at most one used-buffer and one configuration-change
        // notification per queue service, one per queue made ready (its
        // layout can fail), one per configuration change; none otherwise.
        var allowed = 0
        var serves = false
        switch operation {
        case .write(let offset, 4, _) where UInt64(offset) == MMIORegister.queueNotify:
            allowed = 2
            serves = true
        case .notify, .backendEvent:
            allowed = 2
            serves = true
        case .write(let offset, 4, _) where UInt64(offset) == MMIORegister.queueReady: allowed = 1
        case .configurationChanged: allowed = 1
        case .bringUp: allowed = queueCount
        default: break
        }
        let raised = after.interrupts - before.interrupts
        precondition(raised >= 0 && raised <= allowed, "\(raised) interrupts for \(operation)")
        if raised > 0 { precondition(transport.interruptStatus != 0, "an interrupt with no status bit") }
        if case .configurationChanged = operation {
            precondition(after.configGeneration == before.configGeneration &+ 1, "config generation did not move")
        } else {
            precondition(after.configGeneration == before.configGeneration, "config generation moved by itself")
        }
        precondition(after.ignoredAccesses >= before.ignoredAccesses, "ignored-access count went back")

        // Queues move only in a service of a live device (§2.1.2, §4.2.2.1),
        // by at most the service budget, and never return more than they took.
        let live = before.status.contains(.driverOK) && before.status.isDisjoint(with: [.needsReset, .failed])
        for (old, new) in zip(before.queues, after.queues) {
            guard let old, let new, old.queue === new.queue else { continue }
            let popped = Int(new.lastAvailable &- old.lastAvailable)
            let pushed = Int(new.nextUsed &- old.nextUsed)
            usedElements += pushed
            if serves && live {
                precondition(
                    popped <= VirtioMMIOTransport.serviceRounds * Int(old.size), "\(popped) chains in one service")
                precondition(pushed <= popped, "\(pushed) used elements for \(popped) chains")
            } else {
                precondition(popped == 0 && pushed == 0, "queue moved outside a live service: \(operation)")
            }
        }

        for queue in (0..<queueCount).compactMap({ transport.queue($0) }) {
            let configuration = queue.configuration
            precondition(
                memory.contains(configuration.usedRing, length: 6 + 8 * Int(configuration.size)),
                "a live used ring outside memory")
        }
        precondition(transport.device.configSpace == initialConfigSpace, "the configuration space changed")
        if let readValue, case .read(let offset, let size) = operation {
            checkRead(offset: UInt64(offset), size: size, value: readValue)
        }
        if let disk {
            precondition(!disk.isReadOnly || disk.writeCalls == 0, "the device wrote to a read-only disk")
            precondition(disk.bytes.count == VirtioFuzzing.disk.count, "the disk changed size")
        }
        if let entropy {
            precondition(entropy.sourceFailures == entropySource.failures, "entropy failures miscounted")
        }
        precondition(
            after.droppedTransmits >= before.droppedTransmits && after.droppedReceives >= before.droppedReceives,
            "net drop counters went back")
    }

    /// After a service that ended normally (no DEVICE_NEEDS_RESET), with
    /// the driver areas as the driver left them (a hostile chain can point
    /// the device's writes at a ring; then nothing here holds):
    /// - the notified queue keeps no chain unless its budget ran out, since
    ///   the driver will not notify again for it (§2.7.10) and the VMM
    ///   re-serves only when told the budget ran out;
    /// - a net frame never waits beside a free receive buffer;
    /// - a used-buffer notification goes out exactly when some queue's
    ///   driver asked for one (§2.7.7: NO_INTERRUPT, or used_event).
    func checkService(_ index: Int, before: Snapshot, after: Snapshot) {
        let live = before.status.contains(.driverOK) && before.status.isDisjoint(with: [.needsReset, .failed])
        guard live, after.status.isDisjoint(with: [.needsReset, .failed]), before.driverAreas == after.driverAreas
        else { return }
        let queues = (0..<queueCount).map { transport.queue($0) }
        // Only a notification of a live queue runs the device.
        guard transport.queue(index) != nil else { return }
        if let queue = queues[index], net == nil || index == NetDevice.Queue.transmit {
            precondition(
                queue.budgetExhausted || (try? queue.hasAvailable()) == false,
                "queue \(index) left chains after its notification with budget to spare")
        }
        if net != nil, let receive = queues[NetDevice.Queue.receive], netBackend.peekFrame() != nil {
            precondition(
                receive.budgetExhausted || (try? receive.hasAvailable()) == false,
                "a frame waits beside a free receive buffer")
        }
        var wanted = false
        for (old, queue) in zip(before.queues, queues) {
            guard let old, let queue, old.queue === queue, queue.nextUsed != old.nextUsed else { continue }
            let ring = queue.configuration.availableRing
            if queue.eventIndex {
                guard let usedEvent: UInt16 = try? memory.read(at: ring + 4 + 2 * UInt64(queue.configuration.size))
                else { continue }
                // vring_need_event: did used idx pass used_event in this service?
                if queue.nextUsed &- usedEvent &- 1 < queue.nextUsed &- old.nextUsed { wanted = true }
            } else if let flags: UInt16 = try? memory.read(at: ring), flags & 1 == 0 {
                wanted = true
            }
        }
        let raised = after.interrupts - before.interrupts
        precondition(raised == (wanted ? 1 : 0), "\(raised) interrupts where the driver asked for \(wanted ? 1 : 0)")
        if wanted { precondition(transport.interruptStatus & MMIOInterrupt.usedBuffer != 0, "used-buffer bit not set") }
    }

    /// §4.2.2: fixed identification registers, config space as the device
    /// says, nothing wider than the access, zero for refused accesses.
    func checkRead(offset: UInt64, size: Int, value: UInt64) {
        if offset >= MMIORegister.config {
            let space = transport.device.configSpace
            let start = Int(offset - MMIORegister.config)
            if [1, 2, 4].contains(size), start % size == 0, start + size <= space.count {
                let expected = space[start..<start + size].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                precondition(
                    value == expected,
                    "config read at 0x\(String(offset, radix: 16)) gave 0x\(String(value, radix: 16))")
            } else {
                precondition(value == 0, "refused config read gave 0x\(String(value, radix: 16))")
            }
            return
        }
        guard size == 4, offset % 4 == 0 else { return precondition(value == 0, "refused read gave a value") }
        precondition(value <= UInt64(UInt32.max), "a 32-bit register read gave 0x\(String(value, radix: 16))")
        switch offset {
        case MMIORegister.magicValue: precondition(value == UInt64(MMIORegister.magic), "bad magic")
        case MMIORegister.version: precondition(value == 2, "bad version")
        case MMIORegister.deviceID: precondition(value == UInt64(transport.device.deviceType.rawValue), "bad device ID")
        case MMIORegister.status: precondition(value == UInt64(transport.status.rawValue), "status register disagrees")
        default: break
        }
    }
}

extension VirtioFuzzing {
    /// Byte 0 picks the device (`MMIOFuzzHarness.init(control:)`); the rest
    /// is a program of `MMIOFuzzOperation`s, at most 512 steps. Returns the
    /// used elements pushed, so a seeded run can tell it reached service.
    @discardableResult
    public static func mmio(_ bytes: UnsafeRawBufferPointer) -> Int {
        FuzzProgram.run(bytes, on: MMIOFuzzHarness.self, limit: 512).usedElements
    }
}
