//! WebRTC ingestion (spec §1.4, §6.9, §7.4): the storage session of each
//! channel with media storage enabled, created by JoinStorageSession and
//! JoinStorageSessionAsViewer, and its peer. The routing rules while storage
//! is enabled live in [`super::channels`]; the configuration calls in
//! [`super::control`].
//!
//! A session has a client id: `storage-<n>` (n counts sessions of the whole
//! emulator) for the built-in peer, or the id of the external peer attached
//! with [`super::Emulator::attach_storage_peer`]. The built-in peer is a
//! virtual viewer of the channel: on each join it sends the joining party an
//! SDP_OFFER (H.264 video and Opus audio, `recvonly`) and three ICE
//! candidates through the data plane, as a viewer would (an absent master gets
//! them stored for the message TTL), and a task reads what is sent to it and
//! records the answers and candidates. The external peer is told of each join
//! with a [`STORAGE_JOIN`] frame and does the rest itself.
//!
//! A session ends `storage_session_max_duration` after it started, or
//! `storage_session_idle_timeout` after its last activity (a join, or a message
//! to the built-in peer); the next join starts a new one. Lock order: the
//! session table, then the registry.

use super::channels::{ConnectionKey, Endpoint, Outgoing, PeerHandle, Routing, StoragePeer};
use super::http::{HttpError, JsonObject, required_str};
use super::{Shared, Target, bump, epoch_millis, lock};
use crate::protocol::{
    Action, IceCandidate, InboundMessage, MessageType, SdpType, SessionDescription, decode_payload, validate_client_id,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The emulator-only message type that tells an external storage peer about a
/// join: `{"messageType":"STORAGE_JOIN","channelArn":ARN,"role":"MASTER"}`, or
/// with `"role":"VIEWER","clientId":ID` for JoinStorageSessionAsViewer.
pub const STORAGE_JOIN: &str = "STORAGE_JOIN";

/// Candidates (and viewer answers) a session records at most; later ones are
/// counted only.
const MAX_RECORDED: usize = 64;

/// What one channel's latest storage session did, for tests
/// ([`super::Emulator::storage_sessions`], `GET /admin/storage-sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageSessionReport {
    /// The channel's name.
    pub channel: String,
    /// The session's client id (the sender id of its offers).
    pub session_id: String,
    /// True when an external peer plays the session.
    pub external: bool,
    /// JoinStorageSession calls served by this session.
    pub joins: u64,
    /// JoinStorageSessionAsViewer calls served by this session.
    pub viewer_joins: u64,
    /// Offers the built-in peer sent (or, external, STORAGE_JOIN notices sent).
    pub offers_sent: u64,
    /// Offers not sent because of [`super::Emulator::drop_storage_offers`].
    pub offers_dropped: u64,
    /// The SDP text of the master's latest answer to the built-in peer.
    pub answer: Option<String>,
    /// The master's candidates to the built-in peer (`candidate` text), at most 64.
    pub candidates: Vec<String>,
    /// Candidates from the master counted in all (recorded or not).
    pub candidates_received: u64,
    /// (client id, SDP text) of the viewers' answers to the built-in peer.
    pub viewer_answers: Vec<(String, String)>,
    /// Unix milliseconds when the session started.
    pub started_unix_ms: u64,
    /// Unix milliseconds of its last activity.
    pub last_activity_unix_ms: u64,
    /// False once it ended (maximum duration, idle timeout, storage disabled,
    /// peer changed).
    pub active: bool,
}

struct Session {
    report: StorageSessionReport,
    started: Instant,
    last_activity: Instant,
    /// Ends the built-in peer's task.
    stop: Option<Arc<Notify>>,
    /// The built-in peer's registration.
    key: Option<ConnectionKey>,
}

#[derive(Default)]
struct ChannelStorage {
    external_peer: Option<String>,
    session: Option<Session>,
}

/// Every channel's storage state; behind the emulator's storage mutex.
#[derive(Default)]
pub(super) struct Sessions {
    channels: HashMap<String, ChannelStorage>,
    next_id: u64,
    /// Offers of built-in peers still to drop (fault).
    drop_offers: u64,
}

