#!/bin/bash
# Boots Debian's cloud kernel under QEMU TCG on ACPI tables we built, to see a
# stock Linux parse them: `-M microvm,acpi=off` keeps QEMU's own tables out,
# and a generic loader puts IMAGE (RSDP and tables) at ADDRESS, where Linux's
# RSDP scan of 0xE0000-0xFFFFF finds it. The guest loads virtio_mmio, prints
# what it found between KILN-ACPI-REPORT-BEGIN and -END, and powers off through
# ACPI S5. The tables must put the sleep control register at I/O port 0x600:
# an isa-debug-exit device there turns the guest's write into QEMU's exit
# status, (value << 1) | 1; the last line of output is "qemu-exit STATUS".
#
#   boot-with-tables.sh IMAGE ADDRESS VCPUS
# Needs `make nested-assets` (the cloud kernel and busybox) and qemu-system-x86_64.
set -euo pipefail
[ $# = 3 ] || { echo "usage: boot-with-tables.sh IMAGE ADDRESS VCPUS" >&2; exit 2; }
image=$1 address=$2 vcpus=$3
here=$(cd "$(dirname "$0")" && pwd)
assets=${NESTED_OUT:-$here/../out/nested}
[ -s "$assets/l2-bzImage" ] && [ -d "$assets/l2-root" ] || { echo "boot-with-tables: run make nested-assets first" >&2; exit 2; }

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp -a "$assets/l2-root" "$work/root"
modules=$(ls -d "$assets"/pkg/cloud/lib/modules/*/kernel/drivers/virtio)
mkdir -p "$work/root/modules"
for module in virtio_ring virtio virtio_mmio; do cp "$modules/$module.ko" "$work/root/modules/"; done
cat > "$work/root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
for module in virtio_ring virtio virtio_mmio; do insmod /modules/$module.ko; done
echo KILN-ACPI-REPORT-BEGIN
echo "cpus $(grep -c ^processor /proc/cpuinfo)"
for device in /sys/bus/acpi/devices/*; do echo "acpi-device ${device##*/}"; done
grep -E "LNRO0005|serial" /proc/iomem /proc/ioports | sed 's/^[^:]*://; s/^ */resource /'
dmesg | grep -E "ACPI: (RSDP|XSDT|FACP|DSDT|APIC|LAPIC_NMI|INT_SRC_OVR|PM:)|IOAPIC\[|smpboot: Allowing|virtio-mmio|ttyS0 at|FADT" | sed 's/^\[[ 0-9.]*\] /dmesg /'
echo KILN-ACPI-REPORT-END
poweroff -f
INIT
chmod 755 "$work/root/init"
(cd "$work/root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$work/initrd.cpio"

set +e
timeout -k 5 60 qemu-system-x86_64 \
  -M microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off,pit=on,pic=on \
  -accel tcg -cpu max -smp "$vcpus" -m 512 -nodefaults -no-user-config -nographic \
  -serial stdio -no-reboot -kernel "$assets/l2-bzImage" -initrd "$work/initrd.cpio" \
  -device "loader,file=$image,addr=$address,force-raw=on" \
  -device isa-debug-exit,iobase=0x600,iosize=1 \
  -append "console=ttyS0 reboot=t panic=-1 quiet tsc_early_khz=2000000 no_timer_check" </dev/null 2>/dev/null |
  tr -d '\r' | sed -n '/KILN-ACPI-REPORT-BEGIN/,/KILN-ACPI-REPORT-END/p'
echo "qemu-exit ${PIPESTATUS[0]}"
