//! `kvs_client`: configuration, lifecycle, sends and callbacks.

use super::dispatch::{self, Kind, Lane};
use super::result::{fail, fail_client, fail_runtime};
use super::{StrError, arg_str, boundary, c_str, copy_prefix, require_non_null, write_out_str};
use crate::aws::{MediaStorageConfiguration, ProxyConfig};
use crate::client::{
    Backlog, Client, ClientConfig, ClientError, ClientEvent, ConnectionState, EventSink, ReceivedMessage, StateReason,
    StatusOrigin, StatusReport, StorageEvent, event_size,
};
use crate::ffi::kvs_result::{self, *};
use crate::protocol::{Action, IceCandidate, MAX_ARN_LEN, MAX_ID_LEN, MAX_PAYLOAD_LEN, MessageType, Role};
use crate::runtime;
use std::collections::BTreeMap;
use std::ffi::{CString, c_char, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// `sdp_per_second` / `ice_per_second` value that turns pacing off.
pub const KVS_UNPACED: u32 = u32::MAX;

/// Size for a buffer that receives a correlation id: 256 characters and a NUL.
pub const KVS_CORRELATION_ID_CAPACITY: usize = 257;

/// How far the send functions scan an SDP or candidate string for its NUL
/// before refusing it as too large. The real limit is lower: the text, wrapped
/// in its JSON and base64-encoded, must fit in 10,000 characters (about 7,400
/// bytes of SDP); longer text returns KVS_ERR_PAYLOAD_TOO_LARGE.
pub const KVS_MAX_SDP_LEN: usize = 10_000;

/// Role of a client (`kvs_client_config.role`).
#[repr(u32)]
pub enum kvs_role {
    /// The single master of the channel (the camera).
    Master = 0,
    /// A viewer, identified by its client id.
    Viewer = 1,
}

/// Connection state reported to `on_state` and by `kvs_client_state`.
#[repr(u32)]
pub enum kvs_state {
    Disconnected = 0,
    Connecting = 1,
    Connected = 2,
    Closing = 3,
    /// The connection was lost or could not be made; the client retries with
    /// backoff and sends wait in the queue (degraded).
    Reconnecting = 4,
}

/// Type of a received message (`kvs_message.message_type`) and the `action` of
/// `kvs_send_message`.
#[repr(u32)]
pub enum kvs_message_type {
    SdpOffer = 1,
    SdpAnswer = 2,
    IceCandidate = 3,
    GoAway = 4,
    ReconnectIceServer = 5,
    /// WebRTC ingestion notice: the client joined the channel's storage
    /// session (`media_storage`) and awaits its offer.
    StorageSessionJoined = 6,
    /// WebRTC ingestion notice: the storage session's offer arrived (it was
    /// delivered just before as an SDP_OFFER from the session's client id).
    StorageOfferReceived = 7,
}

/// Where a status report comes from (`kvs_status.origin`).
#[repr(u32)]
pub enum kvs_status_origin {
    /// A STATUS_RESPONSE from the service about a message it received.
    Service = 0,
    /// The library: an accepted send that could not be written to the socket.
    Local = 1,
}

/// A received SDP offer, SDP answer or ICE candidate, or a notice (GO_AWAY,
/// RECONNECT_ICE_SERVER, STORAGE_SESSION_JOINED, STORAGE_OFFER_RECEIVED:
/// `payload` is an empty string and the other pointers are NULL).
///
/// Every pointer is borrowed for the duration of the callback only; strings are
/// NUL-terminated UTF-8 and NULL when absent.
#[repr(C)]
pub struct kvs_message {
    /// A `kvs_message_type` value.
    pub message_type: u32,
    /// The viewer that sent it (when the master receives); NULL on messages from
    /// the master.
    pub sender_client_id: *const c_char,
    /// The decoded payload, `payload_len` bytes followed by a NUL: JSON text in
    /// practice, but passed on as received when it is not (it may then hold any
    /// bytes, NULs included: use `payload_len`).
    pub payload: *const c_char,
    pub payload_len: usize,
    /// "offer" or "answer" for SDP messages whose payload parsed; else NULL.
    pub sdp_type: *const c_char,
    /// The SDP text; NULL unless `sdp_type` is set.
    pub sdp: *const c_char,
    pub sdp_len: usize,
    /// The candidate line for ICE messages whose payload parsed; else NULL.
    pub candidate: *const c_char,
    pub candidate_len: usize,
    /// `sdpMid`, or NULL.
    pub sdp_mid: *const c_char,
    /// `sdpMLineIndex`, or -1 when absent.
    pub sdp_mline_index: i32,
    /// `usernameFragment`, or NULL.
    pub username_fragment: *const c_char,
}

/// A report that a send failed, identified by its correlation id. Pointers are
/// borrowed for the duration of the callback only; NULL when absent.
#[repr(C)]
pub struct kvs_status {
    /// A `kvs_status_origin` value.
    pub origin: u32,
    pub correlation_id: *const c_char,
    /// E.g. "InvalidArgumentException", "ClientLimitExceededException"; for
    /// local reports "SendFailed".
    pub error_type: *const c_char,
    /// The service's status code (e.g. 400); 0 when absent and for local reports.
    pub status_code: u32,
    pub description: *const c_char,
}

/// An ICE candidate to send (`kvs_send_ice_candidate`). Borrowed for the call.
#[repr(C)]
pub struct kvs_ice_candidate {
    /// The candidate line, e.g. "candidate:1 1 udp 2122260223 192.0.2.1 50000 typ host". Required.
    pub candidate: *const c_char,
    /// `sdpMid`, or NULL to leave it out.
    pub sdp_mid: *const c_char,
    /// `sdpMLineIndex`, or a negative value to leave it out.
    pub sdp_mline_index: i32,
    /// `usernameFragment`, or NULL to leave it out.
    pub username_fragment: *const c_char,
}

/// Called for every received offer, answer, candidate and service notice.
/// `message` is borrowed for the call only. Runs on the dispatcher thread.
pub type kvs_message_callback = Option<unsafe extern "C" fn(userdata: *mut c_void, message: *const kvs_message)>;
/// Called when the service or the library reports a send failed. `status` is
/// borrowed for the call only. Runs on the dispatcher thread.
pub type kvs_status_callback = Option<unsafe extern "C" fn(userdata: *mut c_void, status: *const kvs_status)>;
/// Called on every state change, with a `kvs_state` value and a reason text
/// (borrowed for the call only). Runs on the dispatcher thread.
pub type kvs_state_callback = Option<unsafe extern "C" fn(userdata: *mut c_void, state: u32, reason: *const c_char)>;
/// Called with the length of a new ICE server list. Runs on the dispatcher thread.
pub type kvs_ice_servers_callback = Option<unsafe extern "C" fn(userdata: *mut c_void, count: usize)>;
/// Asked for fresh credentials: call `kvs_credentials_sink_set` on `sink` (valid
/// during this call only) and return KVS_OK, or return an error code. Runs on
/// the dispatcher thread, before the current credentials expire. The library
/// waits 10 s for an answer; a request it stopped waiting for is dropped
/// without calling, and at most 4 requests wait for the callback at once
/// (more fail at once with KVS_ERR_CREDENTIALS).
///
/// The return value is a `kvs_result` value (a `uint32_t`); a value that is
/// not a known code counts as a failure.
pub type kvs_credentials_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, sink: *mut super::kvs_credentials_sink) -> u32>;
/// Releases `userdata`; called exactly once.
pub type kvs_free_callback = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Configuration of a client. Initialise it with `kvs_client_config_default()`
/// (or `kvs_client_config_init`) and set the fields you need.
///
/// Extension-safe: `struct_size` records the size of the struct the caller was
/// compiled with. A newer library reads only that many bytes and gives every
/// later field its default, so a binary built against an older header keeps
/// working; fields are only ever added at the end.
///
/// All pointers are borrowed by `kvs_client_new` for the call only (the library
/// copies the strings), except `userdata`, which the client keeps until it calls
/// `free_userdata`.
#[repr(C)]
pub struct kvs_client_config {
    /// `sizeof(kvs_client_config)` as the caller was compiled; set by
    /// `kvs_client_config_default()` / `kvs_client_config_init`. 0 (a struct
    /// not initialised that way) is refused with KVS_ERR_INVALID_CONFIG.
    pub struct_size: usize,
    /// A `kvs_role` value.
    pub role: u32,
    /// Channel ARN, `arn:aws:kinesisvideo:REGION:ACCOUNT:channel/NAME/EPOCH`. Required.
    pub channel_arn: *const c_char,
    /// The viewer's client id (required for a viewer, NULL for a master).
    pub client_id: *const c_char,
    /// Data-plane endpoint for this role, `ws://host:port` or `wss://host`. Required.
    pub endpoint: *const c_char,
    /// AWS region; NULL takes it from the ARN (us-west-2 when there is no ARN).
    pub region: *const c_char,
    /// Connect timeout in milliseconds (for the whole attempt: control plane,
    /// TLS, WebSocket); 0 means 5000, or 15000 with `use_control_plane`.
    pub connect_timeout_ms: u32,
    /// Sends that may wait for the socket at once; 0 means 256.
    pub send_queue_capacity: u32,
    /// How long a send may wait while the client reconnects before it is
    /// reported failed, in milliseconds; 0 means 30000.
    pub send_queue_timeout_ms: u32,
    /// Reconnect backoff: the first retry waits up to this (ms); 0 means 200.
    pub backoff_initial_ms: u32,
    /// Reconnect backoff cap (ms); 0 means 10000.
    pub backoff_max_ms: u32,
    /// WebSocket ping interval (ms); 0 means 20000.
    pub ping_interval_ms: u32,
    /// A ping unanswered this long (ms) counts as a drop; 0 means 10000.
    pub pong_timeout_ms: u32,
    /// Age (seconds) at which the client switches to a new socket before the
    /// service's own limit; 0 means 3300 (55 minutes).
    pub max_connection_age_s: u32,
    /// Offers and answers per second per connection; 0 means 5 (the service
    /// quota); KVS_UNPACED turns pacing off.
    pub sdp_per_second: u32,
    /// ICE candidates per second per connection; 0 means 20; KVS_UNPACED: off.
    pub ice_per_second: u32,
    /// Hold ICE candidates that arrive before their peer's SDP offer or answer
    /// and deliver them right after it.
    pub buffer_early_candidates: bool,
    /// Connect the way the real service requires: DescribeSignalingChannel (or
    /// CreateSignalingChannel) -> GetSignalingChannelEndpoint -> SigV4-presigned
    /// WSS URL, with GetIceServerConfig in the background. Needs credentials;
    /// `endpoint` is then unused.
    pub use_control_plane: bool,
    /// The channel's name, instead of `channel_arn` (control plane only; when
    /// both are set the ARN is used).
    pub channel_name: *const c_char,
    /// A control-plane URL replacing the regional endpoint (e.g. the emulator's
    /// `https://127.0.0.1:PORT`); NULL for `https://kinesisvideo.REGION.amazonaws.com`.
    pub control_plane_url: *const c_char,
    /// Use the FIPS endpoints.
    pub use_fips: bool,
    /// Use the dual-stack (IPv4 + IPv6) endpoints.
    pub use_dual_stack: bool,
    /// PEM file of trusted CA certificates replacing the built-in Mozilla roots
    /// (for the control plane and the WebSocket). Verification is always on.
    pub ca_bundle_path: *const c_char,
    /// Static credentials; `session_token` may be NULL.
    pub access_key_id: *const c_char,
    pub secret_access_key: *const c_char,
    pub session_token: *const c_char,
    /// Take credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// AWS_SESSION_TOKEN (read at each refresh).
    pub credentials_from_env: bool,
    /// Called for fresh credentials before the current ones expire (never on the
    /// send path); takes precedence over static and environment credentials.
    pub credentials_callback: kvs_credentials_callback,
    /// Create the channel when it does not exist (by name only).
    pub create_channel: bool,
    /// MessageTtlSeconds of a created channel, 5-120; 0 means the service default (60).
    pub message_ttl_s: u32,
    /// File keeping resolved ARNs and endpoints across runs (a warm start makes
    /// no control-plane call); NULL keeps them in memory only.
    pub endpoint_cache_path: *const c_char,
    /// How long resolved endpoints stay cached, in seconds; 0 means 3600.
    pub endpoint_cache_ttl_s: u32,
    /// Do not fetch the ICE server configuration (TURN).
    pub skip_ice_servers: bool,
    pub on_message: kvs_message_callback,
    pub on_status: kvs_status_callback,
    pub on_state: kvs_state_callback,
    /// Called when a new ICE server list was fetched, with its length; read it
    /// with `kvs_client_get_ice_servers`. Runs on the dispatcher thread.
    pub on_ice_servers: kvs_ice_servers_callback,
    /// Passed first to every callback.
    pub userdata: *mut c_void,
    /// Called exactly once with `userdata`, after the client's last callback:
    /// on the thread that calls `kvs_client_free`, before it returns, or on the
    /// calling thread if `kvs_client_new` fails.
    pub free_userdata: kvs_free_callback,
    /// Received messages and reports that may wait for this client's callbacks
    /// at once; 0 means KVS_DEFAULT_CALLBACK_BACKLOG_MESSAGES. When the backlog
    /// is full (this count or `callback_backlog_bytes`), the client stops
    /// reading its socket until the callbacks catch up: TCP slows the sender,
    /// nothing is dropped.
    pub callback_backlog_messages: u32,
    /// Bytes (message text plus 128 per message) that may wait for this
    /// client's callbacks at once; 0 means KVS_DEFAULT_CALLBACK_BACKLOG_BYTES.
    pub callback_backlog_bytes: u32,
    /// Bytes of early ICE candidates (`buffer_early_candidates`) held at most,
    /// over all peers; beyond it the oldest is delivered at once, before its
    /// peer's SDP. 0 means 262144 (256 KiB).
    pub early_candidate_budget_bytes: u32,
    /// Longest inbound WebSocket message; a longer one is a protocol violation
    /// that drops the connection (the client reconnects). 16384-1048576; 0
    /// means 65536.
    pub max_inbound_frame_len: u32,
    /// Deadline (ms) for the kernel to declare a dead link: data the peer has
    /// not acknowledged within it fails the socket (`TCP_USER_TIMEOUT`, Linux),
    /// and an idle socket is probed by TCP keepalive to notice a silent peer in
    /// about the same time. Applies to the WebSocket and the HTTPS calls. 0
    /// means 5000; KVS_TCP_USER_TIMEOUT_OFF leaves the system's defaults.
    pub tcp_user_timeout_ms: u32,
    /// SDP offers and answers written but not acknowledged by the service's TCP
    /// when a connection fails: false (default) sends them again on the next
    /// socket, like ICE candidates; true reports each through `on_status`
    /// (origin LOCAL, `error_type` "Unconfirmed") instead, so the application
    /// decides (a duplicate offer can upset a peer).
    pub report_unconfirmed_sdp: bool,
    /// Signing by a backend: called for the presigned WebSocket URL of every
    /// connect attempt (for `endpoint`, or the endpoint the control plane
    /// returned) and, with `use_control_plane`, for the headers of every
    /// control-plane call, so the client needs no credentials (they are then
    /// never used). Runs on the dispatcher thread with `userdata`; see
    /// `kvs_signer_callback` and README "Signing by a backend".
    pub signer_callback: super::kvs_signer_callback,
    /// How long the library waits for one `signer_callback` call (ms); 0
    /// means 10000. A late answer fails the attempt with KVS_ERR_SIGNER_FAILED.
    pub signer_timeout_ms: u32,
    /// A ready presigned WebSocket URL (`wss://...?X-Amz-ChannelARN=...&X-Amz-Signature=...`,
    /// at most KVS_MAX_SIGNED_URL_LEN bytes), instead of `endpoint` (not with
    /// `use_control_plane`); `channel_arn` and a viewer's `client_id` may then
    /// be NULL: they are read from the URL. Once it has expired or the service
    /// refuses it (401/403), the client asks `signer_callback` for a new URL,
    /// or, without one, stops with KVS_ERR_PRESIGNED_URL_EXPIRED (state
    /// DISCONNECTED) instead of retrying a dead URL.
    pub presigned_url: *const c_char,
    /// When `presigned_url` expires, in seconds since 1970 (required with it).
    pub presigned_url_expiry_unix_s: u64,
    /// Appended (after a space) to the library's `User-Agent`
    /// (`kvs-signaling/VERSION`) on every HTTPS call and WebSocket upgrade;
    /// 1-256 printable ASCII characters. NULL: none.
    pub user_agent_suffix: *const c_char,
    /// Tags of a channel the client creates (`create_channel`): `tag_count`
    /// entries, at most 50; keys 1-128 and values 0-256 characters of
    /// letters, digits, spaces and `_ . : / = + - @` (the service's limits).
    /// Borrowed for `kvs_client_new` only, like the strings.
    pub tags: *const super::kvs_tag,
    pub tag_count: usize,
    /// HTTPS proxy of every connection of the client (the WebSocket, the
    /// control-plane and GetIceServerConfig calls): `http://[user:password@]host[:port]`
    /// (port 80 by default; user and password percent-encoded, sent as
    /// `Proxy-Authorization: Basic`, never logged). Each connection is an HTTP
    /// CONNECT tunnel with TLS to the service inside it. An `https://` proxy
    /// (TLS to the proxy) is refused with KVS_ERR_INVALID_CONFIG. NULL connects
    /// directly, unless `proxy_from_env` finds a proxy.
    pub proxy_url: *const c_char,
    /// Hosts reached without the proxy, curl's `no_proxy` syntax: names
    /// separated by commas or blanks, each matching itself and its subdomains;
    /// IP addresses or CIDR ranges (`10.0.0.0/8`); `*` alone for every host.
    /// NULL bypasses nothing (unless `proxy_from_env` finds NO_PROXY); ""
    /// bypasses nothing even then.
    pub no_proxy: *const c_char,
    /// Fill `proxy_url` and `no_proxy`, where NULL, from `https_proxy` /
    /// `HTTPS_PROXY` and `no_proxy` / `NO_PROXY` (lower case first), read once
    /// by `kvs_client_new`.
    pub proxy_from_env: bool,
    // -- AWS IoT credentials provider (one block; `use_control_plane` only) --
    /// The account's AWS IoT credentials endpoint,
    /// `PREFIX.credentials.iot.REGION.amazonaws.com` (`aws iot describe-endpoint
    /// --endpoint-type iot:CredentialProvider`), optionally `:PORT` (the
    /// emulator's `127.0.0.1:PORT`). Set: the client signs with temporary keys
    /// fetched over mutual TLS with the device certificate, refreshed in the
    /// background before they expire; takes precedence over static and
    /// environment credentials (a `credentials_callback` still comes first).
    pub iot_credentials_endpoint: *const c_char,
    /// The role alias (1-128 of `A-Z a-z 0-9 _ = , @ -`). Required with the endpoint.
    pub iot_role_alias: *const c_char,
    /// Sent as `x-amzn-iot-thingname` (1-128 of `A-Z a-z 0-9 : _ -`); NULL sends none.
    pub iot_thing_name: *const c_char,
    /// The device certificate, PEM (certificate first). Required with the endpoint.
    pub iot_certificate_path: *const c_char,
    /// The device's private key, PEM (PKCS#8; with the rustls build also
    /// PKCS#1 RSA and SEC1 EC keys). Required with the endpoint.
    pub iot_private_key_path: *const c_char,
    /// PEM file of the CAs trusted for the IoT endpoint (Amazon Root CA 1 for
    /// the real service); NULL uses the built-in roots (not `ca_bundle_path`).
    pub iot_ca_path: *const c_char,
    /// WebRTC ingestion (`use_control_plane` only): a `kvs_media_storage`
    /// value. OFF (default) never joins; AUTO asks the channel
    /// (DescribeMediaStorageConfiguration) before each connect and joins its
    /// storage session when enabled; ON always joins. The session's offer
    /// arrives through `on_message` (SDP_OFFER from its client id), with the
    /// notices STORAGE_SESSION_JOINED and STORAGE_OFFER_RECEIVED.
    pub media_storage: u32,
    /// How long the storage session's offer is awaited after a join before
    /// joining again, in ms; 0 means 30000; at least 1000.
    pub storage_offer_timeout_ms: u32,
    /// Bound of each socket's kernel receive and send buffers (`SO_RCVBUF`,
    /// `SO_SNDBUF`) in bytes, so that a peer cannot make the kernel hold more
    /// for the client while it pauses reading: 0 means
    /// KVS_DEFAULT_SOCKET_BUFFER_BYTES (256 KiB); 4096 to 16 MiB;
    /// KVS_SOCKET_BUFFER_SYSTEM leaves the system's autotuning.
    pub socket_buffer_bytes: u32,
    // (A bool field added here also goes into CONFIG_BOOL_OFFSETS.)
    /// Zero (set by `kvs_client_config_default`). Names the struct's tail
    /// padding, so that a field added here later is zero, its default, in
    /// binaries built against this header.
    pub reserved: u32,
}

