#ifndef CKILN_JAIL_H
#define CKILN_JAIL_H

// Namespaces, root switching, device nodes, resource limits and privilege
// calls for the jailer. Swift cannot see these without _GNU_SOURCE (unshare,
// setns, CLONE_NEW*, setres[ug]id), cannot call them (variadic or macro-only:
// makedev, prctl) or finds no libc wrapper at all (pivot_root, close_range,
// capset): each is a fixed-arity function or a constant here.

#include <stdint.h>
#include <sys/types.h>

// MARK: Namespaces (namespaces(7))
int ckiln_clone_newns(void);
int ckiln_clone_newipc(void);
int ckiln_clone_newuts(void);
int ckiln_clone_newpid(void);
int ckiln_clone_newnet(void);
int ckiln_clone_newcgroup(void);
int ckiln_clone_newuser(void);
int ckiln_unshare(int flags);
int ckiln_setns(int fd, int nstype);
/// ioctl(NS_GET_NSTYPE) (ioctl_ns(2)): the CLONE_NEW* type of a namespace
/// file, or -1 with errno (ENOTTY: not a namespace file).
int ckiln_namespace_type(int fd);

// MARK: Mounts (mount(2), umount(2), pivot_root(2))
unsigned long ckiln_ms_bind(void);
unsigned long ckiln_ms_rec(void);
unsigned long ckiln_ms_private(void);
unsigned long ckiln_ms_remount(void);
unsigned long ckiln_ms_nosuid(void);
unsigned long ckiln_ms_noexec(void);
int ckiln_mnt_detach(void);
int ckiln_mount(const char *source, const char *target, const char *fstype,
                unsigned long flags, const char *data);
int ckiln_umount2(const char *target, int flags);
int ckiln_pivot_root(const char *new_root, const char *put_old);
/// Bind-mounts the working folder onto itself, nosuid, through the new mount
/// API (open_tree(2), mount_setattr(2), move_mount(2)): no path is looked up,
/// so nothing can redirect it. Returns a descriptor of the new mount's root,
/// or -1 with errno.
int ckiln_bind_cwd_nosuid(void);
/// fsopen(2), fsconfig(2) with `options` ("key=value,flag,..."), fsmount(2)
/// with MOUNT_ATTR_* `attributes`: a detached mount, reachable only through
/// the returned descriptor until `ckiln_move_mount_onto` attaches it.
int ckiln_fsmount(const char *fstype, const char *source, const char *options, unsigned int attributes);
/// move_mount(2) of the detached mount `mount` onto the folder `target_dirfd`.
int ckiln_move_mount_onto(int mount, int target_dirfd);
unsigned int ckiln_mount_attr_nosuid(void);
unsigned int ckiln_mount_attr_noexec(void);

// MARK: Files
/// close_range(2) over [first, last]; falls back to closing one by one on
/// kernels older than 5.9.
int ckiln_close_range(unsigned int first, unsigned int last);
/// makedev(3) is a macro.
uint64_t ckiln_makedev(unsigned int major, unsigned int minor);
unsigned int ckiln_major(uint64_t device);
unsigned int ckiln_minor(uint64_t device);
int ckiln_mknodat(int dirfd, const char *path, unsigned int mode, uint64_t device);
/// copy_file_range(2) until `length` bytes are copied, or read(2) and
/// write(2) where the kernel cannot (EXDEV across file systems); 0 or -1.
int ckiln_copy_file(int from, int to, uint64_t length);
int ckiln_at_removedir(void);
int ckiln_at_symlink_nofollow(void);
int ckiln_o_path(void);
int ckiln_o_directory(void);
int ckiln_o_nofollow(void);

// MARK: Resource limits (setrlimit(2)); resources by number, 64-bit values.
int ckiln_rlimit_fsize(void);
int ckiln_rlimit_nofile(void);
int ckiln_setrlimit(int resource, uint64_t soft, uint64_t hard);
int ckiln_getrlimit(int resource, uint64_t *soft, uint64_t *hard);
uint64_t ckiln_rlim_infinity(void);

// MARK: Credentials and capabilities (capabilities(7))
int ckiln_setgroups_empty(void);
int ckiln_setresuid(uid_t uid);
int ckiln_setresgid(gid_t gid);
int ckiln_getresuid(uid_t *real, uid_t *effective, uid_t *saved);
int ckiln_getresgid(gid_t *real, gid_t *effective, gid_t *saved);
/// The highest capability number the running kernel knows
/// (/proc/sys/kernel/cap_last_cap, found by probing PR_CAPBSET_READ).
int ckiln_cap_last_cap(void);
/// PR_CAPBSET_DROP of one capability from the bounding set.
/// The securebits (capabilities(7), "The securebits flags") that keep uid 0
/// from meaning capabilities, each locked: an exec as root gains none
/// (SECBIT_NOROOT), an ambient capability cannot be raised, and none is kept
/// across an id change. Needs CAP_SETPCAP, so it goes before the drop.
static inline int ckiln_root_lockout_securebits(void) {
    return (1 << 0) | (1 << 1)     /* SECBIT_NOROOT, _LOCKED */
         | (1 << 5)                /* SECBIT_KEEP_CAPS_LOCKED (KEEP_CAPS off) */
         | (1 << 6) | (1 << 7);    /* SECBIT_NO_CAP_AMBIENT_RAISE, _LOCKED */
}
int ckiln_lock_root_out_of_capabilities(void);
int ckiln_get_securebits(void);
int ckiln_capbset_drop(int capability);
/// PR_CAP_AMBIENT_CLEAR_ALL.
int ckiln_cap_ambient_clear_all(void);
/// capset(2) with every set (effective, permitted, inheritable) empty,
/// using the 64-bit _LINUX_CAPABILITY_VERSION_3 layout.
int ckiln_capset_clear(void);
/// capget(2) of the calling thread; each set as a 64-bit mask.
int ckiln_capget(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable);
/// PR_CAP_AMBIENT_IS_SET for one capability (1, 0, or -1 with errno).
int ckiln_cap_ambient_is_set(int capability);
/// PR_CAPBSET_READ for one capability (1, 0, or -1 with errno).
int ckiln_capbset_read(int capability);
/// PR_GET_NO_NEW_PRIVS and PR_GET_SECCOMP.
int ckiln_get_no_new_privs(void);
int ckiln_get_seccomp(void);

// MARK: Processes
/// Unblocks every signal and restores every disposition to SIG_DFL, so that
/// nothing a caller blocked or ignored survives into the VMM (an ignored
/// signal stays ignored across execve(2)).
int ckiln_reset_signals(void);
/// Whether `sig` is blocked in the calling thread, or ignored (SIG_IGN): 1, 0, or -1.
int ckiln_signal_is_blocked(int sig);
int ckiln_signal_is_ignored(int sig);
/// NSIG: one more than the highest signal number.
int ckiln_signal_count(void);
/// pipe2(O_CLOEXEC): both ends close on exec from birth, with no window in
/// which a concurrent fork could inherit them.
int ckiln_pipe_cloexec(int ends[2]);
pid_t ckiln_fork(void);
int ckiln_sethostname(const char *name, size_t length);
/// ptrace(PTRACE_ATTACH, pid); the libc prototype is variadic.
long ckiln_ptrace_attach(pid_t pid);
/// The raw sync(2) system call, whose libc wrapper returns void: the jail
/// tests' seccomp marker.
long ckiln_sync_syscall(void);

#endif
