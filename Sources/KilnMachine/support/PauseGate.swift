import KilnSystem

/// Where vCPU threads park while the VM is paused (`PATCH /vm`). The event
/// loop closes the gate, kicks every vCPU out of KVM_RUN and waits until all
/// have parked; opening it lets them run again.
final class PauseGate: Sendable {
    private struct State {
        var closed = false
        var parked = 0
    }
    private let state = Locked(State())

    var isClosed: Bool { state.withLock { $0.closed } }

    func close() { state.withLock { $0.closed = true } }

    func open() {
        state.withLock { $0.closed = false }
        state.broadcast()
    }

    /// vCPU side: blocks while the gate is closed. Returns whether it parked.
    @discardableResult
    func parkWhileClosed() -> Bool {
        let parking = state.withLock { state -> Bool in
            guard state.closed else { return false }
            state.parked += 1
            return true
        }
        guard parking else { return false }
        state.broadcast()
        state.withLock(waitingUntil: { !$0.closed }, { state, _ in state.parked -= 1 })
        return true
    }

    /// Event-loop side: waits until `count` threads are parked, or the
    /// timeout passes (false then).
    func waitUntilParked(_ count: Int, timeoutNanoseconds: UInt64) -> Bool {
        state.withLock(
            waitingUntil: { $0.parked >= count }, timeoutNanoseconds: timeoutNanoseconds, { _, ready in ready })
    }
}
