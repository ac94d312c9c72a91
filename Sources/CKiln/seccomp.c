#define _GNU_SOURCE
#include "ckiln_seccomp.h"

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int ckiln_set_no_new_privs(void) {
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
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
