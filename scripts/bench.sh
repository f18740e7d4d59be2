#!/usr/bin/env bash
# Benchmarks: relay latency, throughput, connect time, footprint and emulator
# scale, each speed next to a baseline measured in the same run on this machine;
# then, when chromium and GStreamer are installed, the time to first video
# frame from the GStreamer camera (scripts/media-tests.sh --bench; its own
# table, not in the JSON report).
# Builds what it needs, runs everything on 127.0.0.1 (every process stops by
# itself), prints a Markdown table on stdout and writes a JSON file.
#
#   scripts/bench.sh [--quick|--full] [--out PATH] [--no-build]
#
#   --quick     (default) about a minute: fewer rounds, shorter runs
#   --full      more rounds and repetitions, longer relay runs
#   --out PATH  JSON report (default bench/results.json)
#   --no-build  use what is already built
#
# Progress goes to stderr; the table (and nothing else) to stdout.
# Environment: CARGO (default cargo), MAKE (default make), NODE (default node),
# KVS_BENCH_SOCKETS (scale target, default 10000), CARGO_TARGET_DIR (default
# target).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Where cargo builds: CARGO_TARGET_DIR (relative to the repository root, where
# cargo runs) or target/; exported so that cargo and make agree.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export CARGO_TARGET_DIR="$TARGET_DIR"
CARGO="${CARGO:-cargo}"
MAKE="${MAKE:-make}"
NODE="${NODE:-node}"
MODE=quick
OUT="$ROOT/bench/results.json"
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick; shift ;;
        --full) MODE=full; shift ;;
        --out) OUT="${2:?--out needs a path}"; shift 2 ;;
        --out=*) OUT="${1#*=}"; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

if [ "$MODE" = quick ]; then
    CHUNKS=6; ROUNDS=500; WARMUP=20          # relay: CHUNKS x ROUNDS per implementation
    TPUT_MSGS=50000; TPUT_REPS=3             # throughput
    CONNECT_ITERS=50
    QUEUE_MSGS=10000
    SCALE_SECONDS=3
else
    CHUNKS=10; ROUNDS=2000; WARMUP=50
    TPUT_MSGS=200000; TPUT_REPS=5
    CONNECT_ITERS=200
    QUEUE_MSGS=50000
    SCALE_SECONDS=10
fi
SOCKETS="${KVS_BENCH_SOCKETS:-10000}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvs-bench.XXXXXX")"
LINES="$WORK/results.jsonl"
: >"$LINES"
PIDS=()
NOTES=()
declare -A SKIPPED=()

# Stops the processes this script started, by pid: TERM, then KILL after 3 s.
cleanup() {
    local status=$?
    trap - EXIT
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

START=$SECONDS
say() { printf '[bench +%ss] %s\n' "$((SECONDS - START))" "$*" >&2; }
# Runs a benchmark program; its JSON line(s) go to the results, its stderr to a log.
record() {
    local name="$1"; shift
    if timeout --kill-after=10 900 "$@" >>"$LINES" 2>>"$WORK/$name.log"; then
        return 0
    fi
    say "$name failed: $(tail -n 3 "$WORK/$name.log" | tr '\n' ' ')"
    return 1
}

# The library logs warnings (e.g. the refused connects of the queue test) to stderr.
export KVS_LOG="${KVS_LOG:-error}"

# ---------------------------------------------------------------------------
# Build.
if [ "$BUILD" = 1 ]; then
    say "building the library and the emulator (release)"
    "$CARGO" build --release --lib --bin kvs-signaling-emulator >&2
    say "building the Rust benchmarks (cargo bench --no-run)"
    "$CARGO" bench --bench kvs_bench --no-run --message-format=json-render-diagnostics >"$WORK/cargo-bench.json"
    BENCH_BIN="$(python3 -c 'import json,sys
exe=[json.loads(l).get("executable") for l in open(sys.argv[1]) if "\"executable\"" in l]
print([e for e in exe if e][-1])' "$WORK/cargo-bench.json")"
    say "building the C benchmark programs"
    "$MAKE" -s -C bench/c >&2
    # Footprint only: the firmware variant (system OpenSSL, no rustls, no
    # emulator), in its own target directory so the library above stays as is.
    say "building the native-tls variant of the library (release, \$CARGO_TARGET_DIR/native-tls)"
    if ! "$CARGO" build --release --lib --no-default-features --features native-tls \
        --target-dir "$TARGET_DIR/native-tls" >&2; then
        SKIPPED[native-tls]="the native-tls build failed (libssl-dev and pkg-config installed?)"
    fi
else
    BENCH_BIN="$(ls -t "$TARGET_DIR"/release/deps/kvs_bench-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)"
fi
EMULATOR="$TARGET_DIR/release/kvs-signaling-emulator"
SO="$TARGET_DIR/release/libkvs_signaling.so"
NATIVE_SO="$TARGET_DIR/native-tls/release/libkvs_signaling.so"
# bench/c/Makefile builds there (CARGO_TARGET_DIR is exported above).
C_RELAY="$TARGET_DIR/bench-c/relay"
C_FOOTPRINT="$TARGET_DIR/bench-c/footprint"
for f in "${BENCH_BIN:-missing}" "$EMULATOR" "$SO" "$C_RELAY" "$C_FOOTPRINT"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "bench.sh: $f is missing (run without --no-build)" >&2; exit 1; }
done
JS_OK=1
if ! command -v "$NODE" >/dev/null 2>&1; then
    JS_OK=0; SKIPPED[js-sdk]="node not installed"
