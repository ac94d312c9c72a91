import KilnTelemetry

/// The machine's counters in the VMM's metrics registry: vCPU exits by
/// reason (summed over vCPUs, as Firecracker reports them), per-device
/// accesses, and the boot time the boot-timer device measured.
public final class MachineMetrics: @unchecked Sendable { // immutable; its counters are atomics
    public let registry: MetricsRegistry
    let exits: VCPUExitCounters
    let bootTimeMicroseconds: Gauge
    let bootCPUMicroseconds: Gauge
    let ctrlAltDelPresses: Counter

    public init(registry: MetricsRegistry = MetricsRegistry()) {
        self.registry = registry
        exits = VCPUExitCounters(registry)
        bootTimeMicroseconds = registry.gauge("boot", "boot_time_us")
        bootCPUMicroseconds = registry.gauge("boot", "boot_cpu_us")
        ctrlAltDelPresses = registry.counter("i8042", "ctrl_alt_del")
    }

    /// The counters of a bus window whose accesses are reported under `group`.
    func accessCounters(_ group: String) -> Bus.AccessCounters {
        Bus.AccessCounters(reads: registry.counter(group, "reads"), writes: registry.counter(group, "writes"))
    }
}

/// KVM exit reasons (api.rst §5, struct kvm_run exit_reason) as counters.
final class VCPUExitCounters: @unchecked Sendable { // immutable; its counters are atomics
    let ioIn, ioOut, mmioRead, mmioWrite, halt, shutdown, systemEvent, internalError, failEntry, interrupted,
        other: Counter

    init(_ registry: MetricsRegistry) {
        func counter(_ name: String) -> Counter { registry.counter("vcpu", name) }
        ioIn = counter("exit_io_in")
        ioOut = counter("exit_io_out")
        mmioRead = counter("exit_mmio_read")
        mmioWrite = counter("exit_mmio_write")
        halt = counter("exit_hlt")
        shutdown = counter("exit_shutdown")
        systemEvent = counter("exit_system_event")
        internalError = counter("exit_internal_error")
        failEntry = counter("exit_fail_entry")
        interrupted = counter("exit_interrupted")
        other = counter("exit_other")
    }
}