/// `kvs_client_config.media_storage`.
#[repr(u32)]
pub enum kvs_media_storage {
    Off = 0,
    Auto = 1,
    On = 2,
}

/// `tcp_user_timeout_ms` value that leaves the system's TCP defaults alone.
pub const KVS_TCP_USER_TIMEOUT_OFF: u32 = u32::MAX;

/// Default of `kvs_client_config.socket_buffer_bytes` (256 KiB).
pub const KVS_DEFAULT_SOCKET_BUFFER_BYTES: u32 = 256 * 1024;
/// `socket_buffer_bytes` value that leaves the system's buffer autotuning.
pub const KVS_SOCKET_BUFFER_SYSTEM: u32 = u32::MAX;
// The C default is the Rust API's (cbindgen needs a literal).
const _: () = assert!(KVS_DEFAULT_SOCKET_BUFFER_BYTES as usize == crate::client::DEFAULT_SOCKET_BUFFER);

/// Default of `kvs_client_config.callback_backlog_messages`.
pub const KVS_DEFAULT_CALLBACK_BACKLOG_MESSAGES: u32 = 1024;
/// Default of `kvs_client_config.callback_backlog_bytes` (512 KiB).
pub const KVS_DEFAULT_CALLBACK_BACKLOG_BYTES: u32 = 512 * 1024;
// The C defaults are the Rust API's (cbindgen needs them as literals).
const _: () = assert!(
    KVS_DEFAULT_CALLBACK_BACKLOG_MESSAGES as usize == crate::client::DEFAULT_BACKLOG_EVENTS
        && KVS_DEFAULT_CALLBACK_BACKLOG_BYTES as usize == crate::client::DEFAULT_BACKLOG_BYTES
);

