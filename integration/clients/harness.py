"""What every third-party client driver shares (integration/clients/README.md).

A driver runs one PyPI client's own VM lifecycle against kiln, installed as
`firecracker`, and the lane-1 test guest. This module gives it:
- `APIRecorder`: every byte the client sends on kiln's API socket and every
  byte kiln answers, captured in the client's own process (socket methods are
  wrapped, the client's code is not touched) and written as request/response
  pairs to `exchanges.json` and `transcript.txt`;
- `isolated_network()`: the driver re-runs itself in a fresh network namespace
  with an `uplink0` default route, so the TAPs, addresses and NAT rules a
  client makes never reach the host;
- the stand-ins for what is not the VMM: a guest disk image (instead of one
  built from a Docker image) and `kiln`/`kiln-jailer` linked as
  `firecracker`/`jailer`;
- `Lifecycle`: named steps with checks, a deadline on every wait, and on
  failure the tail of kiln's console and log.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# The guest keeps running (ticking, waiting for Ctrl+Alt+Del) when its drive
# starts with this mark (integration/guest/Virtio.swift, keepRunningMark).
GUEST_DISK_MARK = b"kiln-guest:ticks"
NETNS_MARK = "KILN_CLIENT_SUITE_NETNS"


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--kiln", required=True, help="the kiln binary, linked as firecracker")
    parser.add_argument("--jailer", help="the kiln-jailer binary, linked as jailer")
    parser.add_argument("--guest", required=True, help="the lane-1 test guest ELF (make guest)")
    parser.add_argument("--out", required=True, help="folder for the exchange log and the console")
    parser.add_argument("--scratch", help="the client's run folder (made here; default a fresh one under /tmp): "
                        "the test ends any process left running from it")
    parsed = parser.parse_args()
    for name in ("kiln", "jailer", "guest", "out", "scratch"):
        value = getattr(parsed, name)
        if value is not None:
            setattr(parsed, name, os.path.abspath(value))
    # A fresh log each run (the namespace re-run keeps what the first made).
    if os.environ.get(NETNS_MARK) != "1" and os.path.isdir(parsed.out):
        shutil.rmtree(parsed.out)
    os.makedirs(parsed.out, exist_ok=True)
    return parsed


def isolated_network() -> None:
    """Re-executes this driver under `unshare --net` (once), then gives the
    namespace a loopback and a TAP `uplink0` carrying the default route: the
    clients look for a default route's device to name their NAT rules."""
    if os.environ.get(NETNS_MARK) != "1":
        environment = dict(os.environ, **{NETNS_MARK: "1"})
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, *sys.argv], environment)
    for command in (["ip", "link", "set", "lo", "up"],
                    ["ip", "tuntap", "add", "dev", "uplink0", "mode", "tap"],
                    ["ip", "addr", "add", "10.77.0.2/24", "dev", "uplink0"],
                    ["ip", "link", "set", "uplink0", "up"],
                    ["ip", "route", "add", "default", "via", "10.77.0.1", "dev", "uplink0", "onlink"]):
        subprocess.run(command, check=True)


def scratch_folder(options: argparse.Namespace, prefix: str) -> Path:
    """The client's run folder: short, as Unix socket paths are limited to 108 bytes."""
    if options.scratch:
        os.makedirs(options.scratch, exist_ok=True)
        return Path(options.scratch)
    return Path(tempfile.mkdtemp(prefix=prefix))


