/// Everything a launch has created so far, with how to undo it. When a step
/// fails, `rollBack()` undoes the entries newest first, so that a failed
/// launch leaves no folder and no cgroup behind.
///
/// Undo actions work through directory descriptors opened before the jailer
/// unshared its mount namespace: they still reach the host's tree after
/// pivot_root has hidden it. Mounts need no undo of their own: every mount is
/// made inside the jailer's private mount namespace and vanishes with it; the
/// namespace's entry returns the process to the host's one, where none of
/// them is a mount point that would block a rmdir.
public final class CleanupLedger {
    private var entries: [(what: String, undo: () throws -> Void)] = []

    public init() {}

    public var isEmpty: Bool { entries.isEmpty }

    public func record(_ what: String, undo: @escaping () throws -> Void) {
        entries.append((what, undo))
    }

    /// Undoes every entry, newest first, and returns a description of each
    /// one that could not be undone (empty when everything is gone).
    @discardableResult
    public func rollBack() -> [String] {
        var leftovers: [String] = []
        while let entry = entries.popLast() {
            do { try entry.undo() } catch { leftovers.append("\(entry.what): \(error)") }
        }
        return leftovers
    }
}