impl Sessions {
    /// The reports of every channel's latest session, by channel name.
    fn reports(&self, now: Instant, limits: (Duration, Duration)) -> Vec<StorageSessionReport> {
        let mut reports: Vec<StorageSessionReport> = self
            .channels
            .values()
            .filter_map(|storage| storage.session.as_ref())
            .map(|session| {
                let mut report = session.report.clone();
                report.active &= !session.expired(now, limits);
                report
            })
            .collect();
        reports.sort_by(|a, b| a.channel.cmp(&b.channel));
        reports
    }
}

impl Session {
    fn expired(&self, now: Instant, (max_duration, idle): (Duration, Duration)) -> bool {
        now >= deadline(self.started, max_duration) || now >= deadline(self.last_activity, idle)
    }

    fn deadline(&self, (max_duration, idle): (Duration, Duration)) -> Instant {
        deadline(self.started, max_duration).min(deadline(self.last_activity, idle))
    }
}

fn deadline(start: Instant, after: Duration) -> Instant {
    start.checked_add(after).unwrap_or_else(|| start + Duration::from_secs(86_400 * 365))
}

fn unix_ms() -> u64 {
    u64::try_from(epoch_millis()).unwrap_or(u64::MAX)
}

fn limits(shared: &Shared) -> (Duration, Duration) {
    (shared.config.storage_session_max_duration, shared.config.storage_session_idle_timeout)
}

/// A join request, checked.
pub(super) struct Join {
    arn: String,
    name: String,
    /// The viewer of JoinStorageSessionAsViewer.
    viewer: Option<String>,
}

/// Checks a join's body (`channelArn`, and `clientId` for a viewer) and the
/// channel: 404 ResourceNotFoundException for an unknown one, 400
/// InvalidArgumentException when its media storage is not enabled.
pub(super) fn check_join(shared: &Shared, input: &JsonObject, as_viewer: bool) -> Result<Join, HttpError> {
    let arn = required_str(input, "channelArn")?;
    super::control::check_arn(arn)?;
    let viewer = if as_viewer {
        let id = required_str(input, "clientId")?;
        validate_client_id(id).map_err(HttpError::invalid_argument)?;
        Some(id.to_owned())
    } else {
        None
    };
    let info = lock(&shared.registry)
        .by_arn(arn)
        .ok_or_else(|| HttpError::not_found("The requested channel is not found or not active."))?;
    if !info.media_storage.enabled {
        return Err(HttpError::invalid_argument("The channel does not have media storage enabled."));
    }
    Ok(Join { arn: info.arn, name: info.name, viewer })
}

/// Serves a checked join: starts a session if none is live, counts the join,
/// and has the session's peer offer to the joining party.
pub(super) fn join(shared: &Arc<Shared>, join: Join) {
    let now = Instant::now();
    let limits = limits(shared);
    let mut sessions = lock(&shared.storage);
    let sessions = &mut *sessions;
    let storage = sessions.channels.entry(join.arn.clone()).or_default();
    if storage.session.as_ref().is_some_and(|session| session.expired(now, limits)) {
        end(shared, &join.arn, storage);
    }
    if storage.session.as_ref().is_none_or(|session| !session.report.active) {
        sessions.next_id += 1;
        let external = storage.external_peer.clone();
        storage.session = Some(start(shared, &join, external, &mut sessions.next_id, now));
    }
    let Some(session) = storage.session.as_mut() else { return };
    session.last_activity = now;
    session.report.last_activity_unix_ms = unix_ms();
    let to = match &join.viewer {
        None => {
            session.report.joins += 1;
            Endpoint::Master
        }
        Some(id) => {
            session.report.viewer_joins += 1;
            lock(&shared.registry).add_storage_viewer(&join.arn, id);
            Endpoint::Viewer(id.clone())
        }
    };
    if session.report.external {
        let mut notice = json!({ "messageType": STORAGE_JOIN, "channelArn": join.arn });
        match &join.viewer {
            None => notice["role"] = json!("MASTER"),
            Some(id) => {
                notice["role"] = json!("VIEWER");
                notice["clientId"] = json!(id);
            }
        }
        let target = Target::viewer(&join.arn, &session.report.session_id);
        for peer in lock(&shared.registry).select(&target) {
            if peer.outbox.send(Outgoing::now(Message::text(notice.to_string()))).is_ok() {
                session.report.offers_sent += 1;
            }
        }
        shared.log(format_args!("storage session {}: join notice for {to}", session.report.session_id));
        return;
    }
    if sessions.drop_offers > 0 {
        sessions.drop_offers -= 1;
        session.report.offers_dropped += 1;
        shared.log(format_args!("storage session {}: offer to {to} dropped (fault)", session.report.session_id));
        return;
    }
    let Some(key) = &session.key else { return };
    let id = &session.report.session_id;
    let mut frames = vec![(Action::SdpOffer, offer_payload(id))];
    frames.extend(candidate_payloads(id, shared.local_addr.port()).into_iter().map(|p| (Action::IceCandidate, p)));
    let mut registry = lock(&shared.registry);
    for (action, payload) in frames {
        let frame = InboundMessage {
            message_type: MessageType::parse(action.as_str()),
            sender_client_id: Some(id.clone()),
            message_payload: Some(STANDARD.encode(payload)),
            status_response: None,
        }
        .to_json();
        let routing = registry.route(key, &to, action, Utf8Bytes::from(frame), now);
        count_routing(shared, &routing);
    }
    session.report.offers_sent += 1;
    shared.log(format_args!("storage session {id}: offer and candidates sent to {to}"));
}

