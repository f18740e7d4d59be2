#!/usr/bin/env bash
# One-command demo from a fresh clone: builds the C library and the emulator,
# builds the C examples, starts the emulator on 127.0.0.1 with one channel,
# runs the C master in the background and the C viewer in the foreground, and
# prints the exchange. Exits with the viewer's status.
#
#   scripts/demo.sh
#
# Environment: CANDIDATES (default 5), CARGO (default cargo), MAKE (default make).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO="${CARGO:-cargo}"
MAKE="${MAKE:-make}"
CANDIDATES="${CANDIDATES:-5}"
CHANNEL=demo-channel
EMULATOR="$ROOT/target/release/kvs-signaling-emulator"
BUILD="$ROOT/examples_c/build"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvs-demo.XXXXXX")"
EMULATOR_PID=""
MASTER_PID=""

# Stops one process we started: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT
    stop_pid "$MASTER_PID"
    stop_pid "$EMULATOR_PID"
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==> %s\n' "$*"; }

step "building the library (cargo build --release --lib)"
"$CARGO" build --release --lib

step "building the emulator (cargo build --release --bin kvs-signaling-emulator)"
"$CARGO" build --release --bin kvs-signaling-emulator

step "building the C examples (make -C examples_c shared)"
"$MAKE" -C examples_c shared

step "starting the emulator on 127.0.0.1"
"$EMULATOR" --listen 127.0.0.1:0 --channel "$CHANNEL" --exit-after 120 \
    >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMULATOR_PID=$!

ENDPOINT=""
ARN=""
for _ in $(seq 100); do
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
        echo "error: the emulator exited early:" >&2
        cat "$WORK/emulator.err" >&2
        exit 1
    fi
    ENDPOINT="$(sed -n 1p "$WORK/emulator.out")"
    ARN="$(awk -v ch="$CHANNEL" '$1 == "channel" && $2 == ch { print $3 }' "$WORK/emulator.out")"
    [ -n "$ENDPOINT" ] && [ -n "$ARN" ] && break
    sleep 0.1
done
if ! [[ "$ENDPOINT" =~ ^ws://127\.0\.0\.1:[0-9]+$ ]] || [ -z "$ARN" ]; then
    echo "error: unexpected emulator output (want ws://127.0.0.1:PORT and a channel line):" >&2
    cat "$WORK/emulator.out" "$WORK/emulator.err" >&2
    exit 1
fi
echo "endpoint:    $ENDPOINT"
echo "channel ARN: $ARN"

step "starting the C master"
# --timeout-s is only a safety net; the script stops it below.
"$BUILD/master" --endpoint "$ENDPOINT" --channel-arn "$ARN" --timeout-s 110 \
    >"$WORK/master.out" 2>"$WORK/master.err" &
MASTER_PID=$!
for _ in $(seq 100); do
    grep -qx 'master: connected' "$WORK/master.out" 2>/dev/null && break
    if ! kill -0 "$MASTER_PID" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if ! grep -qx 'master: connected' "$WORK/master.out" 2>/dev/null; then
    echo "error: the master did not connect:" >&2
    cat "$WORK/master.out" "$WORK/master.err" >&2
    exit 1
fi
echo "master connected"

step "running the C viewer ($CANDIDATES candidates)"
set +e
"$BUILD/viewer" --endpoint "$ENDPOINT" --channel-arn "$ARN" --client-id demo-viewer \
    --candidates "$CANDIDATES" --timeout-s 10
VIEWER_STATUS=$?
set -e

step "stopping the master"
stop_pid "$MASTER_PID"
MASTER_PID=""
echo "--- master log ---"
cat "$WORK/master.out"
if [ -s "$WORK/master.err" ]; then
    echo "--- master stderr ---"
    cat "$WORK/master.err"
fi

step "stopping the emulator"
stop_pid "$EMULATOR_PID"
EMULATOR_PID=""

echo
if [ "$VIEWER_STATUS" -eq 0 ]; then
    echo "demo: OK"
else
    echo "demo: FAILED (viewer exit status $VIEWER_STATUS)"
fi
exit "$VIEWER_STATUS"
