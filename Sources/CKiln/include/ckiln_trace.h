#ifndef CKILN_TRACE_H
#define CKILN_TRACE_H

#include <stdint.h>
#include <sys/types.h>
#include <linux/filter.h>

// ptrace(2) for `kiln-policy trace`: ptrace is variadic and the wait-status
// macros are function-like, so neither imports into Swift.

/// A stopped thread's system call, as its registers hold it at a seccomp stop
/// (x86_64: orig_rax is the number; rdi, rsi, rdx, r10, r8, r9 the arguments).
struct ckiln_trace_call {
    int64_t number;
    uint64_t arguments[6];
    uint64_t stack_pointer;
};

/// What waitpid reported, decoded (ptrace(2), "Stopped states").
enum ckiln_trace_stop_kind {
    CKILN_TRACE_EXITED = 0,      // value: the exit status
    CKILN_TRACE_KILLED = 1,      // value: the signal
    CKILN_TRACE_EVENT = 2,       // value: PTRACE_EVENT_*
    CKILN_TRACE_SIGNAL = 3,      // value: the signal (a signal-delivery or group stop)
};

/// Forks, makes the child a tracee (stopped once so that the options are set
/// before it runs), installs `base` as its first seccomp filter and execs
/// `argv` (PATH searched). Returns the child's pid, stopped at its exec
/// event, which this call has already waited for (the caller resumes it);
/// or -1 with errno set (the exec's own errno when that failed, the child
/// then reaped). The options follow every thread, fork and exec, and
/// PTRACE_O_EXITKILL kills every tracee when the tracer dies.
pid_t ckiln_trace_spawn(char *const argv[], const struct sock_filter *base, uint16_t count);

/// waitpid(-1, __WALL), decoded. Returns the thread id, or -1 with errno.
pid_t ckiln_trace_wait(int *kind, int *value);

/// Resumes a stopped tracee, delivering `signal` (0 for none).
int ckiln_trace_resume(pid_t tid, int signal);
/// PTRACE_GETEVENTMSG: the new thread's id, the seccomp return data, the former tid at exec.
int ckiln_trace_event_message(pid_t tid, unsigned long *message);
int ckiln_trace_read_call(pid_t tid, struct ckiln_trace_call *call);
/// Makes the pending system call return `result` without running it.
int ckiln_trace_skip_call(pid_t tid, int64_t result);
/// Replaces argument `index` (0-5) of the pending system call.
int ckiln_trace_set_argument(pid_t tid, int index, uint64_t value);
/// Copies to and from the tracee's memory (process_vm_readv/writev).
int ckiln_trace_peek(pid_t pid, uint64_t address, void *buffer, size_t length);
int ckiln_trace_poke(pid_t pid, uint64_t address, const void *buffer, size_t length);

#endif
