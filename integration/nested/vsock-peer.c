/*
 * kiln-vsock-peer: both ends of the nested lane's vsock checks, one static
 * program. In level 2 it speaks AF_VSOCK through Debian's
 * vmw_vsock_virtio_transport; in level 1 it speaks to the VMM's Unix
 * sockets the way Firecracker's clients do (docs: firecracker-vsock.md):
 * "CONNECT <port>\n" on uds_path and "OK <host port>\n" back, or a listener
 * on "<uds_path>_<port>" for connections the guest makes.
 *
 *   kiln-vsock-peer listen PORT COUNT             (vsock) echo COUNT connections
 *   kiln-vsock-peer connect CID PORT BYTES TRIES  (vsock) send BYTES, check the echo
 *   kiln-vsock-peer unix-listen PATH COUNT        (Unix) echo COUNT connections
 *   kiln-vsock-peer unix-connect PATH PORT BYTES  (Unix) CONNECT (up to 20 tries), send, check the echo
 *   kiln-vsock-peer unix-rate PATH PORT N         (Unix) N connections one after another,
 *                                                 one byte echoed on each
 *
 * The bytes sent are a fixed pseudo-random sequence, so the echo is checked
 * byte for byte without holding it. Each mode prints one result line:
 * "ok ..." (exit 0) or "fail ..." (exit 1), with its wall time; every wait
 * is bounded by a deadline.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CHUNK 65536
/* No single wait lasts longer than this (TCG is slow, nested TCG slower). */
#define WAIT_MS 60000

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* xorshift32: the byte at each offset of the stream, for sender and checker alike. */
struct pattern { uint32_t state; };
static uint8_t next_byte(struct pattern *p) {
    p->state ^= p->state << 13;
    p->state ^= p->state >> 17;
    p->state ^= p->state << 5;
    return (uint8_t)p->state;
}

static int fail(const char *what) {
    printf("fail %s: %s\n", what, errno ? strerror(errno) : "no error code");
    return 1;
}

static int wait_for(int fd, short events) {
    struct pollfd entry = { .fd = fd, .events = events };
    int ready = poll(&entry, 1, WAIT_MS);
    return ready == 1 ? 0 : -1;
}

/* Echoes everything read back until the peer's end of file, then closes. */
static long long echo_connection(int fd) {
    static char buffer[CHUNK];
    long long total = 0;
    for (;;) {
        if (wait_for(fd, POLLIN) != 0) break;
        ssize_t count = read(fd, buffer, sizeof buffer);
        if (count <= 0) break;
        for (ssize_t done = 0; done < count;) {
            if (wait_for(fd, POLLOUT) != 0) { close(fd); return -1; }
            ssize_t written = write(fd, buffer + done, count - done);
            if (written <= 0) { close(fd); return -1; }
            done += written;
        }
        total += count;
    }
    close(fd);
    return total;
}

/* Sends `bytes` of the pattern while reading the echo back and comparing
 * it; then half-closes and waits for the peer's end of file. */
static int send_and_check(int fd, long long bytes, const char *what) {
    static uint8_t out[CHUNK], in[CHUNK];
    struct pattern sender = { 0x4b494c4e }, checker = { 0x4b494c4e };
    long long sent = 0, received = 0;
    size_t pending = 0, offset = 0;
    double start = now();
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (received < bytes) {
        struct pollfd entry = { .fd = fd, .events = POLLIN | (sent < bytes ? POLLOUT : 0) };
        if (poll(&entry, 1, WAIT_MS) != 1) { errno = ETIMEDOUT; return fail(what); }
        if ((entry.revents & POLLOUT) && sent < bytes) {
            if (offset == pending) {
                pending = bytes - sent < CHUNK ? (size_t)(bytes - sent) : CHUNK;
                for (size_t i = 0; i < pending; i++) out[i] = next_byte(&sender);
                offset = 0;
            }
            ssize_t written = write(fd, out + offset, pending - offset);
            if (written > 0) { offset += written; sent += written; }
            else if (errno != EAGAIN) return fail(what);
        }
        if (entry.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t count = read(fd, in, sizeof in);
            if (count == 0) { errno = 0; printf("fail %s: end of file after %lld of %lld bytes\n", what, received, bytes); return 1; }
            if (count < 0 && errno != EAGAIN) return fail(what);
            for (ssize_t i = 0; i < count; i++) {
                if (in[i] != next_byte(&checker)) {
                    printf("fail %s: byte %lld differs\n", what, received + i);
                    return 1;
                }
            }
            if (count > 0) received += count;
        }
    }
    double seconds = now() - start;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    shutdown(fd, SHUT_WR);
    char extra;
    if (wait_for(fd, POLLIN) != 0 || read(fd, &extra, 1) != 0) {
        errno = 0;
        printf("fail %s: no end of file after the half-close\n", what);
        return 1;
    }
    printf("ok %s bytes=%lld seconds=%.3f\n", what, bytes, seconds);
    return 0;
}

static int unix_socket(const char *path, struct sockaddr_un *address) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address->sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(address->sun_path, path);
    return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

