//! What the peer's TCP stack has acknowledged: the kernel's byte counts of one
//! socket, and the frames written to it that are not confirmed yet.
//!
//! A frame is *confirmed* once the peer's TCP has acknowledged its last byte.
//! The stream offset where a frame ends is read from the kernel after the flush
//! that wrote it (everything handed to the kernel so far: the bytes it still
//! holds, `SIOCOUTQ`, plus those acknowledged, `tcpi_bytes_acked`), so it is
//! measured below TLS and WebSocket framing, and counts whatever else was
//! written before it (pings, pongs): an end offset is never too small, a frame
//! is never confirmed early. It may be too large (an acknowledgement between
//! the two reads); when the kernel holds nothing unacknowledged, every frame
//! whose flush completed is confirmed whatever its recorded end. Both counts
//! are read once per flushed batch and on a timer while frames wait, never
//! once per frame.
//!
//! Where the kernel offers no such counts (anything but Linux and Android),
//! [`TcpProgress::of`] gives `None` and a frame counts as confirmed when it has
//! been written, as before: a frame the peer never got can then go unreported.

use super::queue::Outgoing;
use std::collections::VecDeque;
use std::time::Duration;

/// The most frames written and not yet confirmed, per socket (256): twice what
/// the paced rates write in five seconds (20 candidates and 5 SDPs a second),
/// the time `TCP_USER_TIMEOUT` allows unacknowledged data by default. When it
/// is reached, writes wait for confirmations rather than hold more.
pub(super) const MAX_IN_FLIGHT: usize = 256;

/// How often the acknowledged count is read while frames wait for it (20 ms):
/// a few round trips on a LAN, so that confirmations (and the `messages_sent`
/// metric) trail the peer by little, for at most 50 reads a second and only
/// while something is in flight.
pub(super) const CONFIRM_POLL: Duration = Duration::from_millis(20);

/// Reads the kernel's counts for one TCP socket. Holds its descriptor without
/// owning it: the [`super::connect::Socket`] it came from must outlive it
/// (both live in the supervisor's link). Used on the supervisor task only.
#[derive(Debug, Clone, Copy)]
pub(super) struct TcpProgress {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fd: std::os::fd::RawFd,
}

impl TcpProgress {
    /// The counts of `tcp`; `None` where the platform has none.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn of(tcp: &tokio::net::TcpStream) -> Option<TcpProgress> {
        use std::os::fd::AsRawFd;
        let progress = TcpProgress { fd: tcp.as_raw_fd() };
        progress.acknowledged().map(|_| progress)
    }

    /// The counts of `tcp`; `None` where the platform has none.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn of(_tcp: &tokio::net::TcpStream) -> Option<TcpProgress> {
        None
    }

    /// Bytes written to the socket that its peer has not acknowledged yet
    /// (`SIOCOUTQ`: sent and unacknowledged, plus not sent yet).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn unacknowledged(&self) -> Option<u64> {
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (equal to TIOCOUTQ) writes one int through the pointer,
        // which points at a live c_int; the descriptor is open (see the type).
        let result = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
        (result == 0 && queued >= 0).then_some(queued as u64)
    }

    /// Bytes of the stream the peer has acknowledged since the connect
    /// (`tcpi_bytes_acked`, which also counts the SYN: an offset shared with
    /// [`TcpProgress::written`]).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn acknowledged(&self) -> Option<u64> {
        // SAFETY: an all-zero tcp_info is a valid value (plain integers).
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that
        // large; the descriptor is open (see the type).
        let result = unsafe {
            libc::getsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                &mut info as *mut libc::tcp_info as *mut libc::c_void,
                &mut len,
            )
        };
        // A kernel older than 4.1 fills a shorter struct without the count.
        let needed = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
        (result == 0 && len as usize >= needed).then_some(info.tcpi_bytes_acked)
    }

    /// The stream offset just past everything written to the kernel so far, in
    /// the offsets of [`TcpProgress::acknowledged`]. The queue is read first: an
    /// acknowledgement arriving between the two reads makes the sum too large,
    /// never too small.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub fn written(&self) -> Option<u64> {
        let queued = self.unacknowledged()?;
        Some(self.acknowledged()? + queued)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn unacknowledged(&self) -> Option<u64> {
        None
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn acknowledged(&self) -> Option<u64> {
        None
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub fn written(&self) -> Option<u64> {
        None
    }
}

/// A frame written to a socket, not yet acknowledged.
#[derive(Debug)]
struct Unconfirmed {
    outgoing: Outgoing,
    /// The stream offset of its last byte plus one; [`UNKNOWN_END`] when its
    /// flush did not complete.
    end: u64,
}

/// The end of a frame whose flush did not complete: never confirmed by an
/// acknowledgement (only by an answer of the service read after it).
const UNKNOWN_END: u64 = u64::MAX;

/// Frames written to one socket and not yet confirmed, oldest first; at most
/// [`MAX_IN_FLIGHT`]. Owned by the supervisor's link of that socket.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    frames: VecDeque<Unconfirmed>,
}

impl InFlight {
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Room for this many more frames.
    pub fn room(&self) -> usize {
        MAX_IN_FLIGHT.saturating_sub(self.frames.len())
    }

