"""One microVM's figures (the `single` object), from the existing benchmark
scripts (../vmm_startup.py, ../api_bench.py) and the density runs' own logs:

- jailer_ms: kiln-jailer start -> kiln main, as kiln logs it ("jailer
  overhead"), median over every kiln instance of the largest N.
- kiln_startup_ms: kiln exec -> API socket accepting, CPU-ms (api_bench).
- first_kvm_run_ms: PUT InstanceStart -> first KVM_RUN, wall ms (api_bench).
- vmm_overhead_mib: RSS minus the guest-touched RAM, guest parked (vmm_startup).
- vmm_private_mib: what one more instance adds, from the largest kiln run:
  its private pages outside guest RAM plus its page tables (median).
- launch_rate_per_core: microVMs per second per host core from jailer start
  to the guest's first instruction, launches overlapped (run.launch_rate),
  timed on this host as it is (others' work included); the median of three
  batches.
- launch_cpu_ms: CPU per launch of the instances up to their first KVM_RUN,
  the harness and the kernel threads, from schedstat (launchrate.batch), and
  launch_rate_per_core_for_launch_cpu: the rate that CPU allows on a host
  doing nothing else (derived).
"""
import os
import statistics
import sys
import tempfile

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH)

import api_bench  # noqa: E402
import vmm_startup  # noqa: E402


def figures(kiln, options, runs, launch_rate, repeats=10):
    guest = options.guest
    bundle = os.path.join(options.bin, "policies.kbundle")
    single = {}
    largest = max((run for run in runs if run["system"] == "kiln"), key=lambda run: run["n"], default=None)
    if largest:
        single["jailer_ms"] = largest["jailer_ms"]["median"]
        single["jailer_cpu_ms"] = largest["jailer_cpu_ms"]["median"]
        single["vmm_private_mib"] = largest["vmm_private_mib"]["median"]
        single["guest_touched_mib"] = largest["guest_touched_mib"]["median"]
        single["measured_at_n"] = largest["n"]
    accepting_cpu, accepting_wall = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            process, _, startup = api_bench.start_kiln(kiln.kiln, bundle, folder)
            api_bench.stop(process)
        accepting_wall.append(startup[0])
        accepting_cpu.append(startup[1])
    single["kiln_startup_ms"] = statistics.median(accepting_cpu)
    single["kiln_startup_wall_ms"] = statistics.median(accepting_wall)
    single["first_kvm_run_ms"] = statistics.median(api_bench.instance_start_to_first_run(kiln.kiln, bundle, guest,
                                                                                          repeats))
    startup = vmm_startup.startup_figures(kiln.kiln, guest, repeats)
    single["exec_to_first_kvm_run_ms"] = statistics.median(startup["first_run"])
    single["exec_to_first_kvm_run_cpu_ms"] = statistics.median(startup["cpu_at_first_run"])
    memory = vmm_startup.parked_memory(kiln.kiln, guest)
    single["vmm_overhead_mib"] = (memory.get("VmRSS", 0) - memory.get("GuestRss", 0)) / 1024
    single["vmm_rss_file_mib"] = memory.get("RssFile", 0) / 1024
    # Three batches, the median one reported: one batch on a shared host is
    # at the mercy of whatever else ran in its second or two.
    batches = sorted((launch_rate(min(max(options.ns), 50)) for _ in range(3)),
                     key=lambda batch: batch["per_second_per_core"])
    rate = batches[1]
    single["launch_rate"] = rate
    single["launch_rate_batches_per_core"] = [batch["per_second_per_core"] for batch in batches]
    single["launch_rate_per_core"] = rate["per_second_per_core"]
    single["launch_cpu_ms"] = rate["launch_cpu_ms"]
    single["launch_rate_per_core_for_launch_cpu"] = rate["per_second_per_core_for_launch_cpu"]
    return single
