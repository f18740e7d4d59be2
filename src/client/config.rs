//! Client configuration.

use super::ClientError;
use super::connect::{host_and_port, redact_query};
use crate::aws::signer::{DEFAULT_SIGNER_TIMEOUT, MAX_SIGNED_URL_LEN};
use crate::aws::{ControlPlaneConfig, CreateChannel, ProxyConfig, RequestSigner};
use crate::protocol::{Role, validate_channel_arn, validate_client_id};
use percent_encoding::percent_decode_str;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use crate::tcp::{DEFAULT_SOCKET_BUFFER, DEFAULT_TCP_USER_TIMEOUT, MAX_SOCKET_BUFFER, MIN_SOCKET_BUFFER};

/// The default of [`ClientConfig::max_inbound_frame_len`] (64 KiB): six times
/// the largest message of the spec (a 10,000-character payload in its
/// envelope, spec §7.1), small enough to be buffered whole per socket on firmware.
pub const DEFAULT_MAX_INBOUND_FRAME_LEN: usize = 64 * 1024;
/// The least [`ClientConfig::max_inbound_frame_len`] accepted (16 KiB): the
/// largest message of the spec (about 10.6 KB) must fit.
pub const MIN_INBOUND_FRAME_LEN: usize = 16 * 1024;
/// The most [`ClientConfig::max_inbound_frame_len`] accepted (1 MiB): a socket
/// buffers a whole message before the client sees it.
pub const MAX_INBOUND_FRAME_LEN: usize = 1024 * 1024;
/// The default of [`ClientConfig::early_candidate_budget`] (256 KiB): about 250
/// candidates of a usual size (a 1 KB entry) held at once, over all peers.
pub const DEFAULT_EARLY_CANDIDATE_BUDGET: usize = 256 * 1024;

