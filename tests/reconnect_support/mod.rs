//! Shared by `tests/reconnect.rs` and `tests/soak.rs`: a master and a viewer
//! through the emulator with every client event recorded, numbered ICE
//! candidate streams in both directions (`n:<i>`, correlation id `<label>-<i>`),
//! and the checks of the delivery guarantee.
//!
//! What is provable, and so what [`finish`] asserts:
//!
//! * Nothing is lost by the client: each accepted send ends in exactly one
//!   outcome, written to a socket (`messages_sent`) or reported failed once with
//!   its correlation id (`StatusOrigin::Local`); the queue ends empty. Refused
//!   sends (`QueueFull`) never show up anywhere.
//! * The receiver sees accepted numbers only, in order (each number's first
//!   arrival after the previous one's), and never one that was reported failed.
//!   A number may arrive twice: a candidate written to a socket that failed
//!   before the service's TCP acknowledged it is written again on the next one
//!   ([`Tally::duplicates`]).
//! * What the emulator read, per sender ([`at_emulator`]): with delivery
//!   confirmed by TCP acknowledgements, every accepted number reaches it or is
//!   reported failed, through drops, resets and restarts alike.
//! * What is still missing at the receiver was relayed to a connection the
//!   emulator was dropping (the service's leg, which the client cannot see).
//!   Such a number must have been accepted shortly before a connection loss that
//!   one of the two clients reported ([`Outcome::assert_lost_only_near_drops`]);
//!   and where no socket was lost (a make-before-break handover) nothing may be
//!   missing at all ([`Outcome::assert_nothing_missing`]).
//! * The emulator's counters bound the two legs: what it relayed is at most what
//!   the clients wrote, and what the clients received is at most what it relayed.
#![allow(dead_code)]

use kvs_signaling::client::{
    Backoff, Client, ClientConfig, ClientError, ClientEvent, ConnectionState, Metrics, StateChange, StatusOrigin,
    StatusReport,
};
use kvs_signaling::emulator::{Emulator, EmulatorStats};
use kvs_signaling::protocol::{IceCandidate, MessageType};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub const VIEWER_ID: &str = "viewer-1";
/// Longest wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long before a reported connection loss a send may have been accepted and
/// still be lost on the wire (generous: a loaded machine delays the notice).
pub const IN_FLIGHT_SLACK: Duration = Duration::from_secs(2);

/// Short reconnect settings for tests: backoff 50 ms .. 500 ms.
pub fn fast(mut config: ClientConfig) -> ClientConfig {
    config.backoff = Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(500) };
    config.connect_timeout = Duration::from_secs(3);
    config
}

/// Everything one client reported, with the time the test saw it.
#[derive(Default)]
pub struct Record {
    pub states: Vec<(Instant, StateChange)>,
    /// Numbers of the `n:<i>` candidates received, in arrival order.
    pub received: Vec<(u64, Instant)>,
    /// Messages that were not numbered candidates.
    pub other_messages: usize,
    /// Local failure reports (correlation id).
    pub local_failures: Vec<(String, Instant)>,
    pub service_statuses: Vec<StatusReport>,
    pub notices: Vec<(MessageType, Instant)>,
    pub ice_server_changes: Vec<(usize, Instant)>,
}

impl Record {
    pub fn state_list(&self) -> Vec<ConnectionState> {
        self.states.iter().map(|(_, change)| change.state).collect()
    }

    /// When the client reported it was reconnecting.
    pub fn losses(&self) -> Vec<Instant> {
        self.states.iter().filter(|(_, c)| c.state == ConnectionState::Reconnecting).map(|(at, _)| *at).collect()
    }
}

/// A client and the task that records its events.
pub struct Peer {
    pub name: &'static str,
    pub client: Arc<Client>,
    pub record: Arc<Mutex<Record>>,
    collector: JoinHandle<()>,
}

