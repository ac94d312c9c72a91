#!/usr/bin/env bash
# Lists the tests a `swift test` run skipped or cancelled, with the reason
# each gave, from the run's console output (Swift Testing marks both with
# "➜"). Under KILN_STRICT (CI, whose machine has KVM, root, QEMU and the
# network) any such test fails the run; otherwise the list is a reminder.
#   integration/test-skips.sh SWIFT-TEST-LOG
set -euo pipefail
log=${1:?usage: integration/test-skips.sh SWIFT-TEST-LOG}
[ -r "$log" ] || { echo "test-skips: cannot read $log" >&2; exit 1; }
# A skipped suite also reports each of its tests: count the tests only.
skips=$(grep -E '^➜ (Test .* skipped: |Test .* was cancelled)' "$log" || true)
[ -n "$skips" ] || { echo "make test: no test skipped"; exit 0; }
count=$(printf '%s\n' "$skips" | wc -l)
if [ -n "${KILN_STRICT:-}" ]; then
  echo "make test: KILN_STRICT: $count tests skipped or cancelled, each must run here:" >&2
  printf '%s\n' "$skips" >&2
  exit 1
fi
echo "make test: $count tests skipped or cancelled (KILN_STRICT=1 makes this a failure):"
printf '%s\n' "$skips"