/// `value` as a size, or `default` when it is 0.
fn default_if_zero(value: u32, default: u32) -> usize {
    (if value == 0 { default } else { value }) as usize
}

/// An opaque signaling client, made by `kvs_client_new`, released by `kvs_client_free`.
pub struct kvs_client {
    _private: [u8; 0],
}

pub(crate) fn config_defaults() -> kvs_client_config {
    kvs_client_config {
        struct_size: size_of::<kvs_client_config>(),
        role: kvs_role::Master as u32,
        channel_arn: ptr::null(),
        client_id: ptr::null(),
        endpoint: ptr::null(),
        region: ptr::null(),
        connect_timeout_ms: 0,
        send_queue_capacity: 0,
        send_queue_timeout_ms: 0,
        backoff_initial_ms: 0,
        backoff_max_ms: 0,
        ping_interval_ms: 0,
        pong_timeout_ms: 0,
        max_connection_age_s: 0,
        sdp_per_second: 0,
        ice_per_second: 0,
        buffer_early_candidates: false,
        use_control_plane: false,
        channel_name: ptr::null(),
        control_plane_url: ptr::null(),
        use_fips: false,
        use_dual_stack: false,
        ca_bundle_path: ptr::null(),
        access_key_id: ptr::null(),
        secret_access_key: ptr::null(),
        session_token: ptr::null(),
        credentials_from_env: false,
        credentials_callback: None,
        create_channel: false,
        message_ttl_s: 0,
        endpoint_cache_path: ptr::null(),
        endpoint_cache_ttl_s: 0,
        skip_ice_servers: false,
        on_ice_servers: None,
        on_message: None,
        on_status: None,
        on_state: None,
        userdata: ptr::null_mut(),
        free_userdata: None,
        callback_backlog_messages: 0,
        callback_backlog_bytes: 0,
        early_candidate_budget_bytes: 0,
        max_inbound_frame_len: 0,
        tcp_user_timeout_ms: 0,
        report_unconfirmed_sdp: false,
        signer_callback: None,
        signer_timeout_ms: 0,
        presigned_url: ptr::null(),
        presigned_url_expiry_unix_s: 0,
        user_agent_suffix: ptr::null(),
        tags: ptr::null(),
        tag_count: 0,
        proxy_url: ptr::null(),
        no_proxy: ptr::null(),
        proxy_from_env: false,
        iot_credentials_endpoint: ptr::null(),
        iot_role_alias: ptr::null(),
        iot_thing_name: ptr::null(),
        iot_certificate_path: ptr::null(),
        iot_private_key_path: ptr::null(),
        iot_ca_path: ptr::null(),
        media_storage: kvs_media_storage::Off as u32,
        storage_offer_timeout_ms: 0,
        socket_buffer_bytes: 0,
        reserved: 0,
    }
}

/// The application's callbacks and userdata. `free_userdata` runs once, through
/// [`Callbacks::release`] (or when dropped unreleased, e.g. a failed
/// `kvs_client_new`).
pub(super) struct Callbacks {
    on_message: kvs_message_callback,
    on_status: kvs_status_callback,
    on_state: kvs_state_callback,
    on_ice_servers: kvs_ice_servers_callback,
    pub(super) credentials: kvs_credentials_callback,
    pub(super) signer: super::kvs_signer_callback,
    pub(super) userdata: *mut c_void,
    free_userdata: kvs_free_callback,
    released: AtomicBool,
}

// SAFETY: the header states that callbacks run on the dispatcher thread and
// free_userdata on the thread that frees the client, so the application hands
// `userdata` to those threads.
unsafe impl Send for Callbacks {}
// SAFETY: the callbacks are only invoked from the dispatcher thread, one at a
// time; `release` is guarded by an atomic flag.
unsafe impl Sync for Callbacks {}

impl Callbacks {
    fn from_config(config: &kvs_client_config) -> Callbacks {
        Callbacks {
            on_message: config.on_message,
            on_status: config.on_status,
            on_state: config.on_state,
            on_ice_servers: config.on_ice_servers,
            credentials: config.credentials_callback,
            signer: config.signer_callback,
            userdata: config.userdata,
            free_userdata: config.free_userdata,
            released: AtomicBool::new(false),
        }
    }

    /// Calls `free_userdata` on the calling thread, the first time only.
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel)
            && let Some(free) = self.free_userdata
        {
            // SAFETY: the application's finalizer, called exactly once with its own pointer.
            unsafe { free(self.userdata) };
        }
    }
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        self.release();
    }
}

/// What `*mut kvs_client` points at: shared (an `Arc`), so that a callback
/// running while the client is freed still finds it, reading as closed.
pub(super) struct ClientHandle {
    pub(super) client: Client,
    /// The client's callbacks and their queue on the dispatcher.
    lane: Arc<Lane>,
    /// Set when `kvs_client_free` begins: every entry point then refuses the
    /// client with KVS_ERR_CLOSED.
    closed: AtomicBool,
}

/// Why a C pointer does not lead to a usable client.
#[derive(Clone, Copy)]
enum Unusable {
    Null,
    Forked,
    Closed,
}

/// The live clients, by the id their C pointer carries. A `kvs_client *` is
/// an id, never an address: the library never reads through it, so a pointer
/// used while or after its client is freed (or one that never was a client)
/// is refused, not dereferenced, and ids are not reused. Each call on a
/// client holds its own reference, so a call that runs on while another
/// thread frees the client still has it (closed) until it returns.
static CLIENTS: Mutex<BTreeMap<usize, Arc<ClientHandle>>> = Mutex::new(BTreeMap::new());
/// The next client id; steps of 16 keep the pointers aligned like addresses.
static NEXT_CLIENT_ID: AtomicUsize = AtomicUsize::new(16);

/// Registers `handle`; returns the pointer that names it to C.
fn register(handle: Arc<ClientHandle>) -> *mut kvs_client {
    let mut clients = dispatch::lock(&CLIENTS);
    let id = loop {
        let id = NEXT_CLIENT_ID.fetch_add(16, Ordering::Relaxed);
        // After a wrap (2^28 clients on a 32-bit target) ids in use are skipped.
        if id != 0 && !clients.contains_key(&id) {
            break id;
        }
    };
    clients.insert(id, handle);
    ptr::without_provenance_mut(id)
}

/// The client behind a C pointer, without recording an error.
fn peek_handle(client: *const kvs_client) -> Result<Arc<ClientHandle>, Unusable> {
    if client.is_null() {
        return Err(Unusable::Null);
    }
    if runtime::is_forked() {
        return Err(Unusable::Forked);
    }
    let handle = dispatch::lock(&CLIENTS).get(&client.addr()).cloned().ok_or(Unusable::Closed)?;
    if handle.closed.load(Ordering::Acquire) {
        return Err(Unusable::Closed);
    }
    Ok(handle)
}

/// The client behind a C pointer, for a call on it. Checks, in order: NULL
/// (KVS_ERR_NULL_PARAMETER), a forked child (KVS_ERR_FORKED), a client being
/// freed, freed, or never made by `kvs_client_new` (KVS_ERR_CLOSED); each
/// with last-error text.
pub(super) fn open_handle(client: *const kvs_client) -> Result<Arc<ClientHandle>, kvs_result> {
    peek_handle(client).map_err(|why| match why {
        Unusable::Null => fail(KVS_ERR_NULL_PARAMETER, "client must not be NULL"),
        Unusable::Forked => fail_runtime(runtime::RuntimeError::Forked),
        Unusable::Closed => {
            fail(KVS_ERR_CLOSED, "client is not a live client (kvs_client_free was called, or it is no client)")
        }
    })
}

fn opt_cstring(text: Option<&str>) -> Option<CString> {
    text.map(|t| CString::new(t.replace('\0', "")).unwrap_or_default())
}

fn ptr_of(text: &Option<CString>) -> *const c_char {
    text.as_ref().map_or(ptr::null(), |t| t.as_ptr())
}

fn message_type_code(message_type: &MessageType) -> u32 {
    match message_type {
        MessageType::SdpOffer => kvs_message_type::SdpOffer as u32,
        MessageType::SdpAnswer => kvs_message_type::SdpAnswer as u32,
        MessageType::IceCandidate => kvs_message_type::IceCandidate as u32,
        MessageType::GoAway => kvs_message_type::GoAway as u32,
        MessageType::ReconnectIceServer => kvs_message_type::ReconnectIceServer as u32,
        MessageType::StatusResponse | MessageType::Unknown(_) => 0,
    }
}

fn state_code(state: ConnectionState) -> u32 {
    match state {
        ConnectionState::Disconnected => kvs_state::Disconnected as u32,
        ConnectionState::Connecting => kvs_state::Connecting as u32,
        ConnectionState::Connected => kvs_state::Connected as u32,
        ConnectionState::Closing => kvs_state::Closing as u32,
        ConnectionState::Reconnecting => kvs_state::Reconnecting as u32,
    }
}