def binaries(folder: Path, kiln: str, jailer: str | None) -> Path:
    """`firecracker` (and `jailer`) in `folder`, linked to kiln's binaries:
    the process the client starts is kiln, named as the client named it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in (("firecracker", kiln), ("jailer", jailer)):
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        if target:
            link.symlink_to(target)
    return folder


def guest_disk(path: Path, size: int = 1 << 20) -> Path:
    """The stand-in for a root file system the client would build from a
    Docker image: a 1 MiB image whose first sector keeps the test guest running."""
    with open(path, "wb") as disk:
        disk.write(GUEST_DISK_MARK)
        disk.truncate(size)
    return path


# The test guest listens on this vsock port when its command line says
# `vsock.listen=` (integration/guest/Vsock.swift) and echoes what it gets.
GUEST_VSOCK_PORT = 5000
GUEST_VSOCK_ARGS = f"vsock.listen={GUEST_VSOCK_PORT} vsock.seconds=240"


def vsock_echo(uds_path: str, size: int = 64 * 1024, seconds: float = 120.0) -> str:
    """A host-initiated vsock connection through the client's device, as
    Firecracker's docs/vsock.md has it: `CONNECT <port>` on `uds_path`, `OK
    <host port>` back, then `size` bytes to the guest and every one of them
    echoed; then a half-close and the guest's end of file."""
    payload = os.urandom(size)
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as peer:
        peer.settimeout(seconds)
        peer.connect(uds_path)
        peer.sendall(f"CONNECT {GUEST_VSOCK_PORT}\n".encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = peer.recv(1)
            if not chunk:
                raise AssertionError(f"{uds_path}: closed after {reply!r}, before an OK line")
            reply += chunk
        if not reply.startswith(b"OK "):
            raise AssertionError(f"{uds_path}: CONNECT {GUEST_VSOCK_PORT} answered {reply!r}")
        echoed = bytearray()
        sent = 0
        peer.setblocking(False)
        while len(echoed) < size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(echoed)} of {size} bytes echoed in {seconds:.0f} s")
            try:
                if sent < size:
                    sent += peer.send(payload[sent:sent + 16384])
            except BlockingIOError:
                pass
            try:
                chunk = peer.recv(65536)
                if not chunk:
                    raise AssertionError(f"the guest closed after echoing {len(echoed)} of {size} bytes")
                echoed += chunk
            except BlockingIOError:
                time.sleep(0.005)
        if bytes(echoed) != payload:
            raise AssertionError(f"{size} bytes echoed, not the ones sent")
        peer.setblocking(True)
        peer.shutdown(socket.SHUT_WR)
        if peer.recv(1) != b"":
            raise AssertionError("bytes after the echo, or no end of file after the half-close")
    return f"{size} bytes echoed through {reply.decode().strip()}"


def wait_for(what: str, condition, seconds: float = 90.0, interval: float = 0.05):
    """Polls `condition` until it returns a true value; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {seconds:.0f} s for {what}")
        time.sleep(interval)


def file_contains(path, text: str):
    def check():
        try:
            return text in Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return False
    return check


def process_gone(pid: int):
    def check():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie child of this process counts as gone once reaped by the client.
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().split(") ", 1)[1].startswith("Z")
        except (FileNotFoundError, IndexError):
            return True
    return check


class APIRecorder:
    """Captures the raw HTTP on the API socket from inside the client's process."""

    def __init__(self):
        self.watched: set[str] = set()
        self.streams: list[dict] = []  # {"path", "sent": bytearray, "received": bytearray}
        self._by_socket: dict[int, dict] = {}

    def watch(self, path: str) -> None:
        self.watched.add(os.path.abspath(path))

    def install(self) -> None:
        recorder = self
        original = {name: getattr(socket.socket, name) for name in ("connect", "sendall", "send", "recv", "recv_into", "close")}

        def connect(sock, address):
            result = original["connect"](sock, address)
            if sock.family == socket.AF_UNIX and isinstance(address, (str, bytes)):
                path = os.path.abspath(os.fsdecode(address))
                if path in recorder.watched:
                    stream = {"path": path, "sent": bytearray(), "received": bytearray()}
                    recorder.streams.append(stream)
                    recorder._by_socket[id(sock)] = stream
            return result

        def sendall(sock, data, *rest):
            stream = recorder._by_socket.get(id(sock))
            if stream is not None:
                stream["sent"] += bytes(data)
            return original["sendall"](sock, data, *rest)

        def send(sock, data, *rest):
            count = original["send"](sock, data, *rest)
            stream = recorder._by_socket.get(id(sock))
            if stream is not None:
                stream["sent"] += bytes(data)[:count]
            return count

        def recv(sock, size, *rest):
            data = original["recv"](sock, size, *rest)
            stream = recorder._by_socket.get(id(sock))
            if stream is not None:
                stream["received"] += data
            return data

        def recv_into(sock, buffer, *rest):
            count = original["recv_into"](sock, buffer, *rest)
            stream = recorder._by_socket.get(id(sock))
            if stream is not None:
                stream["received"] += bytes(memoryview(buffer)[:count])
            return count

        def close(sock):
            recorder._by_socket.pop(id(sock), None)
            return original["close"](sock)

        for name, wrapper in (("connect", connect), ("sendall", sendall), ("send", send),
                              ("recv", recv), ("recv_into", recv_into), ("close", close)):
            setattr(socket.socket, name, wrapper)

    @staticmethod
    def _messages(data: bytes) -> list[tuple[str, bytes]]:
        """Splits an HTTP/1.1 byte stream into (start line, body) by Content-Length."""
        messages = []
        while data:
            head, separator, rest = data.partition(b"\r\n\r\n")
            if not separator:
                messages.append((head.decode(errors="replace").split("\r\n")[0] + " (incomplete)", b""))
                break
            lines = head.decode(errors="replace").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            messages.append((lines[0], rest[:length]))
            data = rest[length:]
        return messages

    def exchanges(self) -> list[dict]:
        pairs = []
        for stream in self.streams:
            requests = self._messages(bytes(stream["sent"]))
            responses = self._messages(bytes(stream["received"]))
            for index, (request_line, request_body) in enumerate(requests):
                method, _, rest = request_line.partition(" ")
                target = rest.rsplit(" ", 1)[0]
                status, response_body = None, ""
                if index < len(responses):
                    fields = responses[index][0].split(" ", 2)
                    status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None
                    response_body = responses[index][1].decode(errors="replace")
                pairs.append({"method": method, "path": target,
                              "body": request_body.decode(errors="replace"),
                              "status": status, "answer": response_body})
        return pairs

    def write(self, folder: Path) -> list[dict]:
        pairs = self.exchanges()
        (folder / "exchanges.json").write_text(json.dumps(pairs, indent=2) + "\n")
        with open(folder / "transcript.txt", "w") as transcript:
            for pair in pairs:
                transcript.write(f"{pair['method']} {pair['path']} {pair['body']}\n")
                transcript.write(f"  -> {pair['status']} {pair['answer']}\n")
        return pairs


class Lifecycle:
    """Named steps; the first failure ends the run with what kiln showed."""

    def __init__(self, client: str, out: Path, recorder: APIRecorder):
        self.client, self.out, self.recorder = client, out, recorder
        self.steps: list[tuple[str, str]] = []
        self.evidence: list[Path] = []

    def step(self, name: str, action):
        try:
            result = action()
        except BaseException as error:
            self.steps.append((name, f"FAILED: {error}"))
            raise StepFailed(name, error) from error
        self.steps.append((name, "ok" if result is None else f"ok: {result}"))
        print(f"{self.client}: {name}: {self.steps[-1][1]}", flush=True)
        return result

    def finish(self, run) -> int:
        """Runs `run(self)`, writes the exchange log either way, ends any VMM
        the client left running, and returns the exit code."""
        status = 0
        try:
            run(self)
        except StepFailed as failure:
            print(f"{self.client}: step '{failure.step}' failed: {failure.error}", file=sys.stderr)
            traceback.print_exception(failure.error, file=sys.stderr)
            for path in self.evidence:
                try:
                    tail = Path(path).read_text(errors="replace").splitlines()[-25:]
                    print(f"--- {path} (tail)\n" + "\n".join(tail), file=sys.stderr)
                except OSError:
                    pass
            status = 1
        finally:
            end_children()
        pairs = self.recorder.write(self.out)
        with open(self.out / "steps.txt", "w") as steps:
            for name, outcome in self.steps:
                steps.write(f"{name}: {outcome}\n")
        print(f"{self.client}: {len(pairs)} API exchanges logged in {self.out / 'transcript.txt'}")
        return status

    def expect_answers(self, wanted: list[tuple[str, str, int]]):
        """Checks that each (method, path, status) was sent and answered so, in order."""
        pairs = self.recorder.exchanges()
        position = 0
        for method, path, status in wanted:
            while position < len(pairs) and not (pairs[position]["method"] == method and pairs[position]["path"] == path):
                position += 1
            if position == len(pairs):
                raise AssertionError(f"{method} {path} was never sent (after the earlier steps)")
            answered = pairs[position]["status"]
            if answered != status:
                raise AssertionError(f"{method} {path}: kiln answered {answered}, wanted {status}: {pairs[position]['answer']}")
            position += 1
        return f"{len(wanted)} exchanges as wanted"


class StepFailed(Exception):
    def __init__(self, step: str, error: BaseException):
        super().__init__(f"{step}: {error}")
        self.step, self.error = step, error


def end_children() -> None:
    """Ends what the client started and left running (a VMM whose client
    failed keeps its guest ticking): this process's own children only."""
    children = set()
    for task in os.listdir("/proc/self/task"):
        try:
            children.update(int(pid) for pid in Path(f"/proc/self/task/{task}/children").read_text().split())
        except OSError:
            pass
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
