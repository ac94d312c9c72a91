"""The density benchmark's Linux mode (`run.py --guest linux`): every instance
is busybox `httpd` serving one page on port 80, counted ready when the host
gets that page over HTTP (a GET on a fresh TCP connection, with a deadline).

- kiln and qemu-microvm boot Debian's cloud kernel (the nested lane's
  `l2-bzImage`) with a busybox initramfs (`density-initrd.cpio`, built by
  `integration/nested/assets.sh` around `linux-init` beside this file): its
  init loads Debian's virtio modules, gives eth0 the address named by
  `kiln.ip=ADDR/30` on the kernel command line, and runs httpd.
- runc and runsc run busybox httpd as the container's process, serving the
  same page's first line, in the namespace hostnet prepares.

Whether this host's KVM boots stock Linux is probed, never assumed: run.py
boots one instance of each VM system first (`boot_probe`), and a system whose
probe fails is reported `runnable: false` with what its log, its console and
the kernel's log showed.
"""
import argparse
import errno
import json
import os
import shutil
import socket
import time

import systems

HTTP_PORT = 80
PAGE_FIRST_LINE = b"kiln-density busybox httpd"
REPLY_LIMIT = 64 << 10


def kernel_cmdline(service_ip):
    """The guest kernel's command line: quiet (each console byte is an exit),
    no CMOS probe (kiln has no RTC; QEMU's is turned off to match), and the
    instance's address on its /30 for the init."""
    return f"console=ttyS0 quiet panic=-1 reboot=k initcall_blacklist=cmos_init kiln.ip={service_ip}/30"


def http_get(address, seconds, port=HTTP_PORT):
    """One `GET /` on a fresh connection to ADDRESS:PORT, all within `seconds`:
    (status line, body). Raises OSError (refused, unreachable, timed out) or
    ValueError (a reply that is not HTTP, or larger than 64 KiB)."""
    deadline = time.monotonic() + seconds
    with socket.create_connection((address, port), timeout=seconds) as client:
        client.sendall(f"GET / HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        reply = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"reply unfinished after {seconds:g} s")
            client.settimeout(remaining)
            chunk = client.recv(4096)
            if not chunk:
                break
            reply += chunk
            if len(reply) > REPLY_LIMIT:
                raise ValueError("reply larger than 64 KiB")
    head, separator, body = reply.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError(f"no end of headers in {len(reply)} bytes")
    return head.split(b"\r\n", 1)[0], body


def is_the_page(status, body):
    """HTTP/1.x 200 with the service's page."""
    parts = status.split()
    return (len(parts) >= 2 and parts[0].startswith(b"HTTP/1.") and parts[1] == b"200"
            and body.startswith(PAGE_FIRST_LINE))


def probe_until_page(instance, system, seconds, stopping):
    """GETs the page until it comes, the instance exits, or `seconds` pass.
    A refused or unreachable address answers at once, so attempts are at
    least 50 ms apart; each one's own deadline is at most 1 s."""
    deadline = time.monotonic() + seconds
    last = "nothing tried"
    while not stopping.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            instance.failure = f"no page within {seconds:g} s (last attempt: {last})"
            return
        instance.failure = systems.exit_note(system, instance)
        if instance.failure:
            return
        started = time.monotonic()
        try:
            status, body = http_get(instance.service_ip, min(1.0, remaining))
            if is_the_page(status, body):
                instance.ready_ns = time.monotonic_ns()
                return
            last = f"unexpected reply {status[:80]!r}"
        except (OSError, ValueError) as error:
            last = str(error) or type(error).__name__
        time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))


def page_ms(instance, seconds=2.0):
    """One page fetched again, in ms (retrying within `seconds`), or None."""
    start = time.monotonic()
    while (left := seconds - (time.monotonic() - start)) > 0:
        try:
            if is_the_page(*http_get(instance.service_ip, left)):
                return (time.monotonic() - start) * 1000
        except (OSError, ValueError):
            time.sleep(0.05)
    return None


class KernelLog:
    """The host kernel's log lines written after this was made (/dev/kmsg),
    e.g. what KVM said about a guest it could not run."""

    def __init__(self):
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = None

    def new_lines(self):
        lines = []
        while self.fd is not None:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EPIPE:  # records overwritten: read on
                    continue
                break
            if not record:
                break
            lines.append(record.decode(errors="replace").split(";", 1)[-1].split("\n", 1)[0])
        return lines

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def kvm_module():
    """Which KVM this host runs, from /sys/module (a fact for the note)."""
    for name in ("kvm_pvm", "kvm_intel", "kvm_amd"):
        if os.path.isdir(f"/sys/module/{name}"):
            return name.replace("_", "-")
    return "no KVM module"


def last_lines(path, count):
    try:
        with open(path, errors="replace") as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError:
        return []
    return lines[-count:]


