"""ctypes binding of the kvs-signaling C library (include/kvs_signaling.h).

No compiled extension: the shared library is loaded with ctypes.CDLL, which
releases the GIL during every foreign call, so the library's dispatcher thread
can run Python callbacks while an application thread blocks in
kvs_client_connect / kvs_client_free.

Library path: $KVS_SIGNALING_LIB; else, in a checkout of the repository,
target/release/libkvs_signaling.so (under $CARGO_TARGET_DIR when set); else the
installed library found by ctypes.util.find_library("kvs_signaling").

At import the binding checks the library: its version must have the same major
(and, before 1.0, minor) version as this binding, and its kvs_client_config must
be at least as large as the one declared here (measured by letting
kvs_client_config_init write into a canary-filled buffer). kvs_client_metrics
and kvs_ice_server are measured the same way at their first use. The field
layout itself is checked against include/kvs_signaling.h by test_layout.py.

Threading and lifetime rules carried over from the header:
- on_message / on_status / on_state run on the library's dispatcher thread,
  serially. The data they get is copied out of the borrowed C memory before the
  Python callable sees it.
- From a callback you may send (send_* are "any thread, callbacks included") and
  read `state`; connect(), disconnect(), close() and shutdown() fail there with
  KVS_ERR_WOULD_DEADLOCK / KVS_ERR_IN_CALLBACK.
- An exception raised by a Python callback never reaches C: it is caught in the
  ctypes trampoline and appended to `Client.callback_errors` (or
  `log_callback_errors` for the log hook).
- The CFUNCTYPE objects of a client stay referenced until the library has called
  free_userdata (after the client's last callback). If that does not happen
  within close()'s timeout they are parked in a module-level list for the rest
  of the process, because C may still call them.
"""

from __future__ import annotations

import atexit
import ctypes
import enum
import os
import threading
import traceback
import weakref
import ctypes.util
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_int32,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_int64,
    c_void_p,
)
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

# --------------------------------------------------------------------------
# Constants and enums (header: #define and enum blocks)
# --------------------------------------------------------------------------

KVS_VERSION_MAJOR = 0
KVS_VERSION_MINOR = 1
KVS_VERSION_PATCH = 0
KVS_VERSION_NUMBER = (KVS_VERSION_MAJOR << 16) | (KVS_VERSION_MINOR << 8) | KVS_VERSION_PATCH
KVS_CORRELATION_ID_CAPACITY = 257
KVS_MAX_SDP_LEN = 10000
KVS_MAX_ICE_URIS = 8
KVS_UNPACED = 0xFFFFFFFF
KVS_TCP_USER_TIMEOUT_OFF = 0xFFFFFFFF


class Result(enum.IntEnum):
    """kvs_result."""

    OK = 0
    ERR_NULL_PARAMETER = 1
    ERR_INVALID_UTF8 = 2
    ERR_INVALID_ARGUMENT = 3
    ERR_INVALID_CONFIG = 4
    ERR_ID_EMPTY = 5
    ERR_ID_TOO_LONG = 6
    ERR_ID_PATTERN = 7
    ERR_PAYLOAD_EMPTY = 8
    ERR_PAYLOAD_TOO_LARGE = 9
    ERR_RECIPIENT_REQUIRED = 10
    ERR_RECIPIENT_NOT_ALLOWED = 11
    ERR_NOT_CONNECTED = 12
    ERR_ALREADY_CONNECTED = 13
    ERR_QUEUE_FULL = 14
    ERR_TIMEOUT = 15
    ERR_NETWORK = 16
    ERR_CONNECT_REFUSED = 17
    ERR_NOT_FOUND = 18
    ERR_ACCESS_DENIED = 19
    ERR_LIMIT_EXCEEDED = 20
    ERR_HANDSHAKE = 21
    ERR_BUFFER_TOO_SMALL = 22
    ERR_WOULD_DEADLOCK = 23
    ERR_IN_CALLBACK = 24
    ERR_SHUTDOWN = 25
    ERR_FORKED = 26
    ERR_PANIC = 27
    ERR_RUNTIME = 28
    ERR_TLS = 29
    ERR_SERVICE_INVALID_ARGUMENT = 30
    ERR_RESOURCE_IN_USE = 31
    ERR_SERVICE = 32
    ERR_BAD_RESPONSE = 33
    ERR_CREDENTIALS = 34
    ERR_CLOSED = 35
    ERR_CANCELLED = 36
    ERR_SIGNER_FAILED = 37
    ERR_SIGNER_TOO_LONG = 38
    ERR_SIGNER_INVALID_URL = 39
    ERR_SIGNER_NOT_WSS = 40
    ERR_PRESIGNED_URL_EXPIRED = 41
    ERR_PROXY_UNREACHABLE = 42
    ERR_PROXY_AUTH_REQUIRED = 43
    ERR_PROXY_REFUSED = 44
    ERR_PROXY_CLOSED = 45
    ERR_IOT_CERTIFICATE_REFUSED = 46
    ERR_IOT_ROLE_ALIAS_NOT_FOUND = 47
    ERR_IOT_FORBIDDEN = 48


class Role(enum.IntEnum):
    """kvs_role."""

    MASTER = 0
    VIEWER = 1


class State(enum.IntEnum):
    """kvs_state."""

    DISCONNECTED = 0
    CONNECTING = 1
    CONNECTED = 2
    CLOSING = 3
    RECONNECTING = 4


class MessageType(enum.IntEnum):
    """kvs_message_type."""

    SDP_OFFER = 1
    SDP_ANSWER = 2
    ICE_CANDIDATE = 3
    GO_AWAY = 4
    RECONNECT_ICE_SERVER = 5
    STORAGE_SESSION_JOINED = 6
    STORAGE_OFFER_RECEIVED = 7


