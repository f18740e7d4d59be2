#!/usr/bin/env bash
# Makes the static library fit to link into a firmware image next to other
# Rust or ring static libraries: one relocatable object holding what the kvs_
# functions reach, no LLVM bitcode, no debug sections, and no global symbol but
# the kvs_ functions of the header (the Rust-mangled, rust_eh_personality and
# ring_core_* symbols become local, so they cannot clash).
#
#   scripts/static-lib.sh IN.a OUT.a
#
# IN.a is the archive cargo writes (target/release/libkvs_signaling.a: every
# crate's objects, with bitcode since the crate is also an rlib built with
# LTO). scripts/install.sh installs OUT.a. Environment: LD, OBJCOPY, AR (for
# cross builds, e.g. aarch64-linux-gnu-ld), default ld, objcopy, ar.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# = 2 ] || { echo "usage: scripts/static-lib.sh IN.a OUT.a" >&2; exit 2; }
IN="$1"
OUT="$2"
LD="${LD:-ld}"
OBJCOPY="${OBJCOPY:-objcopy}"
AR="${AR:-ar}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvs-static-lib.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# The public functions: the header's kvs_ declarations (its static inline
# wrappers are compiled into the caller).
grep -oE '^[A-Za-z_][A-Za-z0-9_ ]*[ *]kvs_[a-z0-9_]+\(' "$ROOT/include/kvs_signaling.h" |
    grep -v '^static' | grep -oE 'kvs_[a-z0-9_]+\($' | tr -d '(' | sort -u >"$WORK/keep.txt"
[ -s "$WORK/keep.txt" ] || { echo "static-lib.sh: no kvs_ functions in the header" >&2; exit 1; }
undefined=()
while read -r sym; do undefined+=(-u "$sym"); done <"$WORK/keep.txt"

# One object with what the public functions reach (--gc-sections from the -u roots).
"$LD" -r --whole-archive "$IN" --no-whole-archive --gc-sections "${undefined[@]}" -o "$WORK/kvs.o"
# Bitcode and debug sections out, every global but the public functions local.
"$OBJCOPY" --remove-section=.llvmbc --remove-section=.llvmcmd --strip-debug \
    --keep-global-symbols="$WORK/keep.txt" "$WORK/kvs.o" "$WORK/kvs_signaling.o"
nm -g --defined-only "$WORK/kvs_signaling.o" | awk '{ print $NF }' | sort >"$WORK/globals.txt"
if ! diff "$WORK/keep.txt" "$WORK/globals.txt" >"$WORK/globals.diff"; then
    echo "static-lib.sh: the globals differ from the header's functions (< header, > object):" >&2
    cat "$WORK/globals.diff" >&2
    exit 1
fi
rm -f "$WORK/out.a"
"$AR" rcs "$WORK/out.a" "$WORK/kvs_signaling.o"
mv "$WORK/out.a" "$OUT"
