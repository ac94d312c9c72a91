#!/bin/bash
# The nested lane: boot level 1 (Debian's standard kernel under QEMU TCG with
# an SVM CPU, so kvm_amd gives it a real /dev/kvm), and in it run each VMM
# under test on Debian's cloud kernel and a busybox initramfs.
#
#   run.sh --check                          level 1 only: KVM loads, /dev/kvm exists
#   run.sh --vmm PATH [--vmm PATH2 ...]     boot level 2 with each VMM, in turn,
#          [--vcpus N] [--runs R]           R times each, all in one level-1 boot
#          [--devices]                      with virtio devices (below)
#          [--bench [--blk-mib M] [--net-kib K] [--reps N]]
#                                           --devices plus the I/O benchmark (below)
#          [--vsock [--vsock-mib M] [--vsock-conns N]]
#                                           --devices plus a vsock device (below)
#          [--cgroup-v2]                    kiln-jailer: cgroup v2 limits, checked (below)
#          [--trace [--policies DIR] [--trace-out FILE]]
#                                           kiln-jailer under kiln-policy trace (below)
#   run.sh --density-linux NS [--density-systems kiln,qemu-microvm]
#          [--density-bin DIR] [--density-json FILE]
#                                           the density benchmark's --guest linux in level 1 (below)
#
# A VMM is a binary from the host; a dynamic one travels with the libraries
# ldd finds. How it is invoked depends on its name:
#   qemu-system-*  QEMU's microvm machine on level 1's KVM
#   kiln           `kiln --no-api --config-file` with a Firecracker-format config,
#                  and --seccomp-filter with the policies.kbundle beside it
#                  (--no-seccomp when there is none)
#   kiln-jailer    kiln under kiln-jailer: the kiln and policies.kbundle
#                  beside it travel too; the kernel and initramfs reach the
#                  jail through --jail-file, the drives are linked into the
#                  jail root (writable by kiln's uid), and curl configures
#                  kiln through its API socket, as an orchestrator drives a
#                  jailed Firecracker; implies --tmpfs-root
#   anything else  --args 'TEMPLATE' (applies to such VMMs), with @KERNEL@
#                  @INITRD@ @VCPUS@ @CMDLINE@ replaced
# --tmpfs-root makes level 1 move to a tmpfs root first, as a jailer's
# pivot_root needs; --l2-kernel elf boots level 2 from the ELF vmlinux inside
# the bzImage instead; --l2-append adds level-2 kernel arguments; --timeout
# bounds the whole run (default 60 s plus 60 s per level-2 boot, 120 s with
# --devices);
# --kiln-args adds arguments to kiln's command line (e.g. '--level Debug').
#
# --devices gives level 2 a root drive (ext4, booted with root=/dev/vda rw),
# a read-only data disk, a network interface on level 1's TAP kiln-tap0
# (172.16.0.1, level 2 is 172.16.0.2) and an entropy device. Level 2 reads a
# file the host wrote, writes one, reads /dev/hwrng and serves a page with
# busybox httpd; level 1 fetches it, pings, and after the guest ends reads
# the written file back with debugfs.
#
# --bench (implies --devices; kiln and qemu-system-* only) adds a 64 MiB
# sparse writable scratch disk, made by level 1 for each boot. Level 2 runs
# `dd bs=1M count=M oflag=direct` to it then `iflag=direct` from it (default
# 64 MiB), N times (default 5), before its network is up; level 1 times each
# from the console lines around it. Level 1 then fetches K KiB (default 1024)
# from level 2's httpd and POSTs as many to a CGI sink, N times each. The
# table gives each VMM's median over the repeats and kiln/QEMU's ratio.
#
# --vsock (implies --devices; kiln and kiln-jailer only) adds a vsock device
# (guest CID 3; uds_path /l2/run/v.sock, or /run/v.sock in the jail) that
# level 2 drives with Debian's vmw_vsock_virtio_transport and a small static
# peer (vsock-peer.c). Level 1 (l1-vsock) connects through uds_path with
# Firecracker's `CONNECT 5000`, sends M MiB (default 64) and checks them back;
# level 2 connects to the host's port 5001, where level 1 listens on
# <uds_path>_5001 and echoes 1 MiB. --vsock-conns N adds N more host
# connections, one byte echoed on each, timed (the connection rate); the
# figures are printed after the console.
#
# --cgroup-v2 (kiln-jailer only): level 1 is a pure cgroup-v2 host (it
# mounts only cgroup2). Before the first boot (l1-cgroup): a launch with a
# bad memory.max is refused by name and leaves no cgroup and no jail, a
# launch with --parent-cgroup and no --cgroup joins a cgroup level 1 made,
# and a --cgroup under that busy cgroup is refused. Each boot's jailer gets
# --cgroup-version 2 --parent-cgroup kiln-vms and memory.max, pids.max and
# cpu.max; while the guest runs, level 1 reads the values back and finds in
# the cgroup's cgroup.procs the VMM and only KVM's worker thread of its VM;
# after kiln-jailer cleanup the cgroup is gone.
#
# --trace (kiln-jailer only): each boot's jailer runs under `kiln-policy
# trace --policies DIR` (default: the repository's policies/), with the
# kiln-policy beside the jailer (static, or with its libraries). The report
# goes to FILE (default integration/out/nested/policy-trace.txt) and a line
# per role to the output; a call a role refuses fails the run.
#
# --density-linux NS (e.g. 1,2) runs the density benchmark itself
# (integration/bench/density/run.py, with Debian's python3 and its standard
# library copied from this host) in level 1: `--guest linux --systems LIST
# --ns NS`, LIST kiln (default) and/or qemu-microvm (this host's QEMU, its
# libraries and its microvm firmware go along), kiln-jailer and kiln from DIR
# (default .build-release/release), each kiln jailed as on the host (its own
# uid, v1 cgroups, which level 1 mounts instead of cgroup2, and TAP), booting
# Debian's cloud kernel with the busybox httpd initramfs, ready when level 1
# gets its page over HTTP. The JSON goes to FILE (default
# integration/out/nested/density-linux.json); PASS needs every system
# runnable and every instance of every N ready.
#
# Prints the console, then one line per level-2 boot with level 1's measure
# of VMM exec to the level-2 marker, then "nested: PASS ..." or "nested: FAIL
# ...". PASS needs every boot's marker and exit status 0 (with --check, level
# 1's KVM marker; with --devices, every device check of every boot). Exit
# status 0 on PASS.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${NESTED_OUT:-$here/../out/nested}
vmms=() vcpus=1 runs=1 args="" timeout_s="" check=0 l2_append="" tmpfs_root=0 l2_kernel=bzImage devices=0 kiln_args="" bench=0 blk_mib=64 net_kib=1024 reps=5
vsock=0 vsock_mib=64 vsock_conns=0
cgroup_v2=0 trace=0 policies=$here/../../policies trace_out=""
density_ns="" density_systems=kiln density_bin=$here/../../.build-release/release density_json=""
# --cgroup-v2's limits for each jailed boot (values as the kernel reads them
# back): far above what the guest needs, so they hold without throttling it.
cgroup_settings=("memory.max=536870912" "pids.max=64" "cpu.max=100000 100000")
l2_cmdline="console=ttyS0 reboot=k panic=-1 quiet initcall_blacklist=cmos_init"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: $1 must be a positive integer, got '$2'" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case $1 in
    --check) check=1 ;;
    --vmm) vmms+=("$2"); shift ;;
    --vcpus) positive --vcpus "$2"; vcpus=$2; shift ;;
    --runs) positive --runs "$2"; runs=$2; shift ;;
    --args) args=$2; shift ;;
    --timeout) positive --timeout "$2"; timeout_s=$2; shift ;;
    --l2-append) l2_append=$2; shift ;;
    --tmpfs-root) tmpfs_root=1 ;;
    --devices) devices=1 ;;
    --kiln-args) kiln_args=$2; shift ;;
    --bench) bench=1 devices=1 ;;
    --blk-mib) positive --blk-mib "$2"; blk_mib=$2; shift ;;
    --net-kib) positive --net-kib "$2"; net_kib=$2; shift ;;
    --reps) positive --reps "$2"; reps=$2; shift ;;
    --vsock) vsock=1 devices=1 ;;
    --vsock-mib) positive --vsock-mib "$2"; vsock_mib=$2; shift ;;
    --vsock-conns) positive --vsock-conns "$2"; vsock_conns=$2; shift ;;
    --cgroup-v2) cgroup_v2=1 ;;
    --trace) trace=1 ;;
    --policies) policies=$2; shift ;;
    --trace-out) trace_out=$2; shift ;;
    --density-linux)
      [[ $2 =~ ^[1-9][0-9]?(,[1-9][0-9]?)*$ ]] || { echo "run.sh: --density-linux takes N values 1-99, comma-separated, got '$2'" >&2; exit 2; }
      density_ns=$2; shift ;;
    --density-systems)
      [[ $2 =~ ^(kiln|qemu-microvm)(,(kiln|qemu-microvm))?$ ]] || { echo "run.sh: --density-systems takes kiln and/or qemu-microvm, got '$2'" >&2; exit 2; }
      density_systems=$2; shift ;;
    --density-bin) density_bin=$2; shift ;;
    --density-json) density_json=$2; shift ;;
    --l2-kernel)
      case $2 in bzimage|bzImage) l2_kernel=bzImage ;; elf) l2_kernel=vmlinux ;;
        *) echo "run.sh: --l2-kernel is bzimage or elf, got '$2'" >&2; exit 2 ;; esac
      shift ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