impl Peer {
    /// Makes the client (not connected yet) and starts recording its events.
    pub fn new(name: &'static str, config: ClientConfig) -> Peer {
        let (client, mut events) = Client::new(config).expect("valid config");
        let record = Arc::new(Mutex::new(Record::default()));
        let sink = record.clone();
        let collector = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let now = Instant::now();
                let mut record = sink.lock().unwrap();
                match event {
                    ClientEvent::State(change) => record.states.push((now, change)),
                    ClientEvent::Message(message) => {
                        let number = message
                            .ice
                            .as_ref()
                            .and_then(|ice| ice.candidate.strip_prefix("n:"))
                            .and_then(|n| n.parse::<u64>().ok());
                        match number {
                            Some(n) => record.received.push((n, now)),
                            None => record.other_messages += 1,
                        }
                    }
                    ClientEvent::Status(status) if status.origin == StatusOrigin::Local => {
                        record.local_failures.push((status.correlation_id, now))
                    }
                    ClientEvent::Status(status) => record.service_statuses.push(status),
                    ClientEvent::ServiceNotice(kind) => record.notices.push((kind, now)),
                    ClientEvent::IceServersChanged { count } => record.ice_server_changes.push((count, now)),
                    // ClientEvent is non_exhaustive: events added later.
                    _ => {}
                }
            }
        });
        Peer { name, client: Arc::new(client), record, collector }
    }

    pub fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap()
    }

    pub fn states(&self) -> Vec<ConnectionState> {
        self.record().state_list()
    }

    pub fn metrics(&self) -> Metrics {
        self.client.metrics()
    }

    /// Waits until the client has reported `count` state changes ending in `state`.
    pub async fn wait_states(&self, count: usize, state: ConnectionState) {
        let what = format!("{} to report {count} states ending in {state:?}", self.name);
        wait_until(&what, WAIT, || {
            let states = self.states();
            states.len() >= count && states[count - 1] == state
        })
        .await;
    }

    /// Waits until the client is connected again after `losses` losses.
    pub async fn wait_reconnected(&self, losses: usize) {
        let what = format!("{} to reconnect after {losses} losses", self.name);
        wait_until(&what, WAIT, || {
            let record = self.record();
            record.losses().len() >= losses && record.state_list().last() == Some(&ConnectionState::Connected)
        })
        .await;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.collector.abort();
    }
}

/// Polls `check` every 5 ms until true; panics after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The sends of one numbered stream.
#[derive(Default)]
pub struct Sent {
    /// Accepted numbers and when.
    pub accepted: BTreeMap<u64, Instant>,
    /// Numbers the client refused at call time, with the error.
    pub refused: Vec<(u64, ClientError)>,
    next: u64,
}

/// One direction of numbered candidates: `label` prefixes the correlation ids.
pub struct Stream {
    pub label: &'static str,
    pub recipient: Option<&'static str>,
    pub sent: Arc<Mutex<Sent>>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Stream {
    /// A stream whose numbers are sent by hand with [`Stream::send_next`].
    pub fn manual(label: &'static str, recipient: Option<&'static str>) -> Stream {
        Stream { label, recipient, sent: Arc::default(), stop: Arc::new(AtomicBool::new(false)), task: None }
    }

    /// Sends one number every `period` from `client` until [`Stream::stop`].
    pub fn start(
        client: &Arc<Client>,
        label: &'static str,
        recipient: Option<&'static str>,
        period: Duration,
    ) -> Stream {
        let mut stream = Stream::manual(label, recipient);
        let (client, sent, stop) = (client.clone(), stream.sent.clone(), stream.stop.clone());
        stream.task = Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let _ = send_number(&client, label, recipient, &sent);
            }
        }));
        stream
    }

    /// Sends the next number now; returns the outcome of the call.
    pub fn send_next(&self, client: &Client) -> Result<String, ClientError> {
        send_number(client, self.label, self.recipient, &self.sent)
    }

    pub fn sent(&self) -> MutexGuard<'_, Sent> {
        self.sent.lock().unwrap()
    }

    /// Stops the sender task (if any) and waits for it.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.expect("sender stops").expect("sender task");
        }
    }
}

fn send_number(
    client: &Client,
    label: &str,
    recipient: Option<&str>,
    sent: &Mutex<Sent>,
) -> Result<String, ClientError> {
    let mut sent = sent.lock().unwrap();
    let n = sent.next;
    sent.next += 1;
    let candidate = IceCandidate {
        candidate: format!("n:{n}"),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
        username_fragment: None,
    };
    let result = client.send_ice_candidate(recipient, &candidate, Some(&format!("{label}-{n}")));
    match &result {
        Ok(_) => {
            sent.accepted.insert(n, Instant::now());
        }
        Err(e) => sent.refused.push((n, e.clone())),
    }
    result
}

