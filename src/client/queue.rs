//! The send queue: bounded, ordered, shared by the application's threads
//! (push) and the client's supervisor task (pop). Entries wait here while the
//! client reconnects, until they are written or their deadline passes.

use super::ClientError;
use crate::protocol::Action;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

/// A send accepted by the client, waiting for the socket.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub frame: String,
    pub correlation_id: String,
    pub action: Action,
    /// The viewer it goes to (a master's send); `None` from a viewer.
    pub recipient: Option<String>,
    /// Reported failed if still queued at this time.
    pub deadline: Instant,
    /// Written to an earlier socket that failed before the service
    /// acknowledged it: the next write is a resend.
    pub written_before: bool,
}

#[derive(Default)]
struct Entries {
    queue: VecDeque<Outgoing>,
    closed: bool,
}

impl std::ops::Deref for Entries {
    type Target = VecDeque<Outgoing>;
    fn deref(&self) -> &VecDeque<Outgoing> {
        &self.queue
    }
}

impl std::ops::DerefMut for Entries {
    fn deref_mut(&mut self) -> &mut VecDeque<Outgoing> {
        &mut self.queue
    }
}

/// Bounded FIFO with a wake-up for the consumer.
pub(super) struct SendQueue {
    entries: Mutex<Entries>,
    capacity: usize,
    /// Signalled on every push.
    pub pushed: Notify,
}

impl SendQueue {
    pub fn new(capacity: usize) -> SendQueue {
        SendQueue { entries: Mutex::new(Entries::default()), capacity, pushed: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends, or refuses with [`ClientError::QueueFull`] at capacity and
    /// [`ClientError::NotConnected`] once closed.
    pub fn push(&self, outgoing: Outgoing) -> Result<(), ClientError> {
        let mut entries = self.lock();
        if entries.closed {
            return Err(ClientError::NotConnected);
        }
        if entries.len() >= self.capacity {
            return Err(ClientError::QueueFull);
        }
        entries.push_back(outgoing);
        drop(entries);
        self.pushed.notify_one();
        Ok(())
    }

    /// Puts entries that could not be written back at the front, in order.
    pub fn requeue_front(&self, batch: Vec<Outgoing>) {
        let mut entries = self.lock();
        for outgoing in batch.into_iter().rev() {
            entries.push_front(outgoing);
        }
    }

    /// The action of the first entry, if any.
    pub fn head_action(&self) -> Option<Action> {
        self.lock().front().map(|o| o.action)
    }

    /// Removes the first entry.
    pub fn pop(&self) -> Option<Outgoing> {
        self.lock().pop_front()
    }

    /// Removes every entry whose deadline has passed.
    pub fn take_expired(&self, now: Instant) -> Vec<Outgoing> {
        let mut entries = self.lock();
        let (expired, kept): (Vec<_>, Vec<_>) = entries.drain(..).partition(|o| o.deadline <= now);
        entries.queue = kept.into();
        expired
    }

    /// The earliest deadline among the entries.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lock().iter().map(|o| o.deadline).min()
    }

    /// Refuses every later push and removes everything queued, atomically, so
    /// that no send is accepted after the consumer has gone.
    pub fn close(&self) -> Vec<Outgoing> {
        let mut entries = self.lock();
        entries.closed = true;
        entries.drain(..).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}
