"""Runs kiln on the test guest and prints start-up and memory figures.

Timestamps come from kiln's own JSON log lines, whose ts_ns is
CLOCK_MONOTONIC, the clock Python's time.monotonic_ns() reads: exec is taken
just before the spawn, so figures include fork+exec.

Importable: the density benchmark (density/) takes its single-microVM figures
from `startup_figures` and `parked_memory`.
"""
import json
import re
import resource
import statistics
import subprocess
import sys
import time


def base_command(kiln, guest):
    return [kiln, "--no-api", "--no-seccomp", "--kernel", guest, "--mem", "128", "--boot-timer", "--level", "info"]


def run(kiln, guest, extra):
    start = time.monotonic_ns()
    process = subprocess.Popen(base_command(kiln, guest) + extra, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    out, err = process.communicate(timeout=30)
    wall = (time.monotonic_ns() - start) / 1e6
    events = {}
    for line in err.decode().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        at = (record["ts_ns"] - start) / 1e6
        text = record["msg"]
        if "first KVM_RUN" in text:
            events["first_run"] = at
            cpu_match = re.search(r"VMM CPU ([0-9.]+) ms", text)
            if cpu_match:
                events["cpu_at_first_run"] = float(cpu_match.group(1))
        elif text.startswith("boot-timer"):
            events["ready"] = at
            cpu_match = re.search(r"VMM CPU ([0-9.]+) ms", text)
            if cpu_match:
                events["cpu_at_ready"] = float(cpu_match.group(1))
    return process.returncode, wall, events, out


def median(values):
    return statistics.median(values) if values else float("nan")


def startup_figures(kiln, guest, runs):
    """Per run, in ms: exec -> first KVM_RUN and -> ready, the whole run's
    wall and CPU time, kiln's CPU at ready and at its first KVM_RUN."""
    figures = {"first_run": [], "ready": [], "wall": [], "cpu": [], "cpu_at_ready": [], "cpu_at_first_run": []}
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        code, wall, events, out = run(kiln, guest, [])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if code != 0 or b"guest: ready" not in out:
            raise RuntimeError(f"kiln failed (exit {code})")
        figures["first_run"].append(events["first_run"])
        figures["ready"].append(events["ready"])
        figures["wall"].append(wall)
        figures["cpu"].append(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000)
        figures["cpu_at_ready"].append(events.get("cpu_at_ready", float("nan")))
        figures["cpu_at_first_run"].append(events.get("cpu_at_first_run", float("nan")))
    return figures


def parked_memory(kiln, guest):
    """kiln's /proc status (KiB values by name) with the guest parked after
    ready: cmdline `noreset` halts it with interrupts off, which kiln ends
    after its halt check. GuestRss is the guest-touched part of the guest
    RAM mapping; the rest of VmRSS is kiln's own memory."""
    process = subprocess.Popen(base_command(kiln, guest) + ["--cmdline", "noreset"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    status, guest_rss = {}, 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            with open(f"/proc/{process.pid}/status") as handle:
                status = {k: v.strip() for k, v in (line.split(":", 1) for line in handle)}
            break
        except FileNotFoundError:
            break
    guest_rss = guest_mapping_rss(process.pid, 128 * 1024)
    process.communicate(timeout=30)
    figures = {name: int(value.split()[0]) for name, value in status.items() if value.endswith(" kB")}
    figures["GuestRss"] = guest_rss
    return figures


def guest_mapping_rss(pid, size_kib):
    """The Rss (KiB) of the process's guest-RAM mapping, found by its size in
    /proc/PID/smaps: private or shared, whichever kiln uses."""
    rss, in_guest = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name == "Size":
                    in_guest = int(value.split()[0]) == size_kib
                elif name == "Rss" and in_guest:
                    rss += int(value.split()[0])
    except OSError:
        pass
    return rss


def main():
    kiln, guest, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        figures = startup_figures(kiln, guest, runs)
    except RuntimeError as error:
        sys.exit(str(error))
    first, ready, walls = figures["first_run"], figures["ready"], figures["wall"]
    print(f"kiln start-up on the lane-1 test guest, {runs} runs, median (min-max):")
    print(f"  exec -> first KVM_RUN      {median(first):7.2f} ms  ({min(first):.2f}-{max(first):.2f})")
    print(f"  exec -> guest ready line   {median(ready):7.2f} ms  ({min(ready):.2f}-{max(ready):.2f})")
    print(f"  whole run (exec -> exit)   {median(walls):7.2f} ms  ({min(walls):.2f}-{max(walls):.2f})")
    print(f"  kiln CPU time, whole run   {median(figures['cpu']):7.2f} ms (rusage, tick-granular)")
    print(f"  kiln CPU to first KVM_RUN  {median(figures['cpu_at_first_run']):7.2f} ms "
          "(CLOCK_PROCESS_CPUTIME_ID: VMM set-up incl. KVM ioctls)")
    print(f"  kiln CPU to ready          {median(figures['cpu_at_ready']):7.2f} ms "
          "(the same clock; guest time on the vCPU thread included)")

    status = parked_memory(kiln, guest)
    kib = lambda name: status.get(name, 0)
    print("kiln memory with the guest parked after ready (128 MiB guest):")
    print(f"  VmRSS {kib('VmRSS')} KiB = RssAnon {kib('RssAnon')} + RssFile {kib('RssFile')} + RssShmem "
          f"{kib('RssShmem')}; guest-touched RAM {kib('GuestRss')} KiB")
    print(f"  VMM overhead (RSS minus guest-touched memory): {(kib('VmRSS') - kib('GuestRss')) / 1024:.2f} MiB")


if __name__ == "__main__":
    main()
