//! The supervisor: one task per client that owns its connection for as long as
//! the client runs. It connects, reads, writes the send queue with pacing,
//! pings, reconnects forever with full-jitter backoff, and on GO_AWAY or at the
//! age limit opens the new socket before it lets go of the old one.
//!
//! It is an explicit phase machine ([`Phase`]): each phase owns its sockets and
//! its connect attempt, and the public state, what is read and written, and
//! every wake-up are functions of the phase ([`Phase::state`],
//! [`Phase::wakeups`]). Frames written and not yet acknowledged by the
//! service's TCP stay with the socket they were written to (see
//! [`super::delivery`]); when it fails they are written again on the next one,
//! ahead of newer sends.

use super::backlog::Backlog;
use super::connect::{Phases, Socket, SocketReader, SocketWriter, describe_socket_error, with_inbound_limit};
use super::delivery::{CONFIRM_POLL, InFlight, TcpProgress};
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
/// The longest the old socket is still read after a handover (2 s). The new
/// socket is not read meanwhile, so that what the service still sends on the
/// old one comes first; a service that replaces the old connection closes it at
/// once, which ends the drain.
const HANDOVER_DRAIN: Duration = Duration::from_secs(2);
/// A drain also ends when the old socket has been silent this long (250 ms):
/// what the service still had for it goes out as soon as the new socket is
/// admitted, well within this on any working link, so a service that keeps the
/// old socket open without using it holds inbound up this long, not 2 s.
const HANDOVER_DRAIN_QUIET: Duration = Duration::from_millis(250);
/// How long a handover whose old socket the service closed may still take to
/// finish opening the new one before the client reports it is reconnecting
/// (1 s): the service closes the old socket when it admits the new one, whose
/// attempt then only has the upgrade's answer to read.
const HANDOVER_SWITCH: Duration = Duration::from_secs(1);
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
            phase: Phase::Idle { retry_at: Instant::now() },
            ever_connected: false,
            failures: 0,
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
                    SEND_FAILED,
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

/// `error_type` of a send reported failed before it was written.
const SEND_FAILED: &str = "SendFailed";
/// `error_type` of a send written to a socket that failed (or was closed by a
/// stop) before the service acknowledged it: it may or may not have arrived.
const UNCONFIRMED: &str = "Unconfirmed";

/// Reports an accepted send that did not reach the service as far as the client
/// knows: the status callback gets it with its correlation id (origin Local).
fn report_failed(sink: &EventSink, counters: &Counters, outgoing: Outgoing, error_type: &str, why: &str) {
    bump(&counters.messages_failed);
    sink(ClientEvent::Status(StatusReport {
        origin: StatusOrigin::Local,
        correlation_id: outgoing.correlation_id,
        error_type: Some(error_type.into()),
        status_code: 0,
        description: Some(why.to_owned()),
    }));
}

/// An open socket and the frames written to it that its peer has not
/// acknowledged yet. Owned by the phase that uses it.
struct Link {
    writer: SocketWriter,
    reader: SocketReader,
    /// The kernel's counts of the socket; `None` where the platform has none
    /// (frames then count as confirmed once written).
    progress: Option<TcpProgress>,
    /// Written, not yet confirmed, oldest first.
    in_flight: InFlight,
    /// When the acknowledged count was last read.
    confirm_read: Instant,
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
        let progress = TcpProgress::of(socket.get_ref().stream.tcp());
        let (writer, reader) = socket.split();
        let now = Instant::now();
        Link {
            writer,
            reader,
            progress,
            in_flight: InFlight::default(),
            confirm_read: now,
            opened: now,
            last_frame: now,
            last_sent: now,
            ping_outstanding: None,
        }
    }

    /// Removes the frames the peer has acknowledged; returns how many.
    fn confirm_acknowledged(&mut self) -> usize {
        self.confirm_read = Instant::now();
        let Some(progress) = self.progress else { return 0 };
        let mut confirmed = progress.acknowledged().map_or(0, |acknowledged| self.in_flight.confirm(acknowledged));
        // Frames whose recorded end is too large wait while the kernel holds
        // nothing unacknowledged: read only then (one system call otherwise).
        if !self.in_flight.is_empty() && progress.unacknowledged() == Some(0) {
            confirmed += self.in_flight.confirm_flushed();
        }
        confirmed
    }
}

type Attempt = JoinHandle<Result<(Socket, Phases, Duration), ClientError>>;

/// Where the supervisor is. Each phase owns its sockets and connect attempt.
enum Phase {
    /// No socket; the next connect attempt starts at `retry_at`.
    Idle { retry_at: Instant },
    /// A connect attempt without a socket; `first` for the client's first one.
    Connecting { attempt: Attempt, first: bool },
    /// One socket, read and written; handed over at `renew_at` (its age limit,
    /// now after a GO_AWAY, or later after a failed handover).
    Up { link: Link, renew_at: Instant },
    /// Handing over: writes have stopped and a fence ping was written; its pong
    /// (until `deadline`) proves the service read everything written before.
    Fencing { link: Link, deadline: Instant },
    /// Handing over: the new socket is being opened; the old one is still read.
    HandingOver { link: Link, attempt: Attempt },
    /// Handing over, the old socket closed by the service (it closes the socket
    /// a new one replaces): the public state stays connected while the new
    /// socket's attempt finishes, until `until` ([`HANDOVER_SWITCH`]).
    Switching { attempt: Attempt, until: Instant },
    /// After a handover: sends go to the new `link`, which is not read until the
    /// `old` one closes, stays silent for [`HANDOVER_DRAIN_QUIET`] (`quiet_at`)
    /// or reaches `until` ([`HANDOVER_DRAIN`]).
    Draining { link: Link, old: Box<Link>, quiet_at: Instant, until: Instant },
}

