"""The rest of the C API through the binding: start, metrics, the control plane
with a credentials callback, a CA bundle and the endpoint cache, ICE servers,
the STUN URL. Against the local emulator; every wait has a deadline."""

import json
import threading

import pytest

from support import running_emulator, unused_port, wait_until

import kvs_signaling as kvs  # noqa: E402

ACCESS_KEY = "AKIDPYTHONTEST"
SECRET_KEY = "py-test-secret"


class Events:
    def __init__(self):
        self.states = []
        self.ice_counts = []
        self.credential_calls = 0
        self.lock = threading.Lock()

    def on_state(self, client, change):
        self.states.append(change.state)

    def on_ice_servers(self, client, count):
        self.ice_counts.append(count)

    def credentials(self):
        with self.lock:
            self.credential_calls += 1
        return kvs.Credentials(ACCESS_KEY, SECRET_KEY, expiry_unix_s=0)


def test_stun_url_and_version():
    assert kvs.stun_url("us-west-2") == "stun:stun.kinesisvideo.us-west-2.amazonaws.com:443"
    assert kvs.stun_url("eu-west-1", use_fips=True).startswith("stun")
    with pytest.raises(kvs.KvsError) as info:
        kvs.stun_url("Not A Region")
    assert info.value.code == kvs.Result.ERR_INVALID_CONFIG
    assert kvs.version_number() == kvs.KVS_VERSION_NUMBER


def test_unknown_option_is_refused():
    with pytest.raises(TypeError):
        kvs.Client(kvs.Role.MASTER, "arn", "ws://127.0.0.1:9", no_such_field=1)
    with pytest.raises(TypeError):
        kvs.Client(kvs.Role.MASTER, "arn", "ws://127.0.0.1:9", on_message_typo=1)


def test_start_and_metrics():
    with running_emulator("--channel", "py-start") as printed:
        events = Events()
        with kvs.Client(
            kvs.Role.MASTER,
            printed["channel py-start"],
            printed["endpoint"],
            on_state=events.on_state,
            ping_interval_ms=60000,
        ) as client:
            before = client.metrics()
            assert before["state"] == kvs.State.DISCONNECTED and before["connects"] == 0
            client.start()  # returns at once; the connect runs in the background
            wait_until(lambda: client.state == kvs.State.CONNECTED, 10, "CONNECTED")
            after = client.metrics()
            assert after["state"] == kvs.State.CONNECTED
            assert after["connects"] == 1 and after["last_connect_unix_ms"] > 0
            assert after["last_tls_us"] == 0  # ws://
            assert client.ice_servers() == []  # no control plane
            client.disconnect()
        assert events.states[:2] == [kvs.State.CONNECTING, kvs.State.CONNECTED]


def test_control_plane_with_credentials_callback(tmp_path):
    cache = tmp_path / "endpoints.json"
    with running_emulator(
        "--tls", "--channel", "py-cp", "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY
    ) as printed:
        events = Events()
        options = dict(
            use_control_plane=True,
            channel_name="py-cp",
            control_plane_url=printed["control-plane"],
            ca_bundle_path=printed["ca"],
            endpoint_cache_path=str(cache),
            region="us-west-2",
            on_state=events.on_state,
            on_ice_servers=events.on_ice_servers,
            credentials=events.credentials,
        )
        with kvs.Client(kvs.Role.MASTER, None, None, **options) as client:
            client.connect()
            assert events.credential_calls >= 1
            wait_until(lambda: events.ice_counts, 10, "on_ice_servers")
            servers = client.ice_servers()
            assert len(servers) == events.ice_counts[-1] >= 1
            assert all(s.uris and s.username and s.password and s.ttl_seconds > 0 for s in servers)
            assert all(u.startswith(("turn:", "turns:")) for s in servers for u in s.uris)
            assert servers[0].password not in repr(servers[0])
            metrics = client.metrics()
            assert metrics["last_control_plane_us"] > 0 and metrics["last_tls_us"] > 0
            assert client.callback_errors == []
        # The resolved endpoint was written for the next run.
        assert "py-cp" in json.dumps(json.loads(cache.read_text()))


def test_credentials_callback_failure_is_reported():
    with running_emulator("--tls", "--channel", "py-cred", "--access-key", ACCESS_KEY,
                          "--secret-key", SECRET_KEY) as printed:

        def no_credentials():
            raise RuntimeError("vault unreachable")

        with kvs.Client(
            kvs.Role.MASTER,
            None,
            None,
            connect_timeout_ms=3000,
            use_control_plane=True,
            channel_name="py-cred",
            control_plane_url=printed["control-plane"],
            ca_bundle_path=printed["ca"],
            credentials=no_credentials,
        ) as client:
            with pytest.raises(kvs.KvsError) as info:
                client.connect()
            assert info.value.code == kvs.Result.ERR_CREDENTIALS, str(info.value)
            assert [e.callback for e in client.callback_errors][:1] == ["credentials"]
            assert isinstance(client.callback_errors[0].exception, RuntimeError)


def test_wrong_ca_bundle_fails_tls(tmp_path):
    other_ca = tmp_path / "other.pem"
    with running_emulator("--tls", "--cert-out", str(other_ca), "--channel", "py-x"):
        pass  # a CA the next emulator did not sign with
    with running_emulator("--tls", "--channel", "py-tls") as printed:
        with kvs.Client(
            kvs.Role.MASTER,
            printed["channel py-tls"],
            printed["endpoint"],
            connect_timeout_ms=3000,
            ca_bundle_path=str(other_ca),
        ) as client:
            with pytest.raises(kvs.KvsError) as info:
                client.connect()
            assert info.value.code == kvs.Result.ERR_TLS, str(info.value)


def test_start_retries_a_refused_connect():
    """Unlike connect(), start() retries a failed first attempt (RECONNECTING)."""
    with kvs.Client(
        kvs.Role.MASTER,
        "arn:aws:kinesisvideo:us-west-2:123456789012:channel/py-r/1700000000000",
        f"ws://127.0.0.1:{unused_port()}",
        backoff_initial_ms=50,
    ) as client:
        client.start()
        wait_until(lambda: client.metrics()["connect_failures"] >= 2, 10, "retries")
        assert client.state in (kvs.State.RECONNECTING, kvs.State.CONNECTING)
        client.disconnect()


def test_media_storage_through_the_client():
    stream = "arn:aws:kinesisvideo:us-west-2:123456789012:stream/py-cam/1700000000000"
    with running_emulator("--channel", "py-storage", "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY) as printed:
        options = dict(
            use_control_plane=True,
            channel_name="py-storage",
            control_plane_url=printed["control-plane"],
            region="us-west-2",
            credentials=Events().credentials,
        )
        with kvs.Client(kvs.Role.MASTER, None, None, **options) as client:
            assert client.media_storage() == (False, "")
            client.set_media_storage(True, stream)
            assert client.media_storage() == (True, stream)
            with pytest.raises(kvs.KvsError) as refused:
                client.set_media_storage(True, "not-an-arn")
            assert refused.value.code == kvs.Result.ERR_INVALID_ARGUMENT
            client.set_media_storage(False)
            assert client.media_storage()[0] is False