class StatusOrigin(enum.IntEnum):
    """kvs_status_origin."""

    SERVICE = 0
    LOCAL = 1


class LogLevel(enum.IntEnum):
    """kvs_log_level."""

    OFF = 0
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4
    TRACE = 5


def _enum_or_int(enum_type, value):
    """An enum member, or the plain int for a value this binding does not know."""
    try:
        return enum_type(value)
    except ValueError:
        return int(value)


# --------------------------------------------------------------------------
# Structures and callback types, in header order
# --------------------------------------------------------------------------
# `const char *` is c_char_p. The three strings that come with a length
# (payload, sdp, candidate) are POINTER(c_char), the same C type, so that the
# binding can copy exactly `*_len` bytes instead of stopping at a NUL.


class kvs_message(Structure):
    _fields_ = [
        ("message_type", c_uint32),
        ("sender_client_id", c_char_p),
        ("payload", POINTER(c_char)),
        ("payload_len", c_size_t),
        ("sdp_type", c_char_p),
        ("sdp", POINTER(c_char)),
        ("sdp_len", c_size_t),
        ("candidate", POINTER(c_char)),
        ("candidate_len", c_size_t),
        ("sdp_mid", c_char_p),
        ("sdp_mline_index", c_int32),
        ("username_fragment", c_char_p),
    ]


kvs_message_callback = CFUNCTYPE(None, c_void_p, POINTER(kvs_message))


class kvs_status(Structure):
    _fields_ = [
        ("origin", c_uint32),
        ("correlation_id", c_char_p),
        ("error_type", c_char_p),
        ("status_code", c_uint32),
        ("description", c_char_p),
    ]


kvs_status_callback = CFUNCTYPE(None, c_void_p, POINTER(kvs_status))
kvs_state_callback = CFUNCTYPE(None, c_void_p, c_uint32, c_char_p)
kvs_ice_servers_callback = CFUNCTYPE(None, c_void_p, c_size_t)
kvs_free_callback = CFUNCTYPE(None, c_void_p)
# kvs_credentials_sink is opaque: handled as c_void_p.
kvs_credentials_callback = CFUNCTYPE(c_uint32, c_void_p, c_void_p)
# (userdata, const kvs_sign_request *, kvs_sign_sink *) -> kvs_result
kvs_signer_callback = CFUNCTYPE(c_uint32, c_void_p, c_void_p, c_void_p)


