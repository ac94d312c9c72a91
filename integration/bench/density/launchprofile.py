"""Where a launch batch's CPU goes inside the instances' processes, from a
`perf record -a -g` of the batch (launchrate.batch's `profile`): each sample
of an instance's pid is filed under the first step below that its call
stack passes through, per process image (kiln-jailer before its exec, kiln
after it, and kiln's vCPU thread), in CPU-ms per launch.

The steps are named for what the kernel or the process does there: the
kernel functions each step matches are listed in STEPS.
"""
import collections
import re
import subprocess

# (step, pattern over a sample's call-stack symbols), first match wins; a
# stack that matches none is "other kernel" or "own code" by its leaf.
STEPS = [
    ("guest running (KVM_RUN)", r"kvm_arch_vcpu_ioctl_run"),
    ("execve (mapping the binary)", r"\b(bprm_execve|do_execveat_common|load_elf_binary|begin_new_exec)\b"),
    ("fork of the harness's child", r"\b(copy_process|kernel_clone)\b"),
    ("static-pie relocation (its page faults too)", r"\b_dl_relocate_static_pie\b"),
    ("glibc's cache-size probe (CPUID, trapped on this host)",
     r"\b(init_cpu_features|update_active|handle_intel|intel_check_word|get_extended_indices|init_cacheinfo|"
     r"get_common_indices|get_common_cache_info|dl_init_cacheinfo)"),
    ("KVM_GET_SUPPORTED_CPUID (host CPUID, trapped on this host)", r"\bkvm_dev_ioctl_get_cpuid\b"),
    ("KVM_SET_USER_MEMORY_REGION", r"\bkvm_(vm_ioctl_set_memory_region|set_memory_region|set_memslot)\b"),
    ("KVM_CREATE_VM", r"\bkvm_dev_ioctl_create_vm\b"),
    ("KVM_CREATE_VCPU and its set-up ioctls", r"\bkvm_vm_ioctl_create_vcpu\b|\bkvm_vcpu_ioctl\b"),
    ("other KVM ioctls (irqchip, PIT, irqfd, ioeventfd)", r"\bkvm_vm_ioctl\b|\bkvm_arch_vm_ioctl\b"),
    ("unshare (mount, IPC, UTS, cgroup namespaces)", r"\b(ksys_unshare|__x64_sys_unshare|copy_namespaces|create_new_namespaces)\b"),
    ("pivot_root, umount, /dev tmpfs (mounts)",
     r"\b(__x64_sys_pivot_root|path_umount|__x64_sys_umount|__x64_sys_mount|__x64_sys_move_mount|"
     r"__x64_sys_open_tree|__x64_sys_fsmount|__x64_sys_fsconfig|__x64_sys_mount_setattr)\b"),
    ("cgroups (mkdir, knobs, joining)", r"\bcgroup|\bmem_cgroup_css_alloc|\bkernfs"),
    ("jail folder on ext4 (mkdir, link, open)", r"\bext4_"),
    ("seccomp filters (install, BPF JIT)", r"\b(__x64_sys_seccomp|do_seccomp|bpf_prog_create|bpf_int_jit_compile|do_jit)\b"),
    ("page faults", r"\b(exc_page_fault|asm_exc_page_fault)\b"),
    ("Swift runtime (generic metadata, conformances)", r"\bswift_|swift::"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in STEPS]


def samples(perf_file, pids):
    """(comm, [symbols leaf first]) of each sample of `pids` in the file."""
    result = subprocess.run(["perf", "script", "-i", perf_file, "--pid", ",".join(str(pid) for pid in pids),
                             "-F", "comm,ip,sym"], capture_output=True, text=True, timeout=300)
    found = []
    for block in result.stdout.split("\n\n"):
        lines = [line for line in block.strip().split("\n") if line.strip()]
        if not lines:
            continue
        comm = lines[0].strip()
        symbols = [parts[1] for parts in (line.split(None, 1) for line in lines[1:]) if len(parts) == 2]
        found.append((comm, symbols))
    return found


def image(comm):
    if comm == "kiln-jailer":
        return "kiln-jailer"
    return "kiln vCPU thread" if comm.startswith("kiln-vcpu") else "kiln (other threads)" if comm.startswith(
        "kiln-") else "kiln main thread" if comm == "kiln" else f"{comm} (before exec)"


def step_of(symbols):
    stack = " ".join(symbols)
    for name, pattern in COMPILED:
        if pattern.search(stack):
            return name
    leaf = symbols[0] if symbols else ""
    kernel = any(symbol in ("entry_SYSCALL_64_after_hwframe", "asm_sysvec_apic_timer_interrupt", "ret_from_fork")
                 or symbol.startswith("asm_") for symbol in symbols)
    return "other system calls and kernel work" if kernel else "own code (user space)" if leaf else "unknown"


def breakdown(perf_file, pids, launches, frequency=999):
    """{image: {step: CPU-ms per launch}} and the totals per image."""
    table = collections.defaultdict(collections.Counter)
    for comm, symbols in samples(perf_file, pids):
        table[image(comm)][step_of(symbols)] += 1
    per_sample_ms = 1000 / frequency / max(1, launches)
    return {name: {step: count * per_sample_ms for step, count in steps.most_common()}
            for name, steps in sorted(table.items(), key=lambda item: -sum(item[1].values()))}


def lines(profile):
    out = []
    for name, steps in profile.items():
        out.append(f"  - {name}: {sum(steps.values()):.2f} CPU-ms per launch: "
                   + "; ".join(f"{step} {ms:.2f}" for step, ms in steps.items() if ms >= 0.05))
    return out
