#!/usr/bin/env bash
# C tests of libkvs_signaling against the local emulator (127.0.0.1 only):
#
#   1. make -C examples_c all (shared, static and C++ builds, header check)
#   2. master + viewer, shared library
#   3. master + viewer, static library
#   4. master + viewer, compiled as C++
#   5. tests/c/bad_input, shared, static and C++ builds
#   6. bad_input and the viewer under valgrind (definite leaks and memory
#      errors are fatal)
#   7. (KVS_C_TESTS_ASAN=1) bad_input built with ASan+UBSan
#
# Prints a summary; exits 1 if any step failed.
#
# Environment:
#   KVS_C_TESTS_SKIP_CARGO=1  do not run cargo (the library and the emulator
#                             are already built in target/release)
#   KVS_C_TESTS_ASAN=1        also build and run the ASan+UBSan variant
#   KVS_C_TESTS_LOG_DIR=DIR   keep every log in DIR (default: a temporary
#                             directory, removed when everything passed)
#   VALGRIND                  the valgrind command (default valgrind)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO="${CARGO:-cargo}"
MAKE="${MAKE:-make}"
VALGRIND="${VALGRIND:-valgrind}"
EMULATOR="$ROOT/target/release/kvs-signaling-emulator"
BUILD="$ROOT/examples_c/build"
VALGRIND_ARGS=(--leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1)

if [ -n "${KVS_C_TESTS_LOG_DIR:-}" ]; then
    LOGS="$KVS_C_TESTS_LOG_DIR"
    mkdir -p "$LOGS"
    KEEP_LOGS=1
else
    LOGS="$(mktemp -d "${TMPDIR:-/tmp}/kvs-c-tests.XXXXXX")"
    KEEP_LOGS=0
fi

EMULATOR_PID=""
MASTER_PID=""
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

step "make -C examples_c all"
if "$MAKE" -C examples_c all >"$LOGS/make.log" 2>&1; then
    record "make -C examples_c all" 0
else
    show_tail "$LOGS/make.log"
    record "make -C examples_c all" 1
    printf '%s\n' "${RESULTS[@]}"
    exit 1
fi

ASAN=0
if [ "${KVS_C_TESTS_ASAN:-0}" = 1 ]; then
    if "$MAKE" -C examples_c asan >"$LOGS/make-asan.log" 2>&1; then
        ASAN=1
        record "make -C examples_c asan" 0
    else
        show_tail "$LOGS/make-asan.log"
        record "make -C examples_c asan" 1
    fi
fi

# --- emulator --------------------------------------------------------------

step "starting the emulator on 127.0.0.1"
CHANNELS=(c-shared c-static c-cxx c-valgrind c-bad-input)
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
    ENDPOINT="$(sed -n 1p "$LOGS/emulator.out")"
    if [ "$(grep -c '^channel ' "$LOGS/emulator.out")" -ge "${#CHANNELS[@]}" ]; then
        break
    fi
    sleep 0.1
done
for ch in "${CHANNELS[@]}"; do
    ARN[$ch]="$(awk -v ch="$ch" '$1 == "channel" && $2 == ch { print $3 }' "$LOGS/emulator.out")"
done
if ! [[ "$ENDPOINT" =~ ^ws://127\.0\.0\.1:[0-9]+$ ]] || [ -z "${ARN[c-bad-input]}" ]; then
    echo "error: the emulator did not start (want ws://127.0.0.1:PORT and channel lines)" >&2
    show_tail "$LOGS/emulator.out" "$LOGS/emulator.err" >&2
    exit 1
fi
echo "endpoint: $ENDPOINT"

# --- helpers -----------------------------------------------------------------

# start_master NAME CHANNEL CMD...: runs CMD (a master) in the background and
# waits until it prints "master: connected".
start_master() {
    local name="$1" ch="$2"
    shift 2
    "$@" --endpoint "$ENDPOINT" --channel-arn "${ARN[$ch]}" --timeout-s 300 \
        >"$LOGS/$name.master.out" 2>"$LOGS/$name.master.err" &
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

# bad_input NAME [PREFIX...]: the bad-input test, optionally under a wrapper.
bad_input() {
    local name="$1" binary="$2"
    shift 2
    step "$name"
    timeout 600 "$@" "$BUILD/$binary" --endpoint "$ENDPOINT" --channel-arn "${ARN[c-bad-input]}" \
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

# --- tests -------------------------------------------------------------------

pair "master+viewer (shared)" c-shared "$BUILD/master" "$BUILD/viewer"
pair "master+viewer (static)" c-static "$BUILD/master-static" "$BUILD/viewer-static"
pair "master+viewer (C++)" c-cxx "$BUILD/master-cxx" "$BUILD/viewer-cxx"

bad_input "bad_input (shared)" bad_input
bad_input "bad_input (static)" bad_input-static
bad_input "bad_input (C++)" bad_input-cxx

if command -v "$VALGRIND" >/dev/null 2>&1; then
    bad_input "bad_input (valgrind)" bad_input "$VALGRIND" "${VALGRIND_ARGS[@]}"
    pair "viewer (valgrind)" c-valgrind "$BUILD/master" "$BUILD/viewer" \
        "$VALGRIND" "${VALGRIND_ARGS[@]}"
else
    record "valgrind" 1 "$VALGRIND not found; install valgrind"
fi

if [ "$ASAN" = 1 ]; then
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" bad_input "bad_input (ASan+UBSan)" bad_input-asan
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
