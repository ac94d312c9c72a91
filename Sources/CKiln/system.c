#define _GNU_SOURCE
#include "ckiln_system.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

pid_t ckiln_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int ckiln_prctl(int option, unsigned long arg2, unsigned long arg3,
                unsigned long arg4, unsigned long arg5) {
    return prctl(option, arg2, arg3, arg4, arg5);
}

long ckiln_syscall6(long number, unsigned long a0, unsigned long a1,
                    unsigned long a2, unsigned long a3, unsigned long a4,
                    unsigned long a5) {
    return syscall(number, a0, a1, a2, a3, a4, a5);
}

int ckiln_open(const char *path, int flags, unsigned int mode) {
    return open(path, flags, (mode_t)mode);
}

int ckiln_openat(int dirfd, const char *path, int flags, unsigned int mode) {
    return openat(dirfd, path, flags, (mode_t)mode);
}

int ckiln_rename_noreplace(const char *from, const char *to) {
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE);
}

int ckiln_fcntl_int(int fd, int cmd, int arg) { return fcntl(fd, cmd, arg); }

int ckiln_ioctl_ptr(int fd, unsigned long request, void *arg) {
    return ioctl(fd, request, arg);
}

int ckiln_ioctl_int(int fd, unsigned long request, unsigned long arg) {
    return ioctl(fd, request, arg);
}

int ckiln_accept4(int fd, int flags) { return accept4(fd, NULL, NULL, flags); }

int ckiln_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

int ckiln_tap_open(const char *name) {
    if (strlen(name) >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (ioctl(fd, TUNSETIFF, &request) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    // With CAP_NET_ADMIN, TUNSETIFF creates a TAP that did not exist. An
    // orchestrator's TAP outlives its creator's descriptor, so it is
    // persistent (IFF_PERSIST); a transient one was just made here: closing
    // the descriptor removes it again, and the caller hears ENODEV.
    if (ioctl(fd, TUNGETIFF, &request) < 0 || !(request.ifr_flags & IFF_PERSIST)) {
        close(fd);
        errno = ENODEV;
        return -1;
    }
    return fd;
}