class kvs_tag(Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class kvs_ice_server(Structure):
    _fields_ = [
        ("uris", c_char_p * KVS_MAX_ICE_URIS),
        ("uri_count", c_size_t),
        ("username", c_char_p),
        ("password", c_char_p),
        ("ttl_seconds", c_uint32),
    ]


class kvs_client_config(Structure):
    _fields_ = [
        ("struct_size", c_size_t),
        ("role", c_uint32),
        ("channel_arn", c_char_p),
        ("client_id", c_char_p),
        ("endpoint", c_char_p),
        ("region", c_char_p),
        ("connect_timeout_ms", c_uint32),
        ("send_queue_capacity", c_uint32),
        ("send_queue_timeout_ms", c_uint32),
        ("backoff_initial_ms", c_uint32),
        ("backoff_max_ms", c_uint32),
        ("ping_interval_ms", c_uint32),
        ("pong_timeout_ms", c_uint32),
        ("max_connection_age_s", c_uint32),
        ("sdp_per_second", c_uint32),
        ("ice_per_second", c_uint32),
        ("buffer_early_candidates", ctypes.c_bool),
        ("use_control_plane", ctypes.c_bool),
        ("channel_name", c_char_p),
        ("control_plane_url", c_char_p),
        ("use_fips", ctypes.c_bool),
        ("use_dual_stack", ctypes.c_bool),
        ("ca_bundle_path", c_char_p),
        ("access_key_id", c_char_p),
        ("secret_access_key", c_char_p),
        ("session_token", c_char_p),
        ("credentials_from_env", ctypes.c_bool),
        ("credentials_callback", kvs_credentials_callback),
        ("create_channel", ctypes.c_bool),
        ("message_ttl_s", c_uint32),
        ("endpoint_cache_path", c_char_p),
        ("endpoint_cache_ttl_s", c_uint32),
        ("skip_ice_servers", ctypes.c_bool),
        ("on_message", kvs_message_callback),
        ("on_status", kvs_status_callback),
        ("on_state", kvs_state_callback),
        ("on_ice_servers", kvs_ice_servers_callback),
        ("userdata", c_void_p),
        ("free_userdata", kvs_free_callback),
        ("callback_backlog_messages", c_uint32),
        ("callback_backlog_bytes", c_uint32),
        ("early_candidate_budget_bytes", c_uint32),
        ("max_inbound_frame_len", c_uint32),
        ("tcp_user_timeout_ms", c_uint32),
        ("report_unconfirmed_sdp", ctypes.c_bool),
        ("signer_callback", kvs_signer_callback),
        ("signer_timeout_ms", c_uint32),
        ("presigned_url", c_char_p),
        ("presigned_url_expiry_unix_s", c_uint64),
        ("user_agent_suffix", c_char_p),
        ("tags", ctypes.POINTER(kvs_tag)),
        ("tag_count", c_size_t),
        ("proxy_url", c_char_p),
        ("no_proxy", c_char_p),
        ("proxy_from_env", ctypes.c_bool),
        ("iot_credentials_endpoint", c_char_p),
        ("iot_role_alias", c_char_p),
        ("iot_thing_name", c_char_p),
        ("iot_certificate_path", c_char_p),
        ("iot_private_key_path", c_char_p),
        ("iot_ca_path", c_char_p),
        ("media_storage", c_uint32),
        ("storage_offer_timeout_ms", c_uint32),
        ("socket_buffer_bytes", c_uint32),
        ("reserved", c_uint32),
    ]


class kvs_client_metrics(Structure):
    _fields_ = [
        ("state", c_uint32),
        ("connects", c_uint64),
        ("reconnects", c_uint64),
        ("connect_failures", c_uint64),
        ("last_connect_unix_ms", c_uint64),
        ("last_control_plane_us", c_uint64),
        ("last_tls_us", c_uint64),
        ("last_websocket_us", c_uint64),
        ("messages_sent", c_uint64),
        ("messages_received", c_uint64),
        ("messages_queued", c_uint64),
        ("messages_failed", c_uint64),
        ("pings_sent", c_uint64),
        ("go_aways", c_uint64),
        ("current_backoff_ms", c_uint64),
        ("clock_skew_ms", c_int64),
        ("backpressure_pauses", c_uint64),
        ("callbacks_queued", c_uint64),
        ("early_candidates_held_bytes", c_uint64),
        ("early_candidates_overflowed", c_uint64),
        ("dead_link_detections", c_uint64),
        ("messages_resent", c_uint64),
        ("messages_unconfirmed", c_uint64),
        ("storage_joins", c_uint64),
        ("last_join_latency_us", c_uint64),
        ("time_to_storage_offer_us", c_uint64),
    ]


class kvs_ice_candidate(Structure):
    _fields_ = [
        ("candidate", c_char_p),
        ("sdp_mid", c_char_p),
        ("sdp_mline_index", c_int32),
        ("username_fragment", c_char_p),
    ]


kvs_log_callback = CFUNCTYPE(None, c_void_p, c_uint32, c_char_p, POINTER(c_char), c_size_t)

# kvs_client is opaque: handled as c_void_p.
kvs_client_p = c_void_p

# --------------------------------------------------------------------------
# Loading the library and declaring every function
# --------------------------------------------------------------------------


def library_path() -> str:
    """Where the shared library is loaded from (see the module docstring)."""
    env = os.environ.get("KVS_SIGNALING_LIB")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(root, "target")
    built = os.path.join(target, "release", "libkvs_signaling.so")
    if os.path.isfile(os.path.join(root, "Cargo.toml")) and os.path.isfile(built):
        return built
    return ctypes.util.find_library("kvs_signaling") or "libkvs_signaling.so"


_lib = ctypes.CDLL(library_path())


def _declare(name, restype, *argtypes):
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


_kvs_client_config_init = _declare(
    "kvs_client_config_init", c_uint32, POINTER(kvs_client_config), c_size_t
)


def _kvs_client_config_default() -> kvs_client_config:
    """The header's inline kvs_client_config_default(): defaults, with this
    binding's struct size, so that a newer library reads no more than it has."""
    config = kvs_client_config()
    _check(_kvs_client_config_init(ctypes.byref(config), ctypes.sizeof(config)), "kvs_client_config_init")
    return config
_kvs_client_new = _declare(
    "kvs_client_new", c_uint32, POINTER(kvs_client_config), POINTER(kvs_client_p)
)
_kvs_client_connect = _declare("kvs_client_connect", c_uint32, kvs_client_p)
_kvs_client_start = _declare("kvs_client_start", c_uint32, kvs_client_p)
_kvs_client_get_metrics_sized = _declare(
    "kvs_client_get_metrics_sized", c_uint32, kvs_client_p, c_void_p, c_size_t
)
_kvs_client_get_ice_servers_sized = _declare(
    "kvs_client_get_ice_servers_sized",
    c_uint32,
    kvs_client_p,
    c_void_p,  # out_servers: entries `entry_size` bytes apart
    c_size_t,  # capacity
    c_size_t,  # entry_size
    c_void_p,  # buf
    c_size_t,  # buf_capacity
    POINTER(c_size_t),  # out_count
    POINTER(c_size_t),  # out_buf_len
)
_kvs_credentials_sink_set = _declare(
    "kvs_credentials_sink_set", c_uint32, c_void_p, c_char_p, c_char_p, c_char_p, c_uint64
)
_kvs_stun_url = _declare(
    "kvs_stun_url", c_uint32, c_char_p, ctypes.c_bool, ctypes.c_bool, c_char_p, c_size_t, POINTER(c_size_t)
)
_kvs_client_get_media_storage = _declare(
    "kvs_client_get_media_storage",
    c_uint32,
    kvs_client_p,
    POINTER(ctypes.c_bool),
    c_char_p,
    c_size_t,
    POINTER(c_size_t),
)
_kvs_client_set_media_storage = _declare(
    "kvs_client_set_media_storage", c_uint32, kvs_client_p, ctypes.c_bool, c_char_p
)
_kvs_client_disconnect = _declare("kvs_client_disconnect", c_uint32, kvs_client_p)
_kvs_client_state = _declare("kvs_client_state", c_uint32, kvs_client_p)
_kvs_client_free = _declare("kvs_client_free", c_uint32, kvs_client_p)
_SEND_SDP_ARGS = (
    kvs_client_p,  # client
    c_char_p,  # recipient_client_id
    c_char_p,  # sdp
    c_char_p,  # correlation_id
    c_char_p,  # out_correlation_id (a create_string_buffer)
    c_size_t,  # out_capacity
    POINTER(c_size_t),  # out_len
)
_kvs_send_sdp_offer = _declare("kvs_send_sdp_offer", c_uint32, *_SEND_SDP_ARGS)
_kvs_send_sdp_answer = _declare("kvs_send_sdp_answer", c_uint32, *_SEND_SDP_ARGS)
_kvs_send_ice_candidate = _declare(
    "kvs_send_ice_candidate",
    c_uint32,
    kvs_client_p,
    c_char_p,
    POINTER(kvs_ice_candidate),
    c_char_p,
    c_char_p,
    c_size_t,
    POINTER(c_size_t),
)
_kvs_send_message = _declare(
    "kvs_send_message",
    c_uint32,
    kvs_client_p,
    c_uint32,  # action
    c_char_p,  # recipient_client_id
    POINTER(c_uint8),  # payload
    c_size_t,  # payload_len
    c_char_p,  # correlation_id
    c_char_p,
    c_size_t,
    POINTER(c_size_t),
)
_kvs_version = _declare("kvs_version", c_char_p)
_kvs_version_number = _declare("kvs_version_number", c_uint32)
_kvs_result_str = _declare("kvs_result_str", c_char_p, c_uint32)
_kvs_result_name = _declare("kvs_result_name", c_char_p, c_uint32)
_kvs_last_error = _declare("kvs_last_error", c_uint32, c_char_p, c_size_t, POINTER(c_size_t))
_kvs_last_error_message = _declare("kvs_last_error_message", c_char_p)
_kvs_set_log_callback = _declare(
    "kvs_set_log_callback", c_uint32, c_uint32, kvs_log_callback, c_void_p, kvs_free_callback
)
_kvs_shutdown = _declare("kvs_shutdown", c_uint32, c_uint32)

# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def _text(raw: Optional[bytes]) -> Optional[str]:
    return None if raw is None else raw.decode("utf-8", "replace")


def kvs_result_str(code: int) -> str:
    return _text(_kvs_result_str(int(code))) or ""


def kvs_result_name(code: int) -> str:
    """The C name of a result code ("KVS_ERR_PROXY_CLOSED"); "KVS_ERR_UNKNOWN" if unknown."""
    return _text(_kvs_result_name(int(code))) or ""


def kvs_last_error_message() -> str:
    """The last failure on the calling thread ("" if none)."""
    return _text(_kvs_last_error_message()) or ""


def kvs_last_error() -> str:
    """The same text through kvs_last_error(buf, capacity, out_len), growing the buffer."""
    needed = c_size_t(0)
    capacity = 256
    while True:
        buf = ctypes.create_string_buffer(capacity)
        rc = _kvs_last_error(buf, capacity, ctypes.byref(needed))
        if rc == Result.OK:
            return buf.raw[: needed.value].decode("utf-8", "replace")
        if rc != Result.ERR_BUFFER_TOO_SMALL or needed.value + 1 <= capacity:
            raise KvsError(rc, "kvs_last_error")
        capacity = needed.value + 1


class KvsError(Exception):
    """A kvs_result other than KVS_OK, with kvs_result_str and the thread's last-error text."""

    def __init__(self, code: int, function: str = "", message: Optional[str] = None):
        self.code = _enum_or_int(Result, code)
        self.function = function
        self.result_str = kvs_result_str(code)
        # Read on the thread that made the failing call, right after it.
        self.message = kvs_last_error_message() if message is None else message
        name = self.code.name if isinstance(self.code, Result) else str(self.code)
        super().__init__(f"{function}: KVS_{name} ({self.result_str}): {self.message}")


def _check(code: int, function: str) -> None:
    if code != Result.OK:
        raise KvsError(code, function)


# --------------------------------------------------------------------------
# Checking the library against this binding
# --------------------------------------------------------------------------

_PROBE_LEN = 1024


def _written_len(write: Callable[[ctypes.Array, int], int], what: str, align: int, entries: int = 1) -> int:
    """How many bytes `write(buffer, _PROBE_LEN)` fills in the buffer's first
    _PROBE_LEN: the library's size of the struct it writes (it writes
    min(given, its own) bytes; `entries` structs _PROBE_LEN bytes apart). Two
    canaries, so that no byte is taken as unwritten because it equals one."""
    written = 0
    for canary in (0xA5, 0x5A):
        buf = (c_uint8 * (_PROBE_LEN * entries))()
        ctypes.memset(buf, canary, len(buf))
        _check(write(buf, _PROBE_LEN), what)
        last = max((i for i in range(_PROBE_LEN) if buf[i] != canary), default=-1)
        written = max(written, last + 1)
    return (written + align - 1) // align * align


class LibraryMismatchError(ImportError):
    """The loaded library does not match this binding (version or struct size)."""


def _require_size(struct_type, library_size: int) -> None:
    """A library struct smaller than this binding's means an older library:
    fields this binding sets or reads would be ignored or left unwritten."""
    ours = ctypes.sizeof(struct_type)
    if library_size < ours:
        raise LibraryMismatchError(
            f"{library_path()}: its {struct_type.__name__} is {library_size} bytes, this "
            f"binding's is {ours}: the library is older than the binding"
        )


def _check_library() -> None:
    number = int(_kvs_version_number())
    major, minor = number >> 16, (number >> 8) & 0xFF
    if major != KVS_VERSION_MAJOR or (major == 0 and minor != KVS_VERSION_MINOR):
        raise LibraryMismatchError(
            f"{library_path()} is version {version()}; this binding needs "
            f"{KVS_VERSION_MAJOR}.{KVS_VERSION_MINOR}.x"
        )
    config_size = _written_len(
        lambda buf, n: _kvs_client_config_init(ctypes.cast(buf, POINTER(kvs_client_config)), n),
        "kvs_client_config_init",
        ctypes.alignment(kvs_client_config),
    )
    _require_size(kvs_client_config, config_size)


# Library struct sizes measured at first use: struct type -> bytes.
_measured: Dict[type, int] = {}


# --------------------------------------------------------------------------
# Python-side views of borrowed C data
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    message_type: Union[MessageType, int]
    sender_client_id: Optional[str]
    payload: bytes
    sdp_type: Optional[str]
    sdp: Optional[str]
    candidate: Optional[str]
    sdp_mid: Optional[str]
    sdp_mline_index: Optional[int]  # None when C reports -1 (absent)
    username_fragment: Optional[str]


@dataclass(frozen=True)
class Status:
    origin: Union[StatusOrigin, int]
    correlation_id: Optional[str]
    error_type: Optional[str]
    status_code: int
    description: Optional[str]


@dataclass(frozen=True)
class StateChange:
    state: Union[State, int]
    reason: Optional[str]


@dataclass(frozen=True)
class IceServer:
    """One entry of kvs_client_get_ice_servers (TURN, with credentials)."""

    uris: List[str]
    username: str
    password: str = field(repr=False)
    ttl_seconds: int


@dataclass(frozen=True)
class Credentials:
    """What a credentials callable returns; expiry_unix_s 0: they do not expire."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: Optional[str] = field(default=None, repr=False)
    expiry_unix_s: int = 0


@dataclass(frozen=True)
class CallbackError:
    callback: str
    exception: BaseException
    traceback: str


def _bytes_at(ptr, length: int) -> Optional[bytes]:
    if not ptr:
        return None
    return ctypes.string_at(ptr, length)


def _message_from_c(m: kvs_message) -> Message:
    sdp = _bytes_at(m.sdp, m.sdp_len)
    candidate = _bytes_at(m.candidate, m.candidate_len)
    return Message(
        message_type=_enum_or_int(MessageType, m.message_type),
        sender_client_id=_text(m.sender_client_id),
        payload=_bytes_at(m.payload, m.payload_len) or b"",
        sdp_type=_text(m.sdp_type),
        sdp=_text(sdp),
        candidate=_text(candidate),
        sdp_mid=_text(m.sdp_mid),
        sdp_mline_index=None if m.sdp_mline_index < 0 else int(m.sdp_mline_index),
        username_fragment=_text(m.username_fragment),
    )


def _status_from_c(s: kvs_status) -> Status:
    return Status(
        origin=_enum_or_int(StatusOrigin, s.origin),
        correlation_id=_text(s.correlation_id),
        error_type=_text(s.error_type),
        status_code=int(s.status_code),
        description=_text(s.description),
    )


StrArg = Union[str, bytes, None]


def _c_str(value: StrArg, name: str) -> Optional[bytes]:
    """str -> UTF-8 bytes, bytes as given (to test invalid UTF-8), None -> NULL."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be str, bytes or None")
    value = bytes(value)
    if b"\0" in value:
        # C would silently see a shorter string.
        raise ValueError(f"{name} contains a NUL byte")
    return value


