// The SIGSYS handler behind seccomp's trap action (seccomp(2), "SECCOMP_RET_TRAP":
// si_syscall holds the call number, the arguments are still in the saved
// registers). Async-signal-safe: no stdio, no malloc, one write(2) per line.
#define _GNU_SOURCE
#include "ckiln_sigsys.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static _Atomic uint64_t trap_count;
static _Atomic int log_fd = 2;
// Initial-exec TLS in a static binary: a plain memory read in the handler.
static __thread char thread_role[16] = "vmm";
static __thread char thread_name[17];

void ckiln_sigsys_set_log_fd(int fd) { atomic_store(&log_fd, fd); }

void ckiln_sigsys_set_thread_role(const char *role) {
    strncpy(thread_role, role, sizeof thread_role - 1);
    thread_role[sizeof thread_role - 1] = 0;
    memset(thread_name, 0, sizeof thread_name);
    prctl(PR_GET_NAME, thread_name, 0, 0, 0);
}

uint64_t ckiln_seccomp_trap_count(void) { return atomic_load(&trap_count); }

/// A bounded string builder on the handler's stack.
struct line {
    char bytes[512];
    size_t length;
};

static void append(struct line *line, const char *text) {
    while (*text && line->length < sizeof line->bytes) line->bytes[line->length++] = *text++;
}

/// Appends a JSON string's content; the role and name are ours, but a
/// thread name may hold anything, so quotes, backslashes and controls go.
static void append_safe(struct line *line, const char *text) {
    for (; *text && line->length < sizeof line->bytes; text++) {
        char c = *text;
        line->bytes[line->length++] = (c == '"' || c == '\\' || (unsigned char)c < 0x20) ? '?' : c;
    }
}

static void append_decimal(struct line *line, uint64_t value) {
    char digits[20];
    int count = 0;
    do { digits[count++] = (char)('0' + value % 10); value /= 10; } while (value && count < 20);
    while (count > 0 && line->length < sizeof line->bytes) line->bytes[line->length++] = digits[--count];
}

static void append_hex(struct line *line, uint64_t value) {
    append(line, "\"0x");
    char digits[16];
    int count = 0;
    do { digits[count++] = "0123456789abcdef"[value & 0xf]; value >>= 4; } while (value && count < 16);
    while (count > 0 && line->length < sizeof line->bytes) line->bytes[line->length++] = digits[--count];
    append(line, "\"");
}

static void write_all(int fd, const char *bytes, size_t length) {
    while (length > 0) {
        ssize_t written = write(fd, bytes, length);
        if (written <= 0) return;
        bytes += written;
        length -= (size_t)written;
    }
}

static void handle_sigsys(int signal, siginfo_t *info, void *context) {
    (void)signal;
    uint64_t count = atomic_fetch_add(&trap_count, 1) + 1;
    const greg_t *registers = ((const ucontext_t *)context)->uc_mcontext.gregs;
    // The x86-64 system call ABI: arguments in rdi, rsi, rdx, r10, r8, r9.
    const int argument_registers[6] = { REG_RDI, REG_RSI, REG_RDX, REG_R10, REG_R8, REG_R9 };
    struct timespec now = { 0, 0 };
    clock_gettime(CLOCK_MONOTONIC, &now); // vDSO: no system call
    struct line line = { .length = 0 };
    append(&line, "{\"ts_ns\":");
    append_decimal(&line, (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec);
    append(&line, ",\"level\":\"error\",\"thread\":\"");
    append_safe(&line, thread_role);
    append(&line, "\",\"msg\":\"seccomp: the ");
    append_safe(&line, thread_role);
    append(&line, " filter trapped system call ");
    append_decimal(&line, (uint64_t)(uint32_t)info->si_syscall);
    append(&line, "; exiting with code ");
    append_decimal(&line, CKILN_SECCOMP_TRAP_EXIT_CODE);
    append(&line, "\",\"syscall\":");
    append_decimal(&line, (uint64_t)(uint32_t)info->si_syscall);
    append(&line, ",\"role\":\"");
    append_safe(&line, thread_role);
    append(&line, "\",\"thread_name\":\"");
    append_safe(&line, thread_name);
    append(&line, "\",\"args\":[");
    for (int index = 0; index < 6; index++) {
        if (index > 0) append(&line, ",");
        append_hex(&line, (uint64_t)registers[argument_registers[index]]);
    }
    append(&line, "],\"seccomp_traps\":");
    append_decimal(&line, count);
    append(&line, "}\n");
    int fd = atomic_load(&log_fd);
    write_all(fd, line.bytes, line.length);
    if (fd != 2) write_all(2, line.bytes, line.length);
    // exit_group directly: exit() would run atexit handlers in a broken process.
    syscall(SYS_exit_group, CKILN_SECCOMP_TRAP_EXIT_CODE);
}

int ckiln_sigsys_install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = handle_sigsys;
    action.sa_flags = SA_SIGINFO;
    sigfillset(&action.sa_mask); // nothing interrupts the report
    return sigaction(SIGSYS, &action, NULL);
}
