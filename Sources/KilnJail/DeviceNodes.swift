import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Step 8: only the character devices the VMM opens, owned by its user, 0600.
/// Numbers from the kernel's Documentation/admin-guide/devices.txt. No
/// /dev/userfaultfd, which Firecracker's jailer adds for snapshot restore:
/// kiln has no snapshots, and the node would let the VMM's user watch its
/// own page faults for nothing.
///
/// They live on a small tmpfs mounted over the jail's /dev inside the jail's
/// own mount namespace: no device node is ever written to the host's disk
/// (where anyone who can reach the jail folder could use one owned by the
/// VMM's user), they vanish with the namespace, and a tmpfs mknod skips the
/// journal of the file system under the jail.
struct DeviceNode: Equatable, Sendable {
    let path: String
    let device: UInt64

    static let required = [
        DeviceNode(path: "/dev/kvm", device: ckiln_makedev(10, 232)),
        DeviceNode(path: "/dev/net/tun", device: ckiln_makedev(10, 200)),
        DeviceNode(path: "/dev/urandom", device: ckiln_makedev(1, 9)),
    ]

    /// Enough inodes for the nodes and their folders, and no room for data.
    static let tmpfsOptions = "mode=755,size=4k,nr_inodes=16"

    /// Creates the nodes under the current root (after the pivot), whose
    /// empty /dev folder step 3 made: on a detached tmpfs (fsmount(2)) that
    /// only this process can reach, attached over /dev once complete.
    static func create(_ nodes: [DeviceNode], uid: UInt32, gid: UInt32) throws {
        let dev = try HostDirectory.open("dev", in: FileDescriptor(rawValue: AT_FDCWD))
        defer { dev.close() }
        let tmpfs = try check("mount tmpfs (\(tmpfsOptions))", subject: "/dev") {
            ckiln_fsmount("tmpfs", "kiln-dev", tmpfsOptions, ckiln_mount_attr_nosuid() | ckiln_mount_attr_noexec())
        }
        try FileDescriptor(rawValue: tmpfs).closeAfter { tmpfs in
            try check("mkdir", subject: "/dev/net") { mkdirat(tmpfs.rawValue, "net", 0o755) }
            for node in nodes {
                let name = String(node.path.dropFirst("/dev/".count))
                try check("mknod", subject: node.path) {
                    ckiln_mknodat(tmpfs.rawValue, name, UInt32(S_IFCHR) | 0o600, node.device)
                }
                try check("chown \(uid):\(gid)", subject: node.path) {
                    fchownat(tmpfs.rawValue, name, uid, gid, AT_SYMLINK_NOFOLLOW)
                }
            }
            try check("move_mount", subject: "/dev") { ckiln_move_mount_onto(tmpfs.rawValue, dev.rawValue) }
        }
    }
}
