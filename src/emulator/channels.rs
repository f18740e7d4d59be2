//! Channel state: the channels themselves (spec §8.2–§8.3), who is connected,
//! and messages waiting for absent recipients (spec §6). Plain data behind the
//! emulator's one mutex: no I/O, no `.await`; delivery is a push onto the
//! recipient's unbounded writer queue.

use super::faults::{CONNECTS_PER_SECOND, Target, TokenBucket};
use crate::protocol::{Action, Role};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// What a connection's writer task is asked to do, in queue order.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// Write a frame, queued at the given instant (a frame-delay fault holds
    /// it until that instant plus the delay).
    Frame(Message, Instant),
    /// Write GO_AWAY, then close with 1001 after the grace period.
    GoAway(Duration),
}

impl Outgoing {
    pub(super) fn now(message: Message) -> Outgoing {
        Outgoing::Frame(message, Instant::now())
    }
}

/// The queue feeding one connection's writer task.
pub(super) type Outbox = UnboundedSender<Outgoing>;

/// Handles on a connection for faults: its queue, and the switch that ends it
/// at once without a close frame.
#[derive(Clone)]
pub(super) struct PeerHandle {
    pub(super) outbox: Outbox,
    pub(super) kill: Arc<Notify>,
}

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

impl Endpoint {
    pub(super) fn role(&self) -> Role {
        match self {
            Endpoint::Master => Role::Master,
            Endpoint::Viewer(_) => Role::Viewer,
        }
    }
}

/// One admitted connection.
struct Peer {
    connection_id: u64,
    handle: PeerHandle,
}

/// A message kept for a recipient that is not connected (spec §6.5).
struct StoredMessage {
    from: Endpoint,
    to: Endpoint,
    action: Action,
    frame: Utf8Bytes,
    expires_at: Instant,
}

/// What DescribeSignalingChannel reports about a channel.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ChannelInfo {
    pub(super) name: String,
    pub(super) arn: String,
    /// How long messages for absent recipients are kept (spec §6.5).
    pub(super) message_ttl: Duration,
    /// Epoch seconds, with milliseconds.
    pub(super) creation_time: f64,
    /// `[a-zA-Z0-9]+`, 20 characters.
    pub(super) version: String,
    pub(super) tags: Vec<(String, String)>,
    /// Hex label of the channel's `m-`, `v-`, `r-` and `w-` endpoints (spec §1.2).
    pub(super) endpoint_label: String,
    /// UpdateMediaStorageConfiguration's last word (spec §8.7).
    pub(super) media_storage: MediaStorage,
}

/// A channel's media storage configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct MediaStorage {
    /// `Status` `ENABLED`: master and viewers talk to the storage session only.
    pub(super) enabled: bool,
    /// `StreamARN`, as last given.
    pub(super) stream_arn: Option<String>,
}

/// The party of a channel standing for its storage session, for routing
/// while media storage is enabled (spec §6.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StoragePeer {
    /// The client id the session's messages carry and the master answers to.
    pub(super) client_id: String,
    /// True for the emulator's built-in peer (registered as a virtual viewer,
    /// not counted against the viewer limit and not a connection for faults);
    /// false for an external peer, a real viewer connection with that id.
    pub(super) built_in: bool,
    /// Viewers that called JoinStorageSessionAsViewer: their messages go to
    /// the built-in peer instead of the master.
    pub(super) viewers: HashSet<String>,
}

struct Channel {
    info: ChannelInfo,
    peers: HashMap<Endpoint, Peer>,
    /// Every stored message of the channel, oldest first.
    stored: Vec<StoredMessage>,
    /// Connect rate quota per role (spec §7.1), made on first use.
    connects: HashMap<Role, TokenBucket>,
    /// The storage session's party, while one is live.
    storage_peer: Option<StoragePeer>,
}

