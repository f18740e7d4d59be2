#!/usr/bin/env bash
# Cross build of the C library for a camera-class target, and the checks a
# firmware integrator would make on the result:
#
#   scripts/cross-build.sh [TARGET]     # default aarch64-unknown-linux-gnu
#
# TARGET is aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf. Needs
# Debian's cross gcc for it (gcc-aarch64-linux-gnu + libc6-dev-arm64-cross, or
# gcc-arm-linux-gnueabihf + libc6-dev-armhf-cross) and the Rust standard library
# for the target (added with rustup when missing). Builds the firmware
# configuration (no emulator, rustls) in release mode, then checks the ELF
# machine, the SONAME, that only kvs_* is exported, and prints the stripped size.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET="${1:-aarch64-unknown-linux-gnu}"
case "$TARGET" in
aarch64-unknown-linux-gnu) GNU=aarch64-linux-gnu MACHINE=AArch64 ;;
armv7-unknown-linux-gnueabihf) GNU=arm-linux-gnueabihf MACHINE=ARM ;;
*)
    echo "cross-build.sh: unsupported target $TARGET" >&2
    exit 2
    ;;
esac
command -v "$GNU-gcc" >/dev/null || {
    echo "cross-build.sh: $GNU-gcc not found (Debian: gcc-$GNU)" >&2
    exit 1
}
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

# Cargo's per-target settings: the cross linker, and the C compiler and archiver
# for the crates that build C (ring).
ENV_TARGET="$(echo "$TARGET" | tr 'a-z-' 'A-Z_')"
export "CARGO_TARGET_${ENV_TARGET}_LINKER=$GNU-gcc"
export "CC_${TARGET//-/_}=$GNU-gcc" "AR_${TARGET//-/_}=$GNU-ar"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

cargo build --release --lib --no-default-features --features rustls --target "$TARGET"
LIB="$TARGET_DIR/$TARGET/release/libkvs_signaling.so"

failed=0
machine="$(readelf -h "$LIB" | awk -F: '/Machine:/ {gsub(/^ +/, "", $2); print $2}')"
[ "$machine" = "$MACHINE" ] || { echo "machine is $machine, not $MACHINE" >&2; failed=1; }
major="$(awk '/^#define KVS_VERSION_MAJOR/ {print $3}' include/kvs_signaling.h)"
readelf -d "$LIB" | grep -q "Library soname: \[libkvs_signaling.so.$major\]" ||
    { echo "SONAME is not libkvs_signaling.so.$major" >&2; failed=1; }
others="$("$GNU-nm" -D --defined-only "$LIB" | awk '{print $3}' | grep -cv '^kvs_' || true)"
[ "$others" = 0 ] || { echo "$others exported symbols are not kvs_*" >&2; failed=1; }
stripped="$(mktemp)"
"$GNU-strip" -o "$stripped" "$LIB"
echo "cross-build.sh: $TARGET: machine $machine, SONAME libkvs_signaling.so.$major, only kvs_* exported;" \
    "stripped .so $(stat -c %s "$stripped") bytes"
rm -f "$stripped"
exit "$failed"
