//! Outbound pacing: at most N messages of a class in any one-second window, so a
//! burst goes out in order without the service throttling it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Extra spacing over the one-second window, for clock and network jitter.
const MARGIN: Duration = Duration::from_millis(20);

/// A sliding one-second window allowing `limit` events; `limit` 0 is unpaced.
#[derive(Debug)]
pub(super) struct Window {
    limit: usize,
    recent: VecDeque<Instant>,
}

impl Window {
    pub fn new(per_second: u32) -> Window {
        // Grows as needed: a huge configured rate must not allocate up front.
        Window { limit: per_second as usize, recent: VecDeque::with_capacity((per_second as usize).min(64)) }
    }

    /// When the next event may happen (now or later).
    pub fn ready_at(&self, now: Instant) -> Instant {
        if self.limit == 0 || self.recent.len() < self.limit {
            return now;
        }
        let oldest = self.recent[self.recent.len() - self.limit];
        (oldest + Duration::from_secs(1) + MARGIN).max(now)
    }

    /// Records an event at `now`.
    pub fn record(&mut self, now: Instant) {
        if self.limit == 0 {
            return;
        }
        self.recent.push_back(now);
        while self.recent.len() > self.limit {
            self.recent.pop_front();
        }
    }

    /// Forgets history: a new connection starts with a fresh quota.
    pub fn reset(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_per_second_then_spaces() {
        let start = Instant::now();
        let mut window = Window::new(5);
        for _ in 0..5 {
            assert_eq!(window.ready_at(start), start);
            window.record(start);
        }
        let next = window.ready_at(start);
        assert_eq!(next, start + Duration::from_secs(1) + MARGIN);
        window.record(next);
        // Any one-second window holds at most 5 events.
        assert_eq!(window.ready_at(next), start + Duration::from_secs(1) + MARGIN);
        window.reset();
        assert_eq!(window.ready_at(next), next);
    }

    #[test]
    fn zero_is_unpaced() {
        let now = Instant::now();
        let mut window = Window::new(0);
        for _ in 0..1000 {
            window.record(now);
        }
        assert_eq!(window.ready_at(now), now);
    }
}