[ $check = 1 ] || [ ${#vmms[@]} -gt 0 ] || [ -n "$density_ns" ] || { echo "run.sh: give --check, --vmm PATH or --density-linux NS" >&2; exit 2; }
if [ -n "$density_ns" ]; then
  [ ${#vmms[@]} = 0 ] && [ $devices = 0 ] && [ $cgroup_v2 = 0 ] && [ $trace = 0 ] \
    || { echo "run.sh: --density-linux runs alone (no --vmm, --devices, --cgroup-v2 or --trace)" >&2; exit 2; }
  for binary in kiln kiln-jailer; do
    [ -x "$density_bin/$binary" ] || { echo "run.sh: --density-linux needs $density_bin/$binary (make release, or --density-bin DIR)" >&2; exit 2; }
  done
  [ -x /usr/bin/python3 ] || { echo "run.sh: --density-linux copies Debian's /usr/bin/python3 into level 1; it is missing" >&2; exit 2; }
  tmpfs_root=1 # the jailer's pivot_root fails on the initial ramdisk
fi
[ ${#vmms[@]} -le 9 ] || { echo "run.sh: at most 9 VMMs per run" >&2; exit 2; }
[ -n "$l2_append" ] && l2_cmdline="$l2_cmdline $l2_append"
if [ $bench = 1 ]; then
  [ "$blk_mib" -le 64 ] || { echo "run.sh: --blk-mib is at most 64 (the scratch disk's size)" >&2; exit 2; }
  l2_cmdline="$l2_cmdline kiln.bench=$blk_mib,$net_kib,$reps"
fi
# Level 2 echoes the checked stream and then each benchmark connection.
[ $vsock = 1 ] && l2_cmdline="$l2_cmdline kiln.vsock=$((1 + vsock_conns))"
boots=$(( ${#vmms[@]} * runs ))
per_boot=60; [ $devices = 1 ] && per_boot=120 # a device boot also serves level 1
[ $bench = 1 ] && per_boot=$(( 120 + reps * (blk_mib * 4 + net_kib / 16) )) # generous: TCG's speed varies
[ $vsock = 1 ] && per_boot=$(( per_boot + 60 + vsock_mib * 4 + vsock_conns / 2 ))
[ $trace = 1 ] && per_boot=$(( per_boot * 3 )) # every system call of kiln stops for the tracer
# The density run: its one-instance probe, then every instance of every N,
# each a level-2 boot of 10 to 40 s under TCG, plus Python's start in level 1.
density_boots=0
IFS=, read -ra density_system_list <<< "$density_systems"
[ -n "$density_ns" ] && density_boots=$(( (1 + ${density_ns//,/ + }) * ${#density_system_list[@]} ))
timeout_s=${timeout_s:-$(( 60 + per_boot * (boots + density_boots) + (density_boots > 0 ? 120 : 0) ))}
command -v qemu-system-x86_64 >/dev/null || { echo "run.sh: qemu-system-x86_64 is missing (make nested-assets)" >&2; exit 2; }
for vmm in "${vmms[@]}"; do
  [ -f "$vmm" ] && [ -x "$vmm" ] || { echo "run.sh: VMM '$vmm' is not an executable file" >&2; exit 2; }
  case $(basename "$vmm") in
    qemu-system-*) [ $vsock = 0 ] || { echo "run.sh: --vsock takes kiln and kiln-jailer only" >&2; exit 2; } ;;
    kiln) ;;
    kiln-jailer)
      if [ $trace = 1 ]; then
        [ -x "$(dirname "$vmm")/kiln-policy" ] || { echo "run.sh: --trace needs kiln-policy beside $vmm" >&2; exit 2; }
        compgen -G "$policies/*.policy" >/dev/null || { echo "run.sh: --policies $policies holds no .policy file" >&2; exit 2; }
      fi
      [ $bench = 0 ] || { echo "run.sh: --bench runs kiln unjailed (give .../kiln)" >&2; exit 2; }
      for companion in kiln policies.kbundle; do
        [ -f "$(dirname "$vmm")/$companion" ] || { echo "run.sh: $vmm needs $companion beside it" >&2; exit 2; }
      done
      command -v curl >/dev/null || { echo "run.sh: kiln-jailer's runs need curl (make nested-deps)" >&2; exit 2; }
      tmpfs_root=1 ;; # pivot_root fails on the initial ramdisk
    *) [ $bench = 0 ] || { echo "run.sh: --bench takes kiln and qemu-system-* only" >&2; exit 2; }
       [ $vsock = 0 ] || { echo "run.sh: --vsock takes kiln and kiln-jailer only" >&2; exit 2; }
       [ -n "$args" ] || { echo "run.sh: give --args for VMM '$vmm'" >&2; exit 2; } ;;
  esac
  case $(basename "$vmm") in
    kiln-jailer) ;;
    *) [ $cgroup_v2 = 0 ] && [ $trace = 0 ] || { echo "run.sh: --cgroup-v2 and --trace take kiln-jailer only" >&2; exit 2; } ;;
  esac
done
trace_out=${trace_out:-$out/policy-trace.txt}

"$here/assets.sh" >/dev/null
out=$(cd "$out" && pwd)
density_json=${density_json:-$out/density-linux.json}

# Level-1 root: the cached base tree (hard links), plus level 2 and the VMMs.
stage=$(mktemp -d "$out/stage.XXXXXX")
trap 'rm -rf "$stage" "$stage.cpio" "$stage.times" "$stage.last" "$stage.monitor"' EXIT
cp -al "$out/l1-base/." "$stage/"
rm -f "$stage/.done"
mkdir -p "$stage/vmm"
[ $tmpfs_root = 1 ] && touch "$stage/vmm/jail-root"

copy_with_libraries() { # binary destination-in-stage
  install -D -m 755 "$1" "$stage$2"
  local lib
  for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -e "$stage$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$stage$lib"
  done
}

# Level 2's devices with --devices, in Firecracker's config format, for an
# unjailed kiln: level 1 puts fresh copies of the disks in /l2/run before each
# boot (the jailed kiln gets them through its API, below).
devices_config='  "drives": [
    {"drive_id": "rootfs", "path_on_host": "/l2/run/rootfs.ext4", "is_root_device": true, "is_read_only": false},
    {"drive_id": "data", "path_on_host": "/l2/run/data.img", "is_root_device": false, "is_read_only": true}
SCRATCH_DRIVE
  ],
  "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "kiln-tap0", "guest_mac": "06:00:AC:10:00:02"}],
  "entropy": {},'
scratch_drive=''
[ $bench = 1 ] && scratch_drive=',
    {"drive_id": "scratch", "path_on_host": "/l2/run/scratch.img", "is_root_device": false, "is_read_only": false}'
devices_config=${devices_config/$'\n'SCRATCH_DRIVE/$scratch_drive}
[ $vsock = 1 ] && devices_config="$devices_config
  \"vsock\": {\"guest_cid\": 3, \"uds_path\": \"/l2/run/v.sock\"},"

# The command that boots level 2 with VMM $2, whose files are under /vmm/$1.
launcher() { # index path
  local dir=/vmm/$1 name cmdline=$l2_cmdline devices_json=""
  name=$(basename "$2")
  [ $devices = 1 ] && devices_json=$devices_config
  echo '#!/bin/sh'
  case $name in
    qemu-system-*)
      # The microvm machine has no i8042, so `reboot=k` would spin in
      # kb_wait; its ACPI GED implements the sleep registers, so power off.
      # QEMU looks for its firmware (qboot) relative to its own binary.
      install -D -m 644 /usr/share/qemu/bios-microvm.bin "$stage$dir/share/qemu/bios-microvm.bin"
      local qemu_devices=""
      # The same devices as kiln's, as modern (virtio 1.x) virtio-mmio ones;
      # QEMU gets no root= of its own, so the command line says it.
      if [ $devices = 1 ]; then
        cmdline="$cmdline root=/dev/vda rw"
        qemu_devices=" -global virtio-mmio.force-legacy=false"
        qemu_devices+=" -drive id=rootfs,file=/l2/run/rootfs.ext4,format=raw,if=none -device virtio-blk-device,drive=rootfs"
        qemu_devices+=" -drive id=data,file=/l2/run/data.img,format=raw,if=none,readonly=on -device virtio-blk-device,drive=data"
        [ $bench = 1 ] && qemu_devices+=" -drive id=scratch,file=/l2/run/scratch.img,format=raw,if=none -device virtio-blk-device,drive=scratch"
        qemu_devices+=" -netdev tap,id=eth0,ifname=kiln-tap0,script=no,downscript=no"
        qemu_devices+=" -device virtio-net-device,netdev=eth0,mac=06:00:AC:10:00:02"
        qemu_devices+=" -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-device,rng=rng0"
      fi
      echo "exec $dir/bin/$name -L $dir/share/qemu -M microvm,x-option-roms=off,isa-serial=on,rtc=off" \
           "-accel kvm -cpu host -smp $vcpus -m 256 -nodefaults -no-user-config -nographic" \
           "-serial stdio -no-reboot -kernel /l2/kernel -initrd /l2/initrd.cpio" \
           "-append '$cmdline kiln.end=poweroff'$qemu_devices" ;;
    kiln)
      cat > "$stage$dir/vm.json" <<JSON
{
  "boot-source": {"kernel_image_path": "/l2/kernel", "initrd_path": "/l2/initrd.cpio", "boot_args": "$cmdline"},
$devices_json
  "machine-config": {"vcpu_count": $vcpus, "mem_size_mib": 256, "huge_pages": "Transparent"}
}
JSON
      # The policy bundle beside the binary (make release puts one there)
      # confines kiln's threads at level 1 too; without one, --no-seccomp.
      local filter=--no-seccomp
      if [ -f "$(dirname "$2")/policies.kbundle" ]; then
        install -m 444 "$(dirname "$2")/policies.kbundle" "$stage$dir/policies.kbundle"
        filter="--seccomp-filter $dir/policies.kbundle"
      fi
      # l1-vsock finds uds_path here.
      [ $vsock = 1 ] && echo "echo /l2/run/v.sock > /l2/run/vsock-uds"
      echo "exec $dir/bin/kiln --no-api $filter --config-file $dir/vm.json $kiln_args" ;;
    kiln-jailer)
      install -m 755 "$(dirname "$2")/kiln" "$stage$dir/bin/kiln"
      install -m 444 "$(dirname "$2")/policies.kbundle" "$stage$dir/policies.kbundle"
      copy_with_libraries "$(command -v curl)" /usr/bin/curl
      # The API takes what a config file holds, one resource per request:
      # all in one curl process (--next), since each exec of a dynamic
      # curl costs level 1's emulated CPU; InstanceStart alone, after them.
      local requests=("/boot-source {\"kernel_image_path\": \"/kernel\", \"initrd_path\": \"/initrd.cpio\", \"boot_args\": \"$cmdline\"}"
                      "/machine-config {\"vcpu_count\": $vcpus, \"mem_size_mib\": 256, \"huge_pages\": \"Transparent\"}")
      if [ $devices = 1 ]; then
        requests+=('/drives/rootfs {"drive_id": "rootfs", "path_on_host": "/rootfs.ext4", "is_root_device": true, "is_read_only": false}'
                   '/drives/data {"drive_id": "data", "path_on_host": "/data.img", "is_root_device": false, "is_read_only": true}'
                   '/network-interfaces/eth0 {"iface_id": "eth0", "host_dev_name": "kiln-tap0", "guest_mac": "06:00:AC:10:00:02"}'
                   '/entropy {}')
      fi
      # uds_path inside the jail, as with Firecracker's jailer.
      [ $vsock = 1 ] && requests+=('/vsock {"guest_cid": 3, "uds_path": "/run/v.sock"}')
      local request put=""
      for request in "${requests[@]}"; do
        put+=" --unix-socket \$sock -sS -X PUT -H 'Content-Type: application/json' -d '${request#* }'"
        put+=" -o /dev/null -w '%{http_code} ${request%% *}\\n' http://localhost${request%% *} --next"
      done
      # Level 1 has no user database: the ids are plain numbers. Each run
      # gets its own jail id; the jail is cleaned up after the guest ends.
      local jail="--exec-file $dir/bin/kiln --chroot-base-dir /srv/jailer" cgroup_args="" setting
      local tracer="" redirect="" cgroup_checks=":" cgroup_after=":" cgroup_gone=":" report=":"
      if [ $cgroup_v2 = 1 ]; then
        jail="$jail --parent-cgroup kiln-vms" # cleanup removes <parent>/<id>
        cgroup_args=" --cgroup-version 2"
        for setting in "${cgroup_settings[@]}"; do cgroup_args+=" --cgroup '$setting'"; done
        cgroup_checks="/l1-cgroup check \$id \$pid" cgroup_after="/l1-cgroup peak \$id" cgroup_gone="/l1-cgroup gone \$id"
        echo "[ -e /tmp/l1-cgroup-refusals ] || { touch /tmp/l1-cgroup-refusals; /l1-cgroup refusals $dir; }"
      fi
      if [ $trace = 1 ]; then
        copy_with_libraries "$(dirname "$2")/kiln-policy" "$dir/bin/kiln-policy"
        mkdir -p "$stage$dir/policies" && install -m 444 "$policies"/*.policy "$stage$dir/policies/"
        # The report to a file, the traced command's output to the console
        # as without the tracer (fd 3: the jailer closes it before kiln).
        tracer="$dir/bin/kiln-policy trace --policies $dir/policies -- /bin/sh -c 'exec \"\$@\" >&3 2>&3' sh"
        redirect=" 3>&1 > /tmp/trace-\$id.txt 2>&1"
        report="sed 's/^/KILN-L1-TRACE /' /tmp/trace-\$id.txt"
      fi
      cat <<SCRIPT
id=l2-\$\$ root=/srv/jailer/kiln/l2-\$\$/root
sock=\$root/run/kiln.socket
$tracer $dir/bin/kiln-jailer --id \$id $jail --uid 1000 --gid 1000 --seccomp-bundle $dir/policies.kbundle$cgroup_args \\
  --jail-file /l2/kernel:kernel --jail-file /l2/initrd.cpio:initrd.cpio -- --api-sock /run/kiln.socket $kiln_args$redirect &
pid=\$!
# kiln serves its API once the jail is made; the drives go into the jail
# root then (hard links of level 1's copies, so level 1 reads back what the
# guest wrote), the root drive owned by kiln's uid: --jail-file gives
# read-only files only.
waits=0
while [ ! -S \$sock ] && kill -0 \$pid 2>/dev/null && [ \$waits -lt 300 ]; do sleep 0.1; waits=\$((waits + 1)); done
if [ -S \$sock ]; then
  [ -e /l2/run/rootfs.ext4 ] && ln /l2/run/rootfs.ext4 /l2/run/data.img \$root/ && chown 1000:1000 \$root/rootfs.ext4
  [ -d /l2/run ] && echo \$root/run/v.sock > /l2/run/vsock-uds
  refused=\$(/usr/bin/curl ${put% --next} 2>&1 | grep -v '^204 ')
  if [ -z "\$refused" ]; then
    code=\$(/usr/bin/curl -sS -o /tmp/api-reply -w '%{http_code}' --unix-socket \$sock -X PUT \\
      -H 'Content-Type: application/json' -d '{"action_type": "InstanceStart"}' http://localhost/actions)
    [ "\$code" = 204 ] || { echo "KILN-L1-FAIL API InstanceStart: HTTP \$code \$(cat /tmp/api-reply)"; kill \$pid; }
    $cgroup_checks
  else
    echo "KILN-L1-FAIL API refused: \$refused"
    kill \$pid
  fi
else
  echo "KILN-L1-FAIL no API socket from the jailed kiln"
  kill \$pid 2>/dev/null
fi
wait \$pid
status=\$?
$report
$cgroup_after
$dir/bin/kiln-jailer cleanup --id \$id $jail && echo "kiln-jailer: jail \$id cleaned up"
$cgroup_gone
exit \$status
SCRIPT
      ;;
    *)
      local expanded=${args//@KERNEL@//l2/kernel}
      expanded=${expanded//@INITRD@//l2/initrd.cpio}
      expanded=${expanded//@VCPUS@/$vcpus}
      expanded=${expanded//@CMDLINE@/\'$cmdline\'}
      echo "exec $dir/bin/$name $expanded" ;;
  esac
}

if [ ${#vmms[@]} -gt 0 ]; then
  mkdir -p "$stage/l2"
  ln "$out/l2-$l2_kernel" "$stage/l2/kernel"
  ln "$out/l2-initrd.cpio" "$stage/l2/initrd.cpio"
  if [ $devices = 1 ]; then
    ln "$out/l2-rootfs.ext4" "$stage/l2/rootfs.ext4"
    ln "$out/l2-data.img" "$stage/l2/data.img"
    touch "$stage/vmm/devices"
    [ $bench = 1 ] && echo "$blk_mib $net_kib $reps" > "$stage/vmm/bench"
    [ $vsock = 1 ] && echo "$vsock_mib $vsock_conns" > "$stage/vmm/vsock"
  fi
  [ $cgroup_v2 = 1 ] && printf '%s\n' "${cgroup_settings[@]}" > "$stage/vmm/cgroup-v2"
  echo "$runs" > "$stage/vmm/runs"
  index=1
  for vmm in "${vmms[@]}"; do
    mkdir -p "$stage/vmm/$index"
    copy_with_libraries "$vmm" "/vmm/$index/bin/$(basename "$vmm")"
    basename "$vmm" > "$stage/vmm/$index/name"
    launcher $index "$vmm" > "$stage/vmm/$index/run"
    chmod 755 "$stage/vmm/$index/run"
    index=$((index + 1))
  done
fi

# The density benchmark in level 1: the harness at the same place under
# /density as in the repository, its assets, the two binaries, and Debian's
# python3 with its standard library (mtimes kept, so the cached bytecode
# stays valid), without the parts the harness never imports.
if [ -n "$density_ns" ]; then
  repo=$here/../..
  mkdir -p "$stage/density/integration/bench/density" "$stage/density/integration/out/nested" "$stage/density/bin"
  cp -p "$repo"/integration/bench/density/*.py "$stage/density/integration/bench/density/"
  ln "$out/l2-bzImage" "$out/density-initrd.cpio" "$stage/density/integration/out/nested/"
  for binary in kiln kiln-jailer; do copy_with_libraries "$density_bin/$binary" "/density/bin/$binary"; done
  if [[ ,$density_systems, == *,qemu-microvm,* ]]; then
    copy_with_libraries "$(command -v qemu-system-x86_64)" /usr/bin/qemu-system-x86_64
    install -D -m 644 /usr/share/qemu/bios-microvm.bin "$stage/usr/share/qemu/bios-microvm.bin"
  fi
  python=$(readlink -f /usr/bin/python3)
  copy_with_libraries "$python" "$python"
  ln -sf "$(basename "$python")" "$stage/usr/bin/python3"
  stdlib=$(basename "$python")
  mkdir -p "$stage/usr/lib"
  tar -C /usr/lib -cf - --exclude="$stdlib/"{test,tkinter,idlelib,lib2to3,pydoc_data,distutils,ensurepip,turtledemo,sqlite3,venv} \
      --exclude="$stdlib/"{asyncio,email,xml,xmlrpc,html,http,urllib,wsgiref,multiprocessing,curses,dbm,unittest} \
      --exclude="$stdlib/"{'config-*',dist-packages,site-packages} --exclude="$stdlib/lib-dynload/"{'_test*','_tkinter*','_curses*','_sqlite3*'} \
      "$stdlib" | tar -C "$stage/usr/lib" -xf -
  echo "--guest linux --systems $density_systems --ns $density_ns --repeat 1 --bin /density/bin --reserve-gib 0" \
       "--probe-seconds 240 --timeout 300 --no-single" > "$stage/vmm/density"
fi

(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$stage.cpio"
echo "nested: level-1 initramfs $(( $(stat -c %s "$stage.cpio") / 1048576 )) MiB;" \
     "VMMs: ${vmms[*]:-none}; vCPUs: $vcpus; runs: $runs; timeout: ${timeout_s}s"

# The level-1 command (the TSC and timer arguments keep the TCG guest from
# hanging in calibration). Each marker line is
# stamped with the host's time since QEMU's start.
start_us=${EPOCHREALTIME/./}
elapsed() { # seconds since start, two decimals
  local us=$(( ${EPOCHREALTIME/./} - start_us ))
  printf '%d.%02d' $(( us / 1000000 )) $(( us % 1000000 / 10000 ))
}
# Level 1 prints a line every few seconds. When it has said nothing for
# KILN_NESTED_SILENCE_S (150) seconds, QEMU's monitor is asked five times, a
# second apart, where level 1's CPU is: one address means a loop, HLT=1 means
# level 1 idles waiting on something, moving means slow rather than stuck.
# Level 1 boots with nokaslr, so the addresses can be looked up in the
# System.map of Debian's linux-image-*-dbg package (the one the kernel
# package ships is a placeholder).
silence_s=${KILN_NESTED_SILENCE_S:-150}
monitor=$stage.monitor
where_is_level1() {
  python3 - "$monitor" <<'PY'
import re, socket, sys, time
def ask(command):
    with socket.socket(socket.AF_UNIX) as monitor:
        monitor.settimeout(5)
        monitor.connect(sys.argv[1])
        monitor.sendall(command.encode() + b"\n")
        reply = b""
        while reply.count(b"(qemu)") < 2:
            chunk = monitor.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply.decode(errors="replace")
for sample in range(5):
    try:
        fields = dict(re.findall(r"\b(RIP|CPL|HLT)=([0-9a-f]+)", ask("info registers")))
    except OSError as error:  # after the first sample: QEMU has ended since
        if sample == 0:
            print(f"nested: level 1 silent; QEMU's monitor: {error}", flush=True)
        break
    print("nested: level 1 silent: " + " ".join(f"{name}={fields.get(name, '?')}" for name in ("RIP", "CPL", "HLT")),
          flush=True)
    time.sleep(1)
PY
}
: > "$stage.last"
(
  while sleep $(( silence_s < 10 ? 1 : 10 )); do
    [ -e "$stage.last" ] || exit 0
    if [ $(( $(date +%s) - $(stat -c %Y "$stage.last") )) -ge "$silence_s" ]; then
      echo "nested: level 1 has printed nothing for ${silence_s}s; asking QEMU where it is"
      where_is_level1
      exit 0
    fi
  done
) &
watchdog=$!

set +e
timeout -k 5 "$timeout_s" qemu-system-x86_64 \
  -M microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on \
  -accel tcg,thread=single -cpu EPYC,+svm,+npt -smp 1 -m 2048 -nodefaults -no-user-config \
  -nographic -serial stdio -monitor "unix:$monitor,server=on,wait=off" -no-reboot \
  -kernel "$out/l1-vmlinux" -initrd "$stage.cpio" \
  -append "console=ttyS0 reboot=t panic=-1 tsc_early_khz=2000000 no_timer_check quiet nokaslr" </dev/null 2>&1 |
  while IFS= read -r line; do
    : > "$stage.last"
    line=${line%$'\r'}
    case $line in *"TCG doesn't support requested feature"*) continue ;; esac
    printf '%s\n' "$line"
    case $line in *KILN-*) echo "$(elapsed) $line" >> "$stage.times" ;; esac
  done
status=${PIPESTATUS[0]}
kill "$watchdog" 2>/dev/null
wait "$watchdog" 2>/dev/null
set -e
total=$(elapsed)
touch "$stage.times"
first() { awk -v m="$1" '$0 ~ m { print $1 "s"; found = 1; exit } END { if (!found) print "-" }' "$stage.times"; }
count() { grep -c -- "$1" "$stage.times" || true; }

echo "---"
grep -o 'KILN-L1-L2-MARKER-SEEN.*' "$stage.times" | sed 's/^KILN-L1-L2-MARKER-SEEN/level-2 marker:/' || true
grep -o 'KILN-L1-HTTP-OK.*' "$stage.times" | sed 's/^KILN-L1-HTTP-OK/level-2 page fetched:/' || true
summary="host_wall=${total}s l1_init=$(first KILN-L1-INIT) kvm_ready=$(first KILN-L1-KVM-READY)"
[ $boots -gt 0 ] && summary="$summary first_l2_marker=$(first KILN-L2-USERSPACE-MARKER)"
[ "$status" = 124 ] && summary="$summary (timed out after ${timeout_s}s)"

verdict=PASS
if [ "$(count KILN-L1-FAIL)" != 0 ] || [ "$(first KILN-L1-KVM-READY)" = - ]; then
  verdict=FAIL
elif [ $boots -gt 0 ]; then
  [ "$(count KILN-L1-L2-MARKER-SEEN)" = $boots ] || verdict=FAIL
  [ "$(count 'KILN-L1-VMM-STATUS.*status=0$')" = $boots ] || verdict=FAIL
  summary="$summary l2_markers=$(count KILN-L1-L2-MARKER-SEEN)/$boots"
  if [ $devices = 1 ]; then
    # Every check of every boot, and no failure from level 2.
    for check in KILN-L2-BLOCK-OK KILN-L2-DATA-RO-OK KILN-L2-RNG-OK KILN-L1-HTTP-OK KILN-L1-HTTP-BULK-OK KILN-L1-PING-OK \
        KILN-L1-WRITEBACK-OK KILN-L1-DATA-UNCHANGED; do
      [ "$(count "$check")" = $boots ] || { verdict=FAIL; summary="$summary $check=$(count "$check")/$boots"; }
    done
    [ "$(count KILN-L2-FAIL)" = 0 ] || verdict=FAIL
    summary="$summary devices=$([ $verdict = PASS ] && echo ok || echo failed)"
  fi
  if [ $vsock = 1 ]; then
    # Both directions, checked at both ends, in every boot.
    vsock_verdict=ok
    for check in "KILN-L1-VSOCK-ECHO .* ok unix-connect bytes=$((vsock_mib * 1048576)) " \
        "KILN-L2-VSOCK-CONNECT ok vsock-connect bytes=1048576 " "KILN-L1-VSOCK-LISTENER .* ok unix-listen connections=1 bytes=1048576 " \
        "KILN-L2-VSOCK-LISTENER ok vsock-listen connections=$((1 + vsock_conns)) "; do
      [ "$(count "$check")" = $boots ] || { verdict=FAIL vsock_verdict=failed; summary="$summary ${check%% *}=$(count "$check")/$boots"; }
    done
    [ $vsock_conns = 0 ] || [ "$(count "KILN-L1-VSOCK-RATE .* ok unix-rate connections=$vsock_conns ")" = $boots ] \
      || verdict=FAIL vsock_verdict=failed
    summary="$summary vsock=$vsock_verdict"
  fi
  if [ $cgroup_v2 = 1 ]; then
    # The refusals once, and every boot's values, membership and removal.
    cgroup_verdict=ok
    for check in "KILN-L1-CGROUP-REFUSED-OK:1" "KILN-L1-CGROUP-JOINED-OK:1" "KILN-L1-CGROUP-BUSY-REFUSED-OK:1" "KILN-L1-CGROUP-HOLDS:$(( boots * ${#cgroup_settings[@]} ))" \
        "KILN-L1-CGROUP-MEMBER:$boots" "KILN-L1-CGROUP-GONE:$boots"; do
      [ "$(count "${check%:*} ")" = "${check##*:}" ] || { verdict=FAIL cgroup_verdict=failed; summary="$summary ${check%:*}=$(count "${check%:*} ")/${check##*:}"; }
    done
    summary="$summary cgroup-v2=$cgroup_verdict"
  fi
  if [ $trace = 1 ]; then
    # kiln-policy trace's report, and a line per role: calls refused (a
    # workload that would have died), rules that allowed nothing.
    mkdir -p "$(dirname "$trace_out")"
    grep -o 'KILN-L1-TRACE .*' "$stage.times" | sed 's/^KILN-L1-TRACE //' > "$trace_out" || true
    echo "kiln-policy trace in level 1 (report: $trace_out):"
    awk '
      function flush() {
        if (role == "") return
        if (entered == "") { printf "  trace role=%s not entered\n", role; return }
        printf "  trace role=%s %s refused=%d unused=%d%s\n", role, entered, refused, unused, (names == "" ? "" : " (" substr(names, 2) ")")
      }
      # "== role R: T thread(s), C calls, U of N rules used"
      /^== role / { flush(); role = $3; sub(/:$/, "", role); entered = ($4 == "not" ? "" : "threads=" $4 " calls=" $6 " used=" $8 "/" $10)
                    refused = 0; unused = 0; names = ""; section = ""; next }
      # "== start-up, jailed (…): P program(s), C calls, S system calls" (exec to the launch role)
      /^== start-up/ { flush(); role = ($3 == "jailed" ? "start-up-jailed" : "start-up-unjailed")
                       entered = ($NF == "trace" ? "" : "programs=" $(NF - 6) " calls=" $(NF - 4) " syscalls=" $(NF - 2))
                       refused = 0; unused = 0; names = ""; section = ""; next }
      /^  calls not allowed/ { section = "refused"; next }
      /^  rules that allowed nothing/ { section = "unused"; next }
      /^  [^ ]/ { section = ""; next }
      section == "refused" && /^    [^ ]/ { n = $2; sub(/^x/, "", n); refused += n }
      section == "unused" && /^    [^ ]/ { unused++; name = $1; sub(/:$/, "", name); names = names "," name }
      END { flush() }' "$trace_out"
    trace_verdict=ok
    [ "$(grep -c '^command exited with status 0$' "$trace_out")" = $boots ] || trace_verdict=failed
    grep -q '^DISAGREEMENT' "$trace_out" && trace_verdict=failed
    awk '/^  calls not allowed/ { section = 1; next } /^  [^ ]/ || /^==/ { section = 0 } section && /^    [^ ]/ { found = 1 } END { exit !found }' \
      "$trace_out" && trace_verdict=failed
    [ $trace_verdict = ok ] || verdict=FAIL
    summary="$summary trace=$trace_verdict"
  fi
fi
if [ $vsock = 1 ]; then
  # The figures, as level 1 timed them with its own clock.
  echo "vsock through each VMM (level 1 to level 2 and back; host load average $(cut -d' ' -f1-3 /proc/loadavg)):"
  grep -o 'KILN-L1-VSOCK-\(ECHO\|RATE\) .*' "$stage.times" | tr -d '\r' | awk '
    function field(name,   i) { for (i = 2; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2); return "" }
    /ok unix-connect/ { s = field("seconds"); b = field("bytes")
      printf "  %-12s run %s  echo %d MiB each way: %.2f s, %.2f MiB/s\n", field("vmm"), field("run"), b / 1048576, s, (s > 0 ? b / 1048576 / s : 0) }
    /ok unix-rate/ { printf "  %-12s run %s  %s connections (CONNECT, 1 byte echoed, close) in %.2f s: %.1f per second\n", field("vmm"), field("run"), field("connections"), field("seconds"), field("per_second") }'
fi
if [ $bench = 1 ]; then
  [ "$(count 'KILN-L1-BENCH .*test=blk-.*status=0$')" = $(( boots * reps * 2 )) ] || verdict=FAIL
  [ "$(count 'KILN-L1-BENCH .*test=net-')" = $(( boots * reps * 2 )) ] || verdict=FAIL
  [ "$(count KILN-L1-BENCH-FAIL)" = 0 ] || verdict=FAIL
  echo "I/O benchmark: level 1's seconds from each step's start to its end, every repeat,"
  echo "then the median and MiB/s from it. Host load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  # The figures, per VMM and test: every repeat, the median, MiB/s; then
  # kiln's median over QEMU's (above 1: kiln slower).
  grep -o 'KILN-L1-BENCH .*' "$stage.times" | awk -v blk=$blk_mib -v kib=$net_kib '
    function median(list,   n, a, i, j, t) {
      n = split(list, a, " ")
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { gsub(/\r/, "") }
    function field(name,   i) { for (i = 2; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2); return "" }
    /^KILN-L1-BENCH / {
      vmm = field("vmm"); test = field("test"); key = vmm SUBSEP test
      if (!(vmm in seen)) { seen[vmm] = 1; vmms[++nv] = vmm }
      secs[key] = secs[key] (secs[key] == "" ? "" : " ") field("seconds")
    }
    END {
      split("blk-write blk-read net-fetch net-post", tests, " ")
      label["blk-write"] = "block write, dd oflag=direct " blk " MiB"; label["blk-read"] = "block read, dd iflag=direct " blk " MiB"
      label["net-fetch"] = "net, level 1 fetches " kib " KiB (wget)"; label["net-post"] = "net, level 1 POSTs " kib " KiB (wget)"
      for (t = 1; t <= 4; t++) {
        test = tests[t]
        printf "%s\n", label[test]
        for (v = 1; v <= nv; v++) {
          key = vmms[v] SUBSEP test
          if (secs[key] == "") { printf "  %-22s -\n", vmms[v]; continue }
          m = median(secs[key]); med[key] = m
          if (test ~ /^net/) printf "  %-22s %s s (median %.2f s, %.0f KiB/s)\n", vmms[v], secs[key], m, (m > 0 ? kib / m : 0)
          else printf "  %-22s %s s (median %.2f s, %.1f MiB/s)\n", vmms[v], secs[key], m, (m > 0 ? blk / m : 0)
        }
        k = ""; q = ""
        for (v = 1; v <= nv; v++) { if (vmms[v] ~ /^kiln/) k = vmms[v] SUBSEP test; if (vmms[v] ~ /^qemu/) q = vmms[v] SUBSEP test }
        if (k != "" && q != "" && med[q] > 0) printf "  kiln/QEMU time ratio %.2f\n", med[k] / med[q]
      }
    }'
  summary="$summary bench=$(count 'KILN-L1-BENCH ')/$(( boots * reps * 4 ))"
fi
if [ -n "$density_ns" ]; then
  # The JSON as level 1 printed it; each system must have run every N with no failure.
  grep -o 'KILN-L1-DENSITY-JSON .*' "$stage.times" | sed 's/^KILN-L1-DENSITY-JSON //' > "$density_json" || true
  density_verdict=$(/usr/bin/python3 - "$density_json" "$density_ns" "$density_systems" <<'PY'
import json, sys
try:
    results = json.load(open(sys.argv[1]))["results"]
except (OSError, ValueError, KeyError) as error:
    print(f"no JSON from level 1 ({error})")
    sys.exit()
wanted = [int(n) for n in sys.argv[2].split(",")]
problems = []
for system in sys.argv[3].split(","):
    rows = {entry["n"]: entry for entry in results if entry["system"] == system}
    problems += [f"{system} not runnable: {entry['note'][:300]}" for entry in rows.values() if not entry.get("runnable", True)]
    problems += [f"{system} N={n}: {'not run' if n not in rows else str(rows[n].get('failures')) + ' failed'}"
                 for n in wanted if n not in rows or rows[n].get("failures") != 0]
print("; ".join(problems) or "ok")
PY
)
  [ "$(count 'KILN-L1-DENSITY-STATUS status=0 ')" = 1 ] || density_verdict="$density_verdict; run.py did not exit 0"
  [ "$density_verdict" = ok ] || verdict=FAIL
  echo "density --guest linux in level 1: $density_verdict (JSON: $density_json)"
  summary="$summary density=$([ "$density_verdict" = ok ] && echo ok || echo failed)"
fi
echo "nested: $verdict vcpus=$vcpus $summary"
[ $verdict = PASS ]
