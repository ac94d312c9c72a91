"""The run's outputs: the Markdown table (and ratios) on stdout, the chart."""
import math
import os
import platform

import launchprofile
import launchrate

ORDER = ("kiln", "runc", "qemu-microvm", "runsc")


def host_facts(options):
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    kvm = "kvm-pvm (paravirtual nested KVM)" if os.path.isdir("/sys/module/kvm_pvm") else "kvm"
    return {"cores": os.cpu_count(), "kernel": platform.release(), "kvm": kvm, "load_average_at_end": load,
            "parallel": options.parallel, "ns": options.ns}


def cell(entry, field, digits=2):
    value = entry.get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    low, high, p90 = entry.get(f"{field}_min"), entry.get(f"{field}_max"), entry.get(f"{field}_p90")
    text = f"{value:.{digits}f}"
    if low is not None and len(entry.get("repeats", [])) > 1:
        text += f" (p90 {p90:.{digits}f}, {low:.{digits}f}–{high:.{digits}f})"
    return text


def markdown(document, options):
    results = [entry for entry in document["results"] if entry.get("n") is not None and "ready_seconds" in entry]
    results.sort(key=lambda entry: (entry["n"], ORDER.index(entry["system"]) if entry["system"] in ORDER else 9))
    service = ("busybox httpd services (Debian's kernel in the VMs), ready on an HTTP GET" if options.linux
               else "UDP echo services")
    lines = [f"Density: N {service}, {options.parallel} launches in flight, every system in one run; "
             "median over repeats (p90, min–max). Host memory: MemTotal − MemAvailable after all are ready, "
             "minus before (other processes on this shared host move it); PSS: the instances' own processes.", "",
             "CPU: every thread of the instances' processes and their KVM kernel threads (the in-kernel PIT's); "
             "idle: CPU-ms per second per instance while all are ready and nobody talks to them (first repeat).", "",
             "| system | N | repeats | all ready (s) | host memory (MiB) | per instance (MiB) | PSS (MiB) "
             "| PSS per instance (MiB) | CPU (s) | idle (CPU-ms/s each) | failures |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in results:
        lines.append(f"| {entry['system']} | {entry['n']} | {len(entry.get('repeats', []))} | "
                     f"{cell(entry, 'ready_seconds')} | {cell(entry, 'host_memory_mib', 0)} | "
                     f"{cell(entry, 'memory_per_instance_mib')} | {cell(entry, 'pss_mib', 0)} | "
                     f"{cell(entry, 'pss_per_instance_mib')} | {cell(entry, 'cpu_seconds')} | "
                     f"{cell(entry, 'idle_cpu_ms_per_second_per_instance', 3)} | {entry['failures']} |")
    for entry in document["results"]:
        if not entry.get("runnable", True) or (entry.get("note") and "ready_seconds" not in entry):
            lines.append(f"| {entry['system']} | {entry.get('n') or '–'} | – | not run: {entry['note']} "
                         "| | | | | | | |")
    by_key = {(entry["system"], entry["n"]): entry for entry in results}
    ratio_lines = []
    for n in sorted({entry["n"] for entry in results}):
        kiln = by_key.get(("kiln", n))
        if not kiln:
            continue
        for other in ("runc", "qemu-microvm", "runsc"):
            theirs = by_key.get((other, n))
            if not theirs:
                continue
            ratio = lambda field: (f"{kiln[field] / theirs[field]:.2f}×"
                                   if theirs.get(field) and kiln.get(field) is not None else "–")
            ratio_lines.append(f"| {n} | kiln / {other} | {ratio('ready_seconds')} | {ratio('host_memory_mib')} | "
                               f"{ratio('pss_mib')} | {ratio('cpu_seconds')} |")
    if ratio_lines:
        lines += ["", "Ratios (kiln's figure over the other's; below 1 is kiln better):", "",
                  "| N | ratio | all ready | host memory | PSS | CPU |", "|---|---|---|---|---|---|"] + ratio_lines
    single = document.get("single") or {}
    if single:
        lines += ["", "One microVM (kiln):", "", "| figure | value | goal / reference |", "|---|---|---|"]
        goals = {"jailer_ms": "< 3 ms", "kiln_startup_ms": "Firecracker ≤ 8 CPU-ms",
                 "first_kvm_run_ms": "", "vmm_overhead_mib": "≤ 3 MiB (Firecracker ≤ 5)",
                 "vmm_private_mib": "≤ 1 MiB", "launch_rate_per_core": "≥ 50 (Firecracker 5)",
                 "launch_cpu_ms": "", "launch_rate_per_core_for_launch_cpu": "≥ 50, host otherwise idle"}
        for name, goal in goals.items():
            if name in single:
                lines.append(f"| {name} | {single[name]:.2f} | {goal} |")
        if single.get("launch_rate"):
            lines += [""] + launchrate.lines(single["launch_rate"])
    for system_entry in results:
        reliability = next((run.get("reliability") for run in system_entry.get("repeats", [])
                            if run.get("reliability")), None)
        if reliability:
            kill = reliability["kill9"]
            worst = max((sample["ms"] for sample in reliability["api_sample"]), default=float("nan"))
            lines += ["", f"Reliability at N={system_entry['n']} ({system_entry['system']}): API of "
                      f"{reliability['api_sampled']} random instances answered within 100 ms: "
                      f"{reliability['api_within_100ms']} (slowest {worst:.1f} ms); kill -9 of instance "
                      f"{kill.get('killed')}: {len(kill.get('others_unanswered', []))} of {kill.get('others_checked')} "
                      f"others stopped answering; kiln-jailer cleanup exit {kill.get('cleanup_status')}, jail left: "
                      f"{kill.get('jail_left')}, cgroups left: {kill.get('cgroups_left')}."]
    lines += breakdown_lines(document.get("breakdowns") or {}, results,
                             "page served" if document.get("guest") == "linux" else "echo answered")
    left = document.get("leftovers", {})
    lines += ["", f"Left on the host after the run: {len(left.get('found_after_run', []))} items found"
              f"{' (removed by the sweep)' if left.get('found_after_run') else ''}; after the sweep: "
              f"{len(left.get('left_after_sweep', []))}."]
    for kind, name in left.get("found_after_run", [])[:20]:
        lines.append(f"  - {kind}: {name}")
    return "\n".join(lines)


def breakdown_lines(breakdowns, results, ready_as="echo answered"):
    lines = []
    # A repeat whose instances never started has no per-instance figures.
    kiln_runs = [run for entry in results if entry["system"] == "kiln" for run in entry.get("repeats", [])
                 if "vmm_private_mib" in run]
    if kiln_runs:
        largest = max(kiln_runs, key=lambda run: run["n"])
        lines += ["", f"Where kiln's time goes at N={largest['n']} (median per instance, ms): jailer start -> kiln "
                  f"main {largest['jailer_ms']['median']:.1f}; jailer start -> first KVM_RUN "
                  f"{largest['launch_to_first_kvm_run_ms']['median']:.1f}; jailer start -> {ready_as} "
                  f"{largest['instance_ready_ms']['median']:.1f}. CPU by thread (s, all instances): "
                  + ", ".join(f"{name} {seconds:.2f}" for name, seconds in largest["cpu_seconds_by_thread"].items())
                  + f". Private memory per instance outside guest RAM {largest['vmm_private_mib']['median']:.2f} MiB, "
                  f"guest-touched RAM {largest['guest_touched_mib']['median']:.2f} MiB."]
    for key, title in (("kiln_run_instructions", "kiln, whole run on the test guest"),
                       ("jailer_instructions", "kiln-jailer up to its exec")):
        figures = breakdowns.get(key)
        if not figures:
            continue
        if "error" in figures:
            lines += ["", f"callgrind, {title}: failed: {figures['error']}"]
            continue
        total = figures.get("total_instructions", 0)
        lines += ["", f"callgrind, {title}: {total:,} instructions; most inclusive / most self:"]
        for row in figures.get("inclusive", [])[:8]:
            lines.append(f"  - {row['instructions'] / total * 100:5.1f}% incl  {row['function'][:110]}")
        for row in figures.get("self", [])[:6]:
            lines.append(f"  - {row['instructions'] / total * 100:5.1f}% self  {row['function'][:110]}")
    calls = breakdowns.get("kiln_run_syscall_wall")
    if calls:
        lines += ["", "strace -f -T, kiln's whole run: wall time in system calls (ioctls by request; KVM_RUN, "
                  "epoll and futex waits left out):"]
        lines += [f"  - {row['call']}: {row['seconds'] * 1000:.1f} ms in {row['calls']} calls" for row in calls[:6]]
    launches = breakdowns.get("launch_profile")
    if launches:
        if "error" in launches:
            lines += ["", f"perf, an overlapped launch batch: failed: {launches['error']}"]
        else:
            lines += ["", f"perf record -a -g of {launches['launches']} overlapped launches: each instance's CPU "
                      "by step, per launch:"]
            lines += launchprofile.lines(launches["cpu_ms_per_launch_by_step"])
    memory = breakdowns.get("kiln_memory")
    if memory:
        lines += ["", f"kiln's largest mappings, guest parked (KiB; page tables {memory['page_tables_kib']}):"]
        lines += [f"  - {row['mapping']}: rss {row['rss_kib']}, private {row['private_kib']}"
                  for row in memory["mappings"][:6]]
    return lines


def chart(document, path):
    """Time to all ready and host memory against N, one line per system."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plot

    results = [entry for entry in document["results"] if entry.get("n") is not None and "ready_seconds" in entry]
    figure, (left, right) = plot.subplots(1, 2, figsize=(11, 4.5))
    for system in ORDER:
        points = sorted((entry for entry in results if entry["system"] == system), key=lambda entry: entry["n"])
        if not points:
            continue
        ns = [entry["n"] for entry in points]
        left.errorbar(ns, [entry["ready_seconds"] for entry in points],
                      yerr=[[entry["ready_seconds"] - entry["ready_seconds_min"] for entry in points],
                            [entry["ready_seconds_max"] - entry["ready_seconds"] for entry in points]],
                      marker="o", capsize=3, label=system)
        line = right.plot(ns, [entry["host_memory_mib"] for entry in points], marker="o", label=f"{system}: host")
        right.plot(ns, [entry["pss_mib"] for entry in points], marker="x", linestyle="--",
                   color=line[0].get_color(), label=f"{system}: PSS")
    for axis, title, unit in ((left, "time until all N answer", "seconds"),
                              (right, "host memory with N running", "MiB")):
        axis.set_xscale("log")
        axis.set_xlabel("N (services)")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    host = document.get("host", {})
    figure.suptitle(f"Density on {host.get('cores')} cores ({host.get('kvm')}), "
                    f"{host.get('parallel')} launches in flight")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    return os.path.abspath(path)
