#!/usr/bin/env bash
# Media tests: real video through our signaling. The C camera
# (examples_c/camera, GStreamer webrtcbin, VP8) serves the emulator's channel
# as master; viewers negotiate through the emulator and must decode frames:
#
#   1. headless Chromium (the system's /usr/bin/chromium through puppeteer-core)
#      opens the emulator's viewer page (SigV4 on: the emulator presigns the
#      page's URL; the camera bootstraps through the control plane): the first
#      frame comes, totalVideoFrames grows, the picture is not black; a
#      screenshot is kept in target/media-artifacts/viewer.png;
#   2. three Chromium viewers at once each get video, and the camera closes
#      their sessions once they are gone;
#   3. faults during a live session: GO_AWAY to the camera, then every
#      connection dropped, then an emulator restart: the video already
#      flowing keeps flowing, and a viewer that joins afterwards gets video;
#   4. a second WebRTC stack: a Python aiortc viewer decodes the camera's
#      frames (when aiortc is installed; see below);
#   5. an aiortc master (the library's MASTER path) serves an aiortc viewer
#      (its VIEWER path) and a Chromium viewer;
#   6. the camera's bounds: --max-viewers refuses a viewer too many, a viewer
#      that vanishes after its offer is closed when ICE fails or times out,
#      and the freed slot serves the next viewer;
#   7. WebRTC ingestion: the channel has media storage enabled and an aiortc
#      process attached as its external storage peer (admin API); the camera
#      with --media-storage on joins the storage session, answers the peer's
#      offer, and the peer decodes its frames.
#
# Everything runs in a private network namespace (loopback plus a veth pair
# with 198.18.0.1, so that the browser and libnice have a non-loopback host
# address; nothing leaves the namespace).
#
# Prerequisites (Debian): chromium, gstreamer1.0-plugins-bad, -plugins-good,
# -plugins-base, gstreamer1.0-nice, libgstreamer-plugins-bad1.0-dev, node/npm
# (puppeteer-core from tests/media/package-lock.json), iproute2, util-linux
# (unshare); pip: aiortc (tests 4, 5, 6, 7), websockets (test 7; both
# installed here when missing). When one is missing the tests are
# skipped with a message, unless KVS_REQUIRE_MEDIA=1 (CI), which makes that a
# failure.
#
# Environment: CARGO_TARGET_DIR (default target), CHROMIUM (default
# /usr/bin/chromium), KVS_REQUIRE_MEDIA, ONLY=NAME (run one test, e.g.
# ONLY=faults-during-video). Ends with "N passed, M failed".
#
#   scripts/media-tests.sh --bench RUNS
#
# Benchmark instead (scripts/bench.sh runs it): RUNS fresh Chromium viewers of
# one camera, one after the other, and RUNS aiortc viewers; prints a Markdown
# table of the median time to first frame split into phases, and the share of
# it spent in signaling, on stdout (progress on stderr). Exit status 3 when a
# prerequisite is missing (the reason on stderr).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CARGO_TARGET_DIR="$TARGET_DIR"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
ARTIFACTS="$TARGET_DIR/media-artifacts"
EMULATOR="$TARGET_DIR/release/kvs-signaling-emulator"
CAMERA="$ROOT/examples_c/camera"
C_VIEWER="$ROOT/examples_c/viewer"
DEMO_ACCESS_KEY=AKIAIOSFODNN7EXAMPLE
DEMO_SECRET_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
AIORTC_VERSION=1.16.0
WEBSOCKETS_VERSION=17.4
# Small frames keep four encoders within two shared cores.
CAMERA_VIDEO=(--width 320 --height 240 --fps 15)

# ---------------------------------------------------------------------------
# Outside the namespace: prerequisites, build, then re-run inside one.
BENCH_RUNS=""
case "${1:-}" in
    "") ;;
    --bench) BENCH_RUNS="${2:?--bench needs a number of runs}" ;;
    -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
    *) echo "media-tests.sh: unknown argument $1" >&2; exit 2 ;;
