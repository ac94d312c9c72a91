import KilnConfig
import KilnMemory
import KilnSystem
import KilnTelemetry
import KilnVirtio

/// The machine's virtio-mmio devices, from the configuration to the guest.
///
/// In two steps, because the guest's boot image needs the devices' places
/// (ACPI DSDT, command line) before the VM exists, and wiring needs the VM:
/// 1. `init` opens every backend (drive files, TAPs) and lays the devices
///    out: device i gets the 4 KiB window at `X86Layout.virtioMMIOStart` +
///    i × 4 KiB and GSI `firstGSI` + i. Bad input is refused here, before
///    any KVM object exists.
/// 2. `wire` does for each device what one function does in Firecracker's
///    device manager: an irqfd for its GSI, the transport on the MMIO bus,
///    one ioeventfd per queue on QueueNotify (datamatch on the index).
/// `subscribe` then hands the queue eventfds and backend descriptors to the
/// event loop.
final class VirtioDeviceManager {
    /// Firecracker's GSI range for virtio devices: above the legacy ISA
    /// lines kiln uses (1, 2, 4) and within the IOAPIC's 24 pins.
    static let firstGSI: UInt32 = 5
    static let lastGSI: UInt32 = InterruptRouting.ioapicPins - 1
    static var capacity: Int { Int(lastGSI - firstGSI + 1) }

    struct Entry {
        let name: String
        let device: VirtioDevice
        let base: UInt64
        let gsi: UInt32
        /// The TAP behind a net device, watched by the event loop.
        let tap: TapNetBackend?
        /// The drive behind a block device, for PATCH /drives.
        var drive: (configuration: BlockDeviceConfig, backend: CountedBlockBackend)?
        /// The Unix sockets behind the vsock device, served by the event loop.
        var vsock: UnixVsockBackend?
    }

    let memory: GuestMemory
    private(set) var entries: [Entry] = []
    private(set) var slots: [VirtioMMIOSlot] = []
    /// Kernel command-line words the devices add (root=…, ro/rw).
    private(set) var commandLineWords: [String] = []
    /// Each drive's open file, by drive id, kept open with the machine.
    private var driveFiles: [String: DriveFile] = [:]
    private let registry: MetricsRegistry
    private let needsReset: Counter
    private let log: (String) -> Void

    /// `vsockSocket` is `uds_path` as bound when vsock was configured;
    /// without one (or for another path) it is bound here.
    init(
        configuration: VMConfig, memory: GuestMemory, registry: MetricsRegistry, vsockSocket: VsockHostSocket? = nil,
        log: @escaping (String) -> Void
    ) throws {
        self.memory = memory
        self.registry = registry
        self.log = log
        needsReset = registry.counter("virtio", "device_needs_reset")
        try Self.refuseUnsupported(configuration)
        let deviceCount =
            configuration.drives.count + configuration.networkInterfaces.count
            + (configuration.entropy == nil ? 0 : 1) + (configuration.vsock == nil ? 0 : 1)
        guard deviceCount <= Self.capacity else {
            throw BootInputError.tooManyDevices(configured: deviceCount, capacity: Self.capacity)
        }

        // The root drive first, so that the guest names it /dev/vda, as
        // Firecracker does; the others keep their configured order.
        let drives = configuration.drives.filter(\.isRootDevice) + configuration.drives.filter { !$0.isRootDevice }
        for drive in drives {
            // Firecracker's Async engine is io_uring, a host-side choice the
            // guest cannot see: clients that default to it (bandsox) get the
            // same virtio-blk device, served by the synchronous engine.
            if drive.ioEngine == .async {
                log(
                    "drive \(drive.driveID): io_engine Async is served by Kiln's synchronous engine (Kiln has no io_uring engine)"
                )
            }
            guard let path = drive.pathOnHost else {
                throw BootInputError.drivePathMissing(driveID: drive.driveID)
            }
            let file = try openDrive(drive, path: path)
            driveFiles[drive.driveID] = file
            let group = "block_\(drive.driveID)"
            let backend = CountedBlockBackend(file.backend, registry: registry, group: group)
            let throttle = IOThrottle.configured(
                drive.rateLimiter,
                counter: registry.counter(group, "rate_limiter_throttled_events"))
            append(
                name: "block \(drive.driveID)",
                device: BlockDevice(memory: memory, backend: backend, throttle: throttle),
                tap: nil, drive: (drive, backend))
            if drive.isRootDevice {
                commandLineWords.append(drive.partUUID.map { "root=PARTUUID=\($0)" } ?? "root=/dev/vda")
                commandLineWords.append(drive.isReadOnly ? "ro" : "rw")
            }
        }
        for interface in configuration.networkInterfaces {
            let group = "net_\(interface.ifaceID)"
            let tap = try TapNetBackend(name: interface.hostDevName, registry: registry, group: group)
            let mac = interface.guestMAC?.bytes ?? Self.defaultMAC(index: entries.count)
            let receive = IOThrottle.configured(
                interface.rxRateLimiter,
                counter: registry.counter(group, "rx_rate_limiter_throttled"))
            let transmit = IOThrottle.configured(
                interface.txRateLimiter,
                counter: registry.counter(group, "tx_rate_limiter_throttled"))
            append(
                name: "net \(interface.ifaceID)",
                device: NetDevice(
                    memory: memory, backend: tap, mac: mac,
                    receiveThrottle: receive, transmitThrottle: transmit),
                tap: tap, drive: nil)
        }
        if let entropy = configuration.entropy {
            let source = RandomEntropySource(registry: registry, group: "entropy")
            let throttle = IOThrottle.configured(
                entropy.rateLimiter,
                counter: registry.counter("entropy", "entropy_rate_limiter_throttled"))
            append(
                name: "entropy", device: EntropyDevice(memory: memory, source: source, throttle: throttle), tap: nil,
                drive: nil)
        }
        if let vsock = configuration.vsock {
            // Last, so the other devices keep the places (and guest names)
            // they have without one.
            let counters = RegistryVsockCounters(registry: registry)
            let socket =
                try vsockSocket.flatMap { $0.path == vsock.udsPath ? $0 : nil }
                ?? VsockHostSocket(path: vsock.udsPath)
            let backend = try UnixVsockBackend(socket: socket, counters: counters, log: log)
            let device = VsockDevice(
                memory: memory, guestCID: UInt64(vsock.guestCID), backend: backend,
                counters: counters, clock: MonotonicClock.nanoseconds)
            append(name: "vsock", device: device, tap: nil, drive: nil)
            entries[entries.count - 1].vsock = backend
        }
    }

