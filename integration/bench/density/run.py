#!/usr/bin/python3
"""The density benchmark: N isolated UDP echo services per system, started at
one bounded parallelism, side by side in one invocation (kiln, runc, QEMU
microvm, runsc), each counted ready when it answers the host; then the
single-microVM figures and where kiln's costs go. With --guest linux, each
service is busybox httpd (Debian's kernel in the VMs), ready when the host
gets its page (linuxguest.py). See README.md here.

    run.py [--quick] [--json FILE] [--chart FILE] [--ns 1,10,100] [--repeat R]
           [--parallel P] [--systems kiln,runc,qemu-microvm,runsc] [--guest linux]
    run.py --smoke [--bin DIR]     # N=1 kiln: the echo and the clean-up, for make test

Needs root, iproute2 and /dev/kvm; Debian's python3 (python3-matplotlib draws
the chart). Every TAP, namespace, cgroup, jail and process it makes is removed
at the end, on failure and on Ctrl-C, and it reports anything left.
"""
import argparse
import concurrent.futures
import fcntl
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

import hostnet  # noqa: E402
import launchrate  # noqa: E402
import leftovers  # noqa: E402
import linuxguest  # noqa: E402
import measure  # noqa: E402
import report  # noqa: E402
import systems  # noqa: E402

LOCK_PATH = "/run/kiln-density.lock"
stopping = threading.Event()
# (system, instances) being run: what Ctrl-C or a failure must tear down.
active = []
# tmpfs mounts the run made (launchrate.jails_on_tmpfs): unmounted at its end.
mounted = []


def probe_until_ready(instance, system, seconds):
    """Sends the instance a datagram until it echoes one back: again after
    each 50 ms without an answer (10 ms after a send that could not go out
    yet). Not faster: on this host a guest's echo costs it milliseconds of
    emulated instructions, and probes sent faster than it answers keep a
    booting guest busy answering stale ones."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    instance.socket = sock
    payload = f"kd {instance.system} {instance.index}".encode()
    deadline = time.monotonic() + seconds
    while not stopping.is_set():
        if time.monotonic() > deadline:
            instance.failure = f"no echo within {seconds} s"
            return
        instance.failure = systems.exit_note(system, instance)
        if instance.failure:
            return
        try:
            sock.sendto(payload, (instance.service_ip, 7))
            wait_until = time.monotonic() + 0.05
        except OSError:
            wait_until = time.monotonic() + 0.01  # not resolved yet: the next send asks again
        while time.monotonic() < wait_until and not stopping.is_set():
            readable, _, _ = select.select([sock], [], [], max(0, wait_until - time.monotonic()))
            if not readable:
                continue
            try:
                data = sock.recv(2048)
            except OSError:
                continue
            if data == payload:
                instance.ready_ns = time.monotonic_ns()
                return


def echo_rtt_ms(instance, seconds=1.0):
    """One echo on the instance's probe socket: round trip in ms, or None."""
    if instance.socket is None:
        return None
    payload = f"kd again {instance.index} {random.random()}".encode()
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            instance.socket.sendto(payload, (instance.service_ip, 7))
        except OSError:
            pass
        readable, _, _ = select.select([instance.socket], [], [], 0.05)
        while readable:
            try:
                if instance.socket.recv(2048) == payload:
                    return (time.monotonic() - start) * 1000
            except BlockingIOError:
                break
            readable, _, _ = select.select([instance.socket], [], [], 0)
    return None


def readiness(options):
    """(probe until ready, one answer's ms or None) for the run's guest: the
    UDP echo, or with --guest linux the page over HTTP."""
    if options.linux:
        return (lambda instance, system, seconds: linuxguest.probe_until_page(instance, system, seconds, stopping),
                linuxguest.page_ms)
    return probe_until_ready, echo_rtt_ms


