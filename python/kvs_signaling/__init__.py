"""ctypes binding of the kvs-signaling C library (include/kvs_signaling.h).

No compiled extension: the shared library is loaded with ctypes.CDLL, which
releases the GIL during every foreign call, so the library's dispatcher thread
can run Python callbacks while an application thread blocks in
kvs_client_connect / kvs_client_free.

Library path: $KVS_SIGNALING_LIB, else ../target/release/libkvs_signaling.so
relative to this file.

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
    c_void_p,
)
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

# --------------------------------------------------------------------------
# Constants and enums (header: #define and enum blocks)
# --------------------------------------------------------------------------

KVS_VERSION_MAJOR = 0
KVS_VERSION_MINOR = 1
KVS_VERSION_PATCH = 0
KVS_VERSION_NUMBER = (KVS_VERSION_MAJOR << 16) | (KVS_VERSION_MINOR << 8) | KVS_VERSION_PATCH
KVS_CORRELATION_ID_CAPACITY = 257
KVS_MAX_SDP_LEN = 10000


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
kvs_free_callback = CFUNCTYPE(None, c_void_p)


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
        ("credentials_callback", c_void_p),
        ("create_channel", ctypes.c_bool),
        ("message_ttl_s", c_uint32),
        ("endpoint_cache_path", c_char_p),
        ("endpoint_cache_ttl_s", c_uint32),
        ("skip_ice_servers", ctypes.c_bool),
        ("on_message", kvs_message_callback),
        ("on_status", kvs_status_callback),
        ("on_state", kvs_state_callback),
        ("on_ice_servers", c_void_p),
        ("userdata", c_void_p),
        ("free_userdata", kvs_free_callback),
        ("callback_backlog_messages", c_uint32),
        ("callback_backlog_bytes", c_uint32),
        ("early_candidate_budget_bytes", c_uint32),
        ("max_inbound_frame_len", c_uint32),
        ("tcp_user_timeout_ms", c_uint32),
        ("report_unconfirmed_sdp", ctypes.c_bool),
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
    env = os.environ.get("KVS_SIGNALING_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "target", "release", "libkvs_signaling.so"))


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
_kvs_result_str = _declare("kvs_result_str", c_char_p, c_uint32)
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
    ):
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

        def guard(name, fn, *args):
            client = ref()
            try:
                if client is not None:
                    fn(client, *args)
            except BaseException as exc:  # never let anything unwind into C
                try:
                    if client is not None:
                        client.callback_errors.append(
                            CallbackError(name, exc, traceback.format_exc())
                        )
                except BaseException:
                    pass

        def message_thunk(_userdata, message_ptr):
            guard("on_message", lambda c: c._on_message(c, _message_from_c(message_ptr.contents)))

        def status_thunk(_userdata, status_ptr):
            guard("on_status", lambda c: c._on_status(c, _status_from_c(status_ptr.contents)))

        def state_thunk(_userdata, value, reason):
            guard(
                "on_state",
                lambda c: c._on_state(c, StateChange(_enum_or_int(State, value), _text(reason))),
            )

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
        config.on_message, config.on_status, config.on_state, config.free_userdata = self._thunks
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
        _check(self._call(_kvs_client_connect), "kvs_client_connect")

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
    return _text(_kvs_version()) or ""


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


__all__ = [
    "KVS_CORRELATION_ID_CAPACITY",
    "KVS_MAX_SDP_LEN",
    "CallbackError",
    "Client",
    "KvsError",
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
    "kvs_ice_candidate",
    "kvs_last_error",
    "kvs_last_error_message",
    "kvs_message",
    "kvs_result_str",
    "kvs_status",
    "library_path",
    "set_log_callback",
    "shutdown",
    "version",
]
