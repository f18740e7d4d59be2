"""Tests of the ctypes binding: a Python MASTER against the C viewer through the
local emulator, plus argument checks and userdata finalisation.

Binaries (build them first, see the report / README):
  library   $KVS_SIGNALING_LIB  (default ../target/release/libkvs_signaling.so)
  emulator  $KVS_EMULATOR       (default ../target/release/kvs-signaling-emulator)
  viewer    $KVS_C_VIEWER       (default ../examples_c/viewer, else
                                ../examples_c/build/viewer, where the Makefile puts it)

Everything binds to 127.0.0.1 and every wait has a deadline.
"""

import os
import subprocess
import sys
import threading
import time

import pytest

from support import HERE, ROOT, kill, running_emulator, unused_port, wait_until

import kvs_signaling as kvs  # noqa: E402


def _default_viewer() -> str:
    # `make -C examples_c viewer` writes examples_c/build/viewer (BUILD_DIR=build).
    for candidate in (
        os.path.join(ROOT, "examples_c", "viewer"),
        os.path.join(ROOT, "examples_c", "build", "viewer"),
    ):
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return os.path.join(ROOT, "examples_c", "viewer")


C_VIEWER = os.environ.get("KVS_C_VIEWER") or _default_viewer()

CHANNEL = "py-demo"
VIEWER_ID = "py-viewer"
CANDIDATES = 5
# A syntactically valid ARN for tests that never reach a service.
OFFLINE_ARN = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/py-offline/1700000000000"
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
ANSWER_SDP = "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=py-master-answer\r\nt=0 0\r\n"


def offline_client(role=kvs.Role.MASTER, **kwargs) -> kvs.Client:
    if role == kvs.Role.VIEWER:
        kwargs.setdefault("client_id", "offline-viewer")
    return kvs.Client(
        role,
        OFFLINE_ARN,
        f"ws://127.0.0.1:{unused_port()}",
        connect_timeout_ms=2000,
        **kwargs,
    )


@pytest.fixture
def emulator():
    """Starts the emulator; yields (endpoint, channel ARN); kills it afterwards."""
    with running_emulator("--channel", CHANNEL) as printed:
        yield printed["endpoint"], printed[f"channel {CHANNEL}"]


# --------------------------------------------------------------------------
# End to end: Python master, C viewer
# --------------------------------------------------------------------------


