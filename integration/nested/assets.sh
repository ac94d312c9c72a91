#!/bin/bash
# Builds, from Debian packages only, what the nested lane boots (README.md):
#   level 1: the standard kernel as an uncompressed vmlinux, its KVM and TUN
#            modules and a busybox base tree with iproute2's ip (busybox's has
#            no tuntap) and debugfs (to read the root drive back); the run
#            script adds the VMM and finishes the cpio;
#   level 2: the cloud kernel bzImage, a busybox initramfs with Debian's virtio
#            modules, an ext4 root-drive image (busybox, the same init, and a
#            file the host wrote) and a 256 KiB raw data disk;
#   density: the density benchmark's Linux guest initramfs (busybox httpd);
#   both:    kiln-vsock-peer (vsock-peer.c, static, Debian's gcc), the vsock
#            checks' peer on either side of the VMM.
# Idempotent: .deb files and every product stay cached in integration/out/nested;
# once built, a run costs nothing until one of its inputs changes. Delete
# integration/out/nested/.ready to look for newer kernel packages.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${NESTED_OUT:-$here/../out/nested}
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)

ready=$out/.ready
density_init=$here/../bench/density/linux-init
inputs=("$here/assets.sh" "$here/extract-vmlinux.sh" "$here/l1-init" "$here/l2-init" "$here/l1-vsock" "$here/l1-cgroup" "$here/vsock-peer.c"
        "$density_init")
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

# The vsock checks' peer, for level 2 (AF_VSOCK) and level 1 (the VMM's Unix
# sockets): one static binary, so neither initramfs needs a C library.
peer=$out/kiln-vsock-peer
if [ ! -x "$peer" ] || [ "$here/vsock-peer.c" -nt "$peer" ]; then
  gcc -static -O2 -Wall -o "$peer.tmp" "$here/vsock-peer.c"
  mv "$peer.tmp" "$peer"
fi

