#ifndef CKILN_KVM_H
#define CKILN_KVM_H

// KVM ioctl numbers and structures; filled in by the machine module.
#include <linux/kvm.h>

#endif