# Callback objects C may still call after their owner is gone: never released.
_parked: List[object] = []
_parked_lock = threading.Lock()


def _park(*objects) -> None:
    with _parked_lock:
        _parked.extend(objects)


# --------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------

MessageHandler = Callable[["Client", Message], None]
StatusHandler = Callable[["Client", Status], None]
StateHandler = Callable[["Client", StateChange], None]
IceServersHandler = Callable[["Client", int], None]
CredentialsProvider = Callable[[], Credentials]

# kvs_client_config fields the Client sets itself; every other one is an option.
_MANAGED_FIELDS = {
    "struct_size", "role", "channel_arn", "endpoint", "client_id", "region",
    "connect_timeout_ms", "send_queue_capacity", "credentials_callback",
    "on_message", "on_status", "on_state", "on_ice_servers", "userdata", "free_userdata",
}
_OPTION_TYPES = {name: ctype for name, ctype in kvs_client_config._fields_ if name not in _MANAGED_FIELDS}


class Client:
    """A kvs_client. Callables receive (client, Message|Status|StateChange) on the
    library's dispatcher thread."""

    def __init__(
        self,
        role: Union[Role, int],
        channel_arn: StrArg,
        endpoint: StrArg,
        client_id: StrArg = None,
        region: StrArg = None,
        connect_timeout_ms: int = 0,
        send_queue_capacity: int = 0,
        on_message: Optional[MessageHandler] = None,
        on_status: Optional[StatusHandler] = None,
        on_state: Optional[StateHandler] = None,
        on_ice_servers: Optional[IceServersHandler] = None,
        credentials: Optional[CredentialsProvider] = None,
        **options: Any,
    ):
        """`options` are the other kvs_client_config fields by name, e.g.
        use_control_plane=True, channel_name="cam", control_plane_url=...,
        ca_bundle_path=..., access_key_id=..., endpoint_cache_path=...;
        strings are str or bytes. `credentials` is called (on the dispatcher
        thread) for fresh credentials and returns a Credentials."""
        unknown = sorted(set(options) - set(_OPTION_TYPES))
        if unknown:
            raise TypeError(f"unknown kvs_client_config option(s): {', '.join(unknown)}")
        self._handle = kvs_client_p()
        self._closed = True  # until kvs_client_new succeeds
        # Calls in flight on the handle; close() waits for them so that
        # kvs_client_free never races another call on the same client.
        self._cv = threading.Condition()
        self._uses = 0
        self._closing = False
        self._max_call_s = (connect_timeout_ms or 5000) / 1000.0 + 5.0
        self._on_message = on_message
        self._on_status = on_status
        self._on_state = on_state
        self._on_ice_servers = on_ice_servers
        self._credentials = credentials
        self.callback_errors: List[CallbackError] = []
        # free_userdata bookkeeping lives in a small record of its own so it
        # stays observable whatever happens to the Client object.
        record = _FreeRecord()
        self._free_record = record
        self.freed = record.event  # set when free_userdata has run

        # Thunks close over a weak reference so the Client is not kept alive
        # by its own callbacks; the thunks themselves are owned by self (or
        # parked) for as long as C may call them.
        ref = weakref.ref(self)

        def guard(name, fn, *args) -> bool:
            """Runs fn(client, *args); False if the client is gone or fn raised."""
            client = ref()
            try:
                if client is not None:
                    fn(client, *args)
                    return True
            except BaseException as exc:  # never let anything unwind into C
                try:
                    if client is not None:
                        client.callback_errors.append(
                            CallbackError(name, exc, traceback.format_exc())
                        )
                except BaseException:
                    pass
            return False

        def message_thunk(_userdata, message_ptr):
            guard("on_message", lambda c: c._on_message(c, _message_from_c(message_ptr.contents)))

        def status_thunk(_userdata, status_ptr):
            guard("on_status", lambda c: c._on_status(c, _status_from_c(status_ptr.contents)))

        def state_thunk(_userdata, value, reason):
            guard(
                "on_state",
                lambda c: c._on_state(c, StateChange(_enum_or_int(State, value), _text(reason))),
            )

        def ice_servers_thunk(_userdata, count):
            guard("on_ice_servers", lambda c: c._on_ice_servers(c, int(count)))

        def credentials_thunk(_userdata, sink):
            ok = guard("credentials", lambda c: c._provide_credentials(sink))
            return int(Result.OK if ok else Result.ERR_CREDENTIALS)

        def free_thunk(_userdata):
            try:
                record.calls += 1
                record.event.set()
            except BaseException:
                pass

        self._thunks = (
            kvs_message_callback(message_thunk) if on_message else kvs_message_callback(),
            kvs_status_callback(status_thunk) if on_status else kvs_status_callback(),
            kvs_state_callback(state_thunk) if on_state else kvs_state_callback(),
            kvs_ice_servers_callback(ice_servers_thunk) if on_ice_servers else kvs_ice_servers_callback(),
            kvs_credentials_callback(credentials_thunk) if credentials else kvs_credentials_callback(),
            kvs_free_callback(free_thunk),
        )

        config = _kvs_client_config_default()
        config.role = int(role)
        config.channel_arn = _c_str(channel_arn, "channel_arn")
        config.client_id = _c_str(client_id, "client_id")
        config.endpoint = _c_str(endpoint, "endpoint")
        config.region = _c_str(region, "region")
        config.connect_timeout_ms = connect_timeout_ms
        config.send_queue_capacity = send_queue_capacity
        for name, value in options.items():
            if _OPTION_TYPES[name] is c_char_p:
                value = _c_str(value, name)
            setattr(config, name, value)
        (
            config.on_message,
            config.on_status,
            config.on_state,
            config.on_ice_servers,
            config.credentials_callback,
            config.free_userdata,
        ) = self._thunks
        config.userdata = None
        rc = _kvs_client_new(ctypes.byref(config), ctypes.byref(self._handle))
        if rc != Result.OK:
            # free_userdata already ran on this thread; nothing else to release.
            err = KvsError(rc, "kvs_client_new")
            self._thunks = None
            err.free_userdata_calls = record.calls
            raise err
        self._closed = False
        _live_clients.add(self)

    # -- lifecycle ---------------------------------------------------------

    @property
    def free_userdata_calls(self) -> int:
        """How many times the library called free_userdata (0 or 1)."""
        return self._free_record.calls

    def _call(self, fn, *args) -> int:
        """Runs fn(handle, *args) unless the client is closed or closing."""
        with self._cv:
            if self._closed or self._closing:
                raise ValueError("the client is closed")
            self._uses += 1
            handle = self._handle
        try:
            return fn(handle, *args)
        finally:
            with self._cv:
                self._uses -= 1
                self._cv.notify_all()

    def connect(self) -> None:
        """Opens the connection; blocks until it is open or failed."""
        _check(self._call(_kvs_client_connect), "kvs_client_connect")

    def start(self) -> None:
        """Connects in the background, retrying until disconnect(); returns at once."""
        _check(self._call(_kvs_client_start), "kvs_client_start")

    def metrics(self) -> Dict[str, int]:
        """kvs_client_get_metrics: every kvs_client_metrics field by name
        ("state" as a State)."""
        name = "kvs_client_get_metrics_sized"
        if kvs_client_metrics not in _measured:
            size = _written_len(
                lambda buf, n: self._call(_kvs_client_get_metrics_sized, buf, n),
                name,
                ctypes.alignment(kvs_client_metrics),
            )
            _require_size(kvs_client_metrics, size)
            _measured[kvs_client_metrics] = size
        m = kvs_client_metrics()
        _check(self._call(_kvs_client_get_metrics_sized, ctypes.byref(m), ctypes.sizeof(m)), name)
        out: Dict[str, Any] = {key: getattr(m, key) for key, _ in kvs_client_metrics._fields_}
        out["state"] = _enum_or_int(State, m.state)
        return out

    def media_storage(self) -> Tuple[bool, str]:
        """kvs_client_get_media_storage: (enabled, stream ARN) of the channel (blocks;
        one DescribeMediaStorageConfiguration call: the buffer fits any ARN)."""
        enabled, needed = ctypes.c_bool(False), c_size_t(0)
        buf = ctypes.create_string_buffer(1025)
        _check(
            self._call(_kvs_client_get_media_storage, ctypes.byref(enabled), buf, len(buf), ctypes.byref(needed)),
            "kvs_client_get_media_storage",
        )
        return enabled.value, buf.value.decode()

    def set_media_storage(self, enabled: bool, stream_arn: Optional[str] = None) -> None:
        """kvs_client_set_media_storage: enable (with a stream ARN) or disable (blocks)."""
        arn = stream_arn.encode() if stream_arn is not None else None
        _check(self._call(_kvs_client_set_media_storage, enabled, arn), "kvs_client_set_media_storage")

    def ice_servers(self) -> List[IceServer]:
        """The current ICE server list (empty until GetIceServerConfig answered)."""
        name = "kvs_client_get_ice_servers_sized"
        fn = _kvs_client_get_ice_servers_sized
        entry_size = ctypes.sizeof(kvs_ice_server)
        count, needed = c_size_t(0), c_size_t(0)
        while True:
            _check(self._call(fn, None, 0, entry_size, None, 0, ctypes.byref(count), ctypes.byref(needed)), name)
            n = count.value
            if n == 0:
                return []
            strings = ctypes.create_string_buffer(max(needed.value, 1))
            try:
                if kvs_ice_server not in _measured:
                    size = _written_len(
                        lambda buf, size: self._call(
                            fn, buf, n, size, strings, len(strings), ctypes.byref(count), ctypes.byref(needed)
                        ),
                        name,
                        ctypes.alignment(kvs_ice_server),
                        entries=n,
                    )
                    _require_size(kvs_ice_server, size)
                    _measured[kvs_ice_server] = size
                entries = (kvs_ice_server * n)()
                _check(
                    self._call(
                        fn, entries, n, entry_size, strings, len(strings), ctypes.byref(count), ctypes.byref(needed)
                    ),
                    name,
                )
            except KvsError as e:
                if e.code == Result.ERR_BUFFER_TOO_SMALL:
                    continue  # the list changed since the size query
                raise
            return [
                IceServer(
                    uris=[_text(e.uris[i]) or "" for i in range(min(e.uri_count, KVS_MAX_ICE_URIS))],
                    username=_text(e.username) or "",
                    password=_text(e.password) or "",
                    ttl_seconds=int(e.ttl_seconds),
                )
                for e in entries[: count.value]
            ]

    def _provide_credentials(self, sink) -> None:
        """Runs the credentials callable and hands its result to the library."""
        creds = self._credentials()
        if not isinstance(creds, Credentials):
            raise TypeError("the credentials callable must return a Credentials")
        rc = _kvs_credentials_sink_set(
            sink,
            _c_str(creds.access_key_id, "access_key_id"),
            _c_str(creds.secret_access_key, "secret_access_key"),
            _c_str(creds.session_token, "session_token"),
            int(creds.expiry_unix_s),
        )
        _check(rc, "kvs_credentials_sink_set")

    def disconnect(self) -> None:
        _check(self._call(_kvs_client_disconnect), "kvs_client_disconnect")

    @property
    def state(self) -> Union[State, int]:
        try:
            return _enum_or_int(State, self._call(_kvs_client_state))
        except ValueError:
            return State.DISCONNECTED

    def close(self, timeout: float = 5.0) -> bool:
        """kvs_client_free, then wait up to `timeout` s for free_userdata.

        Returns True when free_userdata ran. Raises KvsError (the client stays
        valid) when called from a callback. Idempotent; later calls on the
        client raise ValueError.
        """
        with self._cv:
            if self._closed or self._closing:
                return self._free_record.event.is_set()
            self._closing = True
            # Let calls on other threads (a connect, a send from a callback)
            # finish first; the C client must not be freed under them.
            if not self._cv.wait_for(lambda: self._uses == 0, self._max_call_s):
                self._closing = False
                raise TimeoutError("calls on this client did not finish; not freed")
        rc = _kvs_client_free(self._handle)
        with self._cv:
            if rc != Result.OK:
                self._closing = False
                raise KvsError(rc, "kvs_client_free")
            self._closed = True
            self._closing = False
            self._handle = kvs_client_p()
        _live_clients.discard(self)
        done = self._free_record.event.wait(timeout)
        if not done:
            # Queued callbacks may still call these: keep them forever.
            _park(self._thunks)
        self._thunks = None
        return done

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_closed", True) or getattr(self, "_closing", False):
            return
        try:
            self.close(timeout=0)
        except BaseException:
            # E.g. KVS_ERR_IN_CALLBACK when the last reference died inside a
            # callback: the client cannot be freed here; keep its thunks.
            _park(self._thunks)

    # -- sends -------------------------------------------------------------

    def _send(self, fn, name, *args) -> str:
        out = ctypes.create_string_buffer(KVS_CORRELATION_ID_CAPACITY)
        out_len = c_size_t(0)
        rc = self._call(fn, *args, out, KVS_CORRELATION_ID_CAPACITY, ctypes.byref(out_len))
        _check(rc, name)
        return out.raw[: out_len.value].decode("utf-8")

    def send_sdp_offer(self, sdp: StrArg, recipient: StrArg = None, correlation_id: StrArg = None) -> str:
        """Returns the correlation id used. sdp=None passes NULL (for tests)."""
        return self._send(
            _kvs_send_sdp_offer,
            "kvs_send_sdp_offer",
            _c_str(recipient, "recipient"),
            _c_str(sdp, "sdp"),
            _c_str(correlation_id, "correlation_id"),
        )

    def send_sdp_answer(self, sdp: StrArg, recipient: StrArg = None, correlation_id: StrArg = None) -> str:
        return self._send(
            _kvs_send_sdp_answer,
            "kvs_send_sdp_answer",
            _c_str(recipient, "recipient"),
            _c_str(sdp, "sdp"),
            _c_str(correlation_id, "correlation_id"),
        )

    def send_ice_candidate(
        self,
        candidate: StrArg,
        sdp_mid: StrArg = None,
        sdp_mline_index: Optional[int] = None,
        username_fragment: StrArg = None,
        recipient: StrArg = None,
        correlation_id: StrArg = None,
    ) -> str:
        ice = kvs_ice_candidate(
            _c_str(candidate, "candidate"),
            _c_str(sdp_mid, "sdp_mid"),
            -1 if sdp_mline_index is None else sdp_mline_index,
            _c_str(username_fragment, "username_fragment"),
        )
        return self._send(
            _kvs_send_ice_candidate,
            "kvs_send_ice_candidate",
            _c_str(recipient, "recipient"),
            ctypes.byref(ice),
            _c_str(correlation_id, "correlation_id"),
        )

    def send_message(
        self,
        action: Union[MessageType, int],
        payload: bytes,
        recipient: StrArg = None,
        correlation_id: StrArg = None,
    ) -> str:
        data = bytes(payload)
        # A non-NULL pointer even for b"" so the library reports PAYLOAD_EMPTY.
        buf = (c_uint8 * max(len(data), 1)).from_buffer_copy(data or b"\0")
        return self._send(
            _kvs_send_message,
            "kvs_send_message",
            int(action),
            _c_str(recipient, "recipient"),
            buf,
            len(data),
            _c_str(correlation_id, "correlation_id"),
        )


