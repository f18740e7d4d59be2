//! Turning inbound frames into events: tolerant parsing, payload decoding, and
//! the optional holding of ICE candidates that arrive before their peer's SDP.

use super::metrics::{Counters, bump};
use super::{ClientEvent, EventSink, ReceivedMessage, StatusOrigin, StatusReport};
use crate::log::{Level, log};
use crate::protocol::{IceCandidate, InboundError, InboundMessage, MessageType, SessionDescription, decode_payload};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

const TARGET: &str = "client";
/// Candidates held per peer at most; later ones are delivered at once.
const MAX_HELD_PER_PEER: usize = 100;
/// Peers remembered as having sent their SDP (the oldest is forgotten beyond
/// this), and peers whose candidates may be held at once.
const MAX_PEERS_SEEN: usize = 1024;

/// What the supervisor must act on after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Notice {
    GoAway,
    ReconnectIceServer,
}

/// Per-client inbound state; owned by the supervisor task.
pub(super) struct Inbound {
    sink: EventSink,
    counters: Arc<Counters>,
    max_frame: usize,
    hold_early_candidates: bool,
    /// Peers (None = the master) whose SDP has been delivered.
    sdp_seen: HashSet<Option<String>>,
    /// `sdp_seen` in insertion order, to forget the oldest first.
    sdp_order: VecDeque<Option<String>>,
    held: HashMap<Option<String>, Vec<ReceivedMessage>>,
}

impl Inbound {
    pub fn new(sink: EventSink, counters: Arc<Counters>, max_frame: usize, hold_early_candidates: bool) -> Inbound {
        Inbound {
            sink,
            counters,
            max_frame,
            hold_early_candidates,
            sdp_seen: HashSet::new(),
            sdp_order: VecDeque::new(),
            held: HashMap::new(),
        }
    }

    fn emit(&self, event: ClientEvent) {
        (self.sink)(event);
    }

    /// Handles one text frame; returns a notice the supervisor acts on.
    pub fn handle_text(&mut self, text: &str) -> Option<Notice> {
        if text.len() > self.max_frame {
            log!(Level::Warn, TARGET, "skipped a {}-byte frame (limit {})", text.len(), self.max_frame);
            return None;
        }
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
                if let Some(received) = decode(message) {
                    bump(&self.counters.messages_received);
                    self.deliver(received);
                }
                None
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

    fn deliver(&mut self, received: ReceivedMessage) {
        if !self.hold_early_candidates {
            self.emit(ClientEvent::Message(received));
            return;
        }
        let peer = received.sender_client_id.clone();
        if received.message_type == MessageType::IceCandidate {
            // Held only while the peer's SDP is awaited, up to a bound per peer
            // and on the number of peers; beyond that, delivered at once.
            let room = self.held.contains_key(&peer) || self.held.len() < MAX_PEERS_SEEN;
            if !self.sdp_seen.contains(&peer) && room {
                let held = self.held.entry(peer).or_default();
                if held.len() < MAX_HELD_PER_PEER {
                    held.push(received);
                    return;
                }
            }
            self.emit(ClientEvent::Message(received));
            return;
        }
        self.emit(ClientEvent::Message(received));
        let held = self.held.remove(&peer).unwrap_or_default();
        if self.sdp_seen.insert(peer.clone()) {
            // Forget the oldest peer, not all of them: a peer still trickling
            // must not have its candidates held again.
            self.sdp_order.push_back(peer);
            if self.sdp_order.len() > MAX_PEERS_SEEN
                && let Some(oldest) = self.sdp_order.pop_front()
            {
                self.sdp_seen.remove(&oldest);
            }
        }
        for candidate in held {
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
    use crate::protocol::encode_payload;
    use std::sync::Mutex;

    fn frame(kind: &str, sender: &str, json: &str) -> String {
        format!(
            r#"{{"messageType":"{kind}","senderClientId":"{sender}","messagePayload":"{}"}}"#,
            encode_payload(json.as_bytes())
        )
    }

    #[test]
    fn early_candidates_are_held_until_the_peers_sdp() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sink: EventSink = Arc::new(move |event| {
            if let ClientEvent::Message(m) = event {
                let label = m.ice.map(|i| i.candidate).unwrap_or_else(|| "sdp".into());
                sink_seen.lock().unwrap().push((m.sender_client_id.unwrap(), label));
            }
        });
        let mut inbound = Inbound::new(sink, Arc::new(Counters::default()), 65536, true);
        inbound.handle_text(&frame("ICE_CANDIDATE", "a", r#"{"candidate":"a1"}"#));
        inbound.handle_text(&frame("ICE_CANDIDATE", "b", r#"{"candidate":"b1"}"#));
        inbound.handle_text(&frame("ICE_CANDIDATE", "a", r#"{"candidate":"a2"}"#));
        assert!(seen.lock().unwrap().is_empty());
        inbound.handle_text(&frame("SDP_OFFER", "a", r#"{"type":"offer","sdp":"v=0"}"#));
        inbound.handle_text(&frame("ICE_CANDIDATE", "a", r#"{"candidate":"a3"}"#));
        let got = seen.lock().unwrap().clone();
        let want: Vec<(String, String)> = [("a", "sdp"), ("a", "a1"), ("a", "a2"), ("a", "a3")]
            .iter()
            .map(|(p, l)| (p.to_string(), l.to_string()))
            .collect();
        assert_eq!(got, want, "b's candidate stays held until b's SDP");
    }

    #[test]
    fn the_oldest_peer_is_forgotten_first() {
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = delivered.clone();
        let sink: EventSink = Arc::new(move |event| {
            if let ClientEvent::Message(m) = event {
                sink_seen.lock().unwrap().push(m.sender_client_id.unwrap());
            }
        });
        let mut inbound = Inbound::new(sink, Arc::new(Counters::default()), 65536, true);
        for i in 0..=MAX_PEERS_SEEN {
            inbound.handle_text(&frame("SDP_OFFER", &format!("p{i}"), r#"{"type":"offer","sdp":"v=0"}"#));
        }
        delivered.lock().unwrap().clear();
        // p0 was forgotten: its candidate waits for a new SDP; p1 is still known.
        inbound.handle_text(&frame("ICE_CANDIDATE", "p0", r#"{"candidate":"c"}"#));
        inbound.handle_text(&frame("ICE_CANDIDATE", "p1", r#"{"candidate":"c"}"#));
        assert_eq!(*delivered.lock().unwrap(), ["p1".to_owned()]);
    }
}