fn count_routing(shared: &Shared, routing: &Routing) {
    let counters = &shared.counters;
    match routing {
        Routing::Delivered => bump(&counters.messages_relayed, 1),
        Routing::Stored { replaced, expired } => {
            bump(&counters.messages_stored, 1);
            bump(&counters.messages_replaced, *replaced as u64);
            bump(&counters.messages_expired, *expired as u64);
        }
        Routing::SenderNotCurrent | Routing::BlockedByStorage => {}
    }
}

/// A new session: registers the storage peer in the channel and, for the
/// built-in one, spawns the task that reads its messages. The session's
/// client id is the `external` peer's, or `storage-<next_id>`, counting
/// `next_id` up past ids a viewer of the channel is connected with (the
/// built-in peer never replaces a viewer).
fn start(shared: &Arc<Shared>, join: &Join, external: Option<String>, next_id: &mut u64, now: Instant) -> Session {
    let mut registry = lock(&shared.registry);
    let (id, external) = match external {
        Some(id) => (id, true),
        None => {
            let taken = |id: u64| registry.is_connected(&join.arn, &Endpoint::Viewer(format!("storage-{id}")));
            while taken(*next_id) {
                shared.log(format_args!("storage session id storage-{next_id} is a viewer's; skipped"));
                *next_id += 1;
            }
            (format!("storage-{next_id}"), false)
        }
    };
    let started_unix_ms = unix_ms();
    let report = StorageSessionReport {
        channel: join.name.clone(),
        session_id: id.clone(),
        external,
        joins: 0,
        viewer_joins: 0,
        offers_sent: 0,
        offers_dropped: 0,
        answer: None,
        candidates: Vec::new(),
        candidates_received: 0,
        viewer_answers: Vec::new(),
        started_unix_ms,
        last_activity_unix_ms: started_unix_ms,
        active: true,
    };
    let peer = StoragePeer { client_id: id.clone(), built_in: !external, viewers: Default::default() };
    let mut session = Session { report, started: now, last_activity: now, stop: None, key: None };
    registry.set_storage_peer(&join.arn, Some(peer));
    if !external {
        let (outbox, inbox) = mpsc::unbounded_channel();
        let key = ConnectionKey {
            channel_arn: join.arn.clone(),
            endpoint: Endpoint::Viewer(id.clone()),
            connection_id: shared.next_connection_id.fetch_add(1, Ordering::Relaxed),
        };
        let stop = Arc::new(Notify::new());
        // Fails only when the channel was deleted meanwhile: no peer then.
        if registry.register_virtual(&key, PeerHandle { outbox, kill: stop.clone() }) {
            shared.spawn_tracked(read_messages(shared.clone(), join.arn.clone(), id.clone(), inbox, stop.clone()));
            session.stop = Some(stop);
            session.key = Some(key);
        }
    }
    shared.log(format_args!("storage session {id} started on {}", join.arn));
    session
}