_live_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


class _FreeRecord:
    __slots__ = ("calls", "event")

    def __init__(self):
        self.calls = 0
        self.event = threading.Event()


# --------------------------------------------------------------------------
# Process-wide functions
# --------------------------------------------------------------------------


def version() -> str:
    """kvs_version: the library's version string."""
    return _text(_kvs_version()) or ""


def version_number() -> int:
    """kvs_version_number: (MAJOR << 16) | (MINOR << 8) | PATCH of the library."""
    return int(_kvs_version_number())


def stun_url(region: StrArg, use_fips: bool = False, use_dual_stack: bool = False) -> str:
    """kvs_stun_url: the STUN URL of `region`."""
    name = _c_str(region, "region")
    needed = c_size_t(0)
    _check(_kvs_stun_url(name, use_fips, use_dual_stack, None, 0, ctypes.byref(needed)), "kvs_stun_url")
    buf = ctypes.create_string_buffer(needed.value + 1)
    _check(_kvs_stun_url(name, use_fips, use_dual_stack, buf, len(buf), ctypes.byref(needed)), "kvs_stun_url")
    return buf.raw[: needed.value].decode("utf-8")


def shutdown(timeout_ms: int = 1000) -> None:
    """kvs_shutdown: final for the process."""
    _check(_kvs_shutdown(timeout_ms), "kvs_shutdown")