def launch_all(system, instances, parallel, seconds, reserve_kib, cap_seconds=None, probe=probe_until_ready):
    """Each instance launched and probed until ready, `parallel` at a time;
    none launched after `cap_seconds` (a time cap for hosts too busy)."""
    cap = time.monotonic() + cap_seconds if cap_seconds else None

    def one(instance):
        if stopping.is_set():
            instance.failure = "interrupted"
            return
        if cap is not None and time.monotonic() > cap:
            instance.failure = f"not launched: the run's time cap ({cap_seconds:.0f} s) passed"
            return
        if measure.meminfo()["MemAvailable"] < reserve_kib:
            instance.failure = f"host memory reserve ({reserve_kib >> 20} GiB) reached: not launched"
            return
        instance.launched_ns = time.monotonic_ns()
        try:
            system.launch(instance)
        except Exception as error:  # noqa: BLE001 - recorded as this instance's failure
            instance.failure = f"launch: {error}"
        if instance.failure is None:
            probe(instance, system, seconds)

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, instances))


def teardown(system, instances, parallel):
    """Stops every launched instance; unmeasured, so wider than the launches
    (each stop mostly waits for a process to exit)."""
    with concurrent.futures.ThreadPoolExecutor(max(parallel, 32)) as pool:
        list(pool.map(system.stop, [instance for instance in instances if instance.launched_ns is not None]))
    for instance in instances:
        if instance.socket is not None:
            instance.socket.close()
    system.teardown([instance.index for instance in instances])


def kiln_log_figures(instances):
    """From each kiln's log: the jailer's overhead and exec -> first KVM_RUN."""
    jailer_wall, jailer_cpu, first_run = [], [], []
    for instance in instances:
        if instance.log is None:
            continue
        figures = launchrate.log_figures(instance)
        if "jailer_wall_ms" in figures:
            jailer_wall.append(figures["jailer_wall_ms"])
            jailer_cpu.append(figures["jailer_cpu_ms"])
        if "ready_ns" in figures and instance.launched_ns is not None:
            first_run.append((figures["ready_ns"] - instance.launched_ns) / 1e6)
    return jailer_wall, jailer_cpu, first_run


def api_latencies(system, instances, count):
    """GET /machine-config on a fresh connection to `count` random instances."""
    latencies = []
    for instance in random.sample(instances, min(count, len(instances))):
        start = time.monotonic()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(2)
                client.connect(system.api_socket(instance.index))
                client.sendall(b"GET /machine-config HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                answer = b""
                while True:
                    chunk = client.recv(4096)
                    if not chunk:
                        break
                    answer += chunk
            ok = answer.startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        latencies.append({"instance": instance.index, "ms": (time.monotonic() - start) * 1000, "ok": ok})
    return latencies


def unanswered_of(instances, answer=echo_rtt_ms):
    """The indices of instances that give no answer within 2 s, asked all at
    once (each has its own socket): one by one, a run whose instances died
    waited 2 s for each."""
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda instance: answer(instance, 2.0), instances))
    return [instance.index for instance, answer in zip(instances, answers) if answer is None]


def kill_one(system, instances, answer=echo_rtt_ms):
    """kill -9 of one kiln: the others must still answer, and kiln-jailer
    cleanup must remove its jail and cgroups."""
    ready = [instance for instance in instances if instance.ready_ns is not None]
    if len(ready) < 2:
        return {"note": "fewer than two instances ready"}
    victim = random.choice(ready)
    before = unanswered_of([instance for instance in ready if instance is not victim], answer)
    os.kill(victim.pid, signal.SIGKILL)
    victim.process.wait(timeout=10)
    code, err = system.cleanup_jail(victim.index)
    jail = os.path.dirname(os.path.dirname(system.api_socket(victim.index)))
    cgroups_left = [controller for controller in system.controllers
                    if os.path.isdir(f"/sys/fs/cgroup/{controller}/{system.parent_cgroup}/{system.jail_id(victim.index)}")]
    others = [instance for instance in ready if instance is not victim]
    unanswered = unanswered_of(others, answer)
    victim.launched_ns = None  # torn down already
    if victim.socket is not None:
        victim.socket.close()
        victim.socket = None
    return {"killed": victim.index, "cleanup_status": code, "cleanup_error": err[-300:],
            "jail_left": os.path.exists(jail), "cgroups_left": cgroups_left,
            "others_checked": len(others), "others_unanswered": unanswered, "unanswered_before_kill": before}


