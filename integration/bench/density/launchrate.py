#!/usr/bin/python3
"""The launch rate: microVMs per second per host core from kiln-jailer's start
to the guest's first instruction (kiln's "first KVM_RUN" log line), launches
overlapped as an orchestrator would (`--parallel` in flight), and where the
batch's wall time and CPU go.

    launchrate.py [--count 50] [--parallel 8] [--rounds 3] [--bin DIR ...]
                  [--wait inotify|poll ...] [--jails disk|tmpfs ...]
                  [--boot-args ARGS ...] [--perf FILE] [--json FILE]

Each repeatable flag given more than once makes variants (every
combination); rounds alternate between them, A B ... then ... B A, on the
same host in one run, and the table gives each one's median and its ratio to
the first: these hosts are too noisy for figures taken minutes apart.

The accounting covers the whole batch window (first spawn to last first
KVM_RUN) on every core: each task's CPU from /proc/*/task/*/schedstat (exact
nanoseconds) before and after, grouped as the harness itself, the instances
up to their first KVM_RUN (kiln logs its process CPU then, which counts the
jailer too: the CPU clock survives exec), the instances after it (the guests
booting on), their KVM kernel threads, kernel threads (kworkers, RCU, softirq),
other processes (other work on a shared host), and what /proc/stat saw busy
that no task still alive accounts for (processes that ended in the window).
"""
import argparse
import concurrent.futures
import ctypes
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import measure  # noqa: E402
import systems  # noqa: E402

# inotify(7): IN_MODIFY, and inotify_init1's flags (the O_ values).
IN_MODIFY = 0x2
_libc = ctypes.CDLL(None, use_errno=True)
FIRST_RUN = re.compile(r"first KVM_RUN ([0-9.]+) ms since kiln start, VMM CPU ([0-9.]+) ms")
JAILER = re.compile(r"jailer overhead: ([0-9.]+) ms wall .*?, ([0-9.]+) ms CPU")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UNCOUNTED = "busy in no task counted (processes that ended; ± the snapshots' edges)"