/* Firecracker's host-initiated handshake; the assigned host port, or -1. */
static long unix_connect(const char *path, unsigned port, int *out) {
    struct sockaddr_un address;
    int fd = unix_socket(path, &address);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        printf("cannot connect to %s: %s\n", path, strerror(errno));
        return -1;
    }
    char command[32], line[32];
    int length = snprintf(command, sizeof command, "CONNECT %u\n", port);
    if (write(fd, command, length) != length) { close(fd); return -1; }
    size_t used = 0;
    while (used + 1 < sizeof line) {
        if (wait_for(fd, POLLIN) != 0 || read(fd, line + used, 1) != 1) {
            printf("no OK line for CONNECT %u: closed or silent\n", port);
            close(fd);
            errno = ECONNREFUSED;
            return -1;
        }
        if (line[used] == '\n') break;
        used++;
    }
    line[used] = 0;
    if (strncmp(line, "OK ", 3) != 0) { close(fd); errno = EPROTO; return -1; }
    *out = fd;
    return strtol(line + 3, NULL, 10);
}

/* Echoes until `count` connections have carried data. One that ends with
 * none is not counted: a host handshake the device gave up on (the guest
 * answered its REQUEST too late) reaches the guest as an accepted
 * connection that is reset at once. */
static int listen_and_echo(int listener, long count, const char *what) {
    long long total = 0;
    long served = 0, empty = 0;
    double start = now();
    while (served < count) {
        if (wait_for(listener, POLLIN) != 0) { errno = ETIMEDOUT; return fail(what); }
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) return fail(what);
        long long echoed = echo_connection(fd);
        if (echoed < 0) return fail(what);
        if (echoed == 0) { empty++; continue; }
        total += echoed;
        served++;
    }
    printf("ok %s connections=%ld bytes=%lld seconds=%.3f empty=%ld\n", what, count, total, now() - start, empty);
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: kiln-vsock-peer listen PORT COUNT | connect CID PORT BYTES TRIES |\n"
                    "       unix-listen PATH COUNT | unix-connect PATH PORT BYTES | unix-rate PATH PORT N\n");
    return 2;
}

/* A positive decimal argument, or 0 (a usage error). */
static long long number(const char *text) {
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    return (errno || *end || end == text || value <= 0) ? 0 : value;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && strcmp(argv[1], "listen") == 0) {
        long long port = number(argv[2]), count = number(argv[3]);
        if (!port || !count) return usage();
        struct sockaddr_vm address = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)port };
        int listener = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 16) != 0)
            return fail("vsock listen");
        /* The caller waits for this line before it tells the host to connect. */
        printf("listening port=%lld\n", port);
        return listen_and_echo(listener, (long)count, "vsock-listen");
    }
    if (argc == 6 && strcmp(argv[1], "connect") == 0) {
        long long cid = number(argv[2]), port = number(argv[3]), bytes = number(argv[4]), tries = number(argv[5]);
        if (!cid || !port || !bytes || !tries) return usage();
        struct sockaddr_vm address = { .svm_family = AF_VSOCK, .svm_cid = (unsigned)cid, .svm_port = (unsigned)port };
        /* The host's listener may not be there yet: a reset means try again. */
        for (long long attempt = 1;; attempt++) {
            int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) return fail("vsock socket");
            if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0) return send_and_check(fd, bytes, "vsock-connect");
            close(fd);
            if (attempt >= tries) return fail("vsock connect");
            usleep(200000);
        }
    }
    if (argc == 4 && strcmp(argv[1], "unix-listen") == 0) {
        long long count = number(argv[3]);
        if (!count) return usage();
        struct sockaddr_un address;
        int listener = unix_socket(argv[2], &address);
        if (listener < 0 || bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 16) != 0)
            return fail("unix listen");
        return listen_and_echo(listener, (long)count, "unix-listen");
    }
    if (argc == 5 && strcmp(argv[1], "unix-connect") == 0) {
        long long port = number(argv[3]), bytes = number(argv[4]);
        if (!port || !bytes) return usage();
        /* As orchestrators' dialers do, a refused handshake is tried again
         * (the guest may be slow to answer the device's REQUEST); the
         * attempts are printed. */
        int fd, attempt = 1;
        long host_port;
        while ((host_port = unix_connect(argv[2], (unsigned)port, &fd)) < 0 && attempt < 20) {
            sleep(1);
            attempt++;
        }
        if (host_port < 0) return fail("unix-connect handshake");
        printf("handshake OK %ld attempts=%d\n", host_port, attempt);
        return send_and_check(fd, bytes, "unix-connect");
    }
    if (argc == 5 && strcmp(argv[1], "unix-rate") == 0) {
        long long port = number(argv[3]), count = number(argv[4]);
        if (!port || !count) return usage();
        double start = now();
        for (long long i = 0; i < count; i++) {
            int fd;
            char byte = 'k', back = 0;
            if (unix_connect(argv[2], (unsigned)port, &fd) < 0) return fail("unix-rate handshake");
            if (write(fd, &byte, 1) != 1 || wait_for(fd, POLLIN) != 0 || read(fd, &back, 1) != 1 || back != byte) {
                close(fd);
                return fail("unix-rate echo");
            }
            shutdown(fd, SHUT_WR);
            if (wait_for(fd, POLLIN) != 0 || read(fd, &back, 1) != 0) { close(fd); errno = 0; return fail("unix-rate close"); }
            close(fd);
        }
        double seconds = now() - start;
        printf("ok unix-rate connections=%lld seconds=%.3f per_second=%.1f\n", count, seconds, count / seconds);
        return 0;
    }
    return usage();
}
