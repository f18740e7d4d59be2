//! Local emulator of the Kinesis Video Streams WebRTC signaling service: the
//! WebSocket data plane (spec §1.3, §3, §4, §6, §7.1), the control-plane HTTP API
//! and GetIceServerConfig (§8), SigV4 verification (§2), optional TLS, quotas,
//! connection limits (§9.2, §9.3) and fault injection for tests — all on one port.
//!
//! It is an independent implementation of the service built only on
//! [`crate::protocol`]; it shares nothing with the client (not even the SigV4
//! code: verification here is written by hand with `hmac` and `sha2`).
//!
//! # What is served where
//!
//! | request | meaning |
//! | --- | --- |
//! | `GET` + WebSocket upgrade at `/`, `/m-<hex>`, `/v-<hex>` | ConnectAsMaster / ConnectAsViewer (`X-Amz-ChannelARN`, `X-Amz-ClientId`, SigV4 query) |
//! | `POST /createSignalingChannel` | CreateSignalingChannel |
//! | `POST /describeSignalingChannel` | DescribeSignalingChannel |
//! | `POST /getSignalingChannelEndpoint` | GetSignalingChannelEndpoint |
//! | `POST /deleteSignalingChannel` | DeleteSignalingChannel |
//! | `POST /listSignalingChannels` | ListSignalingChannels |
//! | `POST /updateSignalingChannel` | UpdateSignalingChannel (message TTL; `CurrentVersion` checked) |
//! | `POST /TagResource`, `/UntagResource`, `/ListTagsForResource` | the channel's tags (at most 50) |
//! | `POST /describeMediaStorageConfiguration` | DescribeMediaStorageConfiguration (`Status`, `StreamARN` once one was given) |
//! | `POST /updateMediaStorageConfiguration` | UpdateMediaStorageConfiguration (below) |
//! | `POST /r-<hex>/v1/get-ice-server-config` | GetIceServerConfig on the HTTPS channel endpoint |
//! | `POST /w-<hex>/joinStorageSession`, `/w-<hex>/joinStorageSessionAsViewer` | the joins on the WEBRTC endpoint (below) |
//! | `GET /admin/stats`, `POST /admin/...` | test controls, below (loopback peers, others only with the admin token: [`AdminAccess`]) |
//! | `GET /viewer?channel=NAME` | a browser viewer page that shows the master's video (`viewer` module; with auth on, the emulator presigns the page's WebSocket URL itself, for loopback peers only) |
//!
//! GetSignalingChannelEndpoint returns endpoints that point back at the emulator,
//! using the host the request was sent to (its `Host` header, so a client that
//! reached the emulator as `localhost:PORT` or by a LAN address gets endpoints it
//! can reach): WSS `ws://HOST/m-<hex>` for MASTER, `ws://HOST/v-<hex>` for VIEWER
//! (`wss://` with TLS), HTTPS `http://HOST/r-<hex>` (`https://` with TLS). `<hex>`
//! is an 8-digit label per channel. The `m-` path admits only masters (an upgrade
//! with `X-Amz-ClientId` is refused with 400 InvalidArgumentException), the `v-`
//! path only viewers (without `X-Amz-ClientId`: 400); `/` admits both and decides
//! by the presence of `X-Amz-ClientId`, as before. Any hex label is accepted: the
//! channel comes from `X-Amz-ChannelARN`.
//!
//! Every HTTP answer carries `Date` (from the emulator's clock, which a test may
//! shift with [`Emulator::set_clock_offset`]) and `x-amzn-RequestId`. Errors are
//! AWS rest-json errors: status, `x-amzn-ErrorType`, and a body
//! `{"__type": CODE, "message": TEXT, "Message": TEXT}`. Unknown paths or methods
//! get 404 `UnknownOperationException`; malformed JSON 400 `SerializationException`;
//! constraint violations 400 `InvalidArgumentException`.
//!
//! # Authentication
//!
//! With [`EmulatorConfig::auth`] set, every upgrade and control-plane call must be
//! signed (SigV4, service `kinesisvideo`, the emulator's region) with one of the
//! configured access keys: the upgrade by presigned query parameters (or an
//! `Authorization` header), the HTTP calls by an `Authorization` header. Session
//! tokens are accepted as they come (signed in the query, or as an unsigned
//! `x-amz-security-token` header). Any failure is 403 `AccessDeniedException`
//! (also on the upgrade, with the same JSON body) with the service's texts:
//! `The security token included in the request is invalid.` (unknown key),
//! `The request signature we calculated does not match the signature you
//! provided...` followed by the canonical request and string to sign the emulator
//! expected, `Signature expired: ... is now earlier than ...` and `Signature not
//! yet current: ... is still later than ...` (header dates more than 5 minutes
//! off either way; presigned dates more than 5 minutes ahead, or older than their
//! `X-Amz-Expires`, which may be up to 604800), `Credential should be scoped to a
//! valid region, not '...'.`, `Missing Authentication Token`. A presigned URL
//! must use the empty-payload hash (not `UNSIGNED-PAYLOAD`). The admin endpoints
//! are not SigV4-signed: they answer loopback peers, and others only with the
//! admin token ([`AdminAccess`]).
//!
//! # AWS IoT credentials provider
//!
//! With [`EmulatorConfig::iot`], a second listener (always TLS, mutual) serves
//! `GET /role-aliases/ROLE_ALIAS/credentials` as the AWS IoT credentials
//! provider does (the exchange is recorded in [`crate::aws::iot`]): it
//! requires a client certificate issued by its device CA (generated at start,
//! or [`IotCa::Files`]), answers unknown role aliases with 404, a thing name
//! not attached to an issued certificate with 403, and otherwise issues
//! temporary keys (`ASIA…` with a session token) valid for
//! [`IotConfig::credential_lifetime`] on the emulator's clock. SigV4 checks are
//! then on: issued keys are accepted (with their session token) until they
//! expire, then refused with 403 `ExpiredTokenException` `The security token
//! included in the request is expired`; revoked ones as invalid tokens. The
//! endpoint's server certificate is signed by the device CA, so clients trust
//! [`Emulator::iot_ca_path`] for it. At most [`MAX_ISSUED`] keys are remembered.
//!
//! # Admin endpoint (fault injection and limits)
//!
//! JSON in, JSON out, on the same port; the same operations exist as [`Emulator`]
//! methods. A *target* selects current (not replaced) connections; every field
//! is optional and an empty object means all connections:
//! `{"channel": NAME_OR_ARN, "role": "MASTER"|"VIEWER", "client_id": ID}`.
//!
//! | request | body | effect | answer |
//! | --- | --- | --- | --- |
//! | `GET /admin/stats` | — | [`EmulatorStats`] as JSON (snake_case fields, `control_plane` object) | stats |
//! | `POST /admin/drop` | target | end the connections at once: no close frame, TCP closed | `{"connections": N}` |
//! | `POST /admin/close` | target + `"code"` (default 1001), `"reason"` | close frame, then close | `{"connections": N}` |
//! | `POST /admin/go-away` | target + `"grace_ms"` | `{"messageType":"GO_AWAY"}`, then a 1001 close after the grace (default [`Limits::go_away_grace`]) | `{"connections": N}` |
//! | `POST /admin/reconnect-ice-server` | target | `{"messageType":"RECONNECT_ICE_SERVER"}` (the socket stays open) | `{"connections": N}` |
//! | `POST /admin/refuse-connections` | `"duration_ms"` (required), `"status"` (default 503), `"reset": true` | upgrades in that window get that HTTP error (type by status: 503 `ServiceUnavailable`, 500 `InternalFailure`, 429 `ThrottlingException`, ...), or with `reset` a TCP close without any response | `{}` |
//! | `POST /admin/control-plane-errors` | `"status"` (default 500), `"error_type"`, `"count"`, `"duration_ms"`, `"operations": ["DescribeSignalingChannel", ...]` | control-plane calls (GetIceServerConfig included) answered with that error; ends after `count` failures or `duration_ms`, whichever first, or when cleared | `{}` |
//! | `POST /admin/delay-frames` | `"delay_ms"` (0 ends it), `"duration_ms"` | every frame the emulator sends is written `delay_ms` after it was queued (order kept) | `{}` |
//! | `POST /admin/restart` | `"down_ms"` (default 1000) | restart, below; starts about 50 ms after the answer is sent | `202 {}` |
//! | `POST /admin/limits` | any of `"idle_timeout_ms"`, `"max_connection_age_ms"`, `"go_away_grace_ms"`, `"quotas"` | change [`Limits`]; open connections follow the new values | the limits |
//! | `POST /admin/clock` | `"offset_ms"` (signed) | shift the emulator's clock for SigV4 checks and `Date` headers | `{}` |
//! | `POST /admin/clear` | — | end every fault (refusal, control-plane errors, frame delay, clock offset) | `{}` |
//! | `POST /admin/iot/issue-device` | `"thing_name"` (required) | a device certificate and key signed by the IoT device CA ([`Emulator::issue_iot_device`]) | `{"thing_name", "certificate_pem", "private_key_pem"}` |
//! | `POST /admin/iot/revoke` | — | revoke every key the IoT endpoint issued so far ([`Emulator::revoke_iot_credentials`]) | `{"credentials": N}` |
//! | `GET /admin/storage-sessions` | — | every channel's latest storage session ([`StorageSessionReport`], snake_case) | `{"sessions": [...]}` |
//! | `POST /admin/storage-peer` | `"channel"` (name or ARN, required), `"client_id"` (an id, or `null` for the built-in peer) | attach an external storage peer; the current session ends | `{}` |
//! | `POST /admin/storage-drop-offers` | `"count"` (required) | the built-in peers send no offer for the next `count` joins | `{}` |
//!
//! Who may call it: [`AdminAccess`] (loopback peers, with a loopback `Host` and
//! no `Origin` of another site; others with the admin token).
//!
//! A bad admin request gets 400 (`InvalidArgumentException`, or
//! `SerializationException` for a member of the wrong JSON type); an unknown
//! admin path 404 `UnknownOperationException`.
//!
//! Restart is done in-process, standing in for "the process exits and a new one
//! starts on the same port": every connection, WebSocket or HTTP, is ended at once with
//! no close frame, the listener is closed (connects are refused), stored messages
//! are dropped, and after `down` the same address is bound again. Channels, their
//! ARNs, credentials, limits and counters survive.
//!
//! # Limits and quotas
//!
//! [`Limits`]: a connection that sends nothing (no frame, ping or pong) for
//! `idle_timeout` (default 600 s) is closed with 1001 "idle timeout"; one older
//! than `max_connection_age` (default 3600 s) with 1001 "maximum connection
//! duration". With `quotas` on, each connection may send 5 SDP_OFFER, 5
//! SDP_ANSWER and 20 ICE_CANDIDATE a second (token buckets holding one second's
//! worth): an excess message is dropped and, if it carries a valid
//! `correlationId`, answered with a STATUS_RESPONSE `ClientLimitExceededException`
//! / `"400"`. Each channel admits 3 connects a second per role; an excess upgrade
//! is refused with 400 `ClientLimitExceededException`. [`EmulatorConfig::default`]
//! has quotas **off** (tests of other layers connect and send in bursts); the
//! binary has them on unless `--no-quotas`.
//!
//! # WebRTC ingestion (media storage)
//!
//! UpdateMediaStorageConfiguration takes `{ChannelARN, MediaStorageConfiguration:
//! {StreamARN, Status}}`: `Status` `ENABLED` or `DISABLED`; `StreamARN` follows
//! `arn:[a-z\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+`
//! and is required with `ENABLED`; a stream enabled on another channel is 400
//! `ResourceInUseException`, a 101st channel with storage 400
//! `ClientLimitExceededException`. With storage enabled, GetSignalingChannelEndpoint
//! answers `WEBRTC` in `Protocols` with `http://HOST/w-<hex>` (`https://` with TLS).
//!
//! `POST {WEBRTC}/joinStorageSession` `{"channelArn"}` and
//! `.../joinStorageSessionAsViewer` `{"channelArn", "clientId"}` answer 200 with
//! an empty body; an unknown channel is 404 `ResourceNotFoundException`, a
//! channel without storage or a bad member 400 `InvalidArgumentException`, more
//! than 2 joins a second per channel (50 per account) 400
//! `ClientLimitExceededException` while quotas are on (spec §7.4). A join starts
//! the channel's storage session if none is live. Its peer is, by default, the
//! built-in signaling-only peer: a virtual viewer with client id `storage-<n>` (n
//! counts sessions) that on every join sends the joining party (the master, or
//! the viewer) an SDP_OFFER (H.264 video and Opus audio, `recvonly`, trickle
//! ICE) with `senderClientId` = its id, then three ICE candidates; a master that
//! is not connected gets them when it connects within the message TTL. It
//! records the answers and candidates sent to it ([`Emulator::storage_sessions`],
//! `GET /admin/storage-sessions`). It takes no viewer slot and no fault targets it.
//! Its id is its own: a viewer connecting with the id of a live built-in peer
//! is refused (400 `ResourceInUseException`), and a new session skips an id
//! a viewer of the channel is connected with (it never replaces a viewer).
//!
//! An external peer (for instance a WebRTC stack that really receives the
//! media) replaces it with [`Emulator::attach_storage_peer`] or `POST
//! /admin/storage-peer`: it connects to the data plane as a viewer with the
//! attached client id, gets for each join an emulator-only frame
//! `{"messageType":"STORAGE_JOIN","channelArn":ARN,"role":"MASTER"}` (or
//! `"role":"VIEWER","clientId":ID` for a viewer's join), sends the master its
//! offer and candidates as a viewer would, and gets the master's answer and
//! candidates (addressed to its client id) like any viewer. It cannot reach
//! the viewers that joined (a viewer only talks to the master).
//!
//! While storage is enabled (spec §6.9), master and viewers do not talk peer
//! to peer: only messages between the master and the storage peer are routed,
//! a joined viewer's messages go to the built-in peer, and everything else is
//! dropped without a STATUS_RESPONSE ([`EmulatorStats::messages_blocked_by_storage`]).
//!
//! A session ends [`EmulatorConfig::storage_session_max_duration`] (1 h) after
//! it started or [`EmulatorConfig::storage_session_idle_timeout`] (3 min) after
//! its last join or message to the built-in peer (flags
//! `--storage-session-duration`, `--storage-session-idle`), when storage is
//! disabled, or when the peer changes; the next join starts a new one, with
//! a new id. Joins are not idempotent: each one sends a new offer.
//!
//! # Threading
//!
//! [`Emulator::start`] spawns its tasks on the tokio runtime it is called from.
//! One task accepts TCP connections (and performs restarts); each connection gets
//! an HTTP task (hyper, after the TLS handshake when TLS is on), and each admitted
//! WebSocket gets a reader task plus a writer task fed by an unbounded queue, so
//! that routing never waits for a slow reader. Channel state lives behind one
//! `std::sync::Mutex`, held only for map updates and queue pushes, never across
//! an `.await`; faults behind another.
//!
//! # Choices where the spec is silent
//!
//! * A replaced master or viewer connection is closed with code 1000 and reason
//!   [`REPLACED_REASON`]; frames it sends before the close completes are dropped.
//! * Store-and-forward keys the overwrite rule by (sender, recipient, action): an
//!   undelivered SDP_OFFER (or SDP_ANSWER) from one sender to one recipient is
//!   removed when a newer one arrives, and the newer one joins the end of the queue,
//!   so delivered messages keep their send order. ICE candidates accumulate.
//! * A master's message to a viewer that never connected is stored for the TTL like
//!   any other (the service cannot know whether that viewer is about to connect);
//!   no STATUS_RESPONSE is sent for it, and it expires silently.
//! * Expired messages are discarded lazily, when the channel is next touched by a
//!   store or a connect; [`EmulatorStats::messages_expired`] counts them then.
//! * The C SDK's extra `IceServerList` key in an SDP_OFFER is not forwarded.
//! * A frame longer than [`EmulatorConfig::max_frame_len`] closes the connection
//!   with code 1009 (message too big): tungstenite stops reading a connection after
//!   a size error, so the frame cannot be skipped.
//! * A STATUS_RESPONSE is sent only when the `correlationId` itself is valid.
//! * Channels are `ACTIVE` as soon as CreateSignalingChannel returns (never
//!   `CREATING`), and gone as soon as DeleteSignalingChannel returns (never
//!   `DELETING`): their connections get a 1001 "channel deleted" close and later
//!   upgrades 404. Pre-created channels and CreateSignalingChannel without a TTL
//!   use [`EmulatorConfig::message_ttl`] (60 s by default); the TTL is reported
//!   in whole seconds, rounded up.
//! * GetSignalingChannelEndpoint without `SingleMasterChannelEndpointConfiguration`
//!   answers for role MASTER and protocols WSS and HTTPS; asking for `WEBRTC`
//!   on a channel without media storage is 400 InvalidArgumentException.
//! * ListSignalingChannels lists by name; its `NextToken` is opaque (base64 of
//!   the last name listed).
//! * GetIceServerConfig returns two entries, each with the URIs
//!   `turn:HOST:PORT?transport=udp`, `turns:HOST:PORT?transport=udp` and
//!   `turns:HOST:PORT?transport=tcp` (HOST and PORT of the request's `Host`; no
//!   TURN server actually listens), a TURN-REST username
//!   `<expiry epoch seconds>:<base64 of "v1:" + channel ARN>`, a base64 password
//!   and `Ttl` [`EmulatorConfig::ice_server_ttl`] (300 s by default).
//! * Idle and age closes use 1001 (the close code the service was observed to
//!   use at its maximum age); GO_AWAY is `{"messageType":"GO_AWAY"}` and
//!   RECONNECT_ICE_SERVER `{"messageType":"RECONNECT_ICE_SERVER"}`.