    private func append(
        name: String, device: VirtioDevice, tap: TapNetBackend?,
        drive: (configuration: BlockDeviceConfig, backend: CountedBlockBackend)?
    ) {
        let index = UInt64(entries.count)
        entries.append(
            Entry(
                name: name, device: device, base: X86Layout.virtioMMIOStart + index * X86Layout.virtioMMIOSize,
                gsi: Self.firstGSI + UInt32(index), tap: tap, drive: drive))
    }

    /// A disk whose size is not whole sectors is served short of its tail,
    /// with a warning, as Firecracker does.
    func openDrive(_ drive: BlockDeviceConfig, path: String) throws -> DriveFile {
        let file = try Self.openDriveFile(drive, path: path)
        if file.trailingBytes > 0 {
            log(
                "drive \(drive.driveID): \(path) is not a whole number of 512-byte sectors; "
                    + "its last \(file.trailingBytes) bytes are not visible to the guest")
        }
        return file
    }

    /// Opens `path` as `drive`'s backing file, as InstanceStart and PATCH do:
    /// a file that cannot be opened with the drive's access, is not a regular
    /// file or block device, or holds no whole sector is refused, naming the
    /// drive.
    static func openDriveFile(_ drive: BlockDeviceConfig, path: String) throws -> DriveFile {
        let file: DriveFile
        do {
            file = try DriveFile(
                path: path, readOnly: drive.isReadOnly, syncOnFlush: drive.cacheType == .writeback,
                identifier: drive.driveID)
        } catch let error as SystemError {
            throw BootInputError.driveUnopenable(driveID: drive.driveID, path: path, error)
        }
        guard file.backend.sectorCount > 0 else {
            throw BootInputError.driveSmallerThanSector(driveID: drive.driveID, path: path)
        }
        return file
    }

    /// PATCH /drives after boot (on the event loop), with the drive as the
    /// API merged it. A changed `path_on_host` re-opens the drive, which the
    /// device then serves from, and the guest hears of the new capacity
    /// through a configuration-change interrupt (virtio 1.2 §5.2.4: Linux
    /// re-reads `capacity`); requests in flight finish under the old file,
    /// since the swap takes the device's lock. A changed `rate_limiter`
    /// replaces the device's buckets (a bucket left out keeps its state).
    func updateDrive(_ drive: BlockDeviceConfig) throws {
        guard let index = entries.firstIndex(where: { $0.drive?.configuration.driveID == drive.driveID }),
            let current = entries[index].drive, slots.indices.contains(index)
        else {
            throw MachineControlError.driveNotAttached(drive.driveID)
        }
        if let path = drive.pathOnHost, path != current.configuration.pathOnHost {
            let file = try openDrive(current.configuration, path: path)
            slots[index].withTransport { transport in
                current.backend.inner = file.backend
                transport.configurationChanged()
            }
            driveFiles[drive.driveID] = file // the old file closes here
            entries[index].drive?.configuration.pathOnHost = path
            log("drive \(drive.driveID): now \(path), \(file.backend.sectorCount) sectors")
        }
        if drive.rateLimiter != current.configuration.rateLimiter {
            _ = updateRateLimiters(driveID: drive.driveID, drive.rateLimiter)
            entries[index].drive?.configuration.rateLimiter = drive.rateLimiter
        }
    }

