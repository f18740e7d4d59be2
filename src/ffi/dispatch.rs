//! The callback dispatcher: one plain thread (`kvs-callbacks`) that runs the C
//! callbacks of every client. It is never a tokio worker, so a slow callback
//! cannot stall the sockets.
//!
//! Each client has a [`Lane`]: its callbacks run one at a time, in the order
//! they were posted. Lanes with work take turns, one callback each, so a
//! client with a long backlog does not hold up the others. What a lane holds
//! is counted in the client's [`Backlog`]; when it is full the client stops
//! reading its socket until the dispatcher has caught up.

use super::client::Callbacks;
use crate::client::Backlog;
use crate::runtime::mark_library_thread;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One callback invocation, run with the client's callbacks.
pub(super) type Job = Box<dyn FnOnce(&Callbacks) + Send>;

/// At most this many requests of one kind (signing, credentials) wait for the
/// application's callback at once, per client (4): a callback slower than
/// the library's wait for it cannot make the lane grow with every retry.
pub(super) const MAX_PENDING_REQUESTS: usize = 4;

/// The requests of one kind a client has posted to its lane and that have not
/// run (or been discarded) yet. Shared by the client's threads.
#[derive(Debug, Default)]
pub(super) struct PendingRequests(Arc<AtomicUsize>);

/// One request counted in its [`PendingRequests`] until dropped: moved into
/// the job, so that running or discarding the job frees it.
pub(super) struct PendingSlot(Arc<AtomicUsize>);

impl PendingRequests {
    /// A slot for one more request; `None` while [`MAX_PENDING_REQUESTS`] wait.
    pub fn reserve(&self) -> Option<PendingSlot> {
        let taken =
            self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_PENDING_REQUESTS).then_some(n + 1));
        taken.ok().map(|_| PendingSlot(Arc::clone(&self.0)))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Dispatcher {
    /// Lanes that have just received work.
    ready: Sender<Arc<Lane>>,
    thread: JoinHandle<()>,
}

static DISPATCHER: Mutex<Option<Dispatcher>> = Mutex::new(None);
/// Set by [`shutdown`]: no callback starts any more, and nothing is queued.
static STOPPED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static ON_DISPATCHER: Cell<bool> = const { Cell::new(false) };
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// True on the dispatcher thread, i.e. inside a callback.
pub fn on_dispatcher() -> bool {
    ON_DISPATCHER.with(Cell::get)
}

/// The callbacks of one client and the jobs waiting to run them. Shared by the
/// client's handle, its event sink and the dispatcher.
pub(super) struct Lane {
    callbacks: Callbacks,
    backlog: Arc<Backlog>,
    state: Mutex<LaneState>,
    /// Signalled when a running job of this lane returns.
    idle: Condvar,
}

/// Whether a job may still run while its client is being freed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A received message, notice or credentials request: the application no
    /// longer wants it once it frees the client.
    Inbound,
    /// A report on the application's own sends or the client's state: still
    /// delivered while the client is freed, so no accepted send goes unreported.
    Report,
}

#[derive(Default)]
struct LaneState {
    /// Jobs not started yet, with their kind and the bytes each is counted for.
    jobs: VecDeque<(Job, Kind, usize)>,
    /// The lane is in the dispatcher's rotation (it will look at it again).
    scheduled: bool,
    /// A job of this lane is running on the dispatcher now.
    running: bool,
    /// The client is being freed: only reports are accepted.
    closing: bool,
    /// The client is freed: every post is refused.
    closed: bool,
}

impl Lane {
    /// A lane for `callbacks`, counting what it holds in `backlog`.
    pub fn new(callbacks: Callbacks, backlog: Arc<Backlog>) -> Arc<Lane> {
        Arc::new(Lane { callbacks, backlog, state: Mutex::default(), idle: Condvar::new() })
    }

    pub fn callbacks(&self) -> &Callbacks {
        &self.callbacks
    }

    /// Queues `job`, counted as `bytes` in the backlog. False (the job is
    /// dropped) once the lane is closed (or closing, for inbound jobs), after
    /// the library shut down, and when the dispatcher thread is gone: callbacks
    /// then never run.
    pub fn post(self: &Arc<Self>, kind: Kind, bytes: usize, job: Job) -> bool {
        let mut state = lock(&self.state);
        if state.closed || (state.closing && kind == Kind::Inbound) || STOPPED.load(Ordering::Acquire) {
            return false;
        }
        if !state.scheduled {
            let sent = lock(&DISPATCHER).as_ref().is_some_and(|d| d.ready.send(Arc::clone(self)).is_ok());
            if !sent {
                return false;
            }
            state.scheduled = true;
        }
        state.jobs.push_back((job, kind, bytes));
        self.backlog.add(bytes);
        true
    }