mod admin;
mod channels;
mod clock;
mod connection;
mod control;
mod faults;
pub(crate) mod fuzzing;
mod http;
mod iot;
mod sigv4;
mod storage;
mod throttle;
mod tls;
mod viewer;

pub use faults::{ConnectRefusal, ControlPlaneFault, Limits, Operation, Target};
pub use iot::{DEFAULT_ROLE_ALIAS, DeviceCertificate, IotCa, IotConfig, MAX_ISSUED};
pub use storage::{STORAGE_JOIN, StorageSessionReport};
pub use tls::TlsSetting;

use channels::{Outgoing, PeerHandle, Registry};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::Message;

/// Close reason sent to a connection that a newer one with the same identity replaced.
pub const REPLACED_REASON: &str = "replaced by a newer connection";

/// How long [`Emulator::shutdown`] lets connections finish their close handshake.
const SHUTDOWN_GRACE: Duration = connection::CLOSE_HANDSHAKE_GRACE.saturating_mul(3);

/// How long a restart keeps trying to bind its address again.
const REBIND_PATIENCE: Duration = Duration::from_secs(5);

/// Settings of one emulator instance; see [`Default`] for the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Region written into channel ARNs (`[a-z0-9-]+`); SigV4 scopes must name it.
    pub region: String,
    /// Account id written into channel ARNs (digits).
    pub account: String,
    /// Channel names created at start (`[a-zA-Z0-9_.-]+`).
    pub channels: Vec<String>,
    /// Viewers allowed per channel at once; one more is refused (spec §7.1).
    pub max_viewers: usize,
    /// How long a message for an absent recipient is kept (spec §6.5), for the
    /// channels created at start and by CreateSignalingChannel without
    /// `MessageTtlSeconds`.
    pub message_ttl: Duration,
    /// Longest inbound WebSocket frame or message, in bytes; a longer one closes
    /// the connection with code 1009.
    pub max_frame_len: usize,
    /// Log connections, routing decisions and rejections to stderr.
    pub verbose: bool,
    /// Accepted (access key id, secret access key) pairs; `None` accepts every
    /// request, signed or not (default), unless `iot` is set. With `iot`, the
    /// list may be empty (only issued keys are accepted).
    pub auth: Option<Vec<(String, String)>>,
    /// Serve an AWS IoT credentials provider on a TLS listener of its own
    /// (see "AWS IoT credentials provider" in the module doc); its keys are
    /// then required and accepted by the SigV4 checks. `None` (default): no
    /// IoT endpoint.
    pub iot: Option<IotConfig>,
    /// Serve TLS (`wss://`, `https://`); `None` for plain TCP (default).
    pub tls: Option<TlsSetting>,
    /// Enforce the message and connect rate quotas (spec §7.1); default off.
    pub quotas: bool,
    /// Close a connection silent for this long (default 600 s, spec §9.2).
    pub idle_timeout: Duration,
    /// Close a connection this old (default 3600 s, spec §9.3).
    pub max_connection_age: Duration,
    /// Time between GO_AWAY and the close that follows it (default 60 s, spec §9.4).
    pub go_away_grace: Duration,
    /// `Ttl` of the TURN credentials GetIceServerConfig returns (default 300 s).
    pub ice_server_ttl: Duration,
    /// Keep the sender and correlation id of the last this many messages the
    /// emulator read and accepted (valid, within quota), for tests that check
    /// what arrived per sender ([`Emulator::received`]); 0 (default) keeps none.
    pub received_log: usize,
    /// Who may use the admin endpoint besides loopback peers: `None` (the
    /// default) serves it to loopback peers only; `Some(token)` also to other
    /// peers that send `Authorization: Bearer TOKEN`. See [`AdminAccess`].
    pub admin_token: Option<String>,
    /// A storage session ends this long after it started (default 3600 s,
    /// spec §7.4); the next join starts a new one.
    pub storage_session_max_duration: Duration,
    /// A storage session ends after this long without a join or a message to
    /// its built-in peer (default 180 s, spec §7.4).
    pub storage_session_idle_timeout: Duration,
}

