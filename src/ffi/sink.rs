//! Sinks lent to C callbacks (`kvs_sign_sink`, `kvs_credentials_sink`): a
//! sink is usable while its callback runs, from any thread; a pointer kept
//! after the callback returned (even while a later request's callback runs),
//! or one that never was a sink, is refused with KVS_ERR_INVALID_ARGUMENT
//! and never read.

use super::dispatch::lock;
use super::result::fail;
use crate::ffi::kvs_result::{self, *};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The sinks of one type whose callbacks are running, by the token each was
/// lent as. A callback is given a token, not the sink's address: the sink of
/// every request sits at the same place on the dispatcher's stack, so an
/// address kept from an earlier callback would name a later request's sink,
/// while a token is never lent twice. A sink leaves the list, under its
/// lock, before its callback's frame ends; holding the lock through a sink
/// call also serializes calls made from several threads during one callback.
pub(super) struct LiveSinks(Mutex<Vec<(usize, usize)>>);

/// The next token; steps of 16 keep them aligned like addresses.
static NEXT_TOKEN: AtomicUsize = AtomicUsize::new(16);

impl LiveSinks {
    pub(super) const fn new() -> LiveSinks {
        LiveSinks(Mutex::new(Vec::new()))
    }

    /// Calls `callback` with a token for `sink`, which is live until it returns.
    pub(super) fn lend<S, R>(&self, sink: &mut S, callback: impl FnOnce(*mut S) -> R) -> R {
        let address: *mut S = sink;
        let token = loop {
            // 0 after a wrap (2^28 callbacks on a 32-bit target) is skipped.
            let token = NEXT_TOKEN.fetch_add(16, Ordering::Relaxed);
            if token != 0 {
                break token;
            }
        };
        lock(&self.0).push((token, address as usize));
        let result = callback(ptr::without_provenance_mut(token));
        lock(&self.0).retain(|&(live, _)| live != token);
        result
    }

    /// Runs `work` on the sink lent as `token` if its callback is running.
    pub(super) fn with<S>(&self, token: *mut S, work: impl FnOnce(&mut S) -> kvs_result) -> kvs_result {
        let live = lock(&self.0);
        let Some(&(_, address)) = live.iter().find(|&&(live, _)| live == token.addr()) else {
            return fail(
                KVS_ERR_INVALID_ARGUMENT,
                "sink is not the sink of a running callback (it is valid during its callback only)",
            );
        };
        // SAFETY: the address of the sink lent by `lend` to a callback that is
        // still running (the entry leaves before the sink's frame ends); the
        // lock held makes this the only reference made to it meanwhile.
        work(unsafe { &mut *ptr::with_exposed_provenance_mut::<S>(address) })
    }
}
