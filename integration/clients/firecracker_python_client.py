"""firecracker-python (PyPI, pinned in requirements/firecracker-python.txt)
driving kiln through its own MicroVM lifecycle.

It launches `<binary_path> --api-sock S --id X --log-path L`, checks GET /,
configures the boot source, the root drive, the machine, a TAP it makes
with pyroute2 and its vsock (`vsock_enabled`, `uds_path` in its data folder),
starts the instance, pauses and resumes it with PATCH /vm, reads GET
/vm/config, and deletes the VM (SIGTERM, then its files and TAP). The driver
connects to the guest through the client's vsock `uds_path` and has bytes
echoed.

Replaced, as they are not the VMM: Docker (`docker.from_env()` in
MicroVM.__init__; the client only needs it to build a root file system from
an image, and the test guest's disk stands in), libnftables' Python binding
(Debian's, not on PyPI; the client's NAT rules are kept in nft-commands.txt,
answered as done), and `get_public_ip()` (asks
three internet services for the host's address, used only for port
forwarding: the namespace's own address is given). Its configuration has no
setting for its folders or binary, so the driver sets MicroVMConfig's
defaults (data_path, snapshot_path, binary_path) to a scratch folder and the
`firecracker` link to kiln. Its boot arguments have no setting for more, so
the test guest's vsock argument is appended to the ones it makes.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import harness

options = harness.arguments(__doc__.splitlines()[0])
harness.isolated_network()
out = Path(options.out)
scratch = harness.scratch_folder(options, "kcl-fcpy-")
bin_dir = harness.binaries(scratch / "bin", options.kiln, options.jailer)
recorder = harness.APIRecorder()
recorder.install()

import docker  # noqa: E402  (the client's own dependency)


class NoDocker:
    """Stands in for the Docker client: this run builds no image."""

    def __getattr__(self, name):
        raise RuntimeError(f"Docker is not used in the Kiln client suite (asked for docker.{name})")


docker.from_env = lambda *args, **kwargs: NoDocker()

class NftablesStandIn:
    """Stands in for libnftables' Python binding (Debian's python3-nftables,
    not on PyPI): the client's NAT rules give the guest the internet, which
    the suite's namespace has not. Commands are kept, each answered as done."""

    commands: list[str] = []

    def set_json_output(self, flag):
        pass

    def json_cmd(self, command):
        NftablesStandIn.commands.append(json.dumps(command))
        listing = any("list" in entry for entry in command.get("nftables", []))
        return 0, ({"nftables": []} if listing else ""), ""

    def cmd(self, command):
        NftablesStandIn.commands.append(command)
        return 0, "", ""


sys.modules["nftables"] = types.SimpleNamespace(Nftables=NftablesStandIn)

# The package checks its binary and makes its folders when imported, from
# MicroVMConfig's defaults: its config module is loaded and set first.
_package = importlib.util.find_spec("firecracker")
_config_spec = importlib.util.spec_from_file_location(
    "firecracker.config", Path(_package.submodule_search_locations[0]) / "config.py")
client_config = importlib.util.module_from_spec(_config_spec)
sys.modules["firecracker.config"] = client_config
_config_spec.loader.exec_module(client_config)
_original_init = client_config.MicroVMConfig.__init__


