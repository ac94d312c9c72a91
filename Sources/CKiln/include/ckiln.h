// CKiln: what Swift cannot import from C on Linux.
//
// Function-like macros (_IO*, so every ioctl number), variadic functions
// (prctl, syscall) and symbols hidden without _GNU_SOURCE are re-exported
// here as static inline functions with fixed arity. Each concern has its own
// header so that the modules above can grow them independently.
#ifndef CKILN_H
#define CKILN_H

#include "ckiln_system.h"
#include "ckiln_seccomp.h"
#include "ckiln_kvm.h"
#include "ckiln_jail.h"
#include "ckiln_sigsys.h"
#include "ckiln_trace.h"

#endif
