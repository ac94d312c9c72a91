#define _GNU_SOURCE
#include "ckiln_trace.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static const long trace_options = PTRACE_O_TRACESECCOMP | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK
    | PTRACE_O_TRACEVFORK | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL;

pid_t ckiln_trace_spawn(char *const argv[], const struct sock_filter *base, uint16_t count) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    pid_t child = fork();
    if (child < 0) {
        int saved = errno;
        close(report[0]);
        close(report[1]);
        errno = saved;
        return -1;
    }
    if (child == 0) {
        // Only async-signal-safe calls from here to exec.
        close(report[0]);
        int failure = 0;
        if (ptrace(PTRACE_TRACEME, 0, 0, 0) != 0 || raise(SIGSTOP) != 0) failure = errno;
        // Without CAP_SYS_ADMIN a filter needs no_new_privs (seccomp(2)).
        if (!failure && geteuid() != 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) failure = errno;
        struct sock_fprog program = {.len = count, .filter = (struct sock_filter *)base};
        if (!failure && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) != 0) failure = errno;
        if (!failure) {
            execvp(argv[0], argv);
            failure = errno;
        }
        (void)!write(report[1], &failure, sizeof failure);
        _exit(127);
    }
    close(report[1]);
    int status = 0;
    if (waitpid(child, &status, __WALL) != child || !WIFSTOPPED(status)
        || ptrace(PTRACE_SETOPTIONS, child, 0, trace_options) != 0 || ptrace(PTRACE_CONT, child, 0, 0) != 0) {
        int saved = errno ? errno : ECHILD;
        kill(child, SIGKILL);
        waitpid(child, &status, __WALL);
        close(report[0]);
        errno = saved;
        return -1;
    }
    // The base filter may trace every call, the exec's among them: resume
    // the child through its seccomp stops until its exec event (success) or
    // its exit, after it sent the errno of what failed.
    for (;;) {
        pid_t got;
        do { got = waitpid(child, &status, __WALL); } while (got < 0 && errno == EINTR);
        if (got != child) {
            int saved = errno ? errno : ECHILD;
            close(report[0]);
            errno = saved;
            return -1;
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) break;
        if (status >> 8 == (SIGTRAP | (PTRACE_EVENT_EXEC << 8))) {
            close(report[0]);
            return child;
        }
        int signal = WSTOPSIG(status) == SIGTRAP || WSTOPSIG(status) == SIGSTOP ? 0 : WSTOPSIG(status);
        ptrace(PTRACE_CONT, child, 0, signal);
    }
    int failure = 0;
    ssize_t got;
    do { got = read(report[0], &failure, sizeof failure); } while (got < 0 && errno == EINTR);
    close(report[0]);
    errno = got > 0 && failure ? failure : ECHILD;
    return -1;
}

pid_t ckiln_trace_wait(int *kind, int *value) {
    int status = 0;
    pid_t tid;
    do { tid = waitpid(-1, &status, __WALL); } while (tid < 0 && errno == EINTR);
    if (tid < 0) return -1;
    if (WIFEXITED(status)) {
        *kind = CKILN_TRACE_EXITED;
        *value = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        *kind = CKILN_TRACE_KILLED;
        *value = WTERMSIG(status);
    } else if (WIFSTOPPED(status) && WSTOPSIG(status) == SIGTRAP && (status >> 16) != 0) {
        *kind = CKILN_TRACE_EVENT;
        *value = status >> 16;
    } else {
        *kind = CKILN_TRACE_SIGNAL;
        *value = WSTOPSIG(status);
    }
    return tid;
}

int ckiln_trace_resume(pid_t tid, int signal) {
    return (int)ptrace(PTRACE_CONT, tid, 0, (void *)(long)signal);
}

int ckiln_trace_event_message(pid_t tid, unsigned long *message) {
    return (int)ptrace(PTRACE_GETEVENTMSG, tid, 0, message);
}

int ckiln_trace_read_call(pid_t tid, struct ckiln_trace_call *call) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) != 0) return -1;
    call->number = (int64_t)regs.orig_rax;
    call->arguments[0] = regs.rdi;
    call->arguments[1] = regs.rsi;
    call->arguments[2] = regs.rdx;
    call->arguments[3] = regs.r10;
    call->arguments[4] = regs.r8;
    call->arguments[5] = regs.r9;
    call->stack_pointer = regs.rsp;
    return 0;
}

int ckiln_trace_skip_call(pid_t tid, int64_t result) {
    struct user_regs_struct regs;
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) != 0) return -1;
    // A number of -1 skips the call; rax is then what it returns
    // (Documentation/userspace-api/seccomp_filter.rst, SECCOMP_RET_TRACE).
    regs.orig_rax = (unsigned long long)-1;
    regs.rax = (unsigned long long)result;
    return (int)ptrace(PTRACE_SETREGS, tid, 0, &regs);
}

int ckiln_trace_set_argument(pid_t tid, int index, uint64_t value) {
    struct user_regs_struct regs;
    if (index < 0 || index > 5) {
        errno = EINVAL;
        return -1;
    }
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) != 0) return -1;
    unsigned long long *slots[6] = {&regs.rdi, &regs.rsi, &regs.rdx, &regs.r10, &regs.r8, &regs.r9};
    *slots[index] = value;
    return (int)ptrace(PTRACE_SETREGS, tid, 0, &regs);
}

// process_vm_readv/writev move the whole length or report a short copy,
// which here is a fault like any other.
static int trace_transfer(pid_t pid, uint64_t address, void *buffer, size_t length, int write) {
    struct iovec local = {.iov_base = buffer, .iov_len = length};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)address, .iov_len = length};
    ssize_t done = write ? process_vm_writev(pid, &local, 1, &remote, 1, 0)
                         : process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (done < 0) return -1;
    if ((size_t)done != length) {
        errno = EFAULT;
        return -1;
    }
    return 0;
}

int ckiln_trace_peek(pid_t pid, uint64_t address, void *buffer, size_t length) {
    return trace_transfer(pid, address, buffer, length, 0);
}

int ckiln_trace_poke(pid_t pid, uint64_t address, const void *buffer, size_t length) {
    return trace_transfer(pid, address, (void *)buffer, length, 1);
}