# A busybox tree: the static binary plus a link per applet.
busybox_tree() { # dir
  mkdir -p "$1/bin" "$1/sbin" "$1/dev" "$1/proc" "$1/sys" "$1/tmp" "$1/etc"
  cp "$busybox" "$1/bin/busybox"
  local applet
  for applet in $("$busybox" --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
}
# A host binary and the shared libraries ldd lists, at the same paths.
copy_with_libraries() { # binary root
  install -D -m 755 "$1" "$2$1"
  local lib
  for lib in $(ldd "$1" | grep -o '/[^ ]*'); do
    [ -e "$2$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$2$lib"
  done
}
# newc cpio of a directory, owned by root, in a stable order.
make_cpio() { # dir file
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$2.tmp"
  mv "$2.tmp" "$2"
}

# Level 2: the initramfs (busybox, the init, Debian's virtio modules: the
# cloud kernel builds virtio, virtio_mmio and the device drivers as modules),
# the root drive (ext4, made from a directory without any mount), and a raw
# data disk. The host's line in /hello.txt and the data disk's signature are
# what level 2 must read back.
cloud_modules=$out/pkg/cloud/lib/modules/$cloud_release/kernel
if [ ! -s "$out/l2-initrd.cpio" ] || [ -n "$(find "$here/l2-init" "$here/assets.sh" "$peer" -newer "$out/l2-initrd.cpio")" ]; then
  rm -rf "$out/l2-root"
  busybox_tree "$out/l2-root"
  install -m 755 "$here/l2-init" "$out/l2-root/init"
  mkdir -p "$out/l2-root/modules"
  for module in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio drivers/block/virtio_blk \
      net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/char/hw_random/virtio-rng \
      net/vmw_vsock/vsock net/vmw_vsock/vmw_vsock_virtio_transport_common net/vmw_vsock/vmw_vsock_virtio_transport; do
    cp "$cloud_modules/$module.ko" "$out/l2-root/modules/"
  done
  make_cpio "$out/l2-root" "$out/l2-initrd.cpio"
fi
if [ ! -s "$out/l2-rootfs.ext4" ] || [ -n "$(find "$here/l2-init" "$here/assets.sh" "$peer" -newer "$out/l2-rootfs.ext4")" ]; then
  rm -rf "$out/l2-rootfs"
  busybox_tree "$out/l2-rootfs"
  install -m 755 "$here/l2-init" "$out/l2-rootfs/init"
  install -m 755 "$peer" "$out/l2-rootfs/bin/kiln-vsock-peer"
  touch "$out/l2-rootfs/etc/kiln-root-drive"
  echo "KILN-HOST-FILE written by the host into the root drive image" > "$out/l2-rootfs/hello.txt"
  rm -f "$out/l2-rootfs.ext4.tmp"
  truncate -s 16M "$out/l2-rootfs.ext4.tmp"
  mkfs.ext4 -q -F -L kiln-root -E root_owner=0:0 -d "$out/l2-rootfs" "$out/l2-rootfs.ext4.tmp"
  mv "$out/l2-rootfs.ext4.tmp" "$out/l2-rootfs.ext4"
  # The data disk: a signature line, then random bytes that level 2 reads
  # whole and serves back to level 1 over HTTP (many requests, many frames).
  { echo "KILN-DATA-DISK written by the host"; head -c 262144 /dev/urandom; } > "$out/l2-data.img"
  truncate -s 256K "$out/l2-data.img"
fi

# The density benchmark's Linux guest (run.py --guest linux): busybox, its
# init (integration/bench/density/linux-init) and the virtio-net modules; it
# boots l2-bzImage and serves a page with busybox httpd.
if [ ! -s "$out/density-initrd.cpio" ] || [ -n "$(find "$density_init" "$here/assets.sh" -newer "$out/density-initrd.cpio")" ]; then
  rm -rf "$out/density-root"
  busybox_tree "$out/density-root"
  install -m 755 "$density_init" "$out/density-root/init"
  mkdir -p "$out/density-root/modules"
  for module in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio \
      net/core/failover drivers/net/net_failover drivers/net/virtio_net; do
    cp "$cloud_modules/$module.ko" "$out/density-root/modules/"
  done
  make_cpio "$out/density-root" "$out/density-initrd.cpio"
fi

# Level-1 base tree (run.sh copies it, adds the VMM and level 2, and packs it).
if [ ! -e "$out/l1-base/.done" ] || [ -n "$(find "$here/l1-init" "$here/l1-vsock" "$here/l1-cgroup" "$here/assets.sh" "$peer" -newer "$out/l1-base/.done")" ]; then
  rm -rf "$out/l1-base"
  busybox_tree "$out/l1-base"
  install -m 755 "$here/l1-init" "$out/l1-base/init"
  install -m 755 "$here/l1-vsock" "$out/l1-base/l1-vsock"
  install -m 755 "$here/l1-cgroup" "$out/l1-base/l1-cgroup"
  install -m 755 "$peer" "$out/l1-base/bin/kiln-vsock-peer"
  mkdir -p "$out/l1-base/modules"
  std_modules=$out/pkg/std/lib/modules/$std_release/kernel
  for module in virt/lib/irqbypass.ko arch/x86/kvm/kvm.ko drivers/crypto/ccp/ccp.ko arch/x86/kvm/kvm-amd.ko \
      drivers/net/tun.ko; do
    cp "$std_modules/$module" "$out/l1-base/modules/"
  done
  # iproute2's ip makes the persistent TAP (at /usr/sbin/ip; busybox's stays
  # /bin/ip), debugfs reads the root drive back without mounting it.
  copy_with_libraries /usr/sbin/ip "$out/l1-base"
  copy_with_libraries /usr/sbin/debugfs "$out/l1-base"
  touch "$out/l1-base/.done"
fi

echo "level 1: $std_release, level 2: $cloud_release" > "$ready"
echo "nested assets ready in $out ($(cat "$ready"))"