/// What a phase's wake-ups depend on besides the phase.
struct Inputs<'a> {
    config: &'a ClientConfig,
    /// The application's backlog is full: nothing is read and no ping timed.
    paused: bool,
    /// When pacing lets the head of the queue go; `None` for an empty queue.
    head_ready_at: Option<Instant>,
    /// The earliest deadline in the queue.
    queue_deadline: Option<Instant>,
}

/// When the supervisor must act next, per kind; `None`: not in this phase.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wakeups {
    /// Write the queue's head.
    write_at: Option<Instant>,
    /// A push to the queue needs a look (a new deadline, or a write to make).
    on_push: bool,
    /// Send a ping, or count an unanswered one as a drop.
    ping_at: Option<Instant>,
    /// Begin a handover.
    renew_at: Option<Instant>,
    /// The fence ping went unanswered: open the new socket anyway.
    fence_deadline: Option<Instant>,
    /// Start a connect attempt.
    retry_at: Option<Instant>,
    /// Report the queued sends whose deadline passed.
    expire_at: Option<Instant>,
    /// Stop reading the old socket of a handover.
    drain_end: Option<Instant>,
    /// A handover without a socket took too long: report reconnecting.
    switch_deadline: Option<Instant>,
    /// Read the acknowledged count again.
    confirm_at: Option<Instant>,
}

impl Phase {
    /// The public state in this phase (`ever_connected`: a socket was open
    /// once, so a connect attempt is a reconnect).
    fn state(&self) -> ConnectionState {
        match self {
            Phase::Connecting { first: true, .. } => ConnectionState::Connecting,
            Phase::Idle { .. } | Phase::Connecting { .. } => ConnectionState::Reconnecting,
            Phase::Up { .. }
            | Phase::Fencing { .. }
            | Phase::HandingOver { .. }
            | Phase::Switching { .. }
            | Phase::Draining { .. } => ConnectionState::Connected,
        }
    }

    /// The socket sends go to (and whose in-flight frames are confirmed).
    fn writing_link(&mut self) -> Option<&mut Link> {
        match self {
            Phase::Up { link, .. }
            | Phase::Fencing { link, .. }
            | Phase::HandingOver { link, .. }
            | Phase::Draining { link, .. } => Some(link),
            Phase::Idle { .. } | Phase::Connecting { .. } | Phase::Switching { .. } => None,
        }
    }

    /// The connect attempt in progress and the socket read in this phase.
    fn attempt_and_reader(&mut self) -> (Option<&mut Attempt>, Option<&mut SocketReader>) {
        match self {
            Phase::Idle { .. } => (None, None),
            Phase::Connecting { attempt, .. } | Phase::Switching { attempt, .. } => (Some(attempt), None),
            Phase::Up { link, .. } | Phase::Fencing { link, .. } => (None, Some(&mut link.reader)),
            Phase::HandingOver { link, attempt } => (Some(attempt), Some(&mut link.reader)),
            Phase::Draining { old, .. } => (None, Some(&mut old.reader)),
        }
    }

