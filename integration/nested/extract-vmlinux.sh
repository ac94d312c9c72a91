#!/bin/bash
# Prints the uncompressed ELF kernel inside a bzImage (the idea of Linux's
# scripts/extract-vmlinux): find each known compression magic, try to
# decompress from there, keep the first result that is an ELF file.
set -euo pipefail
image=$1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

try() { # magic(printf-escaped) decompress-command
  local offset
  for offset in $(LC_ALL=C grep -obaUP "$1" "$image" 2>/dev/null | cut -d: -f1); do
    tail -c +$((offset + 1)) "$image" | $2 > "$tmp/vmlinux" 2>/dev/null || true
    if [ "$(head -c 4 "$tmp/vmlinux" | od -An -tx1 | tr -d ' ')" = "7f454c46" ]; then
      cat "$tmp/vmlinux"; exit 0
    fi
  done
}
try '\xfd7zXZ\x00' 'xz -dc'
try '\x02\x21\x4c\x18' 'lz4 -dc'
try '\x1f\x8b\x08' 'gzip -dc'
try '\x28\xb5\x2f\xfd' 'zstd -dc'
echo "extract-vmlinux: no compressed ELF found in $image" >&2
exit 1