/// Everything a client needs to reach one signaling channel.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Master (one per channel) or viewer.
    pub role: Role,
    /// `arn:aws:kinesisvideo:REGION:ACCOUNT:channel/NAME/EPOCH`. With [`AwsConfig`]
    /// it may be empty when `channel_name` is set.
    pub channel_arn: String,
    /// The channel's name, resolved to its ARN through DescribeSignalingChannel
    /// (with [`AwsConfig`] only).
    pub channel_name: Option<String>,
    /// The viewer's `X-Amz-ClientId`; must be `None` for a master.
    pub client_id: Option<String>,
    /// The channel's data-plane endpoint for this role: `ws://host:port` or
    /// `wss://host` (no query string). Unused (may be empty) with [`AwsConfig`],
    /// which gets it from GetSignalingChannelEndpoint.
    pub endpoint: String,
    /// AWS region of the channel, e.g. `us-west-2`.
    pub region: String,
    /// Upper bound for one connect (TCP + TLS + WebSocket handshake).
    pub connect_timeout: Duration,
    /// Sends that may wait for the socket at once; one more is refused.
    pub send_queue_capacity: usize,
    /// The longest inbound message (and frame) in bytes, and so what one socket
    /// buffers at most before the client parses it. A longer one breaks the
    /// protocol: the connection is dropped (with a log line naming the size) and
    /// the client reconnects. Default [`DEFAULT_MAX_INBOUND_FRAME_LEN`] (64 KiB);
    /// [`MIN_INBOUND_FRAME_LEN`]..=[`MAX_INBOUND_FRAME_LEN`].
    pub max_inbound_frame_len: usize,
    /// How long a send may wait in the queue while the client reconnects before
    /// it is reported failed.
    pub send_queue_timeout: Duration,
    /// Reconnect backoff: the first retry waits up to `initial`, each later one up
    /// to twice the previous bound, never more than `max` (full jitter).
    pub backoff: Backoff,
    /// WebSocket ping interval; the service closes sockets idle for 10 minutes.
    pub ping_interval: Duration,
    /// A ping unanswered (no frame at all) for this long counts as a drop.
    pub pong_timeout: Duration,
    /// Dead-link deadline of every socket of the client (the WebSocket, the
    /// control-plane and GetIceServerConfig calls), enforced by the kernel: data
    /// written but not acknowledged by the peer for this long fails the socket
    /// (`TCP_USER_TIMEOUT`, Linux and Android), and TCP keepalive probes an idle
    /// socket after half of it, so that a silent dead peer is also noticed in
    /// about this time. A link that dies without a close or a reset (Wi-Fi or
    /// LTE gone) is then noticed in seconds, not after `ping_interval` +
    /// `pong_timeout`; the drop reads "the peer stopped acknowledging (TCP user
    /// timeout)" and counts in `Metrics::dead_link_detections`. Elsewhere only
    /// keepalive applies (an idle link; data in flight waits for the system's
    /// retransmission limit or the ping). Keepalive works in whole seconds
    /// (at least 1 s). Default [`DEFAULT_TCP_USER_TIMEOUT`] (5 s); zero turns
    /// both off (the system defaults apply, the ping remains).
    pub tcp_user_timeout: Duration,
    /// Bound of each socket's kernel receive and send buffers (`SO_RCVBUF`,
    /// `SO_SNDBUF`), so that a peer cannot make the kernel hold more for the
    /// client while it pauses reading: default [`DEFAULT_SOCKET_BUFFER`]
    /// (256 KiB), [`MIN_SOCKET_BUFFER`] to [`MAX_SOCKET_BUFFER`]; `None`
    /// leaves the system's autotuning (up to `tcp_rmem`'s maximum).
    pub socket_buffer: Option<usize>,
    /// Age at which the client opens a new socket and switches to it, before the
    /// service's own maximum connection duration ends the old one.
    pub max_connection_age: Duration,
    /// Outbound pacing per connection, to stay under the service quotas.
    pub pacing: Pacing,
    /// Hold ICE candidates that arrive before an SDP offer or answer from the same
    /// peer, and deliver them right after it. An offer this client writes to a
    /// peer makes that peer's candidates wait again, for its answer.
    pub buffer_early_candidates: bool,
    /// The most bytes of early candidates held at once, over all peers (each
    /// counted with its payload, parsed fields and sender id). Beyond it the
    /// oldest held candidate is delivered at once, before its peer's SDP and out
    /// of order, with a log line: a WebRTC stack copes with an early candidate
    /// (it may fail to add it), while a dropped one can cost the connection.
    /// Default [`DEFAULT_EARLY_CANDIDATE_BUDGET`] (256 KiB).
    pub early_candidate_budget: usize,
    /// What happens to an SDP offer or answer written to a socket that failed
    /// before the service's TCP acknowledged it: `true` (the default) writes it
    /// again on the next socket, in order, ahead of newer sends (the peer may
    /// then get it twice); `false` reports it through the status callback
    /// ([`super::StatusOrigin::Local`], `error_type` "Unconfirmed") and lets
    /// the application decide. ICE candidates are always written again (a
    /// WebRTC stack ignores a repeated candidate).
    pub resend_unconfirmed_sdp: bool,
    /// Connect through the control plane with SigV4 (the real service path).
    /// `None` connects to `endpoint` as it is, unsigned.
    pub aws: Option<AwsConfig>,
    /// A PEM file of CA certificates that replaces the built-in roots (the
    /// Mozilla roots with rustls, the system store with native-tls) for every
    /// connection of the client: the WebSocket, the control-plane and
    /// GetIceServerConfig calls. Only its certificates are trusted. A
    /// `ControlPlaneConfig::ca_bundle` that is set takes precedence over it
    /// (for all of those connections). Checked by [`ClientConfig::validate`].
    pub ca_bundle: Option<PathBuf>,
    /// Signing by a backend: presigns the WebSocket URL of every connect
    /// attempt (for `endpoint`, or for the endpoint the control plane
    /// returned) and, with [`AwsConfig`], signs every control-plane call, so
    /// the client needs no credentials. What it returns is checked (see
    /// [`crate::aws::signer`]); a failure is [`ClientError::Signer`], and the
    /// client retries with backoff like any failed connect.
    pub signer: Option<Arc<dyn RequestSigner>>,
    /// How long one signer call may take (default 10 s).
    pub signer_timeout: Duration,
    /// A ready presigned WebSocket URL and its expiry, instead of `endpoint`
    /// (without [`AwsConfig`]). `channel_arn` and a viewer's `client_id` may
    /// then be left empty: they are read from the URL's `X-Amz-ChannelARN`
    /// and `X-Amz-ClientId`. Once it has expired (local clock) or the service
    /// refuses it with 401/403, it is dropped: with a `signer` the client asks
    /// it for a new URL; without one the client stops with
    /// [`ClientError::PresignedUrlExpired`] (state `Disconnected`) instead of
    /// retrying a dead URL.
    pub presigned_url: Option<PresignedUrl>,
    /// Appended (after a space) to the library's `User-Agent`
    /// (`kvs-signaling/VERSION`) on every HTTPS call and WebSocket upgrade;
    /// 1-256 printable ASCII characters.
    pub user_agent_suffix: Option<String>,
    /// The HTTPS proxy of every connection of the client (the WebSocket, the
    /// control-plane and GetIceServerConfig calls): an HTTP `CONNECT` tunnel
    /// each, TLS to the service inside it. Default: direct connections. When
    /// set (a URL or `from_env`), it replaces `ControlPlaneConfig::proxy`.
    /// The environment, when `from_env` opts in, is read once, when the client
    /// is made. A bad URL is [`ClientError::InvalidConfig`]; failures through
    /// the proxy are [`ClientError::Proxy`]. See [`crate::aws::proxy`].
    pub proxy: ProxyConfig,
}

