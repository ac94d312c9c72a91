"""Lane 1's vsock figures (vsock-bench.sh): kiln boots the test guest with a
vsock device; the host speaks Firecracker's protocol to kiln's Unix sockets.

  echo:  CONNECT, then MiB bytes sent while the guest's echo is read back,
         timed from the OK to the last byte back, compared byte for byte;
  host -> guest connections: CONNECT, OK, one byte echoed, half-close, the
         guest's close; one after another;
  guest -> host connections: the guest connects to <uds_path>_6000 as many
         times; the host accepts, one byte echoed, half-close, close.
The guest's echo runs with vsock.nohash: its own work per byte is the limit.
"""
import json, os, select, socket, subprocess, sys, tempfile, time

kiln, guest, mib, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
DEADLINE = 300


def start(folder, boot_args):
    config = os.path.join(folder, "vm.json")
    with open(config, "w") as f:
        json.dump({"boot-source": {"kernel_image_path": os.path.abspath(guest),
                                   "boot_args": "console=ttyS0 vsock.nohash vsock.seconds=600 " + boot_args},
                   "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
                   "vsock": {"guest_cid": 3, "uds_path": os.path.join(folder, "v.sock")}}, f)
    out = open(os.path.join(folder, "console"), "w+")
    process = subprocess.Popen(["timeout", str(DEADLINE), kiln, "--no-api", "--config-file", config],
                               stdout=out, stderr=subprocess.DEVNULL)
    return process, out


def wait_for(out, text, process):
    end = time.monotonic() + 30
    while time.monotonic() < end and process.poll() is None:
        out.seek(0)
        if text in out.read():
            return
        time.sleep(0.01)
    raise SystemExit(f"the guest never printed {text!r}")


def handshake(path, port):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(path)
    s.sendall(b"CONNECT %d\n" % port)
    line = b""
    while not line.endswith(b"\n"):
        byte = s.recv(1)
        if not byte:
            raise SystemExit(f"CONNECT {port}: closed without OK")
        line += byte
    if not line.startswith(b"OK "):
        raise SystemExit(f"CONNECT {port}: {line!r}")
    return s


def one_byte_and_close(s):
    s.sendall(b"k")
    if s.recv(1) != b"k":
        raise SystemExit("the one-byte echo did not come back")
    s.shutdown(socket.SHUT_WR)
    if s.recv(1) != b"":
        raise SystemExit("no end of file after the half-close")
    s.close()


def echo(s, payload):
    s.setblocking(False)
    sent, received = 0, bytearray()
    end = time.monotonic() + DEADLINE
    while len(received) < len(payload):
        if time.monotonic() > end:
            raise SystemExit(f"echo: {len(received)} of {len(payload)} bytes back in {DEADLINE} s")
        want_write = [s] if sent < len(payload) else []
        readable, writable, _ = select.select([s], want_write, [], 1)
        if writable:
            try:
                sent += s.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
        if readable:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("echo: end of file early")
            received += chunk
    if bytes(received) != payload:
        raise SystemExit("echo: the bytes differ")
    s.setblocking(True)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()


with tempfile.TemporaryDirectory(prefix="kiln-vsock-bench-") as folder:
    process, out = start(folder, f"vsock.listen=5000 vsock.accepts={1 + conns}")
    try:
        wait_for(out, "guest: vsock listening on port 5000", process)
        path = os.path.join(folder, "v.sock")
        payload = os.urandom(mib << 20)
        s = handshake(path, 5000)
        t = time.monotonic()
        echo(s, payload)
        echo_seconds = time.monotonic() - t
        t = time.monotonic()
        for _ in range(conns):
            one_byte_and_close(handshake(path, 5000))
        inbound_seconds = time.monotonic() - t
    finally:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()

with tempfile.TemporaryDirectory(prefix="kiln-vsock-bench-") as folder:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(folder, "v.sock_6000"))
    listener.listen(16)
    listener.settimeout(30)
    process, out = start(folder, f"vsock.connect=6000 vsock.connects={conns}")
    try:
        t = None
        for _ in range(conns):
            c, _ = listener.accept()
            c.settimeout(30)
            t = t or time.monotonic()
            one_byte_and_close(c)
        outbound_seconds = time.monotonic() - t
    finally:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()

load = open("/proc/loadavg").read().split()[:3]
print(f"vsock, lane 1 (kiln {kiln}, the test guest's echo; host load average {' '.join(load)}):")
print(f"  echo {mib} MiB each way (host -> guest -> host): {echo_seconds:.2f} s, {mib / echo_seconds:.2f} MiB/s")
print(f"  host -> guest connections (CONNECT, 1 byte echoed, close): {conns} in {inbound_seconds:.2f} s, "
      f"{conns / inbound_seconds:.1f} per second")
print(f"  guest -> host connections (<uds_path>_6000, 1 byte echoed, close): {conns} in {outbound_seconds:.2f} s, "
      f"{conns / outbound_seconds:.1f} per second")