LogHandler = Callable[[Union[LogLevel, int], str, str], None]
log_callback_errors: List[CallbackError] = []
log_free_userdata_calls = 0
# Every log thunk ever registered: the callback "may run on any thread", so a
# replaced one may still be running; they are never released.
_log_thunks: List[object] = []


_log_callback_set = False


def set_log_callback(level: Union[LogLevel, int], fn: Optional[LogHandler]) -> None:
    """kvs_set_log_callback. fn(level, target, message) may run on any thread;
    fn=None restores the stderr default (KVS_LOG)."""

    def log_thunk(_userdata, lvl, target, message, message_len):
        try:
            fn(
                _enum_or_int(LogLevel, lvl),
                _text(target) or "",
                (_bytes_at(message, message_len) or b"").decode("utf-8", "replace"),
            )
        except BaseException as exc:
            try:
                log_callback_errors.append(CallbackError("log", exc, traceback.format_exc()))
            except BaseException:
                pass

    def free_thunk(_userdata):
        global log_free_userdata_calls
        try:
            with _parked_lock:
                log_free_userdata_calls += 1
        except BaseException:
            pass

    thunk = kvs_log_callback(log_thunk) if fn is not None else kvs_log_callback()
    free = kvs_free_callback(free_thunk)
    with _parked_lock:
        _log_thunks.append((thunk, free))
    _check(_kvs_set_log_callback(int(level), thunk, None, free), "kvs_set_log_callback")
    global _log_callback_set
    _log_callback_set = fn is not None


