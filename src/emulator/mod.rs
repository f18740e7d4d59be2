//! Local emulator of the signaling service's WebSocket data plane (spec §1.3, §3,
//! §4, §6, §7.1): channels, one master and up to `max_viewers` viewers per channel,
//! routing, store-and-forward with the overwrite rule, and STATUS_RESPONSE for
//! rejected requests that carry a `correlationId`.
//!
//! It is an independent implementation of the service built only on
//! [`crate::protocol`]; it shares nothing with the client.
//!
//! Threading: [`Emulator::start`] spawns its tasks on the tokio runtime it is called
//! from. One task accepts TCP connections; each connection gets an HTTP task
//! (hyper), and each admitted WebSocket gets a reader task plus a writer task fed by
//! an unbounded queue, so that routing never waits for a slow reader. Channel state
//! lives behind one `std::sync::Mutex`, held only for map updates and queue pushes,
//! never across an `.await`.
//!
//! Choices where the spec is silent:
//! * A replaced master or viewer connection is closed with code 1000 and reason
//!   [`REPLACED_REASON`]; frames it sends before the close completes are dropped.
//! * Store-and-forward keys the overwrite rule by (sender, recipient, action): an
//!   undelivered SDP_OFFER (or SDP_ANSWER) from one sender to one recipient is
//!   removed when a newer one arrives, and the newer one joins the end of the queue,
//!   so delivered messages keep their send order. ICE candidates accumulate.
//! * A master's message to a viewer that never connected is stored for the TTL like
//!   any other (the service cannot know whether that viewer is about to connect);
//!   no STATUS_RESPONSE is sent for it, and it expires silently.
//! * Expired messages are discarded lazily, when the channel is next touched by a
//!   store or a connect; [`EmulatorStats::messages_expired`] counts them then.
//! * The C SDK's extra `IceServerList` key in an SDP_OFFER is not forwarded.
//! * A frame longer than [`EmulatorConfig::max_frame_len`] closes the connection
//!   with code 1009 (message too big): tungstenite stops reading a connection after
//!   a size error, so the frame cannot be skipped.
//! * A STATUS_RESPONSE is sent only when the `correlationId` itself is valid.

mod channels;
mod connection;
mod http;

use channels::Registry;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Close reason sent to a connection that a newer one with the same identity replaced.
pub const REPLACED_REASON: &str = "replaced by a newer connection";

/// How long [`Emulator::shutdown`] lets connections finish their close handshake.
const SHUTDOWN_GRACE: Duration = connection::CLOSE_HANDSHAKE_GRACE.saturating_mul(3);

/// Settings of one emulator instance; see [`Default`] for the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Region written into channel ARNs (`[a-z0-9-]+`).
    pub region: String,
    /// Account id written into channel ARNs (digits).
    pub account: String,
    /// Channel names created at start (`[a-zA-Z0-9_.-]+`).
    pub channels: Vec<String>,
    /// Viewers allowed per channel at once; one more is refused (spec §7.1).
    pub max_viewers: usize,
    /// How long a message for an absent recipient is kept (spec §6.5).
    pub message_ttl: Duration,
    /// Longest inbound WebSocket frame or message, in bytes; a longer one closes
    /// the connection with code 1009.
    pub max_frame_len: usize,
    /// Log connections, routing decisions and rejections to stderr.
    pub verbose: bool,
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            region: "us-west-2".to_owned(),
            account: "123456789012".to_owned(),
            channels: Vec::new(),
            max_viewers: 10,
            message_ttl: Duration::from_secs(60),
            max_frame_len: 64 * 1024,
            verbose: false,
        }
    }
}

/// Counters since start, read with [`Emulator::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulatorStats {
    /// WebSocket connections admitted and not yet closed (replaced ones included
    /// until their socket closes).
    pub open_connections: usize,
    /// Upgrade requests answered with an HTTP error instead of 101.
    pub upgrades_refused: u64,
    /// Messages handed to a connected recipient, live or from storage.
    pub messages_relayed: u64,
    /// Messages stored because their recipient was not connected.
    pub messages_stored: u64,
    /// Stored messages removed by a newer SDP_OFFER / SDP_ANSWER (spec §6.4).
    pub messages_replaced: u64,
    /// Stored messages discarded after the TTL.
    pub messages_expired: u64,
    /// STATUS_RESPONSE messages sent.
    pub status_responses_sent: u64,
    /// Inbound frames not routed: invalid JSON or fields, binary, oversized.
    pub frames_rejected: u64,
}

