#!/usr/bin/env bash
# C tests of libkvs_signaling against the local emulator (127.0.0.1 only):
#
#   1. make -C examples_c all (shared, static and C++ builds, header check);
#      the shared library exports exactly the kvs_ functions the header
#      declares and has the SONAME libkvs_signaling.so.<major>;
#      scripts/install.sh into a temporary prefix, and examples_c/viewer.c
#      built from it through pkg-config and through CMake (find_package,
#      kvs_signaling::shared and kvs_signaling::static); the installed static
#      library (scripts/static-lib.sh) has no global but the kvs_ functions
#      and links next to another static library defining rust_eh_personality
#      and a ring_core_ symbol (the cargo archive does not)
#   2. master + viewer, shared library        (ws://, data plane only); the
#      installed viewers (pkg-config, CMake shared and static) against it
#   3. master + viewer, static library        (ws://)
#   4. master + viewer, compiled as C++       (ws://)
#   5. the control-plane mode against a second emulator started with --tls and
#      SigV4 keys: master + viewer by channel name (credentials from the
#      environment; through the credentials callback; static library), the
#      failures (wrong secret -> KVS_ERR_ACCESS_DENIED, unknown channel ->
#      KVS_ERR_NOT_FOUND, no CA bundle -> KVS_ERR_TLS, no keys ->
#      KVS_ERR_CREDENTIALS), --create-channel making that unknown channel, and
#      no secret in any output; the same emulator's AWS IoT credentials
#      endpoint (--iot, 5-second keys): master + viewer with device
#      certificates only (no keys in the environment), a certificate of
#      another CA -> KVS_ERR_IOT_CERTIFICATE_REFUSED, an unknown role alias ->
#      KVS_ERR_IOT_ROLE_ALIAS_NOT_FOUND
#   6. tests/c/bad_input, shared, static and C++ builds (both emulators), and
#      static against the installed library
#   7. tests/c/lifecycle, shared, static and C++ builds, against a third
#      emulator started with --no-quotas (free while callbacks send through
#      the handle, fork, free and shutdown with a callback backlog,
#      backpressure); each run on a channel of its own
#   8. bad_input, lifecycle (fewer rounds) and a control-plane viewer under
#      valgrind (definite leaks and memory errors are fatal;
#      tests/c/valgrind.supp holds the known false positives of ring's
#      AES-GCM assembly, matched in the static builds)
#   9. bad_input and lifecycle built with ASan+UBSan (ASAN_OPTIONS
#      detect_leaks=1 unless ASAN_OPTIONS is set; nm proves ASan is linked)
#
# Prints a summary; exits 1 if any step failed.
#
# Environment:
#   KVS_C_TESTS_SKIP_CARGO=1  do not run cargo (the library and the emulator
#                             are already built in $CARGO_TARGET_DIR/release)
#   CARGO_TARGET_DIR          cargo's target directory (default target)
#   KVS_C_TESTS_ROUNDS=N      free-flood rounds of lifecycle (default 300;
#                             under valgrind a tenth, at least 10)
#   KVS_C_TESTS_LOG_DIR=DIR   keep every log in DIR (default: a temporary
#                             directory, removed when everything passed)
#   VALGRIND                  the valgrind command (default valgrind)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Where cargo builds: CARGO_TARGET_DIR (relative to the repository root, where
# cargo runs) or target/; exported so that cargo and make agree.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CARGO_TARGET_DIR="$TARGET_DIR"
LIB_DIR="$TARGET_DIR/release"

CARGO="${CARGO:-cargo}"
MAKE="${MAKE:-make}"
VALGRIND="${VALGRIND:-valgrind}"
EMULATOR="$LIB_DIR/kvs-signaling-emulator"
BUILD="$ROOT/examples_c/build"
VALGRIND_ARGS=(--leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1
    --suppressions="$ROOT/tests/c/valgrind.supp")

if [ -n "${KVS_C_TESTS_LOG_DIR:-}" ]; then
    LOGS="$KVS_C_TESTS_LOG_DIR"
    mkdir -p "$LOGS"
    KEEP_LOGS=1
else
    LOGS="$(mktemp -d "${TMPDIR:-/tmp}/kvs-c-tests.XXXXXX")"
    KEEP_LOGS=0
fi

INSTALL_PREFIX=""
EMULATOR_PID=""
TLS_EMULATOR_PID=""
LC_EMULATOR_PID=""
MASTER_PID=""
# Made-up keys the TLS emulator accepts (not AWS credentials).
CT_ACCESS_KEY=AKIDCTESTSEXAMPLE000
CT_SECRET_KEY=c-tests/SecretKey/EXAMPLE/0123456789abcdef
CP_ENV=(AWS_ACCESS_KEY_ID="$CT_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$CT_SECRET_KEY" AWS_SESSION_TOKEN=)
RESULTS=()
FAILED=0

stop_pid() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
}

