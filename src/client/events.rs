//! What a client reports to the application.

use crate::protocol::{IceCandidate, MessageType, SessionDescription};

/// Connection state as the application sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Not connected: before the first connect, after a disconnect, or after the
    /// connection was lost.
    Disconnected,
    /// Opening the socket.
    Connecting,
    /// The socket is open; sends are written to it.
    Connected,
    /// Closing the socket at the application's request.
    Closing,
    /// The connection was lost (or could not be made) and the client is
    /// retrying with backoff; sends wait in the queue. A degraded state.
    Reconnecting,
}

/// Why the state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateReason {
    /// The application asked for it (connect or disconnect).
    Requested,
    /// The connect attempt failed; the text says why.
    ConnectFailed(String),
    /// The service closed the socket (close frame, with its code if any).
    ClosedByService(Option<u16>),
    /// The socket failed (read or write error); the text says why.
    ConnectionLost(String),
}

/// A state change, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The new state.
    pub state: ConnectionState,
    /// Why it changed.
    pub reason: StateReason,
}

/// An SDP offer, SDP answer or ICE candidate from the other side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// `SdpOffer`, `SdpAnswer` or `IceCandidate`.
    pub message_type: MessageType,
    /// The viewer that sent it (when the master receives); `None` on messages
    /// from the master.
    pub sender_client_id: Option<String>,
    /// The decoded payload (JSON text in practice).
    pub payload: Vec<u8>,
    /// Set for offers and answers whose payload parsed.
    pub sdp: Option<SessionDescription>,
    /// Set for candidates whose payload parsed.
    pub ice: Option<IceCandidate>,
}

/// Where a failure report comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusOrigin {
    /// A STATUS_RESPONSE frame from the service.
    Service,
    /// The library: an accepted send that could not be written to the socket.
    Local,
}

/// A report that a send identified by `correlation_id` failed (or, for service
/// reports with a 2xx code, succeeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The service or the library.
    pub origin: StatusOrigin,
    /// The correlation id of the send it is about.
    pub correlation_id: String,
    /// The service's `errorType`, e.g. `InvalidArgumentException`.
    pub error_type: Option<String>,
    /// Numeric status code; 0 when the service sent none or a non-numeric one.
    pub status_code: u32,
    /// Free text from the service, or the library's reason for a local report.
    pub description: Option<String>,
}

/// Everything a client reports, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// An offer, answer or candidate from the other side.
    Message(ReceivedMessage),
    /// A report about one of this client's sends.
    Status(StatusReport),
    /// The connection state changed.
    State(StateChange),
    /// GO_AWAY or RECONNECT_ICE_SERVER from the service.
    ServiceNotice(MessageType),
    /// A new ICE server list of `count` entries was fetched; read it with
    /// `Client::ice_servers`.
    IceServersChanged {
        /// Entries in the new list.
        count: usize,
    },
    /// WebRTC ingestion: the client joined the channel's storage session, or
    /// the session's offer arrived (see `AwsConfig::media_storage`).
    Storage(StorageEvent),
}

/// The steps of joining a channel's storage session (WebRTC ingestion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageEvent {
    /// JoinStorageSession (JoinStorageSessionAsViewer for a viewer) succeeded;
    /// the session's SDP offer is awaited.
    Joined,
    /// The storage session's SDP offer arrived (it was delivered as a
    /// [`ClientEvent::Message`], with the session's sender id, just before).
    OfferReceived,
}
