#!/usr/bin/env bash
# One-command demo from a fresh clone: builds the C library and the emulator,
# builds the C examples, starts the emulator on 127.0.0.1 the way the real
# service works (TLS with a generated CA, SigV4 auth with made-up demo keys,
# the control-plane API), runs the C master in the background and the C viewer
# in the foreground, both bootstrapping from the channel NAME through the
# control plane (DescribeSignalingChannel, GetSignalingChannelEndpoint,
# GetIceServerConfig) with the keys in the environment, and prints the
# exchange, the TURN servers, the timings and the client metrics. Stops by
# itself; exits with the viewer's status.
#
#   scripts/demo.sh
#   scripts/demo.sh --video
#
# With --video: real video instead. Builds the GStreamer camera too
# (examples_c/camera; needs GStreamer's WebRTC packages, see the README),
# starts the emulator with SigV4 auth but without TLS (a browser would not
# trust the generated CA), runs the camera as the channel's master through the
# control plane, and prints the viewer page's URL to open in a browser
# (http://127.0.0.1:PORT/viewer?channel=demo-channel). Runs until Ctrl-C, or
# VIDEO_SECONDS seconds when set.
#
# Environment: CANDIDATES (default 5), CARGO (default cargo), MAKE (default make),
# CARGO_TARGET_DIR (default target), VIDEO_SECONDS (--video).
#
# The keys below are placeholders the emulator is told to accept; they are
# not AWS credentials. To run the same examples against a real AWS account,
# see the hint printed at the end.
set -euo pipefail

VIDEO=0
case "${1:-}" in
    "") ;;
    --video) VIDEO=1 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Where cargo builds: CARGO_TARGET_DIR (relative to the repository root, where
# cargo runs) or target/; exported so that cargo and make agree.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CARGO_TARGET_DIR="$TARGET_DIR"

CARGO="${CARGO:-cargo}"
MAKE="${MAKE:-make}"
CANDIDATES="${CANDIDATES:-5}"
CHANNEL=demo-channel
EMULATOR="$TARGET_DIR/release/kvs-signaling-emulator"
BUILD="$ROOT/examples_c/build"
# Made-up demo keys (AWS documentation style placeholders), accepted only by
# the emulator started below.
DEMO_ACCESS_KEY=AKIAIOSFODNN7EXAMPLE
DEMO_SECRET_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvs-demo.XXXXXX")"
EMULATOR_PID=""
MASTER_PID=""
CAMERA_PID=""

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
    stop_pid "$CAMERA_PID"
    stop_pid "$EMULATOR_PID"
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '\n==> %s\n' "$*"; }

# The --video demo: emulator + GStreamer camera + the emulator's viewer page.
video_demo() {
    if ! pkg-config --exists gstreamer-webrtc-1.0 gstreamer-sdp-1.0 2>/dev/null; then
        echo "error: --video needs GStreamer's WebRTC packages; on Debian:" >&2
        echo "  apt-get install libgstreamer-plugins-bad1.0-dev gstreamer1.0-plugins-bad \\" >&2
        echo "    gstreamer1.0-plugins-good gstreamer1.0-plugins-base gstreamer1.0-nice" >&2
        exit 1
    fi
    step "building the library, the emulator and the camera"
    "$CARGO" build --release --lib
    "$CARGO" build --release --bin kvs-signaling-emulator
    "$MAKE" -C examples_c camera

    step "starting the emulator (SigV4 auth with the demo keys; plain HTTP for the browser)"
    "$EMULATOR" --listen 127.0.0.1:0 --channel "$CHANNEL" \
        --access-key "$DEMO_ACCESS_KEY" --secret-key "$DEMO_SECRET_KEY" \
        >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
    EMULATOR_PID=$!
    for _ in $(seq 100); do
        grep -q '^control-plane ' "$WORK/emulator.out" && break
        kill -0 "$EMULATOR_PID" 2>/dev/null || break
        sleep 0.1
    done
    local control_plane
    control_plane="$(awk '$1 == "control-plane" { print $2 }' "$WORK/emulator.out")"
    if [ -z "$control_plane" ]; then
        echo "error: the emulator did not start:" >&2
        cat "$WORK/emulator.err" >&2
        exit 1
    fi

    step "starting the camera (control plane, channel \"$CHANNEL\", videotestsrc -> VP8)"
    AWS_ACCESS_KEY_ID="$DEMO_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$DEMO_SECRET_KEY" \
        examples_c/camera --channel-name "$CHANNEL" --control-plane "$control_plane" \
        --region us-west-2 >"$WORK/camera.out" 2>&1 &
    CAMERA_PID=$!
    for _ in $(seq 150); do
        grep -qx 'camera: connected' "$WORK/camera.out" && break
        kill -0 "$CAMERA_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -qx 'camera: connected' "$WORK/camera.out"; then
        echo "error: the camera did not connect:" >&2
        cat "$WORK/camera.out" >&2
        exit 1
    fi
    local url="$control_plane/viewer?channel=$CHANNEL"
    echo
    echo "Open this page in a browser (Chromium, Firefox, Safari):"
    echo
    echo "    $url"
    echo
    echo "It shows the camera's test pattern and the time each step took (signaling"
    echo "connect, offer -> answer, first candidate, ICE connected, first frame)."
    echo "Camera log: $WORK/camera.out. Ctrl-C stops everything."
    local deadline=$((SECONDS + ${VIDEO_SECONDS:-0}))
    tail -n +1 -f "$WORK/camera.out" | grep --line-buffered 'viewer ' &
    local tail_pid=$!
    while kill -0 "$CAMERA_PID" 2>/dev/null; do
        if [ -n "${VIDEO_SECONDS:-}" ] && [ "$SECONDS" -ge "$deadline" ]; then
            break
        fi
        sleep 0.5
    done
    kill "$tail_pid" 2>/dev/null || true
    echo "demo: stopped"
    exit 0
}
if [ "$VIDEO" = 1 ]; then
    video_demo
