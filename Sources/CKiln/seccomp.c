#define _GNU_SOURCE
#include "ckiln_seccomp.h"

#include <errno.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int ckiln_seccomp_mode(void) { return prctl(PR_GET_SECCOMP, 0, 0, 0, 0); }

int ckiln_set_no_new_privs(void) {
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

// The UAPI of Landlock ABI 6 (linux/landlock.h), defined here because
// Debian 12's headers predate scoping.
struct ckiln_landlock_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};
#define CKILN_LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#define CKILN_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define CKILN_LANDLOCK_SCOPE_SIGNAL (1ULL << 1)
#define CKILN_LANDLOCK_SCOPING_ABI 6
#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_restrict_self 446
#endif

int ckiln_landlock_scope_signals_and_abstract_sockets(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, CKILN_LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < CKILN_LANDLOCK_SCOPING_ABI) return 0;  // ENOSYS, EOPNOTSUPP (disabled) or an older ABI
    struct ckiln_landlock_ruleset_attr attributes = {
        .scoped = CKILN_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | CKILN_LANDLOCK_SCOPE_SIGNAL,
    };
    int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attributes, sizeof attributes, 0);
    if (ruleset < 0) return -1;
    int result = ckiln_set_no_new_privs();
    if (result == 0) result = (int)syscall(SYS_landlock_restrict_self, ruleset, 0);
    int saved = errno;
    close(ruleset);
    errno = saved;
    return result == 0 ? (int)abi : -1;
}

int ckiln_seccomp_load(const struct sock_filter *instructions, uint16_t count,
                       unsigned int flags) {
    struct sock_fprog program = {
        .len = count,
        .filter = (struct sock_filter *)instructions,
    };
    // Without SECCOMP_FILTER_FLAG_TSYNC the filter binds the calling thread only.
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &program);
}

int ckiln_prepare_libc_for_thread_filters(void) {
    // One arena (M_ARENA_MAX): every thread allocates from the main arena,
    // which grows and shrinks with brk only. With thread arenas, glibc opens
    // and reads /proc/sys/vm/overcommit_memory on the first trim of any of
    // them (and where it reads 2, trims with mmap(MAP_FIXED), not madvise),
    // and counts the CPUs with sched_getaffinity (or /sys) once more than 8
    // exist. No thread role allows those (glibc 2.36 malloc/arena.c).
    // Small blocks still come from each thread's own tcache, lock-free.
    if (mallopt(M_ARENA_MAX, 1) != 1) {
        errno = EINVAL;
        return -1;
    }
    // A fixed threshold (M_MMAP_THRESHOLD at glibc's default, 128 KiB) also
    // turns off its dynamic growth (mallopt(3)): larger blocks are always
    // mmap'd and munmap'd when freed, so one large request does not leave
    // megabytes of heap behind, and the calls do not depend on the past.
    if (mallopt(M_MMAP_THRESHOLD, 128 * 1024) != 1) {
        errno = EINVAL;
        return -1;
    }
    // glibc loads the time zone on the first time conversion, gmtime_r
    // included (time/tzset.c): openat, read and close of /etc/localtime (or
    // $TZ). The CMOS clock converts on a vCPU thread; load it here instead.
    tzset();
    return 0;
}
