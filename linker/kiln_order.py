#!/usr/bin/env python3
"""Writes linker/kiln.order: the functions a kiln launch runs, one symbol a
line, for lld's --symbol-ordering-file (Package.swift, the `kiln` target).

Why: kiln is a static binary whose 5.4 MB of code is mostly the Swift
runtime and libc; a launch runs about 1.7 MB of it, scattered over the whole
text, and the kernel maps up to 16 page-cache pages around each fault
(fault-around), so the start-up path spread thin made kiln's RSS nearly the
whole text. With these functions placed first, their pages sit together.

Measured, not guessed: `valgrind --tool=callgrind` (symbol names kept
mangled) of a copy without debug sections (valgrind 3.19 cannot read the
toolchain's DWARF), over two launches of the lane-1 test guest: one plain
(`--no-api`), one configured through a config file with the API socket,
an entropy device and a drive, its API asked once. Needs /dev/kvm,
valgrind, `make release` and `make guest`.

A stale list is harmless: names the link no longer has are skipped (lld
stays quiet with --no-warn-symbol-ordering) and their code goes where it
would have gone anyway. Regenerate after large changes to the start-up path:
    linker/kiln_order.py [--kiln PATH] [--guest PATH]
SwiftPM does not track this file as an input of the link: remove the kiln
binary afterwards so that the next build links it again.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKET_DEADLINE_SECONDS = 60
RUN_DEADLINE_SECONDS = 300


def executed_functions(profile, binary):
    """Names of the functions of `binary` that have a cost in a callgrind
    profile (each executed function has an `fn=` block of its own)."""
    names, objects, functions = set(), {}, {}
    current_object = None
    with open(profile) as handle:
        for line in handle:
            # An id may be defined first where a call names it (cob=, cfn=).
            if line.startswith("ob="):
                current_object = compressed(line[3:], objects)
            elif line.startswith("cob="):
                compressed(line[4:], objects)
            elif line.startswith("cfn="):
                compressed(line[4:], functions)
            elif line.startswith("fn="):
                name = compressed(line[3:], functions)
                if current_object == binary:
                    names.add(name)
    # Recursion levels ('2) and placeholders are not symbols.
    names = {re.sub(r"'\d+$", "", name) for name in names}
    return sorted(name for name in names if name and not name.startswith(("(", "0x")))


def compressed(text, table):
    """callgrind's name compression: `(id) name` defines, `(id)` refers."""
    match = re.match(r"\((\d+)\)(?: (.*))?$", text.strip())
    if not match:
        return text.strip()
    if match.group(2) is not None:
        table[match.group(1)] = match.group(2)
    return table.get(match.group(1), "")


def callgrind(binary, arguments, profile, during=None):
    command = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={profile}", binary]
    process = subprocess.Popen(command + arguments, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        if during:
            during()
        out, err = process.communicate(timeout=RUN_DEADLINE_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    if b"guest: ready" not in out:
        sys.exit(f"kiln under callgrind did not boot the guest (exit {process.returncode}):\n{err.decode()[-2000:]}")


def ask_api(path):
    """Waits for kiln's API socket, then sends one GET /machine-config."""
    deadline = time.monotonic() + SOCKET_DEADLINE_SECONDS
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(SOCKET_DEADLINE_SECONDS)
                client.connect(path)
                client.sendall(b"GET /machine-config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                while client.recv(4096):
                    pass
            return
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                sys.exit(f"kiln's API socket {path} did not answer within {SOCKET_DEADLINE_SECONDS} s")
            time.sleep(0.2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kiln", default=os.path.join(ROOT, ".build-release/release/kiln"))
    parser.add_argument("--guest", default=os.path.join(ROOT, "integration/out/kiln-test-guest.elf"))
    parser.add_argument("--output", default=os.path.join(ROOT, "linker/kiln.order"))
    options = parser.parse_args()
    for path in (options.kiln, options.guest):
        if not os.path.isfile(path):
            sys.exit(f"{path} is missing (make release, make guest)")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is missing (apt-get install valgrind)")

    with tempfile.TemporaryDirectory(prefix="kiln-order-") as scratch:
        binary = os.path.join(scratch, "kiln")
        subprocess.run(["objcopy", "--strip-debug", options.kiln, binary], check=True)
        names = set()

        plain = os.path.join(scratch, "plain.callgrind")
        callgrind(binary, ["--no-api", "--no-seccomp", "--kernel", options.guest, "--mem", "128", "--boot-timer",
                           "--level", "info"], plain)
        names.update(executed_functions(plain, binary))

        drive = os.path.join(scratch, "drive.img")
        with open(drive, "wb") as handle:
            handle.truncate(1 << 20)
        config = os.path.join(scratch, "vm.json")
        with open(config, "w") as handle:
            json.dump({"boot-source": {"kernel_image_path": options.guest, "boot_args": "console=ttyS0"},
                       "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
                       "drives": [{"drive_id": "rootfs", "path_on_host": drive, "is_root_device": True,
                                   "is_read_only": False}],
                       "entropy": {}}, handle)
        api = os.path.join(scratch, "api.sock")
        configured = os.path.join(scratch, "configured.callgrind")
        callgrind(binary, ["--no-seccomp", "--api-sock", api, "--config-file", config, "--level", "info"],
                  configured, during=lambda: ask_api(api))
        names.update(executed_functions(configured, binary))

    with open(options.output, "w") as handle:
        handle.write("\n".join(sorted(names)) + "\n")
    print(f"{options.output}: {len(names)} functions")


if __name__ == "__main__":
    main()
