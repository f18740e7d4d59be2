//! Back-pressure from the event receiver to the socket: the receiver counts
//! what it holds in a [`Backlog`], and while the backlog is full the client
//! stops reading its socket (TCP then slows the sender) instead of growing
//! its memory or dropping events.

use super::ClientEvent;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TryRecvError};

/// Events a [`Client::new`](super::Client::new) receiver holds before the
/// client stops reading its socket (the C layer's default too).
pub const DEFAULT_BACKLOG_EVENTS: usize = 1024;
/// Bytes (as counted by [`event_size`]) a [`Client::new`](super::Client::new)
/// receiver holds before the client stops reading its socket.
pub const DEFAULT_BACKLOG_BYTES: usize = 512 * 1024;

/// Fixed cost counted per event on top of its strings (the event itself and
/// the receiver's bookkeeping).
const EVENT_OVERHEAD: usize = 128;

/// What a client's event receiver holds and may hold. Shared by the receiver
/// (which calls [`Backlog::add`] and [`Backlog::remove`], from any thread) and
/// the client's supervisor task (which waits for room before reading).
#[derive(Debug)]
pub struct Backlog {
    max_events: usize,
    max_bytes: usize,
    events: AtomicUsize,
    bytes: AtomicUsize,
    room: Notify,
}

impl Backlog {
    /// A backlog that is full at `max_events` events or `max_bytes` bytes
    /// (each at least 1).
    pub fn new(max_events: usize, max_bytes: usize) -> Backlog {
        Backlog {
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            events: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            room: Notify::new(),
        }
    }

    /// Counts an event of `bytes` (see [`event_size`]) the receiver now holds.
    pub fn add(&self, bytes: usize) {
        self.events.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Counts an event the receiver has handled or discarded; wakes the
    /// supervisor when that made room.
    pub fn remove(&self, bytes: usize) {
        self.events.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if !self.is_full() {
            self.room.notify_waiters();
        }
    }

    /// True while the receiver holds as much as it may: the client does not
    /// read its socket meanwhile.
    pub fn is_full(&self) -> bool {
        self.events.load(Ordering::Acquire) >= self.max_events || self.bytes.load(Ordering::Acquire) >= self.max_bytes
    }

    /// Events and bytes held now.
    pub fn held(&self) -> (usize, usize) {
        (self.events.load(Ordering::Acquire), self.bytes.load(Ordering::Acquire))
    }

    /// Completes once the backlog is not full.
    pub async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }
}

/// The receiving end of a client's events, bounded by a [`Backlog`]: while it
/// holds its maximum, the client stops reading its socket, so an application
/// that reads slowly slows the sender instead of growing memory; no event is
/// dropped. Owned by one task; `recv` and `try_recv` take `&mut self`.
#[derive(Debug)]
pub struct EventReceiver {
    events: mpsc::UnboundedReceiver<(ClientEvent, usize)>,
    backlog: Arc<Backlog>,
}

/// The sending half of an [`EventReceiver`]: a sink that counts each event it
/// passes on (events sent after the receiver is dropped are discarded).
pub(super) fn bounded_channel(backlog: Arc<Backlog>) -> (super::EventSink, EventReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let counted = backlog.clone();
    let sink: super::EventSink = Arc::new(move |event| {
        let size = event_size(&event);
        counted.add(size);
        if let Err(mpsc::error::SendError((_, size))) = tx.send((event, size)) {
            counted.remove(size);
        }
    });
    (sink, EventReceiver { events: rx, backlog })
}

impl EventReceiver {
    /// The next event; `None` once the client is dropped and every event
    /// was received.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        let (event, size) = self.events.recv().await?;
        self.backlog.remove(size);
        Some(event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<ClientEvent, TryRecvError> {
        let (event, size) = self.events.try_recv()?;
        self.backlog.remove(size);
        Ok(event)
    }

    /// Events and bytes waiting to be received.
    pub fn held(&self) -> (usize, usize) {
        self.backlog.held()
    }
}

/// The memory an event holds, as counted against a [`Backlog`]: its strings
/// and a fixed overhead.
pub fn event_size(event: &ClientEvent) -> usize {
    let strings = match event {
        ClientEvent::Message(m) => {
            m.payload.len()
                + m.sender_client_id.as_ref().map_or(0, String::len)
                + m.sdp.as_ref().map_or(0, |s| s.sdp.len())
                + m.ice.as_ref().map_or(0, |i| {
                    i.candidate.len()
                        + i.sdp_mid.as_ref().map_or(0, String::len)
                        + i.username_fragment.as_ref().map_or(0, String::len)
                })
        }
        ClientEvent::Status(s) => {
            s.correlation_id.len()
                + s.error_type.as_ref().map_or(0, String::len)
                + s.description.as_ref().map_or(0, String::len)
        }
        ClientEvent::State(_)
        | ClientEvent::ServiceNotice(_)
        | ClientEvent::IceServersChanged { .. }
        | ClientEvent::Storage(_) => 0,
    };
    EVENT_OVERHEAD + strings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn full_by_count_or_by_bytes() {
        let backlog = Backlog::new(2, 1000);
        backlog.add(10);
        assert!(!backlog.is_full());
        backlog.add(10);
        assert!(backlog.is_full());
        backlog.remove(10);
        assert!(!backlog.is_full());
        backlog.add(2000);
        assert!(backlog.is_full());
        backlog.remove(2000);
        backlog.remove(10);
        assert_eq!(backlog.held(), (0, 0));
    }

    #[tokio::test]
    async fn room_wakes_when_an_event_is_handled() {
        let backlog = Arc::new(Backlog::new(1, 1000));
        backlog.add(5);
        let waiter = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "room() returned while the backlog was full");
        backlog.remove(5);
        tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("room() was not woken").unwrap();
    }
}
