#!/usr/bin/env bash
# Benchmark (prints figures; not a test): kiln's API start-up, request
# latency and InstanceStart -> first KVM_RUN, on the release build with every
# thread's seccomp filter. Needs /dev/kvm and `make guest release`.
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-.build-release/release/kiln}
KILN_POLICY=${KILN_POLICY:-.build-release/release/kiln-policy}
GUEST=${GUEST:-integration/out/kiln-test-guest.elf}
RUNS=${RUNS:-20}
[ -r /dev/kvm ] || { echo "skipped: /dev/kvm is absent"; exit 0; }
[ -x "$KILN" ] && [ -x "$KILN_POLICY" ] || { echo "missing $KILN or $KILN_POLICY: run make release"; exit 1; }
[ -r "$GUEST" ] || { echo "missing $GUEST: run make guest"; exit 1; }
bundle=$(mktemp /tmp/kiln-bench.XXXXXX.kbundle)
trap 'rm -f "$bundle"' EXIT
"$KILN_POLICY" compile --policies policies --output "$bundle" >/dev/null
python3 integration/bench/api_bench.py "$KILN" "$bundle" "$(realpath "$GUEST")" "$RUNS"