def _scratch_defaults(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self.data_path = str(scratch / "data")
    self.snapshot_path = str(scratch / "snapshots")
    self.binary_path = str(bin_dir / "firecracker")


client_config.MicroVMConfig.__init__ = _scratch_defaults

from firecracker import microvm as client_microvm  # noqa: E402
from firecracker.microvm import MicroVM  # noqa: E402

client_microvm.get_public_ip = lambda timeout=5: "10.77.0.2"
_client_boot_args = MicroVM._boot_args.fget
MicroVM._boot_args = property(lambda self: f"{_client_boot_args(self)} {harness.GUEST_VSOCK_ARGS}")


def lifecycle(run: harness.Lifecycle):
    disk = harness.guest_disk(scratch / "rootfs.ext4")
    vm = run.step("construct MicroVM", lambda: MicroVM(
        name="kiln-suite", kernel_file=options.guest, base_rootfs=str(disk), vcpu=1, memory=128,
        vsock_enabled=True, vsock_guest_cid=3))
    vm_id = vm._microvm_id
    recorder.watch(vm._socket_file)
    console = scratch / "data" / vm_id / "firecracker.log"
    log = scratch / "data" / vm_id / "logs" / f"{vm_id}.log"
    run.evidence += [console, log]

    def create():
        answer = vm.create()
        if answer != f"VMM {vm_id} created":
            raise AssertionError(f"create() said: {answer}")
        return answer
    run.step("create (configure and InstanceStart)", create)
    run.step("guest listens on vsock", lambda: harness.wait_for(
        "the guest's vsock listening line", harness.file_contains(console, f"guest: vsock listening on port {harness.GUEST_VSOCK_PORT}")))
    run.step("vsock echo", lambda: harness.vsock_echo(vm._vsock_uds_path))
    run.step("guest runs", lambda: harness.wait_for("the guest's ready line", harness.file_contains(console, "guest: waiting for ctrl-alt-del")))
    pid = int((scratch / "data" / vm_id / "firecracker.pid").read_text())

    def state(wanted):
        def check():
            answer = vm._vmm.get_vmm_state(vm_id)
            if answer != wanted:
                raise AssertionError(f"GET / state is {answer!r}, wanted {wanted!r}")
            return answer
        return check
    run.step("describe (GET /)", state("Running"))

    def listed():
        ids = [entry["id"] for entry in MicroVM.list()]
        if vm_id not in ids:
            raise AssertionError(f"MicroVM.list() has {ids}, not {vm_id} (the process is found by the name firecracker)")
        return ids
    run.step("list (process named firecracker)", listed)

    def described_config():
        shown = vm.config()
        if shown.get("machine-config", {}).get("vcpu_count") != 1 or not shown.get("drives"):
            raise AssertionError(f"GET /vm/config: {shown}")
        return f"{len(shown['drives'])} drive(s), {len(shown.get('network-interfaces', []))} interface(s)"
    run.step("describe (GET /vm/config)", described_config)
    run.step("pause", vm.pause)
    run.step("paused (GET /)", state("Paused"))
    run.step("resume", vm.resume)
    run.step("resumed (GET /)", state("Running"))

    def keep_console():
        for path in (console, log):
            if path.exists():
                (out / path.name).write_text(path.read_text(errors="replace"))
    run.step("keep the console and log", keep_console)
    run.evidence.append(out / "nft-commands.txt")

    def delete():
        answer = vm.delete()
        if answer != f"VMM {vm_id} is deleted":
            raise AssertionError(f"delete() said: {answer}")
        return answer
    run.step("stop (delete: SIGTERM, files, TAP)", delete)
    run.step("kiln exited", lambda: harness.wait_for("kiln to exit", harness.process_gone(pid), seconds=10))
    run.step("API exchanges", lambda: run.expect_answers([
        ("GET", "/", 200), ("PUT", "/boot-source", 204), ("PUT", "/drives/rootfs", 204),
        ("PUT", "/machine-config", 204), ("PUT", "/network-interfaces/uplink0", 204),
        ("PUT", "/vsock", 204), ("PUT", "/actions", 204), ("GET", "/", 200), ("GET", "/vm/config", 200),
        ("PATCH", "/vm", 204), ("GET", "/", 200), ("PATCH", "/vm", 204), ("GET", "/", 200)]))


def lifecycle_with_nat_log(run: harness.Lifecycle):
    try:
        lifecycle(run)
    finally:
        (out / "nft-commands.txt").write_text("\n".join(NftablesStandIn.commands) + "\n")


status = harness.Lifecycle("firecracker-python", out, recorder).finish(lifecycle_with_nat_log)
shutil.rmtree(scratch, ignore_errors=True)
sys.exit(status)
