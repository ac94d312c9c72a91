"""bandsox (PyPI, pinned in requirements/bandsox.txt) driving kiln through
its MicroVM class's lifecycle.

It launches `firecracker --api-sock S` with the console on pipes (its
ConsoleMultiplexer serves them on a Unix socket), waits for the API socket,
configures the root drive (io_engine Async, as it always asks), the machine,
the entropy device, a TAP it makes with sudo ip(8) and iptables, and the boot
source; starts the instance, pauses and resumes it with PATCH /vm, and stops
it by ending the process tree (SIGTERM) and removing its TAP.

Replaced, as they are not the VMM: the root file system BandSox builds from a
Docker image (BandSox.create_vm; the test guest's disk stands in, so the
driver uses the MicroVM class that create_vm drives), and its guest agent
(the test guest has none, so the agent-based exec and file calls are not
exercised). Its vsock bridge is off (enable_vsock=False): bandsox's
`_setup_vsock_bridge` waits at most 5 s after PUT /vsock for `uds_path` to
exist and fails the configuration otherwise. Firecracker binds it on that
request (src/vmm/src/vmm_config/vsock.rs, VsockBuilder::insert builds the
Unix backend, which binds); kiln binds it at InstanceStart, when it builds
the device (as Firecracker's docs/vsock.md words it). bandsox's client has no GET call; the driver describes the VM
with the client's own request method.
"""
from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path

import harness

options = harness.arguments(__doc__.splitlines()[0])
harness.isolated_network()
out = Path(options.out)
scratch = harness.scratch_folder(options, "kcl-bx-")
bin_dir = harness.binaries(scratch / "bin", options.kiln, options.jailer)
# A login shell's USER: bandsox makes its TAP for that user (its fallback is a user "rc").
os.environ.setdefault("USER", pwd.getpwuid(os.getuid()).pw_name)
recorder = harness.APIRecorder()
recorder.install()

from bandsox.vm import MicroVM  # noqa: E402

console_lines: list[str] = []  # the guest's serial lines, as bandsox's multiplexer reads them


def lifecycle(run: harness.Lifecycle):
    disk = harness.guest_disk(scratch / "rootfs.ext4")
    socket_path = str(scratch / "api.sock")
    recorder.watch(socket_path)
    vm = run.step("construct MicroVM", lambda: MicroVM("kilnsuite0a", socket_path, firecracker_bin=str(bin_dir / "firecracker")))
    console = out / "console.log"
    lines = console_lines
    run.evidence.append(console)

    def start_process():
        vm.start_process()
        vm.multiplexer.add_callback(lines.append)
        return f"pid {vm.process.pid}"
    run.step("create (start_process: firecracker --api-sock)", start_process)
    run.step("configure (drive, machine, entropy, TAP, boot source)", lambda: vm.configure(
        options.guest, str(disk), vcpu=1, mem_mib=128, enable_networking=True, enable_vsock=False))
    run.step("start (InstanceStart)", vm.start)
    run.step("guest runs", lambda: harness.wait_for(
        "the guest's ready line", lambda: any("guest: waiting for ctrl-alt-del" in line for line in list(lines))))

    def state(wanted):
        def check():
            shown = vm.client._request("GET", "/").json()
            if shown.get("state") != wanted:
                raise AssertionError(f"GET /: {shown}, wanted state {wanted}")
            return shown["state"]
        return check
    run.step("describe (GET /)", state("Running"))
    run.step("pause", vm.pause)
    run.step("paused (GET /)", state("Paused"))
    run.step("resume", vm.resume)
    run.step("resumed (GET /)", state("Running"))
    pid = vm.process.pid

    def stop():
        vm.stop()
        console.write_text("".join(lines))  # what the guest printed, for the check below
    run.step("stop (SIGTERM to the process tree, TAP removed)", stop)
    run.step("kiln exited", lambda: harness.wait_for("kiln to exit", harness.process_gone(pid), seconds=10))

    def console_shows_devices():
        text = console.read_text(errors="replace")
        for wanted in ("guest: virtio-blk@", "guest: virtio-rng@", "guest: virtio-net@"):
            if wanted not in text:
                raise AssertionError(f"the console lacks {wanted!r}")
        return "the guest drove the drive, the entropy device and the interface"
    run.step("console", console_shows_devices)
    run.step("API exchanges", lambda: run.expect_answers([
        ("PUT", "/drives/rootfs", 204), ("PUT", "/machine-config", 204), ("PUT", "/entropy", 204),
        ("PUT", "/network-interfaces/eth0", 204), ("PUT", "/boot-source", 204), ("PUT", "/actions", 204),
        ("GET", "/", 200), ("PATCH", "/vm", 204), ("GET", "/", 200), ("PATCH", "/vm", 204), ("GET", "/", 200)]))


def lifecycle_keeping_console(run: harness.Lifecycle):
    try:
        lifecycle(run)
    finally:
        (out / "console.log").write_text("".join(console_lines))


status = harness.Lifecycle("bandsox", out, recorder).finish(lifecycle_keeping_console)
shutil.rmtree(scratch, ignore_errors=True)
sys.exit(status)
