/* The density benchmark's container-side service: a UDP echo on port 7
 * (RFC 862), the same exchange the test guest's udpecho mode answers.
 * Debian's busybox has no UDP server (its nc lacks -u, and udpsvd is not
 * built in), so this is the one program added to the busybox image: static,
 * no libc, raw system calls (x86_64 Linux ABI), a few KiB. */
typedef unsigned long u64;

static long sys(long number, long a, long b, long c, long d, long e, long f) {
    long result;
    register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}

enum { SYS_exit = 60, SYS_socket = 41, SYS_bind = 49, SYS_recvfrom = 45, SYS_sendto = 44 };

struct address { unsigned short family, port; unsigned int ip; unsigned char zero[8]; };

__attribute__((force_align_arg_pointer)) void _start(void) {
    long fd = sys(SYS_socket, 2 /* AF_INET */, 2 /* SOCK_DGRAM */, 0, 0, 0, 0);
    struct address local = { 2, 7 << 8 /* port 7, network order */, 0, {0} };
    if (fd < 0 || sys(SYS_bind, fd, (long)&local, sizeof local, 0, 0, 0) < 0) sys(SYS_exit, 1, 0, 0, 0, 0, 0);
    static char buffer[65536];
    for (;;) {
        struct address peer;
        unsigned int length = sizeof peer;
        long received = sys(SYS_recvfrom, fd, (long)buffer, sizeof buffer, 0, (long)&peer, (long)&length);
        if (received >= 0) sys(SYS_sendto, fd, (long)buffer, received, 0, (long)&peer, length);
    }
}