fn reason_text(reason: &StateReason) -> String {
    match reason {
        StateReason::Requested => "requested".into(),
        StateReason::ConnectFailed(text) => format!("connect failed: {text}"),
        StateReason::ClosedByService(Some(code)) => format!("closed by the service (code {code})"),
        StateReason::ClosedByService(None) => "closed by the service".into(),
        StateReason::ConnectionLost(text) => format!("connection lost: {text}"),
    }
}

impl Callbacks {
    /// Calls the matching callback; runs on the dispatcher thread.
    fn deliver(&self, event: ClientEvent) {
        match event {
            ClientEvent::Message(message) => self.deliver_message(message),
            ClientEvent::ServiceNotice(kind) => self.deliver_notice(message_type_code(&kind)),
            ClientEvent::Storage(StorageEvent::Joined) => {
                self.deliver_notice(kvs_message_type::StorageSessionJoined as u32)
            }
            ClientEvent::Storage(StorageEvent::OfferReceived) => {
                self.deliver_notice(kvs_message_type::StorageOfferReceived as u32)
            }
            ClientEvent::Status(status) => self.deliver_status(status),
            ClientEvent::IceServersChanged { count } => {
                if let Some(cb) = self.on_ice_servers {
                    // SAFETY: the application's callback.
                    unsafe { cb(self.userdata, count) };
                }
            }
            ClientEvent::State(change) => {
                if let Some(cb) = self.on_state {
                    let reason = opt_cstring(Some(&reason_text(&change.reason)));
                    // SAFETY: the application's callback; arguments live for the call.
                    unsafe { cb(self.userdata, state_code(change.state), ptr_of(&reason)) };
                }
            }
        }
    }

    /// A notice: `message_type` with an empty payload and NULL pointers.
    fn deliver_notice(&self, message_type: u32) {
        let Some(cb) = self.on_message else { return };
        let view = kvs_message {
            message_type,
            sender_client_id: ptr::null(),
            payload: c"".as_ptr(),
            payload_len: 0,
            sdp_type: ptr::null(),
            sdp: ptr::null(),
            sdp_len: 0,
            candidate: ptr::null(),
            candidate_len: 0,
            sdp_mid: ptr::null(),
            sdp_mline_index: -1,
            username_fragment: ptr::null(),
        };
        // SAFETY: the application's callback; `view` lives for the call.
        unsafe { cb(self.userdata, &view) };
    }

    fn deliver_message(&self, message: ReceivedMessage) {
        let Some(cb) = self.on_message else { return };
        let sender = opt_cstring(message.sender_client_id.as_deref());
        let payload_len = message.payload.len();
        let mut payload = message.payload;
        payload.push(0);
        let sdp_type = message.sdp.as_ref().map(|s| s.sdp_type.as_str());
        let sdp_type = opt_cstring(sdp_type);
        let sdp = opt_cstring(message.sdp.as_ref().map(|s| s.sdp.as_str()));
        let ice = message.ice.as_ref();
        let candidate = opt_cstring(ice.map(|i| i.candidate.as_str()));
        let sdp_mid = opt_cstring(ice.and_then(|i| i.sdp_mid.as_deref()));
        let ufrag = opt_cstring(ice.and_then(|i| i.username_fragment.as_deref()));
        let view = kvs_message {
            message_type: message_type_code(&message.message_type),
            sender_client_id: ptr_of(&sender),
            payload: payload.as_ptr().cast(),
            payload_len,
            sdp_type: ptr_of(&sdp_type),
            sdp: ptr_of(&sdp),
            sdp_len: sdp.as_ref().map_or(0, |s| s.as_bytes().len()),
            candidate: ptr_of(&candidate),
            candidate_len: candidate.as_ref().map_or(0, |s| s.as_bytes().len()),
            sdp_mid: ptr_of(&sdp_mid),
            sdp_mline_index: ice.and_then(|i| i.sdp_mline_index).map_or(-1, i32::from),
            username_fragment: ptr_of(&ufrag),
        };
        // SAFETY: the application's callback; `view` and its strings live for the call.
        unsafe { cb(self.userdata, &view) };
    }

    fn deliver_status(&self, status: StatusReport) {
        let Some(cb) = self.on_status else { return };
        let correlation_id = opt_cstring(Some(&status.correlation_id));
        let error_type = opt_cstring(status.error_type.as_deref());
        let description = opt_cstring(status.description.as_deref());
        let view = kvs_status {
            origin: match status.origin {
                StatusOrigin::Service => kvs_status_origin::Service as u32,
                StatusOrigin::Local => kvs_status_origin::Local as u32,
            },
            correlation_id: ptr_of(&correlation_id),
            error_type: ptr_of(&error_type),
            status_code: status.status_code,
            description: ptr_of(&description),
        };
        // SAFETY: the application's callback; `view` and its strings live for the call.
        unsafe { cb(self.userdata, &view) };
    }
}

/// The smallest `struct_size` accepted: the fields up to `free_userdata`, the
/// layout of the first versioned release. Every field after it is optional.
const CONFIG_BASE_SIZE: usize = std::mem::offset_of!(kvs_client_config, free_userdata) + size_of::<kvs_free_callback>();

/// Fills the first `size` bytes of `*config` with the defaults: role master,
/// all strings NULL, timeouts and capacities 0 (library defaults), no
/// callbacks, and `struct_size = size`. Pass `sizeof(kvs_client_config)`; the
/// header's `kvs_client_config_default()` does. Bytes beyond `size` are not
/// touched.
///
/// Ownership: `config` is caller memory of at least `size` bytes.
/// Threading: any thread.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_INVALID_ARGUMENT (`size` below the
/// first versioned layout).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_config_init(config: *mut kvs_client_config, size: usize) -> kvs_result {
    boundary(|| {
        require_non_null!(config, "config");
        if size < CONFIG_BASE_SIZE {
            return fail(
                KVS_ERR_INVALID_ARGUMENT,
                format!("size {size} is below the smallest kvs_client_config ({CONFIG_BASE_SIZE} bytes)"),
            );
        }
        let defaults = kvs_client_config { struct_size: size, ..config_defaults() };
        // SAFETY: the caller passes `size` writable bytes at `config`; at most
        // that many bytes of a complete struct are copied.
        unsafe { copy_prefix(&defaults, config, size) };
        KVS_OK
    })
}

/// Rust callers' equivalent of the header's `kvs_client_config_default()`: a
/// configuration with every field at its default and `struct_size` set.
pub fn kvs_client_config_default() -> kvs_client_config {
    config_defaults()
}

/// The caller's config as this library reads it: the first `struct_size`
/// bytes of `*config`, defaults for the rest.
///
/// # Safety
/// `config` is non-NULL and readable for its `struct_size` bytes (at least the
/// `struct_size` field itself).
unsafe fn read_config(config: *const kvs_client_config) -> Result<kvs_client_config, kvs_result> {
    // SAFETY: the leading field is present in every layout.
    let size = unsafe { ptr::addr_of!((*config).struct_size).read() };
    if size < CONFIG_BASE_SIZE {
        return Err(fail(
            KVS_ERR_INVALID_CONFIG,
            format!(
                "config.struct_size is {size}: initialise the config with kvs_client_config_default() or kvs_client_config_init()"
            ),
        ));
    }
    // Every struct a header ever had ends on the struct's alignment, so such a
    // size never ends inside a field (half a function pointer).
    if size % align_of::<kvs_client_config>() != 0 {
        return Err(fail(
            KVS_ERR_INVALID_CONFIG,
            format!("config.struct_size is {size}, not the size of a kvs_client_config of any header"),
        ));
    }
    let mut local = config_defaults();
    let local_bytes = (&mut local as *mut kvs_client_config).cast::<u8>();
    // SAFETY: the caller's struct has `size` readable bytes; at most
    // size_of::<kvs_client_config>() of them are copied into a complete struct.
    unsafe { ptr::copy_nonoverlapping(config.cast::<u8>(), local_bytes, size.min(size_of::<kvs_client_config>())) };
    // A `bool` byte other than 0 or 1 (memset, a binding) is read as C reads
    // it, non-zero is true, before any Rust code sees the field.
    for offset in CONFIG_BOOL_OFFSETS {
        // SAFETY: `offset` is that of a bool field of `local` (one byte).
        unsafe {
            let byte = local_bytes.add(offset);
            byte.write(u8::from(byte.read() != 0));
        }
    }
    local.struct_size = size;
    Ok(local)
}

/// The offsets of the `bool` fields of `kvs_client_config`.
const CONFIG_BOOL_OFFSETS: [usize; 9] = [
    std::mem::offset_of!(kvs_client_config, buffer_early_candidates),
    std::mem::offset_of!(kvs_client_config, use_control_plane),
    std::mem::offset_of!(kvs_client_config, use_fips),
    std::mem::offset_of!(kvs_client_config, use_dual_stack),
    std::mem::offset_of!(kvs_client_config, credentials_from_env),
    std::mem::offset_of!(kvs_client_config, create_channel),
    std::mem::offset_of!(kvs_client_config, skip_ice_servers),
    std::mem::offset_of!(kvs_client_config, report_unconfirmed_sdp),
    std::mem::offset_of!(kvs_client_config, proxy_from_env),
];

/// The proxy setting of a C config (`proxy_url`, `no_proxy`, `proxy_from_env`),
/// for every connection of the client, the IoT credentials fetch included.
pub(super) fn proxy_config(config: &kvs_client_config) -> Result<ProxyConfig, kvs_result> {
    Ok(ProxyConfig {
        url: config_str(config.proxy_url, "proxy_url", 2048)?,
        no_proxy: config_str(config.no_proxy, "no_proxy", 8192)?,
        from_env: config.proxy_from_env,
    })
}

/// Reads a required or optional config string, or returns the failing code.
fn config_str(ptr: *const c_char, name: &str, max: usize) -> Result<Option<String>, kvs_result> {
    // SAFETY: the header requires config strings to be NUL-terminated.
    unsafe { arg_str(ptr, name, max, KVS_ERR_INVALID_CONFIG) }.map(|s| s.map(str::to_owned))
}

