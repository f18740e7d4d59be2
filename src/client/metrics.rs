//! Counters a client keeps about itself, read as a [`Metrics`] snapshot.

use super::ConnectionState;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A snapshot of a client's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// The connection state now.
    pub state: ConnectionState,
    /// Sockets opened, the first one included.
    pub connects: u64,
    /// Sockets opened after a drop, a GO_AWAY or the age limit.
    pub reconnects: u64,
    /// Failed connect attempts.
    pub connect_failures: u64,
    /// Unix time in milliseconds of the last successful connect; 0 if none.
    pub last_connect_unix_ms: u64,
    /// Phases of the last successful connect, in microseconds: resolving the
    /// channel's endpoint and signing the URL (0 for a direct endpoint)…
    pub last_control_plane_us: u64,
    /// …the TLS handshake (0 for `ws://`)…
    pub last_tls_us: u64,
    /// …and the WebSocket upgrade.
    pub last_websocket_us: u64,
    /// Sends confirmed: the service's TCP acknowledged their last byte (where
    /// the platform has no such count, written to the socket). Each accepted
    /// send is counted once, here or in `messages_failed`.
    pub messages_sent: u64,
    /// Writes of a send again on a new socket, because the previous socket
    /// failed before the service acknowledged it (the service may have got it
    /// twice).
    pub messages_resent: u64,
    /// Sends written to the current socket and not confirmed yet.
    pub messages_unconfirmed: u64,
    /// Offers, answers and candidates received and delivered.
    pub messages_received: u64,
    /// Sends waiting in the queue now.
    pub messages_queued: u64,
    /// Sends reported failed (queue deadline, disconnect, or an SDP left
    /// unconfirmed by a failed socket with `resend_unconfirmed_sdp` off).
    pub messages_failed: u64,
    /// WebSocket pings sent (dead-link detection).
    pub pings_sent: u64,
    /// GO_AWAY messages received.
    pub go_aways: u64,
    /// The wait before the next reconnect attempt, in milliseconds; 0 when connected.
    pub current_backoff_ms: u64,
    /// Clock skew learnt from the service (service time minus local), in milliseconds.
    pub clock_skew_ms: i64,
    /// Times the client stopped reading its socket because the event
    /// receiver's backlog was full (see [`super::Backlog`]).
    pub backpressure_pauses: u64,
    /// Events the receiver holds now (0 without a backlog).
    pub events_queued: u64,
    /// Bytes of early ICE candidates held now, waiting for their peer's SDP;
    /// never above `ClientConfig::early_candidate_budget`.
    pub early_candidates_held_bytes: u64,
    /// Early candidates delivered before their peer's SDP because the hold was
    /// full (see `ClientConfig::early_candidate_budget`).
    pub early_candidates_overflowed: u64,
    /// Sockets the kernel failed because the peer stopped acknowledging
    /// (`ClientConfig::tcp_user_timeout`: TCP user timeout or keepalive), each
    /// followed by a reconnect.
    pub dead_link_detections: u64,
    /// Successful JoinStorageSession / JoinStorageSessionAsViewer calls.
    pub storage_joins: u64,
    /// Duration of the last successful join call, in microseconds.
    pub last_join_latency_us: u64,
    /// From the start of the last join to the storage session's offer, in
    /// microseconds; 0 until an offer came.
    pub time_to_storage_offer_us: u64,
}

/// Atomic backing store of [`Metrics`]; written by the supervisor task.
#[derive(Default)]
pub(super) struct Counters {
    pub state: AtomicU8,
    pub connects: AtomicU64,
    pub reconnects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub last_connect_unix_ms: AtomicU64,
    pub last_control_plane_us: AtomicU64,
    pub last_tls_us: AtomicU64,
    pub last_websocket_us: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_resent: AtomicU64,
    pub messages_unconfirmed: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_failed: AtomicU64,
    pub pings_sent: AtomicU64,
    pub go_aways: AtomicU64,
    pub current_backoff_ms: AtomicU64,
    pub clock_skew_ms: AtomicI64,
    pub backpressure_pauses: AtomicU64,
    pub early_candidates_held_bytes: AtomicU64,
    pub early_candidates_overflowed: AtomicU64,
    pub dead_link_detections: AtomicU64,
    pub storage_joins: AtomicU64,
    pub last_join_latency_us: AtomicU64,
    pub time_to_storage_offer_us: AtomicU64,
}

pub(super) fn state_to_u8(state: ConnectionState) -> u8 {
    match state {
        ConnectionState::Disconnected => 0,
        ConnectionState::Connecting => 1,
        ConnectionState::Connected => 2,
        ConnectionState::Closing => 3,
        ConnectionState::Reconnecting => 4,
    }
}

fn state_from_u8(value: u8) -> ConnectionState {
    match value {
        1 => ConnectionState::Connecting,
        2 => ConnectionState::Connected,
        3 => ConnectionState::Closing,
        4 => ConnectionState::Reconnecting,
        _ => ConnectionState::Disconnected,
    }
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn set_state(&self, state: ConnectionState) {
        self.state.store(state_to_u8(state), Ordering::Release);
    }

    pub fn state(&self) -> ConnectionState {
        state_from_u8(self.state.load(Ordering::Acquire))
    }

    /// Records a successful connect and its phases.
    pub fn connected(&self, reconnect: bool, control_plane: Duration, tls: Duration, websocket: Duration) {
        bump(&self.connects);
        if reconnect {
            bump(&self.reconnects);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_connect_unix_ms.store(now.as_millis() as u64, Ordering::Relaxed);
        self.last_control_plane_us.store(control_plane.as_micros() as u64, Ordering::Relaxed);
        self.last_tls_us.store(tls.as_micros() as u64, Ordering::Relaxed);
        self.last_websocket_us.store(websocket.as_micros() as u64, Ordering::Relaxed);
        self.current_backoff_ms.store(0, Ordering::Relaxed);
    }

    /// The counters now, with `queued` sends and `events_queued` events held.
    pub fn snapshot(&self, queued: usize, events_queued: usize) -> Metrics {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            state: self.state(),
            connects: read(&self.connects),
            reconnects: read(&self.reconnects),
            connect_failures: read(&self.connect_failures),
            last_connect_unix_ms: read(&self.last_connect_unix_ms),
            last_control_plane_us: read(&self.last_control_plane_us),
            last_tls_us: read(&self.last_tls_us),
            last_websocket_us: read(&self.last_websocket_us),
            messages_sent: read(&self.messages_sent),
            messages_resent: read(&self.messages_resent),
            messages_unconfirmed: read(&self.messages_unconfirmed),
            messages_received: read(&self.messages_received),
            messages_queued: queued as u64,
            messages_failed: read(&self.messages_failed),
            pings_sent: read(&self.pings_sent),
            go_aways: read(&self.go_aways),
            current_backoff_ms: read(&self.current_backoff_ms),
            clock_skew_ms: self.clock_skew_ms.load(Ordering::Relaxed),
            backpressure_pauses: read(&self.backpressure_pauses),
            events_queued: events_queued as u64,
            early_candidates_held_bytes: read(&self.early_candidates_held_bytes),
            early_candidates_overflowed: read(&self.early_candidates_overflowed),
            dead_link_detections: read(&self.dead_link_detections),
            storage_joins: read(&self.storage_joins),
            last_join_latency_us: read(&self.last_join_latency_us),
            time_to_storage_offer_us: read(&self.time_to_storage_offer_us),
        }
    }
}
