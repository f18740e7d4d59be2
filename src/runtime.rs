//! The one process-wide tokio runtime behind the C API.
//!
//! Built lazily on first use with a single named worker thread (`kvs-rt`), so the
//! library adds two threads to the host whatever the number of clients: this
//! worker and the callback dispatcher of the C layer. Blocking entry points call
//! [`block_on`], which refuses to run on a library thread (a worker or the
//! dispatcher) instead of letting tokio panic or deadlock.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};

/// Why the runtime cannot run a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeError {
    /// `shutdown` was called; the library cannot be used again in this process.
    ShutDown,
    /// The process forked after the runtime was built (fork + exec only).
    Forked,
    /// A blocking call was made from a library thread (a worker or a callback).
    WouldDeadlock,
    /// The operating system refused to start the worker thread.
    StartFailed,
}

struct RuntimeCell {
    handle: Handle,
    runtime: Mutex<Option<Runtime>>,
    pid: u32,
}

static RUNTIME: OnceLock<Result<RuntimeCell, RuntimeError>> = OnceLock::new();
static SHUT_DOWN: AtomicBool = AtomicBool::new(false);
/// Set in a child process forked after the runtime was built.
static FORKED: AtomicBool = AtomicBool::new(false);

/// `pthread_atfork` child handler: async-signal-safe (one atomic store).
extern "C" fn mark_forked() {
    FORKED.store(true, Ordering::Release);
}

thread_local! {
    static LIBRARY_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one the library owns: blocking calls made on it
/// will fail with [`RuntimeError::WouldDeadlock`].
pub fn mark_library_thread() {
    LIBRARY_THREAD.with(|flag| flag.set(true));
}

/// True on the runtime's worker, the dispatcher, or inside any tokio runtime.
pub fn on_library_thread() -> bool {
    LIBRARY_THREAD.with(Cell::get) || Handle::try_current().is_ok()
}

fn build() -> Result<RuntimeCell, RuntimeError> {
    // SAFETY: registers a handler that only stores to an atomic. A failure
    // (ENOMEM) leaves the pid comparison in `handle` as the only check.
    unsafe { libc::pthread_atfork(None, None, Some(mark_forked)) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name("kvs-rt")
        .on_thread_start(mark_library_thread)
        .enable_all()
        .build()
        .map_err(|_| RuntimeError::StartFailed)?;
    Ok(RuntimeCell { handle: runtime.handle().clone(), runtime: Mutex::new(Some(runtime)), pid: std::process::id() })
}

/// True in a child process forked after the library started: nothing of the
/// parent's library state (threads, locks, sockets) may be used there. One
/// atomic load.
pub fn is_forked() -> bool {
    FORKED.load(Ordering::Acquire)
}

/// The runtime's handle, building the runtime on first use.
pub fn handle() -> Result<Handle, RuntimeError> {
    if is_forked() {
        return Err(RuntimeError::Forked);
    }
    if SHUT_DOWN.load(Ordering::Acquire) {
        return Err(RuntimeError::ShutDown);
    }
    let cell = RUNTIME.get_or_init(build).as_ref().map_err(|e| *e)?;
    if cell.pid != std::process::id() {
        FORKED.store(true, Ordering::Release);
        return Err(RuntimeError::Forked);
    }
    Ok(cell.handle.clone())
}

/// Runs `future` to completion on the calling thread while the worker runs
/// everything else. Fails instead of blocking on a library thread.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, RuntimeError> {
    if on_library_thread() {
        return Err(RuntimeError::WouldDeadlock);
    }
    Ok(handle()?.block_on(future))
}

/// Stops the runtime: later calls fail with [`RuntimeError::ShutDown`]; tasks
/// still running after `timeout` are abandoned. Must not run on a library thread.
pub fn shutdown(timeout: Duration) -> Result<(), RuntimeError> {
    if is_forked() {
        return Err(RuntimeError::Forked);
    }
    if on_library_thread() {
        return Err(RuntimeError::WouldDeadlock);
    }
    SHUT_DOWN.store(true, Ordering::Release);
    if let Some(Ok(cell)) = RUNTIME.get() {
        let runtime = cell.runtime.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(runtime) = runtime {
            runtime.shutdown_timeout(timeout);
        }
    }
    Ok(())
}

/// True once [`shutdown`] has been called.
pub fn is_shut_down() -> bool {
    SHUT_DOWN.load(Ordering::Acquire)
}