impl Channel {
    fn viewer_count(&self) -> usize {
        self.peers
            .keys()
            .filter(|endpoint| matches!(endpoint, Endpoint::Viewer(_)) && !self.is_virtual(endpoint))
            .count()
    }

    /// Whether `endpoint` is the built-in storage peer (no socket behind it).
    fn is_virtual(&self, endpoint: &Endpoint) -> bool {
        match (&self.storage_peer, endpoint) {
            (Some(peer), Endpoint::Viewer(id)) => peer.built_in && peer.client_id == *id,
            _ => false,
        }
    }

    /// Where a message from `from` to `to` goes while media storage is
    /// enabled (spec §6.9): between the master and the storage peer as
    /// usual; from a viewer that joined the built-in session to that
    /// session; from the storage peer to anyone; otherwise nowhere (`None`).
    fn storage_recipient(&self, from: &Endpoint, to: &Endpoint) -> Option<Endpoint> {
        if !self.info.media_storage.enabled {
            return Some(to.clone());
        }
        let peer = self.storage_peer.as_ref()?;
        let is_peer = |endpoint: &Endpoint| matches!(endpoint, Endpoint::Viewer(id) if *id == peer.client_id);
        match (from, to) {
            _ if is_peer(from) || is_peer(to) => Some(to.clone()),
            (Endpoint::Viewer(id), Endpoint::Master) if peer.built_in && peer.viewers.contains(id) => {
                Some(Endpoint::Viewer(peer.client_id.clone()))
            }
            _ => None,
        }
    }

    fn matches(&self, target: &Target) -> bool {
        target.channel.as_ref().is_none_or(|channel| *channel == self.info.name || *channel == self.info.arn)
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
    /// A viewer asked for the client id of the channel's built-in storage
    /// peer, which would take over its messages.
    StoragePeerId,
    /// More than [`CONNECTS_PER_SECOND`] connects for the role (quotas on).
    ConnectRate,
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
    /// Media storage is enabled and the message is not to or from the storage
    /// session (spec §6.9): dropped.
    BlockedByStorage,
}

impl Registry {
    /// Creates channel `name` with an ARN from `make_arn(epoch millis)` and
    /// returns the ARN; `Err` with the existing ARN when the name is taken.
    pub(super) fn create_channel(
        &mut self,
        name: &str,
        message_ttl: Duration,
        tags: Vec<(String, String)>,
        make_arn: impl FnOnce(u128) -> String,
    ) -> Result<String, String> {
        if let Some(arn) = self.arn_by_name.get(name) {
            return Err(arn.clone());
        }
        let millis = super::epoch_millis();
        let arn = make_arn(millis);
        let digest = |salt: &str| {
            let mut hasher = DefaultHasher::new();
            (salt, &arn).hash(&mut hasher);
            hasher.finish()
        };
        let info = ChannelInfo {
            name: name.to_owned(),
            arn: arn.clone(),
            message_ttl,
            creation_time: millis as f64 / 1000.0,
            version: format!("{:016x}{:04x}", digest("version"), digest("version2") & 0xffff),
            tags,
            endpoint_label: format!("{:08x}", digest("endpoint") & 0xffff_ffff),
            media_storage: MediaStorage::default(),
        };
        self.arn_by_name.insert(name.to_owned(), arn.clone());
        let channel =
            Channel { info, peers: HashMap::new(), stored: Vec::new(), connects: HashMap::new(), storage_peer: None };
        self.channels.insert(arn.clone(), channel);
        Ok(arn)
    }

    /// Changes the channel's info with `change` (under the registry's lock);
    /// `None` when there is no such channel.
    pub(super) fn modify<T>(&mut self, arn: &str, change: impl FnOnce(&mut ChannelInfo) -> T) -> Option<T> {
        self.channels.get_mut(arn).map(|channel| change(&mut channel.info))
    }

    /// How many channels exist.
    pub(super) fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub(super) fn channel_arn(&self, name: &str) -> Option<String> {
        self.arn_by_name.get(name).cloned()
    }

