#!/usr/bin/env bash
# Traces the lane-1 workloads (workload.sh) with `kiln-policy trace`: every
# role kiln and kiln-jailer install records instead of acting, and the
# report says per role which rules allowed nothing, which calls the roles
# would have refused, and what the unconditioned calls' arguments were.
#
#   run.sh [--short] [--json FILE]     (default FILE: integration/out/policy-trace.json)
#
# Environment: KILN, KILN_JAILER, KILN_POLICY (default: the debug build's).
# Exit status: kiln-policy trace's (1 when a role would have refused a call),
# or 1 when a workload step failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=$(cd "$root" && swift build --show-bin-path)
export KILN=${KILN:-$bin/kiln} KILN_JAILER=${KILN_JAILER:-$bin/kiln-jailer}
policy=${KILN_POLICY:-$bin/kiln-policy}
json=$root/integration/out/policy-trace.json
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --short) args+=(--short); shift ;;
        --json) json=${2:?--json needs a file}; shift 2 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
mkdir -p "$(dirname "$json")"
exec "$policy" trace --policies "$root/policies" --json "$json" -- "$here/workload.sh" "${args[@]}"