fn client_config(config: &kvs_client_config, lane: &Arc<Lane>) -> Result<ClientConfig, kvs_result> {
    let role = match config.role {
        0 => Role::Master,
        1 => Role::Viewer,
        other => {
            return Err(fail(
                KVS_ERR_INVALID_CONFIG,
                format!("role {other} is neither KVS_ROLE_MASTER nor KVS_ROLE_VIEWER"),
            ));
        }
    };
    let channel_name = config_str(config.channel_name, "channel_name", MAX_ID_LEN)?;
    let presigned_url = super::signer::presigned_url(config)?;
    let presigned = presigned_url.is_some();
    let channel_arn = config_str(config.channel_arn, "channel_arn", crate::protocol::MAX_ARN_LEN)?;
    let channel_arn = match (channel_arn, &channel_name, config.use_control_plane) {
        (Some(arn), _, _) => arn,
        (None, Some(_), true) => String::new(),
        (None, _, false) if presigned => String::new(),
        _ => return Err(fail(KVS_ERR_NULL_PARAMETER, "config.channel_arn must not be NULL")),
    };
    let endpoint = match (config_str(config.endpoint, "endpoint", 2048)?, config.use_control_plane) {
        (Some(endpoint), _) => endpoint,
        (None, true) => String::new(),
        (None, false) if presigned => String::new(),
        (None, false) => return Err(fail(KVS_ERR_NULL_PARAMETER, "config.endpoint must not be NULL")),
    };
    let client_id = config_str(config.client_id, "client_id", MAX_ID_LEN)?;
    let region = config_str(config.region, "region", 64)?;
    let mut out = match (role, client_id) {
        (Role::Viewer, Some(id)) => ClientConfig::viewer(&channel_arn, &id, &endpoint),
        (Role::Viewer, None) if presigned => {
            ClientConfig { role: Role::Viewer, ..ClientConfig::master(&channel_arn, &endpoint) }
        }
        (Role::Viewer, None) => {
            return Err(fail(KVS_ERR_NULL_PARAMETER, "config.client_id must be set for a viewer"));
        }
        (Role::Master, id) => ClientConfig { client_id: id, ..ClientConfig::master(&channel_arn, &endpoint) },
    };
    if let Some(region) = region {
        out.region = region;
    }
    if config.connect_timeout_ms > 0 {
        out.connect_timeout = Duration::from_millis(u64::from(config.connect_timeout_ms));
    }
    if config.send_queue_capacity > 0 {
        out.send_queue_capacity = config.send_queue_capacity as usize;
    }
    let millis = |value: u32, default: Duration| {
        if value == 0 { default } else { Duration::from_millis(u64::from(value)) }
    };
    out.send_queue_timeout = millis(config.send_queue_timeout_ms, out.send_queue_timeout);
    out.backoff.initial = millis(config.backoff_initial_ms, out.backoff.initial);
    out.backoff.max = millis(config.backoff_max_ms, out.backoff.max);
    out.ping_interval = millis(config.ping_interval_ms, out.ping_interval);
    out.pong_timeout = millis(config.pong_timeout_ms, out.pong_timeout);
    if config.max_connection_age_s > 0 {
        out.max_connection_age = Duration::from_secs(u64::from(config.max_connection_age_s));
    }
    let rate = |value: u32, default: u32| match value {
        0 => default,
        KVS_UNPACED => 0,
        n => n,
    };
    out.pacing.sdp_per_second = rate(config.sdp_per_second, out.pacing.sdp_per_second);
    out.pacing.ice_per_second = rate(config.ice_per_second, out.pacing.ice_per_second);
    out.buffer_early_candidates = config.buffer_early_candidates;
    if config.early_candidate_budget_bytes > 0 {
        out.early_candidate_budget = config.early_candidate_budget_bytes as usize;
    }
    out.tcp_user_timeout = match config.tcp_user_timeout_ms {
        0 => out.tcp_user_timeout,
        KVS_TCP_USER_TIMEOUT_OFF => Duration::ZERO,
        ms => Duration::from_millis(u64::from(ms)),
    };
    out.socket_buffer = match config.socket_buffer_bytes {
        0 => out.socket_buffer,
        KVS_SOCKET_BUFFER_SYSTEM => None,
        bytes => Some(bytes as usize),
    };
    out.resend_unconfirmed_sdp = !config.report_unconfirmed_sdp;
    if config.max_inbound_frame_len > 0 {
        out.max_inbound_frame_len = config.max_inbound_frame_len as usize;
    }
    out.ca_bundle = config_str(config.ca_bundle_path, "ca_bundle_path", 4096)?.map(std::path::PathBuf::from);
    out.presigned_url = presigned_url;
    if config.signer_callback.is_some() {
        out.signer =
            Some(Arc::new(super::signer::CallbackSigner { lane: Arc::downgrade(lane), pending: Default::default() }));
    }
    if config.signer_timeout_ms > 0 {
        out.signer_timeout = Duration::from_millis(u64::from(config.signer_timeout_ms));
    }
    out.user_agent_suffix =
        config_str(config.user_agent_suffix, "user_agent_suffix", crate::aws::http::MAX_USER_AGENT_SUFFIX_LEN)?;
    out.fill_from_presigned_url();
    out.proxy = proxy_config(config)?;
    if config.use_control_plane {
        out.channel_name = channel_name;
        if config.connect_timeout_ms == 0 {
            // Room for a cold start: up to three control-plane calls, then TLS.
            out.connect_timeout = Duration::from_secs(15);
        }
        out.aws = Some(super::aws::aws_config(config, &out.region, out.connect_timeout, lane)?);
    }
    out.validate().map_err(|e| fail_client(&e))?;
    Ok(out)
}

/// Makes a client from `config`; nothing is opened until `kvs_client_connect`.
///
/// Ownership: `config` and its strings are borrowed for the call. `config.userdata`
/// is taken over: `config.free_userdata` is called exactly once, on the calling
/// thread before this returns if it fails, otherwise after the client's last
/// callback (the one exception: a `struct_size` below the first versioned
/// layout, where the library cannot know where `free_userdata` is). On success `*out_client` receives a client the caller owns; free it
/// with `kvs_client_free`. `*out_client` is untouched on failure.
///
/// Threading: any thread, callbacks included (it starts the library's threads on
/// first use).
///
/// Errors: KVS_ERR_NULL_PARAMETER (also for a viewer without `client_id` or a presigned URL, and
/// `tags` NULL with a `tag_count`), KVS_ERR_INVALID_UTF8,
/// KVS_ERR_INVALID_CONFIG (including a bad `endpoint`, `control_plane_url` or `region`, an
/// unreadable `ca_bundle_path`, `message_ttl_s` outside 5-120, a `presigned_url` without its
/// expiry or with `use_control_plane`, a `user_agent_suffix` outside 1-256 printable ASCII
/// characters, tags beyond the service's limits or without `create_channel`, a bad `proxy_url`
/// or, with `proxy_from_env`, a bad HTTPS_PROXY (the text never shows the password), a bad
/// `iot_credentials_endpoint`, `iot_role_alias` or `iot_thing_name`, an IoT certificate, key or CA
/// file that is missing or unusable), KVS_ERR_CREDENTIALS (`use_control_plane` without usable
/// credentials), KVS_ERR_SHUTDOWN, KVS_ERR_FORKED, KVS_ERR_RUNTIME.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_new(config: *const kvs_client_config, out_client: *mut *mut kvs_client) -> kvs_result {
    boundary(|| {
        require_non_null!(config, "config");
        // SAFETY: checked non-NULL; the caller passes a config of struct_size bytes.
        let config = match unsafe { read_config(config) } {
            Ok(config) => config,
            Err(code) => return code,
        };
        let config = &config;
        // From here on, every return path drops `callbacks` (or the lane holding
        // them) unreleased, and so frees userdata on this thread.
        let callbacks = Callbacks::from_config(config);
        require_non_null!(out_client, "out_client");
        if let Err(e) = runtime::handle() {
            return fail_runtime(e);
        }
        if dispatch::start().is_err() {
            return fail(KVS_ERR_RUNTIME, "the callback thread could not be started");
        }
        let backlog = Arc::new(Backlog::new(
            default_if_zero(config.callback_backlog_messages, KVS_DEFAULT_CALLBACK_BACKLOG_MESSAGES),
            default_if_zero(config.callback_backlog_bytes, KVS_DEFAULT_CALLBACK_BACKLOG_BYTES),
        ));
        let lane = Lane::new(callbacks, Arc::clone(&backlog));
        let client_config = match client_config(config, &lane) {
            Ok(c) => c,
            Err(code) => return code,
        };
        let for_sink = Arc::clone(&lane);
        let sink: EventSink = Arc::new(move |event| {
            let bytes = event_size(&event);
            let kind = match event {
                ClientEvent::Status(_) | ClientEvent::State(_) => Kind::Report,
                _ => Kind::Inbound,
            };
            for_sink.post(kind, bytes, Box::new(move |callbacks| callbacks.deliver(event)));
        });
        let client = match Client::with_backlog(client_config, sink, backlog) {
            Ok(c) => c,
            Err(e) => return fail_client(&e),
        };
        let handle = Arc::new(ClientHandle { client, lane, closed: AtomicBool::new(false) });
        // SAFETY: checked non-NULL; the caller provides a writable pointer.
        unsafe { *out_client = register(handle) };
        KVS_OK
    })
}

/// Opens the connection and blocks until it is open, or fails with the reason
/// within the configured connect timeout. `on_state` sees CONNECTING, then
/// CONNECTED or DISCONNECTED.
///
/// Ownership: `client` is borrowed for the call.
/// Threading: blocks; call it from an application thread. From a callback or a
/// library thread it returns KVS_ERR_WOULD_DEADLOCK.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_ALREADY_CONNECTED,
/// KVS_ERR_INVALID_CONFIG, KVS_ERR_TIMEOUT, KVS_ERR_NETWORK, KVS_ERR_TLS, KVS_ERR_NOT_FOUND,
/// KVS_ERR_ACCESS_DENIED, KVS_ERR_LIMIT_EXCEEDED, KVS_ERR_CONNECT_REFUSED, KVS_ERR_HANDSHAKE,
/// KVS_ERR_CANCELLED (`kvs_client_disconnect` stopped it), through a proxy
/// KVS_ERR_PROXY_UNREACHABLE, KVS_ERR_PROXY_AUTH_REQUIRED, KVS_ERR_PROXY_REFUSED,
/// KVS_ERR_PROXY_CLOSED, and through the control plane
/// KVS_ERR_SERVICE_INVALID_ARGUMENT, KVS_ERR_RESOURCE_IN_USE, KVS_ERR_SERVICE,
/// KVS_ERR_BAD_RESPONSE, KVS_ERR_CREDENTIALS, and from the AWS IoT credentials provider
/// KVS_ERR_IOT_CERTIFICATE_REFUSED, KVS_ERR_IOT_ROLE_ALIAS_NOT_FOUND, KVS_ERR_IOT_FORBIDDEN (its
/// throttling is KVS_ERR_LIMIT_EXCEEDED, an untrusted endpoint KVS_ERR_TLS); with a
/// `signer_callback` KVS_ERR_SIGNER_FAILED, KVS_ERR_SIGNER_TOO_LONG, KVS_ERR_SIGNER_INVALID_URL,
/// KVS_ERR_SIGNER_NOT_WSS; with a `presigned_url` KVS_ERR_PRESIGNED_URL_EXPIRED;
/// KVS_ERR_WOULD_DEADLOCK, KVS_ERR_SHUTDOWN (also when `kvs_shutdown` interrupts it),
/// KVS_ERR_RUNTIME.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_connect(client: *const kvs_client) -> kvs_result {
    boundary(|| {
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        match runtime::block_on(handle.client.connect()) {
            Ok(Ok(())) => KVS_OK,
            Ok(Err(ClientError::Cancelled)) if runtime::is_shut_down() => {
                fail(KVS_ERR_SHUTDOWN, "kvs_shutdown stopped the library while the client was connecting")
            }
            Ok(Err(e)) => fail_client(&e),
            Err(e) => fail_runtime(e),
        }
    })
}

