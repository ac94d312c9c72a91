/// System call names, numbers and argument widths for x86_64.
public enum SyscallTable {
    public static let byName: [String: Int32] = Dictionary(
        uniqueKeysWithValues: x86_64Entries.map { ($0.name, $0.number) })
    public static let byNumber: [Int32: String] = Dictionary(
        uniqueKeysWithValues: x86_64Entries.map { ($0.number, $0.name) })
    public static var names: [String] { x86_64Entries.map(\.name) }

    public static func number(of name: String) -> Int32? { byName[name] }
    public static func name(of number: Int32) -> String? { byNumber[number] }

    /// How wide the kernel reads an argument.
    ///
    /// seccomp hands the filter all 64 bits of every argument register, but
    /// when the kernel declares a parameter `int` or `unsigned int`
    /// (`SYSCALL_DEFINE3(ioctl, unsigned int, fd, unsigned int, cmd, ...)`) it
    /// ignores the upper half, which the caller controls. A 64-bit comparison
    /// there would refuse a legitimate call whose upper half is not zero (a
    /// sign-extended KVM_GET_IRQCHIP), and a 64-bit `!=` or `>` would let a
    /// caller pass a forbidden value with junk in the upper half. So a policy
    /// compares exactly the bits the kernel uses: 32 for the parameters
    /// listed here, 64 for everything else.
    ///
    /// The list only has to be right in one direction: a parameter missing
    /// from it is compared on 64 bits, which can refuse a call but never lets
    /// one through. An entry here that the kernel really reads as 64 bits
    /// would be a hole, so each one is taken from the SYSCALL_DEFINE in
    /// Linux 6.1.
    public static let thirtyTwoBitArguments: [String: Set<Int>] = [
        "read": [0], "write": [0], "close": [0], "fstat": [0], "lseek": [0, 2], "pread64": [0], "pwrite64": [0],
        "fsync": [0], "fdatasync": [0], "ftruncate": [0], "dup": [0], "dup2": [0, 1], "dup3": [0, 1, 2],
        "ioctl": [0, 1], "fcntl": [0, 1], "open": [1], "openat": [0, 2], "newfstatat": [0, 3],
        "statx": [0, 2, 3], "pipe2": [1],
        "mmap": [], "mprotect": [], "madvise": [2], "msync": [2], "memfd_create": [1],
        "futex": [1], "exit": [0], "exit_group": [0], "tkill": [0, 1], "tgkill": [0, 1, 2], "kill": [0, 1],
        "rt_sigaction": [0], "rt_sigprocmask": [0],
        "socket": [0, 1, 2], "socketpair": [0, 1, 2], "connect": [0, 2], "bind": [0, 2], "listen": [0, 1],
        "accept": [0], "accept4": [0, 3], "shutdown": [0, 1],
        "sendto": [0, 3], "recvfrom": [0, 3], "sendmsg": [0, 2], "recvmsg": [0, 2],
        "setsockopt": [0, 1, 2, 4], "getsockopt": [0, 1, 2],
        "epoll_create1": [0], "epoll_ctl": [0, 1, 2], "epoll_wait": [0, 2, 3], "epoll_pwait": [0, 2, 3],
        "eventfd2": [0, 1], "timerfd_create": [0, 1], "timerfd_settime": [0, 1], "timerfd_gettime": [0],
        "clock_gettime": [0], "clock_nanosleep": [0, 1], "getrandom": [2], "poll": [1, 2],
        "arch_prctl": [0], "prctl": [0], "execveat": [0, 4], "wait4": [0, 2],
        "prlimit64": [0, 1], "getrlimit": [0], "setrlimit": [0], "sched_getaffinity": [0, 1],
        "seccomp": [0, 1], "setns": [0, 1], "personality": [0], "bpf": [0],
        "perf_event_open": [1, 2], "io_uring_setup": [0], "io_uring_enter": [0, 1, 2, 3],
        "io_uring_register": [0, 1, 3], "userfaultfd": [0], "rseq": [1, 2, 3],
    ]

    /// How many arguments the kernel reads, from each SYSCALL_DEFINEn in Linux
    /// 6.1 (x86_64). A test of a higher argument is a test of a register the
    /// kernel ignores and the caller fills at will: it restricts nothing, yet
    /// would make the rule look conditioned to the audit. So the parser
    /// refuses it.
    ///
    /// Right in one direction, like the widths: a call missing from the list
    /// is not checked; an entry too small would refuse a valid policy, never
    /// let a meaningless test through. It covers every call named above, the
    /// ones the audit wants conditioned and the ones the policies condition.
    public static let argumentCounts: [String: Int] = [
        "read": 3, "write": 3, "close": 1, "fstat": 2, "lseek": 3, "pread64": 4, "pwrite64": 4,
        "fsync": 1, "fdatasync": 1, "ftruncate": 2, "dup": 1, "dup2": 2, "dup3": 3,
        "ioctl": 3, "fcntl": 3, "open": 3, "openat": 4, "openat2": 4, "newfstatat": 4,
        "statx": 5, "pipe2": 2,
        "mmap": 6, "mprotect": 3, "pkey_mprotect": 4, "mremap": 5, "madvise": 3, "msync": 3, "memfd_create": 2,
        "futex": 6, "exit": 1, "exit_group": 1, "tkill": 2, "tgkill": 3, "kill": 2,
        "rt_sigaction": 4, "rt_sigprocmask": 4, "clone": 5, "clone3": 2,
        "socket": 3, "socketpair": 4, "connect": 3, "bind": 3, "listen": 2,
        "accept": 3, "accept4": 4, "shutdown": 2,
        "sendto": 6, "recvfrom": 6, "sendmsg": 3, "recvmsg": 3,
        "setsockopt": 5, "getsockopt": 5,
        "epoll_create1": 1, "epoll_ctl": 4, "epoll_wait": 4, "epoll_pwait": 6,
        "eventfd2": 2, "timerfd_create": 2, "timerfd_settime": 4, "timerfd_gettime": 2,
        "clock_gettime": 2, "clock_nanosleep": 4, "getrandom": 3, "poll": 3,
        "arch_prctl": 2, "prctl": 5, "execveat": 5, "wait4": 4,
        "prlimit64": 4, "getrlimit": 2, "setrlimit": 2, "sched_getaffinity": 3,
        "seccomp": 3, "setns": 2, "personality": 1, "bpf": 3,
        "perf_event_open": 5, "io_uring_setup": 2, "io_uring_enter": 6,
        "io_uring_register": 4, "userfaultfd": 1, "rseq": 4,
        "brk": 1, "munmap": 2, "unlink": 1, "set_tid_address": 1, "set_robust_list": 2, "readlink": 3, "sigaltstack": 2,
    ]

    /// The width, in bits, that a comparison of `argument` of `syscall` uses.
    public static func argumentWidth(_ syscall: String, _ argument: Int) -> Int {
        thirtyTwoBitArguments[syscall]?.contains(argument) == true ? 32 : 64
    }
}
