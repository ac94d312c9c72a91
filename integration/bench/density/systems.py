"""The systems under test, each launched as its orchestrator would launch it:

- kiln: kiln-jailer -> kiln (release build, built-in filters), its own uid,
  cgroups (pids, memory, cpuacct) and persistent TAP, configured with a
  config file put in the jail, its API served on the jail's socket.
- qemu-microvm: Debian's QEMU, `-M microvm` on KVM, the same guest ELF (its PVH
  note), memory, vCPU and device (virtio-mmio net, modern, on its own TAP).
- runc: Debian's runc, `create` then `start` of a busybox image (plus the
  static UDP echo, udp_echo.c) in a network namespace prepared with a veth,
  its own uid and cgroup.
- runsc: Debian's gVisor, the same bundle, ptrace platform.

A system's `launch` returns once the instance's process is started (runc and
runsc: created and started); readiness is the harness's UDP echo.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import hostnet

UID_BASE = 64300
GUEST_MIB = 128


class Instance:
    def __init__(self, system, index):
        self.system, self.index = system, index
        self.host_ip, self.service_ip = hostnet.addresses(system, index)
        self.uid = UID_BASE + index
        self.process = None       # what we spawned and wait for (kiln, QEMU)
        self.pid = None           # the instance's long-lived process
        self.launched_ns = self.ready_ns = None
        self.failure = None
        self.socket = None
        self.log = None


def run_helper(command, timeout=30):
    """A short-lived helper (runc create/start, cleanup): (exit code, stderr).
    Its stderr goes to a file, not a pipe: a runtime's daemon (runsc's
    sandbox) inherits it and would hold a pipe open. Its CPU time reaches
    the harness's RUSAGE_CHILDREN when it is reaped."""
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = -1
        err.seek(0)
        text = err.read().decode(errors="replace").strip()
    return code, (text if code != -1 else f"timed out after {timeout} s; {text}")


def remove_cgroup_parent(name):
    """The per-system parent cgroup, in every hierarchy, once its children went."""
    for folder in glob.glob(f"/sys/fs/cgroup/*/{name}"):
        try:
            os.rmdir(folder)
        except OSError:
            pass


def exit_note(system, instance):
    """Why a probe stops waiting for an instance whose process is gone, or
    None while it runs."""
    if system.alive(instance):
        return None
    code = instance.process.poll() if instance.process else None
    return f"exited before answering (status {code})"


def stop_process(process, timeout=5):
    if process is None or process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass


