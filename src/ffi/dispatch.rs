//! The callback dispatcher: one plain thread (`kvs-callbacks`) that runs every C
//! callback of every client, one at a time, in the order they were posted. It is
//! never a tokio worker, so a slow callback cannot stall the sockets.

use crate::runtime::mark_library_thread;
use std::cell::Cell;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

struct Dispatcher {
    jobs: Sender<Job>,
    thread: JoinHandle<()>,
}

static DISPATCHER: Mutex<Option<Dispatcher>> = Mutex::new(None);

thread_local! {
    static ON_DISPATCHER: Cell<bool> = const { Cell::new(false) };
}

fn lock() -> MutexGuard<'static, Option<Dispatcher>> {
    DISPATCHER.lock().unwrap_or_else(|e| e.into_inner())
}

/// True on the dispatcher thread, i.e. inside a callback.
pub fn on_dispatcher() -> bool {
    ON_DISPATCHER.with(Cell::get)
}

fn run(jobs: Receiver<Job>) {
    mark_library_thread();
    ON_DISPATCHER.with(|flag| flag.set(true));
    for job in jobs {
        // A panic in our conversion code must not end the thread: the boundary
        // catches it and records it quietly, as at every entry point.
        super::boundary(job);
    }
}

/// Queues `job` for the dispatcher thread, starting it on first use. If the
/// thread cannot run (it could not be started, or the library was shut down),
/// the job runs on the calling thread instead so that nothing is lost.
pub fn post(job: Job) {
    let mut dispatcher = lock();
    if dispatcher.is_none() && !crate::runtime::is_shut_down() {
        let (jobs, receiver) = channel();
        let spawned = std::thread::Builder::new().name("kvs-callbacks".into()).spawn(move || run(receiver));
        if let Ok(thread) = spawned {
            *dispatcher = Some(Dispatcher { jobs, thread });
        }
    }
    let job = match dispatcher.as_ref() {
        Some(d) => match d.jobs.send(job) {
            Ok(()) => return,
            Err(returned) => returned.0,
        },
        None => job,
    };
    drop(dispatcher);
    job();
}

/// Lets the queued jobs finish, then joins the thread; gives up waiting after
/// `timeout` (the thread then ends on its own once its queue is empty).
pub fn shutdown(timeout: Duration) {
    let Some(dispatcher) = lock().take() else {
        return;
    };
    drop(dispatcher.jobs);
    let deadline = Instant::now() + timeout;
    while !dispatcher.thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if dispatcher.thread.is_finished() {
        let _ = dispatcher.thread.join();
    }
}
