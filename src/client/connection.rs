//! One open WebSocket: how it is opened, and the task that owns it.
//!
//! The task is the only reader and writer of the socket. Sends reach it through
//! a bounded queue; it writes them in order, reads inbound frames and reports
//! them to the client's sink, and on exit reports every send it could not write.

use super::{
    ClientConfig, ClientError, ClientEvent, ConnectionState, EventSink, ReceivedMessage, Session, Shared, StateChange,
    StateReason, StatusOrigin, StatusReport,
};
use crate::log::{Level, log};
use crate::protocol::{
    IceCandidate, InboundError, InboundMessage, MessageType, Role, SessionDescription, decode_payload,
};
use futures_util::{SinkExt, StreamExt};
use std::sync::Weak;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Frames above this size make tungstenite fail the connection; smaller ones
/// above the configured inbound limit are skipped by the task instead.
const SOCKET_MAX_MESSAGE: usize = 1 << 20;
/// Sends written per flush when several are queued.
const WRITE_BATCH: usize = 32;
const TARGET: &str = "client";

/// A send accepted by the client, waiting for the socket.
pub(super) struct Outgoing {
    pub frame: String,
    pub correlation_id: String,
}

/// Percent-encodes everything but RFC 3986 unreserved characters (spec §2.1 step 5).
pub(crate) fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The WebSocket URL for the configured channel and role (spec §1.3).
pub(crate) fn connect_url(config: &ClientConfig) -> String {
    let base = config.endpoint.trim_end_matches('/');
    let has_path = base.splitn(4, '/').nth(3).is_some();
    let mut url =
        format!("{base}{}?X-Amz-ChannelARN={}", if has_path { "" } else { "/" }, uri_encode(&config.channel_arn));
    if let (Role::Viewer, Some(id)) = (config.role, &config.client_id) {
        url.push_str("&X-Amz-ClientId=");
        url.push_str(&uri_encode(id));
    }
    url
}

/// Opens the WebSocket for `config`. The one place the connection is set up.
pub(super) async fn open_socket(config: &ClientConfig) -> Result<Socket, ClientError> {
    let request =
        connect_url(config).into_client_request().map_err(|e| ClientError::InvalidConfig(format!("endpoint: {e}")))?;
    let ws_config =
        WebSocketConfig::default().max_message_size(Some(SOCKET_MAX_MESSAGE)).max_frame_size(Some(SOCKET_MAX_MESSAGE));
    match tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true).await {
        Ok((socket, _response)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let body: String = body.chars().take(512).collect();
            let error_type = response
                .headers()
                .get("x-amzn-ErrorType")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(':').next().unwrap_or(v).to_owned());
            Err(ClientError::Refused { status: response.status().as_u16(), error_type, body })
        }
        Err(tungstenite::Error::Io(e)) => Err(ClientError::Network(e.to_string())),
        Err(tungstenite::Error::Url(e)) => Err(ClientError::InvalidConfig(format!("endpoint: {e}"))),
        Err(e) => Err(ClientError::Handshake(e.to_string())),
    }
}

/// The client's handle on a running connection task.
pub(super) struct Connection {
    pub id: u64,
    outbound: mpsc::Sender<Outgoing>,
    stop: oneshot::Sender<Duration>,
    task: JoinHandle<()>,
}

