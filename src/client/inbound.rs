//! Turning inbound frames into events: tolerant parsing, payload decoding, and
//! the optional holding of ICE candidates that arrive before their peer's SDP.

use super::metrics::{Counters, bump};
use super::{ClientConfig, ClientEvent, EventSink, ReceivedMessage, StatusOrigin, StatusReport};
use crate::log::{Level, log};
use crate::protocol::{IceCandidate, InboundError, InboundMessage, MessageType, SessionDescription, decode_payload};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const TARGET: &str = "client";
/// Peers remembered as having sent their SDP (256); the oldest is forgotten
/// beyond this, and its later candidates are held again until its next SDP (or
/// until the budget lets them go). A channel has at most 10 viewers at a time.
const MAX_PEERS_SEEN: usize = 256;

/// What the supervisor must act on after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notice {
    GoAway,
    ReconnectIceServer,
    /// An SDP offer was delivered (a storage session's offer, when one is awaited).
    OfferReceived,
}

/// Per-client inbound state; owned by the supervisor task.
pub(super) struct Inbound {
    sink: EventSink,
    counters: Arc<Counters>,
    /// Present when early candidates are held (`buffer_early_candidates`).
    early: Option<EarlyCandidates>,
}

/// ICE candidates that arrived before their peer's SDP, within a byte budget.
struct EarlyCandidates {
    budget: usize,
    /// Peers (None = the master) whose SDP has been delivered, oldest first; at
    /// most [`MAX_PEERS_SEEN`].
    sdp_seen: VecDeque<Option<String>>,
    /// Held candidates of every peer, oldest first.
    held: VecDeque<ReceivedMessage>,
    /// What `held` counts against the budget ([`held_size`]).
    held_bytes: usize,
}

/// The bytes a held candidate costs: the message itself and what it owns.
fn held_size(message: &ReceivedMessage) -> usize {
    let ice = message.ice.as_ref().map_or(0, |ice| {
        ice.candidate.len()
            + ice.sdp_mid.as_ref().map_or(0, String::len)
            + ice.username_fragment.as_ref().map_or(0, String::len)
    });
    std::mem::size_of::<ReceivedMessage>()
        + message.payload.len()
        + message.sender_client_id.as_ref().map_or(0, String::len)
        + ice
}

/// The peer a message is from, for logs.
fn peer_name(peer: &Option<String>) -> &str {
    peer.as_deref().unwrap_or("the master")
}

impl Inbound {
    pub fn new(sink: EventSink, counters: Arc<Counters>, config: &ClientConfig) -> Inbound {
        let early = config.buffer_early_candidates.then(|| EarlyCandidates {
            budget: config.early_candidate_budget,
            sdp_seen: VecDeque::new(),
            held: VecDeque::new(),
            held_bytes: 0,
        });
        Inbound { sink, counters, early }
    }

    fn emit(&self, event: ClientEvent) {
        (self.sink)(event);
    }

    /// Handles one text frame; returns a notice the supervisor acts on. The
    /// socket has bounded its length already.
    pub fn handle_text(&mut self, text: &str) -> Option<Notice> {
        let message = match InboundMessage::parse(text) {
            Ok(message) => message,
            Err(InboundError::Empty) => {
                log!(Level::Debug, TARGET, "skipped an empty frame");
                return None;
            }
            Err(e) => {
                log!(Level::Warn, TARGET, "skipped a frame: {e}");
                return None;
            }
        };
        match message.message_type {
            MessageType::SdpOffer | MessageType::SdpAnswer | MessageType::IceCandidate => {
                let offer = message.message_type == MessageType::SdpOffer;
                let received = decode(message)?;
                bump(&self.counters.messages_received);
                self.deliver(received);
                offer.then_some(Notice::OfferReceived)
            }
            MessageType::StatusResponse => {
                match message.status_response {
                    Some(status) => self.emit(ClientEvent::Status(StatusReport {
                        origin: StatusOrigin::Service,
                        status_code: status.status_code_number().unwrap_or(0),
                        correlation_id: status.correlation_id,
                        error_type: status.error_type,
                        description: status.description,
                    })),
                    None => log!(Level::Warn, TARGET, "skipped a STATUS_RESPONSE without statusResponse"),
                }
                None
            }
            MessageType::GoAway => {
                log!(Level::Info, TARGET, "service sent GO_AWAY");
                bump(&self.counters.go_aways);
                self.emit(ClientEvent::ServiceNotice(MessageType::GoAway));
                Some(Notice::GoAway)
            }
            MessageType::ReconnectIceServer => {
                log!(Level::Info, TARGET, "service sent RECONNECT_ICE_SERVER");
                self.emit(ClientEvent::ServiceNotice(MessageType::ReconnectIceServer));
                Some(Notice::ReconnectIceServer)
            }
            MessageType::Unknown(name) => {
                log!(Level::Warn, TARGET, "skipped a message of unknown type {name:?}");
                None
            }
        }
    }