/// A presigned WebSocket URL made elsewhere (e.g. by the application's
/// backend) and when it stops working. `Debug` hides its query (the signature).
#[derive(Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    /// `wss://host[/path]?X-Amz-ChannelARN=...&X-Amz-Signature=...` (at most
    /// [`MAX_SIGNED_URL_LEN`] bytes).
    pub url: String,
    /// When it expires (`X-Amz-Date` + `X-Amz-Expires`).
    pub expires_at: SystemTime,
}

impl fmt::Debug for PresignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresignedUrl")
            .field("url", &redact_query(&self.url))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl PresignedUrl {
    /// The URL without its query: the endpoint it connects to.
    pub fn endpoint(&self) -> &str {
        redact_query(&self.url).trim_end_matches('/')
    }

    /// The decoded value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.url.split_once('?')?.1;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| percent_decode_str(value).decode_utf8_lossy().into_owned())
    }

    /// True once `now` has reached the expiry.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    fn check(&self) -> Result<(), ClientError> {
        let invalid = |why: String| Err(ClientError::InvalidConfig(format!("presigned URL: {why}")));
        if self.url.len() > MAX_SIGNED_URL_LEN {
            return invalid(format!("{} bytes; at most {MAX_SIGNED_URL_LEN} are accepted", self.url.len()));
        }
        if !self.url.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid("it holds a space, a control or a non-ASCII character".into());
        }
        host_and_port(&self.url)?;
        if !self.url.contains('?') {
            return invalid(format!("{:?} has no signed query", self.endpoint()));
        }
        Ok(())
    }
}

/// How a client reaches the service through its control plane.
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// Region, endpoint variant or override, CA bundle, credentials.
    pub control_plane: ControlPlaneConfig,
    /// Create the channel when DescribeSignalingChannel does not find it.
    pub create_channel: Option<CreateChannel>,
    /// How long resolved ARNs and endpoints stay cached.
    pub endpoint_cache_ttl: Duration,
    /// A file that keeps the endpoint cache across runs (a warm start makes no
    /// control-plane call).
    pub endpoint_cache_path: Option<PathBuf>,
    /// Fetch the ICE server configuration (TURN) and keep it fresh.
    pub ice_servers: bool,
    /// WebRTC ingestion (spec §6.9): whether the client joins the channel's
    /// storage session after each connect. Default [`MediaStorageMode::Off`].
    pub media_storage: MediaStorageMode,
    /// How long after a join the storage session's SDP offer is awaited
    /// before the client joins again (default 30 s, as the official C SDK).
    pub storage_offer_timeout: Duration,
}

