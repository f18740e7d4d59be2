//! Where a client connects: the URL of each attempt and its TLS settings,
//! either a configured endpoint used as it is, or the real service path through
//! the control plane (cached endpoints, SigV4-presigned URL), which also keeps
//! the ICE server configuration fresh in the background.

use super::config::MediaStorageMode;
use super::config::PresignedUrl;
use super::connect::{Phases, Socket, SocketOptions, direct_tls, open_socket, redact_query, with_path};
use super::metrics::{Counters, bump};
use super::{ClientConfig, ClientError, ClientEvent, EventSink, StorageEvent};
use crate::aws::ice::refresh_after;
use crate::aws::signer::{check_signed_url, signed_url_redactor, within};
use crate::aws::sigv4::uri_encode;
use crate::aws::{
    AwsError, ChannelRef, ControlPlane, ControlPlaneConfig, CreateChannel, Dialer, EndpointCache, IceServer, Redactor,
    RequestSigner, TlsClient, WssSignRequest, is_clock_skew_message,
};
use crate::log::{Level, log};
use crate::protocol::Role;
use futures_util::FutureExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

const TARGET: &str = "client";
/// Retry bounds of a failed GetIceServerConfig.
const ICE_RETRY_MIN: Duration = Duration::from_secs(1);
const ICE_RETRY_MAX: Duration = Duration::from_secs(60);
/// Shortest time between the starts of two GetIceServerConfig calls made on
/// request (RECONNECT_ICE_SERVER): requests in between are served together
/// by one call at the end of it, so a flood of notices costs one call per
/// interval. Requests never delay a refresh due earlier (before a TTL runs
/// out, or a retry).
pub const ICE_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Shortest time between the starts of two joins of a storage session (the
/// service allows 2 a second per channel).
const JOIN_MIN_SPACING: Duration = Duration::from_secs(1);
/// Longest wait before retrying a failed join.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(30);

/// The data-plane URL for `config`'s channel and role (spec §1.3).
pub(crate) fn connect_url(config: &ClientConfig) -> String {
    let mut url = format!("{}?X-Amz-ChannelARN={}", with_path(&config.endpoint), uri_encode(&config.channel_arn));
    if let (Role::Viewer, Some(id)) = (config.role, &config.client_id) {
        url.push_str("&X-Amz-ClientId=");
        url.push_str(&uri_encode(id));
    }
    url
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The current ICE server list of a client, shared with its accessors.
#[derive(Default)]
pub(super) struct IceState {
    servers: Mutex<Vec<IceServer>>,
}

impl IceState {
    pub fn servers(&self) -> Vec<IceServer> {
        lock(&self.servers).clone()
    }
}

/// What every connect attempt of a client opens. Cheap to clone.
#[derive(Clone)]
pub(super) struct Target {
    inner: Arc<Inner>,
    socket: SocketOptions,
}

enum Inner {
    Direct(Box<DirectTarget>),
    Aws(Box<AwsTarget>),
}

/// A configured endpoint: used as it is, presigned by a signer, or reached
/// through a ready presigned URL until it expires.
struct DirectTarget {
    /// The unsigned connect URL (endpoint, channel ARN, client id).
    url: String,
    tls: TlsClient,
    /// Direct or through the proxy.
    dialer: Dialer,
    /// The configured presigned URL, until it expired or was refused.
    presigned: Mutex<Option<PresignedUrl>>,
    /// The signer and its timeout, with what it is asked to sign.
    signer: Option<(Arc<dyn RequestSigner>, Duration, WssSignRequest)>,
}

struct AwsTarget {
    control_plane: Arc<ControlPlane>,
    channel: ChannelRef,
    role: Role,
    client_id: Option<String>,
    create: Option<CreateChannel>,
    cache: EndpointCache,
    /// The WSS endpoint of the last attempt, for logs.
    endpoint: Mutex<String>,
    ice: Option<IceRefresh>,
    /// Refreshes the credentials before they expire; started by the first attempt.
    credentials_refresh: Mutex<Option<JoinHandle<()>>>,
    storage: StorageJoin,
}

impl Drop for AwsTarget {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.credentials_refresh).take() {
            task.abort();
        }
    }
}

