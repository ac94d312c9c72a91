#!/bin/bash
# make demo: the main job. A jailed microVM boots and prints its console.
#
#   0. The per-thread seccomp policies, compiled and audited against
#      Firecracker's.
#   1. Lane 1 on this host: the test guest under kiln, under kiln-jailer, with
#      the compiled policies (a second or so).
#   2. Stock Linux: Debian's cloud kernel and a busybox initramfs, under kiln,
#      under kiln-jailer:
#      - directly on this host when its KVM can run stock Linux;
#      - on kvm-pvm (/sys/module/kvm_pvm), which cannot, in the nested lane:
#        kiln-jailer and kiln inside a Debian level-1 guest whose kvm_amd runs
#        under QEMU TCG. There the guest gets kiln's virtio devices: it boots
#        from an ext4 root drive with Debian's own drivers and serves a page
#        that level 1 fetches over the TAP.
# `make demo` builds the release binaries and the test guest first; this
# script fetches the Linux assets itself (integration/nested/assets.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=$root/.build-release/release
guest=$root/integration/out/kiln-test-guest.elf
nested=$root/integration/out/nested
base=$(mktemp -d /tmp/kiln-demo.XXXXXX)
uid=64200 gid=64200
jails=()
cleanup() {
  for id in "${jails[@]}"; do
    "$bin/kiln-jailer" cleanup --id "$id" --exec-file "$bin/kiln" --chroot-base-dir "$base" >/dev/null 2>&1 || true
  done
  rm -rf "$base"
}
trap cleanup EXIT

say() { printf '\n=== %s\n' "$*"; }
for file in kiln kiln-jailer kiln-policy policies.kbundle; do
  [ -f "$bin/$file" ] || { echo "demo: $bin/$file is missing: run make demo (it builds them)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "demo: kiln-jailer needs root" >&2; exit 1; }
[ -c /dev/kvm ] || { echo "demo: this host has no /dev/kvm" >&2; exit 1; }

# One jailed boot: kiln-jailer ... --jail-file FILE:NAME ... -- kiln arguments.
jailed() { # id jail-files... -- kiln-arguments...
  local id=$1; shift
  local files=()
  while [ "$1" != -- ]; do files+=(--jail-file "$1"); shift; done
  shift
  jails+=("$id")
  local status=0
  "$bin/kiln-jailer" --id "$id" --exec-file "$bin/kiln" --uid $uid --gid $gid --chroot-base-dir "$base" \
    "${files[@]}" -- --no-api "$@" || status=$?
  "$bin/kiln-jailer" cleanup --id "$id" --exec-file "$bin/kiln" --chroot-base-dir "$base"
  echo "demo: kiln exited with status $status; jail $id cleaned up"
  return $status
}

say "kiln-policy: per-thread seccomp policies against Firecracker's"
"$bin/kiln-policy" audit --policies "$root/policies" --compare "$root/policies/reference/firecracker-seccomp-x86_64.json" \
  | grep -E "^== role|against Firecracker"

say "lane 1 on this host: the test guest, jailed (kiln-jailer -> kiln, per-thread seccomp filters)"
start=${EPOCHREALTIME/./}
jailed demo-lane1 "$guest:guest.elf" -- --kernel /guest.elf --cmdline "console=ttyS0 demo" --vcpus 2 --boot-timer
echo "demo: lane 1 took $(( (${EPOCHREALTIME/./} - start) / 1000 )) ms, jailer start to guest reset"

"$here/nested/assets.sh"

if [ -d /sys/module/kvm_pvm ]; then
  say "stock Linux: nested lane"
  cat <<'WHY'
This host's KVM is kvm-pvm (/sys/module/kvm_pvm), a paravirtual nested KVM
that cannot run stock Linux kernels: they stop in the int3 self-test of the
alternatives code. So the Debian cloud kernel boots on a real KVM one level
down: QEMU TCG runs a Debian level-1 guest with an SVM CPU; its kvm_amd gives
/dev/kvm; there kiln-jailer jails kiln (configured through its API socket),
which boots level 2 with a root drive, a read-only data disk, a network
interface on a TAP and an entropy device, all driven by Debian's own virtio
modules. Under TCG this takes a minute or so; the level-1 and level-2
consoles follow.
WHY
  "$here/nested/run.sh" --vmm "$bin/kiln-jailer" --vcpus 2 --devices | tee "$base/nested.log"
  say "what the jailed Debian guest showed"
  # Its root, the host's file it read, its hwrng bytes, then what level 1
  # got from it over the network and read back from its root drive.
  tr -d '\r' < "$base/nested.log" > "$base/nested.txt"
  grep -E '^(KILN-L2-(ROOT|BLOCK-OK|DATA-RO-OK|RNG-OK)|KILN-L1-(HTTP-OK|HTTP-BULK-OK|PING-OK|WRITEBACK-OK))' "$base/nested.txt" \
    | sed 's/^/  /'
  echo "the page level 1 fetched from http://172.16.0.2/ (busybox httpd in level 2, through kiln's virtio-net):"
  sed -n 's/^KILN-L1-GOT KILN-L2-PAGE /  /p' "$base/nested.txt"
else
  say "stock Linux on this host's KVM: Debian's cloud kernel, jailed"
  jailed demo-linux "$nested/l2-bzImage:vmlinuz" "$nested/l2-initrd.cpio:initrd.cpio" -- \
    --kernel /vmlinuz --initrd /initrd.cpio --vcpus 2 --mem 256 \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet"
fi
