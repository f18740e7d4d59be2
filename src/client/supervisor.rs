//! The supervisor: one task per client that owns its connection for as long as
//! the client runs. It connects, reads, writes the send queue with pacing,
//! pings, reconnects forever with full-jitter backoff, and on GO_AWAY or at the
//! age limit opens the new socket before it lets go of the old one.

use super::backlog::Backlog;
use super::connect::{Phases, Socket, SocketReader, SocketWriter, describe_socket_error, with_inbound_limit};
use super::inbound::{Inbound, Notice};
use super::metrics::{Counters, bump};
use super::pacing::Window;
use super::queue::{Outgoing, SendQueue};
use super::target::Target;
use super::{ClientConfig, ClientError, ClientEvent, ConnectionState, EventSink, StateChange, StateReason};
use super::{StatusOrigin, StatusReport};
use crate::log::{Level, log};
use crate::protocol::Action;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::{self, Message};

const TARGET: &str = "client";
/// A connection that lived this long resets the reconnect backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// Sends written per flush when several are ready.
const WRITE_BATCH: usize = 32;
/// How long the old socket is still read after a handover. The new socket is
/// not read meanwhile, so that what the service still sends on the old one comes
/// first; a service that replaces the old connection closes it at once.
const HANDOVER_DRAIN: Duration = Duration::from_secs(2);
/// Payload of the ping that fences a handover (see [`Supervisor::begin_handover`]).
const FENCE: &[u8] = b"handover";

/// How the first connect attempt is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FirstAttempt {
    /// A failed first attempt ends the supervisor and is returned to the caller.
    Report,
    /// Every failure, the first included, is retried forever.
    Retry,
}

enum Command {
    Stop { grace: Duration, done: oneshot::Sender<()> },
}

/// The client's handle on its running supervisor.
pub(super) struct SupervisorHandle {
    commands: mpsc::UnboundedSender<Command>,
    pub queue: Arc<SendQueue>,
    task: JoinHandle<()>,
    /// For sends left queued by a supervisor that had to be aborted.
    sink: EventSink,
    counters: Arc<Counters>,
}

impl SupervisorHandle {
    /// Spawns the supervisor on the current runtime. With
    /// [`FirstAttempt::Report`], `first` receives the first attempt's outcome.
    pub fn start(
        config: &ClientConfig,
        sink: EventSink,
        backlog: Option<Arc<Backlog>>,
        counters: Arc<Counters>,
        target: Target,
        mode: FirstAttempt,
        first: Option<oneshot::Sender<Result<(), ClientError>>>,
    ) -> SupervisorHandle {
        let queue = Arc::new(SendQueue::new(config.send_queue_capacity));
        let (commands, command_rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            inbound: Inbound::new(sink.clone(), counters.clone(), config),
            config: config.clone(),
            sink,
            backlog,
            counters,
            target,
            queue: queue.clone(),
            commands: command_rx,
            mode,
            first,
            state: ConnectionState::Disconnected,
            current: None,
            old: None,
            pending: None,
            retry_at: Instant::now(),
            failures: 0,
            age_at: None,
            fence: None,
            sdp_window: Window::new(config.pacing.sdp_per_second),
            ice_window: Window::new(config.pacing.ice_per_second),
            seed: seed(),
        };
        let (sink, counters) = (supervisor.sink.clone(), supervisor.counters.clone());
        SupervisorHandle { commands, queue, task: tokio::spawn(supervisor.run()), sink, counters }
    }

    /// True once the supervisor has ended (it then accepts no sends).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the supervisor (close frame, `grace` for the service's answer,
    /// queued sends reported failed) and waits until it has ended.
    pub async fn stop(self, grace: Duration) {
        let (done, wait) = oneshot::channel();
        let _ = self.commands.send(Command::Stop { grace, done });
        let mut task = self.task;
        if tokio::time::timeout(grace + Duration::from_secs(2), async {
            let _ = wait.await;
            let _ = (&mut task).await;
        })
        .await
        .is_err()
        {
            task.abort();
            let _ = task.await;
            // The supervisor could not finish its own stop: whatever it left
            // queued is reported here, so that no accepted send goes unreported.
            for outgoing in self.queue.close() {
                report_failed(
                    &self.sink,
                    &self.counters,
                    outgoing,
                    "the client disconnected before the message was written",
                );
            }
        }
    }