def boot_probe(system, options, run_once):
    """Boots one instance of a VM system with a short deadline
    (`--probe-seconds`), before any measured run: (True, seconds to its
    page) when it served it, else (False, the note that says why not: the
    probe's failure, the VMM's last log lines, the guest's console, and what
    the host kernel logged about KVM meanwhile)."""
    kernel_log = KernelLog()
    probe_options = argparse.Namespace(**{**vars(options), "timeout": options.probe_seconds})
    try:
        result = run_once(system, 1, probe_options, checks=False)
    finally:
        kvm_lines = [line for line in kernel_log.new_lines() if "kvm" in line.lower()]
        kernel_log.close()
    if not result["failures"]:
        return True, result["ready_seconds"]
    parts = [f"Debian's kernel did not serve its page on this host's KVM ({kvm_module()}) "
             f"in the {options.probe_seconds:g} s probe: " + "; ".join(result["failure_reasons"])]
    parts += system.boot_evidence(0)
    if kvm_lines:
        parts.append("host kernel: " + " | ".join(kvm_lines[-3:]))
    return False, "; ".join(parts)[:700]


class LinuxBoot:
    """What a VM instance boots: Debian's kernel and the httpd initramfs."""

    def __init__(self, kernel, initrd):
        self.kernel, self.initrd = kernel, initrd

    def missing(self):
        for path in (self.kernel, self.initrd):
            if not os.access(path, os.R_OK):
                return f"{path} is missing (make nested-assets builds it)"
        return ""


class LinuxBootedVM:
    """What kiln's and QEMU's Linux modes share: the boot files, checked
    before the VMM's own needs, and a console file per instance."""
    boots_linux = True

    def __init__(self, root, scratch, boot):
        super().__init__(root, scratch, boot.kernel)
        self.boot = boot

    def available(self):
        missing = self.boot.missing()
        return (False, missing) if missing else super().available()

    def console_path(self, index):
        return os.path.join(self.scratch, f"console-{index}.txt")


class KilnLinux(LinuxBootedVM, systems.Kiln):
    """kiln jailed exactly as in the UDP echo runs, booting Debian's kernel:
    both files reach the jail through --jail-file; the console goes to a file."""

    def boot_source(self, service_ip):
        return {"kernel_image_path": "/vmlinuz", "initrd_path": "/initrd.cpio",
                "boot_args": kernel_cmdline(service_ip)}

    def jail_files(self):
        return ["--jail-file", f"{self.boot.kernel}:vmlinuz", "--jail-file", f"{self.boot.initrd}:initrd.cpio"]

    def boot_evidence(self, index):
        """kiln's last warnings and errors, and the console's last lines."""
        said = []
        for line in last_lines(os.path.join(self.scratch, f"kiln-{index}.log"), 50):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("level") in ("error", "warning") and "--no-seccomp" not in record.get("msg", ""):
                said.append(record.get("msg", ""))
        console = last_lines(self.console_path(index), 2)
        return ([f"kiln: {' | '.join(said[-2:])}"] if said else ["kiln logged no error"]) + \
            [f"console: {' | '.join(console)}" if console else "the guest's console stayed empty"]


class QemuMicrovmLinux(LinuxBootedVM, systems.QemuMicrovm):
    """QEMU microvm booting the same kernel and initramfs. ACPI stays on:
    Debian's kernel finds virtio-mmio devices only in the DSDT."""

    def machine_and_boot(self, instance):
        return ["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off",
                "-serial", f"file:{self.console_path(instance.index)}",
                "-kernel", self.boot.kernel, "-initrd", self.boot.initrd,
                "-append", kernel_cmdline(instance.service_ip)]

    def boot_evidence(self, index):
        said = [line for line in last_lines(os.path.join(self.scratch, f"qemu-{index}.log"), 3)
                if "terminating on signal" not in line][-2:]  # not the probe's own SIGTERM
        console = last_lines(self.console_path(index), 2)
        return ([f"QEMU: {' | '.join(said)}"] if said else ["QEMU printed nothing"]) + \
            [f"console: {' | '.join(console)}" if console else "the guest's console stayed empty"]


class HttpdImage:
    """A container image of busybox-static whose process is busybox httpd
    (foreground) serving the page from the read-only image."""
    service_args = ("/bin/httpd", "-f", "-p", str(HTTP_PORT), "-h", "/www")

    def build_rootfs(self, clang):
        for folder in ("bin", "proc", "dev", "sys", "tmp", "etc", "www"):
            os.makedirs(os.path.join(self.rootfs, folder), exist_ok=True)
        shutil.copy2("/bin/busybox", os.path.join(self.rootfs, "bin", "busybox"))
        for applet in ("sh", "httpd"):
            link = os.path.join(self.rootfs, "bin", applet)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
        with open(os.path.join(self.rootfs, "www", "index.html"), "wb") as handle:
            handle.write(PAGE_FIRST_LINE + f"\n{self.name} container\n".encode())


class RuncHttpd(HttpdImage, systems.Runc):
    pass


class RunscHttpd(HttpdImage, systems.Runsc):
    pass


SYSTEMS = {"kiln": KilnLinux, "qemu-microvm": QemuMicrovmLinux, "runc": RuncHttpd, "runsc": RunscHttpd}