cleanup() {
    local status=$?
    trap - EXIT
    if [ -n "$MASTER_PID" ]; then stop_pid "$MASTER_PID"; fi
    if [ -n "$EMULATOR_PID" ]; then stop_pid "$EMULATOR_PID"; fi
    if [ -n "$TLS_EMULATOR_PID" ]; then stop_pid "$TLS_EMULATOR_PID"; fi
    if [ -n "$LC_EMULATOR_PID" ]; then stop_pid "$LC_EMULATOR_PID"; fi
    # The installed copy holds the 50 MB static library: never kept.
    if [ -n "$INSTALL_PREFIX" ]; then rm -rf "$INSTALL_PREFIX"; fi
    if [ "$KEEP_LOGS" = 0 ] && [ "$status" = 0 ]; then
        rm -rf "$LOGS"
    else
        echo "logs: $LOGS"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==> %s\n' "$*"; }

record() { # record NAME STATUS [DETAIL]
    local name="$1" status="$2" detail="${3:-}"
    if [ "$status" = 0 ]; then
        RESULTS+=("PASS  $name${detail:+  ($detail)}")
    else
        RESULTS+=("FAIL  $name${detail:+  ($detail)}")
        FAILED=1
    fi
}

show_tail() { # show_tail FILE...: the end of each log, indented
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        echo "    --- ${f#"$LOGS"/} (last 30 lines) ---"
        tail -n 30 "$f" | sed 's/^/    /'
    done
}

# --- build -----------------------------------------------------------------

if [ "${KVS_C_TESTS_SKIP_CARGO:-0}" != 1 ]; then
    step "cargo build --release --lib && cargo build --release --bin kvs-signaling-emulator"
    if ! "$CARGO" build --release --lib || ! "$CARGO" build --release --bin kvs-signaling-emulator; then
        echo "error: cargo build failed" >&2
        exit 1
    fi
fi

step "the README's C snippet compiles as pasted"
# The first C block of README.md, compiled and linked against the shared library.
awk '/^```c$/ {inside = 1; next} inside && /^```$/ {exit} inside {print}' README.md >"$LOGS/readme-snippet.c"
if ${CC:-cc} -std=c11 -Wall -Wextra -Werror -Iinclude "$LOGS/readme-snippet.c" -o "$LOGS/readme-snippet" \
    -L"$LIB_DIR" -lkvs_signaling >"$LOGS/readme-snippet.log" 2>&1; then
    record "README C snippet compiles and links" 0
else
    show_tail "$LOGS/readme-snippet.log"
    record "README C snippet compiles and links" 1
fi

step "make -C examples_c all"
if "$MAKE" -C examples_c all >"$LOGS/make.log" 2>&1; then
    record "make -C examples_c all" 0
else
    show_tail "$LOGS/make.log"
    record "make -C examples_c all" 1
    printf '%s\n' "${RESULTS[@]}"
    exit 1
fi

# ASan+UBSan builds (the Makefile fails them unless nm finds __asan_init).
ASAN=0
if "$MAKE" -C examples_c asan >"$LOGS/make-asan.log" 2>&1; then
    ASAN=1
    unlinked=""
    for b in bad_input-asan lifecycle-asan; do
        # grep without -q: an early exit would SIGPIPE nm and fail the pipeline.
        nm "$BUILD/$b" 2>/dev/null | grep __asan_init >/dev/null || unlinked+=" $b"
    done
    if [ -n "$unlinked" ]; then
        ASAN=0
        record "make -C examples_c asan" 1 "not linked with ASan (no __asan_init):$unlinked"
    else
        record "make -C examples_c asan" 0 "bad_input-asan, lifecycle-asan: nm finds __asan_init"
    fi
else
    show_tail "$LOGS/make-asan.log"
    record "make -C examples_c asan" 1
fi

# --- the shared library's ABI surface -------------------------------------

step "exported symbols and SONAME of libkvs_signaling.so"
SO="$LIB_DIR/libkvs_signaling.so"
# The kvs_ functions the header declares, without its static inline wrappers
# (compiled into the caller, not exported).
grep -oE '^[A-Za-z_][A-Za-z0-9_ ]*[ *]kvs_[a-z0-9_]+\(' include/kvs_signaling.h |
    grep -v '^static' | grep -oE 'kvs_[a-z0-9_]+\($' | tr -d '(' | sort -u >"$LOGS/header-functions.txt"
nm -D --defined-only "$SO" | awk '{ print $NF }' | sort -u >"$LOGS/exported.txt"
if [ -s "$LOGS/header-functions.txt" ] && diff "$LOGS/header-functions.txt" "$LOGS/exported.txt" \
    >"$LOGS/exported.diff"; then
    record "libkvs_signaling.so exports exactly the header's functions" 0 \
        "$(wc -l <"$LOGS/exported.txt") kvs_ functions"
else
    sed 's/^/    /' "$LOGS/exported.diff" | head -n 40
    record "libkvs_signaling.so exports exactly the header's functions" 1 \
        "< header only, > exported only (see exported.diff)"
fi
MAJOR="$(awk '$1 == "#define" && $2 == "KVS_VERSION_MAJOR" { print $3 }' include/kvs_signaling.h)"
SONAME="$(readelf -d "$SO" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')"
if [ -n "$MAJOR" ] && [ "$SONAME" = "libkvs_signaling.so.$MAJOR" ]; then
    record "SONAME is libkvs_signaling.so.<KVS_VERSION_MAJOR>" 0 "$SONAME"
else
    record "SONAME is libkvs_signaling.so.<KVS_VERSION_MAJOR>" 1 \
        "readelf -d: '$SONAME', KVS_VERSION_MAJOR $MAJOR"
fi

# --- install, pkg-config, CMake ------------------------------------------------

step "scripts/install.sh into a temporary prefix"
INSTALL_PREFIX="$(mktemp -d "${TMPDIR:-/tmp}/kvs-c-tests-prefix.XXXXXX")"
INSTALLED_BUILD="$LOGS/installed"
mkdir -p "$INSTALLED_BUILD"
INSTALLED=0
if scripts/install.sh --prefix "$INSTALL_PREFIX" >"$LOGS/install.log" 2>&1; then
    lib="$INSTALL_PREFIX/lib"
    version="$(awk '$1 == "#define" && $2 ~ /^KVS_VERSION_(MAJOR|MINOR|PATCH)$/ { v = v (v == "" ? "" : ".") $3 }
        END { print v }' include/kvs_signaling.h)"
    layout=""
    [ "$(readlink "$lib/libkvs_signaling.so")" = "$SONAME" ] || layout+=" .so->$SONAME"
    [ "$(readlink "$lib/$SONAME")" = "libkvs_signaling.so.$version" ] || layout+=" $SONAME->.so.$version"
    for f in "$lib/libkvs_signaling.so.$version" "$lib/libkvs_signaling.a" \
        "$INSTALL_PREFIX/include/kvs_signaling.h" "$lib/pkgconfig/kvs_signaling.pc" \
        "$lib/cmake/kvs_signaling/kvs_signalingConfig.cmake" \
        "$lib/cmake/kvs_signaling/kvs_signalingConfigVersion.cmake"; do
        [ -f "$f" ] || layout+=" ${f#"$INSTALL_PREFIX"/}"
    done
    if [ -z "$layout" ]; then
        INSTALLED=1
        record "scripts/install.sh" 0 "header, .so.$version with symlinks, .a, .pc, CMake package"
    else
        record "scripts/install.sh" 1 "missing or wrong:$layout"
    fi
else
    show_tail "$LOGS/install.log"
    record "scripts/install.sh" 1
fi

# The installed viewers, NAME BINARY pairs, run against the emulator below.
INSTALLED_VIEWERS=()
INSTALLED_BAD_INPUT=""
if [ "$INSTALLED" = 1 ]; then
    step "examples_c/viewer.c through pkg-config --cflags --libs kvs_signaling"
    pc=(env PKG_CONFIG_PATH="$INSTALL_PREFIX/lib/pkgconfig" pkg-config)
    # Word splitting of pkg-config's output is the point.
    # shellcheck disable=SC2046
    if "${pc[@]}" --exists --print-errors kvs_signaling >"$LOGS/pkg-config.log" 2>&1 &&
        ${CC:-cc} -std=c11 -Wall -Wextra -Werror examples_c/viewer.c -o "$INSTALLED_BUILD/viewer-pc" \
            $("${pc[@]}" --cflags --libs kvs_signaling) \
            -Wl,-rpath,"$INSTALL_PREFIX/lib" >>"$LOGS/pkg-config.log" 2>&1 &&
        ldd "$INSTALLED_BUILD/viewer-pc" | grep -F "$SONAME => $INSTALL_PREFIX/lib/$SONAME" \
            >>"$LOGS/pkg-config.log"; then
        record "pkg-config: viewer built against the installed library" 0 \
            "$("${pc[@]}" --cflags --libs kvs_signaling | sed "s|$INSTALL_PREFIX|PREFIX|g; s/ *$//")"
        INSTALLED_VIEWERS+=("installed viewer (pkg-config)" "$INSTALLED_BUILD/viewer-pc")
    else
        show_tail "$LOGS/pkg-config.log"
        record "pkg-config: viewer built against the installed library" 1 \
            "build failed, or ldd does not find $SONAME in PREFIX/lib"
    fi

    step "examples_c/viewer.c through CMake: find_package(kvs_signaling)"
    if command -v cmake >/dev/null 2>&1; then
        mkdir -p "$INSTALLED_BUILD/cmake-src"
        cat >"$INSTALLED_BUILD/cmake-src/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(kvs_signaling_consumer C)
# An incompatible major version is not found.
find_package(kvs_signaling 1 QUIET)
if(kvs_signaling_FOUND)
  message(FATAL_ERROR "find_package(kvs_signaling 1) found ${kvs_signaling_VERSION}")
endif()
find_package(kvs_signaling 0.1 REQUIRED)
foreach(kind shared static)
  add_executable(viewer-${kind} ${VIEWER_SOURCE})
  set_target_properties(viewer-${kind} PROPERTIES C_STANDARD 11 C_STANDARD_REQUIRED ON)
  target_compile_options(viewer-${kind} PRIVATE -Wall -Wextra -Werror)
  target_link_libraries(viewer-${kind} PRIVATE kvs_signaling::${kind})
endforeach()
CMAKE
        if cmake -S "$INSTALLED_BUILD/cmake-src" -B "$INSTALLED_BUILD/cmake-build" \
            -DCMAKE_PREFIX_PATH="$INSTALL_PREFIX" -DVIEWER_SOURCE="$ROOT/examples_c/viewer.c" \
            >"$LOGS/cmake.log" 2>&1 &&
            cmake --build "$INSTALLED_BUILD/cmake-build" >>"$LOGS/cmake.log" 2>&1 &&
            ldd "$INSTALLED_BUILD/cmake-build/viewer-shared" |
                grep -F "$SONAME => $INSTALL_PREFIX/lib/$SONAME" >>"$LOGS/cmake.log" &&
            ! ldd "$INSTALLED_BUILD/cmake-build/viewer-static" | grep -F libkvs_signaling \
                >>"$LOGS/cmake.log"; then
            record "CMake: viewer built with kvs_signaling::shared and kvs_signaling::static" 0
            INSTALLED_VIEWERS+=("installed viewer (CMake, shared)" "$INSTALLED_BUILD/cmake-build/viewer-shared"
                "installed viewer (CMake, static)" "$INSTALLED_BUILD/cmake-build/viewer-static")
        else
            show_tail "$LOGS/cmake.log"
            record "CMake: viewer built with kvs_signaling::shared and kvs_signaling::static" 1
        fi
    else
        record "CMake: find_package(kvs_signaling)" 1 "cmake not found; install cmake"
    fi

    step "the installed static library next to another one with the same Rust/ring symbols"
    static_a="$INSTALL_PREFIX/lib/libkvs_signaling.a"
    static_libs="$("$MAKE" -s --no-print-directory -C examples_c print-static-libs)"
    globals="$(nm -g --defined-only "$static_a" | awk 'NF == 3 { print $3 }' | grep -vc '^kvs_')"
    ring="$(nm "$static_a" | awk '$2 == "t" && $3 ~ /^ring_core_/ { print $3; exit }')"
    clash="$INSTALLED_BUILD/clash"
    mkdir -p "$clash"
    {
        echo '/* Another static library defining globals a Rust (ring) static library has. */'
        echo 'int kvs_test_other_library(void);'
        echo 'void rust_eh_personality(void);'
        echo "void ${ring:-ring_core_missing}(void);"
        echo 'void rust_eh_personality(void) {}'
        echo "void ${ring:-ring_core_missing}(void) {}"
        echo 'int kvs_test_other_library(void) { return 42; }'
    } >"$clash/other.c"
    cat >"$clash/main.c" <<'C'
#include <stdio.h>
#include "kvs_signaling.h"
int kvs_test_other_library(void);
int main(void) {
    printf("%s; other library: %d\n", kvs_version(), kvs_test_other_library());
    return kvs_version_number() == KVS_VERSION_NUMBER && kvs_test_other_library() == 42 ? 0 : 1;
}
C
    # shellcheck disable=SC2086 # static_libs is a link line
    if [ "$globals" = 0 ] && [ -n "$ring" ] &&
        ${CC:-cc} -std=c11 -Wall -Wextra -Werror -c "$clash/other.c" -o "$clash/other.o" \
            >"$LOGS/clash.log" 2>&1 &&
        ar rcs "$clash/libother.a" "$clash/other.o" &&
        ${CC:-cc} -std=c11 -Wall -Wextra -Werror -I"$INSTALL_PREFIX/include" "$clash/main.c" \
            -o "$clash/main" "$clash/libother.a" "$static_a" $static_libs >>"$LOGS/clash.log" 2>&1 &&
        "$clash/main" >>"$LOGS/clash.log" 2>&1; then
        # The same link with the archive cargo writes: the clash this avoids.
        cargo_archive="links too"
        # shellcheck disable=SC2086
        if ! ${CC:-cc} -std=c11 -I"$INSTALL_PREFIX/include" "$clash/main.c" -o "$clash/main-cargo" \
            "$clash/libother.a" "$LIB_DIR/libkvs_signaling.a" $static_libs >"$LOGS/clash-cargo.log" 2>&1; then
            cargo_archive="$(grep -o -m 1 "multiple definition of .[A-Za-z0-9_]*." "$LOGS/clash-cargo.log" ||
                echo "fails")"
        fi
        record "static library: only kvs_ globals, links next to rust_eh_personality and $ring" 0 \
            "$(du -h "$static_a" | cut -f1) (cargo's: $(du -h "$LIB_DIR/libkvs_signaling.a" | cut -f1)); with cargo's archive: $cargo_archive"
    else
        show_tail "$LOGS/clash.log"
        record "static library: only kvs_ globals, links next to another Rust/ring library" 1 \
            "$globals globals other than kvs_; ring_core_ symbol: '${ring}'"
    fi

    step "bad_input built against the installed static library"
    if "$MAKE" -C examples_c LIB_DIR="$INSTALL_PREFIX/lib" BUILD_DIR="$BUILD/installed" \
        bad_input-static >"$LOGS/make-installed.log" 2>&1; then
        INSTALLED_BAD_INPUT=installed/bad_input-static # under $BUILD
    else
        show_tail "$LOGS/make-installed.log"
        record "bad_input (installed static library)" 1 "build failed"
    fi
