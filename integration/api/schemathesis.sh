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
#   integration/api/schemathesis.sh KILN KILN-POLICY
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${1:-.build/debug/kiln}
KILN_POLICY=${2:-.build/debug/kiln-policy}
SPEC=$PWD/integration/api/reference/firecracker-api.yaml
MAX_EXAMPLES=${MAX_EXAMPLES:-25}
SECONDS_LIMIT=${SECONDS_LIMIT:-150}

SCHEMATHESIS=$(command -v schemathesis || true)
if [ -z "$SCHEMATHESIS" ] && [ -x integration/out/venv/bin/schemathesis ]; then
  SCHEMATHESIS=$PWD/integration/out/venv/bin/schemathesis
fi
if [ -z "$SCHEMATHESIS" ]; then
  echo "schemathesis: SKIPPED: schemathesis is not installed (make api-test-deps could not install it)"; exit 0
fi
[ "$(id -u)" = 0 ] || { echo "schemathesis: SKIPPED: needs root to chroot kiln"; exit 0; }
[ -x "$KILN" ] && [ -x "$KILN_POLICY" ] || { echo "schemathesis: missing $KILN or $KILN_POLICY" >&2; exit 1; }

scratch=$(mktemp -d /tmp/kiln-schemathesis.XXXXXX)
root="$scratch/root"
mkdir -p "$root"
cp "$KILN" "$root/kiln"
"$KILN_POLICY" compile --policies policies --output "$root/filters.kbundle" >/dev/null
chown -R 65534:65534 "$root"
kiln_pid=""; shim_pid=""
cleanup() {
  [ -n "$shim_pid" ] && kill "$shim_pid" 2>/dev/null || true
  [ -n "$kiln_pid" ] && kill -KILL "$kiln_pid" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

chroot --userspec=65534:65534 "$root" /kiln --api-sock /api.sock --seccomp-filter /filters.kbundle \
  --level Warning >"$scratch/kiln.out" 2>"$scratch/kiln.err" &
kiln_pid=$!
for _ in $(seq 200); do [ -S "$root/api.sock" ] && break; sleep 0.05; done
[ -S "$root/api.sock" ] || { echo "kiln did not open its API socket" >&2; cat "$scratch/kiln.err" >&2; exit 1; }
python3 integration/api/tcp_to_unix.py "$root/api.sock" "$scratch/port" &
shim_pid=$!
for _ in $(seq 100); do [ -s "$scratch/port" ] && break; sleep 0.05; done
port=$(cat "$scratch/port")

status=0
# From the scratch folder: schemathesis keeps a cache in its working directory.
(cd "$scratch" && timeout -k 5 "$SECONDS_LIMIT" "$SCHEMATHESIS" run "$SPEC" --url "http://127.0.0.1:$port" \
  --checks not_a_server_error --max-examples "$MAX_EXAMPLES" --request-timeout 5 \
  --generation-deterministic --no-color) || status=$?

if ! kill -0 "$kiln_pid" 2>/dev/null; then
  wait "$kiln_pid" || echo "kiln ended during the run with status $?" >&2
  cat "$scratch/kiln.err" >&2
  exit 1
fi
kill -TERM "$kiln_pid"
kiln_status=0; wait "$kiln_pid" || kiln_status=$?
kiln_pid=""
if [ "$kiln_status" != 143 ]; then
  echo "kiln exited with $kiln_status on SIGTERM, expected 143" >&2; cat "$scratch/kiln.err" >&2; exit 1
fi
[ ! -e "$root/api.sock" ] || { echo "kiln left its API socket behind" >&2; exit 1; }
[ "$status" = 0 ] || { echo "schemathesis failed ($status)" >&2; exit "$status"; }
echo "schemathesis: no 5xx, kiln alive to the end and stopped cleanly"
