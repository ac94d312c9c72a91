import KilnJSON
import KilnSystem
import Synchronization

/// A monotonically increasing count, safe to bump from any thread.
public final class Counter: Sendable {
    private let storage = Atomic<UInt64>(0)

    public init() {}

    public func increment(by amount: UInt64 = 1) {
        storage.wrappingAdd(amount, ordering: .relaxed)
    }

    public var value: UInt64 { storage.load(ordering: .relaxed) }
}

/// A value that is set rather than counted (e.g. the boot time).
public final class Gauge: Sendable {
    private let storage = Atomic<UInt64>(0)

    public init() {}

    public func set(_ value: UInt64) { storage.store(value, ordering: .relaxed) }

    public var value: UInt64 { storage.load(ordering: .relaxed) }
}

/// Named groups of counters and gauges, serialised as one JSON object per
/// flush. Metrics are registered while the VMM starts, single-threaded;
/// afterwards only the atomics change, so a flush takes no lock.
// @unchecked Sendable: metrics register while one thread builds the VMM; snapshots only read
public final class MetricsRegistry: @unchecked Sendable {
    public enum Metric {
        case counter(Counter)
        case gauge(Gauge)

        var value: UInt64 {
            switch self {
            case let .counter(counter): return counter.value
            case let .gauge(gauge): return gauge.value
            }
        }
    }

    private var groups: [(name: String, metrics: [(name: String, metric: Metric)])] = []

    public init() {}

    /// The counter `group.name`, registered on first use. Asking again
    /// returns the same counter: a machine built again after a refused
    /// InstanceStart keeps counting where the first attempt registered.
    public func counter(_ group: String, _ name: String) -> Counter {
        if let index = groups.firstIndex(where: { $0.name == group }),
            let existing = groups[index].metrics.first(where: { $0.name == name }),
            case let .counter(counter) = existing.metric
        {
            return counter
        }
        let counter = Counter()
        register(group, name, .counter(counter))
        return counter
    }

    public func gauge(_ group: String, _ name: String) -> Gauge {
        let gauge = Gauge()
        register(group, name, .gauge(gauge))
        return gauge
    }

    private func register(_ group: String, _ name: String, _ metric: Metric) {
        if let index = groups.firstIndex(where: { $0.name == group }) {
            precondition(
                !groups[index].metrics.contains { $0.name == name }, "metric \(group).\(name) registered twice")
            groups[index].metrics.append((name, metric))
        } else {
            groups.append((group, [(name, metric)]))
        }
    }

    /// A snapshot of every value, cumulative since start, stamped with the
    /// monotonic time of the flush.
    public func snapshot(now: UInt64 = MonotonicClock.nanoseconds()) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = [("ts_ns", .integer(now))]
        for group in groups {
            members.append((group.name, .object(group.metrics.map { ($0.name, .integer($0.metric.value)) })))
        }
        return .object(members)
    }
}