fi

step "building the library (cargo build --release --lib)"
"$CARGO" build --release --lib

step "building the emulator (cargo build --release --bin kvs-signaling-emulator)"
"$CARGO" build --release --bin kvs-signaling-emulator

step "building the C examples (make -C examples_c shared)"
"$MAKE" -C examples_c shared

step "starting the emulator on 127.0.0.1 (TLS, SigV4 auth with the demo keys)"
"$EMULATOR" --listen 127.0.0.1:0 --channel "$CHANNEL" --exit-after 120 \
    --tls --cert-out "$WORK/emulator-ca.pem" \
    --access-key "$DEMO_ACCESS_KEY" --secret-key "$DEMO_SECRET_KEY" \
    >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
EMULATOR_PID=$!

ENDPOINT=""
ARN=""
CA=""
CONTROL_PLANE=""
for _ in $(seq 100); do
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
        echo "error: the emulator exited early:" >&2
        cat "$WORK/emulator.err" >&2
        exit 1
    fi
    # The control-plane line comes last: the lines before it are complete.
    grep -q '^control-plane .*[0-9]$' "$WORK/emulator.out" && break
    sleep 0.1
done
ENDPOINT="$(sed -n 1p "$WORK/emulator.out")"
ARN="$(awk -v ch="$CHANNEL" '$1 == "channel" && $2 == ch { print $3 }' "$WORK/emulator.out")"
CA="$(awk '$1 == "ca" { print $2 }' "$WORK/emulator.out")"
CONTROL_PLANE="$(awk '$1 == "control-plane" { print $2 }' "$WORK/emulator.out")"
if ! [[ "$ENDPOINT" =~ ^wss://127\.0\.0\.1:[0-9]+$ ]] || [ -z "$ARN" ] || [ ! -s "$CA" ] ||
    ! [[ "$CONTROL_PLANE" =~ ^https://127\.0\.0\.1:[0-9]+$ ]]; then
    echo "error: unexpected emulator output (want wss://127.0.0.1:PORT, a channel line," >&2
    echo "       a ca line and a control-plane https://127.0.0.1:PORT line):" >&2
    cat "$WORK/emulator.out" "$WORK/emulator.err" >&2
    exit 1
fi
echo "control plane: $CONTROL_PLANE   (the examples start from here)"
echo "data plane:    $ENDPOINT   (learnt through GetSignalingChannelEndpoint)"
echo "channel:       $CHANNEL   ($ARN)"
echo "CA bundle:     $CA"
echo "credentials:   AWS_ACCESS_KEY_ID=$DEMO_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=<demo secret>"

# The examples read the keys from the environment (credentials_from_env).
export AWS_ACCESS_KEY_ID="$DEMO_ACCESS_KEY"
export AWS_SECRET_ACCESS_KEY="$DEMO_SECRET_KEY"
unset AWS_SESSION_TOKEN
CP_ARGS=(--channel-name "$CHANNEL" --control-plane "$CONTROL_PLANE" --ca-bundle "$CA" --region us-west-2)

step "starting the C master (control plane, channel \"$CHANNEL\" by name)"
# --timeout-s is only a safety net; the script stops it below.
"$BUILD/master" "${CP_ARGS[@]}" --timeout-s 110 \
    >"$WORK/master.out" 2>"$WORK/master.err" &
MASTER_PID=$!
for _ in $(seq 150); do
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

step "running the C viewer (control plane, $CANDIDATES candidates)"
set +e
"$BUILD/viewer" "${CP_ARGS[@]}" --client-id demo-viewer \
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
echo "To run the same examples against a real AWS account (this creates the channel"
echo "if needed; the keys need Kinesis Video Streams permissions):"
echo "  export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... [AWS_SESSION_TOKEN=...]"
echo "  examples_c/master --channel-name my-channel --region us-west-2 --create-channel &"
echo "  examples_c/viewer --channel-name my-channel --region us-west-2 --client-id viewer-1"
echo
if [ "$VIEWER_STATUS" -eq 0 ]; then
    echo "demo: OK"
else
    echo "demo: FAILED (viewer exit status $VIEWER_STATUS)"
fi
exit "$VIEWER_STATUS"