class Kiln:
    name = "kiln"
    parent_cgroup = "kiln-density"
    controllers = ("pids", "memory", "cpuacct")

    def __init__(self, root, scratch, guest):
        self.release = os.path.join(root, ".build-release", "release")
        self.kiln = os.path.join(self.release, "kiln")
        self.jailer = os.path.join(self.release, "kiln-jailer")
        self.guest = guest
        self.scratch = os.path.join(scratch, "kiln")
        self.base = os.path.join(self.scratch, "jails")

    def available(self):
        for path in (self.kiln, self.jailer, self.guest):
            if not os.access(path, os.R_OK):
                return False, f"{path} is missing (make release, or swift build, and make guest)"
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return False, "/dev/kvm is not usable"
        return True, ""

    def jail_id(self, index):
        return f"kd-kiln-{index}"

    def api_socket(self, index):
        return os.path.join(self.base, "kiln", self.jail_id(index), "root", "run", "firecracker.socket")

    def prepare(self, indices, pool):
        os.makedirs(self.base, mode=0o755, exist_ok=True)
        os.chmod(self.scratch, 0o755)
        os.chmod(self.base, 0o755)
        hostnet.make_taps(self.name, indices, lambda index: UID_BASE + index)
        for index in indices:
            _, service = hostnet.addresses(self.name, index)
            config = {
                "boot-source": self.boot_source(service),
                "machine-config": {"vcpu_count": 1, "mem_size_mib": GUEST_MIB},
                "network-interfaces": [{"iface_id": "eth0", "host_dev_name": hostnet.link_name(self.name, index),
                                        "guest_mac": hostnet.guest_mac(index)}],
            }
            path = os.path.join(self.scratch, f"vm-{index}.json")
            with open(path, "w") as handle:
                json.dump(config, handle)
            os.chmod(path, 0o644)

    def boot_source(self, service_ip):
        """The config's boot-source: the test guest (jailed as /guest.elf),
        its UDP echo at the instance's address."""
        return {"kernel_image_path": "/guest.elf", "boot_args": f"console=ttyS0 quiet udpecho={service_ip}"}

    def jail_files(self):
        """--jail-file arguments that put the guest where boot_source names it."""
        return ["--jail-file", f"{self.guest}:guest.elf"]

    def command(self, instance):
        index = instance.index
        return [self.jailer, "--id", self.jail_id(index), "--exec-file", self.kiln,
                "--uid", str(instance.uid), "--gid", str(instance.uid), "--chroot-base-dir", self.base,
                "--parent-cgroup", self.parent_cgroup, "--cgroup", "pids.max=64",
                "--cgroup", f"memory.limit_in_bytes={2 * GUEST_MIB << 20}", "--cgroup", "cpuacct.usage=0",
                *self.jail_files(),
                "--jail-file", os.path.join(self.scratch, f"vm-{index}.json") + ":vm.json",
                "--", "--api-sock", "/run/firecracker.socket", "--config-file", "/vm.json", "--level", "Info"]

    def launch(self, instance):
        instance.log = os.path.join(self.scratch, f"kiln-{instance.index}.log")
        with open(instance.log, "w") as log, open(self.console_path(instance.index), "w") as console:
            instance.process = subprocess.Popen(self.command(instance), stdin=subprocess.DEVNULL,
                                                stdout=console, stderr=log)
        instance.pid = instance.process.pid  # the jailer execs kiln in place

    def console_path(self, index):
        """Where the guest's serial console goes (kiln's stdout)."""
        return os.devnull

    def alive(self, instance):
        return instance.process is not None and instance.process.poll() is None

    def stop(self, instance):
        stop_process(instance.process)
        self.cleanup_jail(instance.index)

    def cleanup_jail(self, index):
        return run_helper([self.jailer, "cleanup", "--id", self.jail_id(index), "--exec-file", self.kiln,
                           "--chroot-base-dir", self.base, "--parent-cgroup", self.parent_cgroup])

    def teardown(self, indices):
        hostnet.remove(self.name, indices, namespaces=False)
        remove_cgroup_parent(self.parent_cgroup)



class QemuMicrovm:
    name = "qemu-microvm"

    def __init__(self, root, scratch, guest):
        self.qemu = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
        self.guest = guest
        self.scratch = os.path.join(scratch, "qemu")

    def available(self):
        if not os.access(self.qemu, os.X_OK):
            return False, "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)"
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return False, "/dev/kvm is not usable"
        return True, ""

    def prepare(self, indices, pool):
        os.makedirs(self.scratch, exist_ok=True)
        hostnet.make_taps(self.name, indices, lambda index: 0)

    def machine_and_boot(self, instance):
        """-M, -serial and what QEMU boots: the test guest's ELF (its PVH note).
        acpi=off: the guest reads its device from the command line QEMU
        appends (virtio_mmio.device=...)."""
        return ["-M", "microvm,acpi=off,x-option-roms=off,isa-serial=on,pit=on,pic=on,rtc=off", "-serial", "null",
                "-kernel", self.guest, "-append", f"console=ttyS0 quiet udpecho={instance.service_ip}"]

    def command(self, instance):
        index = instance.index
        # force-legacy=false: virtio 1.x (MMIO version 2), as kiln offers and
        # the guest's driver requires.
        return [self.qemu, *self.machine_and_boot(instance),
                "-accel", "kvm", "-cpu", "max", "-m", str(GUEST_MIB), "-smp", "1", "-nodefaults", "-no-user-config",
                "-display", "none", "-no-reboot",
                "-global", "virtio-mmio.force-legacy=false",
                "-netdev", f"tap,id=n0,ifname={hostnet.link_name(self.name, index)},script=no,downscript=no",
                "-device", f"virtio-net-device,netdev=n0,mac={hostnet.guest_mac(index)}"]

    def launch(self, instance):
        instance.log = os.path.join(self.scratch, f"qemu-{instance.index}.log")
        with open(instance.log, "w") as log:
            instance.process = subprocess.Popen(self.command(instance), stdin=subprocess.DEVNULL,
                                                stdout=subprocess.DEVNULL, stderr=log)
        instance.pid = instance.process.pid

    def alive(self, instance):
        return instance.process is not None and instance.process.poll() is None

    def stop(self, instance):
        stop_process(instance.process)

    def teardown(self, indices):
        hostnet.remove(self.name, indices, namespaces=False)