/// Joining the channel's storage session after each connect (WebRTC
/// ingestion); one join loop at a time, replaced on every new socket.
struct StorageJoin {
    mode: MediaStorageMode,
    offer_timeout: Duration,
    /// The channel's storage status as last described (mode `Auto`): a change
    /// invalidates the cached endpoints.
    last_enabled: Mutex<Option<bool>>,
    /// Woken by every SDP offer the client receives.
    offer: Arc<Notify>,
    sink: EventSink,
    counters: Arc<Counters>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl StorageJoin {
    fn stop(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Drop for StorageJoin {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The background refresh of the ICE server list.
struct IceRefresh {
    state: Arc<IceState>,
    sink: EventSink,
    /// (HTTPS endpoint, ARN) of the channel, known after the first resolve.
    source: Arc<Mutex<Option<(String, String)>>>,
    wake: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for IceRefresh {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Target {
    /// The target for `config`: its endpoint as it is, or the control plane.
    /// Its sockets count dead links in `counters`. The proxy setting (and the
    /// environment, when it opts in) is read here, once.
    pub fn new(
        config: &ClientConfig,
        ice: Arc<IceState>,
        sink: EventSink,
        counters: Arc<Counters>,
    ) -> Result<Target, ClientError> {
        let user_agent = crate::aws::http::user_agent(config.user_agent_suffix.as_deref()).into();
        let socket = SocketOptions { counters: counters.clone(), user_agent };
        let proxy_setting = config.proxy_setting().resolve_env();
        let proxy = proxy_setting.proxy().map_err(invalid_proxy)?;
        let Some(aws) = &config.aws else {
            let tls = direct_tls(config.ca_bundle.as_deref())?;
            let signer = config.signer.clone().map(|signer| {
                let request = WssSignRequest {
                    endpoint: config.endpoint.trim_end_matches('/').to_owned(),
                    role: config.role,
                    channel_arn: config.channel_arn.clone(),
                    client_id: config.client_id.clone().filter(|_| config.role == Role::Viewer),
                    region: config.region.clone(),
                    time: SystemTime::now(),
                };
                (signer, config.signer_timeout, request)
            });
            let direct = DirectTarget {
                url: connect_url(config),
                tls,
                dialer: Dialer::new(config.tcp_user_timeout)
                    .with_proxy(proxy.map(Arc::new))
                    .with_socket_buffer(config.socket_buffer),
                presigned: Mutex::new(config.presigned_url.clone()),
                signer,
            };
            return Ok(Target { inner: Arc::new(Inner::Direct(Box::new(direct))), socket });
        };
        // The setting as read above: the environment is not read again.
        let control_plane = ControlPlaneConfig { proxy: proxy_setting, ..config.control_plane_config(aws) };
        let control_plane = Arc::new(ControlPlane::new(&control_plane)?);
        let channel = channel_ref(config);
        let storage = StorageJoin {
            mode: aws.media_storage,
            offer_timeout: aws.storage_offer_timeout,
            last_enabled: Mutex::new(None),
            offer: Arc::new(Notify::new()),
            sink: sink.clone(),
            counters,
            task: Mutex::new(None),
        };
        let ice = aws.ice_servers.then(|| IceRefresh {
            state: ice,
            sink,
            source: Arc::default(),
            wake: Arc::new(Notify::new()),
            task: Mutex::new(None),
        });
        Ok(Target {
            inner: Arc::new(Inner::Aws(Box::new(AwsTarget {
                control_plane,
                channel,
                role: config.role,
                client_id: config.client_id.clone(),
                create: aws.create_channel.clone(),
                cache: EndpointCache::new(aws.endpoint_cache_ttl, aws.endpoint_cache_path.clone()),
                endpoint: Mutex::new(String::new()),
                ice,
                credentials_refresh: Mutex::new(None),
                storage,
            }))),
            socket,
        })
    }

    /// Opens one socket; returns it with its phases and the time spent in the
    /// control plane (cache lookup, calls, signing).
    pub async fn open(&self) -> Result<(Socket, Phases, Duration), ClientError> {
        match &*self.inner {
            Inner::Direct(direct) => direct.open(&self.socket).await,
            Inner::Aws(aws) => aws.open(&self.socket).await,
        }
    }

    /// The endpoint for logs, without its query string.
    pub fn describe(&self) -> String {
        match &*self.inner {
            Inner::Direct(direct) => redact_query(&direct.url).to_owned(),
            Inner::Aws(aws) => {
                let endpoint = lock(&aws.endpoint).clone();
                if endpoint.is_empty() { format!("channel {}", aws.channel.as_str()) } else { endpoint }
            }
        }
    }

    /// The service announced it will close the socket: the next connect asks
    /// the control plane for the endpoint again.
    pub fn on_go_away(&self) {
        if let Inner::Aws(aws) = &*self.inner {
            aws.cache.invalidate(aws.channel.as_str(), aws.role);
        }
    }

    /// The service asked for new TURN credentials: fetch the ICE servers now.
    pub fn refresh_ice_servers(&self) {
        if let Inner::Aws(aws) = &*self.inner
            && let Some(ice) = &aws.ice
        {
            ice.wake.notify_one();
        }
    }

    /// The socket the storage session was joined for is gone: no more joins
    /// until the next socket opens (a join is not idempotent, and the
    /// session's offer could not reach this client meanwhile).
    pub fn on_connection_lost(&self) {
        if let Inner::Aws(aws) = &*self.inner {
            aws.storage.stop();
        }
    }

    /// An SDP offer arrived: the storage session's, when a join awaits one.
    pub fn on_offer(&self) {
        if let Inner::Aws(aws) = &*self.inner {
            aws.storage.offer.notify_one();
        }
    }

    /// Service clock minus local clock, in milliseconds, as learnt so far.
    pub fn clock_skew_ms(&self) -> i64 {
        match &*self.inner {
            Inner::Direct(_) => 0,
            Inner::Aws(aws) => aws.control_plane.clock_skew().get(),
        }
    }
}

impl DirectTarget {
    /// Opens the socket with the presigned URL while it lasts, else with a
    /// URL from the signer, else with the endpoint as it is.
    async fn open(&self, options: &SocketOptions) -> Result<(Socket, Phases, Duration), ClientError> {
        let presigned = lock(&self.presigned).clone();
        if let Some(presigned) = presigned {
            if presigned.expired_at(SystemTime::now()) {
                let why = format!("it expired {} s ago", expired_for(&presigned).as_secs());
                return self.without_presigned(options, why).await;
            }
            let redactor = signed_url_redactor(&presigned.url);
            return match open_socket(&presigned.url, &self.tls, &self.dialer, &redactor, options).await {
                Ok((socket, phases)) => Ok((socket, phases, Duration::ZERO)),
                Err(ClientError::Refused { status: status @ (401 | 403), error_type, body, .. }) => {
                    let error_type = error_type.map(|t| format!(" {t}")).unwrap_or_default();
                    let why = format!("the service refused it with HTTP {status}{error_type}: {body}");
                    self.without_presigned(options, why).await
                }
                Err(other) => Err(other),
            };
        }
        self.open_signed(options).await
    }

    /// After the presigned URL expired: a signed URL when there is a signer,
    /// else [`ClientError::PresignedUrlExpired`].
    async fn without_presigned(
        &self,
        options: &SocketOptions,
        why: String,
    ) -> Result<(Socket, Phases, Duration), ClientError> {
        // Without a signer the dead URL stays: every later attempt (after a
        // socket kept through a failed handover ends) fails the same way
        // instead of trying the endpoint unsigned.
        if self.signer.is_none() {
            return Err(ClientError::PresignedUrlExpired(why));
        }
        *lock(&self.presigned) = None;
        log!(Level::Info, TARGET, "the presigned URL is no longer usable ({why}); asking the signer for a new one");
        self.open_signed(options).await
    }

    async fn open_signed(&self, options: &SocketOptions) -> Result<(Socket, Phases, Duration), ClientError> {
        let Some((signer, timeout, request)) = &self.signer else {
            let (socket, phases) =
                open_socket(&self.url, &self.tls, &self.dialer, &Redactor::default(), options).await?;
            return Ok((socket, phases, Duration::ZERO));
        };
        let started = Instant::now();
        let request = WssSignRequest { time: SystemTime::now(), ..request.clone() };
        let url = within(*timeout, signer.presign_wss_url(&request)).await.map_err(ClientError::Signer)?;
        check_signed_url(&url, &request.endpoint).map_err(ClientError::Signer)?;
        let signing_time = started.elapsed();
        let (socket, phases) = open_socket(&url, &self.tls, &self.dialer, &signed_url_redactor(&url), options).await?;
        Ok((socket, phases, signing_time))
    }
}

/// How long ago `presigned` expired.
fn expired_for(presigned: &PresignedUrl) -> Duration {
    SystemTime::now().duration_since(presigned.expires_at).unwrap_or_default()
}

impl AwsTarget {
    async fn open(&self, options: &SocketOptions) -> Result<(Socket, Phases, Duration), ClientError> {
        let started = Instant::now();
        lock(&self.credentials_refresh)
            .get_or_insert_with(|| self.control_plane.credentials_cache().refresh_in_background());
        let storage = self.storage_enabled().await?;
        let resolved = self
            .control_plane
            .resolve_channel_with(&self.channel, self.role, self.create.as_ref(), Some(&self.cache), storage)
            .await?;
        if let Some(ice) = &self.ice {
            // In parallel with the socket: never on the offer -> answer path.
            ice.start(&self.control_plane, &resolved.endpoints.https, &resolved.arn, self.client_id.as_deref());
        }
        let (url, redactor) =
            self.control_plane.presign(&resolved.endpoints.wss, &resolved.arn, self.client_id.as_deref()).await?;
        *lock(&self.endpoint) = resolved.endpoints.wss.clone();
        let control_plane_time = started.elapsed();
        match open_socket(&url, self.control_plane.tls(), self.control_plane.dialer(), &redactor, options).await {
            Ok((socket, phases)) => {
                self.storage.stop();
                if let Some(webrtc) = resolved.endpoints.webrtc.filter(|_| storage) {
                    let client_id = self.client_id.clone().filter(|_| self.role == Role::Viewer);
                    let join = join_loop(self.control_plane.clone(), webrtc, resolved.arn, client_id, &self.storage);
                    *lock(&self.storage.task) = Some(tokio::spawn(join));
                }
                Ok((socket, phases, control_plane_time))
            }
            Err(err) => {
                self.after_failure(&err);
                Err(err)
            }
        }
    }

    /// Whether this connect joins the storage session: per the mode, or (mode
    /// `Auto`) as DescribeMediaStorageConfiguration says now; a status that
    /// changed since the last connect invalidates the cached endpoints.
    async fn storage_enabled(&self) -> Result<bool, ClientError> {
        let enabled = match self.storage.mode {
            MediaStorageMode::Off => return Ok(false),
            MediaStorageMode::On => true,
            _ => self.control_plane.describe_media_storage(&self.channel).await?.enabled,
        };
        let previous = lock(&self.storage.last_enabled).replace(enabled);
        if previous.is_some_and(|previous| previous != enabled) {
            log!(
                Level::Info,
                TARGET,
                "media storage of {} is now {}",
                self.channel.as_str(),
                if enabled { "enabled" } else { "disabled" }
            );
            self.cache.invalidate(self.channel.as_str(), self.role);
        }
        Ok(enabled)
    }

    /// Adjusts what the next attempt does after a refused or failed upgrade
    /// (spec §9.7): 404 asks for the channel again, 403 refreshes credentials or
    /// learns the clock skew, 5xx and network errors ask for the endpoint again.
    fn after_failure(&self, err: &ClientError) {
        match err {
            ClientError::Refused { status: 404, .. } => self.cache.invalidate(self.channel.as_str(), self.role),
            ClientError::Refused { status: 401 | 403, body, date, .. } => {
                if is_clock_skew_message(body)
                    && let Some(date) = date
                    && let Some(skew) = self.control_plane.clock_skew().learn(date, SystemTime::now())
                {
                    log!(
                        Level::Warn,
                        TARGET,
                        "the service's clock is {skew} ms from ours; signing with it from now on"
                    );
                } else {
                    self.control_plane.credentials_cache().invalidate();
                }
            }
            ClientError::Refused { status, .. } if *status >= 500 => {
                self.cache.invalidate(self.channel.as_str(), self.role)
            }
            ClientError::Network(_) | ClientError::Timeout => self.cache.invalidate(self.channel.as_str(), self.role),
            _ => {}
        }
    }
}

impl IceRefresh {
    /// Records where to fetch from and starts the refresh loop once.
    fn start(&self, control_plane: &Arc<ControlPlane>, https: &str, arn: &str, client_id: Option<&str>) {
        *lock(&self.source) = Some((https.to_owned(), arn.to_owned()));
        let mut task = lock(&self.task);
        if task.is_some() {
            return;
        }
        *task = Some(tokio::spawn(ice_loop(
            control_plane.clone(),
            self.source.clone(),
            client_id.map(str::to_owned),
            self.state.clone(),
            self.sink.clone(),
            self.wake.clone(),
        )));
    }
}

/// Fetches the ICE servers, then again before the shortest TTL runs out (minus
/// a grace) or when woken, but never sooner than [`ICE_REFRESH_MIN_INTERVAL`]
/// after the previous call started; retries failures with backoff. One call
/// at a time: the loop is the client's only caller of GetIceServerConfig.
async fn ice_loop(
    control_plane: Arc<ControlPlane>,
    source: Arc<Mutex<Option<(String, String)>>>,
    client_id: Option<String>,
    state: Arc<IceState>,
    sink: EventSink,
    wake: Arc<Notify>,
) {
    let mut retry = ICE_RETRY_MIN;
    loop {
        let Some((https, arn)) = lock(&source).clone() else { return };
        let started = tokio::time::Instant::now();
        // Requests made until now are served by this call.
        let _ = wake.notified().now_or_never();
        let wait = match control_plane.get_ice_server_config(&https, &arn, client_id.as_deref()).await {
            Ok(servers) => {
                retry = ICE_RETRY_MIN;
                let wait = refresh_after(&servers).unwrap_or(ICE_RETRY_MAX);
                log!(Level::Debug, TARGET, "{} ICE servers; next refresh in {} s", servers.len(), wait.as_secs());
                let count = servers.len();
                *lock(&state.servers) = servers;
                sink(ClientEvent::IceServersChanged { count });
                wait
            }
            Err(e) => {
                log!(
                    Level::Warn,
                    TARGET,
                    "GetIceServerConfig failed: {}; retrying in {} s",
                    describe_aws(&e),
                    retry.as_secs()
                );
                let wait = retry;
                retry = (retry * 2).min(ICE_RETRY_MAX);
                wait
            }
        };
        let due = tokio::time::Instant::now() + wait;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            // A request brings the next call forward, never past `due`.
            _ = wake.notified() => tokio::time::sleep_until(due.min(started + ICE_REFRESH_MIN_INTERVAL)).await,
        }
    }
}

/// The channel of a control-plane client: by name until its ARN is known.
pub(super) fn channel_ref(config: &ClientConfig) -> ChannelRef {
    match &config.channel_name {
        Some(name) if config.channel_arn.is_empty() => ChannelRef::Name(name.clone()),
        _ => ChannelRef::Arn(config.channel_arn.clone()),
    }
}

/// A control plane made from `config` for the calls outside the connection
/// (its credentials, signer, proxy and CA bundle).
pub(super) fn control_plane_outside_connection(config: &ClientConfig) -> Result<ControlPlane, ClientError> {
    let Some(aws) = &config.aws else {
        return Err(ClientError::InvalidConfig("this call needs the control plane (AwsConfig)".into()));
    };
    let proxy = config.proxy_setting().resolve_env();
    proxy.proxy().map_err(invalid_proxy)?;
    Ok(ControlPlane::new(&ControlPlaneConfig { proxy, ..config.control_plane_config(aws) })?)
}

/// A proxy URL (given or from the environment) that does not parse.
fn invalid_proxy(error: AwsError) -> ClientError {
    match error {
        AwsError::Config(m) => ClientError::InvalidConfig(m),
        other => ClientError::from(other),
    }
}

/// Joins the storage session (`client_id` set for a viewer) until its offer
/// arrives within the offer timeout; joins again when it does not. Join
/// starts are at least [`JOIN_MIN_SPACING`] apart, and a failed join is
/// retried after a backoff doubling up to [`JOIN_RETRY_MAX`]. Ends when the
/// offer came, or is aborted when the socket is replaced.
fn join_loop(
    control_plane: Arc<ControlPlane>,
    webrtc: String,
    arn: String,
    client_id: Option<String>,
    storage: &StorageJoin,
) -> impl Future<Output = ()> + Send + 'static {
    let (offer, sink, counters, timeout) =
        (storage.offer.clone(), storage.sink.clone(), storage.counters.clone(), storage.offer_timeout);
    async move {
        let mut retry = JOIN_MIN_SPACING;
        let mut next_at = tokio::time::Instant::now();
        loop {
            tokio::time::sleep_until(next_at).await;
            // An offer from before this join is not the answer to it.
            let _ = offer.notified().now_or_never();
            let started = Instant::now();
            next_at = tokio::time::Instant::now() + JOIN_MIN_SPACING;
            if let Err(e) = control_plane.join_storage_session(&webrtc, &arn, client_id.as_deref()).await {
                log!(
                    Level::Warn,
                    TARGET,
                    "joining the storage session failed: {}; retrying in {} s",
                    describe_aws(&e),
                    retry.as_secs()
                );
                next_at = tokio::time::Instant::now() + retry;
                retry = (retry * 2).min(JOIN_RETRY_MAX);
                continue;
            }
            retry = JOIN_MIN_SPACING;
            bump(&counters.storage_joins);
            counters.last_join_latency_us.store(micros(started.elapsed()), Ordering::Relaxed);
            log!(Level::Info, TARGET, "joined the storage session of {arn}; awaiting its offer");
            sink(ClientEvent::Storage(StorageEvent::Joined));
            if tokio::time::timeout(timeout, offer.notified()).await.is_ok() {
                counters.time_to_storage_offer_us.store(micros(started.elapsed()), Ordering::Relaxed);
                sink(ClientEvent::Storage(StorageEvent::OfferReceived));
                return;
            }
            log!(Level::Warn, TARGET, "no storage session offer within {} ms; joining again", timeout.as_millis());
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn describe_aws(e: &AwsError) -> String {
    format!("{} ({})", e.message(), e.kind_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_spec_templates() {
        let arn = "arn:aws:kinesisvideo:us-west-2:123456789012:channel/demo/1";
        let master = ClientConfig::master(arn, "ws://127.0.0.1:9000");
        assert_eq!(
            connect_url(&master),
            "ws://127.0.0.1:9000/?X-Amz-ChannelARN=arn%3Aaws%3Akinesisvideo%3Aus-west-2%3A123456789012%3Achannel%2Fdemo%2F1"
        );
        let viewer = ClientConfig::viewer(arn, "v.1", "wss://v-a1b2.example/path/");
        assert!(connect_url(&viewer).starts_with("wss://v-a1b2.example/path?X-Amz-ChannelARN=arn%3A"));
        assert!(connect_url(&viewer).ends_with("&X-Amz-ClientId=v.1"));
    }
}