/// Starts connecting in the background and returns at once. Unlike
/// `kvs_client_connect`, a failed first attempt is retried like any later drop
/// (state KVS_STATE_RECONNECTING), forever, until `kvs_client_disconnect` or
/// `kvs_client_free`. Sends are accepted from now on and wait in the queue until
/// the socket is open.
///
/// Ownership: `client` is borrowed for the call. Threading: any thread,
/// callbacks included.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_ALREADY_CONNECTED,
/// KVS_ERR_INVALID_CONFIG, KVS_ERR_TLS (the TLS settings could not be built), KVS_ERR_CREDENTIALS,
/// KVS_ERR_SHUTDOWN, KVS_ERR_RUNTIME.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_start(client: *const kvs_client) -> kvs_result {
    boundary(|| {
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        let runtime = match runtime::handle() {
            Ok(runtime) => runtime,
            Err(e) => return fail_runtime(e),
        };
        let _entered = runtime.enter();
        match handle.client.start() {
            Ok(()) => KVS_OK,
            Err(e) => fail_client(&e),
        }
    })
}

/// A snapshot of a client's counters (`kvs_client_get_metrics`). Times are
/// microseconds unless named otherwise. Fields are only ever added at the end;
/// the library writes no more than the caller's `sizeof` of it.
#[repr(C)]
pub struct kvs_client_metrics {
    /// A `kvs_state` value.
    pub state: u32,
    /// Sockets opened, the first included.
    pub connects: u64,
    /// Sockets opened after a drop, a GO_AWAY or the age limit.
    pub reconnects: u64,
    /// Failed connect attempts.
    pub connect_failures: u64,
    /// Unix time (ms) of the last successful connect; 0 if none.
    pub last_connect_unix_ms: u64,
    /// Phases of the last successful connect.
    pub last_control_plane_us: u64,
    pub last_tls_us: u64,
    pub last_websocket_us: u64,
    /// Sends confirmed: the service's TCP acknowledged their last byte (on
    /// Linux; elsewhere: written). Each accepted send counts once, here or in
    /// `messages_failed`.
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Sends waiting in the queue now.
    pub messages_queued: u64,
    /// Sends reported failed through `on_status` with origin LOCAL.
    pub messages_failed: u64,
    pub pings_sent: u64,
    pub go_aways: u64,
    /// Wait before the next reconnect attempt (ms); 0 when connected.
    pub current_backoff_ms: u64,
    /// Service clock minus local clock (ms), learnt from the service.
    pub clock_skew_ms: i64,
    /// Times the client stopped reading its socket because its callback
    /// backlog was full.
    pub backpressure_pauses: u64,
    /// Callbacks of this client waiting to run now.
    pub callbacks_queued: u64,
    /// Bytes of early ICE candidates held now, waiting for their peer's SDP.
    pub early_candidates_held_bytes: u64,
    /// Early candidates delivered before their peer's SDP because the hold
    /// was full.
    pub early_candidates_overflowed: u64,
    /// Sockets failed by the kernel because the peer stopped acknowledging
    /// (`tcp_user_timeout_ms`).
    pub dead_link_detections: u64,
    /// Frames written again on a new socket because the old one failed before
    /// the service's TCP acknowledged them.
    pub messages_resent: u64,
    /// Frames on the current socket not acknowledged by the service's TCP yet.
    pub messages_unconfirmed: u64,
    /// Successful JoinStorageSession / JoinStorageSessionAsViewer calls.
    pub storage_joins: u64,
    /// Duration of the last successful join call, in microseconds.
    pub last_join_latency_us: u64,
    /// From the start of the last join to the storage session's offer, in
    /// microseconds; 0 until an offer came.
    pub time_to_storage_offer_us: u64,
}

/// The smallest `out_size` of `kvs_client_get_metrics_sized`: the fields up to
/// `clock_skew_ms`, the layout of the first versioned release.
const METRICS_BASE_SIZE: usize = std::mem::offset_of!(kvs_client_metrics, clock_skew_ms) + size_of::<i64>();

/// Fills the first `out_size` bytes of `*out_metrics` with the client's
/// counters. Pass `sizeof(kvs_client_metrics)`: the header's inline
/// `kvs_client_get_metrics(client, out)` does, so that a binary built against
/// an older, smaller struct never gets more bytes than it has.
///
/// Ownership: `client` is borrowed; `out_metrics` is caller-owned memory of
/// `out_size` bytes, written on success only. Threading: any thread, callbacks
/// included.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_INVALID_ARGUMENT
/// (`out_size` below the first versioned layout).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_get_metrics_sized(
    client: *const kvs_client,
    out_metrics: *mut kvs_client_metrics,
    out_size: usize,
) -> kvs_result {
    boundary(|| {
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        require_non_null!(out_metrics, "out_metrics");
        if out_size < METRICS_BASE_SIZE {
            return fail(
                KVS_ERR_INVALID_ARGUMENT,
                format!("out_size {out_size} is below the smallest kvs_client_metrics ({METRICS_BASE_SIZE} bytes)"),
            );
        }
        let m = handle.client.metrics();
        let metrics = kvs_client_metrics {
            state: state_code(m.state),
            connects: m.connects,
            reconnects: m.reconnects,
            connect_failures: m.connect_failures,
            last_connect_unix_ms: m.last_connect_unix_ms,
            last_control_plane_us: m.last_control_plane_us,
            last_tls_us: m.last_tls_us,
            last_websocket_us: m.last_websocket_us,
            messages_sent: m.messages_sent,
            messages_received: m.messages_received,
            messages_queued: m.messages_queued,
            messages_failed: m.messages_failed,
            pings_sent: m.pings_sent,
            go_aways: m.go_aways,
            current_backoff_ms: m.current_backoff_ms,
            clock_skew_ms: m.clock_skew_ms,
            backpressure_pauses: m.backpressure_pauses,
            callbacks_queued: m.events_queued,
            early_candidates_held_bytes: m.early_candidates_held_bytes,
            early_candidates_overflowed: m.early_candidates_overflowed,
            dead_link_detections: m.dead_link_detections,
            messages_resent: m.messages_resent,
            messages_unconfirmed: m.messages_unconfirmed,
            storage_joins: m.storage_joins,
            last_join_latency_us: m.last_join_latency_us,
            time_to_storage_offer_us: m.time_to_storage_offer_us,
        };
        // SAFETY: checked non-NULL; the caller passes `out_size` writable bytes.
        unsafe { copy_prefix(&metrics, out_metrics, out_size) };
        KVS_OK
    })
}

/// Rust callers' equivalent of the header's inline `kvs_client_get_metrics`.
pub fn kvs_client_get_metrics(client: *const kvs_client, out_metrics: *mut kvs_client_metrics) -> kvs_result {
    kvs_client_get_metrics_sized(client, out_metrics, size_of::<kvs_client_metrics>())
}

/// Closes the connection: sends a close frame, waits up to one second for the
/// service, and reports every send still queued as failed through `on_status`.
/// Returns KVS_OK when not connected.
///
/// Ownership: `client` is borrowed for the call.
/// Threading: blocks; from a callback or a library thread it returns
/// KVS_ERR_WOULD_DEADLOCK.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_WOULD_DEADLOCK,
/// KVS_ERR_SHUTDOWN, KVS_ERR_RUNTIME.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_disconnect(client: *const kvs_client) -> kvs_result {
    boundary(|| {
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        match runtime::block_on(handle.client.disconnect(Duration::from_secs(1))) {
            Ok(()) => KVS_OK,
            Err(e) => fail_runtime(e),
        }
    })
}

/// The client's current `kvs_state`; KVS_STATE_DISCONNECTED for NULL.
///
/// Ownership: `client` is borrowed for the call. Threading: any thread, callbacks included.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_state(client: *const kvs_client) -> u32 {
    boundary(|| match peek_handle(client) {
        Ok(handle) => state_code(handle.client.state()),
        Err(_) => kvs_state::Disconnected as u32,
    })
}

/// Releases the client: later calls on it return KVS_ERR_CLOSED; received
/// messages and notices not delivered yet are discarded (their callbacks do
/// not run); the connection is closed (a close frame, at most one second for
/// the service); sends still queued are reported failed through `on_status`
/// and the state changes (CLOSING, DISCONNECTED) reach `on_state`, as with
/// `kvs_client_disconnect`; a callback running now is waited for; then
/// `free_userdata` runs on the calling thread. After it returns, nothing of
/// this client calls into the application any more. It takes the running
/// callback's remaining time, about 3 seconds at most for the close, and the
/// time of those reports (at most one per queued send), whatever the inbound
/// backlog. Do not hold a lock that your callbacks take while calling it.
/// NULL is a no-op.
///
/// A `kvs_client *` names the client, it is not its address: a callback of
/// this client that runs while it is freed, or another thread, may still
/// pass `client` (every call then returns KVS_ERR_CLOSED, as after the free
/// and for a second free); a call already running on another thread when
/// the free begins keeps the client until it returns (the client is closed
/// under it). No call reads freed memory.
///
/// Ownership: consumes `client` on KVS_OK. On KVS_ERR_IN_CALLBACK or
/// KVS_ERR_WOULD_DEADLOCK nothing is released and the client stays valid. In a
/// forked child (KVS_ERR_FORKED) the client is left as it is (leaked) and the
/// call returns at once.
/// Threading: blocks; call it from an application thread, not from a callback.
///
/// Errors: KVS_ERR_IN_CALLBACK, KVS_ERR_WOULD_DEADLOCK, KVS_ERR_FORKED, KVS_ERR_CLOSED (freed
/// already, or not a client).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_free(client: *mut kvs_client) -> kvs_result {
    boundary(|| {
        if client.is_null() {
            return KVS_OK;
        }
        if runtime::is_forked() {
            return fail_runtime(runtime::RuntimeError::Forked);
        }
        if dispatch::on_dispatcher() {
            return fail(
                KVS_ERR_IN_CALLBACK,
                "kvs_client_free was called from a callback; call it from an application thread",
            );
        }
        if runtime::on_library_thread() {
            return fail_runtime(runtime::RuntimeError::WouldDeadlock);
        }
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        if handle.closed.swap(true, Ordering::AcqRel) {
            return fail(KVS_ERR_CLOSED, "kvs_client_free was called twice for this client");
        }
        handle.lane.begin_close();
        // After the shutdown of the runtime there is no task left to stop.
        let _ = runtime::block_on(handle.client.disconnect(Duration::from_secs(1)));
        handle.lane.close();
        handle.lane.callbacks().release();
        // Calls still running on other threads keep their references.
        dispatch::lock(&CLIENTS).remove(&client.addr());
        KVS_OK
    })
}

