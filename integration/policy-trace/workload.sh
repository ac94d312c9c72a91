#!/usr/bin/env bash
# The lane-1 workloads `kiln-policy trace` runs kiln under (run.sh traces this
# whole script; only the processes that install a role are recorded). Each
# step checks its own outcome; the script exits 1 after the last step if any
# failed, and removes everything it made (TAP, jail, scratch) on any exit.
#
#   workload.sh [--short]     --short: the plain boot with drives and entropy only
#
# Environment: KILN, KILN_JAILER (binaries), GUEST (the lane-1 guest ELF).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export POLICY_TRACE_ROOT=$root
KILN=${KILN:?KILN must name the kiln binary}
KILN_JAILER=${KILN_JAILER:-}
GUEST=${GUEST:-$root/integration/out/kiln-test-guest.elf}
short=0
[ "${1:-}" = "--short" ] && short=1

scratch=$(mktemp -d /tmp/kiln-policy-trace.XXXXXX)
tap="kpt$(( $$ % 100000 ))"
jail_id="policy-trace-$$"
jail_base="$scratch/jails"
failed=0
cleanup() {
    [ -n "$KILN_JAILER" ] && [ -d "$jail_base" ] && \
        "$KILN_JAILER" cleanup --id "$jail_id" --exec-file "$KILN" --chroot-base-dir "$jail_base" >/dev/null 2>&1
    ip link del "$tap" >/dev/null 2>&1
    rm -rf "$scratch"
}
trap cleanup EXIT

step() { echo "workload: $*" >&2; }
fail() { echo "workload: FAILED: $*" >&2; failed=1; }
# start_tap_echo: the host's side of the guest's UDP echo, in the background
# (echo_pid), bound before this returns (the guest says hello only once).
start_tap_echo() {
    rm -f "$scratch/tap-ready"
    python3 "$here/tap_echo.py" "$tap" 30 "$scratch/tap-ready" & echo_pid=$!
    for _ in $(seq 100); do [ -e "$scratch/tap-ready" ] && return; sleep 0.1; done
    fail "tap_echo.py never bound its socket"
}
# expect STATUS DESCRIPTION -- COMMAND...: runs COMMAND under a deadline.
expect() {
    local want=$1 what=$2; shift 3
    timeout -k 5 60 "$@"
    local got=$?
    [ "$got" = "$want" ] || fail "$what: exit status $got, expected $want"
}

make_drive() { # a 1 MiB drive whose sector 0 starts with KILN-SECTOR-ZERO
    head -c 1048576 /dev/zero | tr '\0' '\356' > "$1"
    printf 'KILN-SECTOR-ZERO' | dd of="$1" conv=notrunc status=none
}
make_drive "$scratch/ro.img"
make_drive "$scratch/rw.img"
make_drive "$scratch/rw.img.2"

have_tap=0
if [ "$short" = 0 ] && ip tuntap add dev "$tap" mode tap >/dev/null 2>&1 && ip link set "$tap" up; then
    have_tap=1
fi

config() { # config BOOT_ARGS [net]
    local net=""
    [ "${2:-}" = net ] && [ "$have_tap" = 1 ] && \
        net=", \"network-interfaces\": [{\"iface_id\": \"n0\", \"host_dev_name\": \"$tap\", \"guest_mac\": \"06:00:4b:49:4c:4e\"}]"
    cat <<JSON
{"boot-source": {"kernel_image_path": "$GUEST", "boot_args": "$1"},
 "machine-config": {"vcpu_count": 1, "mem_size_mib": 128},
 "drives": [{"drive_id": "ro", "path_on_host": "$scratch/ro.img", "is_root_device": false, "is_read_only": true},
            {"drive_id": "rw", "path_on_host": "$scratch/rw.img", "is_root_device": false, "is_read_only": false,
             "cache_type": "Writeback"}],
 "entropy": {}$net}
JSON
}

