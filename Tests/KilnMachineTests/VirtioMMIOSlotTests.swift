import KilnMemory
import KilnSystem
import KilnTelemetry
import KilnVirtio
import Synchronization
import Testing

@testable import KilnMachine

#if canImport(Glibc)
    import Glibc
#endif

/// The machine's side of one virtio-mmio device: register accesses as the
/// bus hands them over, QueueNotify turned into an eventfd signal, and
/// InterruptStatus readable while the device's lock is held elsewhere.
@Suite struct VirtioMMIOSlotTests {
    final class ZeroSource: EntropySource {
        func fill(_ buffer: UnsafeMutableRawBufferPointer) throws {
            for index in buffer.indices { buffer[index] = 0 }
        }
    }

    struct Rig: Sendable {
        let slot: VirtioMMIOSlot
        let irq: EventFD
        let queue: EventFD

        init(failures: Counter = Counter(), log: @escaping (String) -> Void = { _ in }) throws {
            let memory = try HeapGuestMemory(size: 1 << 20)
            irq = try EventFD()
            queue = try EventFD()
            let interrupt = PublishingInterrupt(InterruptEventFD(irq))
            let transport = VirtioMMIOTransport(
                device: EntropyDevice(memory: memory, source: ZeroSource()),
                memory: memory, interrupt: interrupt)
            interrupt.transport = transport
            slot = VirtioMMIOSlot(
                name: "entropy", transport: transport,
                interrupt: interrupt, queueEvents: [queue], failures: failures, log: log)
        }

        func write32(_ offset: UInt64, _ value: UInt32) {
            withUnsafeBytes(of: value.littleEndian) { slot.write(offset: offset, from: $0) }
        }

        func read32(_ offset: UInt64) -> UInt32 {
            var value: UInt32 = 0
            withUnsafeMutableBytes(of: &value) { slot.read(offset: offset, into: $0) }
            return UInt32(littleEndian: value)
        }

        /// virtio 1.2 §3.1.1: ACKNOWLEDGE, DRIVER, VERSION_1, FEATURES_OK, DRIVER_OK.
        func bringUp() {
            write32(MMIORegister.status, 1)
            write32(MMIORegister.status, 3)
            write32(MMIORegister.driverFeaturesSelect, 1)
            write32(MMIORegister.driverFeatures, 1)
            write32(MMIORegister.status, 11)
            write32(MMIORegister.status, 15)
        }
    }

    @Test func queueNotifySignalsThatQueuesEventfdAndNothingElse() throws {
        let rig = try Rig()
        rig.write32(MMIORegister.queueNotify, 7) // no such queue: ignored
        #expect(try rig.queue.drain() == 0)
        rig.write32(MMIORegister.queueNotify, 0)
        #expect(try rig.queue.drain() == 1)
    }

    @Test func interruptStatusIsPublishedOnTriggerAndClearedByAck() throws {
        let rig = try Rig()
        rig.bringUp()
        #expect(rig.read32(MMIORegister.status) == 15)
        #expect(rig.read32(MMIORegister.interruptStatus) == 0)
        rig.slot.withTransport { $0.configurationChanged() }
        #expect(rig.read32(MMIORegister.interruptStatus) == 2, "the configuration-change bit (§4.2.2)")
        #expect(try rig.irq.drain() == 1, "one irqfd write")
        rig.write32(MMIORegister.interruptAcknowledge, 2)
        #expect(rig.read32(MMIORegister.interruptStatus) == 0)
    }

    @Test func interruptStatusDoesNotWaitForTheDeviceLock() throws {
        let rig = try Rig()
        rig.bringUp()
        rig.slot.withTransport { $0.configurationChanged() }
        let held = Atomic<Bool>(false), answered = Atomic<UInt32>(0), done = Atomic<Bool>(false)
        let answeredWhileHeld = Atomic<Bool>(false)
        // The "event loop" holds the device's lock for up to 5 s, as for a
        // slow disk write, and lets go as soon as the read has answered.
        let holder = try SystemThread.spawn(name: "holder") { @Sendable in
            rig.slot.withTransport { _ in
                held.store(true, ordering: .releasing)
                let deadline = MonotonicClock.nanoseconds() + 5_000_000_000
                while !done.load(ordering: .acquiring), MonotonicClock.nanoseconds() < deadline { usleep(1000) }
                answeredWhileHeld.store(done.load(ordering: .acquiring), ordering: .releasing)
            }
        }
        while !held.load(ordering: .acquiring) { usleep(100) }
        let reader = try SystemThread.spawn(name: "vcpu") { @Sendable in
            answered.store(rig.read32(MMIORegister.interruptStatus), ordering: .releasing)
            done.store(true, ordering: .releasing)
        }
        holder.join()
        reader.join()
        // Had the read waited for the lock, the holder would have let go
        // only at its 5 s deadline, with `done` still false.
        let withoutWaiting = answeredWhileHeld.load(ordering: .acquiring), value = answered.load(ordering: .acquiring)
        #expect(withoutWaiting, "the read waited for the device's lock")
        #expect(value == 2)
    }

    /// A queue made ready with a bad layout fails the device on the vCPU's
    /// register write, with no queue service to come: logged and counted
    /// there, once. The reset ends the failure (virtio 1.2 §2.1.2), so the
    /// same mistake after it is a new failure, logged again.
    @Test func aFailureFromAQueueReadyWriteIsLoggedOnceAndAgainAfterAReset() throws {
        let lines = Mutex<[String]>([])
        let failures = Counter()
        let rig = try Rig(failures: failures, log: { line in lines.withLock { $0.append(line) } })
        for round in 1...2 {
            rig.write32(MMIORegister.status, 0)
            rig.write32(MMIORegister.status, 1)
            rig.write32(MMIORegister.status, 3)
            rig.write32(MMIORegister.driverFeaturesSelect, 1)
            rig.write32(MMIORegister.driverFeatures, 1)
            rig.write32(MMIORegister.status, 11)
            rig.write32(MMIORegister.queueSelect, 0)
            rig.write32(MMIORegister.queueSize, 3) // not a power of two (§2.7)
            rig.write32(MMIORegister.queueReady, 1)
            rig.write32(MMIORegister.queueReady, 1)
            #expect(rig.read32(MMIORegister.status) & 0x40 != 0, "DEVICE_NEEDS_RESET")
            let logged = lines.withLock { $0 }
            #expect(logged.count == round, "\(logged)")
            #expect(logged.last?.hasPrefix("entropy: device needs reset: virtqueue 0: bad queue layout") == true)
            #expect(failures.value == UInt64(round))
        }
    }
}
