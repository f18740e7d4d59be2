#!/usr/bin/env bash
# Interop test: official AWS KVS WebRTC JS SDK SignalingClient (VIEWER, tests/js/viewer.js)
# against the kvs-signaling emulator, with a master that answers offers and echoes candidates.
#
# Usage: tests/js/run.sh [--master node|c] [--candidates N] [--timeout-ms T]
#                        [--signer plain|sigv4] [--pascal-case] [--verbose]
#   --master node  (default) tests/js/echo-master.js (self-test master, plain `ws`)
#   --master c     examples_c/master --endpoint E --channel-arn A (ready when it prints
#                  `master: connected`); path overridable with MASTER_BIN
#   --pascal-case  node master only: send C-SDK style keys (RecipientClientId, MessagePayload)
# Environment:
#   EMULATOR     emulator binary (default: $CARGO_TARGET_DIR/release/kvs-signaling-emulator,
#                CARGO_TARGET_DIR relative to <repo>, default <repo>/target)
#   MASTER_BIN   C master binary (default: <repo>/examples_c/master)
#   READY_TIMEOUT_S  seconds to wait for the emulator / master to come up (default 15)
# Needs `npm ci` in tests/js first (done here automatically when node_modules is missing).
# Prints `1 passed, 0 failed` or `0 passed, 1 failed` last; exit status = the viewer's.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
EMULATOR="${EMULATOR:-$TARGET_DIR/release/kvs-signaling-emulator}"
MASTER_BIN="${MASTER_BIN:-$ROOT/examples_c/master}"
READY_TIMEOUT_S="${READY_TIMEOUT_S:-15}"

MASTER=node
CANDIDATES=3
TIMEOUT_MS=10000
SIGNER=plain
PASCAL=()
VERBOSE=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) MASTER="${2:-}"; shift 2 ;;
    --master=*) MASTER="${1#*=}"; shift ;;
    --candidates) CANDIDATES="${2:-}"; shift 2 ;;
    --candidates=*) CANDIDATES="${1#*=}"; shift ;;
    --timeout-ms) TIMEOUT_MS="${2:-}"; shift 2 ;;
    --timeout-ms=*) TIMEOUT_MS="${1#*=}"; shift ;;
    --signer) SIGNER="${2:-}"; shift 2 ;;
    --signer=*) SIGNER="${1#*=}"; shift ;;
    --pascal-case) PASCAL=(--pascal-case); shift ;;
    --verbose) VERBOSE=(--verbose); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; echo "0 passed, 1 failed"; exit 2 ;;
  esac
done

RC=1
EMU_PID=""
MASTER_PID=""
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kvs-js-interop.XXXXXX")"

stop_pid() {
  local pid="$1"
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  stop_pid "$MASTER_PID"
  stop_pid "$EMU_PID"
  if [ "$RC" -ne 0 ]; then
    for f in emulator.out emulator.err master.log; do
      if [ -s "$TMP/$f" ]; then
        echo "---- $f ----"
        tail -n 60 "$TMP/$f"
      fi
    done
  fi
  rm -rf "$TMP"
  if [ "$RC" -eq 0 ]; then echo "1 passed, 0 failed"; else echo "0 passed, 1 failed"; fi
  exit "$RC"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() { echo "run.sh: $*" >&2; RC=1; exit 1; }

# wait_for FILE REGEX PID WHAT: poll until a line of FILE matches REGEX; fail if PID dies first.
wait_for() {
  local file="$1" re="$2" pid="$3" what="$4" deadline=$((SECONDS + READY_TIMEOUT_S))
  while ! grep -Eq "$re" "$file" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || fail "$what exited before it was ready"
    [ "$SECONDS" -lt "$deadline" ] || fail "$what not ready after ${READY_TIMEOUT_S}s"
    sleep 0.05
  done
}

case "$MASTER" in node|c) ;; *) fail "--master must be node or c (got '$MASTER')" ;; esac
command -v node >/dev/null || fail "node not found"
[ -x "$EMULATOR" ] || fail "emulator binary not found: $EMULATOR (cargo build --release --bin kvs-signaling-emulator)"
if [ ! -d "$HERE/node_modules/amazon-kinesis-video-streams-webrtc" ] || [ ! -d "$HERE/node_modules/ws" ]; then
  echo "run.sh: node_modules missing, running npm ci in $HERE"
  (cd "$HERE" && npm ci --no-audit --no-fund) || fail "npm ci failed"
fi

# 1. emulator (loopback, free port). First stdout line: ws://127.0.0.1:PORT; then `channel NAME ARN`.
EXIT_AFTER=$(( (TIMEOUT_MS / 1000) + 2 * READY_TIMEOUT_S + 30 ))
"$EMULATOR" --listen 127.0.0.1:0 --channel demo --exit-after "$EXIT_AFTER" \
  >"$TMP/emulator.out" 2>"$TMP/emulator.err" &
EMU_PID=$!
wait_for "$TMP/emulator.out" '^channel demo ' "$EMU_PID" "emulator"
ENDPOINT="$(head -n 1 "$TMP/emulator.out")"
ARN="$(awk '$1 == "channel" && $2 == "demo" { print $3; exit }' "$TMP/emulator.out")"
case "$ENDPOINT" in ws://127.0.0.1:*) ;; *) fail "unexpected emulator endpoint line: '$ENDPOINT'" ;; esac
[ -n "$ARN" ] || fail "no ARN for channel demo"
echo "run.sh: emulator pid $EMU_PID at $ENDPOINT, channel ARN $ARN"

# 2. master
if [ "$MASTER" = c ]; then
  [ -x "$MASTER_BIN" ] || fail "C master not found: $MASTER_BIN"
  # stdbuf: make sure the ready line is not held in a stdio buffer while writing to a file.
  STDBUF=()
  command -v stdbuf >/dev/null && STDBUF=(stdbuf -oL -eL)
  "${STDBUF[@]}" "$MASTER_BIN" --endpoint "$ENDPOINT" --channel-arn "$ARN" >"$TMP/master.log" 2>&1 &
else
  node "$HERE/echo-master.js" --endpoint "$ENDPOINT" --channel-arn "$ARN" \
    --exit-after-ms $(( EXIT_AFTER * 1000 )) "${PASCAL[@]}" "${VERBOSE[@]}" >"$TMP/master.log" 2>&1 &
fi
MASTER_PID=$!
wait_for "$TMP/master.log" 'master: connected' "$MASTER_PID" "master ($MASTER)"
echo "run.sh: master ($MASTER) pid $MASTER_PID connected"

# 3. viewer (the SDK under test); it enforces its own deadline, `timeout` is a last resort.
VIEWER_ID="js-viewer-$$"
timeout $(( TIMEOUT_MS / 1000 + 10 )) node "$HERE/viewer.js" \
  --endpoint "$ENDPOINT" --channel-arn "$ARN" --client-id "$VIEWER_ID" \
  --candidates "$CANDIDATES" --timeout-ms "$TIMEOUT_MS" --signer "$SIGNER" "${VERBOSE[@]}"
RC=$?
[ "$RC" -eq 0 ] || echo "run.sh: viewer exited with status $RC" >&2
exit "$RC"
