import KilnSystem

/// The named constants a policy may use as argument values: ioctl requests,
/// flag bits and enumerations of the x86_64 Linux ABI. Values are 64-bit
/// patterns; negative ones (AT_FDCWD) are stored two's complement.
///
/// Every entry except the errno names is checked against the C headers by
/// `PolicyConstantsTests` (through the CPolicyConstantsCheck test target).
public enum PolicyConstants {
    /// struct sizes on x86_64 (<linux/kvm.h>), for the ioctl numbers below.
    private enum KVMSize {
        static let msrList: UInt32 = 4, cpuid2: UInt32 = 8, userspaceMemoryRegion: UInt32 = 32
        static let irqLevel: UInt32 = 8, irqchip: UInt32 = 520, pitConfig: UInt32 = 64, irqRouting: UInt32 = 8
        static let irqfd: UInt32 = 32, ioeventfd: UInt32 = 64, msi: UInt32 = 32, clockData: UInt32 = 48
        static let regs: UInt32 = 144, sregs: UInt32 = 312, interrupt: UInt32 = 4, msrs: UInt32 = 8
        static let fpu: UInt32 = 416, lapicState: UInt32 = 1024, mpState: UInt32 = 4, vcpuEvents: UInt32 = 64
        static let debugregs: UInt32 = 128, xsave: UInt32 = 4096, xcrs: UInt32 = 392, enableCap: UInt32 = 104
        static let dirtyLog: UInt32 = 16, pitState2: UInt32 = 112
    }
    private static let kvm: UInt8 = 0xAE