/// Who the admin endpoint answers. It has no other protection (it can drop
/// connections, change limits, shift the clock), so a peer that is not on
/// loopback gets 403 `AccessDeniedException` unless it presents the token.
/// A loopback peer may be a web page in a local browser: without the token,
/// its request must also name a loopback host (`Host`: a 127/8 or `[::1]`
/// literal, or `localhost`), carry no `Origin` but an http(s) one on such a
/// host, and no `Sec-Fetch-Site: cross-site` (DNS rebinding, cross-origin
/// POSTs). With the token, an `Origin` of another host than `Host`, or
/// `cross-site`, is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminAccess {
    /// Loopback peers only (no `--admin-token`).
    LoopbackOnly,
    /// Loopback peers, and others with the admin token.
    LoopbackOrToken,
}

impl fmt::Display for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminAccess::LoopbackOnly => "loopback-only",
            AdminAccess::LoopbackOrToken => "loopback-or-token",
        })
    }
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: "us-west-2".to_owned(),
            account: "123456789012".to_owned(),
            channels: Vec::new(),
            max_viewers: 10,
            message_ttl: Duration::from_secs(60),
            max_frame_len: 64 * 1024,
            verbose: false,
            auth: None,
            iot: None,
            tls: None,
            quotas: false,
            idle_timeout: Duration::from_secs(600),
            max_connection_age: Duration::from_secs(3600),
            go_away_grace: Duration::from_secs(60),
            ice_server_ttl: Duration::from_secs(300),
            received_log: 0,
            admin_token: None,
            storage_session_max_duration: Duration::from_secs(3600),
            storage_session_idle_timeout: Duration::from_secs(180),
        }
    }
}

