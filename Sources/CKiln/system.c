#define _GNU_SOURCE
#include "ckiln_system.h"

#include <fcntl.h>
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