/// Ends the channel's session: marks it inactive, unregisters its peer and
/// stops its task. The report stays until the next session replaces it.
fn end(shared: &Shared, arn: &str, storage: &mut ChannelStorage) {
    let Some(session) = storage.session.as_mut() else { return };
    if !session.report.active {
        return;
    }
    session.report.active = false;
    let mut registry = lock(&shared.registry);
    if registry.storage_peer(arn).is_some_and(|peer| peer.client_id == session.report.session_id) {
        registry.set_storage_peer(arn, None);
    }
    if let Some(stop) = session.stop.take() {
        stop.notify_one();
    }
    shared.log(format_args!("storage session {} ended", session.report.session_id));
}

/// Ends the session of `arn`, if any (storage disabled, channel deleted).
pub(super) fn end_channel(shared: &Shared, arn: &str) {
    let mut sessions = lock(&shared.storage);
    if let Some(storage) = sessions.channels.get_mut(arn) {
        end(shared, arn, storage);
    }
}

/// Attaches an external peer with `client_id` to the channel `arn` (or, with
/// `None`, goes back to the built-in peer); the current session ends.
pub(super) fn attach_peer(shared: &Shared, arn: &str, client_id: Option<String>) {
    let mut sessions = lock(&shared.storage);
    let storage = sessions.channels.entry(arn.to_owned()).or_default();
    end(shared, arn, storage);
    storage.external_peer = client_id;
}

/// Drops the next `count` offers of built-in peers (a test fault).
pub(super) fn drop_offers(shared: &Shared, count: u64) {
    lock(&shared.storage).drop_offers = count;
}

/// The reports of every channel's latest session.
pub(super) fn reports(shared: &Shared) -> Vec<StorageSessionReport> {
    lock(&shared.storage).reports(Instant::now(), limits(shared))
}

/// The built-in peer's task: records what the master and the joined viewers
/// send it, and ends the session at its deadline.
async fn read_messages(
    shared: Arc<Shared>,
    arn: String,
    id: String,
    mut inbox: UnboundedReceiver<Outgoing>,
    stop: Arc<Notify>,
) {
    let mut stopped = shared.stop.subscribe();
    loop {
        let due = {
            let sessions = lock(&shared.storage);
            let session = sessions.channels.get(&arn).and_then(|storage| storage.session.as_ref());
            match session {
                Some(session) if session.report.session_id == id && session.report.active => {
                    session.deadline(limits(&shared))
                }
                _ => return,
            }
        };
        tokio::select! {
            _ = stopped.wait_for(|stopped| *stopped) => return,
            _ = stop.notified() => return,
            _ = tokio::time::sleep_until(due.into()) => {
                let now = Instant::now();
                let mut sessions = lock(&shared.storage);
                if let Some(storage) = sessions.channels.get_mut(&arn)
                    && storage.session.as_ref().is_some_and(|s| s.report.session_id == id && s.expired(now, limits(&shared)))
                {
                    end(&shared, &arn, storage);
                    return;
                }
            }
            item = inbox.recv() => match item {
                Some(Outgoing::Frame(Message::Text(text), _)) => record(&shared, &arn, &id, &text),
                Some(_) => {}
                None => return,
            },
        }
    }
}

/// Records one message to the built-in peer.
fn record(shared: &Shared, arn: &str, id: &str, text: &str) {
    let Ok(message) = InboundMessage::parse(text) else { return };
    let payload = message.message_payload.as_deref().and_then(|p| decode_payload(p).ok()).unwrap_or_default();
    let sdp = || SessionDescription::parse(&payload).ok().map(|description| description.sdp);
    let mut sessions = lock(&shared.storage);
    let Some(session) = sessions.channels.get_mut(arn).and_then(|storage| storage.session.as_mut()) else { return };
    if session.report.session_id != id {
        return;
    }
    session.last_activity = Instant::now();
    session.report.last_activity_unix_ms = unix_ms();
    let report = &mut session.report;
    match (message.message_type, message.sender_client_id) {
        (MessageType::SdpAnswer, None) => report.answer = sdp(),
        (MessageType::IceCandidate, None) => {
            report.candidates_received += 1;
            if report.candidates.len() < MAX_RECORDED
                && let Ok(candidate) = IceCandidate::parse(&payload)
            {
                report.candidates.push(candidate.candidate);
            }
        }
        (MessageType::SdpAnswer, Some(viewer)) if report.viewer_answers.len() < MAX_RECORDED => {
            report.viewer_answers.push((viewer, sdp().unwrap_or_default()));
        }
        _ => {}
    }
}