/// Calls per control-plane operation, in [`EmulatorStats::control_plane`].
/// Every request routed to the operation counts, refused ones included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControlPlaneCalls {
    /// `CreateSignalingChannel` calls.
    pub create_signaling_channel: u64,
    /// `DescribeSignalingChannel` calls.
    pub describe_signaling_channel: u64,
    /// `GetSignalingChannelEndpoint` calls.
    pub get_signaling_channel_endpoint: u64,
    /// `DeleteSignalingChannel` calls.
    pub delete_signaling_channel: u64,
    /// `ListSignalingChannels` calls.
    pub list_signaling_channels: u64,
    /// `DescribeMediaStorageConfiguration` calls.
    pub describe_media_storage_configuration: u64,
    /// `GetIceServerConfig` calls.
    pub get_ice_server_config: u64,
    /// `UpdateSignalingChannel` calls.
    pub update_signaling_channel: u64,
    /// `TagResource` calls.
    pub tag_resource: u64,
    /// `UntagResource` calls.
    pub untag_resource: u64,
    /// `ListTagsForResource` calls.
    pub list_tags_for_resource: u64,
    /// `UpdateMediaStorageConfiguration` calls.
    pub update_media_storage_configuration: u64,
    /// `JoinStorageSession` calls.
    pub join_storage_session: u64,
    /// `JoinStorageSessionAsViewer` calls.
    pub join_storage_session_as_viewer: u64,
}

impl ControlPlaneCalls {
    /// The count of one operation.
    pub fn get(&self, operation: Operation) -> u64 {
        match operation {
            Operation::CreateSignalingChannel => self.create_signaling_channel,
            Operation::DescribeSignalingChannel => self.describe_signaling_channel,
            Operation::GetSignalingChannelEndpoint => self.get_signaling_channel_endpoint,
            Operation::DeleteSignalingChannel => self.delete_signaling_channel,
            Operation::ListSignalingChannels => self.list_signaling_channels,
            Operation::DescribeMediaStorageConfiguration => self.describe_media_storage_configuration,
            Operation::GetIceServerConfig => self.get_ice_server_config,
            Operation::UpdateSignalingChannel => self.update_signaling_channel,
            Operation::TagResource => self.tag_resource,
            Operation::UntagResource => self.untag_resource,
            Operation::ListTagsForResource => self.list_tags_for_resource,
            Operation::UpdateMediaStorageConfiguration => self.update_media_storage_configuration,
            Operation::JoinStorageSession => self.join_storage_session,
            Operation::JoinStorageSessionAsViewer => self.join_storage_session_as_viewer,
        }
    }

    /// All operations together.
    pub fn total(&self) -> u64 {
        faults::OPERATIONS.iter().map(|operation| self.get(*operation)).sum()
    }
}

/// Counters since start, read with [`Emulator::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmulatorStats {
    /// WebSocket connections admitted and not yet closed (replaced ones included
    /// until their socket closes).
    pub open_connections: usize,
    /// Upgrade requests answered with an HTTP error (or a reset) instead of 101.
    pub upgrades_refused: u64,
    /// Messages handed to a connected recipient, live or from storage.
    pub messages_relayed: u64,
    /// Messages stored because their recipient was not connected.
    pub messages_stored: u64,
    /// Stored messages removed by a newer SDP_OFFER / SDP_ANSWER (spec §6.4).
    pub messages_replaced: u64,
    /// Stored messages discarded after the TTL.
    pub messages_expired: u64,
    /// STATUS_RESPONSE messages sent.
    pub status_responses_sent: u64,
    /// Inbound frames not routed: invalid JSON or fields, binary, oversized
    /// (throttled ones are counted in `messages_throttled` instead).
    pub frames_rejected: u64,
    /// Messages dropped by the per-connection rate quotas.
    pub messages_throttled: u64,
    /// Messages dropped because media storage is enabled on their channel and
    /// they were neither to nor from its storage session (spec §6.9).
    pub messages_blocked_by_storage: u64,
    /// Control-plane calls per operation.
    pub control_plane: ControlPlaneCalls,
    /// Control-plane calls answered with an injected error.
    pub control_plane_faults: u64,
    /// Requests (upgrades and calls) refused by SigV4 verification.
    pub auth_failures: u64,
    /// GO_AWAY messages sent.
    pub go_aways_sent: u64,
    /// RECONNECT_ICE_SERVER messages sent.
    pub reconnect_ice_servers_sent: u64,
    /// Connections ended without a close frame by a drop fault or a restart.
    pub connections_dropped: u64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Connections closed at the maximum connection age.
    pub max_age_closes: u64,
    /// Restarts completed.
    pub restarts: u64,
    /// Temporary keys issued by the IoT credentials endpoint.
    pub iot_credentials_issued: u64,
    /// TLS handshakes the IoT credentials endpoint refused (no client
    /// certificate, or one not issued by its device CA).
    pub iot_handshakes_refused: u64,
    /// Requests refused because their issued key had expired (403 `ExpiredTokenException`).
    pub expired_tokens_refused: u64,
}