@atexit.register
def _at_exit() -> None:
    """Free the clients still open and drop the Python log hook, so no library
    thread calls into Python while the interpreter finalises. (kvs_shutdown is
    left to the application: it is final.)"""
    for client in list(_live_clients):
        try:
            client.close(timeout=2.0)
        except BaseException:
            pass
    if _log_callback_set:
        try:
            _kvs_set_log_callback(int(LogLevel.WARN), kvs_log_callback(), None, kvs_free_callback())
        except BaseException:
            pass


_check_library()

__all__ = [
    "KVS_CORRELATION_ID_CAPACITY",
    "KVS_MAX_SDP_LEN",
    "KVS_MAX_ICE_URIS",
    "KVS_TCP_USER_TIMEOUT_OFF",
    "KVS_UNPACED",
    "CallbackError",
    "Client",
    "Credentials",
    "IceServer",
    "KvsError",
    "LibraryMismatchError",
    "LogLevel",
    "Message",
    "MessageType",
    "Result",
    "Role",
    "State",
    "StateChange",
    "Status",
    "StatusOrigin",
    "kvs_client_config",
    "kvs_client_metrics",
    "kvs_ice_candidate",
    "kvs_ice_server",
    "kvs_last_error",
    "kvs_last_error_message",
    "kvs_message",
    "kvs_result_str",
    "kvs_status",
    "library_path",
    "set_log_callback",
    "shutdown",
    "stun_url",
    "version",
    "version_number",
]
