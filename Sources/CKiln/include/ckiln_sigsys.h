#ifndef CKILN_SIGSYS_H
#define CKILN_SIGSYS_H

#include <stdint.h>

/// The exit code of a process stopped by a seccomp trap: Firecracker's
/// `BadSyscall` code, so orchestrators read both VMMs' failures alike.
#define CKILN_SECCOMP_TRAP_EXIT_CODE 148
static inline int ckiln_seccomp_trap_exit_code(void) { return CKILN_SECCOMP_TRAP_EXIT_CODE; }

/// Installs the SIGSYS handler for seccomp's trap action (SA_SIGINFO, the
/// signal blocked while it runs). When a filter traps a call, the handler
/// writes one JSON line to the log descriptor (and to stderr if that is
/// another descriptor) with the call's number, its six arguments, the
/// thread's role and name, bumps the trap count, and ends the process with
/// CKILN_SECCOMP_TRAP_EXIT_CODE. It calls only write(2) and exit_group(2),
/// which every role allows. Returns 0, or -1 with errno set.
int ckiln_sigsys_install(void);

/// Where the handler writes its line (the logger's descriptor; 2 at first).
void ckiln_sigsys_set_log_fd(int fd);

/// Records the calling thread's role and its name (PR_GET_NAME, read now:
/// the handler must not call prctl, which no role allows). Call it before
/// the thread installs its filter.
void ckiln_sigsys_set_thread_role(const char *role);

/// How many calls a filter trapped (read by the metrics snapshot).
uint64_t ckiln_seccomp_trap_count(void);

#endif