/// The result of one direction.
#[derive(Debug, Default)]
pub struct Tally {
    pub what: String,
    pub accepted: BTreeMap<u64, Instant>,
    pub received: Vec<u64>,
    pub failed: BTreeSet<u64>,
    /// Accepted, neither received nor reported failed: lost on the wire.
    pub missing: Vec<u64>,
    /// Arrivals of a number that had arrived before.
    pub duplicates: usize,
}

/// Checks one direction: order, no duplicate, failures disjoint from deliveries.
fn tally(what: &str, stream: &Stream, receiver: &Peer, sender: &Peer) -> Tally {
    let accepted = stream.sent().accepted.clone();
    let refused: BTreeSet<u64> = stream.sent().refused.iter().map(|(n, _)| *n).collect();
    let received: Vec<u64> = receiver.record().received.iter().map(|(n, _)| *n).collect();
    let mut seen = BTreeSet::new();
    let first_arrivals: Vec<u64> = received.iter().copied().filter(|n| seen.insert(*n)).collect();
    for pair in first_arrivals.windows(2) {
        assert!(pair[0] < pair[1], "{what}: {} first arrived after {} (out of order)", pair[1], pair[0]);
    }
    let duplicates = received.len() - first_arrivals.len();
    for n in &received {
        assert!(accepted.contains_key(n), "{what}: received {n}, which was never accepted");
    }
    let mut failed = BTreeSet::new();
    let prefix = format!("{}-", stream.label);
    for (id, _) in &sender.record().local_failures {
        let n: u64 = id.strip_prefix(&prefix).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{what}: {id}"));
        assert!(accepted.contains_key(&n), "{what}: {n} reported failed but never accepted (refused: {})", {
            refused.contains(&n)
        });
        assert!(failed.insert(n), "{what}: {n} reported failed twice");
    }
    let delivered: BTreeSet<u64> = received.iter().copied().collect();
    let both: Vec<_> = failed.intersection(&delivered).collect();
    assert!(both.is_empty(), "{what}: reported failed and yet delivered: {both:?}");
    let missing = accepted.keys().filter(|n| !delivered.contains(n) && !failed.contains(n)).copied().collect();
    Tally { what: what.to_owned(), accepted, received, failed, missing, duplicates }
}

/// Both directions of a pair, after [`finish`].
#[derive(Debug)]
pub struct Outcome {
    pub to_viewer: Tally,
    pub to_master: Tally,
    /// Times either client reported a connection loss.
    pub losses: Vec<Instant>,
}

impl Outcome {
    pub fn tallies(&self) -> [&Tally; 2] {
        [&self.to_viewer, &self.to_master]
    }

    pub fn assert_nothing_missing(&self) {
        for tally in self.tallies() {
            assert!(tally.missing.is_empty(), "{}: lost {:?}", tally.what, tally.missing);
        }
    }

    pub fn assert_nothing_failed(&self) {
        for tally in self.tallies() {
            assert!(tally.failed.is_empty(), "{}: reported failed {:?}", tally.what, tally.failed);
        }
    }

    /// Every missing number was accepted at most [`IN_FLIGHT_SLACK`] before a
    /// connection loss that a client reported, and not after it: a send made
    /// after the loss was noticed waits for the next socket and must arrive.
    pub fn assert_lost_only_near_drops(&self) {
        for tally in self.tallies() {
            for n in &tally.missing {
                let at = tally.accepted[n];
                let explained = self.losses.iter().any(|loss| at <= *loss && *loss - at <= IN_FLIGHT_SLACK);
                assert!(
                    explained,
                    "{}: {n} is missing, but no connection loss was reported shortly after it",
                    tally.what
                );
            }
        }
    }

    pub fn missing_total(&self) -> usize {
        self.to_viewer.missing.len() + self.to_master.missing.len()
    }
}

