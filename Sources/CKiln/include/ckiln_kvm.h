#ifndef CKILN_KVM_H
#define CKILN_KVM_H

// KVM ioctl numbers (function-like _IO* macros do not import into Swift) and
// fixed-arity helpers for the ioctls whose structures end in a flexible
// array (kvm_cpuid2, kvm_msrs). See Documentation/virt/kvm/api.rst.
#include <stdint.h>
#include <linux/kvm.h>

// System ioctls (/dev/kvm).
static inline unsigned long ckiln_kvm_get_api_version(void) { return KVM_GET_API_VERSION; }
static inline unsigned long ckiln_kvm_create_vm(void) { return KVM_CREATE_VM; }
static inline unsigned long ckiln_kvm_check_extension(void) { return KVM_CHECK_EXTENSION; }
static inline unsigned long ckiln_kvm_get_vcpu_mmap_size(void) { return KVM_GET_VCPU_MMAP_SIZE; }

// VM ioctls.
static inline unsigned long ckiln_kvm_create_vcpu(void) { return KVM_CREATE_VCPU; }
static inline unsigned long ckiln_kvm_set_user_memory_region(void) { return KVM_SET_USER_MEMORY_REGION; }
static inline unsigned long ckiln_kvm_set_tss_addr(void) { return KVM_SET_TSS_ADDR; }
static inline unsigned long ckiln_kvm_set_identity_map_addr(void) { return KVM_SET_IDENTITY_MAP_ADDR; }
static inline unsigned long ckiln_kvm_create_irqchip(void) { return KVM_CREATE_IRQCHIP; }
static inline unsigned long ckiln_kvm_create_pit2(void) { return KVM_CREATE_PIT2; }
static inline unsigned long ckiln_kvm_irq_line(void) { return KVM_IRQ_LINE; }
static inline unsigned long ckiln_kvm_irqfd(void) { return KVM_IRQFD; }
static inline unsigned long ckiln_kvm_ioeventfd(void) { return KVM_IOEVENTFD; }

// vCPU ioctls.
static inline unsigned long ckiln_kvm_run(void) { return KVM_RUN; }
static inline unsigned long ckiln_kvm_get_regs(void) { return KVM_GET_REGS; }
static inline unsigned long ckiln_kvm_set_regs(void) { return KVM_SET_REGS; }
static inline unsigned long ckiln_kvm_get_sregs(void) { return KVM_GET_SREGS; }
static inline unsigned long ckiln_kvm_set_sregs(void) { return KVM_SET_SREGS; }
static inline unsigned long ckiln_kvm_get_fpu(void) { return KVM_GET_FPU; }
static inline unsigned long ckiln_kvm_set_fpu(void) { return KVM_SET_FPU; }
static inline unsigned long ckiln_kvm_get_lapic(void) { return KVM_GET_LAPIC; }
static inline unsigned long ckiln_kvm_set_lapic(void) { return KVM_SET_LAPIC; }
static inline unsigned long ckiln_kvm_get_mp_state(void) { return KVM_GET_MP_STATE; }

/// KVM_GET_SUPPORTED_CPUID into a flat array of at most `capacity` entries;
/// returns the entry count, or -1 with errno set (E2BIG: capacity too small).
int ckiln_kvm_get_supported_cpuid(int kvm_fd, struct kvm_cpuid_entry2 *entries, uint32_t capacity);

/// KVM_SET_CPUID2 from a flat array; 0 or -1 with errno set.
int ckiln_kvm_set_cpuid2(int vcpu_fd, const struct kvm_cpuid_entry2 *entries, uint32_t count);

/// KVM_SET_MSRS from a flat array; returns how many MSRs were set, or -1.
int ckiln_kvm_set_msrs(int vcpu_fd, const struct kvm_msr_entry *entries, uint32_t count);

/// KVM_SET_GSI_ROUTING with irqchip routes only: route i sends GSI gsis[i]
/// to pin pins[i] of irqchip chips[i] (KVM_IRQCHIP_PIC_MASTER/SLAVE/IOAPIC).
/// Returns 0, or -1 with errno set.
int ckiln_kvm_set_irqchip_routes(int vm_fd, const uint32_t *gsis, const uint32_t *chips,
                                 const uint32_t *pins, uint32_t count);

/// The data bytes of an MMIO exit, in place in the run page. Swift imports
/// the anonymous union's members as computed properties, so a pointer taken
/// through them would point at a temporary copy.
static inline uint8_t *ckiln_kvm_run_mmio_data(struct kvm_run *run) { return run->mmio.data; }

/// KVM_IOEVENTFD (api.rst 4.59): a guest write of `length` bytes equal to
/// `datamatch` at MMIO address `address` signals `event_fd` in the kernel
/// instead of exiting to userspace. Returns 0, or -1 with errno set.
int ckiln_kvm_register_ioeventfd(int vm_fd, uint64_t address, uint32_t length, uint64_t datamatch, int event_fd);

#endif
