import KilnMemory
import KilnSystem
import KilnTelemetry
import KilnVirtio
import Synchronization

/// One virtio-mmio device on the machine's MMIO bus: KilnVirtio's pure
/// transport behind the one lock that serializes it. The last hop of a
/// guest MMIO access: the bus hands it here (`Bus.read`/`Bus.write`), and
/// `read`/`write` below pass it to `VirtioMMIOTransport`
/// (KilnVirtio/transport/), whose interrupt and queue eventfds
/// `VirtioDeviceManager.wire` sets up.
///
/// Two threads reach a transport. vCPU threads do register accesses (a
/// `KVM_EXIT_MMIO` through the bus); the event loop serves queues when a
/// queue's ioeventfd or a backend fires. vCPU threads never do device I/O:
/// QueueNotify is caught by KVM's ioeventfd, and one that reaches a vCPU
/// anyway (another width, say) only signals that queue's eventfd.
///
/// Lock order: `state`'s lock comes before the logger's (a device failure
/// is logged with it held) and nothing else is taken under it (the
/// backend's descriptors are not locks); the event loop takes it per queue
/// service, a vCPU per register access.
///
/// InterruptStatus is read without the lock: a guest's interrupt handler
/// reads it first thing, and must not wait while the event loop holds the
/// lock for a disk write. The transport's value is published to an atomic
/// before every interrupt and after every locked operation.
final class VirtioMMIOSlot: BusDevice, @unchecked Sendable { // the transport is reached only under `state`'s lock
    let name: String
    /// One eventfd per queue, signalled by KVM on a QueueNotify write of
    /// that queue's index (datamatch), or by `write` below.
    let queueEvents: [EventFD]
    /// The device model and whether its current failure was logged.
    private struct State {
        let transport: VirtioMMIOTransport
        var failureLogged = false
    }
    private let state: Locked<State>
    private let interrupt: PublishingInterrupt
    private let failures: Counter
    private let log: (String) -> Void

    init(
        name: String, transport: VirtioMMIOTransport, interrupt: PublishingInterrupt,
        queueEvents: [EventFD], failures: Counter, log: @escaping (String) -> Void
    ) {
        self.interrupt = interrupt
        self.log = log
        self.name = name
        state = Locked(State(transport: transport))
        self.queueEvents = queueEvents
        self.failures = failures
    }

    deinit { for event in queueEvents { event.close() } }

    /// The device model, for the event loop's backend handlers. Touch it
    /// only inside `withTransport`.
    func withTransport<R>(_ body: (VirtioMMIOTransport) throws -> R) rethrows -> R {
        try state.withLock { try body($0.transport) }
    }

    // MARK: Register accesses (vCPU threads)

    func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
        let value: UInt64
        if offset == MMIORegister.interruptStatus, data.count == 4 {
            value = UInt64(interrupt.published)
        } else {
            value = state.withLock { $0.transport.read(offset: offset, size: data.count) }
        }
        for index in data.indices { data[index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
    }

    func write(offset: UInt64, from data: UnsafeRawBufferPointer) {
        var value: UInt64 = 0
        for index in data.indices.reversed() { value = value << 8 | UInt64(data[index]) }
        if offset == MMIORegister.queueNotify {
            // §4.2.3.3: the value is the queue index. A bad index is a
            // driver error with nothing to serve; I/O waits for the loop.
            if data.count == 4, value < UInt64(queueEvents.count) { try? queueEvents[Int(value)].signal() }
            return
        }
        state.withLock { state in
            state.transport.write(offset: offset, size: data.count, value: value)
            interrupt.publish() // InterruptACK and reset clear bits
            // QueueReady with a bad layout fails the device here, and a
            // reset (Status 0) ends a failure: both are seen at once.
            noteFailure(&state)
        }
    }

    // MARK: Queue service (the event loop)

    /// Serves queue `index` after its eventfd fired. Returns true when
    /// chains are still waiting (the per-call budget ran out): the caller
    /// signals the eventfd again so other work runs in between.
    func serveQueue(_ index: Int) -> Bool {
        state.withLock { state in
            let more = state.transport.processQueue(index)
            interrupt.publish()
            noteFailure(&state)
            return more
        }
    }

    /// A device that entered DEVICE_NEEDS_RESET is counted and logged once
    /// until the driver resets it; the VMM and other devices run on.
    private func noteFailure(_ state: inout State) {
        guard let failure = state.transport.failure else {
            state.failureLogged = false
            return
        }
        guard !state.failureLogged else { return }
        state.failureLogged = true
        failures.increment()
        log("\(name): device needs reset: \(failure)")
    }
}

/// The transport's interrupt: publishes InterruptStatus for lock-free
/// reads, then raises the GSI through its irqfd (one eventfd write). The
/// transport calls `trigger` with the slot's lock held, so reading its
/// status there is safe.
final class PublishingInterrupt: InterruptSignal, @unchecked Sendable { // `transport` is set before any thread sees it
    let line: InterruptEventFD
    private let status = Atomic<UInt32>(0)
    /// Set once, right after the transport is made (it needs this object).
    unowned(unsafe) var transport: VirtioMMIOTransport?

    init(_ line: InterruptEventFD) { self.line = line }

    var published: UInt32 { status.load(ordering: .acquiring) }

    /// With the slot's lock held.
    func publish() { status.store(transport?.interruptStatus ?? 0, ordering: .releasing) }

    func trigger() {
        publish()
        line.trigger()
    }
}