    /// Every wake-up of this phase. Writes go only to a socket that is not
    /// being handed over (what is written to the old socket after the service
    /// admitted the new one would be dropped), and wait while the socket holds
    /// [`super::delivery::MAX_IN_FLIGHT`] unconfirmed frames. Pings are timed on
    /// the socket that is read, never while paused. Queued sends expire only
    /// while there is no socket.
    fn wakeups(&self, inputs: &Inputs<'_>) -> Wakeups {
        let config = inputs.config;
        let ping = |link: &Link| match link.ping_outstanding {
            Some(sent) => sent + config.pong_timeout,
            // Ping when either direction has been quiet for the interval: the
            // service closes sockets it has heard nothing from, and a silent
            // peer may be gone.
            None => link.last_frame.min(link.last_sent) + config.ping_interval,
        };
        let confirm = |link: &Link| (!link.in_flight.is_empty()).then(|| link.confirm_read + CONFIRM_POLL);
        let write = |link: &Link| inputs.head_ready_at.filter(|_| link.in_flight.room() > 0);
        let mut wakeups = Wakeups::default();
        match self {
            Phase::Idle { retry_at } => {
                wakeups.retry_at = Some(*retry_at);
                wakeups.expire_at = inputs.queue_deadline;
                wakeups.on_push = true;
            }
            Phase::Connecting { .. } => {
                wakeups.expire_at = inputs.queue_deadline;
                wakeups.on_push = true;
            }
            Phase::Switching { until, .. } => {
                wakeups.switch_deadline = Some(*until);
                wakeups.expire_at = inputs.queue_deadline;
                wakeups.on_push = true;
            }
            Phase::Up { link, renew_at } => {
                wakeups.write_at = write(link);
                wakeups.on_push = inputs.head_ready_at.is_none();
                wakeups.ping_at = (!inputs.paused).then(|| ping(link));
                wakeups.renew_at = Some(*renew_at);
                wakeups.confirm_at = confirm(link);
            }
            Phase::Fencing { link, deadline } => {
                wakeups.ping_at = (!inputs.paused).then(|| ping(link));
                wakeups.fence_deadline = Some(*deadline);
                wakeups.confirm_at = confirm(link);
            }
            Phase::HandingOver { link, .. } => {
                wakeups.ping_at = (!inputs.paused).then(|| ping(link));
                wakeups.confirm_at = confirm(link);
            }
            Phase::Draining { link, quiet_at, until, .. } => {
                wakeups.write_at = write(link);
                wakeups.on_push = inputs.head_ready_at.is_none();
                wakeups.drain_end = Some((*quiet_at).min(*until));
                wakeups.confirm_at = confirm(link);
            }
        }
        wakeups
    }
}

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
    /// The public state last reported.
    state: ConnectionState,
    phase: Phase,
    /// A socket was open once: later attempts are reconnects.
    ever_connected: bool,
    /// Consecutive failed attempts.
    failures: u32,
    sdp_window: Window,
    ice_window: Window,
    seed: u64,
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos as u64) ^ (&nanos as *const u128 as u64).rotate_left(32) | 1
}

/// Waits for the next frame of an optional socket; pending forever when absent.
async fn next_frame(reader: Option<&mut SocketReader>) -> Option<Result<Message, tungstenite::Error>> {
    match reader {
        Some(reader) => reader.next().await,
        None => std::future::pending().await,
    }
}

