#define _GNU_SOURCE
#include "ckiln_jail.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/nsfs.h>
#include <linux/securebits.h>
#include <sys/ioctl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int ckiln_clone_newns(void) { return CLONE_NEWNS; }
int ckiln_clone_newipc(void) { return CLONE_NEWIPC; }
int ckiln_clone_newuts(void) { return CLONE_NEWUTS; }
int ckiln_clone_newpid(void) { return CLONE_NEWPID; }
int ckiln_clone_newnet(void) { return CLONE_NEWNET; }
int ckiln_clone_newcgroup(void) { return CLONE_NEWCGROUP; }
int ckiln_clone_newuser(void) { return CLONE_NEWUSER; }
int ckiln_unshare(int flags) { return unshare(flags); }
int ckiln_setns(int fd, int nstype) { return setns(fd, nstype); }
int ckiln_namespace_type(int fd) { return ioctl(fd, NS_GET_NSTYPE); }

unsigned long ckiln_ms_bind(void) { return MS_BIND; }
unsigned long ckiln_ms_rec(void) { return MS_REC; }
unsigned long ckiln_ms_private(void) { return MS_PRIVATE; }
unsigned long ckiln_ms_remount(void) { return MS_REMOUNT; }
unsigned long ckiln_ms_nosuid(void) { return MS_NOSUID; }
unsigned long ckiln_ms_noexec(void) { return MS_NOEXEC; }
int ckiln_mnt_detach(void) { return MNT_DETACH; }

int ckiln_mount(const char *source, const char *target, const char *fstype,
                unsigned long flags, const char *data) {
    return mount(source, target, fstype, flags, data);
}

int ckiln_umount2(const char *target, int flags) { return umount2(target, flags); }

int ckiln_bind_cwd_nosuid(void) {
    // open_tree(2) with OPEN_TREE_CLONE makes a detached bind mount of ".",
    // reachable only through the returned descriptor until move_mount(2)
    // attaches it: it is never attached without MS_NOSUID.
    int tree = open_tree(AT_FDCWD, ".", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0) return -1;
    struct mount_attr attributes = { .attr_set = MOUNT_ATTR_NOSUID };
    if (mount_setattr(tree, "", AT_EMPTY_PATH, &attributes, sizeof attributes) != 0
        || move_mount(tree, "", AT_FDCWD, ".", MOVE_MOUNT_F_EMPTY_PATH) != 0) {
        int saved = errno;
        close(tree);
        errno = saved;
        return -1;
    }
    return tree;
}

int ckiln_fsmount(const char *fstype, const char *source, const char *options, unsigned int attributes) {
    int context = fsopen(fstype, FSOPEN_CLOEXEC);
    if (context < 0) return -1;
    int result = -1;
    char buffer[256];
    size_t length = strlen(options);
    if (length >= sizeof buffer) { errno = E2BIG; goto done; }
    memcpy(buffer, options, length + 1);
    if (fsconfig(context, FSCONFIG_SET_STRING, "source", source, 0) != 0) goto done;
    // "key=value,key=value", as mount(2)'s data argument would take them.
    for (char *next = buffer, *option; (option = strsep(&next, ",")) != NULL;) {
        if (*option == '\0') continue;
        char *value = strchr(option, '=');
        if (value != NULL) *value++ = '\0';
        int set = value != NULL ? fsconfig(context, FSCONFIG_SET_STRING, option, value, 0)
                                : fsconfig(context, FSCONFIG_SET_FLAG, option, NULL, 0);
        if (set != 0) goto done;
    }
    if (fsconfig(context, FSCONFIG_CMD_CREATE, NULL, NULL, 0) != 0) goto done;
    result = fsmount(context, FSMOUNT_CLOEXEC, attributes);
done:;
    int saved = errno;
    close(context);
    errno = saved;
    return result;
}

int ckiln_move_mount_onto(int mount, int target_dirfd) {
    return move_mount(mount, "", target_dirfd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
}

unsigned int ckiln_mount_attr_nosuid(void) { return MOUNT_ATTR_NOSUID; }
unsigned int ckiln_mount_attr_noexec(void) { return MOUNT_ATTR_NOEXEC; }

int ckiln_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int ckiln_close_range(unsigned int first, unsigned int last) {
    if (syscall(SYS_close_range, first, last, 0) == 0) return 0;
    if (errno != ENOSYS) return -1;
    long open_max = sysconf(_SC_OPEN_MAX);
    unsigned int end = open_max > 0 && (unsigned long)open_max - 1 < last ? (unsigned int)open_max - 1 : last;
    for (unsigned int fd = first; fd <= end && fd >= first; fd++) close((int)fd);
    return 0;
}

uint64_t ckiln_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
unsigned int ckiln_major(uint64_t device) { return major(device); }
unsigned int ckiln_minor(uint64_t device) { return minor(device); }

int ckiln_mknodat(int dirfd, const char *path, unsigned int mode, uint64_t device) {
    return mknodat(dirfd, path, (mode_t)mode, (dev_t)device);
}

// read(2) and write(2) from both files' offsets, for what copy_file_range
// refuses.
static int copy_by_reading(int from, int to, uint64_t length) {
    char buffer[65536];
    while (length > 0) {
        ssize_t got = read(from, buffer, length < sizeof buffer ? (size_t)length : sizeof buffer);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (got == 0) { errno = EIO; return -1; } // the source shrank
        for (ssize_t done = 0; done < got;) {
            ssize_t put = write(to, buffer + done, (size_t)(got - done));
            if (put < 0) {
                if (errno == EINTR) continue;
                return -1;
            }
            done += put;
        }
        length -= (uint64_t)got;
    }
    return 0;
}

int ckiln_copy_file(int from, int to, uint64_t length) {
    while (length > 0) {
        ssize_t copied = copy_file_range(from, NULL, to, NULL, length, 0);
        if (copied < 0) {
            if (errno == EINTR) continue;
            // copy_file_range(2), "ERRORS": EXDEV between file systems it
            // cannot join (of different types, or before Linux 5.3), and
            // EINVAL, ENOSYS or EOPNOTSUPP where it is unsupported. Both
            // offsets have advanced by what was copied, so go on from there.
            if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)
                return copy_by_reading(from, to, length);
            return -1;
        }
        if (copied == 0) { errno = EIO; return -1; } // the source shrank
        length -= (uint64_t)copied;
    }
    return 0;
}