class Runc:
    """An OCI runtime driven as containerd's shim drives it: create (the
    container's init waits), then start."""
    name = "runc"
    binary = "runc"
    runtime_flags = ()
    cgroup_parent = "kiln-density-runc"
    # The container's process; the image is built when its binary is missing.
    service_args = ("/bin/udp-echo",)

    def __init__(self, root, scratch, guest):
        self.tool = shutil.which(self.binary) or f"/usr/sbin/{self.binary}"
        self.echo_source = os.path.join(root, "integration", "bench", "density", "udp_echo.c")
        self.scratch = os.path.join(scratch, self.name)
        self.state = f"/run/kiln-density-{self.name}"
        self.rootfs = os.path.join(self.scratch, "rootfs")
        self.clang = None

    def available(self):
        if not os.access(self.tool, os.X_OK):
            return False, f"{self.binary} is not installed (Debian: {self.binary})"
        if not os.access("/bin/busybox", os.X_OK):
            return False, "/bin/busybox is missing (Debian: busybox-static)"
        return True, ""

    def container_id(self, index):
        return f"kd-{self.name}-{index}"

    def build_rootfs(self, clang):
        """busybox-static as the image, plus the UDP echo service."""
        for folder in ("bin", "proc", "dev", "sys", "tmp", "etc"):
            os.makedirs(os.path.join(self.rootfs, folder), exist_ok=True)
        shutil.copy2("/bin/busybox", os.path.join(self.rootfs, "bin", "busybox"))
        for applet in ("sh", "cat", "ls"):
            link = os.path.join(self.rootfs, "bin", applet)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
        subprocess.run([clang, "-target", "x86_64-unknown-linux-gnu", "-static", "-nostdlib", "-ffreestanding",
                        "-fno-stack-protector", "-O2", "-o", os.path.join(self.rootfs, "bin", "udp-echo"),
                        self.echo_source], check=True)

    def spec(self):
        """runc's own default spec (`runc spec`), as the base every bundle edits."""
        folder = os.path.join(self.scratch, "spec")
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(os.path.join(folder, "config.json")):
            subprocess.run(["runc", "spec", "--bundle", folder], check=True)
        with open(os.path.join(folder, "config.json")) as handle:
            return json.load(handle)

    def prepare(self, indices, pool):
        os.makedirs(self.scratch, exist_ok=True)
        if not os.path.lexists(os.path.join(self.rootfs, self.service_args[0].lstrip("/"))):
            self.build_rootfs(self.clang)
        base = self.spec()
        hostnet.make_veths(self.name, indices, pool)
        for index in indices:
            config = json.loads(json.dumps(base))
            process = config["process"]
            process["terminal"] = False
            process["args"] = list(self.service_args)
            process["user"] = {"uid": UID_BASE + index, "gid": UID_BASE + index}
            # Port 7 as a non-root user: the one capability, ambient (which
            # needs it inheritable too, or the kernel drops it at exec).
            process["capabilities"] = {kind: ["CAP_NET_BIND_SERVICE"] for kind in
                                       ("bounding", "effective", "permitted", "inheritable", "ambient")}
            config["root"] = {"path": self.rootfs, "readonly": True}
            config["hostname"] = self.container_id(index)
            linux = config["linux"]
            linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"] + [
                {"type": "network", "path": f"/run/netns/{hostnet.netns_name(self.name, index)}"}]
            linux["cgroupsPath"] = f"/{self.cgroup_parent}/{self.container_id(index)}"
            linux["resources"] = {"devices": linux.get("resources", {}).get("devices", [{"allow": False, "access": "rwm"}]),
                                  "memory": {"limit": 2 * GUEST_MIB << 20}, "pids": {"limit": 64}}
            bundle = os.path.join(self.scratch, f"bundle-{index}")
            os.makedirs(bundle, exist_ok=True)
            with open(os.path.join(bundle, "config.json"), "w") as handle:
                json.dump(config, handle)

    def runtime(self, *arguments):
        return [self.tool, "--root", self.state, *self.runtime_flags, *arguments]

    def launch(self, instance):
        index = instance.index
        bundle = os.path.join(self.scratch, f"bundle-{index}")
        pid_file = os.path.join(bundle, "pid")
        code, err = run_helper(self.runtime("create", "--bundle", bundle, "--pid-file", pid_file,
                                               self.container_id(index)), timeout=60)
        if code != 0:
            instance.failure = f"{self.binary} create: {err[-300:]}"
            return
        code, err = run_helper(self.runtime("start", self.container_id(index)), timeout=60)
        if code != 0:
            instance.failure = f"{self.binary} start: {err[-300:]}"
            return
        with open(pid_file) as handle:
            instance.pid = int(handle.read().strip())

    def alive(self, instance):
        """The container's process runs (a zombie, reparented to init, does not)."""
        try:
            with open(f"/proc/{instance.pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, TypeError):
            return False

    def stop(self, instance):
        run_helper(self.runtime("delete", "--force", self.container_id(instance.index)), timeout=60)

    def teardown(self, indices):
        hostnet.remove(self.name, indices, namespaces=True)
        remove_cgroup_parent(self.cgroup_parent)



class Runsc(Runc):
    name = "runsc"
    binary = "runsc"
    # ptrace: its KVM platform hangs on this host's kvm-pvm; systrap is newer
    # than Debian 12's runsc (its `runsc flags` list ptrace and kvm only).
    # network=sandbox: gVisor's own network stack on the namespace's veth.
    runtime_flags = ("--platform", "ptrace", "--network", "sandbox")
    cgroup_parent = "kiln-density-runsc"
    # `runsc start` joins the spec's network namespace and refuses to go on
    # when /proc/sys/net/core/rmem_default exists, its test for the root
    # namespace; since Linux 6.x that sysctl exists in every namespace
    # (gVisor issue 10704, fixed after Debian 12's 20221219). So `start`
    # alone runs in a private mount namespace, gone when it exits, with an
    # empty tmpfs over /proc/sys/net; the sandbox, made by `create`, keeps
    # the real /proc.
    START_WRAPPER = ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                     'mount -t tmpfs -o size=4k,mode=0555 kd-runsc-netns-test /proc/sys/net && exec "$@"',
                     "runsc-start")

    def runtime(self, *arguments):
        command = super().runtime(*arguments)
        return [*self.START_WRAPPER, *command] if arguments[:1] == ("start",) else command

    def container_id(self, index):
        """Of one width: runsc's start and delete take an ID's prefix, so
        kd-runsc-1 would be ambiguous beside kd-runsc-10."""
        return f"kd-runsc-{index:05d}"

    def processes(self, instance):
        """The sandbox (the pid file's), its gofer and its ptrace stubs: all
        in the container's cgroup."""
        folder = f"{self.cgroup_parent}/{self.container_id(instance.index)}"
        for path in glob.glob(f"/sys/fs/cgroup/{folder}/cgroup.procs") + glob.glob(f"/sys/fs/cgroup/*/{folder}/cgroup.procs"):
            try:
                with open(path) as handle:
                    found = [int(line) for line in handle if line.strip()]
            except OSError:
                continue
            if instance.pid in found:
                return found
        return [instance.pid]


SYSTEMS = {"kiln": Kiln, "qemu-microvm": QemuMicrovm, "runc": Runc, "runsc": Runsc}