async fn finish(attempt: Option<&mut Attempt>) -> Result<(Socket, Phases, Duration), ClientError> {
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

/// A command that arrived during a write: the supervisor must act on it and end.
type Interrupt = Option<Command>;

impl Supervisor {
    fn emit(&self, event: ClientEvent) {
        (self.sink)(event);
    }

    /// Moves to `phase` and reports its public state if that changed.
    fn enter(&mut self, phase: Phase, reason: StateReason) {
        self.phase = phase;
        let state = self.phase.state();
        self.set_state(state, reason);
    }

    fn set_state(&mut self, state: ConnectionState, reason: StateReason) {
        if self.state == state {
            return;
        }
        self.state = state;
        self.counters.set_state(state);
        self.emit(ClientEvent::State(StateChange { state, reason }));
    }

    /// Takes the phase out, leaving an `Idle` placeholder that the caller
    /// replaces at once.
    fn take_phase(&mut self) -> Phase {
        std::mem::replace(&mut self.phase, Phase::Idle { retry_at: Instant::now() })
    }

    /// A random duration in [0, bound] (full jitter).
    fn jitter(&mut self, bound: Duration) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let millis = bound.as_millis() as u64;
        Duration::from_millis(if millis == 0 { 0 } else { self.seed % (millis + 1) })
    }

    /// The wait before the next attempt after one more failure.
    fn next_backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(20);
        let bound = self.config.backoff.initial.saturating_mul(1 << doublings).min(self.config.backoff.max);
        let wait = self.jitter(bound);
        self.counters.current_backoff_ms.store(wait.as_millis() as u64, Ordering::Relaxed);
        wait
    }

    fn start_attempt(&self) -> Attempt {
        let target = self.target.clone();
        let timeout = self.config.connect_timeout;
        let inbound_limit = self.config.max_inbound_frame_len;
        tokio::spawn(with_inbound_limit(inbound_limit, async move {
            match tokio::time::timeout(timeout, target.open()).await {
                Ok(result) => result,
                Err(_) => Err(ClientError::Timeout),
            }
        }))
    }

    /// Publishes how many frames wait for confirmation on the writing socket.
    fn publish_in_flight(&mut self) {
        let count = self.phase.writing_link().map_or(0, |link| link.in_flight.len());
        self.counters.messages_unconfirmed.store(count as u64, Ordering::Relaxed);
    }

    /// Counts `count` frames confirmed.
    fn confirmed(&mut self, count: usize) {
        if count > 0 {
            self.counters.messages_sent.fetch_add(count as u64, Ordering::Relaxed);
        }
        self.publish_in_flight();
    }

    /// Lets go of a socket that will not be written again: frames its peer
    /// acknowledged are confirmed, the others go back to the front of the queue
    /// (in order, ahead of newer sends) to be written on the next socket, except
    /// SDPs when `resend_unconfirmed_sdp` is off, which are reported
    /// ("Unconfirmed").
    fn settle(&mut self, link: &mut Link) {
        let confirmed = link.confirm_acknowledged();
        self.counters.messages_sent.fetch_add(confirmed as u64, Ordering::Relaxed);
        let mut resend = Vec::new();
        for mut outgoing in link.in_flight.take() {
            let sdp = matches!(outgoing.action, Action::SdpOffer | Action::SdpAnswer);
            if sdp && !self.config.resend_unconfirmed_sdp {
                let why = "the connection failed before the service acknowledged the message; it may not have arrived";
                report_failed(&self.sink, &self.counters, outgoing, UNCONFIRMED, why);
            } else {
                outgoing.written_before = true;
                resend.push(outgoing);
            }
        }
        if !resend.is_empty() {
            log!(Level::Info, TARGET, "{} unconfirmed messages go out again on the next socket", resend.len());
            self.queue.requeue_front(resend);
        }
    }

    async fn run(mut self) {
        let first = self.start_attempt();
        self.enter(Phase::Connecting { attempt: first, first: true }, StateReason::Requested);
        loop {
            let now = Instant::now();
            if let Phase::Idle { retry_at } = self.phase
                && now >= retry_at
            {
                let attempt = self.start_attempt();
                self.enter(Phase::Connecting { attempt, first: false }, StateReason::Requested);
            }
            // No socket is read while the application's callbacks are behind:
            // TCP slows the sender down instead of our memory growing. Pongs are
            // not read either, so no ping is sent or timed meanwhile.
            let paused = self.backlog.as_ref().is_some_and(|b| b.is_full());
            let head_ready_at = self.queue.head_action().map(|action| self.window(action).ready_at(now));
            let inputs =
                Inputs { config: &self.config, paused, head_ready_at, queue_deadline: self.queue.next_deadline() };
            let wake = self.phase.wakeups(&inputs);
            let (attempt, reader) = self.phase.attempt_and_reader();
            // Unbiased: a flood of inbound frames must not starve the writes, nor
            // the reverse.
            let interrupt = tokio::select! {
                command = self.commands.recv() => Some(command),
                result = finish(attempt) => {
                    if !self.on_attempt(result) {
                        return;
                    }
                    None
                }
                frame = next_frame(reader), if !paused => self.on_frame(frame).await,
                _ = backlog_room(&self.backlog), if paused => {
                    self.resume_reading();
                    None
                }
                _ = sleep_until_opt(wake.write_at) => self.write_ready().await,
                _ = self.queue.pushed.notified(), if wake.on_push => None,
                _ = sleep_until_opt(wake.ping_at) => self.on_ping_timer().await,
                _ = sleep_until_opt(wake.renew_at) => self.begin_handover().await,
                _ = sleep_until_opt(wake.fence_deadline) => {
                    log!(Level::Warn, TARGET, "no answer to the handover ping; opening the new socket anyway");
                    self.fenced();
                    None
                }
                _ = sleep_until_opt(wake.retry_at) => None,
                _ = sleep_until_opt(wake.expire_at) => {
                    for outgoing in self.queue.take_expired(Instant::now()) {
                        let why = "not written within the send queue timeout while reconnecting";
                        report_failed(&self.sink, &self.counters, outgoing, SEND_FAILED, why);
                    }
                    None
                }
                _ = sleep_until_opt(wake.drain_end) => self.end_drain().await,
                _ = sleep_until_opt(wake.switch_deadline) => {
                    if let Phase::Switching { attempt, .. } = self.take_phase() {
                        let why = "the service closed the old connection and the new one is not open yet";
                        let reason = StateReason::ConnectionLost(why.into());
                        self.enter(Phase::Connecting { attempt, first: false }, reason);
                    }
                    None
                }
                _ = sleep_until_opt(wake.confirm_at) => {
                    let confirmed = self.phase.writing_link().map_or(0, Link::confirm_acknowledged);
                    self.confirmed(confirmed);
                    None
                }
            };
            if let Some(command) = interrupt {
                self.on_command(command).await;
                return;
            }
        }
    }

    /// After a pause for back-pressure: the socket counts as heard from now,
    /// and a ping sent before the pause is not held against it.
    fn resume_reading(&mut self) {
        bump(&self.counters.backpressure_pauses);
        if let Some(link) = self.phase.writing_link() {
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
                let reconnect = self.ever_connected;
                self.ever_connected = true;
                self.counters.connected(reconnect, control_plane, phases.tls, phases.websocket);
                self.counters.clock_skew_ms.store(self.target.clock_skew_ms(), Ordering::Relaxed);
                let link = Link::new(socket);
                let renew_at = link.opened + self.config.max_connection_age;
                self.sdp_window.reset();
                self.ice_window.reset();
                log!(
                    Level::Info,
                    TARGET,
                    "connected to {} ({})",
                    self.target.describe(),
                    if reconnect { "reconnect" } else { "first connect" }
                );
                let phase = match self.take_phase() {
                    Phase::HandingOver { link: mut old, .. } => {
                        // Make-before-break: the new socket takes the sends; the
                        // old one is still read until the service closes it.
                        // Whatever it did not acknowledge is written again.
                        self.settle(&mut old);
                        let now = Instant::now();
                        Phase::Draining {
                            link,
                            old: Box::new(old),
                            quiet_at: now + HANDOVER_DRAIN_QUIET,
                            until: now + HANDOVER_DRAIN,
                        }
                    }
                    _ => Phase::Up { link, renew_at },
                };
                self.enter(phase, StateReason::Requested);
                self.publish_in_flight();
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
                if matches!(err, ClientError::PresignedUrlExpired(_)) {
                    return self.on_dead_url(err);
                }
                let wait = self.next_backoff();
                log!(
                    Level::Warn,
                    TARGET,
                    "connect to {} failed: {err}; retrying in {} ms",
                    self.target.describe(),
                    wait.as_millis()
                );
                let now = Instant::now();
                let phase = match self.take_phase() {
                    // A failed handover: keep the working socket, try again later.
                    Phase::HandingOver { link, .. } => {
                        Phase::Up { link, renew_at: now + wait.max(self.config.backoff.initial) }
                    }
                    _ => Phase::Idle { retry_at: now + wait },
                };
                self.enter(phase, StateReason::ConnectFailed(err.to_string()));
                true
            }
        }
    }

    /// The presigned URL is dead and nothing can make a new one: retrying is
    /// pointless. A socket still open (a failed handover) is kept until it
    /// ends; otherwise the client stops: queued sends are reported, the
    /// state becomes `Disconnected` with the reason. False when the
    /// supervisor must end.
    fn on_dead_url(&mut self, err: ClientError) -> bool {
        log!(Level::Error, TARGET, "connect to {} failed: {err}; not retrying", self.target.describe());
        if let Phase::HandingOver { link, .. } = self.take_phase() {
            // No handover without a URL: the socket lives until the service ends it.
            let renew_at = Instant::now() + Duration::from_secs(365 * 24 * 3600);
            self.enter(Phase::Up { link, renew_at }, StateReason::ConnectFailed(err.to_string()));
            return true;
        }
        self.close_queue("the presigned URL has expired; the client stopped");
        self.set_state(ConnectionState::Disconnected, StateReason::ConnectFailed(err.to_string()));
        if let Some(first) = self.first.take() {
            let _ = first.send(Err(err));
        }
        false
    }

    /// Handles a text frame of the writing socket, or (`current` false) of the
    /// old one being drained.
    fn on_text(&mut self, text: &str, current: bool) {
        match self.inbound.handle_text(text) {
            Some(Notice::GoAway) => {
                self.target.on_go_away();
                if current && let Phase::Up { renew_at, .. } = &mut self.phase {
                    // Hand over as soon as possible.
                    *renew_at = Instant::now();
                }
            }
            Some(Notice::ReconnectIceServer) => self.target.refresh_ice_servers(),
            Some(Notice::OfferReceived) => self.target.on_offer(),
            None => {}
        }
    }

    /// Handles a frame of the socket this phase reads.
    async fn on_frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> Option<Interrupt> {
        if let Phase::Draining { quiet_at, .. } = &mut self.phase {
            match frame {
                Some(Ok(Message::Text(text))) => {
                    *quiet_at = Instant::now() + HANDOVER_DRAIN_QUIET;
                    self.on_text(text.as_str(), false);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => self.drained(),
                Some(Ok(_)) => {}
            }
            return None;
        }
        let ended = match frame {
            Some(Ok(message)) => {
                if let Some(link) = self.phase.writing_link() {
                    link.last_frame = Instant::now();
                    link.ping_outstanding = None;
                }
                match message {
                    Message::Text(text) => {
                        self.on_text(text.as_str(), true);
                        return None;
                    }
                    Message::Pong(payload) => {
                        if payload.as_ref() == FENCE && matches!(self.phase, Phase::Fencing { .. }) {
                            // The service read everything written before the fence.
                            let confirmed = self.phase.writing_link().map_or(0, |link| link.in_flight.confirm_all());
                            self.confirmed(confirmed);
                            self.fenced();
                        }
                        return None;
                    }
                    Message::Binary(data) => {
                        log!(Level::Warn, TARGET, "skipped a {}-byte binary frame", data.len());
                        return None;
                    }
                    Message::Close(frame) => Ended::Closed(frame.map(|f| u16::from(f.code))),
                    _ => return None,
                }
            }
            Some(Err(e)) => Ended::Lost(describe_socket_error(&e)),
            None => Ended::Lost("the socket closed".into()),
        };
        self.lose(ended);
        None
    }

    /// The fence is answered (or its wait is over): open the new socket.
    fn fenced(&mut self) {
        if let Phase::Fencing { link, .. } = self.take_phase() {
            let attempt = self.start_attempt();
            self.enter(Phase::HandingOver { link, attempt }, StateReason::Requested);
        }
    }

    /// The old socket of a handover closed: the new one is read from now on.
    fn drained(&mut self) {
        if let Phase::Draining { mut link, .. } = self.take_phase() {
            link.last_frame = Instant::now();
            let renew_at = link.opened + self.config.max_connection_age;
            self.enter(Phase::Up { link, renew_at }, StateReason::Requested);
        }
    }

    /// The drain's time is over: the old socket is closed (bounded) and dropped.
    async fn end_drain(&mut self) -> Option<Interrupt> {
        if let Phase::Draining { old, .. } = &mut self.phase {
            let close = old.writer.send(Message::Close(None));
            if let Written::Interrupted(command) = bounded(&mut self.commands, HANDOVER_DRAIN_QUIET, close).await {
                return Some(command);
            }
        }
        self.drained();
        None
    }

    /// Drops the socket that sends go to and schedules a reconnect; its
    /// unconfirmed frames go out again on the next socket.
    fn lose(&mut self, ended: Ended) {
        let reason = match ended {
            Ended::Closed(code) => StateReason::ClosedByService(code),
            Ended::Lost(text) => StateReason::ConnectionLost(text),
        };
        log!(Level::Warn, TARGET, "connection to {} ended: {reason:?}; reconnecting", self.target.describe());
        self.target.on_connection_lost();
        let (mut link, attempt) = match self.take_phase() {
            Phase::Up { link, .. } | Phase::Fencing { link, .. } | Phase::Draining { link, .. } => (link, None),
            Phase::HandingOver { link, attempt } => (link, Some(attempt)),
            idle @ (Phase::Idle { .. } | Phase::Connecting { .. } | Phase::Switching { .. }) => {
                self.phase = idle;
                return;
            }
        };
        // Only a connection that stayed up a while resets the backoff: a service
        // that accepts and closes at once must not be hammered.
        if link.opened.elapsed() >= STABLE_CONNECTION {
            self.failures = 0;
        }
        self.settle(&mut link);
        let phase = match (attempt, &reason) {
            // The service closed the old socket of a handover: the new one is
            // (about to be) admitted.
            (Some(attempt), StateReason::ClosedByService(_)) => {
                Phase::Switching { attempt, until: Instant::now() + HANDOVER_SWITCH }
            }
            // A handover is already opening the next socket.
            (Some(attempt), _) => Phase::Connecting { attempt, first: false },
            (None, _) => Phase::Idle { retry_at: Instant::now() + self.next_backoff() },
        };
        self.enter(phase, reason);
        self.publish_in_flight();
    }

    /// Writes the queued sends that pacing and the in-flight bound allow now,
    /// in one flush. Returns a command that arrived while the write waited
    /// (see [`bounded`]).
    async fn write_ready(&mut self) -> Option<Interrupt> {
        let link = match &mut self.phase {
            Phase::Up { link, .. } | Phase::Draining { link, .. } => link,
            _ => return None,
        };
        let now = Instant::now();
        let mut batch = Vec::new();
        let room = link.in_flight.room().min(WRITE_BATCH);
        while batch.len() < room {
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
            if outgoing.action == Action::SdpOffer && !outgoing.written_before {
                self.inbound.offer_sent(outgoing.recipient.as_deref());
            }
            batch.push(outgoing);
        }
        if batch.is_empty() {
            return None;
        }
        let resent = batch.iter().filter(|outgoing| outgoing.written_before).count();
        self.counters.messages_resent.fetch_add(resent as u64, Ordering::Relaxed);
        let write = async {
            for outgoing in &batch {
                link.writer.feed(Message::text(outgoing.frame.as_str())).await?;
            }
            link.writer.flush().await
        };
        let stall = self.config.ping_interval + self.config.pong_timeout;
        let written = bounded(&mut self.commands, stall, write).await;
        let ended = match written {
            Written::Done(Ok(())) => {
                link.last_sent = Instant::now();
                match link.progress {
                    Some(progress) => {
                        if link.in_flight.is_empty() {
                            link.confirm_read = link.last_sent;
                        }
                        link.in_flight.written(batch, progress.written());
                        self.publish_in_flight();
                    }
                    // No count of acknowledged bytes: written is as far as the
                    // client can tell.
                    None => self.confirmed(batch.len()),
                }
                return None;
            }
            // Each frame may or may not be in the kernel: they wait for the
            // confirmed mark, like every frame written and not yet acknowledged.
            Written::Done(Err(e)) => Ended::Lost(format!("write failed: {}", describe_socket_error(&e))),
            Written::Stalled(after) => Ended::Lost(format!("a write made no progress for {} ms", after.as_millis())),
            Written::Interrupted(command) => {
                link.in_flight.maybe_written(batch);
                return Some(command);
            }
        };
        link.in_flight.maybe_written(batch);
        self.lose(ended);
        None
    }

    /// Sends a keepalive ping, or counts an unanswered one as a drop. Returns a
    /// command that arrived while the ping waited to be written.
    async fn on_ping_timer(&mut self) -> Option<Interrupt> {
        let link = self.phase.writing_link()?;
        let now = Instant::now();
        let unanswered = format!("no answer to a ping within {} ms", self.config.pong_timeout.as_millis());
        if let Some(sent) = link.ping_outstanding {
            if now >= sent + self.config.pong_timeout {
                self.lose(Ended::Lost(unanswered));
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
                self.lose(Ended::Lost(format!("ping failed: {}", describe_socket_error(&e))));
                None
            }
            Written::Stalled(_) => {
                self.lose(Ended::Lost(unanswered));
                None
            }
            Written::Interrupted(command) => Some(command),
        }
    }

    /// Starts a make-before-break handover of the current socket. Writes to it
    /// stop, and a ping is sent after the last of them: the service answers a
    /// ping once it has read every frame before it, so once the pong is back
    /// nothing written to the old socket is still unread (all of it is
    /// confirmed) when the new socket replaces it. Then the new socket is
    /// opened ([`Supervisor::on_attempt`] switches to it and lets the old one
    /// drain). Returns a command that arrived while the ping waited to be written.
    async fn begin_handover(&mut self) -> Option<Interrupt> {
        let Phase::Up { link, .. } = &mut self.phase else { return None };
        log!(Level::Info, TARGET, "handing over to a new connection (GO_AWAY or maximum age)");
        let now = Instant::now();
        let ping = link.writer.send(Message::Ping(FENCE.to_vec().into()));
        match bounded(&mut self.commands, self.config.pong_timeout, ping).await {
            Written::Done(Ok(())) => {
                link.last_sent = now;
                if let Phase::Up { link, .. } = self.take_phase() {
                    let deadline = now + self.config.pong_timeout;
                    self.enter(Phase::Fencing { link, deadline }, StateReason::Requested);
                }
                None
            }
            Written::Done(Err(e)) => {
                self.lose(Ended::Lost(format!("ping failed: {}", describe_socket_error(&e))));
                None
            }
            Written::Stalled(_) => {
                let text = format!("no answer to a ping within {} ms", self.config.pong_timeout.as_millis());
                self.lose(Ended::Lost(text));
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
            report_failed(&self.sink, &self.counters, outgoing, SEND_FAILED, why);
        }
    }

    /// Closes every socket (close frame, `grace` for the service's answer),
    /// settles what was written to them, and reports what is still queued.
    /// Frames that no answer confirms are reported "Unconfirmed".
    async fn stop(&mut self, grace: Duration) {
        self.set_state(ConnectionState::Closing, StateReason::Requested);
        let (current, old) = match self.take_phase() {
            Phase::Idle { .. } => (None, None),
            Phase::Connecting { attempt, .. } | Phase::Switching { attempt, .. } => {
                attempt.abort();
                (None, None)
            }
            Phase::HandingOver { link, attempt } => {
                attempt.abort();
                (Some(link), None)
            }
            Phase::Up { link, .. } | Phase::Fencing { link, .. } => (Some(link), None),
            Phase::Draining { link, old, .. } => (Some(link), Some(*old)),
        };
        for mut link in current.into_iter().chain(old) {
            let answered = tokio::time::timeout(grace, async {
                link.writer.send(Message::Close(None)).await?;
                while let Some(frame) = link.reader.next().await {
                    if matches!(frame?, Message::Close(_)) {
                        return Ok(true);
                    }
                }
                Ok::<bool, tungstenite::Error>(false)
            })
            .await;
            // The service answers a close after reading every frame before it.
            let confirmed = match answered {
                Ok(Ok(true)) => link.in_flight.confirm_all(),
                _ => link.confirm_acknowledged(),
            };
            self.counters.messages_sent.fetch_add(confirmed as u64, Ordering::Relaxed);
            for outgoing in link.in_flight.take() {
                let why = "the client disconnected before the service acknowledged the message";
                report_failed(&self.sink, &self.counters, outgoing, UNCONFIRMED, why);
            }
        }
        self.counters.messages_unconfirmed.store(0, Ordering::Relaxed);
        self.close_queue("the client disconnected before the message was written");
        self.set_state(ConnectionState::Disconnected, StateReason::Requested);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::connect::{Stream, Watched};
    use crate::client::delivery::MAX_IN_FLIGHT;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::WebSocketStream;

    /// A link over a real loopback WebSocket, and the server's end (kept open).
    async fn link() -> (Link, WebSocketStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(tcp).await.unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (socket, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/"), Watched::new(Stream::Plain(tcp), Arc::default()))
                .await
                .unwrap();
        (Link::new(socket), server.await.unwrap())
    }

    /// A connect attempt that never ends.
    fn pending_attempt() -> Attempt {
        tokio::spawn(std::future::pending())
    }

    fn config() -> ClientConfig {
        ClientConfig::master("arn:aws:kinesisvideo:us-west-2:1:channel/c/1", "ws://h")
    }

    fn inputs(config: &ClientConfig, head_ready_at: Option<Instant>) -> Inputs<'_> {
        Inputs { config, paused: false, head_ready_at, queue_deadline: Some(Instant::now() + Duration::from_secs(30)) }
    }

    fn outgoing() -> Outgoing {
        Outgoing {
            frame: "{}".into(),
            correlation_id: "c".into(),
            action: Action::IceCandidate,
            recipient: None,
            deadline: Instant::now(),
            written_before: false,
        }
    }

    #[tokio::test]
    async fn without_a_socket_sends_wait_expire_and_wake_the_supervisor() {
        let config = config();
        let at = Instant::now() + Duration::from_millis(300);
        let idle = Phase::Idle { retry_at: at };
        let queued = inputs(&config, Some(Instant::now()));
        assert_eq!(idle.state(), ConnectionState::Reconnecting);
        let expected =
            Wakeups { retry_at: Some(at), expire_at: queued.queue_deadline, on_push: true, ..Wakeups::default() };
        assert_eq!(idle.wakeups(&queued), expected, "a queued send is not written, but expires");

        let mut first = Phase::Connecting { attempt: pending_attempt(), first: true };
        assert_eq!(first.state(), ConnectionState::Connecting);
        assert_eq!(
            Phase::Connecting { attempt: pending_attempt(), first: false }.state(),
            ConnectionState::Reconnecting
        );
        let expected = Wakeups { expire_at: queued.queue_deadline, on_push: true, ..Wakeups::default() };
        assert_eq!(first.wakeups(&queued), expected);
        let (attempt, reader) = first.attempt_and_reader();
        assert!(attempt.is_some() && reader.is_none());
        assert!(first.writing_link().is_none());

        let until = Instant::now() + HANDOVER_SWITCH;
        let switching = Phase::Switching { attempt: pending_attempt(), until };
        assert_eq!(switching.state(), ConnectionState::Connected, "a clean handover is not a reconnect");
        let expected = Wakeups {
            switch_deadline: Some(until),
            expire_at: queued.queue_deadline,
            on_push: true,
            ..Wakeups::default()
        };
        assert_eq!(switching.wakeups(&queued), expected);
    }

    #[tokio::test]
    async fn up_writes_pings_renews_and_confirms() {
        let config = config();
        let (mut link, _server) = link().await;
        let ready = Instant::now();
        let ping_at = link.last_frame.min(link.last_sent) + config.ping_interval;
        let renew_at = link.opened + config.max_connection_age;
        link.in_flight.written(vec![outgoing()], Some(u64::MAX - 1));
        let confirm_at = link.confirm_read + CONFIRM_POLL;
        let mut up = Phase::Up { link, renew_at };
        assert_eq!(up.state(), ConnectionState::Connected);
        let expected = Wakeups {
            write_at: Some(ready),
            ping_at: Some(ping_at),
            renew_at: Some(renew_at),
            confirm_at: Some(confirm_at),
            ..Wakeups::default()
        };
        assert_eq!(up.wakeups(&inputs(&config, Some(ready))), expected, "no expiry while a socket is up");
        // An empty queue waits for a push; back-pressure stops the pings.
        let paused = Inputs { paused: true, ..inputs(&config, None) };
        let expected = Wakeups { on_push: true, renew_at: Some(renew_at), confirm_at: Some(confirm_at), ..expected };
        assert_eq!(up.wakeups(&paused), Wakeups { write_at: None, ping_at: None, ..expected });
        // A full in-flight list stops the writes until confirmations.
        let link = up.writing_link().unwrap();
        link.in_flight.written((1..MAX_IN_FLIGHT).map(|_| outgoing()).collect(), None);
        assert_eq!(up.wakeups(&inputs(&config, Some(ready))).write_at, None);
        let (attempt, reader) = up.attempt_and_reader();
        assert!(attempt.is_none() && reader.is_some());
    }

    #[tokio::test]
    async fn a_handover_stops_writes_then_drains_the_old_socket_first() {
        let config = config();
        let ready = Some(Instant::now());
        let (link_a, _server_a) = link().await;
        let ping_at = link_a.last_frame.min(link_a.last_sent) + config.ping_interval;
        let deadline = Instant::now() + config.pong_timeout;
        let fencing = Phase::Fencing { link: link_a, deadline };
        assert_eq!(fencing.state(), ConnectionState::Connected);
        let expected = Wakeups { fence_deadline: Some(deadline), ping_at: Some(ping_at), ..Wakeups::default() };
        assert_eq!(fencing.wakeups(&inputs(&config, ready)), expected, "no write after the fence");

        let Phase::Fencing { link: link_a, .. } = fencing else { unreachable!() };
        let mut handing_over = Phase::HandingOver { link: link_a, attempt: pending_attempt() };
        assert_eq!(
            handing_over.wakeups(&inputs(&config, ready)),
            Wakeups { ping_at: Some(ping_at), ..Wakeups::default() }
        );
        let (attempt, reader) = handing_over.attempt_and_reader();
        assert!(attempt.is_some() && reader.is_some(), "the old socket is read while the new one opens");

        let Phase::HandingOver { link: old, .. } = handing_over else { unreachable!() };
        let (new, _server_b) = link().await;
        let now = Instant::now();
        let (quiet_at, until) = (now + HANDOVER_DRAIN_QUIET, now + HANDOVER_DRAIN);
        let mut draining = Phase::Draining { link: new, old: Box::new(old), quiet_at, until };
        assert_eq!(draining.state(), ConnectionState::Connected);
        let expected = Wakeups { write_at: ready, drain_end: Some(quiet_at), ..Wakeups::default() };
        assert_eq!(
            draining.wakeups(&inputs(&config, ready)),
            expected,
            "writes go on; the silent old socket ends first"
        );
        let Phase::Draining { old, .. } = &mut draining else { unreachable!() };
        let old_reader: *const SocketReader = &old.reader;
        let (_, reader) = draining.attempt_and_reader();
        assert!(std::ptr::eq(reader.unwrap(), old_reader), "the old socket is read, not the new one");
    }
}
