#!/bin/bash
# The nested lane (issue 4, lane 2): boot level 1 (Debian's standard kernel
# under QEMU TCG with an SVM CPU, so kvm_amd gives it a real /dev/kvm), and in
# it run the VMM under test on Debian's cloud kernel and a busybox initramfs.
#
#   run.sh --check                        level 1 only: KVM loads, /dev/kvm exists
#   run.sh --vmm PATH [--vcpus N]         boot level 2 with that VMM
#
# The VMM is a binary from the host; a dynamic one travels with the libraries
# ldd finds. How it is invoked depends on its name:
#   qemu-system-*  QEMU's microvm machine on level 1's KVM
#   kiln           `kiln --no-api --config-file` with a Firecracker-format config
#   anything else  --args 'TEMPLATE', with @KERNEL@ @INITRD@ @VCPUS@ @CMDLINE@ replaced
# --tmpfs-root makes level 1 move to a tmpfs root first, as a jailer's
# pivot_root needs; --l2-append adds level-2 kernel arguments.
# Prints the console, timings, and a final line "nested: PASS ..." or
# "nested: FAIL ...": PASS needs the level-2 userspace marker (or, with
# --check, level 1's KVM marker). Exit status 0 on PASS.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${NESTED_OUT:-$here/../out/nested}
vmm="" vcpus=1 args="" timeout_s=120 check=0 l2_append="" tmpfs_root=0
l2_cmdline="console=ttyS0 reboot=k panic=-1 quiet initcall_blacklist=cmos_init"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --check) check=1 ;;
    --vmm) vmm=$2; shift ;;
    --vcpus) vcpus=$2; shift ;;
    --args) args=$2; shift ;;
    --timeout) timeout_s=$2; shift ;;
    --l2-append) l2_append=$2; shift ;;
    --tmpfs-root) tmpfs_root=1 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
