#!/usr/bin/env bash
# Benchmark (prints figures; not a test): kiln start-up on the lane-1 test
# guest. Needs /dev/kvm, `make guest` and `make release` (make bench-vmm does both).
#   exec -> first KVM_RUN, exec -> guest "ready" (boot-timer write),
#   kiln CPU time, and kiln's RSS minus the guest memory it touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-.build-release/release/kiln}
GUEST=${GUEST:-integration/out/kiln-test-guest.elf}
RUNS=${RUNS:-20}
[ -r /dev/kvm ] || { echo "skipped: /dev/kvm is absent"; exit 0; }
[ -x "$KILN" ] || { echo "missing $KILN: run make release"; exit 1; }
[ -r "$GUEST" ] || { echo "missing $GUEST: run make guest"; exit 1; }
exec python3 integration/bench/vmm_startup.py "$KILN" "$GUEST" "$RUNS"