elif [ ! -d tests/js/node_modules/amazon-kinesis-video-streams-webrtc ]; then
    say "installing the JS SDK (npm ci in tests/js)"
    if ! (cd tests/js && npm ci --no-audit --no-fund >&2); then
        JS_OK=0; SKIPPED[js-sdk]="npm ci in tests/js failed"
    fi
fi

QUOTA_FLAG=()
if "$EMULATOR" --help | grep -q -- '--no-quotas'; then QUOTA_FLAG=(--no-quotas); fi

stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Starts the emulator with the given channels; sets EMU_PID, EMU_ENDPOINT and
# writes "name arn" lines to $WORK/$1.channels.
start_emulator() {
    local tag="$1" exit_after="$2"; shift 2
    local args=() attempt
    for name in "$@"; do args+=(--channel "$name"); done
    for attempt in 1 2 3; do
        "$EMULATOR" --listen 127.0.0.1:0 "${QUOTA_FLAG[@]}" --exit-after "$exit_after" "${args[@]}" \
            >"$WORK/$tag.out" 2>"$WORK/$tag.err" &
        EMU_PID=$!
        PIDS+=("$EMU_PID")
        EMU_ENDPOINT=""
        for _ in $(seq 200); do
            EMU_ENDPOINT="$(sed -n 1p "$WORK/$tag.out")"
            if [ -n "$EMU_ENDPOINT" ] && [ "$(grep -c '^channel ' "$WORK/$tag.out")" -ge "$#" ]; then
                awk '$1 == "channel" { print $2, $3 }' "$WORK/$tag.out" >"$WORK/$tag.channels"
                return 0
            fi
            kill -0 "$EMU_PID" 2>/dev/null || break
            sleep 0.05
        done
        say "the emulator did not start (attempt $attempt): $(tr '\n' ' ' <"$WORK/$tag.err")"
        stop_pid "$EMU_PID"
        sleep 2   # e.g. a concurrent cargo build replacing the binary
    done
    echo "bench.sh: cannot start $EMULATOR" >&2
    exit 1
}
arn_of() { awk -v n="$2" '$1 == n { print $2 }' "$WORK/$1.channels"; }

# ---------------------------------------------------------------------------
# 1 and 2: relay latency and throughput through one emulator.
say "1. relay latency: $CHUNKS chunks x $ROUNDS rounds per implementation, interleaved"
start_emulator relay 900 relay-raw relay-api relay-c relay-js tput-raw tput-api tput-c
E="$EMU_ENDPOINT"
for chunk in $(seq "$CHUNKS"); do
    record relay-raw "$BENCH_BIN" relay --impl raw --endpoint "$E" --arn "$(arn_of relay relay-raw)" \
        --rounds "$ROUNDS" --warmup "$WARMUP" || true
    record relay-c "$C_RELAY" --endpoint "$E" --arn "$(arn_of relay relay-c)" --data bench/data \
        --mode latency --rounds "$ROUNDS" --warmup "$WARMUP" || true
    record relay-api "$BENCH_BIN" relay --impl api --endpoint "$E" --arn "$(arn_of relay relay-api)" \
        --rounds "$ROUNDS" --warmup "$WARMUP" || true
    if [ "$JS_OK" = 1 ]; then
        record relay-js "$NODE" bench/js/relay.js --endpoint "$E" \
            --channel-arn "$(arn_of relay relay-js)" --rounds "$ROUNDS" --warmup "$WARMUP" ||
            SKIPPED[js-sdk]="bench/js/relay.js failed (see its log)"
    fi
