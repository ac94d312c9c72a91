#if canImport(Glibc)
import Glibc
#endif
import CKiln
import KilnSystem

/// Step 7: make `root` the process's `/` (pivot_root(2), "NOTES": the
/// `pivot_root(".", ".")` form stacks the old root on the new one, so that a
/// lazy unmount of "." removes it without a put_old folder inside the jail).
enum RootSwitch {
    static func pivot(into root: String) throws {
        // No mount made here may propagate back to the host (mount_namespaces(7)).
        try check("mount(MS_REC|MS_PRIVATE)", subject: "/") {
            ckiln_mount(nil, "/", nil, ckiln_ms_rec() | ckiln_ms_private(), nil)
        }
        // pivot_root needs the new root to be a mount point: bind it on itself,
        // then remount it nosuid (no set-user-ID file can raise privileges).
        try check("mount(MS_BIND)", subject: root) { ckiln_mount(root, root, nil, ckiln_ms_bind(), nil) }
        try check("mount(MS_REMOUNT|MS_BIND|MS_NOSUID)", subject: root) {
            ckiln_mount(nil, root, nil, ckiln_ms_remount() | ckiln_ms_bind() | ckiln_ms_nosuid(), nil)
        }
        try check("chdir", subject: root) { chdir(root) }
        try check("pivot_root", subject: root) { ckiln_pivot_root(".", ".") }
        try check("umount2(MNT_DETACH)", subject: "the old root") { ckiln_umount2(".", ckiln_mnt_detach()) }
        try check("chdir", subject: "/") { chdir("/") }
    }
}