/// The distinct `User-Agent` headers the emulator has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserAgents {
    /// On control-plane calls, GetIceServerConfig and IoT credentials requests.
    pub https: Vec<String>,
    /// On WebSocket upgrades (admitted or refused).
    pub websocket: Vec<String>,
}

/// The most distinct user agents [`UserAgents`] keeps per kind; later new
/// ones are not recorded. (A free constant: cbindgen would put an associated
/// one into the C header.)
pub const MAX_USER_AGENTS: usize = 32;

impl UserAgents {
    fn record(&mut self, websocket: bool, user_agent: &str) {
        let list = if websocket { &mut self.websocket } else { &mut self.https };
        let mut cut = user_agent.len().min(512);
        while !user_agent.is_char_boundary(cut) {
            cut -= 1;
        }
        let user_agent = &user_agent[..cut];
        if list.len() < MAX_USER_AGENTS && !list.iter().any(|seen| seen == user_agent) {
            list.push(user_agent.to_owned());
        }
    }
}

/// Atomic backing store of [`EmulatorStats`].
#[derive(Default)]
struct Counters {
    open_connections: AtomicUsize,
    upgrades_refused: AtomicU64,
    messages_relayed: AtomicU64,
    messages_stored: AtomicU64,
    messages_replaced: AtomicU64,
    messages_expired: AtomicU64,
    status_responses_sent: AtomicU64,
    frames_rejected: AtomicU64,
    messages_throttled: AtomicU64,
    messages_blocked_by_storage: AtomicU64,
    control_plane: [AtomicU64; faults::OPERATIONS.len()],
    control_plane_faults: AtomicU64,
    auth_failures: AtomicU64,
    go_aways_sent: AtomicU64,
    reconnect_ice_servers_sent: AtomicU64,
    connections_dropped: AtomicU64,
    idle_timeouts: AtomicU64,
    max_age_closes: AtomicU64,
    restarts: AtomicU64,
    iot_credentials_issued: AtomicU64,
    iot_handshakes_refused: AtomicU64,
    expired_tokens_refused: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> EmulatorStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let calls = |operation: Operation| read(&self.control_plane[operation.index()]);
        EmulatorStats {
            open_connections: self.open_connections.load(Ordering::Relaxed),
            upgrades_refused: read(&self.upgrades_refused),
            messages_relayed: read(&self.messages_relayed),
            messages_stored: read(&self.messages_stored),
            messages_replaced: read(&self.messages_replaced),
            messages_expired: read(&self.messages_expired),
            status_responses_sent: read(&self.status_responses_sent),
            frames_rejected: read(&self.frames_rejected),
            messages_throttled: read(&self.messages_throttled),
            messages_blocked_by_storage: read(&self.messages_blocked_by_storage),
            control_plane: ControlPlaneCalls {
                create_signaling_channel: calls(Operation::CreateSignalingChannel),
                describe_signaling_channel: calls(Operation::DescribeSignalingChannel),
                get_signaling_channel_endpoint: calls(Operation::GetSignalingChannelEndpoint),
                delete_signaling_channel: calls(Operation::DeleteSignalingChannel),
                list_signaling_channels: calls(Operation::ListSignalingChannels),
                describe_media_storage_configuration: calls(Operation::DescribeMediaStorageConfiguration),
                get_ice_server_config: calls(Operation::GetIceServerConfig),
                update_signaling_channel: calls(Operation::UpdateSignalingChannel),
                tag_resource: calls(Operation::TagResource),
                untag_resource: calls(Operation::UntagResource),
                list_tags_for_resource: calls(Operation::ListTagsForResource),
                update_media_storage_configuration: calls(Operation::UpdateMediaStorageConfiguration),
                join_storage_session: calls(Operation::JoinStorageSession),
                join_storage_session_as_viewer: calls(Operation::JoinStorageSessionAsViewer),
            },
            control_plane_faults: read(&self.control_plane_faults),
            auth_failures: read(&self.auth_failures),
            go_aways_sent: read(&self.go_aways_sent),
            reconnect_ice_servers_sent: read(&self.reconnect_ice_servers_sent),
            connections_dropped: read(&self.connections_dropped),
            idle_timeouts: read(&self.idle_timeouts),
            max_age_closes: read(&self.max_age_closes),
            restarts: read(&self.restarts),
            iot_credentials_issued: read(&self.iot_credentials_issued),
            iot_handshakes_refused: read(&self.iot_handshakes_refused),
            expired_tokens_refused: read(&self.expired_tokens_refused),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A restart asked of the accept loop: the downtime and where to report.
type RestartRequest = (Duration, oneshot::Sender<io::Result<()>>);

/// State shared by every task of one emulator; owned through `Arc`.
struct Shared {
    config: EmulatorConfig,
    /// The bound address (real port).
    local_addr: SocketAddr,
    tls: Option<tls::Tls>,
    /// The IoT credentials endpoint, when configured.
    iot: Option<iot::IotState>,
    registry: Mutex<Registry>,
    counters: Counters,
    next_connection_id: AtomicU64,
    next_request_id: AtomicU64,
    /// Set to `true` once to stop every task.
    stop: watch::Sender<bool>,
    /// Bumped by a restart: every connection of an earlier epoch ends at once.
    epoch: watch::Sender<u64>,
    limits: watch::Sender<Limits>,
    faults: Mutex<faults::FaultState>,
    /// Storage sessions (spec §7.4); locked before `registry` when both are.
    storage: Mutex<storage::Sessions>,
    /// Control-plane rate limits (spec §7.2), applied while quotas are on.
    control_rates: Mutex<throttle::ControlPlaneRates>,
    /// Whether a frame delay may be in force (spares writers the fault lock).
    frame_delay_active: AtomicBool,
    /// Test shift of the emulator's clock, milliseconds.
    clock_offset_ms: AtomicI64,
    restarts: mpsc::UnboundedSender<RestartRequest>,
    /// Key of the TURN passwords.
    turn_secret: String,
    /// (sender, correlation id) of the last `config.received_log` messages read.
    received: Mutex<std::collections::VecDeque<(String, String)>>,
    /// Distinct `User-Agent` values seen, per kind of request.
    user_agents: Mutex<UserAgents>,
    /// HTTP and WebSocket tasks, awaited by [`Emulator::shutdown`].
    tasks: Mutex<JoinSet<()>>,
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data
/// consistent, so a panic elsewhere does not make it unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The emulator's own address as clients should write it: an unspecified bind
/// address (`0.0.0.0`, `::`) becomes the loopback address.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

impl Shared {
    /// Notes the `User-Agent` of a request (an upgrade when `websocket`).
    fn saw_user_agent(&self, websocket: bool, user_agent: &str) {
        lock(&self.user_agents).record(websocket, user_agent);
    }

    fn log(&self, message: fmt::Arguments<'_>) {
        if self.config.verbose {
            eprintln!("[kvs-emulator] {message}");
        }
    }

    /// Spawns a task that [`Emulator::shutdown`] waits for, reaping finished ones.
    fn spawn_tracked(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// The emulator's clock (real time plus the test offset), epoch seconds.
    fn now_epoch(&self) -> i64 {
        let millis = i64::try_from(epoch_millis()).unwrap_or(i64::MAX);
        millis.saturating_add(self.clock_offset_ms.load(Ordering::Relaxed)).div_euclid(1000)
    }

    fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    fn limits(&self) -> Limits {
        *self.limits.borrow()
    }

    /// A fresh `x-amzn-RequestId`, UUID-shaped.
    fn new_request_id(&self) -> String {
        let n = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let hash = |salt: u8| {
            let mut hasher = DefaultHasher::new();
            (salt, n, &self.turn_secret).hash(&mut hasher);
            hasher.finish()
        };
        let (a, b) = (hash(1), hash(2));
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Creates a channel; `Err` with the existing ARN when the name is taken.
    fn create_channel(&self, name: &str, message_ttl: Duration, tags: Vec<(String, String)>) -> Result<String, String> {
        let config = &self.config;
        let created = lock(&self.registry).create_channel(name, message_ttl, tags, |created_millis| {
            channel_arn(&config.region, &config.account, name, created_millis)
        });
        if let Ok(arn) = &created {
            self.log(format_args!("channel {name} is {arn}"));
        }
        created
    }

    /// Deletes a channel by ARN; its connections get a 1001 close.
    fn delete_channel(&self, arn: &str) -> bool {
        storage::end_channel(self, arn);
        let Some(peers) = lock(&self.registry).delete(arn) else {
            return false;
        };
        for peer in &peers {
            let _ = peer.outbox.send(Outgoing::now(connection::close_frame(1001, "channel deleted")));
        }
        self.log(format_args!("channel {arn} deleted; {} connections closed", peers.len()));
        true
    }

    fn select(&self, target: &Target) -> Vec<PeerHandle> {
        lock(&self.registry).select(target)
    }

    fn drop_connections(&self, target: &Target) -> usize {
        let peers = self.select(target);
        for peer in &peers {
            peer.kill.notify_one();
        }
        peers.len()
    }

    fn close_connections(&self, target: &Target, code: u16, reason: &str) -> usize {
        let peers = self.select(target);
        for peer in &peers {
            let _ = peer.outbox.send(Outgoing::now(connection::close_frame(code, reason)));
        }
        peers.len()
    }

    fn send_go_away(&self, target: &Target, grace: Option<Duration>) -> usize {
        let grace = grace.unwrap_or_else(|| self.limits().go_away_grace);
        let peers = self.select(target);
        for peer in &peers {
            if peer.outbox.send(Outgoing::GoAway(grace)).is_ok() {
                bump(&self.counters.go_aways_sent, 1);
            }
        }
        peers.len()
    }

    fn send_reconnect_ice_server(&self, target: &Target) -> usize {
        let peers = self.select(target);
        for peer in &peers {
            let frame = Message::text(r#"{"messageType":"RECONNECT_ICE_SERVER"}"#);
            if peer.outbox.send(Outgoing::now(frame)).is_ok() {
                bump(&self.counters.reconnect_ice_servers_sent, 1);
            }
        }
        peers.len()
    }

    fn refuse_connections(&self, duration: Duration, refusal: ConnectRefusal) {
        lock(&self.faults).refuse_connections(refusal, Instant::now() + duration);
    }

    fn fail_control_plane(&self, fault: ControlPlaneFault) {
        lock(&self.faults).fail_control_plane(fault, Instant::now());
    }

    fn delay_frames(&self, delay: Duration, duration: Option<Duration>) {
        let now = Instant::now();
        lock(&self.faults).delay_frames(delay, duration.map(|duration| now + duration));
        self.frame_delay_active.store(!delay.is_zero(), Ordering::Relaxed);
    }

    /// The delay in force for a frame queued now.
    fn frame_delay(&self) -> Duration {
        if !self.frame_delay_active.load(Ordering::Relaxed) {
            return Duration::ZERO;
        }
        let mut faults = lock(&self.faults);
        let delay = faults.frame_delay(Instant::now());
        if !faults.has_frame_delay() {
            self.frame_delay_active.store(false, Ordering::Relaxed);
        }
        delay
    }

    fn clear_faults(&self) {
        *lock(&self.faults) = faults::FaultState::default();
        self.frame_delay_active.store(false, Ordering::Relaxed);
        self.clock_offset_ms.store(0, Ordering::Relaxed);
    }

    async fn restart(&self, down: Duration) -> io::Result<()> {
        let (report, reported) = oneshot::channel();
        self.restarts.send((down, report)).map_err(|_| io::Error::other("the emulator has stopped"))?;
        reported.await.unwrap_or_else(|_| Err(io::Error::other("the emulator stopped during the restart")))
    }
}

/// `arn:aws:kinesisvideo:{region}:{account}:channel/{name}/{creation epoch millis}` (spec §1.6).
fn channel_arn(region: &str, account: &str, name: &str, created_millis: u128) -> String {
    format!("arn:aws:kinesisvideo:{region}:{account}:channel/{name}/{created_millis}")
}

fn epoch_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis())
}

/// Rejects settings that would make ARNs clients cannot connect with, or that
/// cannot work.
fn check_config(config: &EmulatorConfig) -> io::Result<()> {
    let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    let probe = channel_arn(&config.region, &config.account, "probe", 0);
    if crate::protocol::validate_channel_arn(&probe).is_err() {
        return invalid(format!(
            "region {:?} must be [a-z0-9-]+ and account {:?} must be digits",
            config.region, config.account
        ));
    }
    for name in &config.channels {
        let arn = channel_arn(&config.region, &config.account, name, 0);
        if crate::protocol::validate_channel_arn(&arn).is_err() {
            return invalid(format!("channel name {name:?} must be characters of a-z A-Z 0-9 _ . -"));
        }
    }
    if let Some(keys) = &config.auth {
        if keys.is_empty() && config.iot.is_none() {
            return invalid("auth needs at least one access key (None turns authentication off)".to_owned());
        }
        if keys.iter().any(|(id, secret)| id.is_empty() || id.contains('/') || secret.is_empty()) {
            return invalid("access key ids must be non-empty without '/', and secrets non-empty".to_owned());
        }
    }
    if config.ice_server_ttl < Duration::from_secs(1) {
        return invalid("ice_server_ttl must be at least one second".to_owned());
    }
    Ok(())
}

/// A running emulator. Its methods may be called from any thread; dropping it
/// stops the service in the background, [`Emulator::shutdown`] stops it and waits.
pub struct Emulator {
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl Shared {
    /// The state of an emulator serving `config` at `local_addr`, with no
    /// channel created yet; restart requests go to `restarts`.
    fn new(
        config: EmulatorConfig,
        local_addr: SocketAddr,
        tls: Option<tls::Tls>,
        iot: Option<iot::IotState>,
        restarts: mpsc::UnboundedSender<RestartRequest>,
        turn_secret: String,
    ) -> Shared {
        let limits = Limits {
            idle_timeout: config.idle_timeout,
            max_connection_age: config.max_connection_age,
            go_away_grace: config.go_away_grace,
            quotas: config.quotas,
        };
        Shared {
            local_addr,
            tls,
            iot,
            registry: Mutex::new(Registry::default()),
            counters: Counters::default(),
            next_connection_id: AtomicU64::new(1),
            next_request_id: AtomicU64::new(1),
            stop: watch::channel(false).0,
            epoch: watch::channel(0).0,
            limits: watch::channel(limits).0,
            faults: Mutex::new(faults::FaultState::default()),
            control_rates: Mutex::default(),
            storage: Mutex::default(),
            frame_delay_active: AtomicBool::new(false),
            clock_offset_ms: AtomicI64::new(0),
            restarts,
            turn_secret,
            received: Mutex::default(),
            user_agents: Mutex::default(),
            tasks: Mutex::new(JoinSet::new()),
            config,
        }
    }
}

impl Emulator {
    /// Binds `config.listen`, prepares TLS, creates `config.channels`, spawns the
    /// accept loop on the current tokio runtime and returns at once. Fails on a
    /// bind error, a certificate problem, or with `InvalidInput` for a region,
    /// account or channel name outside its pattern or unusable credentials.
    pub async fn start(config: EmulatorConfig) -> io::Result<Emulator> {
        check_config(&config)?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let tls = config.tls.as_ref().map(|setting| tls::load(setting, local_addr.port())).transpose()?;
        let (restarts, restart_requests) = mpsc::unbounded_channel();
        let turn_secret = format!("{}-{}-{}", std::process::id(), local_addr, epoch_millis());
        let (iot, iot_listener) = match config.iot.clone() {
            Some(iot) => {
                let (state, listener) = iot::IotState::bind(iot, format!("iot-{turn_secret}")).await?;
                (Some(state), Some(listener))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared::new(config, local_addr, tls, iot, restarts, turn_secret));
        for name in &shared.config.channels {
            let _ = shared.create_channel(name, shared.config.message_ttl, Vec::new());
        }
        shared.log(format_args!("listening on {local_addr}{}", if shared.is_tls() { " (TLS)" } else { "" }));
        if let Some(listener) = iot_listener {
            shared.log(format_args!("IoT credentials endpoint on {}", listener.local_addr()?));
            shared.spawn_tracked(iot::accept_loop(shared.clone(), listener));
        }
        let accept_task = tokio::spawn(http::accept_loop(shared.clone(), listener, restart_requests));
        Ok(Emulator { shared, accept_task })
    }

    /// The bound address (with the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The WebSocket endpoint base, `ws://127.0.0.1:PORT` or with TLS
    /// `wss://127.0.0.1:PORT` (no trailing slash, like the endpoints
    /// GetSignalingChannelEndpoint returns). Upgrades are accepted at `/` too.
    pub fn ws_endpoint(&self) -> String {
        let scheme = if self.shared.is_tls() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.authority())
    }

    /// The control-plane endpoint, `http://127.0.0.1:PORT` or with TLS
    /// `https://127.0.0.1:PORT`: what an AWS SDK takes as its endpoint URL.
    pub fn control_plane_url(&self) -> String {
        let scheme = if self.shared.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }

    /// `HOST:PORT` of the endpoints, or `HOST` alone for TLS on port 443 (the
    /// official C SDK refuses a control-plane URL that names a port).
    fn authority(&self) -> String {
        let addr = reachable(self.shared.local_addr);
        match addr.ip() {
            _ if !(self.shared.is_tls() && addr.port() == 443) => addr.to_string(),
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        }
    }

    /// The PEM clients should trust when TLS is on: the generated CA, or the
    /// contents of the given certificate file.
    pub fn ca_pem(&self) -> Option<&str> {
        self.shared.tls.as_ref().map(|tls| tls.ca_pem.as_str())
    }

    /// Where [`Emulator::ca_pem`] is on disk.
    pub fn ca_path(&self) -> Option<&Path> {
        self.shared.tls.as_ref().map(|tls| tls.ca_path.as_path())
    }

    /// The IoT credentials endpoint as clients configure it, `127.0.0.1:PORT`
    /// (always TLS); `None` without [`EmulatorConfig::iot`].
    pub fn iot_endpoint(&self) -> Option<String> {
        self.shared.iot.as_ref().map(|iot| reachable(iot.local_addr).to_string())
    }

    /// The PEM file of the device CA, which also signs the IoT endpoint's
    /// certificate: what IoT clients trust for the endpoint.
    pub fn iot_ca_path(&self) -> Option<&Path> {
        self.shared.iot.as_ref().map(|iot| iot.ca_path.as_path())
    }

    /// The device CA certificate, PEM.
    pub fn iot_ca_pem(&self) -> Option<&str> {
        self.shared.iot.as_ref().map(|iot| iot.ca_pem.as_str())
    }

    /// Issues a device certificate and key for `thing_name` (1-128 of
    /// `[a-zA-Z0-9:_-]`), signed by the device CA. `InvalidInput` for a bad
    /// name or without an IoT endpoint.
    pub fn issue_iot_device(&self, thing_name: &str) -> io::Result<DeviceCertificate> {
        match &self.shared.iot {
            Some(iot) => iot.issue_device(thing_name),
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "the emulator has no IoT endpoint")),
        }
    }

    /// Revokes every key the IoT endpoint issued so far (they are refused as
    /// invalid tokens from now on); returns how many.
    pub fn revoke_iot_credentials(&self) -> usize {
        self.shared.iot.as_ref().map_or(0, iot::IotState::revoke_all)
    }

    /// Creates a channel (with [`EmulatorConfig::message_ttl`]) and returns its
    /// ARN; for an existing name, returns the existing ARN. A name outside
    /// `[a-zA-Z0-9_.-]+` yields an ARN that every connect request rejects as
    /// malformed.
    pub fn create_channel(&self, name: &str) -> String {
        self.shared.create_channel(name, self.shared.config.message_ttl, Vec::new()).unwrap_or_else(|arn| arn)
    }

    /// The ARN of an existing channel.
    pub fn channel_arn(&self, name: &str) -> Option<String> {
        lock(&self.shared.registry).channel_arn(name)
    }

    /// Deletes a channel by name or ARN, as DeleteSignalingChannel does; `false`
    /// when there is no such channel.
    pub fn delete_channel(&self, name_or_arn: &str) -> bool {
        let arn = self.channel_arn(name_or_arn).unwrap_or_else(|| name_or_arn.to_owned());
        self.shared.delete_channel(&arn)
    }

    /// The tags of a channel (by name or ARN), in the order they were given
    /// to CreateSignalingChannel; `None` when there is no such channel.
    pub fn channel_tags(&self, name_or_arn: &str) -> Option<Vec<(String, String)>> {
        let registry = lock(&self.shared.registry);
        registry.by_name(name_or_arn).or_else(|| registry.by_arn(name_or_arn)).map(|info| info.tags)
    }

    /// The distinct `User-Agent` headers of the requests served so far (at
    /// most [`MAX_USER_AGENTS`] of each kind, each cut to 512 bytes).
    pub fn user_agents(&self) -> UserAgents {
        lock(&self.shared.user_agents).clone()
    }

    /// Sets a channel's media storage configuration, as
    /// UpdateMediaStorageConfiguration does but without its checks: `Some`
    /// stream ARN enables it, `None` disables it (ending its session). False
    /// when there is no such channel (name or ARN).
    pub fn set_media_storage(&self, channel: &str, stream_arn: Option<&str>) -> bool {
        let arn = self.channel_arn(channel).unwrap_or_else(|| channel.to_owned());
        let changed = lock(&self.shared.registry).modify(&arn, |info| {
            info.media_storage.enabled = stream_arn.is_some();
            if let Some(stream) = stream_arn {
                info.media_storage.stream_arn = Some(stream.to_owned());
            }
        });
        if stream_arn.is_none() {
            storage::end_channel(&self.shared, &arn);
        }
        changed.is_some()
    }

    /// The latest storage session of every channel that had one, by channel name.
    pub fn storage_sessions(&self) -> Vec<StorageSessionReport> {
        storage::reports(&self.shared)
    }

    /// Lets an external peer play the channel's storage session: it connects
    /// as a viewer with `client_id`, gets a [`STORAGE_JOIN`] frame on each
    /// join and sends the offer itself. `None` goes back to the built-in peer.
    /// The current session ends either way. False when there is no such channel.
    pub fn attach_storage_peer(&self, channel: &str, client_id: Option<&str>) -> bool {
        let Some(arn) =
            self.channel_arn(channel).or_else(|| lock(&self.shared.registry).by_arn(channel).map(|info| info.arn))
        else {
            return false;
        };
        storage::attach_peer(&self.shared, &arn, client_id.map(str::to_owned));
        true
    }

    /// The built-in storage peers send no offer for the next `count` joins
    /// (the joins still succeed): a client's retry can be tested. 0 ends it.
    pub fn drop_storage_offers(&self, count: u64) {
        storage::drop_offers(&self.shared, count);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EmulatorStats {
        self.shared.counters.snapshot()
    }

    /// Who the admin endpoint answers.
    pub fn admin_access(&self) -> AdminAccess {
        match self.shared.config.admin_token {
            None => AdminAccess::LoopbackOnly,
            Some(_) => AdminAccess::LoopbackOrToken,
        }
    }

    /// The messages read and accepted, oldest first, as (sender, correlation
    /// id): the sender is `master` or `viewer <client id>`, the id empty when
    /// the message had none. At most [`EmulatorConfig::received_log`] of the
    /// latest; restarts keep them.
    pub fn received(&self) -> Vec<(String, String)> {
        lock(&self.shared.received).iter().cloned().collect()
    }

    /// Ends the targeted connections at once, without a close frame (as a
    /// network failure would); returns how many.
    pub fn drop_connections(&self, target: &Target) -> usize {
        self.shared.drop_connections(target)
    }

    /// Sends the targeted connections a close frame with `code` and `reason`
    /// (reason cut to 123 bytes); returns how many.
    pub fn close_connections(&self, target: &Target, code: u16, reason: &str) -> usize {
        self.shared.close_connections(target, code, reason)
    }

    /// Sends the targeted connections GO_AWAY, then closes them with 1001
    /// after `grace` (default [`Limits::go_away_grace`]); returns how many.
    pub fn send_go_away(&self, target: &Target, grace: Option<Duration>) -> usize {
        self.shared.send_go_away(target, grace)
    }

    /// Sends the targeted connections RECONNECT_ICE_SERVER; returns how many.
    pub fn send_reconnect_ice_server(&self, target: &Target) -> usize {
        self.shared.send_reconnect_ice_server(target)
    }

    /// Refuses WebSocket upgrades for `duration`, as `refusal` says.
    pub fn refuse_connections(&self, duration: Duration, refusal: ConnectRefusal) {
        self.shared.refuse_connections(duration, refusal);
    }

    /// Answers control-plane calls with an error, as `fault` says (replacing an
    /// earlier control-plane fault).
    pub fn fail_control_plane(&self, fault: ControlPlaneFault) {
        self.shared.fail_control_plane(fault);
    }

    /// Holds every frame the emulator sends until `delay` after it was queued
    /// (order kept), for `duration` or until cleared; a zero delay ends it.
    pub fn delay_frames(&self, delay: Duration, duration: Option<Duration>) {
        self.shared.delay_frames(delay, duration);
    }

    /// Shifts the emulator's clock by `offset_ms` (positive: ahead of real
    /// time) for SigV4 date checks and the `Date` header.
    pub fn set_clock_offset(&self, offset_ms: i64) {
        self.shared.clock_offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.shared.limits()
    }

    /// Changes the limits; open connections follow the new values at once
    /// (their idle and age clocks keep running from their last frame and their
    /// start).
    pub fn set_limits(&self, limits: Limits) {
        self.shared.limits.send_replace(limits);
    }

    /// Ends every fault: refusal, control-plane errors, frame delay, clock offset.
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// Restarts in-process: ends every connection without a close frame, stops
    /// listening, drops stored messages, and after `down` listens again on the
    /// same address. Channels, limits and counters survive. Returns once the
    /// address is bound again.
    pub async fn restart(&self, down: Duration) -> io::Result<()> {
        self.shared.restart(down).await
    }

    /// Stops accepting, sends every WebSocket a close frame (1001, going away) and
    /// waits for the close handshakes (a peer that does not answer is dropped after
    /// a second); tasks still running after three seconds are aborted.
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        if let Err(error) = (&mut self.accept_task).await {
            self.shared.log(format_args!("accept loop ended abnormally: {error}"));
        }
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        let drained = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
            tasks.shutdown().await;
        }
        self.shared.log(format_args!("stopped"));
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}
