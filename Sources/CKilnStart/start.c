#include "ckiln_start.h"

#include <stdlib.h>

// Provided by the Swift runtime; read by CommandLine.arguments.
extern void _swift_stdlib_overrideUnsafeArgvArgc(char **argv, int argc);

// Priority 101 runs before any Swift global initialiser. The order inside
// matters: argv first, then the environment (docs/platform.md,
// "Static linking").
__attribute__((constructor(101)))
static void ckiln_early_start(int argc, char **argv, char **envp) {
    (void)envp;
    _swift_stdlib_overrideUnsafeArgvArgc(argv, argc);
    setenv("SWIFT_BACKTRACE", "enable=no,swift-backtrace=/nonexistent", 1);
}

void ckiln_start_anchor(void) {}