impl Connection {
    /// Spawns the task that owns `socket` on the current runtime.
    pub fn spawn(socket: Socket, id: u64, shared: Weak<Shared>) -> Connection {
        let (sink, capacity, max_frame) = match shared.upgrade() {
            Some(s) => (s.sink.clone(), s.config.send_queue_capacity, s.config.max_inbound_frame_len),
            None => (std::sync::Arc::new(|_| {}) as EventSink, 1, 0),
        };
        let (outbound, outbound_rx) = mpsc::channel(capacity);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(socket, outbound_rx, stop_rx, Task { id, sink, shared, max_frame }));
        Connection { id, outbound, stop, task }
    }

    /// Queues a send without waiting.
    pub fn enqueue(&self, outgoing: Outgoing) -> Result<(), ClientError> {
        self.outbound.try_send(outgoing).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ClientError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => ClientError::NotConnected,
        })
    }

    /// Asks the task to close the socket and waits until it has ended.
    pub async fn close(self, grace: Duration) {
        let _ = self.stop.send(grace);
        let mut task = self.task;
        if tokio::time::timeout(grace + Duration::from_secs(1), &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Asks the task to close the socket, without waiting.
    pub fn close_in_background(self) {
        let _ = self.stop.send(Duration::from_secs(1));
    }
}

struct Task {
    id: u64,
    sink: EventSink,
    shared: Weak<Shared>,
    max_frame: usize,
}

impl Task {
    fn emit(&self, event: ClientEvent) {
        (self.sink)(event);
    }

    fn report_failed(&self, outgoing: Outgoing, why: &str) {
        self.emit(ClientEvent::Status(StatusReport {
            origin: StatusOrigin::Local,
            correlation_id: outgoing.correlation_id,
            error_type: Some("SendFailed".into()),
            status_code: 0,
            description: Some(why.to_owned()),
        }));
    }

    fn handle_text(&self, text: &str) {
        if text.len() > self.max_frame {
            log!(Level::Warn, TARGET, "skipped a {}-byte frame (limit {})", text.len(), self.max_frame);
            return;
        }
        let message = match InboundMessage::parse(text) {
            Ok(message) => message,
            Err(InboundError::Empty) => {
                log!(Level::Debug, TARGET, "skipped an empty frame");
                return;
            }
            Err(e) => {
                log!(Level::Warn, TARGET, "skipped a frame: {e}");
                return;
            }
        };
        match message.message_type {
            MessageType::SdpOffer | MessageType::SdpAnswer | MessageType::IceCandidate => self.deliver(message),
            MessageType::StatusResponse => match message.status_response {
                Some(status) => self.emit(ClientEvent::Status(StatusReport {
                    origin: StatusOrigin::Service,
                    status_code: status.status_code_number().unwrap_or(0),
                    correlation_id: status.correlation_id,
                    error_type: status.error_type,
                    description: status.description,
                })),
                None => log!(Level::Warn, TARGET, "skipped a STATUS_RESPONSE without statusResponse"),
            },
            MessageType::GoAway | MessageType::ReconnectIceServer => {
                log!(Level::Info, TARGET, "service notice {}", message.message_type.as_str());
                self.emit(ClientEvent::ServiceNotice(message.message_type));
            }
            MessageType::Unknown(name) => log!(Level::Warn, TARGET, "skipped a message of unknown type {name:?}"),
        }
    }

    fn deliver(&self, message: InboundMessage) {
        let kind = message.message_type.as_str().to_owned();
        let Some(payload) = message.message_payload.as_deref().filter(|p| !p.is_empty()) else {
            log!(Level::Warn, TARGET, "skipped a {kind} without payload");
            return;
        };
        let payload = match decode_payload(payload) {
            Ok(bytes) if !bytes.is_empty() => bytes,
            _ => {
                log!(Level::Warn, TARGET, "skipped a {kind} whose payload is not base64");
                return;
            }
        };
        let (sdp, ice) = match message.message_type {
            MessageType::IceCandidate => (None, IceCandidate::parse(&payload).ok()),
            _ => (SessionDescription::parse(&payload).ok(), None),
        };
        if sdp.is_none() && ice.is_none() {
            log!(Level::Info, TARGET, "{kind} payload is not the usual JSON; delivered as raw bytes");
        }
        self.emit(ClientEvent::Message(ReceivedMessage {
            message_type: message.message_type,
            sender_client_id: message.sender_client_id,
            payload,
            sdp,
            ice,
        }));
    }

    /// Marks the client idle if it still points at this connection, so that
    /// later sends fail at call time instead of being queued.
    fn detach(&self) {
        if let Some(shared) = self.shared.upgrade() {
            let mut session = shared.session();
            if matches!(&*session, Session::Connected(c) if c.id == self.id) {
                *session = Session::Idle;
            }
        }
    }
}

async fn write_batch(
    socket: &mut futures_util::stream::SplitSink<Socket, Message>,
    batch: &[Outgoing],
) -> Result<(), tungstenite::Error> {
    for outgoing in batch {
        socket.feed(Message::text(outgoing.frame.as_str())).await?;
    }
    socket.flush().await
}

async fn run(
    socket: Socket,
    mut outbound_rx: mpsc::Receiver<Outgoing>,
    mut stop_rx: oneshot::Receiver<Duration>,
    task: Task,
) {
    let (mut writer, mut reader) = socket.split();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let reason = loop {
        tokio::select! {
            grace = &mut stop_rx => {
                task.emit(ClientEvent::State(StateChange { state: ConnectionState::Closing, reason: StateReason::Requested }));
                let grace = grace.unwrap_or(Duration::from_secs(1));
                let _ = tokio::time::timeout(grace, async {
                    writer.send(Message::Close(None)).await?;
                    while let Some(frame) = reader.next().await {
                        if matches!(frame?, Message::Close(_)) {
                            break;
                        }
                    }
                    Ok::<(), tungstenite::Error>(())
                }).await;
                break StateReason::Requested;
            }
            first = outbound_rx.recv() => {
                let Some(first) = first else { break StateReason::Requested };
                batch.push(first);
                while batch.len() < WRITE_BATCH {
                    match outbound_rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                if let Err(e) = write_batch(&mut writer, &batch).await {
                    let why = format!("write failed: {e}");
                    for outgoing in batch.drain(..) {
                        task.report_failed(outgoing, &why);
                    }
                    break StateReason::ConnectionLost(why);
                }
                batch.clear();
            }
            frame = reader.next() => match frame {
                Some(Ok(Message::Text(text))) => task.handle_text(text.as_str()),
                Some(Ok(Message::Binary(data))) => {
                    log!(Level::Warn, TARGET, "skipped a {}-byte binary frame", data.len());
                }
                Some(Ok(Message::Close(frame))) => break StateReason::ClosedByService(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                Some(Err(e)) => break StateReason::ConnectionLost(e.to_string()),
                None => break StateReason::ConnectionLost("the socket closed".into()),
            }
        }
    };
    task.detach();
    outbound_rx.close();
    while let Ok(outgoing) = outbound_rx.try_recv() {
        task.report_failed(outgoing, "the connection closed before the message was written");
    }
    task.emit(ClientEvent::State(StateChange { state: ConnectionState::Disconnected, reason }));
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
