"""Where kiln's time and memory go, shown rather than guessed:

- CPU: `valgrind --tool=callgrind` instruction counts (stable on a noisy
  host) of a whole kiln run on the test guest, and of kiln-jailer up to its
  exec; the functions with the most instructions, inclusive and self.
  Valgrind 3.19 cannot read the Swift toolchain's debug info, so it profiles a
  copy with the debug sections stripped (symbols kept).
- Wall time: `strace -f -c -w` of kiln's run: which system calls the wall
  time to the first KVM_RUN is spent in.
- Memory: kiln's largest mappings, by resident and private KiB, guest parked.
- Launches: where an overlapped launch batch's CPU goes inside the instances'
  processes, step by step (launchprofile: `perf record -a -g` of the batch),
  where perf works.
"""
import collections
import os
import re
import shutil
import subprocess
import time

import launchprofile
import measure

TOP = 12
# callgrind_annotate's rows: "1,234 ( 5.67%)  file:function [object]".
ROW = re.compile(r"^\s*([0-9,]+)\s+\(\s*[0-9.]+%\)\s+(.*)$")
# strace -T lines: "[pid N] ioctl(5, KVM_CREATE_VM, 0) = 6 <0.000123>".
CALL = re.compile(r"(?:\[pid\s+\d+\]\s+)?(\w+)\((?:\d+,\s*)?([A-Z][A-Z0-9_]*)?.*<([0-9.]+)>$")


def demangled(names):
    tool = shutil.which("swift-demangle")
    if not tool or not names:
        return names
    result = subprocess.run([tool, "--simplified"], input="\n".join(names), capture_output=True, text=True)
    lines = result.stdout.splitlines()
    return lines if len(lines) == len(names) else names


def callgrind(command, scratch, label, trace_children=False):
    output = os.path.join(scratch, f"callgrind.{label}")
    run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}",
                          f"--trace-children={'yes' if trace_children else 'no'}"] + command,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    if not os.path.exists(output):
        return {"error": (run.stderr or run.stdout)[-400:]}
    figures = {"command": " ".join(command), "exit_status": run.returncode}
    for inclusive in (True, False):
        annotated = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", output],
                                   capture_output=True, text=True).stdout
        rows = []
        for line in annotated.splitlines():
            match = ROW.match(line)
            if match:
                count = int(match.group(1).replace(",", ""))
                name = match.group(2).split(" [")[0].removeprefix("???:")
                if "PROGRAM TOTALS" in line:
                    figures["total_instructions"] = count
                elif "(below main)" not in name:
                    rows.append((count, name))
        rows = rows[:TOP]
        names = demangled([name for _, name in rows])
        figures["inclusive" if inclusive else "self"] = [
            {"instructions": count, "function": name[:160]} for (count, _), name in zip(rows, names)]
    return figures


def strace_summary(command, scratch):
    """Wall time per system call (ioctls by request name) of one kiln run,
    from `strace -f -T`; KVM_RUN is left out: it is the guest running."""
    output = os.path.join(scratch, "strace.log")
    subprocess.run(["strace", "-f", "-T", "-o", output] + command, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=120)
    totals, counts = collections.Counter(), collections.Counter()
    if os.path.exists(output):
        for line in open(output):
            match = CALL.search(line.strip())
            if not match:
                continue
            name = match.group(1) if match.group(1) != "ioctl" or not match.group(2) else match.group(2)
            if name in ("KVM_RUN", "epoll_wait", "epoll_pwait", "futex", "wait4", "nanosleep", "clock_nanosleep"):
                continue
            totals[name] += float(match.group(3))
            counts[name] += 1
    return [{"call": name, "seconds": seconds, "calls": counts[name]} for name, seconds in totals.most_common(TOP)]


def memory_map(kiln, guest):
    process = subprocess.Popen([kiln, "--no-api", "--no-seccomp", "--kernel", guest, "--mem", "128",
                                "--cmdline", "noreset"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    rows = []
    for header, fields in measure.mappings(process.pid):
        parts = header.split()
        name = parts[5] if len(parts) > 5 else "[anonymous]"
        if fields.get("Size") == 128 * 1024:
            name = "guest RAM (128 MiB mapping)"
        rows.append({"mapping": f"{parts[1]} {name}", "size_kib": fields.get("Size", 0), "rss_kib": fields.get("Rss", 0),
                     "private_kib": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)})
    page_tables = measure.status_kib(process.pid, "VmPTE")
    process.wait(timeout=30)
    rows.sort(key=lambda row: -row["rss_kib"])
    return {"mappings": rows[:TOP], "page_tables_kib": page_tables}


def launch_breakdown(launch, scratch, count=50):
    """`launch(count, profile)` runs one launch batch under `perf record`;
    the instances' CPU by step (launchprofile)."""
    profile = os.path.join(scratch, "launches.perf")
    rate = launch(count, profile)
    if not os.path.exists(profile) or not os.path.exists(profile + ".pids"):
        return {"error": "perf record wrote nothing (perf_event_paranoid, or no perf events here)"}
    with open(profile + ".pids") as handle:
        pids = [pid for pid in handle.read().split(",") if pid]
    return {"launches": rate["reached_first_instruction"], "per_second_per_core": rate["per_second_per_core"],
            "cpu_ms_per_launch_by_step": launchprofile.breakdown(profile, pids, rate["reached_first_instruction"])}


def all_breakdowns(kiln, options, scratch, launch=None):
    stripped = {}
    for name in ("kiln", "kiln-jailer"):
        stripped[name] = os.path.join(scratch, f"{name}-symbols-only")
        shutil.copy2(os.path.join(options.bin, name), stripped[name])
        subprocess.run(["strip", "--strip-debug", stripped[name]], check=True)
    # The guest boots, prints nothing and resets: kiln exits at once (a
    # halting guest would keep it waiting for its halted-guest check).
    run_command = ["--no-api", "--no-seccomp", "--kernel", options.guest, "--mem", "128", "--cmdline", "quiet"]
    found = {}
    if shutil.which("valgrind"):
        found["kiln_run_instructions"] = callgrind([stripped["kiln"]] + run_command, scratch, "kiln")
        base = os.path.join(scratch, "breakdown-jails")
        os.makedirs(base, mode=0o755, exist_ok=True)
        jail = ["--id", "kd-kiln-breakdown", "--exec-file", kiln.kiln, "--chroot-base-dir", base]
        found["jailer_instructions"] = callgrind(
            [stripped["kiln-jailer"]] + jail + ["--uid", str(64299), "--gid", str(64299),
                                                "--parent-cgroup", kiln.parent_cgroup,
                                                "--jail-file", f"{options.guest}:guest.elf", "--",
                                                "--no-api", "--kernel", "/guest.elf", "--cmdline", "quiet"],
            scratch, "jailer")
        subprocess.run([kiln.jailer, "cleanup"] + jail + ["--parent-cgroup", kiln.parent_cgroup],
                       capture_output=True)
    else:
        found["kiln_run_instructions"] = {"error": "valgrind is not installed"}
    if shutil.which("strace"):
        found["kiln_run_syscall_wall"] = strace_summary([kiln.kiln] + run_command, scratch)
    found["kiln_memory"] = memory_map(kiln.kiln, options.guest)
    if launch and shutil.which("perf"):
        found["launch_profile"] = launch_breakdown(launch, scratch)
    return found
