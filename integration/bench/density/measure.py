"""Host and process figures, read from /proc: memory, CPU time, statistics."""
import os
import statistics


def meminfo():
    """/proc/meminfo in KiB by name."""
    values = {}
    with open("/proc/meminfo") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            values[name] = int(rest.split()[0])
    return values


def host_used_kib(info):
    """What the host has handed out: MemTotal - MemAvailable."""
    return info["MemTotal"] - info["MemAvailable"]


def rollup(pid):
    """/proc/PID/smaps_rollup in KiB by name; empty if the process is gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    values[name] = int(parts[0])
    except OSError:
        pass
    return values


def status_kib(pid, name):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mappings(pid):
    """Per mapping of /proc/PID/smaps: (header line, {field: KiB})."""
    found = []
    try:
        with open(f"/proc/{pid}/smaps") as handle:
            for line in handle:
                first = line.split(None, 1)[0]
                if not first.endswith(":"):
                    found.append((line.strip(), {}))
                elif found:
                    parts = line.split()
                    if len(parts) == 3 and parts[2] == "kB":
                        found[-1][1][parts[0][:-1]] = int(parts[1])
    except OSError:
        pass
    return found


def private_memory(pid, guest_kib):
    """(the VMM's own private KiB: private pages outside the guest-RAM
    mapping, plus its page tables; the guest-touched KiB of that mapping)."""
    own, guest = 0, 0
    for _, fields in mappings(pid):
        private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
        if fields.get("Size") == guest_kib:
            guest += fields.get("Rss", 0)
        else:
            own += private
    return own + status_kib(pid, "VmPTE"), guest


def thread_cpu_ns(pid):
    """{thread name: ns on CPU} from /proc/PID/task/*/schedstat (exact,
    unlike the tick-sampled utime/stime); empty if the process is gone."""
    times = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return times
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as handle:
                name = handle.read().strip()
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                times[name] = times.get(name, 0) + int(handle.read().split()[0])
        except OSError:
            pass
    return times


def kvm_kthread_cpu_ns(pids):
    """{pid: ns on CPU} of the KVM kernel threads named after a VMM's pid
    (`kvm-pit/PID`, the in-kernel PIT's timer worker): outside the VMM's
    thread group, so its schedstat misses them."""
    wanted = {str(pid) for pid in pids}
    times = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                name = handle.read().strip()
            if not name.startswith("kvm-") or "/" not in name or name.rsplit("/", 1)[1] not in wanted:
                continue
            with open(f"/proc/{entry}/schedstat") as handle:
                owner = int(name.rsplit("/", 1)[1])
                times[owner] = times.get(owner, 0) + int(handle.read().split()[0])
        except (OSError, ValueError):
            pass
    return times


def instances_cpu_ns(pids):
    """Every thread of each process plus its KVM kernel threads, summed."""
    total = sum(sum(thread_cpu_ns(pid).values()) for pid in pids)
    return total + sum(kvm_kthread_cpu_ns(pids).values())


def percentile(values, fraction):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))]


def spread(values):
    """median, p90, min, max of a list (nan when empty)."""
    if not values:
        nan = float("nan")
        return {"median": nan, "p90": nan, "min": nan, "max": nan}
    return {"median": statistics.median(values), "p90": percentile(values, 0.9), "min": min(values),
            "max": max(values)}