    /// Asks the supervisor to stop, without waiting.
    pub fn stop_in_background(self) {
        let (done, _) = oneshot::channel();
        let _ = self.commands.send(Command::Stop { grace: Duration::from_secs(1), done });
    }
}

/// Reports an accepted send that was not written: the status callback gets it
/// with its correlation id (origin Local).
fn report_failed(sink: &EventSink, counters: &Counters, outgoing: Outgoing, why: &str) {
    bump(&counters.messages_failed);
    sink(ClientEvent::Status(StatusReport {
        origin: StatusOrigin::Local,
        correlation_id: outgoing.correlation_id,
        error_type: Some("SendFailed".into()),
        status_code: 0,
        description: Some(why.to_owned()),
    }));
}

/// An open socket.
struct Link {
    writer: SocketWriter,
    reader: SocketReader,
    /// When the socket opened.
    opened: Instant,
    /// Last frame received.
    last_frame: Instant,
    /// Last frame written (data or ping).
    last_sent: Instant,
    ping_outstanding: Option<Instant>,
}

impl Link {
    fn new(socket: Socket) -> Link {
        let (writer, reader) = socket.split();
        let now = Instant::now();
        Link { writer, reader, opened: now, last_frame: now, last_sent: now, ping_outstanding: None }
    }
}

type Attempt = JoinHandle<Result<(Socket, Phases, Duration), ClientError>>;

struct Supervisor {
    config: ClientConfig,
    sink: EventSink,
    /// What the sink's receiver holds: no socket is read while it is full.
    backlog: Option<Arc<Backlog>>,
    counters: Arc<Counters>,
    target: Target,
    queue: Arc<SendQueue>,
    commands: mpsc::UnboundedReceiver<Command>,
    inbound: Inbound,
    mode: FirstAttempt,
    first: Option<oneshot::Sender<Result<(), ClientError>>>,
    state: ConnectionState,
    /// The socket sends go to.
    current: Option<Link>,
    /// The socket being let go after a handover, still read until it closes.
    old: Option<(Link, Instant)>,
    /// A connect in progress (first connect, reconnect or handover).
    pending: Option<Attempt>,
    /// When the next reconnect may start (only while there is no socket).
    retry_at: Instant,
    /// Consecutive failed attempts.
    failures: u32,
    /// When the current socket is due for a handover (its age limit, or now
    /// after a GO_AWAY).
    age_at: Option<Instant>,
    /// A handover waits for the answer to its fence ping until then.
    fence: Option<Instant>,
    sdp_window: Window,
    ice_window: Window,
    seed: u64,
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos as u64) ^ (&nanos as *const u128 as u64).rotate_left(32) | 1
}

/// Waits for the next frame of an optional link; pending forever when absent.
async fn next_frame(link: &mut Option<Link>) -> Option<Result<Message, tungstenite::Error>> {
    match link {
        Some(link) => link.reader.next().await,
        None => std::future::pending().await,
    }
}

async fn next_old_frame(old: &mut Option<(Link, Instant)>) -> Option<Result<Message, tungstenite::Error>> {
    match old {
        Some((link, _)) => link.reader.next().await,
        None => std::future::pending().await,
    }
}

async fn finish(attempt: &mut Option<Attempt>) -> Result<(Socket, Phases, Duration), ClientError> {
    match attempt {
        Some(handle) => match handle.await {
            Ok(result) => result,
            Err(e) => Err(ClientError::Handshake(format!("connect task ended: {e}"))),
        },
        None => std::future::pending().await,
    }
}

