//! The safe async Rust client: connect to a channel as master or viewer, send
//! offers, answers and candidates, receive them as [`ClientEvent`]s.
//!
//! No C types here. A [`Client`] is `Send + Sync`; its methods may be called from
//! any thread or task. It spawns its connection task on the tokio runtime that
//! is current when [`Client::connect`] runs. Events of one client are delivered
//! to its sink in arrival order, from its supervisor task (and its ICE refresh
//! task for `IceServersChanged`).

mod backlog;
mod config;
mod connect;
mod delivery;
mod error;
mod events;
mod inbound;
mod metrics;
mod pacing;
mod queue;
mod supervisor;
mod target;

pub use backlog::{Backlog, DEFAULT_BACKLOG_BYTES, DEFAULT_BACKLOG_EVENTS, EventReceiver, event_size};
pub use config::{
    AwsConfig, Backoff, ClientConfig, DEFAULT_EARLY_CANDIDATE_BUDGET, DEFAULT_MAX_INBOUND_FRAME_LEN,
    DEFAULT_SOCKET_BUFFER, DEFAULT_TCP_USER_TIMEOUT, MAX_INBOUND_FRAME_LEN, MAX_SOCKET_BUFFER, MIN_INBOUND_FRAME_LEN,
    MIN_SOCKET_BUFFER, MIN_STORAGE_OFFER_TIMEOUT, MediaStorageMode, Pacing, PresignedUrl, region_of_arn,
};
pub use error::ClientError;
pub use events::{
    ClientEvent, ConnectionState, ReceivedMessage, StateChange, StateReason, StatusOrigin, StatusReport, StorageEvent,
};
pub use metrics::Metrics;
pub use target::ICE_REFRESH_MIN_INTERVAL;

use crate::aws::{ChannelRef, ControlPlane, MediaStorageConfiguration};
use crate::protocol::{Action, IceCandidate, OutboundMessage, Role, SdpType, SessionDescription, encode_payload};
use metrics::Counters;
use queue::Outgoing;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use supervisor::{FirstAttempt, SupervisorHandle};
use target::{IceState, Target};
use tokio::sync::oneshot;

/// Receives every event of one client, on the thread that produced it: the
/// client's supervisor task, and its ICE refresh task for
/// `IceServersChanged` (so, on a multi-thread runtime, possibly at the same
/// time as another event). It must not block for long.
pub type EventSink = Arc<dyn Fn(ClientEvent) + Send + Sync>;

/// A signaling client for one channel and role. Dropping it closes its socket.
pub struct Client {
    config: ClientConfig,
    sink: EventSink,
    /// What the sink's receiver holds; `None`: it never pushes back.
    backlog: Option<Arc<Backlog>>,
    counters: Arc<Counters>,
    supervisor: Mutex<Option<SupervisorHandle>>,
    ice: Arc<IceState>,
    /// The control plane of the calls made outside a connection
    /// ([`Client::media_storage`], [`Client::set_media_storage`]): made on the
    /// first such call (CA file, TLS, proxy from the environment) and kept.
    control_plane: Mutex<Option<Arc<ControlPlane>>>,
    correlation_prefix: String,
    next_correlation: AtomicU64,
}

impl Client {
    /// Makes a client after validating `config`; nothing is opened yet.
    /// Events go to `sink`.
    pub fn with_sink(config: ClientConfig, sink: EventSink) -> Result<Client, ClientError> {
        Client::build(config, sink, None)
    }

    /// Makes a client whose events go to `sink`, a receiver that counts what it
    /// holds in `backlog`: while the backlog is full the client does not read
    /// its socket (TCP back-pressure to the sender), so the receiver's memory
    /// stays bounded and no event is dropped.
    pub fn with_backlog(config: ClientConfig, sink: EventSink, backlog: Arc<Backlog>) -> Result<Client, ClientError> {
        Client::build(config, sink, Some(backlog))
    }

    fn build(mut config: ClientConfig, sink: EventSink, backlog: Option<Arc<Backlog>>) -> Result<Client, ClientError> {
        config.fill_from_presigned_url();
        config.validate()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        // Distinguishes this client's generated correlation ids from those of
        // other clients and of earlier runs that the service may still echo.
        let correlation_prefix = format!("kvs{:x}{:x}", now.as_secs() & 0xffff_ffff, now.subsec_nanos() >> 8);
        Ok(Client {
            config,
            sink,
            backlog,
            counters: Arc::new(Counters::default()),
            supervisor: Mutex::new(None),
            ice: Arc::default(),
            control_plane: Mutex::new(None),
            correlation_prefix,
            next_correlation: AtomicU64::new(1),
        })
    }