    /// KVM ioctls (Documentation/virt/kvm/api.rst, section 4), system, VM and vCPU.
    static let kvmIoctls: [(String, Int64)] = [
        ("KVM_GET_API_VERSION", IoctlNumber.io(kvm, 0x00)),
        ("KVM_CREATE_VM", IoctlNumber.io(kvm, 0x01)),
        ("KVM_GET_MSR_INDEX_LIST", IoctlNumber.iowr(kvm, 0x02, size: KVMSize.msrList)),
        ("KVM_CHECK_EXTENSION", IoctlNumber.io(kvm, 0x03)),
        ("KVM_GET_VCPU_MMAP_SIZE", IoctlNumber.io(kvm, 0x04)),
        ("KVM_GET_SUPPORTED_CPUID", IoctlNumber.iowr(kvm, 0x05, size: KVMSize.cpuid2)),
        ("KVM_GET_MSR_FEATURE_INDEX_LIST", IoctlNumber.iowr(kvm, 0x0a, size: KVMSize.msrList)),
        ("KVM_CREATE_VCPU", IoctlNumber.io(kvm, 0x41)),
        ("KVM_GET_DIRTY_LOG", IoctlNumber.iow(kvm, 0x42, size: KVMSize.dirtyLog)),
        ("KVM_SET_USER_MEMORY_REGION", IoctlNumber.iow(kvm, 0x46, size: KVMSize.userspaceMemoryRegion)),
        ("KVM_SET_TSS_ADDR", IoctlNumber.io(kvm, 0x47)),
        ("KVM_SET_IDENTITY_MAP_ADDR", IoctlNumber.iow(kvm, 0x48, size: 8)),
        ("KVM_CREATE_IRQCHIP", IoctlNumber.io(kvm, 0x60)),
        ("KVM_IRQ_LINE", IoctlNumber.iow(kvm, 0x61, size: KVMSize.irqLevel)),
        ("KVM_GET_IRQCHIP", IoctlNumber.iowr(kvm, 0x62, size: KVMSize.irqchip)),
        ("KVM_SET_IRQCHIP", IoctlNumber.ior(kvm, 0x63, size: KVMSize.irqchip)),
        ("KVM_IRQ_LINE_STATUS", IoctlNumber.iowr(kvm, 0x67, size: KVMSize.irqLevel)),
        ("KVM_SET_GSI_ROUTING", IoctlNumber.iow(kvm, 0x6a, size: KVMSize.irqRouting)),
        ("KVM_IRQFD", IoctlNumber.iow(kvm, 0x76, size: KVMSize.irqfd)),
        ("KVM_CREATE_PIT2", IoctlNumber.iow(kvm, 0x77, size: KVMSize.pitConfig)),
        ("KVM_IOEVENTFD", IoctlNumber.iow(kvm, 0x79, size: KVMSize.ioeventfd)),
        ("KVM_SET_CLOCK", IoctlNumber.iow(kvm, 0x7b, size: KVMSize.clockData)),
        ("KVM_GET_CLOCK", IoctlNumber.ior(kvm, 0x7c, size: KVMSize.clockData)),
        ("KVM_GET_PIT2", IoctlNumber.ior(kvm, 0x9f, size: KVMSize.pitState2)),
        ("KVM_SET_PIT2", IoctlNumber.iow(kvm, 0xa0, size: KVMSize.pitState2)),
        ("KVM_SIGNAL_MSI", IoctlNumber.iow(kvm, 0xa5, size: KVMSize.msi)),
        ("KVM_ENABLE_CAP", IoctlNumber.iow(kvm, 0xa3, size: KVMSize.enableCap)),
        ("KVM_RUN", IoctlNumber.io(kvm, 0x80)),
        ("KVM_GET_REGS", IoctlNumber.ior(kvm, 0x81, size: KVMSize.regs)),
        ("KVM_SET_REGS", IoctlNumber.iow(kvm, 0x82, size: KVMSize.regs)),
        ("KVM_GET_SREGS", IoctlNumber.ior(kvm, 0x83, size: KVMSize.sregs)),
        ("KVM_SET_SREGS", IoctlNumber.iow(kvm, 0x84, size: KVMSize.sregs)),
        ("KVM_INTERRUPT", IoctlNumber.iow(kvm, 0x86, size: KVMSize.interrupt)),
        ("KVM_GET_MSRS", IoctlNumber.iowr(kvm, 0x88, size: KVMSize.msrs)),
        ("KVM_SET_MSRS", IoctlNumber.iow(kvm, 0x89, size: KVMSize.msrs)),
        ("KVM_GET_FPU", IoctlNumber.ior(kvm, 0x8c, size: KVMSize.fpu)),
        ("KVM_SET_FPU", IoctlNumber.iow(kvm, 0x8d, size: KVMSize.fpu)),
        ("KVM_GET_LAPIC", IoctlNumber.ior(kvm, 0x8e, size: KVMSize.lapicState)),
        ("KVM_SET_LAPIC", IoctlNumber.iow(kvm, 0x8f, size: KVMSize.lapicState)),
        ("KVM_SET_CPUID2", IoctlNumber.iow(kvm, 0x90, size: KVMSize.cpuid2)),
        ("KVM_GET_CPUID2", IoctlNumber.iowr(kvm, 0x91, size: KVMSize.cpuid2)),
        ("KVM_GET_MP_STATE", IoctlNumber.ior(kvm, 0x98, size: KVMSize.mpState)),
        ("KVM_SET_MP_STATE", IoctlNumber.iow(kvm, 0x99, size: KVMSize.mpState)),
        ("KVM_GET_VCPU_EVENTS", IoctlNumber.ior(kvm, 0x9f, size: KVMSize.vcpuEvents)),
        ("KVM_SET_VCPU_EVENTS", IoctlNumber.iow(kvm, 0xa0, size: KVMSize.vcpuEvents)),
        ("KVM_GET_DEBUGREGS", IoctlNumber.ior(kvm, 0xa1, size: KVMSize.debugregs)),
        ("KVM_SET_DEBUGREGS", IoctlNumber.iow(kvm, 0xa2, size: KVMSize.debugregs)),
        ("KVM_SET_TSC_KHZ", IoctlNumber.io(kvm, 0xa2)),
        ("KVM_GET_TSC_KHZ", IoctlNumber.io(kvm, 0xa3)),
        ("KVM_GET_XSAVE", IoctlNumber.ior(kvm, 0xa4, size: KVMSize.xsave)),
        ("KVM_SET_XSAVE", IoctlNumber.iow(kvm, 0xa5, size: KVMSize.xsave)),
        ("KVM_GET_XCRS", IoctlNumber.ior(kvm, 0xa6, size: KVMSize.xcrs)),
        ("KVM_SET_XCRS", IoctlNumber.iow(kvm, 0xa7, size: KVMSize.xcrs)),
        ("KVM_KVMCLOCK_CTRL", IoctlNumber.io(kvm, 0xad)),
    ]