    /// This client is writing an offer to `peer` (None = the master): a new
    /// negotiation starts, and the peer's candidates wait for its answer again.
    pub fn offer_sent(&mut self, peer: Option<&str>) {
        if let Some(early) = &mut self.early {
            early.sdp_seen.retain(|seen| seen.as_deref() != peer);
        }
    }

    fn deliver(&mut self, received: ReceivedMessage) {
        let Some(early) = &mut self.early else {
            self.emit(ClientEvent::Message(received));
            return;
        };
        let peer = received.sender_client_id.clone();
        let sdp_seen = early.sdp_seen.contains(&peer);
        if received.message_type == MessageType::IceCandidate {
            if sdp_seen {
                self.emit(ClientEvent::Message(received));
                return;
            }
            let size = held_size(&received);
            let mut overflow = Vec::new();
            if size > early.budget {
                overflow.push(received);
            } else {
                // Make room by letting the oldest go: early rather than lost.
                while early.held_bytes + size > early.budget {
                    let Some(oldest) = early.held.pop_front() else { break };
                    early.held_bytes -= held_size(&oldest);
                    overflow.push(oldest);
                }
                early.held_bytes += size;
                early.held.push_back(received);
            }
            let (budget, held_bytes) = (early.budget, early.held_bytes);
            self.counters.early_candidates_held_bytes.store(held_bytes as u64, Ordering::Relaxed);
            for candidate in overflow {
                log!(
                    Level::Warn,
                    TARGET,
                    "delivered a candidate from {} before its SDP: early candidates are held up to {budget} bytes",
                    peer_name(&candidate.sender_client_id)
                );
                bump(&self.counters.early_candidates_overflowed);
                self.emit(ClientEvent::Message(candidate));
            }
            return;
        }
        if !sdp_seen {
            // Forget the oldest peer, not all of them: a peer still trickling
            // must not have its candidates held again.
            if early.sdp_seen.len() == MAX_PEERS_SEEN {
                early.sdp_seen.pop_front();
            }
            early.sdp_seen.push_back(peer.clone());
        }
        let (released, kept): (VecDeque<_>, VecDeque<_>) =
            early.held.drain(..).partition(|held| held.sender_client_id == peer);
        early.held = kept;
        early.held_bytes -= released.iter().map(held_size).sum::<usize>();
        self.counters.early_candidates_held_bytes.store(early.held_bytes as u64, Ordering::Relaxed);
        self.emit(ClientEvent::Message(received));
        for candidate in released {
            self.emit(ClientEvent::Message(candidate));
        }
    }
}