/// Stops both streams, waits until everything that can arrive has arrived, and
/// checks the delivery guarantee for both directions and both clients.
pub async fn finish(master: &Peer, viewer: &Peer, to_viewer: &mut Stream, to_master: &mut Stream) -> Outcome {
    to_viewer.stop().await;
    to_master.stop().await;
    for peer in [master, viewer] {
        let deadline = Instant::now() + WAIT;
        loop {
            let metrics = peer.metrics();
            if metrics.messages_queued == 0 && metrics.messages_unconfirmed == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {}'s queue to empty and its sends confirmed: {metrics:?}, states {:?}",
                peer.name,
                peer.states()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // The last number of each direction comes after every fault: it must arrive
    // (or be reported failed), and anything before it was either in order before
    // it or is lost.
    for (stream, sender, receiver) in [(&*to_viewer, master, viewer), (&*to_master, viewer, master)] {
        let Some(last) = stream.sent().accepted.keys().next_back().copied() else { continue };
        let id = format!("{}-{last}", stream.label);
        wait_until(&format!("{} number {last} to arrive or fail", stream.label), WAIT, || {
            receiver.record().received.last().is_some_and(|(n, _)| *n == last)
                || sender.record().local_failures.iter().any(|(failed, _)| *failed == id)
        })
        .await;
    }
    // Room for a late duplicate to show up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let to_viewer_tally = tally("master -> viewer", to_viewer, viewer, master);
    let to_master_tally = tally("viewer -> master", to_master, master, viewer);
    for (peer, tally) in [(master, &to_viewer_tally), (viewer, &to_master_tally)] {
        let metrics = peer.metrics();
        assert_eq!(metrics.messages_queued, 0, "{}", peer.name);
        assert_eq!(metrics.messages_failed, tally.failed.len() as u64, "{}: failures counted", peer.name);
        assert_eq!(
            metrics.messages_sent + metrics.messages_failed,
            tally.accepted.len() as u64,
            "{}: every accepted send is written or reported failed, exactly once",
            peer.name
        );
        let record = peer.record();
        assert!(
            record.service_statuses.is_empty(),
            "{}: the service reported {:?}",
            peer.name,
            record.service_statuses
        );
    }
    let mut losses = master.record().losses();
    losses.extend(viewer.record().losses());
    Outcome { to_viewer: to_viewer_tally, to_master: to_master_tally, losses }
}

/// The two legs of the wire: the emulator relays at most what the clients wrote,
/// and the clients receive at most what it relayed. Returns (lost between client
/// and emulator, lost between emulator and client); valid while every stored
/// message was delivered (no restart, no expiry).
pub fn wire_legs(before: &EmulatorStats, after: &EmulatorStats, peers: &[&Peer]) -> (u64, u64) {
    let written: u64 = peers.iter().map(|p| p.metrics().messages_sent + p.metrics().messages_resent).sum();
    let received: u64 = peers.iter().map(|p| p.metrics().messages_received).sum();
    let relayed = after.messages_relayed - before.messages_relayed;
    assert!(relayed <= written, "the emulator relayed {relayed} of {written} written");
    assert!(received <= relayed, "the clients received {received} of {relayed} relayed");
    (written - relayed, relayed - received)
}

/// What the emulator read of one numbered stream ([`kvs_signaling::emulator::EmulatorConfig::received_log`]).
#[derive(Debug)]
pub struct Arrival {
    /// Accepted, neither read by the emulator nor reported failed.
    pub lost: Vec<u64>,
    /// Reads of a number it had read before (resent unconfirmed frames).
    pub duplicates: usize,
}

/// Checks one stream against what the emulator read from `sender`
/// (`master` or `viewer <id>`): every number it read was accepted, and what it
/// did not read was reported failed or is in [`Arrival::lost`].
pub fn at_emulator(emulator: &Emulator, stream: &Stream, sending: &Peer, sender: &str) -> Arrival {
    let prefix = format!("{}-", stream.label);
    let mut read = BTreeSet::new();
    let mut duplicates = 0;
    for (from, id) in emulator.received() {
        let Some(n) = id.strip_prefix(&prefix).and_then(|n| n.parse::<u64>().ok()) else { continue };
        assert_eq!(from, sender, "{id} read from {from}");
        if !read.insert(n) {
            duplicates += 1;
        }
    }
    let accepted = stream.sent().accepted.clone();
    assert!(read.iter().all(|n| accepted.contains_key(n)), "{sender}: the emulator read a number never accepted");
    let failed: BTreeSet<u64> = sending
        .record()
        .local_failures
        .iter()
        .filter_map(|(id, _)| id.strip_prefix(&prefix).and_then(|n| n.parse().ok()))
        .collect();
    let lost = accepted.keys().filter(|n| !read.contains(n) && !failed.contains(n)).copied().collect();
    Arrival { lost, duplicates }
}

/// `VmRSS` of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}