    /// TAP (<linux/if_tun.h>) and terminal/file ioctls (<asm-generic/ioctls.h>).
    static let deviceIoctls: [(String, Int64)] = [
        ("TUNSETIFF", IoctlNumber.iow(0x54, 202, size: 4)),
        ("TUNGETIFF", IoctlNumber.ior(0x54, 210, size: 4)),
        ("TUNSETOFFLOAD", IoctlNumber.iow(0x54, 208, size: 4)),
        ("TUNSETVNETHDRSZ", IoctlNumber.iow(0x54, 216, size: 4)),
        ("FIONBIO", 0x5421), ("FIOCLEX", 0x5451), ("FIONCLEX", 0x5450), ("FIONREAD", 0x541B),
        ("TCGETS", 0x5401), ("TCSETS", 0x5402), ("TIOCGWINSZ", 0x5413),
    ]

    /// Flags and enumerations: <asm-generic/mman-common.h>, <asm-generic/fcntl.h>,
    /// <linux/socket.h>, <linux/sched.h>, <linux/futex.h>, <sys/epoll.h> and friends.
    static let flags: [(String, Int64)] = [
        ("PROT_NONE", 0), ("PROT_READ", 0x1), ("PROT_WRITE", 0x2), ("PROT_EXEC", 0x4),
        ("PROT_GROWSDOWN", 0x0100_0000), ("PROT_GROWSUP", 0x0200_0000),
        ("MAP_SHARED", 0x01), ("MAP_PRIVATE", 0x02), ("MAP_SHARED_VALIDATE", 0x03), ("MAP_FIXED", 0x10),
        ("MAP_ANONYMOUS", 0x20), ("MAP_GROWSDOWN", 0x100), ("MAP_DENYWRITE", 0x800), ("MAP_EXECUTABLE", 0x1000),
        ("MAP_LOCKED", 0x2000), ("MAP_NORESERVE", 0x4000), ("MAP_POPULATE", 0x8000), ("MAP_NONBLOCK", 0x10000),
        ("MAP_STACK", 0x20000), ("MAP_HUGETLB", 0x40000), ("MAP_SYNC", 0x80000), ("MAP_FIXED_NOREPLACE", 0x100000),
        ("MREMAP_MAYMOVE", 1), ("MREMAP_FIXED", 2), ("MREMAP_DONTUNMAP", 4),
        ("MADV_NORMAL", 0), ("MADV_RANDOM", 1), ("MADV_SEQUENTIAL", 2), ("MADV_WILLNEED", 3), ("MADV_DONTNEED", 4),
        ("MADV_FREE", 8), ("MADV_REMOVE", 9), ("MADV_DONTFORK", 10), ("MADV_DOFORK", 11), ("MADV_MERGEABLE", 12),
        ("MADV_HUGEPAGE", 14), ("MADV_NOHUGEPAGE", 15), ("MADV_DONTDUMP", 16), ("MADV_DODUMP", 17),
        ("MS_ASYNC", 1), ("MS_INVALIDATE", 2), ("MS_SYNC", 4),
        ("MFD_CLOEXEC", 1), ("MFD_ALLOW_SEALING", 2),
        ("O_RDONLY", 0), ("O_WRONLY", 0o1), ("O_RDWR", 0o2), ("O_CREAT", 0o100), ("O_EXCL", 0o200),
        ("O_NOCTTY", 0o400), ("O_TRUNC", 0o1000), ("O_APPEND", 0o2000), ("O_NONBLOCK", 0o4000),
        ("O_DSYNC", 0o10000), ("O_DIRECT", 0o40000), ("O_DIRECTORY", 0o200000), ("O_NOFOLLOW", 0o400000),
        ("O_NOATIME", 0o1000000), ("O_CLOEXEC", 0o2000000), ("O_SYNC", 0o4010000), ("O_PATH", 0o10000000),
        ("O_TMPFILE", 0o20200000),
        ("AT_FDCWD", -100), ("AT_SYMLINK_NOFOLLOW", 0x100), ("AT_EMPTY_PATH", 0x1000),
        ("RENAME_NOREPLACE", 1), ("RENAME_EXCHANGE", 2), ("RENAME_WHITEOUT", 4),
        ("F_DUPFD", 0), ("F_GETFD", 1), ("F_SETFD", 2), ("F_GETFL", 3), ("F_SETFL", 4), ("F_DUPFD_CLOEXEC", 1030),
        ("F_ADD_SEALS", 1033), ("F_GET_SEALS", 1034), ("FD_CLOEXEC", 1),
        ("AF_UNSPEC", 0), ("AF_UNIX", 1), ("AF_INET", 2), ("AF_INET6", 10), ("AF_NETLINK", 16), ("AF_PACKET", 17),
        ("AF_VSOCK", 40),
        ("SOCK_STREAM", 1), ("SOCK_DGRAM", 2), ("SOCK_RAW", 3), ("SOCK_SEQPACKET", 5),
        ("SOCK_NONBLOCK", 0o4000), ("SOCK_CLOEXEC", 0o2000000),
        ("MSG_PEEK", 0x2), ("MSG_TRUNC", 0x20), ("MSG_DONTWAIT", 0x40), ("MSG_WAITALL", 0x100),
        ("MSG_NOSIGNAL", 0x4000), ("MSG_CMSG_CLOEXEC", 0x4000_0000),
        ("SHUT_RD", 0), ("SHUT_WR", 1), ("SHUT_RDWR", 2),
        ("CLONE_VM", 0x100), ("CLONE_FS", 0x200), ("CLONE_FILES", 0x400), ("CLONE_SIGHAND", 0x800),
        ("CLONE_PIDFD", 0x1000), ("CLONE_PTRACE", 0x2000), ("CLONE_VFORK", 0x4000), ("CLONE_PARENT", 0x8000),
        ("CLONE_THREAD", 0x10000), ("CLONE_NEWNS", 0x20000), ("CLONE_SYSVSEM", 0x40000), ("CLONE_SETTLS", 0x80000),
        ("CLONE_PARENT_SETTID", 0x100000), ("CLONE_CHILD_CLEARTID", 0x200000), ("CLONE_DETACHED", 0x400000),
        ("CLONE_UNTRACED", 0x800000), ("CLONE_CHILD_SETTID", 0x0100_0000), ("CLONE_NEWCGROUP", 0x0200_0000),
        ("CLONE_NEWUTS", 0x0400_0000), ("CLONE_NEWIPC", 0x0800_0000), ("CLONE_NEWUSER", 0x1000_0000),
        ("CLONE_NEWPID", 0x2000_0000), ("CLONE_NEWNET", 0x4000_0000), ("CLONE_IO", 0x8000_0000),
        ("FUTEX_WAIT", 0), ("FUTEX_WAKE", 1), ("FUTEX_FD", 2), ("FUTEX_REQUEUE", 3), ("FUTEX_CMP_REQUEUE", 4),
        ("FUTEX_WAKE_OP", 5), ("FUTEX_LOCK_PI", 6), ("FUTEX_UNLOCK_PI", 7), ("FUTEX_TRYLOCK_PI", 8),
        ("FUTEX_WAIT_BITSET", 9), ("FUTEX_WAKE_BITSET", 10), ("FUTEX_WAIT_REQUEUE_PI", 11),
        ("FUTEX_CMP_REQUEUE_PI", 12), ("FUTEX_LOCK_PI2", 13),
        ("FUTEX_PRIVATE_FLAG", 128), ("FUTEX_CLOCK_REALTIME", 256),
        ("FUTEX_WAIT_PRIVATE", 128), ("FUTEX_WAKE_PRIVATE", 129), ("FUTEX_WAIT_BITSET_PRIVATE", 137),
        ("FUTEX_WAKE_BITSET_PRIVATE", 138),
        ("EPOLL_CTL_ADD", 1), ("EPOLL_CTL_DEL", 2), ("EPOLL_CTL_MOD", 3), ("EPOLL_CLOEXEC", 0o2000000),
        ("EFD_SEMAPHORE", 1), ("EFD_NONBLOCK", 0o4000), ("EFD_CLOEXEC", 0o2000000),
        ("TFD_TIMER_ABSTIME", 1), ("TFD_NONBLOCK", 0o4000), ("TFD_CLOEXEC", 0o2000000),
        ("CLOCK_REALTIME", 0), ("CLOCK_MONOTONIC", 1), ("CLOCK_PROCESS_CPUTIME_ID", 2),
        ("CLOCK_THREAD_CPUTIME_ID", 3), ("CLOCK_MONOTONIC_RAW", 4), ("CLOCK_REALTIME_COARSE", 5),
        ("CLOCK_MONOTONIC_COARSE", 6), ("CLOCK_BOOTTIME", 7),
        ("SIG_BLOCK", 0), ("SIG_UNBLOCK", 1), ("SIG_SETMASK", 2),
        ("SIGHUP", 1), ("SIGINT", 2), ("SIGQUIT", 3), ("SIGILL", 4), ("SIGTRAP", 5), ("SIGABRT", 6), ("SIGBUS", 7),
        ("SIGFPE", 8), ("SIGKILL", 9), ("SIGUSR1", 10), ("SIGSEGV", 11), ("SIGUSR2", 12), ("SIGPIPE", 13),
        ("SIGALRM", 14), ("SIGTERM", 15), ("SIGCHLD", 17), ("SIGCONT", 18), ("SIGSTOP", 19), ("SIGSYS", 31),
        ("GRND_NONBLOCK", 1), ("GRND_RANDOM", 2), ("GRND_INSECURE", 4),
        ("ARCH_SET_GS", 0x1001), ("ARCH_SET_FS", 0x1002), ("ARCH_GET_FS", 0x1003), ("ARCH_GET_GS", 0x1004),
        ("ARCH_GET_CPUID", 0x1011), ("ARCH_SET_CPUID", 0x1012),
        ("PR_SET_PDEATHSIG", 1), ("PR_GET_DUMPABLE", 3), ("PR_SET_DUMPABLE", 4), ("PR_SET_NAME", 15),
        ("PR_GET_NAME", 16), ("PR_GET_SECCOMP", 21), ("PR_SET_SECCOMP", 22), ("PR_CAPBSET_DROP", 24),
        ("PR_SET_NO_NEW_PRIVS", 38), ("PR_GET_NO_NEW_PRIVS", 39),
        ("SECCOMP_SET_MODE_STRICT", 0), ("SECCOMP_SET_MODE_FILTER", 1), ("SECCOMP_GET_ACTION_AVAIL", 2),
        ("SECCOMP_FILTER_FLAG_TSYNC", 1), ("SECCOMP_FILTER_FLAG_LOG", 2),
        ("SEEK_SET", 0), ("SEEK_CUR", 1), ("SEEK_END", 2),
        ("RLIMIT_NOFILE", 7), ("RLIMIT_STACK", 3), ("RLIMIT_AS", 9), ("RLIMIT_CORE", 4),
    ]

    /// Every name a policy may use as a value, errno names included.
    public static let all: [String: Int64] = {
        var table: [String: Int64] = [:]
        for (name, value) in kvmIoctls + deviceIoctls + flags {
            precondition(table.updateValue(value, forKey: name) == nil, "constant \(name) defined twice")
        }
        for (name, value) in ErrnoNames.all where table[name] == nil { table[name] = Int64(value) }
        return table
    }()

    /// The names checked against the C headers (all but the errno names,
    /// which KilnSystem.ErrnoNames owns).
    public static var headerChecked: [(name: String, value: Int64)] {
        (kvmIoctls + deviceIoctls + flags).map { (name: $0.0, value: $0.1) }
    }

    public static func value(named name: String) -> Int64? { all[name] }
}