fn action_of(code: u32) -> Option<Action> {
    match code {
        1 => Some(Action::SdpOffer),
        2 => Some(Action::SdpAnswer),
        3 => Some(Action::IceCandidate),
        _ => None,
    }
}

/// Shared tail of every send: checks ids and the output buffer, sends, writes
/// the correlation id out.
#[allow(clippy::too_many_arguments)]
fn send_common(
    handle: &ClientHandle,
    action: Action,
    recipient: *const c_char,
    payload: &[u8],
    correlation_id: *const c_char,
    out_correlation_id: *mut c_char,
    out_capacity: usize,
    out_len: *mut usize,
) -> kvs_result {
    // SAFETY (both): the header requires NUL-terminated strings or NULL.
    let recipient = match unsafe { arg_str(recipient, "recipient_client_id", MAX_ID_LEN, KVS_ERR_ID_TOO_LONG) } {
        Ok(r) => r,
        Err(code) => return code,
    };
    let correlation = match unsafe { arg_str(correlation_id, "correlation_id", MAX_ID_LEN, KVS_ERR_ID_TOO_LONG) } {
        Ok(c) => c,
        Err(code) => return code,
    };
    if runtime::is_shut_down() {
        return fail_runtime(runtime::RuntimeError::ShutDown);
    }
    if !out_correlation_id.is_null() && out_capacity < KVS_CORRELATION_ID_CAPACITY {
        if !out_len.is_null() {
            // SAFETY: checked non-NULL; the caller guarantees it is writable.
            // The needed length: the longest id (the buffer's NUL excluded).
            unsafe { *out_len = KVS_CORRELATION_ID_CAPACITY - 1 };
        }
        return fail(
            KVS_ERR_BUFFER_TOO_SMALL,
            format!(
                "out_correlation_id holds {out_capacity} bytes; KVS_CORRELATION_ID_CAPACITY ({KVS_CORRELATION_ID_CAPACITY}) are needed"
            ),
        );
    }
    match handle.client.send_payload(action, recipient, payload, correlation) {
        // SAFETY: the caller passes a buffer of out_capacity bytes (checked above) or NULL.
        Ok(id) => unsafe { write_out_str(&id, out_correlation_id, out_capacity, out_len) },
        Err(e) => fail_client(&e),
    }
}

/// Reads a required payload-sized string argument.
fn payload_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, kvs_result> {
    // SAFETY: the header requires a NUL-terminated string; the scan is bounded.
    match unsafe { c_str(ptr, KVS_MAX_SDP_LEN) } {
        Ok("") => Err(fail(KVS_ERR_PAYLOAD_EMPTY, format!("{name} is empty"))),
        Ok(s) => Ok(s),
        Err(StrError::Null) => Err(fail(KVS_ERR_NULL_PARAMETER, format!("{name} must not be NULL"))),
        Err(StrError::TooLong) => Err(fail(
            KVS_ERR_PAYLOAD_TOO_LARGE,
            format!("{name} is longer than {KVS_MAX_SDP_LEN} bytes; it cannot fit the 10,000-character payload limit"),
        )),
        Err(StrError::Utf8) => Err(fail(KVS_ERR_INVALID_UTF8, format!("{name} is not valid UTF-8"))),
    }
}

#[allow(clippy::too_many_arguments)]
fn send_sdp(
    client: *const kvs_client,
    action: Action,
    recipient: *const c_char,
    sdp: *const c_char,
    correlation_id: *const c_char,
    out_correlation_id: *mut c_char,
    out_capacity: usize,
    out_len: *mut usize,
) -> kvs_result {
    let handle = match open_handle(client) {
        Ok(handle) => handle,
        Err(code) => return code,
    };
    let sdp = match payload_str(sdp, "sdp") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let sdp_type =
        if action == Action::SdpOffer { crate::protocol::SdpType::Offer } else { crate::protocol::SdpType::Answer };
    let json = crate::protocol::SessionDescription { sdp_type, sdp: sdp.to_owned() }.to_json();
    send_common(&handle, action, recipient, json.as_bytes(), correlation_id, out_correlation_id, out_capacity, out_len)
}

/// Sends an SDP offer. The library wraps `sdp` as `{"type":"offer","sdp":...}`,
/// base64-encodes it and queues it; it never blocks on the network.
///
/// - `recipient_client_id`: the viewer, required when the master sends; must be
///   NULL when a viewer sends.
/// - `correlation_id`: NULL to let the library make one (unique per client), or
///   1–256 characters of `[a-zA-Z0-9_.-]`.
/// - `out_correlation_id`: NULL, or a buffer of at least
///   KVS_CORRELATION_ID_CAPACITY bytes that receives the id used (NUL-terminated);
///   `out_len` (nullable) receives its length.
///
/// Any failure the service reports for this message comes back through
/// `on_status` with that correlation id, as does a send the library could not
/// write. Validation failures return a code and send nothing.
///
/// Ownership: every pointer is borrowed for the call. Threading: any thread,
/// callbacks included.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_INVALID_UTF8,
/// KVS_ERR_INVALID_ARGUMENT, KVS_ERR_PAYLOAD_EMPTY, KVS_ERR_PAYLOAD_TOO_LARGE, KVS_ERR_ID_EMPTY,
/// KVS_ERR_ID_TOO_LONG, KVS_ERR_ID_PATTERN, KVS_ERR_RECIPIENT_REQUIRED,
/// KVS_ERR_RECIPIENT_NOT_ALLOWED, KVS_ERR_NOT_CONNECTED, KVS_ERR_QUEUE_FULL,
/// KVS_ERR_BUFFER_TOO_SMALL, KVS_ERR_SHUTDOWN.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_send_sdp_offer(
    client: *const kvs_client,
    recipient_client_id: *const c_char,
    sdp: *const c_char,
    correlation_id: *const c_char,
    out_correlation_id: *mut c_char,
    out_capacity: usize,
    out_len: *mut usize,
) -> kvs_result {
    boundary(|| {
        send_sdp(
            client,
            Action::SdpOffer,
            recipient_client_id,
            sdp,
            correlation_id,
            out_correlation_id,
            out_capacity,
            out_len,
        )
    })
}

/// Sends an SDP answer; arguments, ownership and threading as
/// `kvs_send_sdp_offer` (the payload is `{"type":"answer","sdp":...}`).
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_INVALID_UTF8,
/// KVS_ERR_INVALID_ARGUMENT, KVS_ERR_PAYLOAD_EMPTY, KVS_ERR_PAYLOAD_TOO_LARGE, KVS_ERR_ID_EMPTY,
/// KVS_ERR_ID_TOO_LONG, KVS_ERR_ID_PATTERN, KVS_ERR_RECIPIENT_REQUIRED,
/// KVS_ERR_RECIPIENT_NOT_ALLOWED, KVS_ERR_NOT_CONNECTED, KVS_ERR_QUEUE_FULL,
/// KVS_ERR_BUFFER_TOO_SMALL, KVS_ERR_SHUTDOWN.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_send_sdp_answer(
    client: *const kvs_client,
    recipient_client_id: *const c_char,
    sdp: *const c_char,
    correlation_id: *const c_char,
    out_correlation_id: *mut c_char,
    out_capacity: usize,
    out_len: *mut usize,
) -> kvs_result {
    boundary(|| {
        send_sdp(
            client,
            Action::SdpAnswer,
            recipient_client_id,
            sdp,
            correlation_id,
            out_correlation_id,
            out_capacity,
            out_len,
        )
    })
}

/// Sends an ICE candidate built from `candidate` (its `candidate` line is
/// required; `sdp_mid`, `sdp_mline_index` and `username_fragment` are optional).
/// Other arguments, ownership and threading as `kvs_send_sdp_offer`.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_INVALID_UTF8,
/// KVS_ERR_INVALID_ARGUMENT, KVS_ERR_PAYLOAD_EMPTY, KVS_ERR_PAYLOAD_TOO_LARGE, KVS_ERR_ID_EMPTY,
/// KVS_ERR_ID_TOO_LONG, KVS_ERR_ID_PATTERN, KVS_ERR_RECIPIENT_REQUIRED,
/// KVS_ERR_RECIPIENT_NOT_ALLOWED, KVS_ERR_NOT_CONNECTED, KVS_ERR_QUEUE_FULL,
/// KVS_ERR_BUFFER_TOO_SMALL, KVS_ERR_SHUTDOWN (KVS_ERR_INVALID_ARGUMENT: `sdp_mline_index` above
/// 65535, `sdp_mid` or `username_fragment` over 256 bytes).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_send_ice_candidate(
    client: *const kvs_client,
    recipient_client_id: *const c_char,
    candidate: *const kvs_ice_candidate,
    correlation_id: *const c_char,
    out_correlation_id: *mut c_char,
    out_capacity: usize,
    out_len: *mut usize,
) -> kvs_result {
    boundary(|| {
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        require_non_null!(candidate, "candidate");
        // SAFETY: checked non-NULL; borrowed for the call.
        let fields = unsafe { &*candidate };
        let line = match payload_str(fields.candidate, "candidate->candidate") {
            Ok(s) => s,
            Err(code) => return code,
        };
        // SAFETY (both): NUL-terminated strings or NULL, as the header requires.
        let sdp_mid = match unsafe { arg_str(fields.sdp_mid, "sdp_mid", MAX_ID_LEN, KVS_ERR_INVALID_ARGUMENT) } {
            Ok(s) => s,
            Err(code) => return code,
        };
        let ufrag = match unsafe {
            arg_str(fields.username_fragment, "username_fragment", MAX_ID_LEN, KVS_ERR_INVALID_ARGUMENT)
        } {
            Ok(s) => s,
            Err(code) => return code,
        };
        let sdp_mline_index = match fields.sdp_mline_index {
            i if i < 0 => None,
            i => match u16::try_from(i) {
                Ok(i) => Some(i),
                Err(_) => {
                    return fail(KVS_ERR_INVALID_ARGUMENT, format!("sdp_mline_index {i} is above 65535"));
                }
            },
        };
        let ice = IceCandidate {
            candidate: line.to_owned(),
            sdp_mid: sdp_mid.map(str::to_owned),
            sdp_mline_index,
            username_fragment: ufrag.map(str::to_owned),
        };
        let json = ice.to_json();
        send_common(
            &handle,
            Action::IceCandidate,
            recipient_client_id,
            json.as_bytes(),
            correlation_id,
            out_correlation_id,
            out_capacity,
            out_len,
        )
    })
}