def run_once(system, n, options, checks, idle_seconds=0):
    """One launch of N instances of one system, measured, then torn down."""
    instances = [systems.Instance(system.name, index) for index in range(n)]
    active.append((system, instances))
    try:
        result = measure_run(system, instances, options, checks, idle_seconds)
    finally:
        started = time.monotonic()
        teardown(system, instances, options.parallel)
        active.remove((system, instances))
    result["teardown_seconds"] = time.monotonic() - started
    return result


def instance_pids(system, instance):
    """The processes an instance is made of: its one process, or those the
    system lists (runsc: sandbox, gofer and ptrace stubs)."""
    processes = getattr(system, "processes", None)
    return processes(instance) if processes else [instance.pid]


def idle_cost(system, instances, seconds):
    """What the ready instances cost the host while nobody talks to them:
    CPU ms per second per instance over `seconds` (their threads and KVM
    kernel threads), e.g. a guest's timer ticks or a VMM's periodic work."""
    pids = [pid for instance in instances for pid in instance_pids(system, instance)]
    before, started = measure.instances_cpu_ns(pids), time.monotonic()
    time.sleep(seconds)
    spent = measure.instances_cpu_ns(pids) - before
    return spent / 1e6 / (time.monotonic() - started) / max(1, len(instances))


def measure_run(system, instances, options, checks, idle_seconds=0):
    n = len(instances)
    before = measure.meminfo()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(options.parallel) as pool:
        system.prepare(list(range(n)), pool)
    network_seconds = time.monotonic() - started
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start_ns = time.monotonic_ns()
    probe, answer = readiness(options)
    launch_all(system, instances, options.parallel, options.timeout, options.reserve_gib << 20, options.cap_seconds,
               probe)
    if stopping.is_set():
        raise KeyboardInterrupt
    ready = [instance for instance in instances if instance.ready_ns is not None]
    all_ready_ns = max([instance.ready_ns for instance in ready], default=start_ns)
    after = measure.meminfo()
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    helper_cpu = (children_after.ru_utime + children_after.ru_stime
                  - children_before.ru_utime - children_before.ru_stime)
    pss, threads, private, guest = 0, {}, [], []
    kthreads = measure.kvm_kthread_cpu_ns([instance.pid for instance in ready])
    if kthreads:
        threads["kvm kernel threads"] = sum(kthreads.values())
    for instance in ready:
        for pid in instance_pids(system, instance):
            pss += measure.rollup(pid).get("Pss", 0)
            for name, ns in measure.thread_cpu_ns(pid).items():
                threads[name] = threads.get(name, 0) + ns
        if system.name in ("kiln", "qemu-microvm"):
            own, touched = measure.private_memory(instance.pid, systems.GUEST_MIB * 1024)
            private.append(own / 1024)
            guest.append(touched / 1024)
    cpu = sum(threads.values()) / 1e9 + helper_cpu
    used = (measure.host_used_kib(after) - measure.host_used_kib(before)) / 1024
    per_ready = [(instance.ready_ns - instance.launched_ns) / 1e6 for instance in ready]
    failures = [f"{instance.index}: {instance.failure}" for instance in instances if instance.failure]
    result = {
        "system": system.name, "n": n, "ready_seconds": (all_ready_ns - start_ns) / 1e9,
        "host_memory_mib": used, "memory_per_instance_mib": used / n, "cpu_seconds": cpu,
        "failures": len(failures), "runnable": True, "note": "",
        "pss_mib": pss / 1024, "pss_per_instance_mib": pss / 1024 / n,
        "page_tables_mib": (after["PageTables"] - before["PageTables"]) / 1024,
        "slab_mib": (after["Slab"] - before["Slab"]) / 1024,
        "kernel_stack_mib": (after["KernelStack"] - before["KernelStack"]) / 1024,
        "instance_ready_ms": measure.spread(per_ready), "helper_cpu_seconds": helper_cpu,
        "cpu_seconds_by_thread": {name: ns / 1e9 for name, ns in sorted(threads.items())},
        "network_setup_seconds": network_seconds, "failure_reasons": failures[:10],
    }
    if idle_seconds and ready:
        result["idle_cpu_ms_per_second_per_instance"] = idle_cost(system, ready, idle_seconds)
    if private:
        result["vmm_private_mib"] = measure.spread(private)
        result["guest_touched_mib"] = measure.spread(guest)
    if system.name == "kiln":
        wall, jailer_cpu, first_run = kiln_log_figures(instances)
        result["jailer_ms"] = measure.spread(wall)
        result["jailer_cpu_ms"] = measure.spread(jailer_cpu)
        result["launch_to_first_kvm_run_ms"] = measure.spread(first_run)
    if checks and system.name == "kiln" and ready:
        sample = api_latencies(system, ready, options.api_sample)
        result["reliability"] = {
            "api_sample": sample,
            "api_within_100ms": sum(1 for entry in sample if entry["ok"] and entry["ms"] <= 100),
            "api_sampled": len(sample),
            "kill9": kill_one(system, instances, answer),
        }
    return result