/// Whether a client uses the channel's storage session (WebRTC ingestion).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaStorageMode {
    /// Never: no DescribeMediaStorageConfiguration, no join (the default, as
    /// the official C SDK's `useMediaStorage`).
    #[default]
    Off,
    /// As the channel says: DescribeMediaStorageConfiguration before each
    /// connect (the status may change); join when it is `ENABLED`.
    Auto,
    /// Always join, without asking the channel.
    On,
}

/// Shortest storage offer timeout (the join rate limit is 2 a second per channel).
pub const MIN_STORAGE_OFFER_TIMEOUT: Duration = Duration::from_secs(1);

impl AwsConfig {
    /// Checks what can be checked before any call: the control-plane URL, the
    /// CA bundle, the TTL of a channel to create.
    pub fn validate(&self) -> Result<(), ClientError> {
        let cp = &self.control_plane;
        crate::aws::resolve_control_plane(&cp.region, cp.variant, cp.endpoint_override.as_deref())?;
        if let Some(bundle) = &cp.ca_bundle {
            check_ca_bundle(bundle)?;
        }
        if let Some(ttl) = self.create_channel.as_ref().and_then(|c| c.message_ttl_secs)
            && !(5..=120).contains(&ttl)
        {
            return Err(ClientError::InvalidConfig(format!("message TTL {ttl} s is outside 5-120 s")));
        }
        if self.storage_offer_timeout < MIN_STORAGE_OFFER_TIMEOUT {
            return Err(ClientError::InvalidConfig(format!(
                "storage offer timeout {} ms is below {} ms",
                self.storage_offer_timeout.as_millis(),
                MIN_STORAGE_OFFER_TIMEOUT.as_millis()
            )));
        }
        if let Some(create) = &self.create_channel {
            crate::aws::check_tags(&create.tags).map_err(|e| ClientError::InvalidConfig(e.message().to_owned()))?;
        }
        Ok(())
    }

    /// Defaults: no channel creation, a one-hour in-memory cache, ICE servers
    /// fetched, media storage off (30 s offer timeout when on).
    pub fn new(control_plane: ControlPlaneConfig) -> AwsConfig {
        AwsConfig {
            control_plane,
            create_channel: None,
            endpoint_cache_ttl: Duration::from_secs(3600),
            endpoint_cache_path: None,
            ice_servers: true,
            media_storage: MediaStorageMode::Off,
            storage_offer_timeout: Duration::from_secs(30),
        }
    }
}

/// Reconnect backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before the first retry.
    pub initial: Duration,
    /// The longest wait between retries.
    pub max: Duration,
}

/// Messages per second per connection; 0 means unpaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// SDP offers and answers together (service quota: 5/s each kind).
    pub sdp_per_second: u32,
    /// ICE candidates (service quota: 20/s).
    pub ice_per_second: u32,
}

impl ClientConfig {
    /// A master's configuration with defaults for the rest (no control plane:
    /// `endpoint` is used as it is).
    pub fn master(channel_arn: &str, endpoint: &str) -> ClientConfig {
        ClientConfig {
            role: Role::Master,
            channel_arn: channel_arn.to_owned(),
            channel_name: None,
            client_id: None,
            endpoint: endpoint.to_owned(),
            region: region_of_arn(channel_arn).unwrap_or("us-west-2").to_owned(),
            connect_timeout: Duration::from_secs(5),
            send_queue_capacity: 256,
            max_inbound_frame_len: DEFAULT_MAX_INBOUND_FRAME_LEN,
            send_queue_timeout: Duration::from_secs(30),
            backoff: Backoff { initial: Duration::from_millis(200), max: Duration::from_secs(10) },
            ping_interval: Duration::from_secs(20),
            pong_timeout: Duration::from_secs(10),
            tcp_user_timeout: DEFAULT_TCP_USER_TIMEOUT,
            socket_buffer: Some(DEFAULT_SOCKET_BUFFER),
            max_connection_age: Duration::from_secs(55 * 60),
            pacing: Pacing { sdp_per_second: 5, ice_per_second: 20 },
            buffer_early_candidates: false,
            early_candidate_budget: DEFAULT_EARLY_CANDIDATE_BUDGET,
            resend_unconfirmed_sdp: true,
            aws: None,
            ca_bundle: None,
            signer: None,
            signer_timeout: DEFAULT_SIGNER_TIMEOUT,
            presigned_url: None,
            user_agent_suffix: None,
            proxy: ProxyConfig::default(),
        }
    }

