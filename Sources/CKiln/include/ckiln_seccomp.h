#ifndef CKILN_SECCOMP_H
#define CKILN_SECCOMP_H

#include <stdint.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

// Return-action values from <linux/seccomp.h> (macros with casts do not
// import as constants).
static inline uint32_t ckiln_seccomp_ret_kill_process(void) { return SECCOMP_RET_KILL_PROCESS; }
static inline uint32_t ckiln_seccomp_ret_kill_thread(void) { return SECCOMP_RET_KILL_THREAD; }
static inline uint32_t ckiln_seccomp_ret_trap(void) { return SECCOMP_RET_TRAP; }
static inline uint32_t ckiln_seccomp_ret_errno(void) { return SECCOMP_RET_ERRNO; }
static inline uint32_t ckiln_seccomp_ret_log(void) { return SECCOMP_RET_LOG; }
static inline uint32_t ckiln_seccomp_ret_allow(void) { return SECCOMP_RET_ALLOW; }
static inline uint32_t ckiln_audit_arch_x86_64(void) { return AUDIT_ARCH_X86_64; }
static inline uint32_t ckiln_audit_arch_i386(void) { return AUDIT_ARCH_I386; }
static inline uint32_t ckiln_audit_arch_aarch64(void) { return AUDIT_ARCH_AARCH64; }

/// prctl(PR_GET_SECCOMP): 2 when the calling thread runs under a filter, 0 when not.
int ckiln_seccomp_mode(void);

/// Sets PR_SET_NO_NEW_PRIVS for the calling thread (and its future children).
int ckiln_set_no_new_privs(void);

/// Installs a classic-BPF seccomp program on the calling thread only,
/// through seccomp(SECCOMP_SET_MODE_FILTER). `flags` takes SECCOMP_FILTER_FLAG_*.
/// Returns 0, or -1 with errno set.
int ckiln_seccomp_load(const struct sock_filter *instructions, uint16_t count,
                       unsigned int flags);

/// Call once, before the process starts its first thread (so before any
/// thread filter): makes glibc do now, or never, the system calls it would
/// otherwise make lazily on whichever thread needs them first, under that
/// thread's filter. One malloc arena and a fixed mmap threshold (mallopt(3)),
/// and the time zone loaded (tzset(3)); seccomp.c says why each.
/// Returns 0, or -1 with errno set (EINVAL: mallopt refused a setting).
int ckiln_prepare_libc_for_thread_filters(void);

/// Landlock scoping (Documentation/userspace-api/landlock.rst, "Scoping",
/// ABI 6, Linux 6.12): from now on the calling process and its threads may
/// neither signal a process outside their Landlock domain nor connect or
/// send to an abstract Unix socket bound outside it. Sets no_new_privs, as
/// Landlock requires of an unprivileged caller. Handles no file or network
/// access rights: those are the jail's and seccomp's.
/// Returns the kernel's Landlock ABI version (>= 6) on success; 0 when the
/// kernel's Landlock is older, disabled or absent (nothing done); or -1 with
/// errno set when a step failed.
int ckiln_landlock_scope_signals_and_abstract_sockets(void);

#endif