# 1. A full boot without the API: every device (block read-only and
#    read-write, rng, net on a TAP with the host's echo), console input, the
#    CMOS clock, the boot timer, log and metrics files, ACPI power-off.
step "boot with every device, console input, power-off"
config "console=ttyS0 echo rtc poweroff" net > "$scratch/full.json"
[ "$have_tap" = 1 ] && start_tap_echo
printf 'console input for the guest\n' > "$scratch/console.in"
expect 0 "full boot" -- "$KILN" --no-api --config-file "$scratch/full.json" --boot-timer --log-path "$scratch/full.log" \
    --level Debug --metrics-path "$scratch/full.metrics" < "$scratch/console.in" > "$scratch/full.out"
grep -q "guest: virtio done" "$scratch/full.out" || fail "full boot: the guest did not finish its virtio tests"
grep -q "guest: echo: console input" "$scratch/full.out" || fail "full boot: the guest did not echo its console input"
if [ "$have_tap" = 1 ]; then
    wait "$echo_pid" || fail "full boot: no hello and echo over the TAP"
    grep -q "guest: net echoed" "$scratch/full.out" || fail "full boot: the guest echoed nothing"
fi
if [ "$short" = 1 ]; then
    [ "$failed" = 0 ] || exit 1
    exit 0
fi

# 1b. The same guest with a terminal for stdin: kiln makes it raw and
#     restores it at exit, under the vmm role.
step "boot with a terminal for the console"
config "console=ttyS0 poweroff" > "$scratch/tty.json"
expect 0 "terminal boot" -- script -qec "$KILN --no-api --config-file $scratch/tty.json" /dev/null \
    < /dev/null > "$scratch/tty.out"
grep -q "guest: virtio done" "$scratch/tty.out" || fail "terminal boot: the guest did not finish its virtio tests"

# 2. The API: configure, large and refused bodies, start, pause, flush
#    metrics, resume, a drive swapped after boot, Ctrl-Alt-Del (the guest
#    resets on it and kiln exits 0).
step "the API sequence"
tap_arg=""
[ "$have_tap" = 1 ] && tap_arg=$tap
timeout -k 5 60 "$KILN" --api-sock "$scratch/api.sock" > "$scratch/api.out" 2>&1 &
kiln_pid=$!
[ "$have_tap" = 1 ] && start_tap_echo
python3 "$here/api_workload.py" "$scratch/api.sock" "$scratch/api.out" "$scratch" "$GUEST" "$scratch/ro.img" "$scratch/rw.img" \
    $tap_arg || fail "API sequence: unexpected answers"
[ "$have_tap" = 1 ] && { wait "$echo_pid" || fail "API sequence: no hello and echo over the TAP"; }
wait "$kiln_pid"; status=$?
[ "$status" = 0 ] || fail "API sequence: kiln exited $status, expected 0 (the guest's reset)"
grep -q "guest: ctrl-alt-del received" "$scratch/api.out" || fail "API sequence: the guest saw no Ctrl-Alt-Del"

# 3. The halt check: the guest halts with interrupts off; the event loop
#    kicks the vCPU and reads its state (exit 3). The console goes to a file.
step "halt with interrupts off"
config "console=ttyS0 halt" > "$scratch/halt.json"
expect 3 "halt" -- "$KILN" --no-api --config-file "$scratch/halt.json" --console-output "$scratch/halt.console" \
    > "$scratch/halt.out" 2>&1
grep -q "guest: halting" "$scratch/halt.console" || fail "halt: the console output file lacks the guest's lines"

# 4. A stop by signal while the guest runs: SIGTERM ends kiln (143) and
#    removes its API socket.
step "SIGTERM while the guest runs"
config "console=ttyS0 noreset" > "$scratch/term.json"
timeout -k 5 60 "$KILN" --api-sock "$scratch/term.sock" --config-file "$scratch/term.json" > "$scratch/term.out" 2>&1 &
kiln_pid=$!
for _ in $(seq 100); do grep -q "guest: ready" "$scratch/term.out" 2>/dev/null && break; sleep 0.1; done
grep -q "guest: ready" "$scratch/term.out" || fail "SIGTERM: the guest never got ready"
kill -TERM "$kiln_pid"
wait "$kiln_pid"; status=$?
[ "$status" = 143 ] || fail "SIGTERM: kiln exited $status, expected 143"
[ -e "$scratch/term.sock" ] && fail "SIGTERM: the API socket is left behind"

