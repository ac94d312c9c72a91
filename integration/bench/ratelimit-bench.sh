#!/usr/bin/env bash
# Benchmark (prints figures; not a test): a rate-limited virtio-blk device's
# throughput against its configured rate, one run per limiter. Drives the
# device model directly (see Sources/kiln-ratelimit-bench/main.swift): the
# lane-1 guest has no block tools. Extra arguments go to the harness
# (--seconds S, --request-kib K, --depth D).
set -euo pipefail
cd "$(dirname "$0")/../.."
SWIFT=${SWIFT:-swift}
"$SWIFT" build -c release --product kiln-ratelimit-bench >/dev/null
bin=$("$SWIFT" build -c release --show-bin-path)
echo "load average $(cut -d' ' -f1-3 /proc/loadavg), kernel $(uname -r)"
"$bin/kiln-ratelimit-bench" "$@"