    /// A configuration that connects with a ready presigned URL; the channel
    /// ARN and a viewer's client id are read from the URL. Add a `signer` to
    /// have new URLs made once it expires.
    pub fn presigned(role: Role, url: PresignedUrl) -> ClientConfig {
        let mut config = ClientConfig::master("", "");
        config.role = role;
        config.presigned_url = Some(url);
        config.fill_from_presigned_url();
        config
    }

    /// Takes what is left empty from the presigned URL: the endpoint, the
    /// channel ARN, a viewer's client id, the region (from the ARN).
    /// [`super::Client`] does it before [`ClientConfig::validate`].
    pub fn fill_from_presigned_url(&mut self) {
        let Some(presigned) = &self.presigned_url else { return };
        if self.endpoint.is_empty() {
            self.endpoint = presigned.endpoint().to_owned();
        }
        if self.channel_arn.is_empty()
            && let Some(arn) = presigned.query_param("X-Amz-ChannelARN")
        {
            if let Some(region) = region_of_arn(&arn) {
                self.region = region.to_owned();
            }
            self.channel_arn = arn;
        }
        if self.role == Role::Viewer && self.client_id.is_none() {
            self.client_id = presigned.query_param("X-Amz-ClientId");
        }
    }

    /// A viewer's configuration with defaults for the rest.
    pub fn viewer(channel_arn: &str, client_id: &str, endpoint: &str) -> ClientConfig {
        ClientConfig {
            role: Role::Viewer,
            client_id: Some(client_id.to_owned()),
            ..ClientConfig::master(channel_arn, endpoint)
        }
    }

    /// A configuration that bootstraps through the control plane: `channel` is a
    /// channel name or an ARN; `client_id` makes it a viewer.
    pub fn via_control_plane(channel: &str, client_id: Option<&str>, aws: AwsConfig) -> ClientConfig {
        let region = aws.control_plane.region.clone();
        let mut config = match client_id {
            Some(id) => ClientConfig::viewer("", id, ""),
            None => ClientConfig::master("", ""),
        };
        if channel.starts_with("arn:") {
            config.channel_arn = channel.to_owned();
        } else {
            config.channel_name = Some(channel.to_owned());
        }
        config.region = region;
        config.aws = Some(aws);
        config
    }

