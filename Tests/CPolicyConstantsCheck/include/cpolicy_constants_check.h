// The policy language's named constants as the C headers define them, so
// that a test can compare KilnPolicy's tables with the real <linux/kvm.h>,
// <linux/if_tun.h>, <sys/mman.h>, ... values rather than with hand copies.
#ifndef CPOLICY_CONSTANTS_CHECK_H
#define CPOLICY_CONSTANTS_CHECK_H

#include <stddef.h>
#include <stdint.h>

struct cpolicy_constant {
    const char *name;
    int64_t value;
};

/// The number of constants, and each one by index (an array of unknown size
/// does not import into Swift).
size_t cpolicy_constant_count(void);
struct cpolicy_constant cpolicy_constant_at(size_t index);

#endif
