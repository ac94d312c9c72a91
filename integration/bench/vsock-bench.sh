#!/usr/bin/env bash
# Benchmark (prints figures; not a test): vsock through kiln, host <-> guest,
# in lane 1 (the test guest's echo on this host's KVM) and, unless
# VSOCK_NESTED=0, in the nested lane (Debian's vmw_vsock_virtio_transport at
# level 2, integration/nested/run.sh --vsock). make bench-vsock builds what
# it needs.
#   lane 1: VSOCK_MIB MiB echoed (default 4), VSOCK_CONNS connections each
#           way (default 200); nested: 64 MiB, VSOCK_NESTED_CONNS (default 100)
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${KILN:-.build-release/release/kiln}
GUEST=${GUEST:-integration/out/kiln-test-guest.elf}
[ -x "$KILN" ] || { echo "missing $KILN: run make release"; exit 1; }
if [ -r /dev/kvm ] && [ -r "$GUEST" ]; then
  python3 integration/bench/vsock_bench.py "$KILN" "$GUEST" "${VSOCK_MIB:-4}" "${VSOCK_CONNS:-200}"
else
  echo "lane 1 skipped: /dev/kvm or $GUEST (make guest) is missing"
fi
if [ "${VSOCK_NESTED:-1}" != 0 ]; then
  echo
  integration/nested/run.sh --vmm "$KILN" --vsock --vsock-conns "${VSOCK_NESTED_CONNS:-100}" | sed -n '/^---$/,$p'
fi