# 5. Error paths: a configuration kiln refuses, a kernel that is not a
#    kernel (InstanceStart refused, kiln runs on until SIGTERM), a bad flag.
step "error paths"
echo '{"machine-config": {"vcpu_count": 0}}' > "$scratch/bad.json"
expect 1 "bad config" -- "$KILN" --no-api --config-file "$scratch/bad.json" > /dev/null 2>&1
expect 1 "bad flag" -- "$KILN" --no-such-flag > /dev/null 2>&1
timeout -k 5 60 "$KILN" --api-sock "$scratch/err.sock" > "$scratch/err.out" 2>&1 &
kiln_pid=$!
python3 - "$scratch/err.sock" "$scratch/ro.img" <<'PY' || fail "error paths: unexpected API answers"
import sys, os
sys.path.insert(0, os.path.join(os.environ["POLICY_TRACE_ROOT"], "integration", "api"))
from unix_http import Client, wait_for_socket
assert wait_for_socket(sys.argv[1], 20)
client = Client(sys.argv[1])
assert client.request("PUT", "/boot-source", {"kernel_image_path": sys.argv[2]})[0] == 204
assert client.request("PUT", "/actions", {"action_type": "InstanceStart"})[0] == 400
assert client.request("PUT", "/boot-source", {"kernel_image_path": "/nonexistent"})[0] == 204
assert client.request("PUT", "/actions", {"action_type": "InstanceStart"})[0] == 400
PY
kill -TERM "$kiln_pid"
wait "$kiln_pid"; status=$?
[ "$status" = 143 ] || fail "error paths: kiln exited $status after SIGTERM, expected 143"

# 6. Jailed: kiln-jailer's pre-exec role, then kiln's own, with drives,
#    entropy and the API socket in the jail's /run (root only).
if [ -n "$KILN_JAILER" ] && [ "$(id -u)" = 0 ]; then
    step "jailed boot with drives and entropy"
    mkdir -p "$jail_base"
    cat > "$scratch/jail.json" <<JSON
{"boot-source": {"kernel_image_path": "/guest.elf", "boot_args": "console=ttyS0 ctrlaltdel"},
 "machine-config": {"vcpu_count": 2, "mem_size_mib": 128},
 "drives": [{"drive_id": "ro", "path_on_host": "/ro.img", "is_root_device": false, "is_read_only": true}],
 "entropy": {}}
JSON
    timeout -k 5 60 "$KILN_JAILER" --id "$jail_id" --exec-file "$KILN" --chroot-base-dir "$jail_base" \
        --uid 64125 --gid 64126 --jail-file "$GUEST:guest.elf" --jail-file "$scratch/ro.img:ro.img" \
        --jail-file "$scratch/jail.json:vm.json" -- --api-sock /run/api.sock --config-file /vm.json \
        > "$scratch/jail.out" 2>&1 &
    jailer_pid=$!
    python3 - "$jail_base/$(basename "$KILN")/$jail_id/root/run/api.sock" "$scratch/jail.out" <<'PY' \
        || fail "jailed boot: unexpected API answers"
import os, sys, time
sys.path.insert(0, os.path.join(os.environ["POLICY_TRACE_ROOT"], "integration", "api"))
from unix_http import Client, wait_for_socket
assert wait_for_socket(sys.argv[1], 20), "no API socket"
client = Client(sys.argv[1])
assert client.request("GET", "/")[0] == 200
deadline = time.monotonic() + 30
while "guest: waiting for ctrl-alt-del" not in open(sys.argv[2], errors="replace").read():
    assert time.monotonic() < deadline, "the guest never waited for Ctrl-Alt-Del"
    time.sleep(0.1)
assert client.request("PUT", "/actions", {"action_type": "SendCtrlAltDel"})[0] == 204
PY
    wait "$jailer_pid"; status=$?
    [ "$status" = 0 ] || fail "jailed boot: exit status $status, expected 0"
    grep -q "guest: virtio done" "$scratch/jail.out" || fail "jailed boot: the guest did not finish its virtio tests"
fi

[ "$failed" = 0 ] || exit 1
exit 0