def wait_for_line(path, needle, pid, deadline, poll_seconds=None):
    """The first line of the file at `path` that holds `needle` (bytes), or
    None when process `pid` ended or `deadline` (monotonic) passed first.

    Blocks on inotify(7) and the process's pidfd, as an orchestrator waits:
    no CPU while nothing happens. `poll_seconds` instead re-reads the file
    at that interval (the harness's old way, kept to measure what it cost)."""
    notify = -1
    if poll_seconds is None:
        notify = _libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if notify < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
    try:
        if notify >= 0 and _libc.inotify_add_watch(notify, path.encode(), IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
        process = os.pidfd_open(pid)
        try:
            with open(path, "rb") as handle:
                pending, ended = b"", False
                while True:
                    pending += handle.read()
                    lines = pending.split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        if needle in line:
                            return line
                    remaining = deadline - time.monotonic()
                    if ended or remaining <= 0:
                        return None
                    if notify < 0:
                        readable, _, _ = select.select([process], [], [], min(poll_seconds, remaining))
                    else:
                        readable, _, _ = select.select([notify, process], [], [], remaining)
                        if notify in readable:
                            os.read(notify, 4096)
                    # One more read after the end: the last lines it wrote.
                    ended = process in readable
        finally:
            os.close(process)
    finally:
        if notify >= 0:
            os.close(notify)


def task_times():
    """{tid: (pid, name, ns on CPU, kernel thread)} of every task on the host."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                    ns = int(handle.read().split()[0])
                with open(f"/proc/{pid}/task/{tid}/stat") as handle:
                    stat = handle.read()
            except (OSError, ValueError, IndexError):
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            # PF_KTHREAD (0x00200000) in the flags field (proc(5), field 9).
            kernel = bool(int(fields[6]) & 0x00200000)
            found[int(tid)] = (int(pid), name, ns, kernel)
    return found


def busy_ticks():
    """(busy, all) clock ticks of every CPU from /proc/stat's `cpu` line
    (idle and iowait are not busy)."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:]]
    return sum(values[:8]) - values[3] - values[4], sum(values[:8])


def family(name):
    """A kernel thread's kind: `kworker/1:2-events` -> `kworker`, `ksoftirqd/0` -> `ksoftirqd`."""
    return re.split(r"[/:-]", name, 1)[0].rstrip("0123456789_") or name


def log_figures(instance):
    """From one kiln's log: {ready_ns, cpu_at_first_run_ms, jailer_wall_ms,
    jailer_cpu_ms, kiln_to_first_run_ms, kiln_start_ns}; missing keys when a line is."""
    figures = {}
    try:
        with open(instance.log) as handle:
            lines = handle.readlines()
    except OSError:
        return figures
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        text = record.get("msg", "")
        match = JAILER.search(text)
        if match:
            figures["jailer_wall_ms"], figures["jailer_cpu_ms"] = float(match.group(1)), float(match.group(2))
            figures["kiln_start_ns"] = record["ts_ns"]
        match = FIRST_RUN.search(text)
        if match and "ready_ns" not in figures:
            figures["ready_ns"] = record["ts_ns"]
            figures["kiln_to_first_run_ms"] = float(match.group(1))
            figures["cpu_at_first_run_ms"] = float(match.group(2))
    return figures


def main_thread_schedstat(pid):
    """(ns on CPU, ns waiting for a CPU) of the process's main thread."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as handle:
            run, wait, _ = handle.read().split()
        return int(run), int(wait)
    except (OSError, ValueError):
        return None


def account(before, after, ticks_before, ticks_after, window_ns, instances, harness_pid):
    """CPU-ms over the window by where it went (see the module's comment)."""
    instance_pids = {instance.pid for instance in instances if instance.pid}
    kvm_threads = re.compile(r"^kvm-.*/(\d+)$")
    groups = {"harness": 0, "instances": 0, "instances' KVM kernel threads": 0}
    kernel, others = {}, {}
    for tid, (pid, name, ns, is_kernel) in after.items():
        spent = ns - (before[tid][2] if tid in before and before[tid][0] == pid else 0)
        if spent <= 0:
            continue
        match = kvm_threads.match(name)
        if pid == harness_pid:
            groups["harness"] += spent
        elif pid in instance_pids:
            groups["instances"] += spent
        elif match and int(match.group(1)) in instance_pids:
            groups["instances' KVM kernel threads"] += spent
        elif is_kernel:
            kernel[family(name)] = kernel.get(family(name), 0) + spent
        else:
            others[name] = others.get(name, 0) + spent
    to_ms = 1e-6
    figures = {name: ns * to_ms for name, ns in groups.items()}
    figures["kernel threads"] = {name: ns * to_ms for name, ns in sorted(kernel.items(), key=lambda item: -item[1])}
    figures["other processes"] = {name: ns * to_ms for name, ns in sorted(others.items(), key=lambda item: -item[1])}
    busy = (ticks_after[0] - ticks_before[0]) * 1000 / CLOCK_TICKS
    total = (ticks_after[1] - ticks_before[1]) * 1000 / CLOCK_TICKS
    attributed = sum(groups.values()) * to_ms + sum(kernel.values()) * to_ms + sum(others.values()) * to_ms
    figures["busy (/proc/stat)"] = busy
    figures["all cores (/proc/stat)"] = total
    figures["window x cores"] = window_ns * to_ms * os.cpu_count()
    figures[UNCOUNTED] = busy - attributed
    return figures


def jails_on_tmpfs(kiln):
    """Moves `kiln`'s jails onto a tmpfs of their own, inside the run's
    scratch (as Kata puts Firecracker's jails under /run): the kiln binary and
    the guest are copied there once, so that each jail still hard-links them
    (a link cannot cross file systems). Returns the mount point; unmount
    it after the last teardown."""
    folder = os.path.join(kiln.scratch, "tmpfs")
    os.makedirs(folder, mode=0o755, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755,size=256m", "kiln-density-jails", folder], check=True)
    for name in ("kiln", "guest"):
        staged = os.path.join(folder, os.path.basename(getattr(kiln, name)))
        shutil.copy2(getattr(kiln, name), staged)
        setattr(kiln, name, staged)
    kiln.base = os.path.join(folder, "jails")
    return folder


def set_boot_args(system, count, boot_args):
    """Gives the prepared instances' guests other boot arguments (their
    config files, before the launches)."""
    for index in range(count):
        path = os.path.join(system.scratch, f"vm-{index}.json")
        with open(path) as handle:
            config = json.load(handle)
        config["boot-source"]["boot_args"] = boot_args
        with open(path, "w") as handle:
            json.dump(config, handle)


def batch(system, instances, parallel, timeout, stopping, wait="inotify", profile=None):
    """Launches `instances`, `parallel` in flight, each waited for until its
    first KVM_RUN; the caller prepares their network before and tears them
    down after. The figures of the batch window. `profile`: a file for
    `perf record -a -g` over the batch, the instances' pids beside it
    (`FILE.pids`, for `perf report --pid`)."""
    poll = 0.002 if wait == "poll" else None
    recorder = None
    if profile:
        # Build ids in the mmap events: a jailed kiln maps `/kiln`, a path
        # that names nothing on the host, and perf's cache may hold other
        # builds under that name.
        recorder = subprocess.Popen(["perf", "record", "-q", "--buildid-mmap", "-e", "cpu-clock", "-F", "999", "-a",
                                     "-g", "-o", profile],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf's own start-up, outside the window

    def one(instance):
        if stopping.is_set():
            instance.failure = "interrupted"
            return
        instance.launched_ns = time.monotonic_ns()
        system.launch(instance)
        line = wait_for_line(instance.log, b"first KVM_RUN", instance.pid, time.monotonic() + timeout, poll)
        if line is None:
            instance.failure = "no first KVM_RUN"

    harness = os.getpid()
    # /proc/stat at the window's edges; the task snapshots just outside it
    # (each takes tens of milliseconds: what ran meanwhile counts too).
    tasks_before = task_times()
    ticks_before = busy_ticks()
    # The harness's own CPU, read inside the window: the task snapshots
    # around it cost the harness milliseconds that are not launch work.
    harness_before, start = time.process_time_ns(), time.monotonic_ns()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, instances))
    harness_cpu, end = time.process_time_ns() - harness_before, time.monotonic_ns()
    ticks_after = busy_ticks()
    snapshot_before = time.process_time_ns()
    tasks_after = task_times()
    snapshot_cpu = time.process_time_ns() - snapshot_before
    if recorder:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
        for binary in (system.kiln, system.jailer):
            subprocess.run(["perf", "buildid-cache", "--add", binary], capture_output=True)
        with open(profile + ".pids", "w") as handle:
            handle.write(",".join(str(instance.pid) for instance in instances if instance.pid))
    per_instance = [dict(log_figures(instance), launched_ns=instance.launched_ns, pid=instance.pid)
                    for instance in instances]
    done = [figures for figures in per_instance if "ready_ns" in figures]
    last = max((figures["ready_ns"] for figures in done), default=end)
    seconds = (last - start) / 1e9
    cpu = account(tasks_before, tasks_after, ticks_before, ticks_after, end - start, instances, harness)
    # The pool's threads ended before the snapshot: their CPU is the harness's,
    # not the unattributed rest's.
    ended_threads = (harness_cpu + snapshot_cpu) / 1e6 - cpu["harness"]
    cpu[UNCOUNTED] -= ended_threads
    cpu["harness"] = harness_cpu / 1e6
    cpu["harness's task snapshot (measuring)"] = snapshot_cpu / 1e6
    first_run_cpu = sum(figures["cpu_at_first_run_ms"] for figures in done)
    cpu["instances up to their first KVM_RUN"] = first_run_cpu
    cpu["instances after their first KVM_RUN (guest boot)"] = cpu.pop("instances") - first_run_cpu
    wall = {"spawn -> jailer main": [], "jailer main -> kiln main": [], "kiln main -> first KVM_RUN": [],
            "spawn -> first KVM_RUN": [], "of which main thread on CPU": [],
            "of which main thread waiting for a CPU": []}
    cpu_split = {"kiln-jailer main -> exec (its own figure)": [],
                 "spawn, jailer start-up, kiln to first KVM_RUN": []}
    for instance, figures in zip(instances, per_instance):
        if "ready_ns" not in figures or "kiln_start_ns" not in figures:
            continue
        jailer_main = figures["kiln_start_ns"] - figures["jailer_wall_ms"] * 1e6
        wall["spawn -> jailer main"].append((jailer_main - figures["launched_ns"]) / 1e6)
        wall["jailer main -> kiln main"].append(figures["jailer_wall_ms"])
        wall["kiln main -> first KVM_RUN"].append(figures["kiln_to_first_run_ms"])
        wall["spawn -> first KVM_RUN"].append((figures["ready_ns"] - figures["launched_ns"]) / 1e6)
        cpu_split["kiln-jailer main -> exec (its own figure)"].append(figures["jailer_cpu_ms"])
        cpu_split["spawn, jailer start-up, kiln to first KVM_RUN"].append(
            figures["cpu_at_first_run_ms"] - figures["jailer_cpu_ms"])
        times = main_thread_schedstat(instance.pid)
        if times:
            wall["of which main thread on CPU"].append(times[0] / 1e6)
            wall["of which main thread waiting for a CPU"].append(times[1] / 1e6)
    per = max(1, len(done))
    # What the launches themselves cost, apart from the guests' own boot
    # beside them and from other work on a shared host: the rate that CPU
    # allows on a host doing nothing else (derived, not timed). Kernel
    # threads count as the launches' (their kworkers, RCU), though others
    # wake them too.
    own = (cpu["instances up to their first KVM_RUN"] + cpu["harness"] + sum(cpu["kernel threads"].values())) / per
    booting = own + (cpu["instances after their first KVM_RUN (guest boot)"]
                     + cpu["instances' KVM kernel threads"]) / per
    return {"launched": len(instances), "reached_first_instruction": len(done), "seconds": seconds,
            "per_second": len(done) / seconds if done else 0, "cores": os.cpu_count(),
            "per_second_per_core": len(done) / seconds / os.cpu_count() if done else 0,
            "launch_cpu_ms": own, "per_second_per_core_for_launch_cpu": 1000 / own if done else 0,
            "launch_and_guest_boot_cpu_ms": booting,
            "per_second_per_core_for_launch_and_guest_boot_cpu": 1000 / booting if done else 0,
            "cpu_ms_per_launch": {name: (value / per if not isinstance(value, dict)
                                         else {key: ms / per for key, ms in value.items()})
                                  for name, value in cpu.items()},
            "cpu_ms_per_launch_of_instance": {name: measure.spread(values) for name, values in cpu_split.items()},
            "wall_ms_per_launch": {name: measure.spread(values) for name, values in wall.items()},
            "failures": [f"{instance.index}: {instance.failure}" for instance in instances if instance.failure][:10]}


def lines(rate):
    """The batch's figures as report lines."""
    cpu = rate["cpu_ms_per_launch"]
    out = [f"Launch rate: {rate['reached_first_instruction']} of {rate['launched']} microVMs reached their first "
           f"instruction in {rate['seconds']:.3f} s on {rate['cores']} cores: {rate['per_second_per_core']:.1f} "
           f"per second per core. Per launch, CPU-ms over the batch window (all cores "
           f"{cpu['window x cores']:.1f}, busy {cpu['busy (/proc/stat)']:.1f}):"]
    for name in ("instances up to their first KVM_RUN", "instances after their first KVM_RUN (guest boot)",
                 "instances' KVM kernel threads", "harness", UNCOUNTED):
        out.append(f"  - {name}: {cpu[name]:.2f}")
    for group in ("kernel threads", "other processes"):
        top = list(cpu[group].items())[:4]
        out.append(f"  - {group}: {sum(cpu[group].values()):.2f} ("
                   + ", ".join(f"{name} {ms:.2f}" for name, ms in top) + ")")
    out.append(f"  The launches' own CPU (instances to their first KVM_RUN, harness, kernel threads): "
               f"{rate['launch_cpu_ms']:.2f} ms a launch, {rate['per_second_per_core_for_launch_cpu']:.1f} per second "
               f"per core on an otherwise idle host; with the guests' boot and their KVM threads beside them: "
               f"{rate['launch_and_guest_boot_cpu_ms']:.2f} "
               f"ms, {rate['per_second_per_core_for_launch_and_guest_boot_cpu']:.1f} per second per core.")
    out.append("  Of each instance's CPU to its first KVM_RUN (median): "
               + "; ".join(f"{name} {value['median']:.2f}"
                           for name, value in rate["cpu_ms_per_launch_of_instance"].items()))
    out.append("  Wall per launch (median ms): "
               + "; ".join(f"{name} {value['median']:.1f}" for name, value in rate["wall_ms_per_launch"].items()))
    return out


def label(variant):
    folder, wait, boot, place = variant
    return f"{os.path.basename(folder)} ({wait}, jails on {place}" + (f", guest: {boot}" if boot else "") + ")"


def main(argv):
    import run  # the harness's lock, teardown and clean-up
    parser = argparse.ArgumentParser(description="kiln launch rate, side by side (see this file's comment)")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="batches per variant, alternated")
    parser.add_argument("--bin", action="append", help="folder with kiln and kiln-jailer (repeat to compare)")
    parser.add_argument("--wait", action="append", choices=("inotify", "poll"),
                        help="how the harness waits for the log line (repeat to compare)")
    parser.add_argument("--jails", action="append", choices=("disk", "tmpfs"),
                        help="where the jails live: the scratch folder's file system, or a tmpfs (repeat to compare)")
    parser.add_argument("--boot-args", action="append",
                        help="the guests' boot arguments instead of the density workload's (repeat to compare)")
    parser.add_argument("--guest", default=os.path.join(run.ROOT, "integration", "out", "kiln-test-guest.elf"))
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of rest after each teardown")
    parser.add_argument("--json", help="every batch's figures")
    parser.add_argument("--perf", help="perf record -a -g of each batch to FILE.<variant>.<round> (and .pids)")
    options = parser.parse_args(argv)
    if not 1 <= options.count <= 1000 or options.parallel < 1 or options.rounds < 1:
        parser.error("--count must be 1-1000, --parallel and --rounds at least 1")
    bins = [os.path.abspath(folder) for folder in options.bin or [os.path.join(run.ROOT, ".build-release", "release")]]
    waits = options.wait or ["inotify"]
    boots = options.boot_args or [None]
    places = options.jails or ["tmpfs"]
    variants = [(folder, wait, boot, place) for folder in bins for wait in waits for boot in boots for place in places]
    if os.geteuid() != 0:
        print("launchrate: needs root (jails, TAPs, cgroups)", file=sys.stderr)
        return 1
    lock = run.hold_host()  # noqa: F841 - held until this process exits
    scratch = run.new_scratch()
    results = {variant: [] for variant in variants}
    try:
        kilns = {}
        for number, (folder, wait, boot, place) in enumerate(variants):
            kiln = systems.Kiln(run.ROOT, os.path.join(scratch, f"v{number}"), options.guest)
            kiln.kiln, kiln.jailer = os.path.join(folder, "kiln"), os.path.join(folder, "kiln-jailer")
            ok, note = kiln.available()
            if not ok:
                print(f"launchrate: {folder}: {note}", file=sys.stderr)
                return 1
            kilns[(folder, wait, boot, place)] = kiln
            if place == "tmpfs":
                run.mounted.append(jails_on_tmpfs(kiln))
        for round_number in range(options.rounds):
            order = variants if round_number % 2 == 0 else list(reversed(variants))
            for variant in order:
                profile = f"{options.perf}.{variants.index(variant)}.{round_number}" if options.perf else None
                rate = run.launch_rate(kilns[variant], options.count, options, wait=variant[1], profile=profile,
                                       boot_args=variant[2])
                results[variant].append(rate)
                print(f"launchrate: round {round_number + 1} {label(variant)}: "
                      f"{rate['per_second_per_core']:.1f}/s per core, {rate['reached_first_instruction']} of "
                      f"{rate['launched']}" + (f"; {rate['failures'][0]}" if rate["failures"] else ""), file=sys.stderr, flush=True)
                time.sleep(options.settle)
    except KeyboardInterrupt:
        print("launchrate: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        left, still = run.release_scratch(scratch)
        if left or still:
            print(f"launchrate: left on the host: {len(left)} found, {len(still)} after the sweep", file=sys.stderr)
    first = statistics.median(rate["per_second_per_core"] for rate in results[variants[0]]) or float("nan")
    print("| variant | launches/s per core (median, min-max) | ratio to the first | CPU-ms per launch: "
          "instance to first KVM_RUN / guest boot after / harness / kernel threads / busy total |")
    print("|---|---|---|---|")
    for variant in variants:
        rates = [rate["per_second_per_core"] for rate in results[variant]]
        cpu = lambda name: statistics.median(rate["cpu_ms_per_launch"][name] for rate in results[variant])
        kernel = statistics.median(sum(rate["cpu_ms_per_launch"]["kernel threads"].values())
                                   for rate in results[variant])
        median = statistics.median(rates)
        print(f"| {label(variant)} | {median:.1f} ({min(rates):.1f}-{max(rates):.1f}) | "
              f"{median / first:.2f} | {cpu('instances up to their first KVM_RUN'):.1f} / "
              f"{cpu('instances after their first KVM_RUN (guest boot)'):.1f} / {cpu('harness'):.1f} / "
              f"{kernel:.1f} / {cpu('busy (/proc/stat)'):.1f} |")
    for variant in variants:
        print(f"\n{label(variant)}, last round:")
        print("\n".join(lines(results[variant][-1])))
    if options.json:
        with open(options.json, "w") as handle:
            json.dump({label(variant): rates for variant, rates in results.items()}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