class Master:
    """Records what the master sees; answers and echoes from inside the callbacks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.offers = []
        self.candidates = []
        self.others = []
        self.statuses = []
        self.states = []
        self.sent = []
        self.in_callback_codes = []
        self.callback_threads = set()

    def on_message(self, client: kvs.Client, msg: kvs.Message) -> None:
        self.callback_threads.add(threading.get_ident())
        if msg.message_type == kvs.MessageType.SDP_OFFER:
            with self.lock:
                self.offers.append(msg)
            # Blocking calls from a callback must be refused, not deadlock.
            for blocking in (client.disconnect, client.close):
                try:
                    blocking()
                except kvs.KvsError as e:
                    self.in_callback_codes.append(e.code)
            cid = client.send_sdp_answer(ANSWER_SDP, recipient=msg.sender_client_id)
            self.sent.append(("answer", cid))
        elif msg.message_type == kvs.MessageType.ICE_CANDIDATE:
            with self.lock:
                self.candidates.append(msg)
            cid = client.send_ice_candidate(
                msg.candidate,
                sdp_mid=msg.sdp_mid,
                sdp_mline_index=msg.sdp_mline_index,
                username_fragment=msg.username_fragment,
                recipient=msg.sender_client_id,
            )
            self.sent.append(("candidate", cid))
        else:
            self.others.append(msg)

    def on_status(self, client: kvs.Client, status: kvs.Status) -> None:
        self.statuses.append(status)

    def on_state(self, client: kvs.Client, change: kvs.StateChange) -> None:
        self.callback_threads.add(threading.get_ident())
        self.states.append(change)


def test_python_master_with_c_viewer(emulator):
    endpoint, arn = emulator
    if not os.access(C_VIEWER, os.X_OK):
        pytest.fail(
            f"C viewer not found at {C_VIEWER}: make -C examples_c viewer (or set KVS_C_VIEWER)"
        )
    rec = Master()
    client = kvs.Client(
        kvs.Role.MASTER,
        arn,
        endpoint,
        connect_timeout_ms=5000,
        on_message=rec.on_message,
        on_status=rec.on_status,
        on_state=rec.on_state,
    )
    viewer = None
    try:
        client.connect()
        assert client.state == kvs.State.CONNECTED
        viewer = subprocess.Popen(
            [
                C_VIEWER,
                "--endpoint", endpoint,
                "--channel-arn", arn,
                "--client-id", VIEWER_ID,
                "--candidates", str(CANDIDATES),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = viewer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            kill(viewer)
            out, err = viewer.communicate(timeout=5)
            pytest.fail(f"C viewer did not finish in 30 s\nstdout:\n{out}\nstderr:\n{err}")
        assert viewer.returncode == 0, (
            f"C viewer exited {viewer.returncode}\nstdout:\n{out}\nstderr:\n{err}\n"
            f"master callback errors: {[e.traceback for e in client.callback_errors]}"
        )
        wait_until(
            lambda: len(rec.offers) >= 1 and len(rec.candidates) >= CANDIDATES,
            10,
            "the offer and the candidates at the master",
        )
        assert client.callback_errors == [], [e.traceback for e in client.callback_errors]
        assert len(rec.offers) == 1
        assert len(rec.candidates) == CANDIDATES
        offer = rec.offers[0]
        assert offer.sender_client_id == VIEWER_ID
        assert offer.sdp_type == "offer"
        assert offer.sdp
        assert offer.payload  # the decoded JSON payload, copied out as bytes
        for c in rec.candidates:
            assert c.sender_client_id == VIEWER_ID
            assert c.candidate and c.candidate.startswith("candidate")
            assert c.sdp_type is None and c.sdp is None
        assert rec.in_callback_codes == [kvs.Result.ERR_WOULD_DEADLOCK, kvs.Result.ERR_IN_CALLBACK]
        assert [kind for kind, _ in rec.sent] == ["answer"] + ["candidate"] * CANDIDATES
        assert len({cid for _, cid in rec.sent}) == len(rec.sent)  # unique correlation ids
        assert rec.statuses == [], rec.statuses
        assert [s.state for s in rec.states[:2]] == [kvs.State.CONNECTING, kvs.State.CONNECTED]
        # One dispatcher thread, and not this one.
        assert len(rec.callback_threads) == 1
        assert threading.get_ident() not in rec.callback_threads
        client.disconnect()
        assert client.state == kvs.State.DISCONNECTED
    finally:
        if viewer is not None:
            kill(viewer)
        assert client.close(timeout=5)
    assert client.free_userdata_calls == 1


# --------------------------------------------------------------------------
# Bad input through the binding (no service needed)
# --------------------------------------------------------------------------


def expect_error(code, fn, *args, **kwargs) -> kvs.KvsError:
    with pytest.raises(kvs.KvsError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert err.code == code, str(err)
    assert err.result_str == kvs.kvs_result_str(code)
    assert err.result_str and err.result_str != "unknown result code"
    assert err.message, "kvs_last_error_message() should describe the failure"
    return err


def test_bad_sdp():
    with offline_client() as master:
        expect_error(kvs.Result.ERR_NULL_PARAMETER, master.send_sdp_offer, None, recipient="v1")
        expect_error(kvs.Result.ERR_PAYLOAD_EMPTY, master.send_sdp_offer, "", recipient="v1")
        expect_error(kvs.Result.ERR_PAYLOAD_EMPTY, master.send_sdp_answer, "", recipient="v1")
        expect_error(
            kvs.Result.ERR_INVALID_UTF8, master.send_sdp_offer, b"v=0\xff", recipient="v1"
        )
        expect_error(
            kvs.Result.ERR_PAYLOAD_TOO_LARGE,
            master.send_sdp_offer,
            "a" * (kvs.KVS_MAX_SDP_LEN + 1),
            recipient="v1",
        )
        expect_error(kvs.Result.ERR_PAYLOAD_EMPTY, master.send_ice_candidate, "", recipient="v1")
        expect_error(kvs.Result.ERR_PAYLOAD_EMPTY, master.send_message,
                     kvs.MessageType.SDP_OFFER, b"", recipient="v1")
        expect_error(kvs.Result.ERR_INVALID_ARGUMENT, master.send_message,
                     kvs.MessageType.GO_AWAY, b"{}", recipient="v1")
    with pytest.raises(ValueError):
        offline_client().send_sdp_offer("a\0b", recipient="v1")


def test_recipient_rules():
    with offline_client() as master:
        expect_error(kvs.Result.ERR_RECIPIENT_REQUIRED, master.send_sdp_offer, SDP)
        expect_error(kvs.Result.ERR_RECIPIENT_REQUIRED, master.send_ice_candidate,
                     "candidate:1 1 udp 1 127.0.0.1 9 typ host")
    with offline_client(kvs.Role.VIEWER) as viewer:
        expect_error(kvs.Result.ERR_RECIPIENT_NOT_ALLOWED, viewer.send_sdp_offer, SDP,
                     recipient="someone")


def test_send_before_connect():
    with offline_client() as master:
        assert master.state == kvs.State.DISCONNECTED
        expect_error(kvs.Result.ERR_NOT_CONNECTED, master.send_sdp_offer, SDP, recipient="v1")
        expect_error(kvs.Result.ERR_NOT_CONNECTED, master.send_message,
                     kvs.MessageType.SDP_ANSWER, b'{"type":"answer","sdp":"x"}',
                     recipient="v1")
    with offline_client(kvs.Role.VIEWER) as viewer:
        expect_error(kvs.Result.ERR_NOT_CONNECTED, viewer.send_sdp_offer, SDP)
        expect_error(kvs.Result.ERR_NOT_CONNECTED, viewer.send_ice_candidate,
                     "candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0", sdp_mline_index=0)


def test_id_rules():
    with offline_client() as master:
        expect_error(kvs.Result.ERR_ID_PATTERN, master.send_sdp_offer, SDP, recipient="bad id!")
        expect_error(kvs.Result.ERR_ID_PATTERN, master.send_sdp_offer, SDP, recipient="v1",
                     correlation_id="bad/id")
        expect_error(kvs.Result.ERR_ID_EMPTY, master.send_sdp_offer, SDP, recipient="")
        expect_error(kvs.Result.ERR_ID_TOO_LONG, master.send_sdp_offer, SDP,
                     recipient="v" * 257)


def test_bad_config():
    err = expect_error(kvs.Result.ERR_INVALID_CONFIG, kvs.Client, kvs.Role.MASTER,
                       "not-an-arn", "ws://127.0.0.1:9")
    # free_userdata ran on this thread before kvs_client_new returned.
    assert err.free_userdata_calls == 1
    err = expect_error(kvs.Result.ERR_NULL_PARAMETER, kvs.Client, kvs.Role.VIEWER,
                       OFFLINE_ARN, "ws://127.0.0.1:9")
    assert err.free_userdata_calls == 1
    expect_error(kvs.Result.ERR_INVALID_CONFIG, kvs.Client, kvs.Role.MASTER, OFFLINE_ARN,
                 "http://127.0.0.1:9")


def test_free_userdata_once_after_close():
    client = offline_client(on_message=lambda c, m: None, on_state=lambda c, s: None)
    assert client.free_userdata_calls == 0
    assert client.close(timeout=5)
    assert client.free_userdata_calls == 1
    time.sleep(0.3)
    assert client.free_userdata_calls == 1
    assert client.close()  # idempotent: kvs_client_free is not called twice
    assert client.free_userdata_calls == 1
    with pytest.raises(ValueError):
        client.send_sdp_offer(SDP, recipient="v1")


def test_callback_exception_is_caught():
    """A failing connect drives on_state; the raising callback must not reach C."""
    seen = []

    def on_state(client, change):
        seen.append(change)
        raise RuntimeError(f"boom {change.state!r}")

    client = offline_client(on_state=on_state)
    try:
        with pytest.raises(kvs.KvsError) as info:
            client.connect()
        assert info.value.code in (kvs.Result.ERR_NETWORK, kvs.Result.ERR_TIMEOUT), str(info.value)
        wait_until(lambda: len(seen) >= 2, 5, "CONNECTING and DISCONNECTED")
        assert [c.state for c in seen[:2]] == [kvs.State.CONNECTING, kvs.State.DISCONNECTED]
        assert seen[1].reason
        wait_until(lambda: len(client.callback_errors) >= 2, 5, "recorded callback errors")
        assert all(isinstance(e.exception, RuntimeError) for e in client.callback_errors)
        assert client.callback_errors[0].callback == "on_state"
    finally:
        assert client.close(timeout=5)
    assert client.free_userdata_calls == 1


def test_log_callback_and_version():
    assert kvs.version().startswith(
        f"kvs-signaling {kvs.KVS_VERSION_MAJOR}.{kvs.KVS_VERSION_MINOR}.{kvs.KVS_VERSION_PATCH}"
    )
    assert kvs.kvs_result_str(9999) == "unknown result code"
    assert kvs.kvs_result_name(9999) == "KVS_ERR_UNKNOWN"
    assert all(kvs.kvs_result_name(code) == "KVS_" + code.name for code in kvs.Result)
    lines = []
    before = kvs.log_free_userdata_calls
    kvs.set_log_callback(
        kvs.LogLevel.TRACE, lambda lvl, target, msg: lines.append((lvl, target, msg))
    )
    try:
        client = offline_client()
        with pytest.raises(kvs.KvsError):
            client.connect()
        client.close(timeout=5)
    finally:
        kvs.set_log_callback(kvs.LogLevel.WARN, None)  # back to stderr
    # The replaced registration and the NULL one: free_userdata once each.
    wait_until(lambda: kvs.log_free_userdata_calls == before + 2, 5, "log free_userdata")
    assert kvs.log_callback_errors == []
    # The refused connect is logged (at warn) through the callback, not stderr.
    assert lines, "no log line reached the callback"
    assert all(isinstance(lvl, kvs.LogLevel) and target and msg for lvl, target, msg in lines)
    with pytest.raises(kvs.KvsError) as info:
        kvs.set_log_callback(99, None)
    assert info.value.code == kvs.Result.ERR_INVALID_ARGUMENT
    assert kvs.kvs_last_error() == info.value.message


def test_client_left_open_at_exit():
    """The module's atexit hook frees what the program forgot; the process exits cleanly."""
    code = f"""
import sys
sys.path.insert(0, {HERE!r})
import kvs_signaling as kvs
kvs.set_log_callback(kvs.LogLevel.DEBUG, lambda *a: None)
keep = kvs.Client(kvs.Role.MASTER, {OFFLINE_ARN!r}, "ws://127.0.0.1:{unused_port()}",
                  on_state=lambda c, s: None)
try:
    keep.connect()
except kvs.KvsError:
    pass
print("ok", flush=True)
"""
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "Exception ignored" not in proc.stderr and "Fatal" not in proc.stderr, proc.stderr
