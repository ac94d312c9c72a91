#if canImport(Glibc)
import Glibc
#endif
import CKiln
import KilnSystem

/// Step 8: only the character devices the VMM opens, owned by its user, 0600.
/// Numbers from the kernel's Documentation/admin-guide/devices.txt; the
/// userfaultfd misc minor is dynamic, so the host's node gives it.
struct DeviceNode: Equatable, Sendable {
    let path: String
    let device: UInt64

    static func required(userfaultfd: UInt64?) -> [DeviceNode] {
        var nodes = [
            DeviceNode(path: "/dev/kvm", device: ckiln_makedev(10, 232)),
            DeviceNode(path: "/dev/net/tun", device: ckiln_makedev(10, 200)),
            DeviceNode(path: "/dev/urandom", device: ckiln_makedev(1, 9)),
        ]
        if let userfaultfd { nodes.append(DeviceNode(path: "/dev/userfaultfd", device: userfaultfd)) }
        return nodes
    }

    /// Creates the nodes under the current root (after the pivot).
    static func create(_ nodes: [DeviceNode], uid: UInt32, gid: UInt32) throws {
        for folder in ["/dev", "/dev/net"] {
            try check("mkdir", subject: folder) { mkdir(folder, 0o755) }
        }
        for node in nodes {
            try check("mknod", subject: node.path) { ckiln_mknodat(AT_FDCWD, node.path, UInt32(S_IFCHR) | 0o600, node.device) }
            try check("chown \(uid):\(gid)", subject: node.path) { lchown(node.path, uid, gid) }
        }
    }
}
