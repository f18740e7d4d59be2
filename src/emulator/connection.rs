//! One admitted WebSocket connection: a reader loop that validates, throttles
//! and routes every frame (spec §3, §6, §7.1) and enforces the idle timeout and
//! maximum age (§9.2, §9.3), and a writer task that drains the connection's
//! outbox (with GO_AWAY and frame-delay faults). The reader runs on the task
//! spawned by the upgrade; only the writer touches the socket's sending half,
//! except for the ping / close replies that tungstenite writes while reading.

use super::channels::{Admission, ConnectionKey, Endpoint, Outbox, Outgoing, PeerHandle, Routing};
use super::faults::{ICE_PER_SECOND, SDP_PER_SECOND, TokenBucket};
use super::{REPLACED_REASON, Shared, bump, lock};
use crate::protocol::{
    Action, Field, InboundMessage, MAX_DESCRIPTION_LEN, MessageType, RawOutbound, Role, StatusResponse,
    ValidationError, prefix_within, validate_id,
};
use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
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

/// The GO_AWAY frame (spec §4.2, §9.4).
const GO_AWAY: &str = r#"{"messageType":"GO_AWAY"}"#;

/// Longest close reason RFC 6455 allows (125-byte control payload minus the code).
const MAX_CLOSE_REASON: usize = 123;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// An admitted connection, registered in its channel until dropped.
pub(super) struct Session {
    shared: Arc<Shared>,
    key: ConnectionKey,
    /// This connection's own writer queue, for STATUS_RESPONSE and close frames.
    outbox: Outbox,
    /// Ends the connection at once (drop fault).
    kill: Arc<Notify>,
    /// The restart epoch the connection was admitted in.
    epoch: u64,
    connected_at: Instant,
    /// Message quotas: SDP_OFFER, SDP_ANSWER, ICE_CANDIDATE.
    quotas: [TokenBucket; 3],
}

/// A close frame; `reason` is cut to the protocol's 123 bytes.
pub(super) fn close_frame(code: u16, reason: &str) -> Message {
    let reason = prefix_within(reason, MAX_CLOSE_REASON);
    Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from(reason) }))
}

impl Session {
    /// Accounts for a connection that [`super::channels::Registry::admit`]
    /// registered, and closes the connection it replaced.
    pub(super) fn new(
        shared: Arc<Shared>,
        key: ConnectionKey,
        handle: PeerHandle,
        admission: Admission,
        epoch: u64,
    ) -> Session {
        let counters = &shared.counters;
        counters.open_connections.fetch_add(1, Ordering::Relaxed);
        bump(&counters.messages_relayed, admission.delivered as u64);
        bump(&counters.messages_expired, admission.expired as u64);
        let now = Instant::now();
        let session = Session {
            shared,
            key,
            outbox: handle.outbox,
            kill: handle.kill,
            epoch,
            connected_at: now,
            quotas: [
                TokenBucket::new(SDP_PER_SECOND, now),
                TokenBucket::new(SDP_PER_SECOND, now),
                TokenBucket::new(ICE_PER_SECOND, now),
            ],
        };
        session.log(format_args!(
            "connected to {}; {} stored messages delivered",
            session.key.channel_arn, admission.delivered
        ));
        if let Some(previous) = admission.replaced {
            // An error means that connection is already closing.
            let _ = previous.send(Outgoing::now(close_frame(1000, REPLACED_REASON)));
            session.log(format_args!("replaced an earlier connection"));
        }
        session
    }

    fn log(&self, message: fmt::Arguments<'_>) {
        self.shared.log(format_args!("#{} {}: {message}", self.key.connection_id, self.key.endpoint));
    }

    fn role(&self) -> Role {
        self.key.endpoint.role()
    }

    /// Takes a token of the action's quota, when quotas are on.
    fn within_quota(&mut self, action: Action) -> bool {
        if !self.shared.limits().quotas {
            return true;
        }
        let bucket = match action {
            Action::SdpOffer => &mut self.quotas[0],
            Action::SdpAnswer => &mut self.quotas[1],
            Action::IceCandidate => &mut self.quotas[2],
        };
        bucket.take(Instant::now())
    }

