"""Runs kiln on the test guest and prints start-up and memory figures.

Timestamps come from kiln's own JSON log lines, whose ts_ns is
CLOCK_MONOTONIC, the clock Python's time.monotonic_ns() reads: exec is taken
just before the spawn, so figures include fork+exec.
"""
import json
import re
import resource
import statistics
import subprocess
import sys
import time

kiln, guest, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = [kiln, "--no-api", "--no-seccomp", "--kernel", guest, "--mem", "128", "--boot-timer", "--level", "info"]


def run(extra):
    start = time.monotonic_ns()
    process = subprocess.Popen(base + extra, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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


first, ready, walls, cpu, user, setup = [], [], [], [], [], []
for _ in range(runs):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, wall, events, out = run([])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0 or b"guest: ready" not in out:
        sys.exit(f"kiln failed (exit {code})")
    first.append(events["first_run"])
    ready.append(events["ready"])
    walls.append(wall)
    cpu.append(((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000)
    user.append(events.get("cpu_at_ready", float("nan")))
    setup.append(events.get("cpu_at_first_run", float("nan")))

print(f"kiln start-up on the lane-1 test guest, {runs} runs, median (min-max):")
print(f"  exec -> first KVM_RUN      {median(first):7.2f} ms  ({min(first):.2f}-{max(first):.2f})")
print(f"  exec -> guest ready line   {median(ready):7.2f} ms  ({min(ready):.2f}-{max(ready):.2f})")
print(f"  whole run (exec -> exit)   {median(walls):7.2f} ms  ({min(walls):.2f}-{max(walls):.2f})")
print(f"  kiln CPU time, whole run   {median(cpu):7.2f} ms (rusage, tick-granular)")
print(f"  kiln CPU to first KVM_RUN  {median(setup):7.2f} ms (CLOCK_PROCESS_CPUTIME_ID: VMM set-up incl. KVM ioctls)")
print(f"  kiln CPU to ready          {median(user):7.2f} ms (the same clock; guest time on the vCPU thread included)")

# Memory: keep the guest alive after "ready" (cmdline `noreset` halts it with
# interrupts off, which kiln ends after its halt check), and read kiln's
# /proc status meanwhile. Guest RAM is a shared anonymous mapping, so it is
# RssShmem; kiln's own memory is RssAnon + RssFile.
process = subprocess.Popen(base + ["--cmdline", "noreset"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
status = {}
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    time.sleep(0.3)
    try:
        with open(f"/proc/{process.pid}/status") as handle:
            status = {k: v.strip() for k, v in (line.split(":", 1) for line in handle)}
        break
    except FileNotFoundError:
        break
process.communicate(timeout=30)


def kib(name):
    return int(status.get(name, "0 kB").split()[0])


print("kiln memory with the guest parked after ready (128 MiB guest):")
print(f"  VmRSS {kib('VmRSS')} KiB = RssAnon {kib('RssAnon')} + RssFile {kib('RssFile')} + RssShmem {kib('RssShmem')} (guest-touched)")
print(f"  VMM overhead (RSS minus guest-touched memory): {(kib('VmRSS') - kib('RssShmem')) / 1024:.2f} MiB")
