//! The safe async Rust client: connect to a channel as master or viewer, send
//! offers, answers and candidates, receive them as [`ClientEvent`]s.
//!
//! No C types here. A [`Client`] is `Send + Sync`; its methods may be called from
//! any thread or task. It spawns its connection task on the tokio runtime that
//! is current when [`Client::connect`] runs. Events of one client are delivered
//! to its sink one at a time, in arrival order.

mod config;
mod connection;
mod error;
mod events;

pub use config::{ClientConfig, region_of_arn};
pub use error::ClientError;
pub use events::{ClientEvent, ConnectionState, ReceivedMessage, StateChange, StateReason, StatusOrigin, StatusReport};

use crate::log::{Level, log};
use crate::protocol::{Action, IceCandidate, OutboundMessage, Role, SdpType, SessionDescription, encode_payload};
use connection::{Connection, Outgoing};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Receives every event of one client, on the thread that produced it: the
/// connection task, or the caller of `connect` for the connect-time states.
/// It must not block for long.
pub type EventSink = Arc<dyn Fn(ClientEvent) + Send + Sync>;

/// A signaling client for one channel and role. Dropping it closes its socket.
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    config: ClientConfig,
    sink: EventSink,
    session: Mutex<Session>,
    correlation_prefix: String,
    next_correlation: AtomicU64,
    next_connection_id: AtomicU64,
}

enum Session {
    Idle,
    Connecting,
    Connected(Connection),
}

impl Shared {
    fn session(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit_state(&self, state: ConnectionState, reason: StateReason) {
        (self.sink)(ClientEvent::State(StateChange { state, reason }));
    }
}

impl Client {
    /// Makes a client after validating `config`; nothing is opened yet.
    /// Events go to `sink`.
    pub fn with_sink(config: ClientConfig, sink: EventSink) -> Result<Client, ClientError> {
        config.validate()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        // Distinguishes this client's generated correlation ids from those of
        // other clients and of earlier runs that the service may still echo.
        let correlation_prefix = format!("kvs{:x}{:x}", now.as_secs() & 0xffff_ffff, now.subsec_nanos() >> 8);
        Ok(Client {
            shared: Arc::new(Shared {
                config,
                sink,
                session: Mutex::new(Session::Idle),
                correlation_prefix,
                next_correlation: AtomicU64::new(1),
                next_connection_id: AtomicU64::new(1),
            }),
        })
    }

    /// Makes a client whose events arrive on the returned channel.
    pub fn new(config: ClientConfig) -> Result<(Client, mpsc::UnboundedReceiver<ClientEvent>), ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = Client::with_sink(config, Arc::new(move |event| drop(tx.send(event))))?;
        Ok((client, rx))
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.shared.config
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        match &*self.shared.session() {
            Session::Idle => ConnectionState::Disconnected,
            Session::Connecting => ConnectionState::Connecting,
            Session::Connected(_) => ConnectionState::Connected,
        }
    }

    /// Opens the socket; returns once it is open, or with the reason it is not,
    /// within the configured connect timeout.
    pub async fn connect(&self) -> Result<(), ClientError> {
        {
            let mut session = self.shared.session();
            if !matches!(*session, Session::Idle) {
                return Err(ClientError::AlreadyConnected);
            }
            *session = Session::Connecting;
        }
        self.shared.emit_state(ConnectionState::Connecting, StateReason::Requested);
        let config = &self.shared.config;
        let opened = match tokio::time::timeout(config.connect_timeout, connection::open_socket(config)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout),
        };
        let socket = match opened {
            Ok(socket) => socket,
            Err(err) => {
                log!(Level::Warn, "client", "connect to {} failed: {err}", config.endpoint);
                *self.shared.session() = Session::Idle;
                self.shared.emit_state(ConnectionState::Disconnected, StateReason::ConnectFailed(err.to_string()));
                return Err(err);
            }
        };
        let id = self.shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
        log!(Level::Info, "client", "connected to {} as {:?} (connection {id})", config.endpoint, config.role);
        let mut session = self.shared.session();
        // Connected is reported before the task can deliver any message.
        self.shared.emit_state(ConnectionState::Connected, StateReason::Requested);
        *session = Session::Connected(Connection::spawn(socket, id, Arc::downgrade(&self.shared)));
        Ok(())
    }

    /// Closes the socket (a close frame, then at most `grace` waiting for the
    /// service's answer) and waits for the connection task to end. Sends still
    /// queued are reported failed. Does nothing when not connected.
    pub async fn disconnect(&self, grace: Duration) {
        let connection = {
            let mut session = self.shared.session();
            match std::mem::replace(&mut *session, Session::Idle) {
                Session::Connected(connection) => connection,
                other => {
                    *session = other;
                    return;
                }
            }
        };
        connection.close(grace).await;
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
    /// blocks: the message is queued for the connection task, which either
    /// writes it or reports it failed through a [`StatusReport`] of origin
    /// [`StatusOrigin::Local`].
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
                let n = self.shared.next_correlation.fetch_add(1, Ordering::Relaxed);
                generated = format!("{}-{n}", self.shared.correlation_prefix);
                &generated
            }
        };
        let message = OutboundMessage::new(
            self.shared.config.role,
            action,
            recipient,
            &encode_payload(payload),
            Some(correlation_id),
        )?;
        let outgoing = Outgoing { frame: message.to_json(), correlation_id: correlation_id.to_owned() };
        match &*self.shared.session() {
            Session::Connected(connection) => connection.enqueue(outgoing)?,
            _ => return Err(ClientError::NotConnected),
        }
        Ok(correlation_id.to_owned())
    }

    /// The role this client connects as.
    pub fn role(&self) -> Role {
        self.shared.config.role
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let session = std::mem::replace(&mut *self.shared.session(), Session::Idle);
        if let Session::Connected(connection) = session {
            connection.close_in_background();
        }
    }
}