    /// Validates one text frame and routes it, or rejects it.
    fn handle_text(&mut self, text: &str) {
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
        if !self.within_quota(message.action) {
            bump(&self.shared.counters.messages_throttled, 1);
            let per_second = if message.action == Action::IceCandidate { ICE_PER_SECOND } else { SDP_PER_SECOND };
            let description =
                format!("{} rate exceeded: {per_second} per second per connection", message.action.as_str());
            self.report(raw.correlation_id.as_deref(), "ClientLimitExceededException", description);
            return;
        }
        let log_size = self.shared.config.received_log;
        if log_size > 0 {
            let mut received = lock(&self.shared.received);
            if received.len() == log_size {
                received.pop_front();
            }
            let id = raw.correlation_id.clone().unwrap_or_default();
            received.push_back((self.key.endpoint.to_string(), id));
        }
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
            Routing::BlockedByStorage => {
                bump(&counters.messages_blocked_by_storage, 1);
                self.log(format_args!("{action} to {recipient} dropped: media storage is enabled"));
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
        self.report(correlation_id, "InvalidArgumentException", error.to_string());
    }

    /// Sends a `"400"` STATUS_RESPONSE of `error_type` when `correlation_id` is
    /// valid; otherwise only logs.
    fn report(&self, correlation_id: Option<&str>, error_type: &str, description: String) {
        let correlation_id = correlation_id.filter(|id| validate_id(Field::CorrelationId, id).is_ok());
        let Some(correlation_id) = correlation_id else {
            self.log(format_args!("dropped a request: {error_type}: {description}"));
            return;
        };
        let status = InboundMessage {
            message_type: MessageType::StatusResponse,
            sender_client_id: None,
            message_payload: None,
            status_response: Some(StatusResponse {
                correlation_id: correlation_id.to_owned(),
                error_type: Some(error_type.to_owned()),
                status_code: Some("400".to_owned()),
                description: Some(prefix_within(&description, MAX_DESCRIPTION_LEN).to_owned()),
                success: None,
            }),
        };
        if self.outbox.send(Outgoing::now(Message::text(status.to_json()))).is_ok() {
            bump(&self.shared.counters.status_responses_sent, 1);
        }
        self.log(format_args!("STATUS_RESPONSE {error_type} for {correlation_id}"));
    }

    /// Queues a close frame after everything already queued.
    fn close(&self, code: CloseCode, reason: &'static str) {
        // An error means the writer has already stopped.
        let _ = self.outbox.send(Outgoing::now(close_frame(code.into(), reason)));
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

/// Completes the upgrade and serves the connection until the peer leaves, the
/// socket fails, a frame is too big, a limit or fault ends it, or the emulator
/// stops.
pub(super) async fn run(mut session: Session, upgrade: OnUpgrade, outbox: UnboundedReceiver<Outgoing>) {
    let upgraded = match upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            session.log(format_args!("upgrade failed: {error}"));
            return;
        }
    };
    let shared = session.shared.clone();
    let max_frame_len = shared.config.max_frame_len;
    // A small read buffer: tungstenite's default 128 KiB stays resident per
    // connection, which is what limits how many sockets the emulator holds.
    let config = WebSocketConfig::default()
        .max_frame_size(Some(max_frame_len))
        .max_message_size(Some(max_frame_len))
        .read_buffer_size(4096);
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), tungstenite::protocol::Role::Server, Some(config))
            .await;
    let (sink, mut frames) = socket.split();
    let mut writer = tokio::spawn(write_frames(shared.clone(), sink, outbox));
    let mut stop = shared.stop.subscribe();
    let mut epoch = shared.epoch.subscribe();
    let mut limits = shared.limits.subscribe();
    let kill = session.kill.clone();
    let mut closing = false;
    let mut abrupt = false;
    let mut last_frame = session.connected_at;
    loop {
        let current = *limits.borrow_and_update();
        let idle_at = deadline(last_frame, current.idle_timeout);
        let age_at = deadline(session.connected_at, current.max_connection_age);
        let frame = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped), if !closing => {
                closing = true;
                session.close(CloseCode::Away, "emulator shutting down");
                continue;
            }
            _ = epoch.wait_for(|epoch| *epoch != session.epoch) => {
                abrupt = true;
                break;
            }
            _ = kill.notified() => {
                abrupt = true;
                break;
            }
            // The writer ends after a write error, or when a close frame it sent
            // went unanswered for the grace period.
            _ = &mut writer => break,
            _ = limits.changed() => continue,
            _ = tokio::time::sleep_until(idle_at.into()), if !closing => {
                closing = true;
                bump(&shared.counters.idle_timeouts, 1);
                session.close(CloseCode::Away, "idle timeout");
                continue;
            }
            _ = tokio::time::sleep_until(age_at.into()), if !closing => {
                closing = true;
                bump(&shared.counters.max_age_closes, 1);
                session.close(CloseCode::Away, "maximum connection duration");
                continue;
            }
            frame = frames.next() => frame,
        };
        last_frame = Instant::now();
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
    if abrupt {
        // A cut network or a restart does not take back what the emulator's TCP
        // already acknowledged: the frames it holds readable are still routed.
        while let Some(Some(Ok(message))) = frames.next().now_or_never() {
            if let Message::Text(text) = message {
                session.handle_text(&text);
            }
        }
        // No close frame, nothing flushed: the socket just goes away.
        writer.abort();
        bump(&shared.counters.connections_dropped, 1);
        session.log(format_args!("dropped"));
        return;
    }
    // Unregistering drops the last senders of the outbox, so the writer ends once
    // it has written what is queued.
    drop(session);
    if !writer.is_finished() && tokio::time::timeout(WRITER_FLUSH_GRACE, &mut writer).await.is_err() {
        writer.abort();
    }
}

/// `start + after`, or far in the future when that does not fit.
fn deadline(start: Instant, after: Duration) -> Instant {
    start.checked_add(after).unwrap_or_else(|| start + Duration::from_secs(86_400 * 365))
}

/// Writes queued frames in order. Ends after a write error, when the session
/// is gone (every sender dropped), or after sending a close frame: then it waits
/// up to [`CLOSE_HANDSHAKE_GRACE`] for the session to end on the peer's answer.
/// A GO_AWAY schedules a 1001 close after its grace; a frame-delay fault holds
/// each frame until its queueing instant plus the delay.
async fn write_frames(
    shared: Arc<Shared>,
    mut sink: SplitSink<Socket, Message>,
    mut outbox: UnboundedReceiver<Outgoing>,
) {
    let mut close_at: Option<Instant> = None;
    loop {
        let scheduled_close = async {
            match close_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let item = tokio::select! {
            _ = scheduled_close => Outgoing::now(close_frame(CloseCode::Away.into(), "going away")),
            item = outbox.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let message = match item {
            Outgoing::GoAway(grace) => {
                let at = Instant::now() + grace;
                close_at = Some(close_at.map_or(at, |earlier| earlier.min(at)));
                Message::text(GO_AWAY)
            }
            Outgoing::Frame(message, queued) => {
                let delay = shared.frame_delay();
                if !delay.is_zero() {
                    tokio::time::sleep_until((queued + delay).into()).await;
                }
                message
            }
        };
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