    /// Records frames whose flush completed, all ending by `end` (`None`: the
    /// offset could not be read, so they wait for an answer of the service).
    pub fn written(&mut self, batch: Vec<Outgoing>, end: Option<u64>) {
        let end = end.unwrap_or(UNKNOWN_END);
        self.frames.extend(batch.into_iter().map(|outgoing| Unconfirmed { outgoing, end }));
    }

    /// Records frames that may or may not have reached the kernel (a flush that
    /// failed, stalled or was abandoned).
    pub fn maybe_written(&mut self, batch: Vec<Outgoing>) {
        self.written(batch, None);
    }

    /// Removes the frames acknowledged up to stream offset `acknowledged`;
    /// returns how many.
    pub fn confirm(&mut self, acknowledged: u64) -> usize {
        let confirmed = self.frames.iter().take_while(|frame| frame.end <= acknowledged).count();
        self.frames.drain(..confirmed);
        confirmed
    }

    /// Removes the frames whose flush completed, up to the first that did not;
    /// returns how many. For when the kernel holds nothing unacknowledged:
    /// everything handed to it was acknowledged, whatever end offsets were
    /// recorded (an acknowledgement between the two reads of
    /// [`TcpProgress::written`] makes one too large, and it would otherwise
    /// wait for later bytes to be acknowledged past it).
    pub fn confirm_flushed(&mut self) -> usize {
        let confirmed = self.frames.iter().take_while(|frame| frame.end != UNKNOWN_END).count();
        self.frames.drain(..confirmed);
        confirmed
    }

    /// Removes every frame: the service has read them all (it answered
    /// something written after them). Returns how many.
    pub fn confirm_all(&mut self) -> usize {
        let count = self.frames.len();
        self.frames.clear();
        count
    }

    /// Removes and returns the frames still unconfirmed, oldest first.
    pub fn take(&mut self) -> Vec<Outgoing> {
        self.frames.drain(..).map(|frame| frame.outgoing).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Action;
    use std::time::Instant;

    fn outgoing(n: u32) -> Outgoing {
        Outgoing {
            frame: format!("frame {n}"),
            correlation_id: n.to_string(),
            action: Action::IceCandidate,
            recipient: None,
            deadline: Instant::now(),
            written_before: false,
        }
    }

    fn ids(frames: Vec<Outgoing>) -> Vec<String> {
        frames.into_iter().map(|o| o.correlation_id).collect()
    }

    #[test]
    fn frames_are_confirmed_in_order_by_their_end_offset() {
        let mut in_flight = InFlight::default();
        in_flight.written(vec![outgoing(1), outgoing(2)], Some(100));
        in_flight.written(vec![outgoing(3)], Some(150));
        in_flight.maybe_written(vec![outgoing(4)]);
        assert_eq!(in_flight.confirm(99), 0);
        assert_eq!(in_flight.confirm(100), 2);
        assert_eq!(in_flight.room(), MAX_IN_FLIGHT - 2);
        // A frame whose flush did not complete is never confirmed by a count.
        assert_eq!(in_flight.confirm(u64::MAX - 1), 1);
        assert_eq!(ids(in_flight.take()), ["4"]);
        assert!(in_flight.is_empty());
        in_flight.maybe_written(vec![outgoing(5)]);
        assert_eq!(in_flight.confirm_all(), 1);
    }

    #[test]
    fn an_end_offset_read_too_large_is_confirmed_once_nothing_is_unacknowledged() {
        let mut in_flight = InFlight::default();
        // The peer acknowledged up to 100 between the two reads: the end was
        // recorded as 130 instead of 100, and no later byte will pass it.
        in_flight.written(vec![outgoing(1)], Some(130));
        assert_eq!(in_flight.confirm(100), 0);
        assert_eq!(in_flight.confirm_flushed(), 1);
        // A frame whose flush did not complete is not, nor anything after it.
        in_flight.written(vec![outgoing(2)], Some(200));
        in_flight.maybe_written(vec![outgoing(3)]);
        in_flight.written(vec![outgoing(4)], Some(300));
        assert_eq!(in_flight.confirm_flushed(), 1);
        assert_eq!(ids(in_flight.take()), ["3", "4"]);
    }

    /// The counts on a real loopback socket whose peer stops reading: bytes
    /// the peer's buffers cannot take stay unacknowledged, and the sum of both
    /// counts is what was written; once the peer reads, everything is acknowledged.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn the_kernel_counts_what_a_peer_that_stops_reading_has_not_acknowledged() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let progress = TcpProgress::of(&client).expect("Linux has the counts");
        let start = progress.acknowledged().unwrap();
        assert_eq!(progress.unacknowledged(), Some(0));
        assert_eq!(progress.written(), Some(start));
        // Fill every buffer on the way: the peer does not read.
        let chunk = vec![7u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match client.try_write(&chunk) {
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        let unacknowledged = progress.unacknowledged().unwrap();
        assert!(unacknowledged > 0, "a peer that does not read leaves bytes unacknowledged");
        assert!(unacknowledged <= total);
        assert_eq!(progress.written(), Some(start + total), "acknowledged + unacknowledged = written");
        // The peer reads everything: all of it is acknowledged.
        let mut buffer = vec![0u8; 256 * 1024];
        let mut read = 0u64;
        while read < total {
            read += server.read(&mut buffer).await.unwrap() as u64;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while progress.unacknowledged() != Some(0) {
            assert!(Instant::now() < deadline, "acknowledged within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(progress.acknowledged(), Some(start + total));
    }
}
