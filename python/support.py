"""Helpers shared by the binding's tests: paths, ports, deadlines, the emulator.

Binaries (build them first, see the README):
  library   $KVS_SIGNALING_LIB  (default ../target/release/libkvs_signaling.so)
  emulator  $KVS_EMULATOR       (default ../target/release/kvs-signaling-emulator)
"""

import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

EMULATOR = os.environ.get(
    "KVS_EMULATOR", os.path.join(ROOT, "target", "release", "kvs-signaling-emulator")
)


def unused_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


@contextlib.contextmanager
def running_emulator(*args: str) -> Iterator[Dict[str, str]]:
    """Runs the emulator on a free local port with `args`; yields what it printed
    at start: "endpoint", "ca" (with TLS), "control-plane" and "channel NAME"
    (the ARN). Kills it afterwards."""
    if not os.access(EMULATOR, os.X_OK):
        raise AssertionError(
            f"emulator not found at {EMULATOR}: "
            "cargo build --release --bin kvs-signaling-emulator (or set KVS_EMULATOR)"
        )
    proc = subprocess.Popen(
        [EMULATOR, "--listen", "127.0.0.1:0", "--exit-after", "60", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: "queue.Queue[str | None]" = queue.Queue()
    stderr_lines = []

    def pump(stream, sink):
        for line in stream:
            sink(line.rstrip("\n"))
        sink(None)

    pumps = [
        threading.Thread(target=pump, args=(proc.stdout, lines.put), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, stderr_lines.append), daemon=True),
    ]
    for t in pumps:
        t.start()
    try:
        endpoint = lines.get(timeout=15)
        assert endpoint and endpoint.startswith(("ws://127.0.0.1:", "wss://127.0.0.1:")), (
            f"first emulator line {endpoint!r}; stderr: {stderr_lines}"
        )
        printed = {"endpoint": endpoint}
        deadline = time.monotonic() + 15
        while "control-plane" not in printed:  # the last line it prints at start
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"emulator ended early; stderr: {stderr_lines}"
            key, _, value = line.rpartition(" ")
            printed[key] = value
        yield printed
    finally:
        kill(proc)
        for t in pumps:
            t.join(timeout=5)  # they end at EOF once the process is gone
        proc.stdout.close()
        proc.stderr.close()
