import CKiln
import KilnTelemetry
import Testing

@testable import KilnMachine

#if canImport(Glibc)
    import Glibc
#endif

/// Exit decoding and dispatch with no KVM: a `kvm_run` page in ordinary
/// memory, filled as KVM would fill it.
@Suite struct VCPUExitTests {
    /// Records accesses; reads answer 0xA0 + offset.
    final class RecordingDevice: BusDevice {
        var writes: [(offset: UInt64, bytes: [UInt8])] = []
        func read(offset: UInt64, into data: UnsafeMutableRawBufferPointer) {
            for index in data.indices { data[index] = 0xA0 &+ UInt8(truncatingIfNeeded: offset) &+ UInt8(index) }
        }
        func write(offset: UInt64, from data: UnsafeRawBufferPointer) { writes.append((offset, Array(data))) }
    }

    static let pageSize = 4096

    final class Page {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: VCPUExitTests.pageSize, alignment: 4096)
        var run: UnsafeMutablePointer<kvm_run> { raw.assumingMemoryBound(to: kvm_run.self) }
        init() { raw.initializeMemory(as: UInt8.self, repeating: 0, count: VCPUExitTests.pageSize) }
        deinit { raw.deallocate() }

        /// Fills the page as KVM does for a port I/O exit.
        func portIO(out: Bool, size: UInt8, port: UInt16, count: UInt32, dataOffset: Int) {
            run.pointee.exit_reason = UInt32(KVM_EXIT_IO)
            run.pointee.io.direction = UInt8(out ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN)
            run.pointee.io.size = size
            run.pointee.io.port = port
            run.pointee.io.count = count
            run.pointee.io.data_offset = UInt64(dataOffset)
        }
    }

    struct Rig {
        let ports = Bus(name: "port I/O"), memory = Bus(name: "MMIO")
        let device = RecordingDevice()
        let registry = MetricsRegistry()
        let dispatcher: VCPUExitDispatcher
        init() throws {
            try ports.insert(device, base: 0x3f8, size: 8)
            try memory.insert(device, base: 0xd000_1000, size: 0x1000)
            dispatcher = VCPUExitDispatcher(
                portBus: ports, memoryBus: memory, exits: VCPUExitCounters(registry),
                trace: nil)
        }
        func handle(_ page: Page) -> VCPUExitDispatcher.Outcome {
            dispatcher.handle(VCPUExit.decode(page.run, pageSize: VCPUExitTests.pageSize), vcpu: 0, rip: { "1234" })
        }
    }

    /// The README's exit codes for what a vCPU meets: 2 for a guest or KVM
    /// failure (internal error, failed entry), 0 for a triple fault (a
    /// `reboot=t` reset); 3 when every vCPU halted, 1 is bad input before boot.
    @Test func vcpuExitsEndKilnWithTheDocumentedExitCodes() throws {
        let rig = try Rig()
        func code(_ exit: VCPUExit) -> Int32? {
            guard case let .stop(reason) = rig.dispatcher.handle(exit, vcpu: 0, rip: { "1234" }) else { return nil }
            return reason.exitCode
        }
        #expect(code(.internalError(suberror: 1)) == 2)
        #expect(code(.failEntry(reason: 0x8000_0021)) == 2)
        #expect(code(.unknown(reason: 9999)) == 2)
        #expect(code(.shutdown) == 0)
        #expect(code(.systemEvent(type: UInt32(KVM_SYSTEM_EVENT_SHUTDOWN))) == 0)
        #expect(code(.interrupted) == nil)
        #expect(MachineExitReason.allVCPUsHalted.exitCode == 3)
    }

    @Test func aStringOutWritesEachElementToThePort() throws {
        let rig = try Rig(), page = Page()
        page.portIO(out: true, size: 1, port: 0x3f8, count: 3, dataOffset: 0x800)
        (page.raw + 0x800).copyMemory(from: Array("abc".utf8), byteCount: 3)
        #expect(rig.handle(page) == .resume)
        #expect(rig.device.writes.map(\.bytes) == [[0x61], [0x62], [0x63]])
        #expect(rig.device.writes.allSatisfy { $0.offset == 0 })
    }

    @Test func anMMIOReadIsAnsweredInTheRunPage() throws {
        let rig = try Rig(), page = Page()
        page.run.pointee.exit_reason = UInt32(KVM_EXIT_MMIO)
        page.run.pointee.mmio.phys_addr = 0xd000_1070
        page.run.pointee.mmio.len = 4
        page.run.pointee.mmio.is_write = 0
        #expect(rig.handle(page) == .resume)
        let answered = withUnsafeBytes(of: page.run.pointee.mmio.data) { Array($0.prefix(4)) }
        #expect(answered == [0x10, 0x11, 0x12, 0x13], "0xA0 + 0x70 wraps to 0x10")
    }

    @Test func anUnclaimedPortReadsAllOnes() throws {
        let rig = try Rig(), page = Page()
        page.portIO(out: false, size: 2, port: 0x80, count: 1, dataOffset: 0x400)
        #expect(rig.handle(page) == .resume)
        #expect(Array(UnsafeRawBufferPointer(start: page.raw + 0x400, count: 2)) == [0xff, 0xff])
    }

    @Test func dataPlacedOutsideThePageIsRefusedNotFollowed() throws {
        let rig = try Rig(), page = Page()
        page.portIO(out: true, size: 4, port: 0x3f8, count: 2, dataOffset: VCPUExitTests.pageSize - 4)
        guard case let .stop(.failure(message)) = rig.handle(page) else {
            Issue.record("an I/O exit whose data runs past the page must stop the machine")
            return
        }
        #expect(message.contains("unexpected KVM exit 2"), "\(message)")
        #expect(rig.device.writes.isEmpty)
    }

    @Test func lifeCycleExitsBecomeExitReasons() throws {
        let rig = try Rig(), page = Page()
        page.run.pointee.exit_reason = UInt32(KVM_EXIT_SHUTDOWN)
        guard case .stop(.reset) = rig.handle(page) else { Issue.record("a triple fault resets"); return }
        page.run.pointee.exit_reason = UInt32(KVM_EXIT_SYSTEM_EVENT)
        page.run.pointee.system_event.type = UInt32(KVM_SYSTEM_EVENT_SHUTDOWN)
        #expect(rig.handle(page) == .stop(.poweroff("KVM_SYSTEM_EVENT_SHUTDOWN")))
        page.run.pointee.exit_reason = UInt32(KVM_EXIT_HLT)
        #expect(rig.handle(page) == .halted)
        page.run.pointee.exit_reason = UInt32(KVM_EXIT_INTR)
        #expect(rig.handle(page) == .resume)
        page.run.pointee.exit_reason = UInt32(KVM_EXIT_INTERNAL_ERROR)
        page.run.pointee.internal.suberror = 3
        guard case let .stop(.failure(message)) = rig.handle(page) else {
            Issue.record("an internal error fails"); return
        }
        #expect(message.contains("suberror 3") && message.contains("rip 0x1234"))
        let snapshot = rig.registry.snapshot(now: 0).encoded()
        #expect(
            snapshot.contains("\"exit_shutdown\":1") && snapshot.contains("\"exit_internal_error\":1"), "\(snapshot)")
    }
}
