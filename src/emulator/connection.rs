//! One admitted WebSocket connection: a reader loop that validates and routes
//! every frame (spec §3, §6), and a writer task that drains the connection's
//! outbox. The reader runs on the task spawned by the upgrade; only the writer
//! touches the socket's sending half, except for the ping / close replies that
//! tungstenite writes while reading.

use super::channels::{Admission, ConnectionKey, Endpoint, Outbox, Routing};
use super::{REPLACED_REASON, Shared, bump, lock};
use crate::protocol::{
    Field, InboundMessage, MAX_DESCRIPTION_LEN, MessageType, RawOutbound, Role, StatusResponse, ValidationError,
    validate_id,
};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

/// How long a finished connection's writer may take to flush its last frames.
const WRITER_FLUSH_GRACE: Duration = Duration::from_secs(2);

/// How long the emulator waits for the answer to a close frame it sent (to a
/// replaced connection, on shutdown) before dropping the socket.
pub(super) const CLOSE_HANDSHAKE_GRACE: Duration = Duration::from_secs(1);

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// An admitted connection, registered in its channel until dropped.
pub(super) struct Session {
    shared: Arc<Shared>,
    key: ConnectionKey,
    /// This connection's own writer queue, for STATUS_RESPONSE and close frames.
    outbox: Outbox,
}