fi

# --- emulator --------------------------------------------------------------

step "starting the emulator on 127.0.0.1"
CHANNELS=(c-shared c-static c-cxx c-valgrind c-bad-input c-installed-0 c-installed-1 c-installed-2)
channel_args=()
for ch in "${CHANNELS[@]}"; do channel_args+=(--channel "$ch"); done
"$EMULATOR" --listen 127.0.0.1:0 "${channel_args[@]}" --exit-after 900 --verbose \
    >"$LOGS/emulator.out" 2>"$LOGS/emulator.err" &
EMULATOR_PID=$!

declare -A ARN
ENDPOINT=""
for _ in $(seq 100); do
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
        break
    fi
    # The control-plane line comes last: every line before it is complete then.
    if grep -q '^control-plane .*[0-9]$' "$LOGS/emulator.out"; then
        break
    fi
    sleep 0.1
done
ENDPOINT="$(sed -n 1p "$LOGS/emulator.out")"
for ch in "${CHANNELS[@]}"; do
    ARN[$ch]="$(awk -v ch="$ch" '$1 == "channel" && $2 == ch { print $3 }' "$LOGS/emulator.out")"
done
if ! [[ "$ENDPOINT" =~ ^ws://127\.0\.0\.1:[0-9]+$ ]] || [ -z "${ARN[c-bad-input]}" ]; then
    echo "error: the emulator did not start (want ws://127.0.0.1:PORT and channel lines)" >&2
    show_tail "$LOGS/emulator.out" "$LOGS/emulator.err" >&2
    exit 1
fi
echo "endpoint: $ENDPOINT"

step "starting the TLS emulator on 127.0.0.1 (control plane, SigV4 keys)"
CP_CHANNELS=(cp-shared cp-callback cp-static cp-valgrind cp-bad-input cp-iot)
mkdir -p "$LOGS/iot"
channel_args=()
for ch in "${CP_CHANNELS[@]}"; do channel_args+=(--channel "$ch"); done
"$EMULATOR" --listen 127.0.0.1:0 "${channel_args[@]}" --exit-after 900 --verbose \
    --tls --cert-out "$LOGS/emulator-ca.pem" \
    --access-key "$CT_ACCESS_KEY" --secret-key "$CT_SECRET_KEY" \
    --iot --iot-credential-lifetime 5 --iot-issue-device "$LOGS/iot/camera-1" \
    --iot-issue-device "$LOGS/iot/viewer-app" \
    >"$LOGS/emulator-tls.out" 2>"$LOGS/emulator-tls.err" &
TLS_EMULATOR_PID=$!
CONTROL_PLANE=""
CA=""
for _ in $(seq 100); do
    kill -0 "$TLS_EMULATOR_PID" 2>/dev/null || break
    if grep -q '^iot-device viewer-app ' "$LOGS/emulator-tls.out"; then # the last line
        CONTROL_PLANE="$(awk '$1 == "control-plane" { print $2 }' "$LOGS/emulator-tls.out")"
        CA="$(awk '$1 == "ca" { print $2 }' "$LOGS/emulator-tls.out")"
        IOT_ENDPOINT="$(awk '$1 == "iot-endpoint" { print $2 }' "$LOGS/emulator-tls.out")"
        IOT_CA="$(awk '$1 == "iot-ca" { print $2 }' "$LOGS/emulator-tls.out")"
        break
    fi
    sleep 0.1
done
if ! [[ "$CONTROL_PLANE" =~ ^https://127\.0\.0\.1:[0-9]+$ ]] || [ ! -s "$CA" ] ||
    ! [[ "$(sed -n 1p "$LOGS/emulator-tls.out")" =~ ^wss:// ]]; then
    echo "error: the TLS emulator did not start (want wss://, ca and control-plane lines)" >&2
    show_tail "$LOGS/emulator-tls.out" "$LOGS/emulator-tls.err" >&2
    exit 1
fi
echo "control plane: $CONTROL_PLANE (CA $CA)"

step "starting the lifecycle emulator on 127.0.0.1 (--no-quotas)"
LC_CHANNELS=(lc-shared lc-static lc-cxx lc-valgrind lc-asan)
channel_args=()
for ch in "${LC_CHANNELS[@]}"; do channel_args+=(--channel "$ch"); done
"$EMULATOR" --listen 127.0.0.1:0 "${channel_args[@]}" --no-quotas --message-ttl 5 \
    --exit-after 900 >"$LOGS/emulator-lc.out" 2>"$LOGS/emulator-lc.err" &
LC_EMULATOR_PID=$!
LC_ENDPOINT=""
for _ in $(seq 100); do
    kill -0 "$LC_EMULATOR_PID" 2>/dev/null || break
    if grep -q '^control-plane .*[0-9]$' "$LOGS/emulator-lc.out"; then # the last line
        LC_ENDPOINT="$(sed -n 1p "$LOGS/emulator-lc.out")"
        break
    fi
    sleep 0.1
done
declare -A LC_ARN
for ch in "${LC_CHANNELS[@]}"; do
    LC_ARN[$ch]="$(awk -v ch="$ch" '$1 == "channel" && $2 == ch { print $3 }' "$LOGS/emulator-lc.out")"
done
if ! [[ "$LC_ENDPOINT" =~ ^ws://127\.0\.0\.1:[0-9]+$ ]] || [ -z "${LC_ARN[lc-asan]}" ]; then
    echo "error: the lifecycle emulator did not start" >&2
    show_tail "$LOGS/emulator-lc.out" "$LOGS/emulator-lc.err" >&2
    exit 1
fi
echo "lifecycle endpoint: $LC_ENDPOINT"

# --- helpers -----------------------------------------------------------------

# start_master NAME CHANNEL CMD...: runs CMD (a master) in the background and
# waits until it prints "master: connected".
start_master() {
    local name="$1" ch="$2"
    shift 2
    start_master_cmd "$name" "$@" --endpoint "$ENDPOINT" --channel-arn "${ARN[$ch]}"
}

# start_master_cmd NAME CMD...: the same for a complete master command line.
start_master_cmd() {
    local name="$1"
    shift
    "$@" --timeout-s 300 >"$LOGS/$name.master.out" 2>"$LOGS/$name.master.err" &
    MASTER_PID=$!
    for _ in $(seq 300); do
        grep -qx 'master: connected' "$LOGS/$name.master.out" 2>/dev/null && return 0
        kill -0 "$MASTER_PID" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# stop_master: SIGTERM, then its exit status.
stop_master() {
    local status=0
    if kill -0 "$MASTER_PID" 2>/dev/null; then
        kill -TERM "$MASTER_PID" 2>/dev/null
    fi
    wait "$MASTER_PID"
    status=$?
    MASTER_PID=""
    return "$status"
}

# valgrind_verdict LOG: prints why a valgrind log is not clean; status 1 then.
valgrind_verdict() {
    local log="$1" errors lost
    errors="$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$log" | tail -n 1)"
    lost="$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1)"
    if [ -z "$errors" ]; then
        echo "no valgrind summary"
        return 1
    fi
    if [ "$errors" != 0 ] || { [ -n "$lost" ] && [ "$lost" != 0 ]; }; then
        echo "valgrind: $errors errors, ${lost:-0} bytes definitely lost"
        return 1
    fi
    echo "valgrind clean"
    return 0
}

# pair NAME CHANNEL MASTER_CMD VIEWER_CMD [VIEWER_PREFIX...]: master + viewer.
pair() {
    local name="$1" ch="$2" master="$3" viewer="$4"
    shift 4
    step "$name"
    if ! start_master "$name" "$ch" "$master"; then
        show_tail "$LOGS/$name.master.out" "$LOGS/$name.master.err"
        stop_master
        record "$name" 1 "the master did not connect"
        return
    fi
    timeout 300 "$@" "$viewer" --endpoint "$ENDPOINT" --channel-arn "${ARN[$ch]}" \
        --client-id "viewer-$ch" --candidates 5 --timeout-s 20 \
        >"$LOGS/$name.viewer.out" 2>"$LOGS/$name.viewer.err"
    local viewer_status=$?
    stop_master
    local master_status=$?
    grep -E 'round trip|candidates echoed|FAILED' "$LOGS/$name.viewer.out" | sed 's/^/    /'
    local detail
    detail="$(grep -o 'round trip: [0-9.]* ms' "$LOGS/$name.viewer.out")"
    if [ "$viewer_status" != 0 ] || [ "$master_status" != 0 ]; then
        show_tail "$LOGS/$name.viewer.out" "$LOGS/$name.viewer.err" \
            "$LOGS/$name.master.out" "$LOGS/$name.master.err"
        record "$name" 1 "viewer exit $viewer_status, master exit $master_status"
        return
    fi
    if [ "$#" -gt 0 ]; then # run under valgrind: the log is on stderr
        local verdict
        verdict="$(valgrind_verdict "$LOGS/$name.viewer.err")"
        local vs=$?
        record "$name" "$vs" "$verdict; $detail"
        return
    fi
    record "$name" 0 "$detail"
}

# bad_input NAME BINARY CP [PREFIX...]: the bad-input test, optionally under a
# wrapper; CP=cp also runs its control-plane part against the TLS emulator.
bad_input() {
    local name="$1" binary="$2" cp="$3"
    shift 3
    step "$name"
    local -a cp_args=()
    if [ "$cp" = cp ]; then
        cp_args=(--control-plane "$CONTROL_PLANE" --ca-bundle "$CA" --cp-channel cp-bad-input)
    fi
    timeout 600 env "${CP_ENV[@]}" "$@" "$BUILD/$binary" \
        --endpoint "$ENDPOINT" --channel-arn "${ARN[c-bad-input]}" "${cp_args[@]}" \
        >"$LOGS/$name.out" 2>"$LOGS/$name.err"
    local status=$?
    grep -E '^FAIL' "$LOGS/$name.out" | sed 's/^/    /'
    local summary
    summary="$(tail -n 1 "$LOGS/$name.out")"
    echo "    $summary"
    if ! [[ "$summary" =~ ^[0-9]+\ passed,\ [0-9]+\ failed$ ]]; then
        show_tail "$LOGS/$name.out" "$LOGS/$name.err"
        record "$name" 1 "exit $status, no summary line (crashed?)"
        return
    fi
    if [ "$#" -gt 0 ] && [ "$1" = "$VALGRIND" ]; then
        local verdict
        verdict="$(valgrind_verdict "$LOGS/$name.err")"
        local vs=$?
        if [ "$vs" != 0 ]; then
            show_tail "$LOGS/$name.err"
        fi
        if [ "$vs" != 0 ] || [ "$status" != 0 ]; then
            record "$name" 1 "$summary; $verdict"
        else
            record "$name" 0 "$summary; $verdict"
        fi
        return
    fi
    if [ "$status" != 0 ]; then
        if [ -s "$LOGS/$name.err" ]; then show_tail "$LOGS/$name.err"; fi
    fi
    record "$name" "$status" "$summary"
}

# --- control-plane mode ------------------------------------------------------

# The examples' arguments for a channel NAME through the TLS emulator.
cp_args() { # cp_args CHANNEL
    printf '%s\n' --channel-name "$1" --control-plane "$CONTROL_PLANE" --ca-bundle "$CA" \
        --region us-west-2
}

# cp_pair NAME CHANNEL MASTER VIEWER "MASTER_ARGS" "VIEWER_ARGS" [VIEWER_PREFIX...]:
# master + viewer by channel name, keys in the environment; checks the
# exchange, the TURN servers, the STUN URL and the metrics in the output.
cp_pair() {
    local name="$1" ch="$2" master="$3" viewer="$4" master_args="$5" viewer_args="$6"
    shift 6
    step "$name"
    local -a margs vargs common
    mapfile -t common < <(cp_args "$ch")
    read -r -a margs <<<"$master_args"
    read -r -a vargs <<<"$viewer_args"
    if ! start_master_cmd "$name" env "${CP_ENV[@]}" "$master" "${common[@]}" "${margs[@]}"; then
        show_tail "$LOGS/$name.master.out" "$LOGS/$name.master.err"
        stop_master
        record "$name" 1 "the master did not connect"
        return
    fi
    timeout 300 env "${CP_ENV[@]}" "$@" "$viewer" "${common[@]}" "${vargs[@]}" \
        --client-id "viewer-$ch" --candidates 5 --timeout-s 20 \
        >"$LOGS/$name.viewer.out" 2>"$LOGS/$name.viewer.err"
    local viewer_status=$?
    stop_master
    local master_status=$?
    grep -E 'control-plane endpoint|ICE servers:|STUN server|connect time|round trip|candidates echoed|metrics: last connect|FAILED|WARNING' \
        "$LOGS/$name.viewer.out" "$LOGS/$name.viewer.err" | sed 's/^[^:]*://; s/^/    /'
    if [ "$viewer_status" != 0 ] || [ "$master_status" != 0 ]; then
        show_tail "$LOGS/$name.viewer.out" "$LOGS/$name.viewer.err" \
            "$LOGS/$name.master.out" "$LOGS/$name.master.err"
        record "$name" 1 "viewer exit $viewer_status, master exit $master_status"
        return
    fi
    local missing=""
    local want
    for want in 'viewer: ICE servers: [1-9]' 'viewer:     turns?:' 'viewer: STUN server: stun:' \
        'viewer: metrics: last connect: control plane [0-9.]+ ms, TLS [0-9.]+ ms' \
        'viewer: metrics: messages: [1-9][0-9]* sent, [1-9][0-9]* received' \
        'viewer: control-plane endpoint: https://127\.0\.0\.1'; do
        grep -Eq "$want" "$LOGS/$name.viewer.out" || missing+=" [$want]"
    done
    for want in 'master: ICE servers: [1-9]' 'master: metrics: messages: [1-9]'; do
        grep -Eq "$want" "$LOGS/$name.master.out" || missing+=" [$want]"
    done
    if [[ " $viewer_args " == *" --credentials-callback "* ]]; then
        grep -q 'viewer: credentials callback #1: handed over' "$LOGS/$name.viewer.out" ||
            missing+=" [credentials callback]"
    fi
    if grep -q 'password (0 characters' "$LOGS/$name.viewer.out"; then
        missing+=" [a TURN password]"
    fi
    local detail
    detail="$(grep -o 'round trip: [0-9.]* ms' "$LOGS/$name.viewer.out"); $(grep -o 'control plane [0-9.]* ms, TLS [0-9.]* ms, WebSocket [0-9.]* ms' "$LOGS/$name.viewer.out")"
    if [ -n "$missing" ]; then
        show_tail "$LOGS/$name.viewer.out" "$LOGS/$name.master.out"
        record "$name" 1 "missing in the output:$missing"
        return
    fi
    if [ "$#" -gt 0 ]; then # under valgrind: the log is on stderr
        local verdict vs
        verdict="$(valgrind_verdict "$LOGS/$name.viewer.err")"
        vs=$?
        if [ "$vs" != 0 ]; then show_tail "$LOGS/$name.viewer.err"; fi
        record "$name" "$vs" "$verdict; $detail"
        return
    fi
    record "$name" 0 "$detail"
}

# cp_fails NAME CODE ENV_ARGS -- VIEWER_ARGS...: the viewer alone, run as
# `env ENV_ARGS viewer VIEWER_ARGS`, expected to exit non-zero with a message
# naming CODE (e.g. KVS_ERR_ACCESS_DENIED) and the library's text for it.
cp_fails() {
    local name="$1" code="$2"
    shift 2
    local -a envs=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    step "$name"
    timeout 120 env "${envs[@]}" "$BUILD/viewer" "$@" --client-id viewer-fails \
        --candidates 1 --timeout-s 10 >"$LOGS/$name.out" 2>"$LOGS/$name.err"
    local status=$?
    grep -E 'control-plane endpoint|TLS trust|FAILED|kvs_client_connect failed' \
        "$LOGS/$name.out" "$LOGS/$name.err" | cut -c1-240 | sed 's/^[^:]*://; s/^/    /'
    if [ "$status" = 0 ]; then
        record "$name" 1 "exit 0; expected a failure with $code"
        return
    fi
    if ! grep -q "FAILED: could not connect: $code (" "$LOGS/$name.out" ||
        ! grep -q "kvs_client_connect failed: $code (" "$LOGS/$name.err"; then
        show_tail "$LOGS/$name.out" "$LOGS/$name.err"
        record "$name" 1 "exit $status, but no message naming $code"
        return
    fi
    record "$name" 0 "exit $status, $(grep -o "FAILED: could not connect: $code ([^)]*)" "$LOGS/$name.out")"
}

# lifecycle NAME BINARY CHANNEL ROUNDS [PREFIX...]: the lifecycle test on a
# channel of the --no-quotas emulator, optionally under a wrapper (valgrind:
# its verdict counts too).
lifecycle() {
    local name="$1" binary="$2" ch="$3" rounds="$4"
    shift 4
    step "$name"
    local -a extra=()
    if [ "$#" -gt 0 ] && [ "$1" = "$VALGRIND" ]; then extra=(--valgrind); fi
    local start=$SECONDS
    timeout 600 "$@" "$BUILD/$binary" --endpoint "$LC_ENDPOINT" --channel-arn "${LC_ARN[$ch]}" \
        --rounds "$rounds" "${extra[@]}" >"$LOGS/$name.out" 2>"$LOGS/$name.err"
    local status=$?
    local took=$((SECONDS - start))
    grep -E '^FAIL|rounds \(|kvs_client_free took|in order in|kvs_shutdown\((500|200)\)' \
        "$LOGS/$name.out" | cut -c1-200 | sed 's/^/    /'
    local summary
    summary="$(tail -n 1 "$LOGS/$name.out")"
    echo "    $summary (${took} s)"
    if ! [[ "$summary" =~ ^[0-9]+\ passed,\ [0-9]+\ failed$ ]]; then
        show_tail "$LOGS/$name.out" "$LOGS/$name.err"
        record "$name" 1 "exit $status, no summary line (crashed?); ${took} s"
        return
    fi
    if [ "${#extra[@]}" -gt 0 ]; then
        local verdict vs
        verdict="$(valgrind_verdict "$LOGS/$name.err")"
        vs=$?
        if [ "$vs" != 0 ]; then show_tail "$LOGS/$name.err"; fi
        if [ "$vs" != 0 ] || [ "$status" != 0 ]; then
            record "$name" 1 "$summary; $verdict; ${took} s"
        else
            record "$name" 0 "$summary; $verdict; ${took} s"
        fi
        return
    fi
    if [ "$status" != 0 ]; then
        show_tail "$LOGS/$name.out" "$LOGS/$name.err"
    fi
    record "$name" "$status" "$summary; ${took} s"
}

# --- tests -------------------------------------------------------------------

pair "master+viewer (shared)" c-shared "$BUILD/master" "$BUILD/viewer"
pair "master+viewer (static)" c-static "$BUILD/master-static" "$BUILD/viewer-static"
pair "master+viewer (C++)" c-cxx "$BUILD/master-cxx" "$BUILD/viewer-cxx"
for ((i = 0; i < ${#INSTALLED_VIEWERS[@]}; i += 2)); do # a channel each (c-installed-0..2)
    pair "master + ${INSTALLED_VIEWERS[i]}" "c-installed-$((i / 2))" "$BUILD/master"         "${INSTALLED_VIEWERS[i + 1]}"
done

cp_pair "control plane: master+viewer (shared, env credentials)" cp-shared \
    "$BUILD/master" "$BUILD/viewer" "" ""
cp_pair "control plane: master+viewer (shared, credentials callback)" cp-callback \
    "$BUILD/master" "$BUILD/viewer" "--credentials-callback" "--credentials-callback"
cp_pair "control plane: master+viewer (static)" cp-static \
    "$BUILD/master-static" "$BUILD/viewer-static" "" "--credentials-callback"

mapfile -t CP_CREATED < <(cp_args "cp-created-$$")
cp_fails "control plane: wrong secret -> KVS_ERR_ACCESS_DENIED" KVS_ERR_ACCESS_DENIED \
    "${CP_ENV[@]}" AWS_SECRET_ACCESS_KEY=not-the-secret -- "${CP_CREATED[@]}"
cp_fails "control plane: wrong secret, credentials callback -> KVS_ERR_ACCESS_DENIED" \
    KVS_ERR_ACCESS_DENIED "${CP_ENV[@]}" AWS_SECRET_ACCESS_KEY=not-the-secret -- \
    "${CP_CREATED[@]}" --credentials-callback
cp_fails "control plane: unknown channel, no --create-channel -> KVS_ERR_NOT_FOUND" \
    KVS_ERR_NOT_FOUND "${CP_ENV[@]}" -- "${CP_CREATED[@]}"
cp_fails "control plane: no --ca-bundle -> KVS_ERR_TLS" KVS_ERR_TLS "${CP_ENV[@]}" -- \
    --channel-name cp-shared --control-plane "$CONTROL_PLANE" --region us-west-2
cp_fails "control plane: no keys in the environment -> KVS_ERR_CREDENTIALS" KVS_ERR_CREDENTIALS \
    -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -- "${CP_CREATED[@]}"

# AWS IoT credentials: device certificates only, no keys anywhere.
iot_args() { # iot_args THING [ROLE_ALIAS]
    printf '%s\n' --iot-endpoint "$IOT_ENDPOINT" --iot-ca "$IOT_CA" \
        --iot-role-alias "${2:-kvs-signaling-role-alias}" --iot-thing-name "$1" \
        --iot-cert "$LOGS/iot/$1.cert.pem" --iot-key "$LOGS/iot/$1.key.pem"
}
saved_cp_env=("${CP_ENV[@]}")
CP_ENV=(-u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN)
cp_pair "control plane: master+viewer with AWS IoT certificates only" cp-iot \
    "$BUILD/master" "$BUILD/viewer" "$(iot_args camera-1 | tr '\n' ' ')" "$(iot_args viewer-app | tr '\n' ' ')"
# A device certificate of another CA (self-signed here).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=stranger \
    -keyout "$LOGS/iot/stranger.key.pem" -out "$LOGS/iot/stranger.cert.pem" >"$LOGS/iot/openssl.log" 2>&1
mapfile -t IOT_STRANGER < <(iot_args stranger)
cp_fails "IoT: a certificate of another CA -> KVS_ERR_IOT_CERTIFICATE_REFUSED" \
    KVS_ERR_IOT_CERTIFICATE_REFUSED "${CP_ENV[@]}" -- "${CP_CREATED[@]}" "${IOT_STRANGER[@]}"
mapfile -t IOT_NO_ALIAS < <(iot_args viewer-app no-such-alias)
cp_fails "IoT: an unknown role alias -> KVS_ERR_IOT_ROLE_ALIAS_NOT_FOUND" \
    KVS_ERR_IOT_ROLE_ALIAS_NOT_FOUND "${CP_ENV[@]}" -- "${CP_CREATED[@]}" "${IOT_NO_ALIAS[@]}"
CP_ENV=("${saved_cp_env[@]}")
# The channel the NOT_FOUND run did not find: the master creates it.
cp_pair "control plane: --create-channel (master creates cp-created-$$)" "cp-created-$$" \
    "$BUILD/master" "$BUILD/viewer" "--create-channel --message-ttl 30" ""

bad_input "bad_input (shared)" bad_input cp
bad_input "bad_input (static)" bad_input-static cp
bad_input "bad_input (C++)" bad_input-cxx cp
if [ -n "$INSTALLED_BAD_INPUT" ]; then
    bad_input "bad_input (installed static library)" "$INSTALLED_BAD_INPUT" cp
fi

ROUNDS="${KVS_C_TESTS_ROUNDS:-300}"
VALGRIND_ROUNDS=$((ROUNDS / 10))
if [ "$VALGRIND_ROUNDS" -lt 10 ]; then VALGRIND_ROUNDS=10; fi
lifecycle "lifecycle (shared)" lifecycle lc-shared "$ROUNDS"
lifecycle "lifecycle (static)" lifecycle-static lc-static "$ROUNDS"
lifecycle "lifecycle (C++)" lifecycle-cxx lc-cxx "$ROUNDS"

if command -v "$VALGRIND" >/dev/null 2>&1; then
    # The shared library is stripped: valgrind stacks in it have no names, so
    # the TLS runs use the static builds (see tests/c/valgrind.supp).
    bad_input "bad_input (valgrind, shared, no TLS)" bad_input no "$VALGRIND" "${VALGRIND_ARGS[@]}"
    bad_input "bad_input (valgrind, static, with the TLS emulator)" bad_input-static cp \
        "$VALGRIND" "${VALGRIND_ARGS[@]}"
    pair "viewer (valgrind)" c-valgrind "$BUILD/master" "$BUILD/viewer" \
        "$VALGRIND" "${VALGRIND_ARGS[@]}"
    cp_pair "control plane: viewer (valgrind, static)" cp-valgrind "$BUILD/master" \
        "$BUILD/viewer-static" "" "--credentials-callback" "$VALGRIND" "${VALGRIND_ARGS[@]}"
    # The static build: valgrind stacks in it have names. The shutdown cases
    # run in child processes spawned without valgrind.
    lifecycle "lifecycle (valgrind, static, $VALGRIND_ROUNDS rounds)" lifecycle-static \
        lc-valgrind "$VALGRIND_ROUNDS" "$VALGRIND" "${VALGRIND_ARGS[@]}"
else
    record "valgrind" 1 "$VALGRIND not found; install valgrind"
fi

if [ "$ASAN" = 1 ]; then
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" bad_input "bad_input (ASan+UBSan)" bad_input-asan cp
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" lifecycle "lifecycle (ASan+UBSan)" \
        lifecycle-asan lc-asan "$ROUNDS"
fi

# --- what the control-plane runs printed -----------------------------------

step "control plane: secrets and kvs_client_free"
# The secret key must not appear in anything the examples or tests printed.
leaks="$(grep -rlF -- "$CT_SECRET_KEY" "$LOGS" 2>/dev/null | grep -v '/emulator' || true)"
if [ -n "$leaks" ]; then
    record "control plane: no secret key in any output" 1 "found in: $(echo $leaks)"
else
    record "control plane: no secret key in any output" 0
fi
# The examples print this WARNING when free_userdata did not run on the
# thread of kvs_client_free before it returned, which the header rules out (a
# library bug).
mapfile -t late < <(grep -l 'WARNING: library bug' "$LOGS"/*.master.err "$LOGS"/*.viewer.err \
    "$LOGS"/control*.err 2>/dev/null | sort -u)
if [ "${#late[@]}" -gt 0 ]; then
    grep -h 'WARNING: library bug' "${late[@]}" | sort | uniq -c | sed 's/^/    /'
    record "examples: kvs_client_free ran free_userdata on its thread before returning" 1 \
        "${#late[@]} runs saw free_userdata elsewhere or after kvs_client_free returned"
else
    record "examples: kvs_client_free ran free_userdata on its thread before returning" 0
fi

# --- summary -----------------------------------------------------------------

printf '\n==> summary\n'
printf '%s\n' "${RESULTS[@]}"
if [ "$FAILED" != 0 ]; then
    echo "c-tests: FAILED"
    exit 1
fi
echo "c-tests: all passed"
exit 0