done
say "2. throughput: $TPUT_MSGS ICE candidates one way, $TPUT_REPS repetitions"
for rep in $(seq "$TPUT_REPS"); do
    record tput-raw "$BENCH_BIN" relay --impl raw --mode throughput --endpoint "$E" \
        --arn "$(arn_of relay tput-raw)" --messages "$TPUT_MSGS" || true
    record tput-c "$C_RELAY" --endpoint "$E" --arn "$(arn_of relay tput-c)" --data bench/data \
        --mode throughput --messages "$TPUT_MSGS" || true
    record tput-api "$BENCH_BIN" relay --impl api --mode throughput --endpoint "$E" \
        --arn "$(arn_of relay tput-api)" --messages "$TPUT_MSGS" || true
done
stop_pid "$EMU_PID"

# ---------------------------------------------------------------------------
# 3: connect time (the bench starts its own plain and TLS emulators in-process).
say "3. connect time: $CONNECT_ITERS connects per path, plain and TLS + control plane"
record connect "$BENCH_BIN" connect --iterations "$CONNECT_ITERS" --c-program "$C_RELAY" ||
    SKIPPED[connect]="the connect benchmark failed: $(tail -n 1 "$WORK/connect.log")"

# ---------------------------------------------------------------------------
# 4: footprint.
say "4. footprint: library size, RSS and threads with 1/10/100 clients, queued messages"
STRIPPED="$WORK/libkvs_signaling.stripped.so"
strip -o "$STRIPPED" "$SO" 2>/dev/null || cp "$SO" "$STRIPPED"
SO_BYTES="$(stat -c %s "$STRIPPED")"
NATIVE_SO_BYTES=""
if [ -f "$NATIVE_SO" ] && [ -z "${SKIPPED[native-tls]:-}" ]; then
    NATIVE_STRIPPED="$WORK/libkvs_signaling.native-tls.stripped.so"
    strip -o "$NATIVE_STRIPPED" "$NATIVE_SO" 2>/dev/null || cp "$NATIVE_SO" "$NATIVE_STRIPPED"
    NATIVE_SO_BYTES="$(stat -c %s "$NATIVE_STRIPPED")"
elif [ -z "${SKIPPED[native-tls]:-}" ]; then
    SKIPPED[native-tls]="$NATIVE_SO is missing (run without --no-build)"
fi
# The firmware build for the camera-class targets whose cross gcc is installed.
CROSS_SO_BYTES=""
for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    if line="$(scripts/cross-build.sh "$target" 2>/dev/null | grep 'stripped .so')"; then
        CROSS_SO_BYTES+="$target=$(echo "$line" | sed 's/.*stripped .so \([0-9]*\) bytes.*/\1/') "
    fi
done
FP_CHANNELS=()
for i in $(seq 0 99); do FP_CHANNELS+=("fp$i"); done
start_emulator footprint 300 "${FP_CHANNELS[@]}"
awk '{ print $2 }' "$WORK/footprint.channels" >"$WORK/footprint.arns"
record footprint "$C_FOOTPRINT" --lib "$SO" --mode clients --endpoint "$EMU_ENDPOINT" \
    --arns-file "$WORK/footprint.arns" --steps 1,10,100 || true
stop_pid "$EMU_PID"
for kind in sdp ice; do
    record "queue-$kind" "$C_FOOTPRINT" --lib "$SO" --mode queue --data bench/data --messages "$QUEUE_MSGS" \
        --kind "$kind" || true
done

# ---------------------------------------------------------------------------
# 5: emulator scale, against the bare relay baseline.
NOFILE_WANTED=$((SOCKETS + 1000))
ulimit -n "$NOFILE_WANTED" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE="$(ulimit -n)"
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt "$NOFILE_WANTED" ]; then
    NEW=$((NOFILE - 1000))
    NOTES+=("scale: the fd limit is $NOFILE (hard $(ulimit -Hn)); $NEW sockets instead of $SOCKETS")
    SOCKETS=$NEW
fi
CHANNELS=$(((SOCKETS + 9) / 10))
say "5. emulator scale: $SOCKETS sockets ($CHANNELS channels x 10), relay for $SCALE_SECONDS s"
SC_CHANNELS=()
for i in $(seq 0 $((CHANNELS - 1))); do SC_CHANNELS+=("sc$i"); done
"$BENCH_BIN" scale-server --exit-after 300 >"$WORK/baseline.out" 2>"$WORK/baseline.err" &
BASE_PID=$!
PIDS+=("$BASE_PID")
for _ in $(seq 100); do [ -s "$WORK/baseline.out" ] && break; sleep 0.05; done
for i in $(seq 0 $((CHANNELS - 1))); do
    echo "arn:aws:kinesisvideo:us-west-2:123456789012:channel/sc$i/1700000000000"