/// Atomic backing store of [`EmulatorStats`].
#[derive(Default)]
struct Counters {
    open_connections: AtomicUsize,
    upgrades_refused: AtomicU64,
    messages_relayed: AtomicU64,
    messages_stored: AtomicU64,
    messages_replaced: AtomicU64,
    messages_expired: AtomicU64,
    status_responses_sent: AtomicU64,
    frames_rejected: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// State shared by every task of one emulator; owned through `Arc`.
struct Shared {
    config: EmulatorConfig,
    registry: Mutex<Registry>,
    counters: Counters,
    next_connection_id: AtomicU64,
    /// Set to `true` once to stop every task.
    stop: watch::Sender<bool>,
    /// HTTP and WebSocket tasks, awaited by [`Emulator::shutdown`].
    tasks: Mutex<JoinSet<()>>,
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data
/// consistent, so a panic elsewhere does not make it unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn log(&self, message: fmt::Arguments<'_>) {
        if self.config.verbose {
            eprintln!("[kvs-emulator] {message}");
        }
    }

    /// Spawns a task that [`Emulator::shutdown`] waits for, reaping finished ones.
    fn spawn_tracked(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    fn create_channel(&self, name: &str) -> String {
        let config = &self.config;
        let arn = lock(&self.registry)
            .create_channel(name, |created_millis| channel_arn(&config.region, &config.account, name, created_millis));
        self.log(format_args!("channel {name} is {arn}"));
        arn
    }
}

/// `arn:aws:kinesisvideo:{region}:{account}:channel/{name}/{creation epoch millis}` (spec §1.6).
fn channel_arn(region: &str, account: &str, name: &str, created_millis: u128) -> String {
    format!("arn:aws:kinesisvideo:{region}:{account}:channel/{name}/{created_millis}")
}

fn epoch_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis())
}

/// Rejects a region, account or channel name that would make an ARN clients
/// cannot connect with.
fn check_config(config: &EmulatorConfig) -> io::Result<()> {
    let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    let probe = channel_arn(&config.region, &config.account, "probe", 0);
    if crate::protocol::validate_channel_arn(&probe).is_err() {
        return invalid(format!(
            "region {:?} must be [a-z0-9-]+ and account {:?} must be digits",
            config.region, config.account
        ));
    }
    for name in &config.channels {
        let arn = channel_arn(&config.region, &config.account, name, 0);
        if crate::protocol::validate_channel_arn(&arn).is_err() {
            return invalid(format!("channel name {name:?} must be characters of a-z A-Z 0-9 _ . -"));
        }
    }
    Ok(())
}

/// A running emulator. Its methods may be called from any thread; dropping it
/// stops the service in the background, [`Emulator::shutdown`] stops it and waits.
pub struct Emulator {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl Emulator {
    /// Binds `config.listen`, creates `config.channels`, spawns the accept loop on
    /// the current tokio runtime and returns at once. Fails on a bind error, or with
    /// `InvalidInput` for a region, account or channel name outside its pattern.
    pub async fn start(config: EmulatorConfig) -> io::Result<Emulator> {
        check_config(&config)?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            registry: Mutex::new(Registry::default()),
            counters: Counters::default(),
            next_connection_id: AtomicU64::new(1),
            stop,
            tasks: Mutex::new(JoinSet::new()),
        });
        for name in &shared.config.channels {
            shared.create_channel(name);
        }
        shared.log(format_args!("listening on {local_addr}"));
        let accept_task = tokio::spawn(http::accept_loop(shared.clone(), listener));
        Ok(Emulator { shared, local_addr, accept_task })
    }

    /// The bound address (with the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The WebSocket endpoint, e.g. `ws://127.0.0.1:PORT` (no trailing slash, like
    /// the endpoints GetSignalingChannelEndpoint returns).
    pub fn ws_endpoint(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// Creates a channel and returns its ARN; for an existing name, returns the
    /// existing ARN. A name outside `[a-zA-Z0-9_.-]+` yields an ARN that every
    /// connect request rejects as malformed.
    pub fn create_channel(&self, name: &str) -> String {
        self.shared.create_channel(name)
    }

    /// The ARN of an existing channel.
    pub fn channel_arn(&self, name: &str) -> Option<String> {
        lock(&self.shared.registry).channel_arn(name)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EmulatorStats {
        let c = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EmulatorStats {
            open_connections: c.open_connections.load(Ordering::Relaxed),
            upgrades_refused: read(&c.upgrades_refused),
            messages_relayed: read(&c.messages_relayed),
            messages_stored: read(&c.messages_stored),
            messages_replaced: read(&c.messages_replaced),
            messages_expired: read(&c.messages_expired),
            status_responses_sent: read(&c.status_responses_sent),
            frames_rejected: read(&c.frames_rejected),
        }
    }

    /// Stops accepting, sends every WebSocket a close frame (1001, going away) and
    /// waits for the close handshakes (a peer that does not answer is dropped after
    /// a second); tasks still running after three seconds are aborted.
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        if let Err(error) = (&mut self.accept_task).await {
            self.shared.log(format_args!("accept loop ended abnormally: {error}"));
        }
        let mut tasks = std::mem::take(&mut *lock(&self.shared.tasks));
        let drained = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
            tasks.shutdown().await;
        }
        self.shared.log(format_args!("stopped"));
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}