/// Decodes the payload of an offer, answer or candidate; `None` (logged) when
/// it has none or it is not base64.
fn decode(message: InboundMessage) -> Option<ReceivedMessage> {
    let kind = message.message_type.as_str().to_owned();
    let Some(payload) = message.message_payload.as_deref().filter(|p| !p.is_empty()) else {
        log!(Level::Warn, TARGET, "skipped a {kind} without payload");
        return None;
    };
    let payload = match decode_payload(payload) {
        Ok(bytes) if !bytes.is_empty() => bytes,
        _ => {
            log!(Level::Warn, TARGET, "skipped a {kind} whose payload is not base64");
            return None;
        }
    };
    let (sdp, ice) = match message.message_type {
        MessageType::IceCandidate => (None, IceCandidate::parse(&payload).ok()),
        _ => (SessionDescription::parse(&payload).ok(), None),
    };
    if sdp.is_none() && ice.is_none() {
        log!(Level::Info, TARGET, "{kind} payload is not the usual JSON; delivered as raw bytes");
    }
    Some(ReceivedMessage {
        message_type: message.message_type,
        sender_client_id: message.sender_client_id,
        payload,
        sdp,
        ice,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::DEFAULT_EARLY_CANDIDATE_BUDGET;
    use crate::protocol::encode_payload;
    use std::sync::Mutex;

    fn frame(kind: &str, sender: Option<&str>, json: &str) -> String {
        let sender = sender.map(|s| format!(r#""senderClientId":"{s}","#)).unwrap_or_default();
        format!(r#"{{"messageType":"{kind}",{sender}"messagePayload":"{}"}}"#, encode_payload(json.as_bytes()))
    }

    fn candidate(sender: &str, label: &str) -> String {
        frame("ICE_CANDIDATE", Some(sender), &format!(r#"{{"candidate":"{label}"}}"#))
    }

    fn offer(sender: &str) -> String {
        frame("SDP_OFFER", Some(sender), r#"{"type":"offer","sdp":"v=0"}"#)
    }

    /// What an inbound delivered, as `sender:label` (sender or "master",
    /// candidate text or "sdp").
    type Delivered = Arc<Mutex<Vec<String>>>;

    /// An inbound that holds early candidates within `budget`, and what it delivered.
    fn holding(budget: usize) -> (Inbound, Arc<Counters>, Delivered) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sink: EventSink = Arc::new(move |event| {
            if let ClientEvent::Message(m) = event {
                let label = m.ice.map(|i| i.candidate).unwrap_or_else(|| "sdp".into());
                let sender = m.sender_client_id.unwrap_or_else(|| "master".into());
                sink_seen.lock().unwrap().push(format!("{sender}:{label}"));
            }
        });
        let config = ClientConfig {
            buffer_early_candidates: true,
            early_candidate_budget: budget,
            ..ClientConfig::master("arn:aws:kinesisvideo:us-west-2:1:channel/c/1", "ws://h")
        };
        let counters = Arc::new(Counters::default());
        (Inbound::new(sink, counters.clone(), &config), counters, seen)
    }

    fn labels(seen: &Delivered) -> Vec<String> {
        std::mem::take(&mut *seen.lock().unwrap())
    }

    #[test]
    fn early_candidates_are_held_until_the_peers_sdp() {
        let (mut inbound, _, seen) = holding(DEFAULT_EARLY_CANDIDATE_BUDGET);
        inbound.handle_text(&candidate("a", "a1"));
        inbound.handle_text(&candidate("b", "b1"));
        inbound.handle_text(&candidate("a", "a2"));
        assert!(seen.lock().unwrap().is_empty());
        inbound.handle_text(&offer("a"));
        inbound.handle_text(&candidate("a", "a3"));
        assert_eq!(labels(&seen), ["a:sdp", "a:a1", "a:a2", "a:a3"], "b's candidate stays held until b's SDP");
    }

    #[test]
    fn the_oldest_peer_is_forgotten_first() {
        let (mut inbound, _, seen) = holding(DEFAULT_EARLY_CANDIDATE_BUDGET);
        for i in 0..=MAX_PEERS_SEEN {
            inbound.handle_text(&offer(&format!("p{i}")));
        }
        seen.lock().unwrap().clear();
        // p0 was forgotten: its candidate waits for a new SDP; p1 is still known.
        inbound.handle_text(&candidate("p0", "c"));
        inbound.handle_text(&candidate("p1", "c"));
        assert_eq!(labels(&seen), ["p1:c"]);
    }

    #[test]
    fn a_full_hold_delivers_the_oldest_candidate_early() {
        let one = {
            let (mut inbound, counters, _) = holding(DEFAULT_EARLY_CANDIDATE_BUDGET);
            inbound.handle_text(&candidate("p0", "c0"));
            counters.early_candidates_held_bytes.load(Ordering::Relaxed) as usize
        };
        let budget = 3 * one;
        let (mut inbound, counters, seen) = holding(budget);
        for i in 0..5 {
            inbound.handle_text(&candidate(&format!("p{i}"), &format!("c{i}")));
            assert!(counters.early_candidates_held_bytes.load(Ordering::Relaxed) as usize <= budget);
        }
        assert_eq!(labels(&seen), ["p0:c0", "p1:c1"], "the oldest go first, before their SDP");
        assert_eq!(counters.early_candidates_overflowed.load(Ordering::Relaxed), 2);
        assert_eq!(counters.early_candidates_held_bytes.load(Ordering::Relaxed) as usize, budget);
        inbound.handle_text(&offer("p3"));
        assert_eq!(labels(&seen), ["p3:sdp", "p3:c3"]);
        assert_eq!(counters.early_candidates_held_bytes.load(Ordering::Relaxed) as usize, 2 * one);
        // A candidate larger than the whole budget is delivered at once.
        let (mut inbound, counters, seen) = holding(one - 1);
        inbound.handle_text(&candidate("p0", "c0"));
        assert_eq!(labels(&seen), ["p0:c0"]);
        assert_eq!(counters.early_candidates_held_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_offer_sent_makes_the_peer_wait_for_its_answer_again() {
        // A viewer: the master's messages carry no sender id.
        let (mut inbound, _, seen) = holding(DEFAULT_EARLY_CANDIDATE_BUDGET);
        let from_master = |kind: &str, json: &str| frame(kind, None, json);
        let answer = from_master("SDP_ANSWER", r#"{"type":"answer","sdp":"v=0"}"#);
        inbound.offer_sent(None);
        inbound.handle_text(&from_master("ICE_CANDIDATE", r#"{"candidate":"m1"}"#));
        inbound.handle_text(&answer);
        inbound.handle_text(&from_master("ICE_CANDIDATE", r#"{"candidate":"m2"}"#));
        assert_eq!(labels(&seen), ["master:sdp", "master:m1", "master:m2"]);
        // Renegotiation: the candidates of the new session wait for the new answer.
        inbound.offer_sent(None);
        inbound.handle_text(&from_master("ICE_CANDIDATE", r#"{"candidate":"m3"}"#));
        assert!(labels(&seen).is_empty());
        inbound.handle_text(&answer);
        assert_eq!(labels(&seen), ["master:sdp", "master:m3"]);

        // A master offering to one viewer: only that viewer waits again.
        let (mut inbound, _, seen) = holding(DEFAULT_EARLY_CANDIDATE_BUDGET);
        inbound.handle_text(&offer("a"));
        inbound.handle_text(&offer("b"));
        inbound.offer_sent(Some("a"));
        inbound.handle_text(&candidate("a", "a1"));
        inbound.handle_text(&candidate("b", "b1"));
        assert_eq!(labels(&seen), ["a:sdp", "b:sdp", "b:b1"]);
    }
}
