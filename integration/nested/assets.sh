#!/bin/bash
# Builds, from Debian packages only, what the nested lane boots (platform notes,
# "A stock Linux guest on a real KVM: the nested lane"):
#   level 1: the standard kernel as an uncompressed vmlinux, its KVM modules and
#            a busybox base tree (the run script adds the VMM and finishes the cpio);
#   level 2: the cloud kernel bzImage and a busybox initramfs that prints a marker.
# Idempotent: .deb files and every product stay cached in integration/out/nested;
# once built, a run costs nothing until one of its inputs changes. Delete
# integration/out/nested/.ready to look for newer kernel packages.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${NESTED_OUT:-$here/../out/nested}
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)

ready=$out/.ready
inputs=("$here/assets.sh" "$here/extract-vmlinux.sh" "$here/l1-init" "$here/l2-init")
if [ -e "$ready" ] && [ -z "$(find "${inputs[@]}" -newer "$ready")" ]; then
  echo "nested assets ready in $out ($(cat "$ready"))"
  exit 0
fi

# The metapackages name the current ABI; resolve them to the real kernel packages.
kernel_package() { # metapackage -> linux-image-<abi>-<flavour>
  apt-cache depends "$1" | awk '/Depends: linux-image-/ {print $2; exit}'
}
fetch() { # package... -> downloaded once into $out/debs
  local p
  for p in "$@"; do
    if ! ls "$out/debs/${p}_"*.deb >/dev/null 2>&1; then
      (cd "$out/debs" && apt-get download -q -o APT::Sandbox::User=root "$p")
    fi
  done
}
unpack() { # package dir
  if [ ! -e "$2/.unpacked" ]; then
    rm -rf "$2"; mkdir -p "$2"
    dpkg -x "$(ls "$out/debs/${1}_"*.deb | head -1)" "$2"
    touch "$2/.unpacked"
  fi
}

std=$(kernel_package linux-image-amd64)
if [ -z "$std" ]; then # apt's package lists may never have been fetched here
  apt-get update -qq
  std=$(kernel_package linux-image-amd64)
fi
cloud=$(kernel_package linux-image-cloud-amd64)
[ -n "$std" ] && [ -n "$cloud" ] || { echo "assets: cannot resolve the kernel packages (run apt-get update)" >&2; exit 1; }
fetch "$std" "$cloud" busybox-static
unpack "$std" "$out/pkg/std"
unpack "$cloud" "$out/pkg/cloud"
unpack busybox-static "$out/pkg/busybox"

release() { ls "$1/lib/modules" | head -1; }
std_release=$(release "$out/pkg/std")
cloud_release=$(release "$out/pkg/cloud")

# Level-1 kernel: the ELF inside the standard bzImage, found by its compression
# magic, so that TCG does not spend ~3.5 s decompressing it at every boot.
if [ ! -s "$out/l1-vmlinux" ]; then
  "$here/extract-vmlinux.sh" "$out/pkg/std/boot/vmlinuz-$std_release" > "$out/l1-vmlinux.tmp"
  mv "$out/l1-vmlinux.tmp" "$out/l1-vmlinux"
fi

# Level-2 kernel: the cloud bzImage as shipped, and the ELF inside it (with
# its PVH note) for VMMs' ELF loaders.
cp -u "$out/pkg/cloud/boot/vmlinuz-$cloud_release" "$out/l2-bzImage"
if [ ! -s "$out/l2-vmlinux" ] || [ "$out/l2-bzImage" -nt "$out/l2-vmlinux" ]; then
  "$here/extract-vmlinux.sh" "$out/l2-bzImage" > "$out/l2-vmlinux.tmp"
  mv "$out/l2-vmlinux.tmp" "$out/l2-vmlinux"
fi

busybox=$out/pkg/busybox/bin/busybox

# A busybox tree: the static binary plus a link per applet.
busybox_tree() { # dir
  mkdir -p "$1/bin" "$1/sbin" "$1/dev" "$1/proc" "$1/sys" "$1/tmp" "$1/etc"
  cp "$busybox" "$1/bin/busybox"
  local applet
  for applet in $("$busybox" --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
}
# newc cpio of a directory, owned by root, in a stable order.
make_cpio() { # dir file
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$2.tmp"
  mv "$2.tmp" "$2"
}

# Level-2 initramfs.
if [ ! -s "$out/l2-initrd.cpio" ] || [ "$here/l2-init" -nt "$out/l2-initrd.cpio" ]; then
  rm -rf "$out/l2-root"
  busybox_tree "$out/l2-root"
  install -m 755 "$here/l2-init" "$out/l2-root/init"
  make_cpio "$out/l2-root" "$out/l2-initrd.cpio"
fi

# Level-1 base tree (run.sh copies it, adds the VMM and level 2, and packs it).
if [ ! -e "$out/l1-base/.done" ] || [ "$here/l1-init" -nt "$out/l1-base/.done" ]; then
  rm -rf "$out/l1-base"
  busybox_tree "$out/l1-base"
  install -m 755 "$here/l1-init" "$out/l1-base/init"
  mkdir -p "$out/l1-base/modules"
  kvm_dir=$out/pkg/std/lib/modules/$std_release/kernel
  for module in virt/lib/irqbypass.ko arch/x86/kvm/kvm.ko drivers/crypto/ccp/ccp.ko arch/x86/kvm/kvm-amd.ko; do
    cp "$kvm_dir/$module" "$out/l1-base/modules/"
  done
  touch "$out/l1-base/.done"
fi

echo "level 1: $std_release, level 2: $cloud_release" > "$ready"
echo "nested assets ready in $out ($(cat "$ready"))"
