//! Sinks lent to C callbacks (`kvs_sign_sink`, `kvs_credentials_sink`): a
//! sink is usable while its callback runs, from any thread; a pointer kept
//! after the callback returned, or one that never was a sink, is refused
//! with KVS_ERR_INVALID_ARGUMENT and never read.

use super::dispatch::lock;
use super::result::fail;
use crate::ffi::kvs_result::{self, *};
use std::sync::Mutex;

/// The addresses of the sinks of one type whose callbacks are running. A
/// sink leaves the list, under its lock, before its callback's frame ends;
/// holding the lock through a sink call also serializes calls made from
/// several threads during one callback.
pub(super) struct LiveSinks(Mutex<Vec<usize>>);

impl LiveSinks {
    pub(super) const fn new() -> LiveSinks {
        LiveSinks(Mutex::new(Vec::new()))
    }

    /// Calls `callback` with a pointer to `sink`, which is live until it returns.
    pub(super) fn lend<S, R>(&self, sink: &mut S, callback: impl FnOnce(*mut S) -> R) -> R {
        let address: *mut S = sink;
        lock(&self.0).push(address as usize);
        let result = callback(address);
        lock(&self.0).retain(|&live| live != address as usize);
        result
    }

    /// Runs `work` on `sink` if it is lent to a running callback.
    pub(super) fn with<S>(&self, sink: *mut S, work: impl FnOnce(&mut S) -> kvs_result) -> kvs_result {
        let live = lock(&self.0);
        if !live.contains(&(sink as usize)) {
            return fail(
                KVS_ERR_INVALID_ARGUMENT,
                "sink is not the sink of a running callback (it is valid during its callback only)",
            );
        }
        // SAFETY: lent by `lend` to a callback that is still running; the
        // lock held makes this the only reference made through the pointer.
        work(unsafe { &mut *sink })
    }
}
