import CKiln
import KilnSystem

#if canImport(Glibc)
    import Glibc
#endif

/// Step 7: make the working folder, the jail root since step 6, the
/// process's `/` (pivot_root(2), "NOTES": the `pivot_root(".", ".")` form
/// stacks the old root on the new one, so that a lazy unmount of "." removes
/// it without a put_old folder inside the jail). No path is looked up: a
/// folder renamed or replaced by a link since step 3 cannot redirect it.
enum RootSwitch {
    static func pivot(rootPath: String) throws {
        // No mount made here may propagate back to the host (mount_namespaces(7)).
        try check("mount(MS_REC|MS_PRIVATE)", subject: "/") {
            ckiln_mount(nil, "/", nil, ckiln_ms_rec() | ckiln_ms_private(), nil)
        }
        // pivot_root needs the new root to be a mount point: bind it on itself,
        // nosuid (no set-user-ID file can raise privileges), then enter the
        // new mount, which the old working folder lies beneath.
        let mount = try check("bind mount, nosuid (open_tree, mount_setattr, move_mount)", subject: rootPath) {
            ckiln_bind_cwd_nosuid()
        }
        try FileDescriptor(rawValue: mount).closeAfter { mount in
            try check("fchdir", subject: rootPath) { fchdir(mount.rawValue) }
        }
        try check("pivot_root", subject: rootPath) { ckiln_pivot_root(".", ".") }
        try check("umount2(MNT_DETACH)", subject: "the old root") { ckiln_umount2(".", ckiln_mnt_detach()) }
        try check("chdir", subject: "/") { chdir("/") }
    }
}
