#!/usr/bin/env bash
# Builds one libFuzzer target with coverage and runs it on its seed corpus.
#
#   integration/fuzz/run.sh fuzz-json [seconds]
#
# SwiftPM's `--sanitize fuzzer` alone links libFuzzer but leaves Swift code
# uninstrumented here (libFuzzer then reports "no interesting inputs"), so the
# coverage kinds libFuzzer reads are asked for explicitly. trace-pc-guard,
# swiftc's default for `-sanitize-coverage=edge`, is refused by current libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:?usage: $0 FUZZ_TARGET [seconds]}
seconds=${2:-30}
corpus=fuzz/corpus/${target#fuzz-}
[ -d "$corpus" ] || { echo "no seed corpus at $corpus" >&2; exit 2; }

# KILN_FUZZ=1 leaves `main` to libFuzzer (Package.swift, fuzzEntryPoint).
KILN_FUZZ=1 swift build -c release --scratch-path .build-fuzz --product "$target" \
  --sanitize fuzzer --sanitize address \
  -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp >/dev/null

# New inputs go to a scratch corpus; the committed seeds stay small.
work=.build-fuzz/corpus/$target
mkdir -p "$work" .build-fuzz/artifacts
log=.build-fuzz/$target.log
# Without ASan's report the Swift backtracer would catch a crash before
# libFuzzer saves the input (docs/platform.md, "libFuzzer").
SWIFT_BACKTRACE=enable=no ".build-fuzz/release/$target" "$work" "$corpus" \
  -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 \
  -artifact_prefix=.build-fuzz/artifacts/ >"$log" 2>&1 || { tail -40 "$log"; exit 1; }
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
[ "${runs:-0}" -gt 0 ] || { echo "$target executed no inputs" >&2; tail -20 "$log"; exit 1; }
# libFuzzer's own last word, as proof the run ended normally.
done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)
[ -n "$done_line" ] || { echo "$target: libFuzzer printed no final Done line" >&2; tail -20 "$log"; exit 1; }
echo "$target: $done_line"
echo "$target: $runs inputs in ${seconds}s, $cov, corpus $(ls "$work" | wc -l) files"
