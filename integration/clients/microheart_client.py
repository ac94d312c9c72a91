"""microheart (PyPI, pinned in requirements/microheart.txt) driving kiln
through its own MicroVM lifecycle.

It finds `firecracker` and a `vmlinux-*` kernel in its home folder
($MICROHEART_HOME), makes a TAP with ip(8) and a NAT rule with iptables,
writes a Firecracker config file (boot source, root drive, interface,
machine config) and launches `firecracker --api-sock S --config-file C
--enable-pci`, which boots at once; it reads GET /machine-config, and stops
the VM by rebooting the guest (Firecracker exits when its guest resets), then
SIGTERM, then removes its TAP, disk copy and record. microheart has no pause
or resume: the driver sends PATCH /vm and GET / through microheart's own API
module (`microheart.api.request`).

Replaced, as they are not the VMM: the root file system it would build with
Docker (build-rootfs; the test guest's disk stands in, with a key file that is
never used), its downloads of Firecracker and a kernel (kiln and the test
guest are linked into its home instead), and SSH into the guest (the test
guest has no SSH server): `MicroVM.ssh` answers "true" once the guest's
console shows it running, and "reboot" by sending Ctrl+Alt+Del through
microheart's API module, on which the test guest resets as a Linux guest's
`reboot` would.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import harness

options = harness.arguments(__doc__.splitlines()[0])
harness.isolated_network()
out = Path(options.out)
scratch = harness.scratch_folder(options, "kcl-mh-")
home = scratch / "home"
home.mkdir()
os.environ["MICROHEART_HOME"] = str(home)
harness.binaries(home, options.kiln, options.jailer)
(home / "vmlinux-kiln-test-guest").symlink_to(options.guest)
recorder = harness.APIRecorder()
recorder.install()

from microheart import api  # noqa: E402
from microheart.vm import MicroVM  # noqa: E402


def guest_ssh(vm: MicroVM):
    """The stand-in for `ssh root@guest COMMAND` (see the module's note)."""
    def ssh(command: str, check=True, timeout=30):
        if command == "true":
            running = harness.file_contains(vm.console, "guest: waiting for ctrl-alt-del")()
            return subprocess.CompletedProcess(["ssh", command], 0 if running else 255, "", "")
        if command == "reboot":
            api.request(vm.sock, "PUT", "/actions", {"action_type": "SendCtrlAltDel"})
            return subprocess.CompletedProcess(["ssh", command], 0, "", "")
        raise AssertionError(f"the test guest has no shell for {command!r}")
    return ssh


def lifecycle(run: harness.Lifecycle):
    disk = harness.guest_disk(scratch / "rootfs.ext4")
    key = scratch / "vm_key"
    key.write_text("unused: the test guest has no SSH server\n")
    vm = run.step("construct MicroVM", lambda: MicroVM("kiln-suite", rootfs=str(disk), key=str(key), vcpu=1, mem_mib=128))
    vm.ssh = guest_ssh(vm)
    recorder.watch(vm.sock)
    run.evidence.append(vm.console)

    def start():
        seconds = vm.start(wait=90)
        if seconds is None:
            raise AssertionError("start() found the VM already running")
        return f"guest up in {seconds:.1f} s"
    run.step("create, configure and start (--config-file, --enable-pci)", start)
    pid = vm.pid()

    def machine_config():
        shown = vm.machine_config()
        if shown.get("vcpu_count") != 1 or shown.get("mem_size_mib") != 128:
            raise AssertionError(f"GET /machine-config: {shown}")
        return shown
    run.step("describe (GET /machine-config)", machine_config)

    def state(wanted):
        def check():
            shown = api.request(vm.sock, "GET", "/")
            if shown.get("state") != wanted:
                raise AssertionError(f"GET /: {shown}, wanted state {wanted}")
            return shown["state"]
        return check
    run.step("describe (GET /)", state("Running"))
    run.step("pause", lambda: api.request(vm.sock, "PATCH", "/vm", {"state": "Paused"}))
    run.step("paused (GET /)", state("Paused"))
    run.step("resume", lambda: api.request(vm.sock, "PATCH", "/vm", {"state": "Resumed"}))
    run.step("resumed (GET /)", state("Running"))

    def kept_console():
        # What it sent without the API: the config file it wrote for --config-file.
        shutil.copy(vm.dir / "vm_config.json", out / "vm_config.json")
        shutil.copy(vm.console, out / "console.log")
    run.step("keep the config file and the console", kept_console)

    def stop():
        vm.stop()
        if vm.running():
            raise AssertionError("the VM still runs after stop()")
    run.step("stop (guest reboot, then SIGTERM)", stop)
    run.step("kiln exited", lambda: harness.wait_for("kiln to exit", harness.process_gone(pid), seconds=10))

    def console_shows_reset():
        shutil.copy(vm.console, out / "console.log")
        text = Path(out / "console.log").read_text(errors="replace")
        for wanted in ("guest: ctrl-alt-del received", "--enable-pci: Kiln has no PCI transport"):
            if wanted not in text:
                raise AssertionError(f"the console and log lack {wanted!r}")
        return "the guest reset on Ctrl+Alt+Del; kiln logged what --enable-pci gives"
    run.step("console", console_shows_reset)
    run.step("clean (TAP, disk copy, record)", vm.clean)
    run.step("API exchanges", lambda: run.expect_answers([
        ("GET", "/machine-config", 200), ("GET", "/", 200), ("PATCH", "/vm", 204), ("GET", "/", 200),
        ("PATCH", "/vm", 204), ("GET", "/", 200), ("PUT", "/actions", 204)]))


status = harness.Lifecycle("microheart", out, recorder).finish(lifecycle)
shutil.rmtree(scratch, ignore_errors=True)
sys.exit(status)