    /// Checks the configuration against the spec before anything is opened.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |text: String| Err(ClientError::InvalidConfig(text));
        let by_name = self.aws.is_some() && self.channel_arn.is_empty();
        if by_name {
            match &self.channel_name {
                Some(name) => {
                    if let Err(e) = crate::protocol::validate_id(crate::protocol::Field::ChannelName, name) {
                        return invalid(e.to_string());
                    }
                }
                None => return invalid("a channel name or a channel ARN is required".into()),
            }
        } else if let Err(e) = validate_channel_arn(&self.channel_arn) {
            return invalid(e.to_string());
        }
        match (self.role, &self.client_id) {
            (Role::Viewer, None) => return invalid("a viewer needs a client id".into()),
            (Role::Viewer, Some(id)) => {
                if let Err(e) = validate_client_id(id) {
                    return invalid(e.to_string());
                }
            }
            (Role::Master, Some(_)) => {
                return invalid("a master connects without a client id; leave it unset".into());
            }
            (Role::Master, None) => {}
        }
        if self.endpoint.contains(['?', '#']) || self.endpoint.contains(char::is_whitespace) {
            return invalid(format!(
                "endpoint {:?} must be a ws:// or wss:// URL without a query string or spaces",
                redact_query(&self.endpoint)
            ));
        }
        if self.aws.is_none() {
            host_and_port(&self.endpoint)?;
        }
        let region_ok = !self.region.is_empty()
            && self.region.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if !region_ok {
            return invalid(format!("region {:?} must match [a-z0-9-]+", self.region));
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect timeout must be above zero".into());
        }
        if self.send_queue_capacity == 0 {
            return invalid("send queue capacity must be above zero".into());
        }
        if !(MIN_INBOUND_FRAME_LEN..=MAX_INBOUND_FRAME_LEN).contains(&self.max_inbound_frame_len) {
            return invalid(format!(
                "maximum inbound frame length {} is outside {MIN_INBOUND_FRAME_LEN}-{MAX_INBOUND_FRAME_LEN} bytes",
                self.max_inbound_frame_len
            ));
        }
        if let Some(bytes) = self.socket_buffer
            && !(MIN_SOCKET_BUFFER..=MAX_SOCKET_BUFFER).contains(&bytes)
        {
            return invalid(format!(
                "socket buffer bound {bytes} is outside {MIN_SOCKET_BUFFER}-{MAX_SOCKET_BUFFER} bytes"
            ));
        }
        let positive = [
            ("send queue timeout", self.send_queue_timeout),
            ("initial backoff", self.backoff.initial),
            ("ping interval", self.ping_interval),
            ("pong timeout", self.pong_timeout),
            ("maximum connection age", self.max_connection_age),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return invalid(format!("{name} must be above zero"));
        }
        let max_rate = 10_000;
        if self.pacing.sdp_per_second > max_rate || self.pacing.ice_per_second > max_rate {
            return invalid(format!("pacing rates above {max_rate} per second are not pacing; use 0 (unpaced)"));
        }
        if self.backoff.max < self.backoff.initial {
            return invalid("maximum backoff must not be below the initial backoff".into());
        }
        if let Some(bundle) = &self.ca_bundle {
            check_ca_bundle(bundle)?;
        }
        // The environment is read when the client is made, not here.
        if let Err(e) = self.proxy_setting().proxy() {
            return invalid(e.message().to_owned());
        }
        if let Some(aws) = &self.aws {
            aws.validate()?;
        }
        if let Some(presigned) = &self.presigned_url {
            if self.aws.is_some() {
                return invalid("a presigned URL replaces the control plane; configure one or the other".into());
            }
            presigned.check()?;
        }
        if self.signer.is_some() && self.signer_timeout.is_zero() {
            return invalid("signer timeout must be above zero".into());
        }
        if let Some(suffix) = &self.user_agent_suffix {
            crate::aws::http::check_user_agent_suffix(suffix).map_err(ClientError::InvalidConfig)?;
        }
        Ok(())
    }

    /// The proxy of the client's connections: its own when set, else the
    /// control plane's.
    pub(super) fn proxy_setting(&self) -> ProxyConfig {
        match &self.aws {
            Some(aws) if self.proxy == ProxyConfig::default() => aws.control_plane.proxy.clone(),
            _ => self.proxy.clone(),
        }
    }

    /// The CA bundle of the connections through the control plane: its own
    /// when set, else the client's; the client's dead-link deadline.
    pub(super) fn control_plane_config(&self, aws: &AwsConfig) -> ControlPlaneConfig {
        let mut control_plane = aws.control_plane.clone();
        control_plane.tcp_user_timeout = self.tcp_user_timeout;
        control_plane.socket_buffer = self.socket_buffer;
        if control_plane.ca_bundle.is_none() {
            control_plane.ca_bundle = self.ca_bundle.clone();
        }
        if control_plane.signer.is_none() && self.signer.is_some() {
            control_plane.signer = self.signer.clone();
            control_plane.signer_timeout = self.signer_timeout;
        }
        if control_plane.user_agent_suffix.is_none() {
            control_plane.user_agent_suffix = self.user_agent_suffix.clone();
        }
        control_plane
    }
}