/// Completes when `backlog` has room again; pending forever without one.
async fn backlog_room(backlog: &Option<Arc<Backlog>>) {
    match backlog {
        Some(backlog) => backlog.room().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; ready at once when `at` has passed (a timer would round
/// up to the next millisecond tick), pending forever when `None`.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) if at <= Instant::now() => {}
        Some(at) => sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// How a bounded socket write ended.
enum Written {
    Done(Result<(), tungstenite::Error>),
    /// No progress for this long: the peer stopped reading.
    Stalled(Duration),
    /// A command arrived first (the write was abandoned).
    Interrupted(Option<Command>),
}

/// Runs one write to a socket, bounded: a peer that stops reading (the socket's
/// buffers full) must neither hold up a stop, which would then leave queued sends
/// unreported, nor go unnoticed, since no ping can be sent meanwhile.
async fn bounded(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    stall: Duration,
    write: impl Future<Output = Result<(), tungstenite::Error>>,
) -> Written {
    tokio::select! {
        result = tokio::time::timeout(stall, write) => match result {
            Ok(result) => Written::Done(result),
            Err(_) => Written::Stalled(stall),
        },
        command = commands.recv() => Written::Interrupted(command),
    }
}

/// What ended a socket.
enum Ended {
    Closed(Option<u16>),
    Lost(String),
}

impl Supervisor {
    fn emit(&self, event: ClientEvent) {
        (self.sink)(event);
    }

    fn set_state(&mut self, state: ConnectionState, reason: StateReason) {
        if self.state == state {
            return;
        }
        self.state = state;
        self.counters.set_state(state);
        self.emit(ClientEvent::State(StateChange { state, reason }));
    }

    fn report_failed(&self, outgoing: Outgoing, why: &str) {
        report_failed(&self.sink, &self.counters, outgoing, why);
    }

    /// A random duration in [0, bound] (full jitter).
    fn jitter(&mut self, bound: Duration) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let millis = bound.as_millis() as u64;
        Duration::from_millis(if millis == 0 { 0 } else { self.seed % (millis + 1) })
    }

    /// The wait before the next attempt after `failures` failures in a row.
    fn backoff(&mut self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(20);
        let bound = self.config.backoff.initial.saturating_mul(1 << doublings).min(self.config.backoff.max);
        self.jitter(bound)
    }

    fn start_attempt(&mut self) {
        let target = self.target.clone();
        let timeout = self.config.connect_timeout;
        let inbound_limit = self.config.max_inbound_frame_len;
        self.pending = Some(tokio::spawn(with_inbound_limit(inbound_limit, async move {
            match tokio::time::timeout(timeout, target.open()).await {
                Ok(result) => result,
                Err(_) => Err(ClientError::Timeout),
            }
        })));
    }

    async fn run(mut self) {
        self.set_state(ConnectionState::Connecting, StateReason::Requested);
        loop {
            if self.current.is_none() && self.pending.is_none() && Instant::now() >= self.retry_at {
                self.start_attempt();
            }
            let now = Instant::now();
            // Writes pause while a handover is in progress: what is written to the
            // old socket after the service admitted the new one would be dropped.
            let handing_over = self.fence.is_some() || self.pending.is_some();
            let write_at = match (&self.current, self.queue.head_action()) {
                (Some(_), Some(action)) if !handing_over => Some(self.window(action).ready_at(now)),
                _ => None,
            };
            // The current socket is not read while the old one drains.
            let draining = self.old.is_some();
            // No socket is read while the application's callbacks are behind:
            // TCP slows the sender down instead of our memory growing. Pongs are
            // not read either, so no ping is sent or timed meanwhile.
            let paused = self.backlog.as_ref().is_some_and(|b| b.is_full());
            let ping_at =
                self.current.as_ref().filter(|_| !draining && !paused).map(|link| match link.ping_outstanding {
                    Some(sent) => sent + self.config.pong_timeout,
                    // Ping when either direction has been quiet for the interval: the
                    // service closes sockets it has heard nothing from, and a silent
                    // peer may be gone.
                    None => link.last_frame.min(link.last_sent) + self.config.ping_interval,
                });
            let age_at = if handing_over || draining || self.current.is_none() { None } else { self.age_at };
            let retry_at = (self.current.is_none() && self.pending.is_none()).then_some(self.retry_at);
            let expire_at = if self.current.is_none() { self.queue.next_deadline() } else { None };
            let old_deadline = self.old.as_ref().map(|(_, deadline)| *deadline);
            let queue_empty = write_at.is_none();
            // Unbiased: a flood of inbound frames must not starve the writes, nor
            // the reverse.
            tokio::select! {
                command = self.commands.recv() => {
                    self.on_command(command).await;
                    return;
                }
                result = finish(&mut self.pending) => {
                    self.pending = None;
                    if !self.on_attempt(result) {
                        return;
                    }
                }
                frame = next_frame(&mut self.current), if !draining && !paused => self.on_current_frame(frame).await,
                _ = backlog_room(&self.backlog), if paused => self.resume_reading(),
                frame = next_old_frame(&mut self.old), if !paused => {
                    match frame {
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str(), false),
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => self.old = None,
                        Some(Ok(_)) => {}
                    }
                }
                _ = sleep_until_opt(write_at) => {
                    if let Some(command) = self.write_ready().await {
                        self.on_command(command).await;
                        return;
                    }
                }
                _ = self.queue.pushed.notified(), if queue_empty && self.current.is_some() => {}
                _ = sleep_until_opt(ping_at) => {
                    if let Some(command) = self.on_ping_timer().await {
                        self.on_command(command).await;
                        return;
                    }
                }
                _ = sleep_until_opt(age_at) => {
                    if let Some(command) = self.begin_handover().await {
                        self.on_command(command).await;
                        return;
                    }
                }
                _ = sleep_until_opt(self.fence) => {
                    log!(Level::Warn, TARGET, "no answer to the handover ping; opening the new socket anyway");
                    self.fence = None;
                    self.start_attempt();
                }
                _ = sleep_until_opt(retry_at) => {}
                _ = sleep_until_opt(expire_at) => {
                    for outgoing in self.queue.take_expired(Instant::now()) {
                        self.report_failed(outgoing, "not written within the send queue timeout while reconnecting");
                    }
                }
                _ = sleep_until_opt(old_deadline) => {
                    if let Some((mut link, _)) = self.old.take() {
                        let close = link.writer.send(Message::Close(None));
                        if let Written::Interrupted(command) = bounded(&mut self.commands, HANDOVER_DRAIN, close).await {
                            self.on_command(command).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// After a pause for back-pressure: the socket counts as heard from now,
    /// and a ping sent before the pause is not held against it.
    fn resume_reading(&mut self) {
        bump(&self.counters.backpressure_pauses);
        if let Some(link) = self.current.as_mut() {
            link.last_frame = Instant::now();
            link.ping_outstanding = None;
        }
    }

    fn window(&mut self, action: Action) -> &mut Window {
        match action {
            Action::IceCandidate => &mut self.ice_window,
            Action::SdpOffer | Action::SdpAnswer => &mut self.sdp_window,
        }
    }

    /// Handles the end of a connect attempt; false when the supervisor must end.
    fn on_attempt(&mut self, result: Result<(Socket, Phases, Duration), ClientError>) -> bool {
        match result {
            Ok((socket, phases, control_plane)) => {
                let reconnect = self.counters.connects.load(Ordering::Relaxed) > 0;
                self.counters.connected(reconnect, control_plane, phases.tls, phases.websocket);
                self.counters.clock_skew_ms.store(self.target.clock_skew_ms(), Ordering::Relaxed);
                if let Some(previous) = self.current.take() {
                    // Make-before-break: the new socket takes the sends; the old
                    // one is still read until the service closes it.
                    self.old = Some((previous, Instant::now() + HANDOVER_DRAIN));
                }
                self.current = Some(Link::new(socket));
                self.age_at = Some(Instant::now() + self.config.max_connection_age);
                self.sdp_window.reset();
                self.ice_window.reset();
                log!(
                    Level::Info,
                    TARGET,
                    "connected to {} ({})",
                    self.target.describe(),
                    if reconnect { "reconnect" } else { "first connect" }
                );
                self.set_state(ConnectionState::Connected, StateReason::Requested);
                if let Some(first) = self.first.take() {
                    let _ = first.send(Ok(()));
                }
                true
            }
            Err(err) => {
                bump(&self.counters.connect_failures);
                self.counters.clock_skew_ms.store(self.target.clock_skew_ms(), Ordering::Relaxed);
                if self.mode == FirstAttempt::Report
                    && let Some(first) = self.first.take()
                {
                    log!(Level::Warn, TARGET, "connect to {} failed: {err}", self.target.describe());
                    self.close_queue("the client did not connect");
                    self.set_state(ConnectionState::Disconnected, StateReason::ConnectFailed(err.to_string()));
                    let _ = first.send(Err(err));
                    return false;
                }
                self.failures = self.failures.saturating_add(1);
                let wait = self.backoff();
                self.counters.current_backoff_ms.store(wait.as_millis() as u64, Ordering::Relaxed);
                log!(
                    Level::Warn,
                    TARGET,
                    "connect to {} failed: {err}; retrying in {} ms",
                    self.target.describe(),
                    wait.as_millis()
                );
                if self.current.is_some() {
                    // A failed handover: keep the working socket, try again later.
                    self.age_at = Some(Instant::now() + wait.max(self.config.backoff.initial));
                } else {
                    self.retry_at = Instant::now() + wait;
                    self.set_state(ConnectionState::Reconnecting, StateReason::ConnectFailed(err.to_string()));
                }
                true
            }
        }
    }

    /// Handles a text frame of the current socket, or (`current` false) of the
    /// old one being let go.
    fn on_text(&mut self, text: &str, current: bool) {
        match self.inbound.handle_text(text) {
            Some(Notice::GoAway) => {
                self.target.on_go_away();
                if current && self.current.is_some() {
                    // Hand over as soon as possible.
                    self.age_at = Some(Instant::now());
                }
            }
            Some(Notice::ReconnectIceServer) => self.target.refresh_ice_servers(),
            None => {}
        }
    }

    async fn on_current_frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) {
        let ended = match frame {
            Some(Ok(message)) => {
                if let Some(link) = self.current.as_mut() {
                    link.last_frame = Instant::now();
                    link.ping_outstanding = None;
                }
                match message {
                    Message::Text(text) => {
                        self.on_text(text.as_str(), true);
                        return;
                    }
                    Message::Pong(payload) => {
                        if self.fence.is_some() && payload.as_ref() == FENCE {
                            self.fence = None;
                            self.start_attempt();
                        }
                        return;
                    }
                    Message::Binary(data) => {
                        log!(Level::Warn, TARGET, "skipped a {}-byte binary frame", data.len());
                        return;
                    }
                    Message::Close(frame) => Ended::Closed(frame.map(|f| u16::from(f.code))),
                    _ => return,
                }
            }
            Some(Err(e)) => Ended::Lost(describe_socket_error(&e)),
            None => Ended::Lost("the socket closed".into()),
        };
        self.lose_current(ended);
    }

    /// Drops the current socket and schedules a reconnect.
    fn lose_current(&mut self, ended: Ended) {
        // Only a connection that stayed up a while resets the backoff: a service
        // that accepts and closes at once must not be hammered.
        if self.current.as_ref().is_some_and(|link| link.opened.elapsed() >= STABLE_CONNECTION) {
            self.failures = 0;
        }
        self.current = None;
        self.age_at = None;
        self.fence = None;
        let reason = match ended {
            Ended::Closed(code) => StateReason::ClosedByService(code),
            Ended::Lost(text) => StateReason::ConnectionLost(text),
        };
        log!(Level::Warn, TARGET, "connection to {} ended: {reason:?}; reconnecting", self.target.describe());
        if self.pending.is_some() {
            // A handover is already opening the next socket.
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let wait = self.backoff();
        self.counters.current_backoff_ms.store(wait.as_millis() as u64, Ordering::Relaxed);
        self.retry_at = Instant::now() + wait;
        self.set_state(ConnectionState::Reconnecting, reason);
    }

    /// Writes the queued sends that pacing allows now, in one flush. Returns a
    /// command that arrived while the write waited (see [`bounded`]).
    async fn write_ready(&mut self) -> Option<Option<Command>> {
        let link = self.current.as_mut()?;
        let now = Instant::now();
        let mut batch = Vec::new();
        while batch.len() < WRITE_BATCH {
            let Some(action) = self.queue.head_action() else { break };
            let window = match action {
                Action::IceCandidate => &mut self.ice_window,
                Action::SdpOffer | Action::SdpAnswer => &mut self.sdp_window,
            };
            if window.ready_at(now) > now {
                break;
            }
            let Some(outgoing) = self.queue.pop() else { break };
            window.record(now);
            if outgoing.action == Action::SdpOffer {
                self.inbound.offer_sent(outgoing.recipient.as_deref());
            }
            batch.push(outgoing);
        }
        if batch.is_empty() {
            return None;
        }
        // Frames handed to the socket's buffer so far: they go out with the next
        // flush or close, so they count as written even if the flush never ends.
        let mut fed = 0usize;
        let write = async {
            for outgoing in &batch {
                link.writer.feed(Message::text(outgoing.frame.as_str())).await?;
                fed += 1;
            }
            link.writer.flush().await
        };
        let stall = self.config.ping_interval + self.config.pong_timeout;
        let written = bounded(&mut self.commands, stall, write).await;
        match written {
            Written::Done(Ok(())) => {
                link.last_sent = Instant::now();
                self.counters.messages_sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
                None
            }
            Written::Done(Err(e)) => {
                // Not known to be written: they go out again on the next socket.
                self.queue.requeue_front(batch);
                self.lose_current(Ended::Lost(format!("write failed: {}", describe_socket_error(&e))));
                None
            }
            // The fed part may be in the socket already and may still reach the
            // service: written, as far as the client can tell, so neither written
            // again (no duplicate) nor reported failed. The rest goes back to the
            // queue: the next socket writes it, or a stop reports it failed.
            Written::Stalled(after) => {
                self.counters.messages_sent.fetch_add(fed as u64, Ordering::Relaxed);
                self.queue.requeue_front(batch.split_off(fed));
                self.lose_current(Ended::Lost(format!("a write made no progress for {} ms", after.as_millis())));
                None
            }
            Written::Interrupted(command) => {
                self.counters.messages_sent.fetch_add(fed as u64, Ordering::Relaxed);
                self.queue.requeue_front(batch.split_off(fed));
                Some(command)
            }
        }
    }

    /// Sends a keepalive ping, or counts an unanswered one as a drop. Returns a
    /// command that arrived while the ping waited to be written.
    async fn on_ping_timer(&mut self) -> Option<Option<Command>> {
        let link = self.current.as_mut()?;
        let now = Instant::now();
        let unanswered = format!("no answer to a ping within {} ms", self.config.pong_timeout.as_millis());
        if let Some(sent) = link.ping_outstanding {
            if now >= sent + self.config.pong_timeout {
                self.lose_current(Ended::Lost(unanswered));
            }
            return None;
        }
        link.last_sent = now;
        link.ping_outstanding = Some(now);
        bump(&self.counters.pings_sent);
        let ping = link.writer.send(Message::Ping(Vec::new().into()));
        match bounded(&mut self.commands, self.config.pong_timeout, ping).await {
            Written::Done(Ok(())) => None,
            Written::Done(Err(e)) => {
                self.lose_current(Ended::Lost(format!("ping failed: {}", describe_socket_error(&e))));
                None
            }
            Written::Stalled(_) => {
                self.lose_current(Ended::Lost(unanswered));
                None
            }
            Written::Interrupted(command) => Some(command),
        }
    }

    /// Starts a make-before-break handover of the current socket. Writes to it
    /// stop, and a ping is sent after the last of them: the service answers a
    /// ping once it has read every frame before it, so once the pong is back
    /// nothing written to the old socket is still unread when the new socket
    /// replaces it. Then the new socket is opened ([`Supervisor::on_attempt`]
    /// switches to it and lets the old one drain). Returns a command that
    /// arrived while the ping waited to be written.
    async fn begin_handover(&mut self) -> Option<Option<Command>> {
        self.age_at = None;
        let link = self.current.as_mut()?;
        log!(Level::Info, TARGET, "handing over to a new connection (GO_AWAY or maximum age)");
        let now = Instant::now();
        let ping = link.writer.send(Message::Ping(FENCE.to_vec().into()));
        match bounded(&mut self.commands, self.config.pong_timeout, ping).await {
            Written::Done(Ok(())) => {
                link.last_sent = now;
                self.fence = Some(now + self.config.pong_timeout);
                None
            }
            Written::Done(Err(e)) => {
                self.lose_current(Ended::Lost(format!("ping failed: {}", describe_socket_error(&e))));
                None
            }
            Written::Stalled(_) => {
                let text = format!("no answer to a ping within {} ms", self.config.pong_timeout.as_millis());
                self.lose_current(Ended::Lost(text));
                None
            }
            Written::Interrupted(command) => Some(command),
        }
    }

    /// Stops on a command, or when the client's handle has gone.
    async fn on_command(&mut self, command: Option<Command>) {
        match command {
            Some(Command::Stop { grace, done }) => {
                self.stop(grace).await;
                let _ = done.send(());
            }
            None => self.stop(Duration::from_secs(1)).await,
        }
    }

    /// Fails every queued send and refuses later ones.
    fn close_queue(&self, why: &str) {
        for outgoing in self.queue.close() {
            self.report_failed(outgoing, why);
        }
    }

    async fn stop(&mut self, grace: Duration) {
        self.set_state(ConnectionState::Closing, StateReason::Requested);
        if let Some(pending) = self.pending.take() {
            pending.abort();
        }
        let current = self.current.take();
        let old = self.old.take().map(|(link, _)| link);
        for mut link in current.into_iter().chain(old) {
            let _ = tokio::time::timeout(grace, async {
                link.writer.send(Message::Close(None)).await?;
                while let Some(frame) = link.reader.next().await {
                    if matches!(frame?, Message::Close(_)) {
                        break;
                    }
                }
                Ok::<(), tungstenite::Error>(())
            })
            .await;
        }
        self.close_queue("the client disconnected before the message was written");
        self.set_state(ConnectionState::Disconnected, StateReason::Requested);
    }
}