int ckiln_at_removedir(void) { return AT_REMOVEDIR; }
int ckiln_at_symlink_nofollow(void) { return AT_SYMLINK_NOFOLLOW; }
int ckiln_o_path(void) { return O_PATH; }
int ckiln_o_directory(void) { return O_DIRECTORY; }
int ckiln_o_nofollow(void) { return O_NOFOLLOW; }

int ckiln_rlimit_fsize(void) { return RLIMIT_FSIZE; }
int ckiln_rlimit_nofile(void) { return RLIMIT_NOFILE; }
uint64_t ckiln_rlim_infinity(void) { return RLIM_INFINITY; }

int ckiln_setrlimit(int resource, uint64_t soft, uint64_t hard) {
    struct rlimit limit = { .rlim_cur = soft, .rlim_max = hard };
    return setrlimit(resource, &limit);
}

int ckiln_getrlimit(int resource, uint64_t *soft, uint64_t *hard) {
    struct rlimit limit;
    if (getrlimit(resource, &limit) != 0) return -1;
    *soft = limit.rlim_cur;
    *hard = limit.rlim_max;
    return 0;
}

int ckiln_setgroups_empty(void) { return setgroups(0, NULL); }
int ckiln_setresuid(uid_t uid) { return setresuid(uid, uid, uid); }
int ckiln_setresgid(gid_t gid) { return setresgid(gid, gid, gid); }
int ckiln_getresuid(uid_t *real, uid_t *effective, uid_t *saved) { return getresuid(real, effective, saved); }
int ckiln_getresgid(gid_t *real, gid_t *effective, gid_t *saved) { return getresgid(real, effective, saved); }

int ckiln_cap_last_cap(void) {
    // PR_CAPBSET_READ fails with EINVAL past the last capability the kernel knows.
    int cap = 0;
    while (cap < 64 && prctl(PR_CAPBSET_READ, cap + 1, 0, 0, 0) >= 0) cap++;
    return cap;
}

int ckiln_lock_root_out_of_capabilities(void) {
    return prctl(PR_SET_SECUREBITS, ckiln_root_lockout_securebits(), 0, 0, 0);
}
int ckiln_get_securebits(void) { return prctl(PR_GET_SECUREBITS, 0, 0, 0, 0); }
int ckiln_capbset_drop(int capability) { return prctl(PR_CAPBSET_DROP, capability, 0, 0, 0); }
int ckiln_cap_ambient_clear_all(void) {
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}
int ckiln_cap_ambient_is_set(int capability) {
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, capability, 0, 0);
}
int ckiln_capbset_read(int capability) { return prctl(PR_CAPBSET_READ, capability, 0, 0, 0); }
int ckiln_get_no_new_privs(void) { return prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); }
int ckiln_get_seccomp(void) { return prctl(PR_GET_SECCOMP, 0, 0, 0, 0); }

int ckiln_capset_clear(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2] = { { 0, 0, 0 }, { 0, 0, 0 } };
    return (int)syscall(SYS_capset, &header, data);
}

int ckiln_capget(uint64_t *effective, uint64_t *permitted, uint64_t *inheritable) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    *effective = (uint64_t)data[1].effective << 32 | data[0].effective;
    *permitted = (uint64_t)data[1].permitted << 32 | data[0].permitted;
    *inheritable = (uint64_t)data[1].inheritable << 32 | data[0].inheritable;
    return 0;
}

pid_t ckiln_fork(void) { return fork(); }
int ckiln_sethostname(const char *name, size_t length) { return sethostname(name, length); }
long ckiln_ptrace_attach(pid_t pid) { return ptrace(PTRACE_ATTACH, pid, NULL, NULL); }
long ckiln_sync_syscall(void) { return syscall(SYS_sync); }
int ckiln_pipe_cloexec(int ends[2]) { return pipe2(ends, O_CLOEXEC); }

int ckiln_reset_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) return -1;
    struct sigaction fallback = { .sa_handler = SIG_DFL };
    sigemptyset(&fallback.sa_mask);
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        // Numbers glibc reserves for its threads (32, 33) refuse a change: skip them.
        if (sigaction(sig, &fallback, NULL) != 0 && errno != EINVAL) return -1;
    }
    return 0;
}

int ckiln_signal_is_blocked(int sig) {
    sigset_t current;
    if (sigprocmask(SIG_BLOCK, NULL, &current) != 0) return -1;
    return sigismember(&current, sig);
}

int ckiln_signal_is_ignored(int sig) {
    struct sigaction current;
    if (sigaction(sig, NULL, &current) != 0) return -1;
    return current.sa_handler == SIG_IGN ? 1 : 0;
}

int ckiln_signal_count(void) { return NSIG; }