done >"$WORK/baseline.arns"
record scale-baseline "$BENCH_BIN" scale --endpoint "$(sed -n 1p "$WORK/baseline.out")" \
    --arns-file "$WORK/baseline.arns" --sockets "$SOCKETS" --seconds "$SCALE_SECONDS" \
    --server-pid "$BASE_PID" --label baseline || true
stop_pid "$BASE_PID"
start_emulator scale 300 "${SC_CHANNELS[@]}"
awk '{ print $2 }' "$WORK/scale.channels" >"$WORK/scale.arns"
record scale "$BENCH_BIN" scale --endpoint "$EMU_ENDPOINT" --arns-file "$WORK/scale.arns" \
    --sockets "$SOCKETS" --seconds "$SCALE_SECONDS" --server-pid "$EMU_PID" --label emulator ||
    SKIPPED[scale]="the scale benchmark failed: $(tail -n 1 "$WORK/scale.log")"
stop_pid "$EMU_PID"

# ---------------------------------------------------------------------------
# Report.
[ ${#QUOTA_FLAG[@]} -gt 0 ] || NOTES+=("the emulator has no --no-quotas flag; its default quotas applied")
NOTES+=("ratios: latency and connect time = figure / baseline (above 1 is slower); rates = figure / baseline (below 1 is slower)")
NOTES+=("relay: master and viewer in one process for every implementation, both unpaced; the floor writes the very frames the library writes")
NOTES+=("scale: the load generator shares the 2 cores with the server, so relay rates are lower bounds; bare relay = bench scale-server (same routing, 4 KiB read buffers, no validation, store or quotas)")
for key in "${!SKIPPED[@]}"; do printf '%s\t%s\n' "$key" "${SKIPPED[$key]}"; done >"$WORK/skipped.txt"
export ROOT MODE SO_BYTES NATIVE_SO_BYTES CROSS_SO_BYTES WORK
META="$WORK/meta.json"
python3 - "$META" "${NOTES[@]+"${NOTES[@]}"}" <<'PY'
import json, os, platform, subprocess, sys
root = os.environ["ROOT"]
def run(*cmd):
    try:
        return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""
model = ""
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
skipped = {}
with open(os.path.join(os.environ["WORK"], "skipped.txt")) as f:
    for line in f:
        key, _, value = line.rstrip("\n").partition("\t")
        skipped[key] = value
meta = {
    "mode": os.environ["MODE"], "commit": run("git", "rev-parse", "HEAD"),
    "dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no")),
    "cores": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
    "rustc": run("rustc", "--version"), "node": run("node", "--version"),
    "date": run("date", "-u", "+%Y-%m-%dT%H:%M:%SZ"),
    "footprint": {"so_stripped_bytes": int(os.environ["SO_BYTES"]),
                  "native_tls": int(os.environ["NATIVE_SO_BYTES"]) if os.environ.get("NATIVE_SO_BYTES") else None,
                  "cross": dict(pair.split("=") for pair in os.environ.get("CROSS_SO_BYTES", "").split())},
    "skipped": skipped, "notes": sys.argv[2:],
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
PY
mkdir -p "$(dirname "$OUT")"
python3 bench/report.py --lines "$LINES" --meta "$META" --out "$OUT"
say "JSON report: $OUT"

# ---------------------------------------------------------------------------
# Video: time to first frame in Chromium and aiortc from the GStreamer camera
# (scripts/media-tests.sh --bench), when chromium and GStreamer are installed.
VIDEO_RUNS=5
[ "$MODE" = quick ] || VIDEO_RUNS=15
say "video: time to first frame, $VIDEO_RUNS runs per viewer (scripts/media-tests.sh --bench)"
set +e
VIDEO_TABLE="$(scripts/media-tests.sh --bench "$VIDEO_RUNS" 2>"$WORK/video.log")"
VIDEO_STATUS=$?
set -e
if [ "$VIDEO_STATUS" -eq 0 ]; then
    echo
    echo "$VIDEO_TABLE"
elif [ "$VIDEO_STATUS" -eq 3 ]; then
    say "video: skipped ($(grep 'missing' "$WORK/video.log" | head -n 3 | tr '\n' ' '))"
else
    say "video: failed: $(tail -n 5 "$WORK/video.log" | tr '\n' ' ')"
fi