    /// What the firmware tables announce (DSDT `LNRO0005` devices).
    var platformDevices: [PlatformDescription.VirtioMMIOPlacement] {
        entries.map { .init(base: $0.base, size: X86Layout.virtioMMIOSize, gsi: $0.gsi) }
    }

    /// The devices in Linux's `virtio_mmio.device=<size>@<base>:<irq>` form,
    /// for guests without ACPI (the test guest, kernels built with
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), followed by the root drive's
    /// words. Debian's kernels ignore the first and find the DSDT's.
    var commandLine: String {
        let devices = entries.map { "virtio_mmio.device=4K@0x\(String($0.base, radix: 16)):\($0.gsi)" }
        // Joined here: the standard library's `joined(separator:)` on
        // `[String]` runs unspecialized and looks its witnesses up at run
        // time (77 k instructions, 3% of a launch).
        var line = ""
        for (index, word) in (devices + commandLineWords).enumerated() {
            if index > 0 { line += " " }
            line += word
        }
        return line
    }

    /// Puts every device on the VM: irqfd, transport on the bus, ioeventfds.
    func wire(vm: KVMVirtualMachine, bus: Bus) throws {
        for entry in entries {
            let interrupt = PublishingInterrupt(try vm.interruptEventFD(gsi: entry.gsi))
            let transport = VirtioMMIOTransport(device: entry.device, memory: memory, interrupt: interrupt)
            interrupt.transport = transport
            var events: [EventFD] = []
            do {
                for queue in entry.device.queueMaxSizes.indices {
                    let event = try EventFD()
                    events.append(event)
                    try vm.registerQueueNotify(
                        address: entry.base + MMIORegister.queueNotify, queue: UInt32(queue),
                        event: event)
                }
            } catch {
                for event in events { event.close() }
                throw error
            }
            let slot = VirtioMMIOSlot(
                name: entry.name, transport: transport,
                interrupt: interrupt, queueEvents: events, failures: needsReset, log: log)
            slots.append(slot)
            try bus.insert(slot, base: entry.base, size: X86Layout.virtioMMIOSize)
        }
    }

    /// Serves every queue eventfd and TAP on `loop`; returns the tokens.
    func subscribe(to loop: EventLoop) throws -> [EventLoop.Token] {
        var tokens: [EventLoop.Token] = []
        for (slot, entry) in zip(slots, entries) {
            let resumer = ThrottleResumer(slot: slot, loop: loop)
            var tapToken: EventLoop.Token?
            // A TAP is watched only while no frame waits for a guest buffer.
            let rearmTap = { [weak loop] in
                guard let tap = entry.tap, let token = tapToken else { return }
                try? loop?.modify(token, events: tap.pending == nil ? .readable : [])
            }
            for (index, event) in slot.queueEvents.enumerated() {
                tokens.append(
                    try loop.subscribe(event.descriptor) { _ in
                        _ = try? event.drain()
                        if slot.serveQueue(index) { try? event.signal() }
                        resumer.serviceEnded()
                        rearmTap()
                        if let vsock = entry.vsock { slot.withTransport { _ in vsock.queueServed() } }
                    })
            }
            if let vsock = entry.vsock, let device = entry.device as? VsockDevice {
                let receive = slot.queueEvents[VsockDevice.Queue.receive]
                tokens += try vsock.attach(
                    device: device, loop: loop, serialize: { body in slot.withTransport { _ in body() } },
                    serveReceive: {
                        if slot.serveQueue(VsockDevice.Queue.receive) { try? receive.signal() }
                    })
            }
            if let tap = entry.tap {
                let token = try loop.subscribe(tap.descriptor) { _ in
                    // Take the frame first: if the device is not live yet
                    // it waits there, and the TAP is left alone until the
                    // guest posts receive buffers.
                    _ = slot.withTransport { _ in tap.peekFrame() }
                    if slot.serveQueue(NetDevice.Queue.receive) {
                        try? slot.queueEvents[NetDevice.Queue.receive].signal()
                    }
                    resumer.serviceEnded()
                    rearmTap()
                }
                tapToken = token
                tokens.append(token)
            }
        }
        return tokens
    }

    /// Settings the configuration may carry that kiln does not implement:
    /// refused by name rather than ignored.
    static func refuseUnsupported(_ configuration: VMConfig) throws {
        for drive in configuration.drives {
            if drive.socket != nil {
                throw BootInputError.driveVhostUser(driveID: drive.driveID)
            }
        }
    }

    /// A locally administered unicast MAC (02:…) for an interface given none.
    static func defaultMAC(index: Int) -> [UInt8] { [0x02, 0x4b, 0x49, 0x4c, 0x4e, UInt8(truncatingIfNeeded: index)] }
}
