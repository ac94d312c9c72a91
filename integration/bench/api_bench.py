"""API benchmarks for kiln (prints figures; not a test).

1. exec -> API socket accepting: wall time from just before the spawn to the
   first successful connect (the socket is listening), and to the answer of
   a first GET / (the API thread serves, under its filter); kiln's CPU time
   at each moment, read from its process CPU clock (clock_gettime on the
   pid's CPUCLOCK_SCHED clock, nanosecond-precise, unlike rusage ticks).
   Firecracker publishes <= 8 CPU-ms.
2. API latency: median and p99 of 10,000 GET /machine-config round trips on
   one keep-alive connection (client-side, Python's own overhead included).
3. InstanceStart -> first KVM_RUN: from just before the PUT /actions is sent
   to the ts_ns of kiln's "first KVM_RUN" log line (both CLOCK_MONOTONIC).

Every run uses the real configuration: kiln with every thread's seccomp filter.
Usage: api_bench.py KILN BUNDLE GUEST RUNS
Importable: the density benchmark (density/) takes its start-up figures from
`start_kiln` and `instance_start_to_first_run`.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

def process_cpu_ns(pid):
    # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) from the kernel's posix-timers.h.
    return time.clock_gettime_ns((~pid << 3) | 2)


class Connection:
    """A minimal keep-alive HTTP/1.1 client: kiln always sends Content-Length."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buffer = b""

    def request(self, method, path, body=None):
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + payload)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self.buffer += self.sock.recv(65536)
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(header.split(b" ")[1]), body


def start_kiln(kiln, bundle, folder, extra=()):
    """kiln serving its API in `folder`; (process, socket path, (exec ->
    accepting wall ms, its CPU ms, exec -> first GET / answered wall ms, its
    CPU ms))."""
    path = os.path.join(folder, "api.sock")
    err = open(os.path.join(folder, "kiln.err"), "w")
    started = time.monotonic_ns()
    process = subprocess.Popen([kiln, "--api-sock", path, "--seccomp-filter", bundle, *extra],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    while True:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            listening = time.monotonic_ns()
            listening_cpu = process_cpu_ns(process.pid)
            probe.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while probe.recv(4096):
                pass
            served = time.monotonic_ns()
            served_cpu = process_cpu_ns(process.pid)
            probe.close()
            return process, path, ((listening - started) / 1e6, listening_cpu / 1e6,
                                   (served - started) / 1e6, served_cpu / 1e6)
        except OSError:
            probe.close()
            if process.poll() is not None:
                raise RuntimeError(f"kiln exited with {process.returncode} before accepting")
            if time.monotonic_ns() - started > 10e9:
                raise RuntimeError("kiln did not accept within 10 s")


def stop(process):
    process.terminate()
    process.wait(timeout=10)


def summary(values):
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered):7.3f}  p99 {p99:7.3f}  min {ordered[0]:7.3f}  max {ordered[-1]:7.3f}"


def instance_start_to_first_run(kiln, bundle, guest, runs):
    """Per run, ms from just before PUT /actions InstanceStart is sent to the
    ts_ns of kiln's "first KVM_RUN" line."""
    starts = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            process, path, _ = start_kiln(kiln, bundle, folder, ["--level", "Info"])
            connection = Connection(path)
            assert connection.request("PUT", "/boot-source",
                                      {"kernel_image_path": guest, "boot_args": "ctrlaltdel"})[0] == 204
            before = time.monotonic_ns()
            status, body = connection.request("PUT", "/actions", {"action_type": "InstanceStart"})
            assert status == 204, body
            first = None
            deadline = time.monotonic() + 10
            while first is None and time.monotonic() < deadline:
                for line in open(os.path.join(folder, "kiln.err")):
                    record = json.loads(line)
                    if "first KVM_RUN" in record["msg"]:
                        first = record["ts_ns"]
                time.sleep(0.01)
            stop(process)
            if first is None:
                raise RuntimeError("no first KVM_RUN line")
            starts.append((first - before) / 1e6)
    return starts


def main():
    kiln, bundle, guest, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    startups = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            process, _, figures = start_kiln(kiln, bundle, folder)
            startups.append(figures)
            stop(process)

    with tempfile.TemporaryDirectory() as folder:
        process, path, _ = start_kiln(kiln, bundle, folder)
        connection = Connection(path)
        latencies = []
        for _ in range(10_000):
            before = time.perf_counter_ns()
            status, _ = connection.request("GET", "/machine-config")
            latencies.append((time.perf_counter_ns() - before) / 1e3)
            assert status == 200
        stop(process)

    starts = instance_start_to_first_run(kiln, bundle, guest, runs)

    print(f"kiln API benchmarks (every thread under its seccomp filter), {runs} runs where repeated:")
    column = lambda index: [figures[index] for figures in startups]
    print(f"  exec -> API socket accepting, wall ms    {summary(column(0))}")
    print(f"  exec -> API socket accepting, CPU ms     {summary(column(1))}   (Firecracker: <= 8 CPU ms)")
    print(f"  exec -> first GET / answered, wall ms    {summary(column(2))}")
    print(f"  exec -> first GET / answered, CPU ms     {summary(column(3))}")
    print(f"  GET /machine-config latency, us (10000)  {summary(latencies)}")
    print(f"  InstanceStart -> first KVM_RUN, ms       {summary(starts)}")


if __name__ == "__main__":
    main()
