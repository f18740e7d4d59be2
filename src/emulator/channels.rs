//! Channel state: who is connected, and messages waiting for absent recipients
//! (spec §6). Plain data behind the emulator's one mutex: no I/O, no `.await`;
//! delivery is a push onto the recipient's unbounded writer queue.

use crate::protocol::Action;
use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The queue feeding one connection's writer task.
pub(super) type Outbox = UnboundedSender<Message>;

/// A party of a channel: its master, or a viewer by client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Endpoint {
    Master,
    Viewer(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Master => f.write_str("master"),
            Endpoint::Viewer(id) => write!(f, "viewer {id}"),
        }
    }
}

/// One admitted connection.
struct Peer {
    connection_id: u64,
    outbox: Outbox,
}

/// A message kept for a recipient that is not connected (spec §6.5).
struct StoredMessage {
    from: Endpoint,
    to: Endpoint,
    action: Action,
    frame: Utf8Bytes,
    expires_at: Instant,
}

#[derive(Default)]
struct Channel {
    peers: HashMap<Endpoint, Peer>,
    /// Every stored message of the channel, oldest first.
    stored: Vec<StoredMessage>,
}

impl Channel {
    fn viewer_count(&self) -> usize {
        self.peers.keys().filter(|endpoint| matches!(endpoint, Endpoint::Viewer(_))).count()
    }

    /// Whether `key` is the connection registered for its endpoint.
    fn is_current(&self, key: &ConnectionKey) -> bool {
        self.peers.get(&key.endpoint).is_some_and(|peer| peer.connection_id == key.connection_id)
    }

    /// Drops stored messages past their TTL; returns how many.
    fn discard_expired(&mut self, now: Instant) -> usize {
        let before = self.stored.len();
        self.stored.retain(|message| message.expires_at > now);
        before - self.stored.len()
    }
}

/// Identifies one admitted connection.
#[derive(Debug)]
pub(super) struct ConnectionKey {
    pub(super) channel_arn: String,
    pub(super) endpoint: Endpoint,
    /// Unique per emulator; tells a connection from the one that replaced it.
    pub(super) connection_id: u64,
}

/// Every channel, by ARN, plus the name → ARN index.
#[derive(Default)]
pub(super) struct Registry {
    channels: HashMap<String, Channel>,
    arn_by_name: HashMap<String, String>,
}

/// Why a connect request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    UnknownChannel,
    ViewerLimit,
}

/// What admitting a connection did.
pub(super) struct Admission {
    /// Stored messages now queued on the new connection.
    pub(super) delivered: usize,
    /// Stored messages (for anyone on the channel) discarded after their TTL.
    pub(super) expired: usize,
    /// The writer queue of the connection this one replaces.
    pub(super) replaced: Option<Outbox>,
}

/// Where a routed message went.
pub(super) enum Routing {
    Delivered,
    Stored {
        replaced: usize,
        expired: usize,
    },
    /// The sender was replaced (or its channel is gone): the message is dropped.
    SenderNotCurrent,
}

impl Registry {
    /// Returns the ARN of channel `name`, creating it with `make_arn(epoch millis)`.
    pub(super) fn create_channel(&mut self, name: &str, make_arn: impl FnOnce(u128) -> String) -> String {
        if let Some(arn) = self.arn_by_name.get(name) {
            return arn.clone();
        }
        let arn = make_arn(super::epoch_millis());
        self.arn_by_name.insert(name.to_owned(), arn.clone());
        self.channels.insert(arn.clone(), Channel::default());
        arn
    }

    pub(super) fn channel_arn(&self, name: &str) -> Option<String> {
        self.arn_by_name.get(name).cloned()
    }

    /// Registers connection `key`, replacing an earlier connection with the same
    /// endpoint, and queues the endpoint's stored messages on `outbox`.
    pub(super) fn admit(
        &mut self,
        key: &ConnectionKey,
        outbox: Outbox,
        max_viewers: usize,
        now: Instant,
    ) -> Result<Admission, Refusal> {
        let endpoint = &key.endpoint;
        let channel = self.channels.get_mut(&key.channel_arn).ok_or(Refusal::UnknownChannel)?;
        let is_new_viewer = matches!(endpoint, Endpoint::Viewer(_)) && !channel.peers.contains_key(endpoint);
        if is_new_viewer && channel.viewer_count() >= max_viewers {
            return Err(Refusal::ViewerLimit);
        }
        let expired = channel.discard_expired(now);
        let mut delivered = 0;
        channel.stored.retain(|message| {
            if message.to != *endpoint {
                return true;
            }
            // The receiver is alive (the caller holds it), so this cannot fail.
            if outbox.send(Message::Text(message.frame.clone())).is_ok() {
                delivered += 1;
            }
            false
        });
        let previous = channel.peers.insert(endpoint.clone(), Peer { connection_id: key.connection_id, outbox });
        Ok(Admission { delivered, expired, replaced: previous.map(|peer| peer.outbox) })
    }

    /// Unregisters connection `key`, unless a newer one has replaced it.
    pub(super) fn leave(&mut self, key: &ConnectionKey) {
        if let Some(channel) = self.channels.get_mut(&key.channel_arn) {
            if channel.is_current(key) {
                channel.peers.remove(&key.endpoint);
            }
        }
    }

    /// Sends `frame` (of `action`) from connection `sender` to `to`, or stores it
    /// for `ttl` when `to` is not connected.
    pub(super) fn route(
        &mut self,
        sender: &ConnectionKey,
        to: &Endpoint,
        action: Action,
        frame: Utf8Bytes,
        now: Instant,
        ttl: Duration,
    ) -> Routing {
        let Some(channel) = self.channels.get_mut(&sender.channel_arn) else {
            return Routing::SenderNotCurrent;
        };
        if !channel.is_current(sender) {
            return Routing::SenderNotCurrent;
        }
        let from = &sender.endpoint;
        if let Some(peer) = channel.peers.get(to) {
            // Fails only while the recipient's socket is closing; store it then.
            if peer.outbox.send(Message::Text(frame.clone())).is_ok() {
                return Routing::Delivered;
            }
        }
        let expired = channel.discard_expired(now);
        let before = channel.stored.len();
        if matches!(action, Action::SdpOffer | Action::SdpAnswer) {
            channel.stored.retain(|message| message.action != action || message.to != *to || message.from != *from);
        }
        let replaced = before - channel.stored.len();
        channel.stored.push(StoredMessage { from: from.clone(), to: to.clone(), action, frame, expires_at: now + ttl });
        Routing::Stored { replaced, expired }
    }
}