/// Loads the PEM file `bundle`: unreadable, not PEM or without a certificate
/// is [`ClientError::InvalidConfig`], so that it shows when the client is made.
fn check_ca_bundle(bundle: &Path) -> Result<(), ClientError> {
    match crate::aws::TlsClient::new(Some(bundle)) {
        Ok(_) => Ok(()),
        Err(e) => Err(ClientError::InvalidConfig(e.message().to_owned())),
    }
}

/// The region field of a channel ARN, if it has one.
pub fn region_of_arn(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/demo/1";

    #[test]
    fn defaults_take_the_region_from_the_arn() {
        let config = ClientConfig::viewer(ARN, "v1", "ws://127.0.0.1:1");
        assert_eq!(config.region, "eu-west-1");
        assert!(config.validate().is_ok());
    }

    #[test]
    fn rejects_what_the_service_would() {
        let cases = [
            ClientConfig { client_id: None, ..ClientConfig::viewer(ARN, "v", "ws://h") },
            ClientConfig { client_id: Some("x".into()), ..ClientConfig::master(ARN, "ws://h") },
            ClientConfig::viewer(ARN, "AWS_reserved", "ws://h"),
            ClientConfig::viewer("arn:bad", "v", "ws://h"),
            ClientConfig::master(ARN, "http://h"),
            ClientConfig::master(ARN, "ws://h/?X-Amz-ChannelARN=x"),
            ClientConfig { region: "US".into(), ..ClientConfig::master(ARN, "ws://h") },
            ClientConfig { connect_timeout: Duration::ZERO, ..ClientConfig::master(ARN, "ws://h") },
            ClientConfig { max_inbound_frame_len: 1000, ..ClientConfig::master(ARN, "ws://h") },
            ClientConfig { max_inbound_frame_len: 2 << 20, ..ClientConfig::master(ARN, "ws://h") },
            ClientConfig { socket_buffer: Some(1000), ..ClientConfig::master(ARN, "ws://h") },
            ClientConfig { socket_buffer: Some(64 << 20), ..ClientConfig::master(ARN, "ws://h") },
        ];
        for config in cases {
            assert!(matches!(config.validate(), Err(ClientError::InvalidConfig(_))), "{config:?}");
        }
    }

    #[test]
    fn endpoints_are_checked_whole_and_quoted_without_their_query() {
        let message = |endpoint: &str| ClientConfig::master(ARN, endpoint).validate().unwrap_err().to_string();
        assert_eq!(message("ws://"), "invalid configuration: endpoint \"ws://\" has no host");
        assert!(message("wss://h:99999").contains("\"wss://h:99999\" has an invalid port"));
        assert!(message("wss://h:x").contains("invalid port"));
        let with_query = message("wss://h/?X-Amz-Security-Token=t");
        assert!(with_query.contains("\"wss://h/\"") && !with_query.contains("Token"), "{with_query}");
        for good in ["ws://127.0.0.1:9000", "wss://h", "wss://[::1]:8443/path"] {
            assert!(ClientConfig::master(ARN, good).validate().is_ok(), "{good}");
        }
    }

    #[test]
    fn a_ca_bundle_is_loaded_when_the_configuration_is_checked() {
        let dir = std::env::temp_dir();
        let garbage = dir.join(format!("kvs-config-garbage-bundle-{}.pem", std::process::id()));
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let missing = dir.join(format!("kvs-config-missing-bundle-{}.pem", std::process::id()));
        for (bundle, why) in [(&garbage, "no PEM certificate"), (&missing, "CA bundle")] {
            let config = ClientConfig { ca_bundle: Some(bundle.clone()), ..ClientConfig::master(ARN, "wss://h") };
            let result = config.validate();
            assert!(matches!(&result, Err(ClientError::InvalidConfig(m)) if m.contains(why)), "{result:?}");
        }
        let _ = std::fs::remove_file(&garbage);
    }
}