/// Sends an already-built payload (for example JSON the application made) as
/// `action` (KVS_MESSAGE_TYPE_SDP_OFFER, _SDP_ANSWER or _ICE_CANDIDATE). The
/// library base64-encodes `payload_len` bytes at `payload`. Other arguments,
/// ownership and threading as `kvs_send_sdp_offer`.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_INVALID_UTF8,
/// KVS_ERR_INVALID_ARGUMENT, KVS_ERR_PAYLOAD_EMPTY, KVS_ERR_PAYLOAD_TOO_LARGE, KVS_ERR_ID_EMPTY,
/// KVS_ERR_ID_TOO_LONG, KVS_ERR_ID_PATTERN, KVS_ERR_RECIPIENT_REQUIRED,
/// KVS_ERR_RECIPIENT_NOT_ALLOWED, KVS_ERR_NOT_CONNECTED, KVS_ERR_QUEUE_FULL,
/// KVS_ERR_BUFFER_TOO_SMALL, KVS_ERR_SHUTDOWN (KVS_ERR_INVALID_ARGUMENT: an `action` other than the
/// three).
#[unsafe(no_mangle)]
pub extern "C" fn kvs_send_message(
    client: *const kvs_client,
    action: u32,
    recipient_client_id: *const c_char,
    payload: *const u8,
    payload_len: usize,
    correlation_id: *const c_char,
    out_correlation_id: *mut c_char,
    out_capacity: usize,
    out_len: *mut usize,
) -> kvs_result {
    boundary(|| {
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        if payload_len == 0 {
            return fail(KVS_ERR_PAYLOAD_EMPTY, "payload_len is 0");
        }
        require_non_null!(payload, "payload");
        let Some(action) = action_of(action) else {
            return fail(
                KVS_ERR_INVALID_ARGUMENT,
                format!("action {action} is not SDP_OFFER (1), SDP_ANSWER (2) or ICE_CANDIDATE (3)"),
            );
        };
        // Compared before multiplying: a garbage length must not wrap around.
        if payload_len > MAX_PAYLOAD_LEN / 4 * 3 {
            return fail(
                KVS_ERR_PAYLOAD_TOO_LARGE,
                format!("a {payload_len}-byte payload is over 10,000 characters once base64-encoded"),
            );
        }
        // SAFETY: non-NULL and, as the header requires, readable for payload_len bytes.
        let bytes = unsafe { std::slice::from_raw_parts(payload, payload_len) };
        send_common(
            &handle,
            action,
            recipient_client_id,
            bytes,
            correlation_id,
            out_correlation_id,
            out_capacity,
            out_len,
        )
    })
}

/// The media storage configuration of the client's channel (WebRTC ingestion:
/// DescribeMediaStorageConfiguration), asked through the client's control
/// plane (`use_control_plane`: its credentials, signer, proxy and CA bundle),
/// independent of its connection. `*out_enabled` is set to whether storage is
/// enabled; the stream ARN (empty when there is none) is written
/// NUL-terminated into `stream_arn` (`capacity` bytes) and its length into
/// `out_len` (if not NULL); a NULL `stream_arn` asks for the length only.
/// Each call is one DescribeMediaStorageConfiguration request (the service
/// allows 5 a second per channel): a buffer of 1025 bytes holds any ARN, so no
/// size query is needed.
///
/// Ownership: every pointer is borrowed for the call.
/// Threading: blocks; call it from an application thread. From a callback or a
/// library thread it returns KVS_ERR_WOULD_DEADLOCK.
///
/// Errors: KVS_ERR_NULL_PARAMETER, KVS_ERR_FORKED, KVS_ERR_CLOSED, KVS_ERR_INVALID_CONFIG (the
/// client has no control plane), KVS_ERR_BUFFER_TOO_SMALL, KVS_ERR_TIMEOUT, KVS_ERR_NETWORK,
/// KVS_ERR_TLS, KVS_ERR_NOT_FOUND, KVS_ERR_ACCESS_DENIED, KVS_ERR_LIMIT_EXCEEDED,
/// KVS_ERR_SERVICE_INVALID_ARGUMENT, KVS_ERR_SERVICE, KVS_ERR_BAD_RESPONSE, KVS_ERR_CREDENTIALS,
/// KVS_ERR_PROXY_UNREACHABLE, KVS_ERR_PROXY_AUTH_REQUIRED, KVS_ERR_PROXY_REFUSED,
/// KVS_ERR_PROXY_CLOSED, KVS_ERR_SIGNER_FAILED, KVS_ERR_WOULD_DEADLOCK, KVS_ERR_SHUTDOWN,
/// KVS_ERR_RUNTIME.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_get_media_storage(
    client: *const kvs_client,
    out_enabled: *mut bool,
    stream_arn: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> kvs_result {
    boundary(|| {
        require_non_null!(out_enabled, "out_enabled");
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        match runtime::block_on(handle.client.media_storage()) {
            Ok(Ok(configuration)) => {
                let arn = configuration.stream_arn.unwrap_or_default();
                // SAFETY: `stream_arn` is NULL or has `capacity` bytes; `out_len` NULL or writable.
                let written = unsafe { write_out_str(&arn, stream_arn, capacity, out_len) };
                if written == KVS_OK {
                    // SAFETY: checked non-NULL; the caller guarantees it is writable.
                    unsafe { *out_enabled = configuration.enabled };
                }
                written
            }
            Ok(Err(e)) => fail_client(&e),
            Err(e) => fail_runtime(e),
        }
    })
}

/// Enables media storage of the client's channel for the Kinesis video stream
/// `stream_arn` (`arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/DIGITS`), or
/// disables it (`enabled` false; `stream_arn` may then be NULL):
/// UpdateMediaStorageConfiguration through the client's control plane, as
/// `kvs_client_get_media_storage`. A client with `media_storage` AUTO follows
/// the change on its next connect.
///
/// Ownership: `stream_arn` is borrowed for the call.
/// Threading: blocks; call it from an application thread. From a callback or a
/// library thread it returns KVS_ERR_WOULD_DEADLOCK.
///
/// Errors: KVS_ERR_NULL_PARAMETER (`stream_arn` NULL with `enabled`), KVS_ERR_INVALID_UTF8,
/// KVS_ERR_INVALID_ARGUMENT (`stream_arn` not a stream ARN), KVS_ERR_FORKED, KVS_ERR_CLOSED,
/// KVS_ERR_INVALID_CONFIG (the client has no control plane), KVS_ERR_TIMEOUT, KVS_ERR_NETWORK,
/// KVS_ERR_TLS, KVS_ERR_NOT_FOUND, KVS_ERR_ACCESS_DENIED, KVS_ERR_LIMIT_EXCEEDED,
/// KVS_ERR_SERVICE_INVALID_ARGUMENT, KVS_ERR_RESOURCE_IN_USE, KVS_ERR_SERVICE, KVS_ERR_BAD_RESPONSE,
/// KVS_ERR_CREDENTIALS, KVS_ERR_PROXY_UNREACHABLE, KVS_ERR_PROXY_AUTH_REQUIRED,
/// KVS_ERR_PROXY_REFUSED, KVS_ERR_PROXY_CLOSED, KVS_ERR_SIGNER_FAILED, KVS_ERR_WOULD_DEADLOCK,
/// KVS_ERR_SHUTDOWN, KVS_ERR_RUNTIME.
#[unsafe(no_mangle)]
pub extern "C" fn kvs_client_set_media_storage(
    client: *const kvs_client,
    enabled: bool,
    stream_arn: *const c_char,
) -> kvs_result {
    boundary(|| {
        // SAFETY: NUL-terminated or NULL, as the header requires.
        let stream = match unsafe { arg_str(stream_arn, "stream_arn", MAX_ARN_LEN, KVS_ERR_INVALID_ARGUMENT) } {
            Ok(stream) => stream.map(str::to_owned),
            Err(code) => return code,
        };
        if enabled && stream.is_none() {
            return fail(KVS_ERR_NULL_PARAMETER, "stream_arn must not be NULL to enable media storage");
        }
        if let Some(stream) = &stream
            && let Err(e) = crate::protocol::validate_channel_arn(stream)
        {
            return fail(KVS_ERR_INVALID_ARGUMENT, format!("stream_arn: {e}"));
        }
        let handle = match open_handle(client) {
            Ok(handle) => handle,
            Err(code) => return code,
        };
        let configuration = MediaStorageConfiguration { enabled, stream_arn: stream };
        match runtime::block_on(handle.client.set_media_storage(&configuration)) {
            Ok(Ok(())) => KVS_OK,
            Ok(Err(e)) => fail_client(&e),
            Err(e) => fail_runtime(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::ffi::result::validation_code;

    #[test]
    fn validation_codes_are_distinct_per_rule() {
        use crate::protocol::{Field, ValidationError};
        let codes = [
            validation_code(&ValidationError::Missing(Field::CorrelationId)),
            validation_code(&ValidationError::TooLong { field: Field::RecipientClientId, max: 256, len: 300 }),
            validation_code(&ValidationError::BadPattern(Field::RecipientClientId)),
            validation_code(&ValidationError::Missing(Field::MessagePayload)),
            validation_code(&ValidationError::TooLong { field: Field::MessagePayload, max: 10_000, len: 10_004 }),
            validation_code(&ValidationError::MasterWithoutRecipient),
            validation_code(&ValidationError::ViewerWithRecipient),
        ];
        for (i, a) in codes.iter().enumerate() {
            for b in &codes[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
