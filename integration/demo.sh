#!/usr/bin/env bash
# The main job, as far as the code has come: the policies compiled and
# audited against Firecracker's, then a microVM booting the lane-1 test guest
# on this host's KVM and printing its console.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build-release/release
echo "== kiln-policy: per-thread seccomp policies against Firecracker's"
"$bin/kiln-policy" audit --policies policies --compare policies/reference/firecracker-seccomp-x86_64.json \
  | grep -E "^== role|against Firecracker"
[ -e /dev/kvm ] || { echo "no /dev/kvm on this host: cannot boot a microVM" >&2; exit 1; }
echo "== kiln: the test guest on $(test -d /sys/module/kvm_pvm && echo kvm-pvm || echo KVM)"
"$bin/kiln" --no-api --no-seccomp --kernel integration/out/kiln-test-guest.elf \
  --cmdline "console=ttyS0 demo=kiln" --boot-timer
