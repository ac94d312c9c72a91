#include "ckiln_kvm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

int ckiln_kvm_get_supported_cpuid(int kvm_fd, struct kvm_cpuid_entry2 *entries, uint32_t capacity) {
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + capacity * sizeof(*entries));
    if (!cpuid) { errno = ENOMEM; return -1; }
    cpuid->nent = capacity;
    int result = ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid);
    if (result == 0) {
        memcpy(entries, cpuid->entries, cpuid->nent * sizeof(*entries));
        result = (int)cpuid->nent;
    }
    int saved = errno;
    free(cpuid);
    errno = saved;
    return result;
}

int ckiln_kvm_set_cpuid2(int vcpu_fd, const struct kvm_cpuid_entry2 *entries, uint32_t count) {
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + count * sizeof(*entries));
    if (!cpuid) { errno = ENOMEM; return -1; }
    cpuid->nent = count;
    memcpy(cpuid->entries, entries, count * sizeof(*entries));
    int result = ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid);
    int saved = errno;
    free(cpuid);
    errno = saved;
    return result;
}

int ckiln_kvm_set_msrs(int vcpu_fd, const struct kvm_msr_entry *entries, uint32_t count) {
    struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + count * sizeof(*entries));
    if (!msrs) { errno = ENOMEM; return -1; }
    msrs->nmsrs = count;
    memcpy(msrs->entries, entries, count * sizeof(*entries));
    int result = ioctl(vcpu_fd, KVM_SET_MSRS, msrs);
    int saved = errno;
    free(msrs);
    errno = saved;
    return result;
}

int ckiln_kvm_set_irqchip_routes(int vm_fd, const uint32_t *gsis, const uint32_t *chips,
                                 const uint32_t *pins, uint32_t count) {
    struct kvm_irq_routing *routing =
        calloc(1, sizeof(*routing) + count * sizeof(struct kvm_irq_routing_entry));
    if (!routing) { errno = ENOMEM; return -1; }
    routing->nr = count;
    for (uint32_t i = 0; i < count; i++) {
        routing->entries[i].gsi = gsis[i];
        routing->entries[i].type = KVM_IRQ_ROUTING_IRQCHIP;
        routing->entries[i].u.irqchip.irqchip = chips[i];
        routing->entries[i].u.irqchip.pin = pins[i];
    }
    int result = ioctl(vm_fd, KVM_SET_GSI_ROUTING, routing);
    int saved = errno;
    free(routing);
    errno = saved;
    return result;
}

int ckiln_kvm_register_ioeventfd(int vm_fd, uint64_t address, uint32_t length, uint64_t datamatch, int event_fd) {
    struct kvm_ioeventfd request;
    memset(&request, 0, sizeof(request));
    request.addr = address;
    request.len = length;
    request.datamatch = datamatch;
    request.fd = event_fd;
    request.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
    return ioctl(vm_fd, KVM_IOEVENTFD, &request);
}
