#ifndef CKILN_SYSTEM_H
#define CKILN_SYSTEM_H

#include <stdint.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>

/// gettid(2), which glibc only declares under _GNU_SOURCE.
pid_t ckiln_gettid(void);

/// prctl(2) with its five arguments spelled out.
int ckiln_prctl(int option, unsigned long arg2, unsigned long arg3,
                unsigned long arg4, unsigned long arg5);

/// A raw six-argument syscall(2); returns -1 and sets errno on failure.
long ckiln_syscall6(long number, unsigned long a0, unsigned long a1,
                    unsigned long a2, unsigned long a3, unsigned long a4,
                    unsigned long a5);

/// open(2) with an explicit mode (the libc prototype is variadic).
int ckiln_open(const char *path, int flags, unsigned int mode);

/// openat(2) with an explicit mode.
int ckiln_openat(int dirfd, const char *path, int flags, unsigned int mode);

/// renameat2(2) with RENAME_NOREPLACE, paths relative to the working
/// directory (Glibc's Swift module does not export renameat2).
int ckiln_rename_noreplace(const char *from, const char *to);

/// fcntl(2) with one integer argument (the libc prototype is variadic).
int ckiln_fcntl_int(int fd, int cmd, int arg);

/// ioctl(2) with a pointer or integer argument (variadic in libc).
int ckiln_ioctl_ptr(int fd, unsigned long request, void *arg);
int ckiln_ioctl_int(int fd, unsigned long request, unsigned long arg);

/// Names the calling thread (PR_SET_NAME; the kernel keeps 15 bytes).
int ckiln_set_thread_name(const char *name);

/// accept4(2), declared by glibc only under _GNU_SOURCE.
int ckiln_accept4(int fd, int flags);

/// Opens /dev/net/tun non-blocking and attaches it to the TAP interface
/// `name` (TUNSETIFF with IFF_TAP | IFF_NO_PI: raw Ethernet frames, no
/// packet-information prefix). Only a persistent TAP someone else made is
/// accepted. Returns the descriptor, or -1 with errno set (ENODEV: no such
/// TAP; EBUSY: another process has it; EPERM: not ours to open).
int ckiln_tap_open(const char *name);

// EPOLL* are enum members with macro aliases; these import as plain values.
static inline uint32_t ckiln_epollin(void) { return EPOLLIN; }
static inline uint32_t ckiln_epollout(void) { return EPOLLOUT; }
static inline uint32_t ckiln_epollerr(void) { return EPOLLERR; }
static inline uint32_t ckiln_epollhup(void) { return EPOLLHUP; }
static inline uint32_t ckiln_epollrdhup(void) { return EPOLLRDHUP; }

#endif