    pub(super) fn by_arn(&self, arn: &str) -> Option<ChannelInfo> {
        self.channels.get(arn).map(|channel| channel.info.clone())
    }

    pub(super) fn by_name(&self, name: &str) -> Option<ChannelInfo> {
        self.by_arn(self.arn_by_name.get(name)?)
    }

    /// Every channel, sorted by name.
    pub(super) fn list(&self) -> Vec<ChannelInfo> {
        let mut list: Vec<ChannelInfo> = self.channels.values().map(|channel| channel.info.clone()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Removes a channel with its stored messages; returns its connections.
    pub(super) fn delete(&mut self, arn: &str) -> Option<Vec<PeerHandle>> {
        let channel = self.channels.remove(arn)?;
        self.arn_by_name.remove(&channel.info.name);
        Some(channel.peers.into_values().map(|peer| peer.handle).collect())
    }

    /// The current connections matching `target`.
    pub(super) fn select(&self, target: &Target) -> Vec<PeerHandle> {
        let mut selected = Vec::new();
        for channel in self.channels.values().filter(|channel| channel.matches(target)) {
            for (endpoint, peer) in channel.peers.iter().filter(|(endpoint, _)| !channel.is_virtual(endpoint)) {
                let role_matches = target.role.is_none_or(|role| role == endpoint.role());
                let id_matches = target.client_id.as_ref().is_none_or(|id| *endpoint == Endpoint::Viewer(id.clone()));
                if role_matches && id_matches {
                    selected.push(peer.handle.clone());
                }
            }
        }
        selected
    }

    /// Drops every stored message (a restart loses them); returns how many.
    pub(super) fn clear_stored(&mut self) -> usize {
        self.channels.values_mut().map(|channel| std::mem::take(&mut channel.stored).len()).sum()
    }

    /// Registers connection `key`, replacing an earlier connection with the same
    /// endpoint, and queues the endpoint's stored messages on `outbox`.
    /// The built-in storage peer's client id is not for a connection
    /// ([`Refusal::StoragePeerId`]) while that peer is live.
    /// With `quotas`, at most [`CONNECTS_PER_SECOND`] connects per channel and
    /// role are admitted; refused ones do not count.
    pub(super) fn admit(
        &mut self,
        key: &ConnectionKey,
        handle: PeerHandle,
        max_viewers: usize,
        quotas: bool,
        now: Instant,
    ) -> Result<Admission, Refusal> {
        let endpoint = &key.endpoint;
        let channel = self.channels.get_mut(&key.channel_arn).ok_or(Refusal::UnknownChannel)?;
        if channel.is_virtual(endpoint) {
            return Err(Refusal::StoragePeerId);
        }
        let is_new_viewer = matches!(endpoint, Endpoint::Viewer(_)) && !channel.peers.contains_key(endpoint);
        if is_new_viewer && channel.viewer_count() >= max_viewers {
            return Err(Refusal::ViewerLimit);
        }
        if quotas {
            let bucket =
                channel.connects.entry(endpoint.role()).or_insert_with(|| TokenBucket::new(CONNECTS_PER_SECOND, now));
            if !bucket.take(now) {
                return Err(Refusal::ConnectRate);
            }
        }
        let outbox = &handle.outbox;
        let expired = channel.discard_expired(now);
        let mut delivered = 0;
        channel.stored.retain(|message| {
            if message.to != *endpoint {
                return true;
            }
            // The receiver is alive (the caller holds it), so this cannot fail.
            if outbox.send(Outgoing::Frame(Message::Text(message.frame.clone()), now)).is_ok() {
                delivered += 1;
            }
            false
        });
        let previous = channel.peers.insert(endpoint.clone(), Peer { connection_id: key.connection_id, handle });
        Ok(Admission { delivered, expired, replaced: previous.map(|peer| peer.handle.outbox) })
    }

    /// Unregisters connection `key`, unless a newer one has replaced it.
    pub(super) fn leave(&mut self, key: &ConnectionKey) {
        if let Some(channel) = self.channels.get_mut(&key.channel_arn)
            && channel.is_current(key)
        {
            channel.peers.remove(&key.endpoint);
        }
    }

    /// Sends `frame` (of `action`) from connection `sender` to `to`, or stores it
    /// for the channel's message TTL when `to` is not connected.
    pub(super) fn route(
        &mut self,
        sender: &ConnectionKey,
        to: &Endpoint,
        action: Action,
        frame: Utf8Bytes,
        now: Instant,
    ) -> Routing {
        let Some(channel) = self.channels.get_mut(&sender.channel_arn) else {
            return Routing::SenderNotCurrent;
        };
        if !channel.is_current(sender) {
            return Routing::SenderNotCurrent;
        }
        let from = &sender.endpoint;
        let Some(to) = channel.storage_recipient(from, to) else {
            return Routing::BlockedByStorage;
        };
        let to = &to;
        if let Some(peer) = channel.peers.get(to) {
            // Fails only while the recipient's socket is closing; store it then.
            if peer.handle.outbox.send(Outgoing::Frame(Message::Text(frame.clone()), now)).is_ok() {
                return Routing::Delivered;
            }
        }
        let expired = channel.discard_expired(now);
        let before = channel.stored.len();
        if matches!(action, Action::SdpOffer | Action::SdpAnswer) {
            channel.stored.retain(|message| message.action != action || message.to != *to || message.from != *from);
        }
        let replaced = before - channel.stored.len();
        let expires_at = now + channel.info.message_ttl;
        channel.stored.push(StoredMessage { from: from.clone(), to: to.clone(), action, frame, expires_at });
        Routing::Stored { replaced, expired }
    }

    /// Sets (or with `None` removes) the channel's storage peer, unregistering
    /// an earlier built-in one; false when there is no such channel.
    pub(super) fn set_storage_peer(&mut self, arn: &str, peer: Option<StoragePeer>) -> bool {
        let Some(channel) = self.channels.get_mut(arn) else {
            return false;
        };
        if let Some(old) = channel.storage_peer.take()
            && old.built_in
        {
            channel.peers.remove(&Endpoint::Viewer(old.client_id));
        }
        channel.storage_peer = peer;
        true
    }

    /// The channel's storage peer, if any.
    pub(super) fn storage_peer(&self, arn: &str) -> Option<StoragePeer> {
        self.channels.get(arn)?.storage_peer.clone()
    }

    /// Records that viewer `client_id` joined the storage session.
    pub(super) fn add_storage_viewer(&mut self, arn: &str, client_id: &str) {
        if let Some(peer) = self.channels.get_mut(arn).and_then(|channel| channel.storage_peer.as_mut()) {
            peer.viewers.insert(client_id.to_owned());
        }
    }

    /// Whether a connection is registered for `endpoint` on channel `arn`.
    pub(super) fn is_connected(&self, arn: &str, endpoint: &Endpoint) -> bool {
        self.channels.get(arn).is_some_and(|channel| channel.peers.contains_key(endpoint))
    }

    /// Registers the built-in storage peer of `key` (a viewer endpoint, the
    /// channel's [`StoragePeer`] with `built_in`) with `handle`, outside the
    /// viewer limit and the connect quota; false when there is no such channel
    /// or a connection holds that endpoint (it is never replaced: the caller
    /// picks an id no viewer uses, [`Registry::is_connected`]).
    pub(super) fn register_virtual(&mut self, key: &ConnectionKey, handle: PeerHandle) -> bool {
        let Some(channel) = self.channels.get_mut(&key.channel_arn) else {
            return false;
        };
        if channel.peers.contains_key(&key.endpoint) {
            return false;
        }
        channel.peers.insert(key.endpoint.clone(), Peer { connection_id: key.connection_id, handle });
        true
    }
}
