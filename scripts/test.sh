#!/usr/bin/env bash
# Runs every test of the project: formatting, lints (default and native-tls
# builds), Rust unit and integration tests (including the header drift check),
# the native-tls client against the emulator, the C examples and C tests against
# the emulator (shared and static library, one under valgrind), the Python
# binding test, the official JS SDK viewer test and the media tests (real
# video from the GStreamer C camera to Chromium and aiortc). Ends with "N passed, M failed".
#
# Environment: CARGO_TARGET_DIR (default target).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# Where cargo builds: CARGO_TARGET_DIR (relative to the repository root, where
# cargo runs) or target/; exported so that cargo and make agree.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CARGO_TARGET_DIR="$TARGET_DIR"

passed=0
failed=0
failures=()

step() {
  local name=$1
  shift
  echo
  echo "=== $name"
  local started=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== $name: ok ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "=== $name: FAILED ($((SECONDS - started)) s)"
  fi
}

build_release() {
  cargo build --release --lib && cargo build --release --bin kvs-signaling-emulator
}

python_tests() {
  # The test command sets up what it needs, on a fresh machine too.
  python3 -m pytest --version >/dev/null 2>&1 || python3 -m pip install --quiet pytest || return 1
  KVS_SIGNALING_LIB="$TARGET_DIR/release/libkvs_signaling.so" \
  KVS_EMULATOR="$TARGET_DIR/release/kvs-signaling-emulator" \
  KVS_C_VIEWER="$PWD/examples_c/viewer" \
    python3 -m pytest -q python
}

# The firmware build (system OpenSSL, no rustls, no emulator) compiles, and the
# native-tls client (preferred over rustls when both are enabled; rustls then
# only serves the emulator) passes the TLS bring-up tests with the emulator's CA,
# the IoT device-certificate (mutual TLS) tests and the proxy tunnel tests.
native_tls_tests() {
  cargo build --lib --no-default-features --features native-tls &&
    cargo test --features native-tls --lib --test bootstrap --test aws_control_plane --test iot --test proxy
}

cross_builds() {
  scripts/cross-build.sh aarch64-unknown-linux-gnu && scripts/cross-build.sh armv7-unknown-linux-gnueabihf
}

js_tests() {
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error) && tests/js/run.sh --master c
}

step "cargo fmt" cargo fmt --check
step "cargo clippy" cargo clippy --all-targets -- -D warnings
step "cargo clippy (native-tls)" cargo clippy --all-targets --features native-tls -- -D warnings
step "cargo test (unit, integration, header drift)" cargo test
step "native-tls client (system OpenSSL) against the emulator" native_tls_tests
step "release build (library + emulator)" build_release
step "cross build (aarch64, armv7): ELF machine, SONAME, exports" cross_builds
step "C examples and C tests (shared, static, ASan+UBSan, valgrind)" scripts/c-tests.sh
step "Python binding (Python master, C viewer)" python_tests
step "JS SDK viewer (C master)" js_tests
# Skips with a message without chromium/GStreamer unless KVS_REQUIRE_MEDIA=1.
step "media: Chromium and aiortc view the GStreamer C camera" scripts/media-tests.sh

echo
if ((failed > 0)); then
  printf 'failed steps:\n'
  printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