/// Stable pseudo-random hex for a session's ICE credentials and fingerprint.
fn session_hex(id: &str, salt: &str) -> String {
    let mut hasher = DefaultHasher::new();
    (id, salt).hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The built-in peer's offer (payload JSON): H.264 video and Opus audio, both
/// `recvonly`, bundled, trickle ICE, DTLS `actpass`.
fn offer_payload(id: &str) -> String {
    let ufrag = &session_hex(id, "ufrag")[..8];
    let pwd = format!("{}{}", session_hex(id, "pwd"), &session_hex(id, "pwd2")[..8]);
    let fingerprint: Vec<String> = (0..4)
        .flat_map(|part| {
            let hex = session_hex(id, &format!("fp{part}"));
            (0..8).map(move |i| hex[2 * i..2 * i + 2].to_uppercase()).collect::<Vec<_>>()
        })
        .collect();
    let session_number = u64::from_str_radix(&session_hex(id, "o")[..15], 16).unwrap_or(1);
    let common = format!(
        "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
         a=ice-options:trickle\r\na=fingerprint:sha-256 {}\r\na=setup:actpass\r\n",
        fingerprint.join(":")
    );
    let sdp = format!(
        "v=0\r\no=- {session_number} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=msid-semantic: WMS\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\n{common}a=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n\
         a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 goog-remb\r\na=rtcp-fb:102 transport-cc\r\n\
         a=rtcp-fb:102 ccm fir\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
         a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
         a=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{common}a=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
         a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    );
    SessionDescription { sdp_type: SdpType::Offer, sdp }.to_json()
}

/// Three candidates of the built-in peer (payload JSON): host UDP and TCP
/// on loopback, and a server-reflexive one from a documentation address.
fn candidate_payloads(id: &str, port: u16) -> Vec<String> {
    let ufrag = &session_hex(id, "ufrag")[..8];
    let udp = port.wrapping_add(1).max(1024);
    [
        format!("candidate:1 1 udp 2122260223 127.0.0.1 {udp} typ host generation 0 ufrag {ufrag}"),
        format!("candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0 ufrag {ufrag}"),
        format!(
            "candidate:3 1 udp 1686052607 203.0.113.7 {udp} typ srflx raddr 127.0.0.1 rport {udp} generation 0 ufrag {ufrag}"
        ),
    ]
    .into_iter()
    .map(|candidate| {
        let username_fragment = Some(ufrag.to_owned());
        IceCandidate { candidate, sdp_mid: Some("0".to_owned()), sdp_mline_index: Some(0), username_fragment }.to_json()
    })
    .collect()
}

/// The JSON of the admin report.
pub(super) fn report_json(report: &StorageSessionReport) -> Value {
    json!({
        "channel": report.channel,
        "session_id": report.session_id,
        "external": report.external,
        "joins": report.joins,
        "viewer_joins": report.viewer_joins,
        "offers_sent": report.offers_sent,
        "offers_dropped": report.offers_dropped,
        "answer": report.answer,
        "candidates": report.candidates,
        "candidates_received": report.candidates_received,
        "viewer_answers": report.viewer_answers.iter().map(|(id, sdp)| json!({"client_id": id, "sdp": sdp})).collect::<Vec<_>>(),
        "started_unix_ms": report.started_unix_ms,
        "last_activity_unix_ms": report.last_activity_unix_ms,
        "active": report.active,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_is_a_recvonly_h264_opus_offer() {
        let offer = offer_payload("storage-1");
        let parsed = SessionDescription::parse(offer.as_bytes()).unwrap();
        assert_eq!(parsed.sdp_type, SdpType::Offer);
        for line in ["m=video 9 UDP/TLS/RTP/SAVPF", "a=rtpmap:102 H264/90000", "a=rtpmap:111 opus/48000/2"] {
            assert!(parsed.sdp.contains(line), "{line} missing");
        }
        assert_eq!(parsed.sdp.matches("a=recvonly").count(), 2);
        assert_ne!(offer_payload("storage-2"), offer, "each session has its own credentials");
        let candidates = candidate_payloads("storage-1", 9000);
        assert_eq!(candidates.len(), 3);
        assert!(candidates.iter().all(|c| IceCandidate::parse(c.as_bytes()).is_ok()));
    }
}
