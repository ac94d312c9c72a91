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
exercised). Its vsock bridge is on (enable_vsock=True, its default):
bandsox's `_setup_vsock_bridge` waits at most 5 s after PUT /vsock for
`uds_path` to exist, as Firecracker binds it on that request
(src/vmm/src/vmm_config/vsock.rs, VsockBuilder::insert), then listens on
`<uds_path>_<port>` for its agent; the driver then connects through
`uds_path` with `CONNECT 5000` and has 64 KiB echoed by the test guest
(whose `vsock.listen=5000` is appended to bandsox's default boot
arguments). bandsox allocates the CID and port from files under its
storage folder, /var/lib/bandsox by default and host-wide: the driver
points that default (and its vsock isolation folder) into the run's scratch
folder. Its `uds_path` is /tmp/bandsox/vsock_<vm id>.sock, which it has no
setting for, so the VM id is random per run. bandsox's client has no GET
call; the driver describes the VM with the client's own request method.
"""
from __future__ import annotations

import os
import pwd
import secrets
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

import bandsox.core  # noqa: E402
from bandsox.vm import DEFAULT_BOOT_ARGS, MicroVM  # noqa: E402

# BandSox's storage (the CID and port allocators' files) and vsock isolation
# folders default to host-wide paths; this run's are in its scratch folder.
_storage_defaults = bandsox.core.BandSox.__init__.__defaults__
bandsox.core.BandSox.__init__.__defaults__ = (str(scratch / "storage"),) + _storage_defaults[1:]
os.environ["BANDSOX_VSOCK_ISOLATION_DIR"] = str(scratch / "bsx")
# Ends in two hex digits, which bandsox reads as its subnet index.
VM_ID = "kiln" + secrets.token_hex(4)

console_lines: list[str] = []  # the guest's serial lines, as bandsox's multiplexer reads them


def lifecycle(run: harness.Lifecycle):
    disk = harness.guest_disk(scratch / "rootfs.ext4")
    socket_path = str(scratch / "api.sock")
    recorder.watch(socket_path)
    vm = run.step("construct MicroVM", lambda: MicroVM(VM_ID, socket_path, firecracker_bin=str(bin_dir / "firecracker")))
    console = out / "console.log"
    lines = console_lines
    run.evidence.append(console)

    def start_process():
        vm.start_process()
        vm.multiplexer.add_callback(lines.append)
        return f"pid {vm.process.pid}"
    run.step("create (start_process: firecracker --api-sock)", start_process)
    boot_args = f"{DEFAULT_BOOT_ARGS} root=/dev/vda init=/init {harness.GUEST_VSOCK_ARGS}"
    run.step("configure (drive, machine, entropy, TAP, boot source, vsock)", lambda: vm.configure(
        options.guest, str(disk), vcpu=1, mem_mib=128, boot_args=boot_args, enable_networking=True, enable_vsock=True))
    uds_path = vm.vsock_socket_path
    run.step("start (InstanceStart)", vm.start)

    def console_has(text):
        return lambda: any(text in line for line in list(lines))
    run.step("guest listens on vsock", lambda: harness.wait_for(
        "the guest's vsock listening line", console_has(f"guest: vsock listening on port {harness.GUEST_VSOCK_PORT}")))
    run.step("vsock echo", lambda: harness.vsock_echo(uds_path))
    run.step("guest runs", lambda: harness.wait_for("the guest's ready line", console_has("guest: waiting for ctrl-alt-del")))

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

    def socket_removed():
        if os.path.lexists(uds_path):
            raise AssertionError(f"{uds_path} is still there after kiln exited")
        return f"{uds_path} removed"
    run.step("uds_path removed", socket_removed)

    def console_shows_devices():
        text = console.read_text(errors="replace")
        for wanted in ("guest: virtio-blk@", "guest: virtio-rng@", "guest: virtio-net@"):
            if wanted not in text:
                raise AssertionError(f"the console lacks {wanted!r}")
        return "the guest drove the drive, the entropy device and the interface"
    run.step("console", console_shows_devices)
    run.step("API exchanges", lambda: run.expect_answers([
        ("PUT", "/drives/rootfs", 204), ("PUT", "/machine-config", 204), ("PUT", "/entropy", 204),
        ("PUT", "/network-interfaces/eth0", 204), ("PUT", "/boot-source", 204), ("PUT", "/vsock/vsock0", 204),
        ("PUT", "/actions", 204), ("GET", "/", 200), ("PATCH", "/vm", 204), ("GET", "/", 200), ("PATCH", "/vm", 204), ("GET", "/", 200)]))


def lifecycle_keeping_console(run: harness.Lifecycle):
    try:
        lifecycle(run)
    finally:
        (out / "console.log").write_text("".join(console_lines))


status = harness.Lifecycle("bandsox", out, recorder).finish(lifecycle_keeping_console)
shutil.rmtree(scratch, ignore_errors=True)
sys.exit(status)