def launch_rate(system, count, options, wait="inotify", profile=None, boot_args=None):
    """Launches overlapped as an orchestrator would (the same parallelism):
    kiln-jailer start -> the guest's first instruction (kiln's "first
    KVM_RUN" line) for `count` microVMs, per host core, and where the
    batch's time and CPU go (launchrate.batch)."""
    instances = [systems.Instance(system.name, index) for index in range(count)]
    active.append((system, instances))
    try:
        with concurrent.futures.ThreadPoolExecutor(options.parallel) as pool:
            system.prepare(list(range(count)), pool)
        if boot_args is not None:
            launchrate.set_boot_args(system, count, boot_args)
        return launchrate.batch(system, instances, options.parallel, options.timeout, stopping, wait, profile)
    finally:
        teardown(system, instances, options.parallel)
        active.remove((system, instances))


def launch_rate_kiln(kiln, scratch):
    """The kiln the launch-rate batches use: the same binaries and guest,
    its jails on a tmpfs (launchrate.jails_on_tmpfs). On this host's root
    file system (ext4 without a journal) every new inode scans past the
    inodes freed in the last half minute, which the launches before free by
    the hundred: 1.6 CPU-ms of each launch (perf), in the jailer's mkdirs and
    the VMM's socket."""
    launcher = systems.Kiln(ROOT, os.path.join(scratch, "launch-rate"), kiln.guest)
    launcher.kiln, launcher.jailer = kiln.kiln, kiln.jailer
    mounted.append(launchrate.jails_on_tmpfs(launcher))
    return launcher


def aggregate(runs):
    """One entry per (system, n): medians in the named fields, the spread of
    each beside it (`<field>_p90`, `_min`, `_max`), every repeat in `repeats`."""
    merged = []
    for key in sorted({(run["system"], run["n"]) for run in runs}, key=lambda key: (key[1], key[0])):
        group = [run for run in runs if (run["system"], run["n"]) == key]
        entry = {"system": key[0], "n": key[1], "runnable": True, "note": group[0].get("note", "")}
        for field in ("ready_seconds", "host_memory_mib", "memory_per_instance_mib", "cpu_seconds", "pss_mib",
                      "pss_per_instance_mib"):
            figures = measure.spread([run[field] for run in group])
            entry[field] = figures["median"]
            entry.update({f"{field}_{name}": figures[name] for name in ("p90", "min", "max")})
        idle = [run["idle_cpu_ms_per_second_per_instance"] for run in group
                if "idle_cpu_ms_per_second_per_instance" in run]
        if idle:
            entry["idle_cpu_ms_per_second_per_instance"] = measure.spread(idle)["median"]
        entry["failures"] = sum(run["failures"] for run in group)
        entry["repeats"] = group
        merged.append(entry)
    return merged


def emergency_cleanup():
    for system, instances in list(active):
        try:
            teardown(system, instances, 8)
        except Exception as error:  # noqa: BLE001 - keep cleaning
            print(f"density: teardown of {system.name} failed: {error}", file=sys.stderr)
        active.remove((system, instances))


