#!/usr/bin/env bash
# Jailer start-up benchmark: time from kiln-jailer start to the exec'd probe's
# main, median and p99 over 1,000 sequential and 100 concurrent launches.
# Needs root. Extra arguments go to kiln-jailer-bench (e.g. --no-cgroups,
# --new-net-ns, --runs N, --concurrent N).
set -euo pipefail
cd "$(dirname "$0")/../.."
SWIFT=${SWIFT:-swift}
for product in kiln-jailer kiln-jail-probe kiln-jailer-bench; do
  "$SWIFT" build -c release --product "$product" >/dev/null
done
bin=$("$SWIFT" build -c release --show-bin-path)
echo "host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
"$bin/kiln-jailer-bench" "$@"
