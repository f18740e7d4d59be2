//! Dead-link detection on the client's TCP sockets (the WebSocket and the
//! control-plane calls): the kernel fails a socket whose peer stopped
//! acknowledging, in about a deadline, instead of the minutes of TCP's own
//! retransmission limits or the half minute of the WebSocket ping.
//!
//! Two kernel mechanisms, set through `socket2`:
//!
//! * `TCP_USER_TIMEOUT` (Linux and Android): data written but unacknowledged
//!   for longer than the deadline fails the socket with `ETIMEDOUT`. It also
//!   bounds keepalive: once a probe is out, the socket fails when nothing was
//!   received for the deadline.
//! * TCP keepalive: an idle socket (nothing to send) probes its peer after
//!   half the deadline, then every quarter of it (whole seconds, at least 1 s
//!   each), and fails after two unanswered probes: a silent dead peer is
//!   noticed in about the deadline even when the client has nothing to say.
//!
//! Elsewhere (macOS, Windows, the BSDs) only keepalive applies: an idle dead
//! link is noticed in about the deadline, while data in flight is bounded by
//! the system's retransmission timeout, and by the WebSocket ping.
//!
//! What neither covers: a peer that acknowledges but advertises a zero
//! window (it stopped reading). Keepalive does not probe while data waits, and
//! whether `TCP_USER_TIMEOUT` counts zero-window probing depends on the kernel
//! (Linux 5.11 and later do); the WebSocket ping and the client's stalled-write
//! bound cover that case.

use crate::log::{Level, log};
use socket2::{SockRef, TcpKeepalive};
use std::error::Error;
use std::io;
use std::time::Duration;
use tokio::net::TcpStream;

/// The default dead-link deadline (5 s).
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest keepalive time and interval Linux accepts, in seconds.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Unanswered keepalive probes before the socket fails (where the user
/// timeout does not end it first).
const KEEPALIVE_PROBES: u32 = 2;

/// Default bound of each client socket's kernel receive and send buffers
/// (`SO_RCVBUF` / `SO_SNDBUF`): what a peer can make the kernel hold for us.
/// Signaling messages are at most 64 KiB; without a bound Linux autotunes a
/// receive buffer up to `tcp_rmem`'s maximum (6 MiB by default) while the
/// client pauses reading for back-pressure.
pub const DEFAULT_SOCKET_BUFFER: usize = 256 * 1024;
/// Smallest socket buffer bound accepted.
pub const MIN_SOCKET_BUFFER: usize = 4096;
/// Largest socket buffer bound accepted.
pub const MAX_SOCKET_BUFFER: usize = 16 * 1024 * 1024;

/// Why a socket failed when the kernel gave up on its peer.
pub const DEAD_LINK_TEXT: &str = "the peer stopped acknowledging (TCP user timeout)";

/// Keepalive time (idle before the first probe) and interval for `deadline`:
/// half and a quarter of it, in whole seconds, at least 1 s each.
fn keepalive_for(deadline: Duration) -> (Duration, Duration) {
    let secs = |d: Duration| Duration::from_secs(d.as_secs().clamp(1, MAX_KEEPALIVE_SECS));
    (secs(deadline / 2), secs(deadline / 4))
}

/// Applies the dead-link deadline to a connected socket; zero turns both
/// mechanisms off (the system defaults apply). A refused option is logged and
/// otherwise ignored: the socket still works, and the WebSocket ping remains.
pub(crate) fn set_dead_link_deadline(tcp: &TcpStream, deadline: Duration) {
    if deadline.is_zero() {
        return;
    }
    if let Err(e) = apply(&SockRef::from(tcp), deadline) {
        log!(Level::Warn, "client", "cannot set TCP keepalive / user timeout: {e}");
    }
}

/// Bounds a connected socket's kernel receive and send buffers to `bytes`
/// each (the kernel reserves about twice that for its bookkeeping); `None`
/// leaves the system's autotuning. A refused option is logged and ignored.
pub(crate) fn set_buffer_bound(tcp: &TcpStream, bytes: Option<usize>) {
    let Some(bytes) = bytes else { return };
    let socket = SockRef::from(tcp);
    if let Err(e) = socket.set_recv_buffer_size(bytes).and_then(|()| socket.set_send_buffer_size(bytes)) {
        log!(Level::Warn, "client", "cannot bound the socket buffers to {bytes} bytes: {e}");
    }
}

fn apply(socket: &SockRef<'_>, deadline: Duration) -> io::Result<()> {
    let (time, interval) = keepalive_for(deadline);
    let keepalive = TcpKeepalive::new().with_time(time);
    #[cfg(any(
        target_os = "android",
        target_os = "freebsd",
        target_os = "fuchsia",
        target_os = "ios",
        target_os = "linux",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "windows",
    ))]
    let keepalive = keepalive.with_interval(interval).with_retries(KEEPALIVE_PROBES);
    let _ = interval;
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "android", target_os = "linux"))]
    socket.set_tcp_user_timeout(Some(deadline))?;
    Ok(())
}

/// True when `error` (or an error it wraps) is the kernel failing the socket
/// because its peer stopped acknowledging: `ETIMEDOUT` from a read or a write.
pub(crate) fn is_dead_link_io(error: &io::Error) -> bool {
    if error.kind() == io::ErrorKind::TimedOut {
        return true;
    }
    error.get_ref().is_some_and(|inner| is_dead_link_source(inner))
}

/// [`is_dead_link_io`] for any error, through its chain of sources.
pub(crate) fn is_dead_link_source(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<io::Error>()
            && is_dead_link_io(io)
        {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_follows_the_deadline() {
        assert_eq!(keepalive_for(Duration::from_secs(5)), (Duration::from_secs(2), Duration::from_secs(1)));
        assert_eq!(keepalive_for(Duration::from_secs(20)), (Duration::from_secs(10), Duration::from_secs(5)));
        assert_eq!(keepalive_for(Duration::from_millis(300)), (Duration::from_secs(1), Duration::from_secs(1)));
        let long = keepalive_for(Duration::from_secs(1 << 40));
        assert_eq!(long, (Duration::from_secs(MAX_KEEPALIVE_SECS), Duration::from_secs(MAX_KEEPALIVE_SECS)));
    }

    #[test]
    fn timed_out_errors_are_dead_links() {
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert!(is_dead_link_io(&timed_out));
        #[cfg(unix)]
        assert!(is_dead_link_io(&io::Error::from_raw_os_error(libc::ETIMEDOUT)));
        let wrapped = io::Error::other(io::Error::from(io::ErrorKind::TimedOut));
        assert!(is_dead_link_io(&wrapped));
        assert!(!is_dead_link_io(&io::Error::from(io::ErrorKind::ConnectionReset)));
        assert!(!is_dead_link_io(&io::Error::other("tls alert")));
    }

    #[tokio::test]
    async fn options_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        set_dead_link_deadline(&tcp, Duration::from_secs(5));
        let socket = SockRef::from(&tcp);
        assert!(socket.keepalive().unwrap());
        #[cfg(any(target_os = "android", target_os = "linux"))]
        {
            assert_eq!(socket.tcp_user_timeout().unwrap(), Some(Duration::from_secs(5)));
            assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(2));
            assert_eq!(socket.tcp_keepalive_interval().unwrap(), Duration::from_secs(1));
            assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        }
        let off = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        set_dead_link_deadline(&off, Duration::ZERO);
        assert!(!SockRef::from(&off).keepalive().unwrap());
    }
}