    /// Makes a client whose events arrive on the returned receiver, which
    /// holds at most [`DEFAULT_BACKLOG_EVENTS`] events or
    /// [`DEFAULT_BACKLOG_BYTES`] bytes before the client stops reading its
    /// socket (see [`EventReceiver`]).
    pub fn new(config: ClientConfig) -> Result<(Client, EventReceiver), ClientError> {
        Client::with_bounded_events(config, DEFAULT_BACKLOG_EVENTS, DEFAULT_BACKLOG_BYTES)
    }

    /// As [`Client::new`], with the receiver's bounds given: `max_events`
    /// events or `max_bytes` bytes (each at least 1).
    pub fn with_bounded_events(
        config: ClientConfig,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<(Client, EventReceiver), ClientError> {
        let backlog = Arc::new(Backlog::new(max_events, max_bytes));
        let (sink, receiver) = backlog::bounded_channel(backlog.clone());
        Ok((Client::with_backlog(config, sink, backlog)?, receiver))
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn supervisor(&self) -> MutexGuard<'_, Option<SupervisorHandle>> {
        self.supervisor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        match &*self.supervisor() {
            Some(handle) if !handle.is_finished() => self.counters.state(),
            _ => ConnectionState::Disconnected,
        }
    }

    /// A snapshot of the client's counters.
    pub fn metrics(&self) -> Metrics {
        let queued = self.supervisor().as_ref().map_or(0, |h| h.queue.len());
        let events_queued = self.backlog.as_ref().map_or(0, |b| b.held().0);
        let mut metrics = self.counters.snapshot(queued, events_queued);
        metrics.state = self.state();
        metrics
    }

    /// The current ICE server list (TURN URIs, username, password, TTL); empty
    /// until the first GetIceServerConfig answered, and always without the
    /// control plane. [`ClientEvent::IceServersChanged`] tells when it changes.
    pub fn ice_servers(&self) -> Vec<crate::aws::IceServer> {
        self.ice.servers()
    }

    /// The media storage configuration of the client's channel
    /// (DescribeMediaStorageConfiguration), through the client's control plane
    /// (its credentials, signer, proxy, CA bundle); independent of the
    /// connection. Needs [`AwsConfig`].
    pub async fn media_storage(&self) -> Result<MediaStorageConfiguration, ClientError> {
        let (control_plane, channel) = self.control_plane()?;
        Ok(control_plane.describe_media_storage(&channel).await?)
    }

    /// Changes the media storage configuration of the client's channel
    /// (UpdateMediaStorageConfiguration): enabled with a stream ARN (checked
    /// before any call), or disabled. A client in `Auto` mode notices the
    /// change on its next connect. Needs [`AwsConfig`].
    pub async fn set_media_storage(&self, configuration: &MediaStorageConfiguration) -> Result<(), ClientError> {
        let (control_plane, channel) = self.control_plane()?;
        let arn = match channel {
            ChannelRef::Arn(arn) => arn,
            ChannelRef::Name(name) => control_plane.describe_channel(Some(&name), None).await?.arn,
        };
        Ok(control_plane.update_media_storage(&arn, configuration).await?)
    }

    /// The control plane of the calls made outside a connection, and the channel.
    fn control_plane(&self) -> Result<(Arc<ControlPlane>, ChannelRef), ClientError> {
        let mut cached = self.control_plane.lock().unwrap_or_else(|e| e.into_inner());
        let control_plane = match &*cached {
            Some(control_plane) => control_plane.clone(),
            None => cached.insert(Arc::new(target::control_plane_outside_connection(&self.config)?)).clone(),
        };
        Ok((control_plane, target::channel_ref(&self.config)))
    }

    /// Starts the supervisor unless one is running.
    fn launch(&self, mode: FirstAttempt) -> Result<Option<oneshot::Receiver<Result<(), ClientError>>>, ClientError> {
        let mut supervisor = self.supervisor();
        if supervisor.as_ref().is_some_and(|h| !h.is_finished()) {
            return Err(ClientError::AlreadyConnected);
        }
        let target = Target::new(&self.config, self.ice.clone(), self.sink.clone(), self.counters.clone())?;
        let (first, first_rx) = match mode {
            FirstAttempt::Report => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            FirstAttempt::Retry => (None, None),
        };
        *supervisor = Some(SupervisorHandle::start(
            &self.config,
            self.sink.clone(),
            self.backlog.clone(),
            self.counters.clone(),
            target,
            mode,
            first,
        ));
        Ok(first_rx)
    }

    /// Opens the socket; returns once it is open, or with the reason it is not,
    /// within the configured connect timeout. After that the client keeps the
    /// connection up: it reconnects forever after any drop, and sends made while
    /// it reconnects wait in the queue.
    pub async fn connect(&self) -> Result<(), ClientError> {
        let Some(first) = self.launch(FirstAttempt::Report)? else {
            return Err(ClientError::AlreadyConnected);
        };
        let result = match first.await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Cancelled),
        };
        if result.is_err() {
            // The supervisor is ending; wait for it so that an immediate retry
            // of connect() is not refused as already connected. A cancelled
            // connect has no supervisor left to wait for (a disconnect took it,
            // or the runtime, timers included, is gone).
            let handle = self.supervisor().take();
            match handle {
                Some(handle) if result != Err(ClientError::Cancelled) => handle.stop(Duration::from_millis(100)).await,
                _ => {}
            }
        }
        result
    }

    /// Starts connecting in the background and returns at once; unlike
    /// [`Client::connect`], a failed first attempt is retried like any drop.
    /// Sends are accepted (queued) from now on.
    pub fn start(&self) -> Result<(), ClientError> {
        self.launch(FirstAttempt::Retry).map(drop)
    }

    /// Closes the socket (a close frame, then at most `grace` waiting for the
    /// service's answer) and waits until the client has stopped. Sends still
    /// queued are reported failed. Does nothing when not running.
    pub async fn disconnect(&self, grace: Duration) {
        let handle = self.supervisor().take();
        if let Some(handle) = handle {
            handle.stop(grace).await;
        }
    }

    /// Sends an SDP offer. `recipient` names the viewer when the master sends and
    /// must be `None` for a viewer. Returns the correlation id used (generated
    /// when `correlation_id` is `None`).
    pub fn send_sdp_offer(
        &self,
        recipient: Option<&str>,
        sdp: &str,
        correlation_id: Option<&str>,
    ) -> Result<String, ClientError> {
        let json = SessionDescription { sdp_type: SdpType::Offer, sdp: sdp.to_owned() }.to_json();
        self.send_payload(Action::SdpOffer, recipient, json.as_bytes(), correlation_id)
    }

    /// Sends an SDP answer; see [`Client::send_sdp_offer`].
    pub fn send_sdp_answer(
        &self,
        recipient: Option<&str>,
        sdp: &str,
        correlation_id: Option<&str>,
    ) -> Result<String, ClientError> {
        let json = SessionDescription { sdp_type: SdpType::Answer, sdp: sdp.to_owned() }.to_json();
        self.send_payload(Action::SdpAnswer, recipient, json.as_bytes(), correlation_id)
    }

    /// Sends an ICE candidate; see [`Client::send_sdp_offer`].
    pub fn send_ice_candidate(
        &self,
        recipient: Option<&str>,
        candidate: &IceCandidate,
        correlation_id: Option<&str>,
    ) -> Result<String, ClientError> {
        self.send_payload(Action::IceCandidate, recipient, candidate.to_json().as_bytes(), correlation_id)
    }

    /// Sends an already-built payload (the JSON before base64), which the library
    /// encodes. Validates every field first; on error nothing is sent. Never
    /// blocks: the message is queued for the supervisor, which writes it (in
    /// order, paced to the service quotas, after a reconnect if need be) or
    /// reports it failed through a [`StatusReport`] of origin
    /// [`StatusOrigin::Local`] (queue deadline passed, or the client disconnected).
    pub fn send_payload(
        &self,
        action: Action,
        recipient: Option<&str>,
        payload: &[u8],
        correlation_id: Option<&str>,
    ) -> Result<String, ClientError> {
        if payload.is_empty() {
            return Err(ClientError::Invalid(crate::protocol::ValidationError::Missing(
                crate::protocol::Field::MessagePayload,
            )));
        }
        // Checked before encoding so a huge payload costs no allocation.
        let encoded_len = payload.len().div_ceil(3) * 4;
        if encoded_len > crate::protocol::MAX_PAYLOAD_LEN {
            return Err(ClientError::PayloadTooLarge { encoded_len });
        }
        let generated;
        let correlation_id = match correlation_id {
            Some(id) => id,
            None => {
                let n = self.next_correlation.fetch_add(1, Ordering::Relaxed);
                generated = format!("{}-{n}", self.correlation_prefix);
                &generated
            }
        };
        let message =
            OutboundMessage::new(self.config.role, action, recipient, &encode_payload(payload), Some(correlation_id))?;
        let outgoing = Outgoing {
            frame: message.to_json(),
            correlation_id: correlation_id.to_owned(),
            action,
            recipient: recipient.map(str::to_owned),
            deadline: Instant::now() + self.config.send_queue_timeout,
            written_before: false,
        };
        match &*self.supervisor() {
            Some(handle) if !handle.is_finished() => handle.queue.push(outgoing)?,
            _ => return Err(ClientError::NotConnected),
        }
        Ok(correlation_id.to_owned())
    }

    /// The role this client connects as.
    pub fn role(&self) -> Role {
        self.config.role
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(handle) = self.supervisor().take() {
            handle.stop_in_background();
        }
    }
}