    /// First step of freeing the client: inbound jobs not started yet are
    /// discarded and later ones refused; reports are still accepted and run.
    pub fn begin_close(&self) {
        let discarded = {
            let mut state = lock(&self.state);
            state.closing = true;
            let (reports, inbound) = std::mem::take(&mut state.jobs).into_iter().partition(|j| j.1 == Kind::Report);
            state.jobs = reports;
            inbound
        };
        self.forget(discarded);
    }

    /// Last step of freeing the client: waits until the reports queued so far
    /// have run (unless the library was shut down: they are then discarded)
    /// and a job running now has returned, then refuses every later post. Must
    /// not run on the dispatcher thread.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        while state.running || (!state.jobs.is_empty() && !STOPPED.load(Ordering::Acquire)) {
            // Timed, so that a shutdown meanwhile (which runs no more jobs) ends the wait.
            state = self.idle.wait_timeout(state, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
        }
        state.closed = true;
        let discarded = std::mem::take(&mut state.jobs);
        drop(state);
        self.forget(discarded);
    }

    /// Drops jobs that will not run and gives their room back.
    fn forget(&self, jobs: VecDeque<(Job, Kind, usize)>) {
        for (job, _, bytes) in jobs {
            drop(job);
            self.backlog.remove(bytes);
        }
    }

    /// Runs the lane's next job, if any; true if more wait after it.
    fn run_next(&self) -> bool {
        let (job, _, bytes) = {
            let mut state = lock(&self.state);
            match state.jobs.pop_front() {
                Some(next) => {
                    state.running = true;
                    next
                }
                None => {
                    state.scheduled = false;
                    return false;
                }
            }
        };
        // A panic in our conversion code must not end the thread: the boundary
        // catches it and records it quietly, as at every entry point.
        super::boundary(|| job(&self.callbacks));
        self.backlog.remove(bytes);
        let mut state = lock(&self.state);
        state.running = false;
        self.idle.notify_all();
        if state.jobs.is_empty() {
            state.scheduled = false;
            false
        } else {
            true
        }
    }

    /// Drops every waiting job (the library is shutting down).
    fn discard(&self) {
        let discarded = {
            let mut state = lock(&self.state);
            state.scheduled = false;
            std::mem::take(&mut state.jobs)
        };
        self.forget(discarded);
    }
}

fn run(ready: Receiver<Arc<Lane>>) {
    mark_library_thread();
    ON_DISPATCHER.with(|flag| flag.set(true));
    // Lanes with work, in turn: one job each, then to the back of the line.
    let mut turns: VecDeque<Arc<Lane>> = VecDeque::new();
    loop {
        loop {
            match ready.try_recv() {
                Ok(lane) => turns.push_back(lane),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    turns.iter().for_each(|lane| lane.discard());
                    return;
                }
            }
        }
        if STOPPED.load(Ordering::Acquire) {
            turns.iter().for_each(|lane| lane.discard());
            ready.try_iter().for_each(|lane| lane.discard());
            return;
        }
        let lane = match turns.pop_front() {
            Some(lane) => lane,
            None => match ready.recv() {
                Ok(lane) => lane,
                Err(_) => return,
            },
        };
        if lane.run_next() {
            turns.push_back(lane);
        }
    }
}

/// Starts the dispatcher thread unless it runs. Fails if the library was shut
/// down or the thread could not be started.
pub fn start() -> Result<(), ()> {
    let mut dispatcher = lock(&DISPATCHER);
    if STOPPED.load(Ordering::Acquire) {
        return Err(());
    }
    if dispatcher.is_none() {
        let (ready, receiver) = channel();
        let thread = std::thread::Builder::new().name("kvs-callbacks".into()).spawn(move || run(receiver));
        *dispatcher = Some(Dispatcher { ready, thread: thread.map_err(drop)? });
    }
    Ok(())
}

/// No callback starts from now on and nothing more is queued; one running now
/// finishes.
pub fn stop_callbacks() {
    STOPPED.store(true, Ordering::Release);
}

/// Stops the dispatcher ([`stop_callbacks`]), discards the queued callbacks,
/// and waits until `deadline` for one running now. Err if it was still running
/// then (the thread ends by itself once it returns).
pub fn shutdown(deadline: Instant) -> Result<(), ()> {
    stop_callbacks();
    let Some(dispatcher) = lock(&DISPATCHER).take() else {
        return Ok(());
    };
    drop(dispatcher.ready);
    while !dispatcher.thread.is_finished() {
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = dispatcher.thread.join();
    Ok(())
}