def interrupted(number, frame):
    """Ctrl-C or SIGTERM: workers stop probing, the main thread unwinds to the
    clean-up."""
    stopping.set()
    raise KeyboardInterrupt


def parse_options(argv):
    parser = argparse.ArgumentParser(description="Kiln density benchmark (see README.md beside this file)")
    parser.add_argument("--quick", action="store_true", help="N up to 100, under 3 minutes")
    parser.add_argument("--smoke", action="store_true", help="N=1 kiln only: the echo and the clean-up (make test)")
    parser.add_argument("--ns", help="comma-separated N values (default 1,10,100,400,800; --quick 1,10,100)")
    parser.add_argument("--repeat", type=int, help="runs per system and N (default 3; 2 for N >= 400)")
    parser.add_argument("--parallel", type=int, default=8, help="launches in flight at once, every system")
    parser.add_argument("--systems", default="kiln,runc,qemu-microvm,runsc")
    parser.add_argument("--runsc-max-n", type=int, default=100,
                        help="largest N for runsc (about 15 MiB and 0.2 CPU-s an instance under ptrace)")
    parser.add_argument("--json", help="where every raw figure goes (default integration/out/density/"
                        "density.json; smoke.json with --smoke)")
    parser.add_argument("--chart", help="PNG or SVG path (default: beside the JSON, .png)")
    parser.add_argument("--bin", default=os.path.join(ROOT, ".build-release", "release"),
                        help="folder with kiln, kiln-jailer (and kiln-policy, policies.kbundle)")
    parser.add_argument("--guest", default="test",
                        help="test: the lane-1 test guest's UDP echo (default); linux: Debian's kernel with busybox "
                        "httpd in the VMs, httpd in the containers, ready on an HTTP GET; or a test-guest ELF path")
    nested = os.path.join(ROOT, "integration", "out", "nested")
    parser.add_argument("--linux-kernel", default=os.path.join(nested, "l2-bzImage"),
                        help="--guest linux: the kernel (default: make nested-assets' Debian cloud kernel)")
    parser.add_argument("--linux-initrd", default=os.path.join(nested, "density-initrd.cpio"),
                        help="--guest linux: the busybox httpd initramfs (make nested-assets builds it)")
    parser.add_argument("--probe-seconds", type=float, default=30,
                        help="--guest linux: how long the one-instance boot probe of each VM system may take")
    parser.add_argument("--timeout", type=float, default=120, help="seconds an instance has to answer")
    parser.add_argument("--reserve-gib", type=int, default=3, help="stop launching below this MemAvailable")
    parser.add_argument("--cap-seconds", type=float, help="launch nothing more after this long in one run "
                        "(the rest count as failures)")
    parser.add_argument("--api-sample", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=1.0,
                        help="after the first repeat is ready, measure its idle CPU this long (0: not)")
    parser.add_argument("--no-single", action="store_true", help="skip the single-microVM figures")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the callgrind/strace breakdowns")
    options = parser.parse_args(argv)
    # Launches run in other folders (the jailer's, the jails'): a relative
    # --bin would name nothing there.
    options.bin = os.path.abspath(options.bin)
    if options.ns:
        try:
            options.ns = sorted({int(value) for value in options.ns.split(",")})
        except ValueError:
            parser.error(f"--ns: not a list of numbers: {options.ns}")
    else:
        options.ns = [1] if options.smoke else [1, 10, 100] if options.quick else [1, 10, 100, 400, 800]
    if any(n < 1 or n > 16384 for n in options.ns):
        parser.error("--ns: each N must be 1-16384")
    if options.parallel < 1:
        parser.error("--parallel must be at least 1")
    options.linux = options.guest == "linux"
    if options.guest in ("test", "linux"):
        options.guest = os.path.join(ROOT, "integration", "out", "kiln-test-guest.elf")
    if options.linux and options.smoke:
        parser.error("--smoke runs the test guest's UDP echo; --guest linux is for measured runs")
    if options.probe_seconds <= 0:
        parser.error("--probe-seconds must be positive")
    options.systems = ["kiln"] if options.smoke else options.systems.split(",")
    unknown = [name for name in options.systems if name not in systems.SYSTEMS]
    if unknown:
        parser.error(f"--systems: unknown {', '.join(unknown)} (known: {', '.join(systems.SYSTEMS)})")
    if options.json is None:
        options.json = os.path.join(ROOT, "integration", "out", "density", "smoke.json" if options.smoke else "density.json")
    if options.chart is None:
        options.chart = os.path.splitext(options.json)[0] + ".png"
    return options