fn close_frame(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

impl Session {
    /// Accounts for a connection that [`super::channels::Registry::admit`]
    /// registered, and closes the connection it replaced.
    pub(super) fn new(shared: Arc<Shared>, key: ConnectionKey, outbox: Outbox, admission: Admission) -> Session {
        let counters = &shared.counters;
        counters.open_connections.fetch_add(1, Ordering::Relaxed);
        bump(&counters.messages_relayed, admission.delivered as u64);
        bump(&counters.messages_expired, admission.expired as u64);
        let session = Session { shared, key, outbox };
        session.log(format_args!(
            "connected to {}; {} stored messages delivered",
            session.key.channel_arn, admission.delivered
        ));
        if let Some(previous) = admission.replaced {
            // An error means that connection is already closing.
            let _ = previous.send(close_frame(CloseCode::Normal, REPLACED_REASON));
            session.log(format_args!("replaced an earlier connection"));
        }
        session
    }

    fn log(&self, message: fmt::Arguments<'_>) {
        self.shared.log(format_args!("#{} {}: {message}", self.key.connection_id, self.key.endpoint));
    }

    fn role(&self) -> Role {
        match self.key.endpoint {
            Endpoint::Master => Role::Master,
            Endpoint::Viewer(_) => Role::Viewer,
        }
    }

    /// Validates one text frame and routes it, or rejects it.
    fn handle_text(&self, text: &str) {
        let Some(raw) = RawOutbound::parse(text) else {
            self.reject_unparsed(format_args!("a frame that is not a JSON object"));
            return;
        };
        let message = match raw.validate(self.role()) {
            Ok(message) => message,
            Err(error) => {
                self.reject(raw.correlation_id.as_deref(), &error);
                return;
            }
        };
        let (recipient, sender_client_id) = match (&self.key.endpoint, message.recipient_client_id) {
            (Endpoint::Viewer(id), _) => (Endpoint::Master, Some(id.clone())),
            (Endpoint::Master, Some(viewer)) => (Endpoint::Viewer(viewer), None),
            (Endpoint::Master, None) => {
                let error = ValidationError::MasterWithoutRecipient;
                self.reject(raw.correlation_id.as_deref(), &error);
                return;
            }
        };
        let frame = InboundMessage {
            message_type: MessageType::parse(message.action.as_str()),
            sender_client_id,
            message_payload: Some(message.message_payload),
            status_response: None,
        }
        .to_json();
        let routing = lock(&self.shared.registry).route(
            &self.key,
            &recipient,
            message.action,
            Utf8Bytes::from(frame),
            Instant::now(),
            self.shared.config.message_ttl,
        );
        let counters = &self.shared.counters;
        let action = message.action.as_str();
        match routing {
            Routing::Delivered => {
                bump(&counters.messages_relayed, 1);
                self.log(format_args!("{action} relayed to {recipient}"));
            }
            Routing::Stored { replaced, expired } => {
                bump(&counters.messages_stored, 1);
                bump(&counters.messages_replaced, replaced as u64);
                bump(&counters.messages_expired, expired as u64);
                self.log(format_args!("{action} stored for absent {recipient} ({replaced} replaced)"));
            }
            Routing::SenderNotCurrent => {
                self.log(format_args!("{action} dropped: this connection was replaced"));
            }
        }
    }

    /// Counts and logs a frame that could not even be read as a request.
    fn reject_unparsed(&self, what: fmt::Arguments<'_>) {
        bump(&self.shared.counters.frames_rejected, 1);
        self.log(format_args!("dropped {what}"));
    }

    /// Answers an invalid request with a STATUS_RESPONSE when it carries a valid
    /// `correlationId`; drops it otherwise (spec §3.2).
    fn reject(&self, correlation_id: Option<&str>, error: &ValidationError) {
        bump(&self.shared.counters.frames_rejected, 1);
        let correlation_id = correlation_id.filter(|id| validate_id(Field::CorrelationId, id).is_ok());
        let Some(correlation_id) = correlation_id else {
            self.log(format_args!("dropped an invalid request: {error}"));
            return;
        };
        let status = InboundMessage {
            message_type: MessageType::StatusResponse,
            sender_client_id: None,
            message_payload: None,
            status_response: Some(StatusResponse {
                correlation_id: correlation_id.to_owned(),
                error_type: Some("InvalidArgumentException".to_owned()),
                status_code: Some("400".to_owned()),
                description: Some(truncate_description(error.to_string())),
                success: None,
            }),
        };
        if self.outbox.send(Message::text(status.to_json())).is_ok() {
            bump(&self.shared.counters.status_responses_sent, 1);
        }
        self.log(format_args!("STATUS_RESPONSE for {correlation_id}: {error}"));
    }

    /// Queues a close frame after everything already queued.
    fn close(&self, code: CloseCode, reason: &'static str) {
        // An error means the writer has already stopped.
        let _ = self.outbox.send(close_frame(code, reason));
        self.log(format_args!("closing: {reason}"));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        lock(&self.shared.registry).leave(&self.key);
        self.shared.counters.open_connections.fetch_sub(1, Ordering::Relaxed);
        self.log(format_args!("disconnected"));
    }
}

/// Cuts `text` to the spec's 1,024-character limit for a description (spec §4.1).
fn truncate_description(mut text: String) -> String {
    if text.len() > MAX_DESCRIPTION_LEN {
        let mut end = MAX_DESCRIPTION_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Completes the upgrade and serves the connection until the peer leaves, the
/// socket fails, a frame is too big, or the emulator stops.
pub(super) async fn run(session: Session, upgrade: OnUpgrade, outbox: UnboundedReceiver<Message>) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            session.log(format_args!("upgrade failed: {error}"));
            return;
        }
    };
    let max_frame_len = session.shared.config.max_frame_len;
    let config = WebSocketConfig::default().max_frame_size(Some(max_frame_len)).max_message_size(Some(max_frame_len));
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), tungstenite::protocol::Role::Server, Some(config))
            .await;
    let (sink, mut frames) = socket.split();
    let mut writer = tokio::spawn(write_frames(sink, outbox));
    let mut stop = session.shared.stop.subscribe();
    let mut stopping = false;
    loop {
        let frame = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped), if !stopping => {
                stopping = true;
                session.close(CloseCode::Away, "emulator shutting down");
                continue;
            }
            // The writer ends after a write error, or when a close frame it sent
            // went unanswered for the grace period.
            _ = &mut writer => break,
            frame = frames.next() => frame,
        };
        match frame {
            None => break,
            Some(Ok(Message::Text(text))) => session.handle_text(&text),
            Some(Ok(Message::Binary(data))) => {
                session.reject_unparsed(format_args!("a binary frame of {} bytes", data.len()));
            }
            // Pings are answered by tungstenite while it reads; nothing to do for
            // pongs, and a close is answered the same way before the stream ends.
            Some(Ok(_)) => {}
            Some(Err(tungstenite::Error::Capacity(error))) => {
                // tokio-tungstenite ends the stream after any error.
                session.reject_unparsed(format_args!("an oversized frame ({error})"));
                session.close(CloseCode::Size, "frame too big");
                break;
            }
            Some(Err(error)) => {
                session.log(format_args!("read failed: {error}"));
                break;
            }
        }
    }
    // Unregistering drops the last senders of the outbox, so the writer ends once
    // it has written what is queued.
    drop(session);
    if !writer.is_finished() && tokio::time::timeout(WRITER_FLUSH_GRACE, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// Writes queued frames in order. Ends after a write error, when the session
/// is gone (every sender dropped), or after sending a close frame: then it waits
/// up to [`CLOSE_HANDSHAKE_GRACE`] for the session to end on the peer's answer.
async fn write_frames(mut sink: SplitSink<Socket, Message>, mut outbox: UnboundedReceiver<Message>) {
    while let Some(message) = outbox.recv().await {
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() {
            return;
        }
        if closing {
            // Nothing may follow a close frame; discard what is still queued.
            let session_gone = async { while outbox.recv().await.is_some() {} };
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_GRACE, session_gone).await;
            return;
        }
    }
    // Best effort: the peer may already be gone.
    let _ = sink.close().await;
}