esac
if [ "${KVS_MEDIA_IN_NETNS:-}" != 1 ] && [ -n "$BENCH_RUNS" ]; then
    exec 3>&1 1>&2 # only the table goes to stdout
fi
if [ "${KVS_MEDIA_IN_NETNS:-}" != 1 ]; then
    missing=()
    [ -x "$CHROMIUM" ] || missing+=("chromium ($CHROMIUM; Debian: chromium)")
    pkg-config --exists gstreamer-webrtc-1.0 gstreamer-sdp-1.0 2>/dev/null ||
        missing+=("GStreamer WebRTC development files (Debian: libgstreamer-plugins-bad1.0-dev)")
    for plugin in nice vpx webrtc videotestsrc; do
        ls /usr/lib/*/gstreamer-1.0/libgst$plugin.so >/dev/null 2>&1 ||
            missing+=("GStreamer plugin $plugin (Debian: gstreamer1.0-nice, -plugins-good, -plugins-bad, -plugins-base)")
    done
    command -v node >/dev/null && command -v npm >/dev/null || missing+=("node and npm")
    command -v unshare >/dev/null && command -v ip >/dev/null || missing+=("unshare and ip (util-linux, iproute2)")
    if ((${#missing[@]} > 0)); then
        printf 'media tests: missing: %s\n' "${missing[@]}"
        [ -z "$BENCH_RUNS" ] || exit 3
        if [ "${KVS_REQUIRE_MEDIA:-}" = 1 ]; then
            echo "media tests: KVS_REQUIRE_MEDIA=1, so this is a failure"
            echo "0 passed, 1 failed"
            exit 1
        fi
        echo "media tests: skipped (set KVS_REQUIRE_MEDIA=1 to make this a failure)"
        exit 0
    fi
    echo "==> building the library, the emulator and the camera"
    cargo build --release --lib && cargo build --release --bin kvs-signaling-emulator &&
        make -s -C examples_c shared || { echo "0 passed, 1 failed"; exit 1; }
    [ -x "$CAMERA" ] || { echo "media tests: examples_c/camera was not built"; echo "0 passed, 1 failed"; exit 1; }
    if [ ! -d tests/media/node_modules/puppeteer-core ]; then
        (cd tests/media && npm ci --no-audit --no-fund --loglevel=error) || { echo "0 passed, 1 failed"; exit 1; }
    fi
    # The second WebRTC stack (tests 4 and 5), set up as the Python tests are.
    python3 -c 'import aiortc' 2>/dev/null || python3 -m pip install --quiet "aiortc==$AIORTC_VERSION" ||
        { echo "media tests: cannot install aiortc $AIORTC_VERSION (pip)"; echo "0 passed, 1 failed"; exit 1; }
    # The storage peer's raw WebSocket (test 7).
    python3 -c 'import websockets.asyncio.client' 2>/dev/null ||
        python3 -m pip install --quiet "websockets==$WEBSOCKETS_VERSION" ||
        { echo "media tests: cannot install websockets $WEBSOCKETS_VERSION (pip)"; echo "0 passed, 1 failed"; exit 1; }
    mkdir -p "$ARTIFACTS"
    if ! unshare --net true 2>/dev/null; then
        echo "media tests: cannot make a network namespace (unshare --net; needs root or user namespaces)"
        if [ "${KVS_REQUIRE_MEDIA:-}" = 1 ]; then echo "0 passed, 1 failed"; exit 1; fi
        echo "media tests: skipped"
        exit 0
    fi
    if [ -n "$BENCH_RUNS" ]; then
        KVS_MEDIA_IN_NETNS=1 exec unshare --net "$0" "$@" 1>&3 3>&-
    fi
    KVS_MEDIA_IN_NETNS=1 exec unshare --net "$0" "$@"
fi

# ---------------------------------------------------------------------------
# Inside the namespace.
ip link set lo up
ip link add kvs0 type veth peer name kvs1
ip addr add 198.18.0.1/24 dev kvs0
ip link set kvs0 up
ip link set kvs1 up
# Chromium picks its host address by the default route; packets that would
# leave go to kvs1, which drops them.
ip route add default dev kvs0

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvs-media.XXXXXX")"
PIDS=()
passed=0
failed=0
failures=()

stop_pid() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for FILE REGEX SECONDS: until a line of FILE matches.
wait_for() {
    local file="$1" re="$2" deadline=$((SECONDS + $3))
    until grep -Eq "$re" "$file" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

EMU_PID=""
CAM_PID=""
CONTROL_PLANE=""
ENDPOINT=""

# start_emulator DIR: SigV4 on, no TLS (the browser would not trust its CA).
start_emulator() {
    local dir="$1"
    "$EMULATOR" --listen 127.0.0.1:0 --channel cam --channel py --exit-after 300 \
        --access-key "$DEMO_ACCESS_KEY" --secret-key "$DEMO_SECRET_KEY" \
        >"$dir/emulator.out" 2>"$dir/emulator.err" &
    EMU_PID=$!
    PIDS+=("$EMU_PID")
    wait_for "$dir/emulator.out" '^control-plane ' 10 || { echo "the emulator did not start"; return 1; }
    CONTROL_PLANE="$(awk '$1 == "control-plane" { print $2 }' "$dir/emulator.out")"
    ENDPOINT="$(sed -n 1p "$dir/emulator.out")"
}

# start_camera DIR [ARGS...]: through the control plane, by channel name.
start_camera() {
    local dir="$1"
    shift
    AWS_ACCESS_KEY_ID="$DEMO_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$DEMO_SECRET_KEY" \
        "$CAMERA" --channel-name cam --control-plane "$CONTROL_PLANE" --region us-west-2 \
        "${CAMERA_VIDEO[@]}" --timeout-s 240 "$@" >"$dir/camera.out" 2>&1 &
    CAM_PID=$!
    PIDS+=("$CAM_PID")
    wait_for "$dir/camera.out" '^camera: connected$' 15 || { echo "the camera did not connect"; return 1; }
}

# Shows the logs of a failed test.
show_logs() {
    local dir="$1" f
    for f in "$dir"/*.out "$dir"/*.err "$dir"/*.log; do
        [ -s "$f" ] || continue
        echo "---- $(basename "$f") ----"
        tail -n 40 "$f"
    done
}

run_test() {
    local name="$1"
    shift
    local dir="$WORK/$name"
    mkdir -p "$dir"
    echo
    echo "--- $name"
    local started=$SECONDS
    if "$@" "$dir"; then
        passed=$((passed + 1))
        echo "--- $name: ok ($((SECONDS - started)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "--- $name: FAILED ($((SECONDS - started)) s)"
        show_logs "$dir"
    fi
    stop_pid "$CAM_PID"
    stop_pid "$EMU_PID"
    CAM_PID=""
    EMU_PID=""
}

view() {
    node tests/media/view.js --url "$CONTROL_PLANE/viewer?channel=cam" --timeout-ms 20000 "$@"
}

aiortc() {
    AWS_ACCESS_KEY_ID="$DEMO_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$DEMO_SECRET_KEY" \
        python3 tests/media/aiortc_peer.py "$1" --control-plane "$CONTROL_PLANE" "${@:2}"
}

# 1. One Chromium viewer, with a screenshot.
chromium_viewer() {
    local dir="$1"
    start_emulator "$dir" && start_camera "$dir" || return 1
    view --screenshot "$ARTIFACTS/viewer.png" | tee "$dir/view.log" | grep -v '^\[' || return 1
    grep -qx 'view: ok' "$dir/view.log" || return 1
    # Trickle ICE went both ways through the library.
    grep -Eq '"candidates":\{"local":[1-9][0-9]*,"remote":[1-9]' "$dir/view.log" ||
        { echo "candidates did not trickle both ways"; return 1; }
    grep -q 'ICE CONNECTED' "$dir/camera.out" || { echo "the camera did not log ICE CONNECTED"; return 1; }
}

# 2. Three viewers at once; their sessions are closed once they are gone.
chromium_three_viewers() {
    local dir="$1"
    start_emulator "$dir" && start_camera "$dir" || return 1
    view --viewers 3 | tee "$dir/view.log" | grep -v '^\[' || return 1
    grep -qx 'view: ok' "$dir/view.log" || return 1
    local answers
    answers=$(grep -c 'answer sent' "$dir/camera.out")
    [ "$answers" -eq 3 ] || { echo "the camera answered $answers viewers, not 3"; return 1; }
    # The browser is gone: RTCP BYE or the RTP source timeout closes each session.
    local deadline=$((SECONDS + 60))
    until [ "$(grep -c 'closed (' "$dir/camera.out")" -ge 3 ]; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "the camera kept sessions of viewers that left"; return 1; }
        sleep 0.5
    done
    grep 'closed (' "$dir/camera.out"
}

# admin PATH JSON: POST to the emulator's admin endpoint, prints the answer.
admin() {
    python3 - "$CONTROL_PLANE/admin/$1" "$2" <<'PY'
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST",
                                 headers={"content-type": "application/json"})
print(urllib.request.urlopen(request, timeout=10).read().decode())
PY
}

# 3. Faults during a live session.
faults_during_video() {
    local dir="$1"
    start_emulator "$dir" && start_camera "$dir" || return 1
    view --hold-ms 9000 --hold-file "$dir/playing" >"$dir/view.log" 2>&1 &
    local view_pid=$!
    PIDS+=("$view_pid")
    if ! wait_for "$dir/playing" playing 30; then
        wait "$view_pid"
        cat "$dir/view.log"
        return 1
    fi
    echo "video is playing; GO_AWAY to the camera (grace 500 ms)"
    admin go-away '{"role": "MASTER", "grace_ms": 500}' && echo
    sleep 1.5
    echo "dropping every connection"
    admin drop '{}' && echo
    sleep 1.5
    echo "restarting the emulator (down 1 s)"
    admin restart '{"down_ms": 1000}' && echo
    wait "$view_pid"
    local status=$?
    grep -v '^\[' "$dir/view.log"
    [ "$status" -eq 0 ] || return 1
    # The camera's signaling came back (its last state is CONNECTED).
    local deadline=$((SECONDS + 20))
    until grep 'signaling state' "$dir/camera.out" | tail -n 1 | grep -q 'state CONNECTED'; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "the camera did not reconnect"; return 1; }
        sleep 0.2
    done
    grep 'signaling state\|GO_AWAY' "$dir/camera.out"
    echo "a viewer joins after the faults"
    view | tee "$dir/view-after.log" | grep -v '^\[' || return 1
    grep -qx 'view: ok' "$dir/view-after.log"
}

# 4. aiortc viewer (the library's VIEWER path through the Python binding) <- C camera.
aiortc_viewer() {
    local dir="$1"
    start_emulator "$dir" && start_camera "$dir" || return 1
    aiortc viewer --channel cam --timeout 20 | tee "$dir/aiortc.log" || return 1
    grep -qx 'aiortc-viewer: ok' "$dir/aiortc.log"
}

# 5. aiortc master (the library's MASTER path) serves an aiortc viewer (VIEWER
#    path) and a Chromium viewer.
aiortc_master() {
    local dir="$1"
    start_emulator "$dir" || return 1
    aiortc master --channel py --seconds 60 >"$dir/master.log" 2>&1 &
    CAM_PID=$!
    PIDS+=("$CAM_PID")
    wait_for "$dir/master.log" '^aiortc-master: connected$' 15 || { echo "the aiortc master did not connect"; return 1; }
    aiortc viewer --channel py --timeout 20 | tee "$dir/aiortc.log" || return 1
    grep -qx 'aiortc-viewer: ok' "$dir/aiortc.log" || return 1
    node tests/media/view.js --url "$CONTROL_PLANE/viewer?channel=py" --timeout-ms 20000 |
        tee "$dir/view.log" | grep -v '^\[' || return 1
    grep -qx 'view: ok' "$dir/view.log"
}

# 6. The camera's bounds: one session at most (--max-viewers 1); a viewer
#    that vanishes after its offer holds it until its ICE fails or times out
#    (--connect-timeout-s 3); a viewer arriving meanwhile is refused; once the
#    slot is free, the next viewer gets video.
camera_bounds() {
    local dir="$1"
    start_emulator "$dir" && start_camera "$dir" --max-viewers 1 --connect-timeout-s 3 || return 1
    aiortc viewer --channel cam --client-id vanishing --offer-only || return 1
    wait_for "$dir/camera.out" 'viewer vanishing: answer sent' 10 || { echo "no answer to the first viewer"; return 1; }
    if aiortc viewer --channel cam --client-id refused --timeout 2 >"$dir/refused.log" 2>&1; then
        echo "a second viewer got video beyond --max-viewers 1"
        return 1
    fi
    grep 'viewer refused: refused' "$dir/camera.out" || { echo "the camera did not refuse the second viewer"; return 1; }
    wait_for "$dir/camera.out" 'viewer vanishing: closed \((ICE failed|ICE did not connect in time)\)' 15 ||
        { echo "the vanished viewer's session was not closed"; return 1; }
    grep 'viewer vanishing: closed' "$dir/camera.out"
    aiortc viewer --channel cam --client-id next --timeout 20 | tee "$dir/next.log" || return 1
    grep -qx 'aiortc-viewer: ok' "$dir/next.log"
}

# admin_get PATH: GET from the emulator's admin endpoint, prints the answer.
admin_get() {
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
        "$CONTROL_PLANE/admin/$1"
}

# enable_storage CHANNEL STREAM_ARN: UpdateMediaStorageConfiguration through
# the library (Python binding, SigV4 with the demo keys).
enable_storage() {
    AWS_ACCESS_KEY_ID="$DEMO_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$DEMO_SECRET_KEY" \
        python3 - "$CONTROL_PLANE" "$1" "$2" <<'PY'
import sys
sys.path.insert(0, "python")
import kvs_signaling as kvs
control_plane, channel, stream = sys.argv[1:]
with kvs.Client(kvs.Role.MASTER, None, None, use_control_plane=True, channel_name=channel,
                control_plane_url=control_plane, region="us-west-2", credentials_from_env=True) as client:
    client.set_media_storage(True, stream)
    print("media storage of %s: %s" % (channel, client.media_storage()))
PY
}

# 7. WebRTC ingestion: an aiortc storage peer attached through the admin API
#    gets the camera's video. The peer connects first (the emulator tells it
#    of joins while it is connected only), then the camera joins.
storage_peer() {
    local dir="$1" stream="arn:aws:kinesisvideo:us-west-2:123456789012:stream/cam-recording/1700000000000"
    start_emulator "$dir" || return 1
    enable_storage cam "$stream" || { echo "cannot enable media storage"; return 1; }
    admin storage-peer '{"channel": "cam", "client_id": "aiortc-storage"}' >/dev/null ||
        { echo "cannot attach the storage peer"; return 1; }
    aiortc storage --channel cam --client-id aiortc-storage --frames 30 --timeout 20 >"$dir/storage.log" 2>&1 &
    local peer_pid=$!
    PIDS+=("$peer_pid")
    wait_for "$dir/storage.log" 'waiting for STORAGE_JOIN' 10 || { cat "$dir/storage.log"; return 1; }
    start_camera "$dir" --media-storage on || { wait "$peer_pid"; return 1; }
    wait "$peer_pid"
    local status=$?
    cat "$dir/storage.log"
    [ "$status" -eq 0 ] && grep -qx 'aiortc-storage: ok' "$dir/storage.log" || return 1
    local frames
    frames=$(python3 -c 'import json, sys; print(next(json.loads(l) for l in open(sys.argv[1]) if l.startswith("{"))["frames"])' \
        "$dir/storage.log") || return 1
    [ "$frames" -ge 30 ] || { echo "the storage peer decoded $frames frames, not 30"; return 1; }
    # The camera joined, got the session's offer, and answered it.
    grep -q 'camera: storage session joined' "$dir/camera.out" || { echo "the camera did not log the join"; return 1; }
    grep -q "camera: storage session's offer received" "$dir/camera.out" ||
        { echo "the camera did not log the storage offer"; return 1; }
    grep -q 'viewer aiortc-storage: answer sent' "$dir/camera.out" ||
        { echo "the camera did not answer the storage session"; return 1; }
    # The emulator's report: the session is the external peer's and was joined.
    admin_get storage-sessions >"$dir/sessions.json" || return 1
    python3 - "$dir/sessions.json" <<'PY' || return 1
import json, sys
text = open(sys.argv[1]).read()
cam = [s for s in json.loads(text)["sessions"] if s["channel"] == "cam"]
assert len(cam) == 1, text
s = cam[0]
assert s["external"] is True and s["session_id"] == "aiortc-storage", s
assert s["joins"] >= 1 and s["offers_sent"] >= 1 and s["active"] is True, s
print("emulator: storage session %s (external), %d join(s), %d STORAGE_JOIN notice(s)"
      % (s["session_id"], s["joins"], s["offers_sent"]))
PY
    # The camera's metrics at exit count the join and the time to the offer.
    stop_pid "$CAM_PID"
    grep 'metrics: storage' "$dir/camera.out"
    grep -Eq 'metrics: storage: [1-9][0-9]* joins?, .* join -> storage offer [0-9.]+ ms$' "$dir/camera.out" ||
        { echo "the camera's metrics do not show the join and the storage offer"; return 1; }
}

# The benchmark: time to first frame, medians over BENCH_RUNS viewers.
bench() {
    local dir="$WORK/bench" i
    mkdir -p "$dir"
    start_emulator "$dir" || { show_logs "$dir" >&2; return 1; }
    # A fresh camera per run: viewers that left keep their sessions (and
    # encoders) until their RTCP times out, which would load later runs.
    for i in $(seq "$BENCH_RUNS"); do
        start_camera "$dir" || { show_logs "$dir" >&2; return 1; }
        cat "$dir/camera.out" >>"$dir/camera-all.out"
        if ! node tests/media/view.js --url "$CONTROL_PLANE/viewer?channel=cam" --timeout-ms 20000 \
            --watch-ms 300 >"$dir/view-$i.log" 2>&1; then
            echo "Chromium run $i failed:" >&2
            grep -v '^\[' "$dir/view-$i.log" >&2
            show_logs "$dir" >&2
            return 1
        fi
        grep '^{' "$dir/view-$i.log" >>"$dir/chromium.jsonl"
        if ! aiortc viewer --channel cam --frames 1 --client-id "aiortc-bench-$i" --timeout 20 \
            >"$dir/aiortc-$i.log" 2>&1; then
            echo "aiortc run $i failed:" >&2
            cat "$dir/aiortc-$i.log" >&2
            return 1
        fi
        grep '^{' "$dir/aiortc-$i.log" >>"$dir/aiortc.jsonl"
        stop_pid "$CAM_PID"
        cat "$dir/camera.out" >>"$dir/camera-all.out"
        echo "run $i of $BENCH_RUNS done" >&2
    done
    python3 - "$dir" "$BENCH_RUNS" <<'PY'
import json, re, statistics, sys
folder, runs = sys.argv[1], sys.argv[2]
# The camera's own time from the offer to its answer (pipeline + webrtcbin):
# offer -> answer minus that is the signaling's round trip.
answer_ms = {m.group(1): float(m.group(2)) for m in re.finditer(
    r"viewer (\S+): answer sent \(\d+ bytes\) ([\d.]+) ms", open(f"{folder}/camera-all.out").read())}
def rows(name):
    return [json.loads(line) for line in open(f"{folder}/{name}.jsonl")]
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
def cell(value):
    return "n/a" if value is None else f"{value:.1f}"
print(f"## Video: time to first frame ({runs} runs each, a fresh camera per run, medians, ms)")
print()
print("| viewer | signaling connect | offer -> answer (camera's share) | offer -> first remote candidate "
      "| answer -> ICE connected | ICE connected -> first frame | total | signaling share |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
chromium = rows("chromium")
def signaling_share(timings, camera_ms):
    total = timings.get("total") or timings.get("firstFrame")
    connect = timings.get("signalingConnect", timings.get("signalingConnected"))
    offer_to_answer = timings.get("offerToAnswer")
    if offer_to_answer is None:
        offer_to_answer = timings["answerReceived"] - timings["offerSent"]
    if total is None or connect is None or camera_ms is None:
        return None
    return 100.0 * (connect + max(0.0, offer_to_answer - camera_ms)) / total
def camera_ms_of(viewer_id):
    return answer_ms.get(viewer_id)
c_rows = []
for r in chromium:
    c_rows.append((r["timings"], camera_ms_of(r["clientId"])))
a_rows = []
for r in rows("aiortc"):
    t = dict(r["timings"])
    t["total"] = t.get("firstFrame")
    t["offerToAnswer"] = t["answerReceived"] - t["offerSent"]
    t["signalingConnect"] = t.get("signalingConnected")
    t["offerToFirstRemoteCandidate"] = (t["firstRemoteCandidate"] - t["offerSent"]) if "firstRemoteCandidate" in t else None
    t["answerToIceConnected"] = (t["iceConnected"] - t["answerReceived"]) if "iceConnected" in t else None
    t["iceConnectedToFirstFrame"] = (t["firstFrame"] - t["iceConnected"]) if "iceConnected" in t else None
    a_rows.append((t, camera_ms_of(r["clientId"])))
for label, rs in (("Chromium (page)", c_rows), ("aiortc (Python binding)", a_rows)):
    get = lambda key: median([t.get(key) for t, _ in rs])
    cam = median([c for _, c in rs])
    share = median([signaling_share(t, c) for t, c in rs])
    print(f"| {label} | {cell(get('signalingConnect'))} | {cell(get('offerToAnswer'))} ({cell(cam)}) "
          f"| {cell(get('offerToFirstRemoteCandidate'))} | {cell(get('answerToIceConnected'))} "
          f"| {cell(get('iceConnectedToFirstFrame'))} | {cell(get('total'))} | "
          f"{'n/a' if share is None else f'{share:.1f} %'} |")
print()
print("Signaling share: (signaling connect + offer -> answer less the camera's own time to "
      "answer) / total. The camera is examples_c/camera (GStreamer webrtcbin, VP8 320x240 at 15 fps); "
      "Chromium's signaling connect includes fetching the presigned URL from the emulator; "
      "the aiortc viewer's includes the library's control-plane calls.")
PY
}
if [ -n "$BENCH_RUNS" ]; then
    bench
    exit $?
fi

[ -z "${ONLY:-}" ] || { run_test "$ONLY" "${ONLY//-/_}"; echo "media: $passed passed, $failed failed"; exit $failed; }
run_test chromium-viewer chromium_viewer
run_test chromium-three-viewers chromium_three_viewers
run_test faults-during-video faults_during_video
run_test aiortc-viewer aiortc_viewer
run_test aiortc-master aiortc_master
run_test camera-bounds camera_bounds
run_test storage-peer storage_peer

echo
if ((failed > 0)); then
    printf 'failed media tests:\n'
    printf '  %s\n' "${failures[@]}"
fi
echo "media: $passed passed, $failed failed"
((failed == 0))
