"""Checks of the density benchmark's Linux mode that need no KVM: the guest's
command line and the init that reads it, the initramfs make nested-assets
builds, the containers' page, and the HTTP readiness check against a local
server. Run by make test:

    python3 -m unittest discover -s integration/bench/density -p 'test_*.py'
"""
import argparse
import os
import re
import socket
import stat
import sys
import tempfile
import threading
import unittest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

import linuxguest  # noqa: E402

INITRD = os.path.join(ROOT, "integration", "out", "nested", "density-initrd.cpio")
MODULES = ("virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover", "virtio_net")


def newc_entries(data):
    """{name: (mode, bytes)} of a newc cpio archive (cpio -H newc)."""
    entries, offset = {}, 0
    while True:
        header = data[offset:offset + 110]
        if len(header) < 110 or header[:6] != b"070701":
            raise ValueError(f"no newc header at byte {offset}")
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_start = offset + 110
        name = data[name_start:name_start + name_size - 1].decode()
        body_start = (name_start + name_size + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[body_start:body_start + size])
        offset = (body_start + size + 3) & ~3


class CommandLineTests(unittest.TestCase):
    def test_the_address_is_on_the_command_line_the_init_reads(self):
        line = linuxguest.kernel_cmdline("10.201.0.6")
        parameters = dict(word.split("=", 1) for word in line.split() if "=" in word)
        self.assertEqual(parameters.get("kiln.ip"), "10.201.0.6/30")
        self.assertIn("quiet", line.split())
        with open(os.path.join(HERE, "linux-init")) as handle:
            init = handle.read()
        # The init's sed takes the value of the parameter the harness writes.
        pattern = re.search(r"sed -n 's/\^([^=]+)=//p'", init)
        self.assertIsNotNone(pattern, "linux-init reads no NAME= parameter with sed")
        self.assertEqual(pattern.group(1).replace("\\", ""), "kiln.ip")


class InitramfsTests(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(INITRD):
            self.skipTest(f"{INITRD} is missing (make nested-assets builds it)")
        with open(INITRD, "rb") as handle:
            self.entries = newc_entries(handle.read())

    def test_it_holds_the_init_httpd_and_the_virtio_net_modules(self):
        mode, body = self.entries["init"]
        self.assertTrue(stat.S_ISREG(mode) and mode & 0o111, "init is not an executable file")
        with open(os.path.join(HERE, "linux-init"), "rb") as handle:
            self.assertEqual(body, handle.read(), "the initramfs holds a stale linux-init")
        mode, target = self.entries["bin/httpd"]
        self.assertTrue(stat.S_ISLNK(mode))
        self.assertEqual(target, b"busybox")
        self.assertTrue(stat.S_ISREG(self.entries["bin/busybox"][0]))
        for module in MODULES:
            mode, body = self.entries.get(f"modules/{module}.ko", (0, b""))
            self.assertTrue(body.startswith(b"\x7fELF"), f"modules/{module}.ko is missing or not ELF")


class ReadinessTests(unittest.TestCase):
    def serve(self, reply):
        """A one-connection-at-a-time server answering every request with `reply`."""
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        self.addCleanup(server.close)

        def loop():
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                with client:
                    client.recv(4096)
                    client.sendall(reply)
        threading.Thread(target=loop, daemon=True).start()
        return server.getsockname()[1]

    def fetch(self, reply):
        return linuxguest.http_get("127.0.0.1", 5, port=self.serve(reply))

    def test_the_page_counts(self):
        status, body = self.fetch(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
                                  + linuxguest.PAGE_FIRST_LINE + b"\nLinux 6.1 at 10.201.0.2/30\n")
        self.assertTrue(linuxguest.is_the_page(status, body))

    def test_another_status_or_page_does_not(self):
        self.assertFalse(linuxguest.is_the_page(*self.fetch(b"HTTP/1.1 404 Not Found\r\n\r\n"
                                                            + linuxguest.PAGE_FIRST_LINE)))
        self.assertFalse(linuxguest.is_the_page(*self.fetch(b"HTTP/1.1 200 OK\r\n\r\nsomebody else's page")))

    def test_a_reply_that_is_not_http_is_an_error(self):
        with self.assertRaises(ValueError):
            self.fetch(b"SSH-2.0-OpenSSH\r\n")

    def test_a_closed_port_is_an_error(self):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        server.close()
        with self.assertRaises(OSError):
            linuxguest.http_get("127.0.0.1", 1, port=port)


class BootProbeTests(unittest.TestCase):
    """The probe's verdict from a run of one instance (no KVM here: the run is
    a stand-in that returns what run.run_once would)."""

    class System:
        name = "kiln"

        def boot_evidence(self, index):
            return [f"console of instance {index}: stuck"]

    def probe(self, result):
        options = argparse.Namespace(probe_seconds=7, timeout=120)
        seen = {}

        def run_once(system, n, probe_options, checks):
            seen.update(n=n, timeout=probe_options.timeout, checks=checks)
            return result
        return linuxguest.boot_probe(self.System(), options, run_once), seen, options

    def test_a_boot_that_served_its_page_is_runnable(self):
        (booted, seconds), seen, options = self.probe({"failures": 0, "failure_reasons": [], "ready_seconds": 1.5})
        self.assertEqual((booted, seconds), (True, 1.5))
        self.assertEqual(seen, {"n": 1, "timeout": 7, "checks": False})
        self.assertEqual(options.timeout, 120, "the probe changed the measured runs' timeout")

    def test_a_failed_boot_is_not_runnable_and_the_note_says_why(self):
        (booted, note), _, _ = self.probe({"failures": 1, "failure_reasons": ["0: no page within 7 s"]})
        self.assertFalse(booted)
        self.assertIn("0: no page within 7 s", note)
        self.assertIn("console of instance 0: stuck", note)
        self.assertIn(linuxguest.kvm_module(), note)


class ContainerPageTests(unittest.TestCase):
    def test_the_image_serves_the_page_with_busybox_httpd(self):
        if not os.access("/bin/busybox", os.X_OK):
            self.skipTest("/bin/busybox is missing (Debian: busybox-static)")
        with tempfile.TemporaryDirectory() as scratch:
            image = linuxguest.RuncHttpd(ROOT, scratch, None)
            image.build_rootfs(None)
            self.assertEqual(image.service_args[0], "/bin/httpd")
            self.assertEqual(os.readlink(os.path.join(image.rootfs, "bin", "httpd")), "busybox")
            with open(os.path.join(image.rootfs, "www", "index.html"), "rb") as handle:
                page = handle.read()
            self.assertTrue(linuxguest.is_the_page(b"HTTP/1.0 200 OK", page))


if __name__ == "__main__":
    unittest.main()