def repeats_for(options, n):
    if options.smoke:
        return 1
    if options.repeat:
        return options.repeat
    return 2 if n >= 400 else 3


def hold_host():
    """Takes the host for one run: descriptors, Ctrl-C, the lock, and the
    sweep of what an earlier run left. Returns the lock's file, held until
    this process exits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for name in (signal.SIGINT, signal.SIGTERM):
        signal.signal(name, interrupted)
    # One run at a time on a host: each run's sweep of what an earlier run
    # left would kill another run's instances (make test's smoke run during
    # a benchmark did).
    lock = open(LOCK_PATH, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"density: another density run holds {LOCK_PATH}; waiting for it to end", file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    stale = leftovers.find()
    if stale:
        print(f"density: removing what an earlier run left: {len(stale)} items", file=sys.stderr)
        leftovers.sweep(stale)
    return lock


def new_scratch():
    scratch = tempfile.mkdtemp(prefix="density-", dir=os.path.join(ROOT, "integration", "out"))
    os.chmod(scratch, 0o755)
    return scratch


def release_scratch(scratch):
    """Tears down whatever still runs and removes the run's scratch; returns
    (what was found left, what is still left after the sweep)."""
    emergency_cleanup()
    while mounted:
        subprocess.run(["umount", mounted.pop()], capture_output=True)
    left = leftovers.find(scratch)
    if left:
        leftovers.sweep(left)
    still = leftovers.find(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    if os.path.exists(scratch):
        still.append(("folder", scratch))
    return left, still


def main(argv):
    options = parse_options(argv)
    if os.geteuid() != 0:
        print("density: skipped: needs root (jails, TAPs, cgroups)")
        return 0
    if shutil.which("ip") is None:
        print("density: needs iproute2 (ip)", file=sys.stderr)
        return 1
    lock = hold_host()  # noqa: F841 - held until this process exits
    scratch = new_scratch()
    chosen, skipped = [], []
    catalog, guest = systems.SYSTEMS, options.guest
    if options.linux:
        catalog, guest = linuxguest.SYSTEMS, linuxguest.LinuxBoot(options.linux_kernel, options.linux_initrd)
    for name in options.systems:
        system = catalog[name](ROOT, scratch, guest)
        if name == "kiln":
            system.release = options.bin
            system.kiln, system.jailer = os.path.join(options.bin, "kiln"), os.path.join(options.bin, "kiln-jailer")
        if hasattr(system, "clang"):
            system.clang = os.path.join(os.path.dirname(os.path.realpath(shutil.which("swiftc") or "/opt/swift/usr/bin/swiftc")), "clang")
        ok, note = system.available()
        (chosen if ok else skipped).append(system if ok else (name, note))
    if options.smoke and skipped:
        shutil.rmtree(scratch, ignore_errors=True)
        if "/dev/kvm" in skipped[0][1]:
            print(f"density smoke: skipped: {skipped[0][1]}")
            return 0
        print(f"density smoke: FAILED: {skipped[0][1]}", file=sys.stderr)
        return 1

    runs, notes, single, breakdowns, status, left, still = [], {}, {}, {}, 0, [], []
    try:
        # Whether this host's KVM boots Debian's kernel: one instance each,
        # before anything is measured.
        for system in [system for system in chosen if getattr(system, "boots_linux", False)]:
            booted, finding = linuxguest.boot_probe(system, options, run_once)
            if booted:
                print(f"density: {system.name} boots Debian's kernel here: its probe instance served the page in "
                      f"{finding:.2f} s", file=sys.stderr, flush=True)
            else:
                chosen.remove(system)
                skipped.append((system.name, finding))
                print(f"density: {system.name} not runnable: {finding}", file=sys.stderr, flush=True)
        for system in [system for system in chosen if system.name == "runsc"]:
            probe = run_once(system, 1, options, checks=False)
            if probe["failures"]:
                chosen.remove(system)
                skipped.append(("runsc", "does not run here: " + "; ".join(probe["failure_reasons"])[:300]))
        for n in options.ns:
            for repeat in range(repeats_for(options, n)):
                order = chosen[repeat % len(chosen):] + chosen[:repeat % len(chosen)] if chosen else []
                for system in order:
                    if system.name == "runsc" and n > options.runsc_max_n:
                        notes[(system.name, n)] = f"not run: N above --runsc-max-n {options.runsc_max_n}"
                        continue
                    last = n == max(options.ns) and repeat == repeats_for(options, n) - 1
                    idle = options.idle_seconds if repeat == 0 and not options.smoke else 0
                    result = run_once(system, n, options, checks=last and not options.smoke, idle_seconds=idle)
                    runs.append(result)
                    idle_text = (f", idle {result['idle_cpu_ms_per_second_per_instance']:.2f} CPU-ms/s each"
                                 if "idle_cpu_ms_per_second_per_instance" in result else "")
                    print(f"density: {system.name:13} N={n:4} repeat {repeat + 1}: all ready in "
                          f"{result['ready_seconds']:.2f} s, host +{result['host_memory_mib']:.0f} MiB, PSS "
                          f"{result['pss_mib']:.0f} MiB, CPU {result['cpu_seconds']:.2f} s{idle_text}, "
                          f"{result['failures']} failed"
                          + (f" (first: {result['failure_reasons'][0][:200]})" if result["failures"] else ""),
                          file=sys.stderr, flush=True)
        kiln = next((system for system in chosen if system.name == "kiln"), None)
        if kiln and options.linux and not options.no_single:
            print("density: single-microVM figures and breakdowns are the test guest's: run without --guest linux",
                  file=sys.stderr)
        elif kiln and not options.smoke and not options.no_single:
            import single as single_figures
            launcher = launch_rate_kiln(kiln, scratch)
            single = single_figures.figures(kiln, options, runs, lambda count: launch_rate(launcher, count, options))
            if not options.no_breakdown:
                import breakdown
                breakdowns = breakdown.all_breakdowns(
                    kiln, options, scratch, lambda count, profile: launch_rate(launcher, count, options, profile=profile))
    except KeyboardInterrupt:
        print("density: interrupted; cleaning up", file=sys.stderr)
        status = 130
    except Exception:
        status = 1
        raise
    finally:
        left, still = release_scratch(scratch)

    results = aggregate(runs)
    for (name, n), note in notes.items():
        results.append({"system": name, "n": n, "runnable": True, "note": note, "failures": 0})
    for name, note in skipped:
        results.append({"system": name, "n": None, "runnable": False, "note": note})
    document = {"results": results, "guest": "linux" if options.linux else "test",
                "single": single, "breakdowns": breakdowns,
                "leftovers": {"found_after_run": [list(item) for item in left], "left_after_sweep": [list(item) for item in still]},
                "host": report.host_facts(options)}
    os.makedirs(os.path.dirname(os.path.abspath(options.json)), exist_ok=True)
    with open(options.json, "w") as handle:
        json.dump(document, handle, indent=1, default=str)
    print(report.markdown(document, options))
    if not options.smoke and results:
        try:
            print(f"\nchart: {report.chart(document, options.chart)}")
        except ImportError as error:
            print(f"\nchart: not drawn ({error}; Debian's python3-matplotlib draws it)")
    print(f"JSON: {options.json}")
    if options.smoke:
        run = runs[0] if runs else None
        if run is None or run["failures"] or still or left:
            print("density smoke: FAILED (no echo, or something was left)", file=sys.stderr)
            return 1
        print("density smoke: kiln answered the UDP echo jailed, and nothing was left")
    if still:
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
