#!/usr/bin/env bash
# Property-based API test: schemathesis generates requests from Firecracker's
# OpenAPI spec (reference/firecracker-api.yaml) and sends them to a real
# `kiln --api-sock` with every thread's seccomp filter on. Passes when the
# run ends with no 5xx answer (check not_a_server_error) and kiln is still
# alive, then stops on SIGTERM (exit 143) and removes its socket.
#
# kiln runs chrooted, as nobody, in an empty scratch folder: generated
# requests name arbitrary log, metrics and kernel paths, which must land
# nowhere else. Needs root (chroot) and schemathesis (`make api-test-deps`:
# on the PATH, or in integration/out/venv).
# Two runs: before boot, and with the lane-1 guest booted (GUEST, built by
# `make guest`), so that the post-boot API is fuzzed as well.
#   integration/api/schemathesis.sh KILN KILN-POLICY [GUEST]
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${1:-.build/debug/kiln}
KILN_POLICY=${2:-.build/debug/kiln-policy}
GUEST=${3:-integration/out/kiln-test-guest.elf}
SPEC=$PWD/integration/api/reference/firecracker-api.yaml
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
# After boot most calls are refused early; fewer examples keep the second
# run short.
POST_BOOT_MAX_EXAMPLES=${POST_BOOT_MAX_EXAMPLES:-10}
# Per run; schemathesis alone takes a minute on a loaded 2-core machine.
SECONDS_LIMIT=${SECONDS_LIMIT:-300}
# Which runs (a developer may pick one): pre-boot, post-boot.
RUNS=${RUNS:-pre-boot post-boot}

# A skip passes a developer's run, saying why; under KILN_STRICT (CI) it fails.
skip() {
  if [ -n "${KILN_STRICT:-}" ]; then echo "schemathesis: KILN_STRICT: cannot skip: $1" >&2; exit 1; fi
  echo "schemathesis: SKIPPED: $1"; exit 0
}

SCHEMATHESIS=$(command -v schemathesis || true)
if [ -z "$SCHEMATHESIS" ] && [ -x integration/out/venv/bin/schemathesis ]; then
  SCHEMATHESIS=$PWD/integration/out/venv/bin/schemathesis
fi
if [ -z "$SCHEMATHESIS" ]; then
  skip "schemathesis is not installed (make api-test-deps could not install it)"
fi
[ "$(id -u)" = 0 ] || skip "needs root to chroot kiln"
[ -x "$KILN" ] && [ -x "$KILN_POLICY" ] || { echo "schemathesis: missing $KILN or $KILN_POLICY" >&2; exit 1; }

scratch=$(mktemp -d /tmp/kiln-schemathesis.XXXXXX)
kiln_pid=""; shim_pid=""
cleanup() {
  [ -n "$shim_pid" ] && kill "$shim_pid" 2>/dev/null || true
  [ -n "$kiln_pid" ] && kill -KILL "$kiln_pid" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

# One request on kiln's socket; prints the status code.
api() { # METHOD PATH BODY
  python3 - "$root/api.sock" "$@" <<'PY'
import socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(10)
sock.connect(sys.argv[1])
body = sys.argv[4].encode()
sock.sendall(f"{sys.argv[2]} {sys.argv[3]} HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
print(sock.recv(65536).split(b" ")[1].decode())
PY
}

# One schemathesis run against a fresh kiln. "pre-boot": kiln as started,
# no VM. "post-boot": the lane-1 guest booted first ("idle": it waits with
# interrupts on and ignores the keyboard, so no generated request ends the
# VM), so the post-boot API is fuzzed too; that needs /dev/kvm in the chroot.
run_phase() { # PHASE
  local phase=$1
  root="$scratch/$phase"
  mkdir -p "$root"
  cp "$KILN" "$root/kiln"
  "$KILN_POLICY" compile --policies policies --output "$root/filters.kbundle" >/dev/null
  if [ "$phase" = post-boot ]; then
    cp "$GUEST" "$root/guest.elf"
    mkdir -p "$root/dev"
    mknod -m 0600 "$root/dev/kvm" c 10 232
  fi
  chown -R 65534:65534 "$root"

  chroot --userspec=65534:65534 "$root" /kiln --api-sock /api.sock --seccomp-filter /filters.kbundle \
    --level Warning >"$scratch/kiln.out" 2>"$scratch/kiln.err" &
  kiln_pid=$!
  for _ in $(seq 200); do [ -S "$root/api.sock" ] && break; sleep 0.05; done
  [ -S "$root/api.sock" ] || { echo "kiln did not open its API socket" >&2; cat "$scratch/kiln.err" >&2; exit 1; }
  if [ "$phase" = post-boot ]; then
    [ "$(api PUT /boot-source '{"kernel_image_path": "/guest.elf", "boot_args": "console=ttyS0 idle"}')" = 204 ] \
      && [ "$(api PUT /actions '{"action_type": "InstanceStart"}')" = 204 ] \
      || { echo "schemathesis: the guest did not start" >&2; cat "$scratch/kiln.err" >&2; exit 1; }
    for _ in $(seq 400); do grep -q "guest: idle" "$scratch/kiln.out" && break; sleep 0.05; done
    grep -q "guest: idle" "$scratch/kiln.out" \
      || { echo "schemathesis: the guest did not reach idle in 20 s" >&2; cat "$scratch/kiln.out" "$scratch/kiln.err" >&2; exit 1; }
  fi
  python3 integration/api/tcp_to_unix.py "$root/api.sock" "$scratch/port" &
  shim_pid=$!
  for _ in $(seq 100); do [ -s "$scratch/port" ] && break; sleep 0.05; done
  port=$(cat "$scratch/port")

  local examples=$MAX_EXAMPLES
  [ "$phase" = post-boot ] && examples=$POST_BOOT_MAX_EXAMPLES
  status=0
  # From the scratch folder: schemathesis keeps a cache in its working directory.
  (cd "$scratch" && timeout -k 5 "$SECONDS_LIMIT" "$SCHEMATHESIS" run "$SPEC" --url "http://127.0.0.1:$port" \
    --checks not_a_server_error --max-examples "$examples" --request-timeout 5 \
    --generation-deterministic --no-color) || status=$?

  if ! kill -0 "$kiln_pid" 2>/dev/null; then
    wait "$kiln_pid" || echo "kiln ended during the $phase run with status $?" >&2
    cat "$scratch/kiln.err" >&2
    exit 1
  fi
  kill -TERM "$kiln_pid"
  kiln_status=0; wait "$kiln_pid" || kiln_status=$?
  kiln_pid=""
  kill "$shim_pid" 2>/dev/null || true; wait "$shim_pid" 2>/dev/null || true; shim_pid=""
  rm -f "$scratch/port"
  if [ "$kiln_status" != 143 ]; then
    echo "kiln exited with $kiln_status on SIGTERM after the $phase run, expected 143" >&2; cat "$scratch/kiln.err" >&2; exit 1
  fi
  [ ! -e "$root/api.sock" ] || { echo "kiln left its API socket behind" >&2; exit 1; }
  [ "$status" = 0 ] || { echo "schemathesis failed ($status) in the $phase run" >&2; exit "$status"; }
  echo "schemathesis ($phase): no 5xx, kiln alive to the end and stopped cleanly"
}

for run in $RUNS; do
  if [ "$run" = post-boot ] && ! { [ -r "$GUEST" ] && [ -c /dev/kvm ]; }; then
    skip "the post-boot run needs the lane-1 guest ($GUEST: make guest) and /dev/kvm"
  fi
  run_phase "$run"
done