[ $check = 1 ] || [ -n "$vmm" ] || { echo "run.sh: give --check or --vmm PATH" >&2; exit 2; }
[[ $vcpus =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --vcpus must be a positive integer, got '$vcpus'" >&2; exit 2; }
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --timeout must be a positive integer, got '$timeout_s'" >&2; exit 2; }
[ -n "$l2_append" ] && l2_cmdline="$l2_cmdline $l2_append"
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 is missing (make nested-assets)" >&2; exit 2; }

"$here/assets.sh" >/dev/null
out=$(cd "$out" && pwd)

# Level-1 root: the cached base tree (hard links), plus level 2 and the VMM.
stage=$(mktemp -d "$out/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
cp -al "$out/l1-base/." "$stage/"
rm -f "$stage/.done"

copy_with_libraries() { # binary destination-in-stage
  install -D -m 755 "$1" "$stage$2"
  local lib
  for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -e "$stage$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$stage$lib"
  done
}

if [ -n "$vmm" ]; then
  [ -x "$vmm" ] || { echo "run.sh: VMM '$vmm' is not an executable file" >&2; exit 2; }
  mkdir -p "$stage/l2" "$stage/vmm"
  ln "$out/l2-bzImage" "$stage/l2/bzImage"
  ln "$out/l2-initrd.cpio" "$stage/l2/initrd.cpio"
  name=$(basename "$vmm")
  copy_with_libraries "$vmm" "/vmm/bin/$name"
  {
    echo '#!/bin/sh'
    case $name in
      qemu-system-*)
        # The microvm machine has no i8042, so `reboot=k` would spin in
        # kb_wait; its ACPI GED implements the sleep registers, so power off.
        l2_cmdline="$l2_cmdline kiln.end=poweroff"
        # Firmware for -M microvm (qboot), from the host's QEMU data. QEMU
        # looks for it relative to its own binary, so say where it is.
        install -D -m 644 /usr/share/qemu/bios-microvm.bin "$stage/vmm/share/qemu/bios-microvm.bin"
        echo "exec /vmm/bin/$name -L /vmm/share/qemu -M microvm,x-option-roms=off,isa-serial=on,rtc=off" \
             "-accel kvm -cpu host -smp $vcpus -m 256 -nodefaults -no-user-config -nographic" \
             "-serial stdio -no-reboot -kernel /l2/bzImage -initrd /l2/initrd.cpio -append '$l2_cmdline'" ;;
      kiln)
        cat > "$stage/vmm/vm.json" <<JSON
{
  "boot-source": {"kernel_image_path": "/l2/bzImage", "initrd_path": "/l2/initrd.cpio", "boot_args": "$l2_cmdline"},
  "machine-config": {"vcpu_count": $vcpus, "mem_size_mib": 256}
}
JSON
        echo "exec /vmm/bin/kiln --no-api --config-file /vmm/vm.json" ;;
      *)
        [ -n "$args" ] || { echo "run.sh: give --args for VMM '$name'" >&2; exit 2; }
        expanded=${args//@KERNEL@//l2/bzImage}
        expanded=${expanded//@INITRD@//l2/initrd.cpio}
        expanded=${expanded//@VCPUS@/$vcpus}
        expanded=${expanded//@CMDLINE@/\'$l2_cmdline\'}
        echo "exec /vmm/bin/$name $expanded" ;;
    esac
  } > "$stage/vmm/run"
  chmod 755 "$stage/vmm/run"
fi

if [ $tmpfs_root = 1 ]; then mkdir -p "$stage/vmm" && touch "$stage/vmm/jail-root"; fi

cpio_file=$stage.cpio
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$cpio_file"
trap 'rm -rf "$stage" "$cpio_file"' EXIT
echo "nested: level-1 initramfs $(( $(stat -c %s "$cpio_file") / 1048576 )) MiB; VMM: ${vmm:-none}; vCPUs: $vcpus"

# The level-1 command from the platform notes (TSC and timer arguments keep
# the TCG guest from hanging in calibration).
start_us=${EPOCHREALTIME/./}
seen() { # seconds since start, two decimals
  local elapsed=$(( ${EPOCHREALTIME/./} - start_us ))
  printf '%d.%02d' $(( elapsed / 1000000 )) $(( elapsed % 1000000 / 10000 ))
}
declare -A at=()
set +e
timeout -k 5 "$timeout_s" qemu-system-x86_64 \
  -M microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on \
  -accel tcg,thread=single -cpu EPYC,+svm,+npt -smp 1 -m 2048 -nodefaults -no-user-config \
  -nographic -serial stdio -no-reboot -kernel "$out/l1-vmlinux" -initrd "$cpio_file" \
  -append "console=ttyS0 reboot=t panic=-1 tsc_early_khz=2000000 no_timer_check quiet" </dev/null 2>&1 |
{
  while IFS= read -r line; do
    line=${line%$'\r'}
    printf '%s\n' "$line"
    for marker in KILN-L1-INIT KILN-L1-KVM-READY KILN-L1-VMM-START KILN-L2-USERSPACE-MARKER KILN-L1-L2-MARKER-SEEN KILN-L1-VMM-EXIT KILN-L1-FAIL; do
      case $line in *"$marker "*|*"$marker") [ -n "${at[$marker]:-}" ] || at[$marker]=$(seen) ;; esac
    done
  done
  for marker in "${!at[@]}"; do echo "$marker ${at[$marker]}"; done > "$stage.times"
}
status=${PIPESTATUS[0]}
set -e
declare -A t=()
while read -r marker when; do t[$marker]=$when; done < "$stage.times"
rm -f "$stage.times"
total=$(seen)

summary="host_wall=${total}s l1_init=${t[KILN-L1-INIT]:--}s kvm_ready=${t[KILN-L1-KVM-READY]:--}s"
[ -n "$vmm" ] && summary="$summary vmm_start=${t[KILN-L1-VMM-START]:--}s l2_marker=${t[KILN-L2-USERSPACE-MARKER]:--}s vmm_exit=${t[KILN-L1-VMM-EXIT]:--}s"
[ "$status" = 124 ] && summary="$summary (timed out after ${timeout_s}s)"
if [ -n "${t[KILN-L1-FAIL]:-}" ]; then
  verdict=FAIL
elif [ $check = 1 ] && [ -z "$vmm" ]; then
  verdict=$([ -n "${t[KILN-L1-KVM-READY]:-}" ] && echo PASS || echo FAIL)
else
  verdict=$([ -n "${t[KILN-L2-USERSPACE-MARKER]:-}" ] && echo PASS || echo FAIL)
fi
echo "nested: $verdict ${vmm:+vmm=$(basename "$vmm") vcpus=$vcpus }$summary"
[ $verdict = PASS ]
