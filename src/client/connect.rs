//! Opening one WebSocket: TCP, TLS (for `wss://`), then the upgrade, each phase
//! timed. The one place a socket is set up.

use super::ClientError;
use super::config::DEFAULT_MAX_INBOUND_FRAME_LEN;
use super::metrics::{Counters, bump};
use crate::aws::{AwsError, Dialer, Redactor, TlsClient, TlsStream, cut_for_display};
use crate::tcp::{DEAD_LINK_TEXT, is_dead_link_io};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

pub(super) type Socket = WebSocketStream<Watched>;
pub(super) type SocketWriter = futures_util::stream::SplitSink<Socket, Message>;
pub(super) type SocketReader = futures_util::stream::SplitStream<Socket>;

/// Read buffer per socket. tungstenite's default (128 KiB) is zero-filled on
/// every read and stays resident per connection; signaling frames are small,
/// and larger ones still arrive whole.
const READ_BUFFER: usize = 4096;
/// Frames are buffered up to this many bytes (16 KiB) before they are written
/// to the socket, so that a batch of candidates goes out in one write; a flush
/// writes at once whatever is buffered.
const WRITE_BUFFER: usize = 16 * 1024;
/// The most bytes (64 KiB) the client buffers for one socket beyond what the
/// kernel took. Pongs that tungstenite answers pings with are dropped beyond it,
/// and a send finds the buffer full ([`tungstenite::Error::WriteBufferFull`]),
/// which ends the connection: a peer that does not read what is written to it
/// is gone as far as the client is concerned. Room for [`WRITE_BUFFER`] and
/// several of the largest frames the client sends (about 10.6 KB: a
/// 10,000-character payload, two 256-character ids and the keys).
const MAX_WRITE_BUFFER: usize = 64 * 1024;

tokio::task_local! {
    /// The longest inbound message (and frame) for the sockets opened in this
    /// task: [`super::ClientConfig::max_inbound_frame_len`]. The supervisor sets
    /// it around each connect attempt ([`with_inbound_limit`]), so that
    /// [`open_socket`], which the connect paths of `target` call, applies the
    /// client's setting; outside it, [`DEFAULT_MAX_INBOUND_FRAME_LEN`] applies.
    static INBOUND_LIMIT: usize;
}

/// Runs `connect` (a task's connect attempt) with sockets that accept inbound
/// messages of up to `limit` bytes.
pub(super) async fn with_inbound_limit<F: Future>(limit: usize, connect: F) -> F::Output {
    INBOUND_LIMIT.scope(limit, connect).await
}

/// True when `error` is the kernel failing the socket because the peer
/// stopped acknowledging (`ClientConfig::tcp_user_timeout`: TCP user timeout
/// or keepalive): a dead link, not a close or a reset.
pub(super) fn is_dead_link(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Io(e) if is_dead_link_io(e))
}

/// Describes a socket error for the log and the state change, naming the
/// limits a hostile or broken peer ran into.
pub(super) fn describe_socket_error(error: &tungstenite::Error) -> String {
    match error {
        tungstenite::Error::Io(e) if is_dead_link(error) => format!("{DEAD_LINK_TEXT}: {e}"),
        tungstenite::Error::WriteBufferFull(_) => {
            format!("the peer is not reading: {MAX_WRITE_BUFFER} bytes wait to be written")
        }
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong { size, max_size }) => {
            format!("protocol violation: an inbound message of {size} bytes exceeds the limit of {max_size} bytes")
        }
        other => other.to_string(),
    }
}

/// `endpoint` with a `/` path when it has none, ready for a query string.
pub(crate) fn with_path(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    let has_path = base.splitn(4, '/').nth(3).is_some();
    if has_path { base.to_owned() } else { format!("{base}/") }
}

/// `endpoint` without its query string, for logs (a presigned query holds a signature).
pub(crate) fn redact_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Time spent in each phase of a connect.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Phases {
    pub tls: Duration,
    pub websocket: Duration,
}

/// The transport under a WebSocket: TCP for `ws://`, TLS over TCP for `wss://`.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The TCP socket at the bottom, below TLS.
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            #[cfg(feature = "native-tls")]
            Stream::Tls(tls) => tls.get_ref().get_ref().get_ref(),
            #[cfg(not(feature = "native-tls"))]
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What every socket of a client is opened with (besides its dialer, which
/// sets the dead-link deadline and the proxy).
#[derive(Clone)]
pub(super) struct SocketOptions {
    /// Where a dead link is counted.
    pub counters: Arc<Counters>,
    /// The `User-Agent` of the upgrade request.
    pub user_agent: Arc<str>,
}

/// The transport of a WebSocket, watched for a dead link: the first read or
/// write that fails because the kernel gave up on the peer (see
/// [`is_dead_link`]) counts one `dead_link_detections`, whatever part of the
/// client is using the socket then.
pub(super) struct Watched {
    pub stream: Stream,
    counters: Arc<Counters>,
    counted: bool,
}

impl Watched {
    /// `stream`, counting a dead link into `counters`.
    pub(super) fn new(stream: Stream, counters: Arc<Counters>) -> Watched {
        Watched { stream, counters, counted: false }
    }

    fn watch<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &result
            && !self.counted
            && is_dead_link_io(e)
        {
            self.counted = true;
            bump(&self.counters.dead_link_detections);
        }
        result
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.watch(result)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch(result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        this.watch(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.watch(result)
    }
}

/// The client settings for an endpoint used as it is: the roots of the PEM
/// file `ca_bundle`, or the built-in ones.
pub(crate) fn direct_tls(ca_bundle: Option<&Path>) -> Result<TlsClient, ClientError> {
    TlsClient::new(ca_bundle).map_err(|e| ClientError::InvalidConfig(e.message().to_owned()))
}

/// A dial or TLS failure of the socket, as the client reports it.
fn socket_error(error: AwsError) -> ClientError {
    match error {
        AwsError::Tls(m) => ClientError::Tls(m),
        AwsError::Network(m) => ClientError::Network(m),
        AwsError::Config(m) => ClientError::InvalidConfig(format!("endpoint host: {m}")),
        other => ClientError::from(other),
    }
}

/// The host (without brackets), port and security of a `ws://` or `wss://`
/// URL: a host is required, a port must be 1-65535, a user name is refused.
/// Errors quote the URL without its query string.
pub(super) fn host_and_port(url: &str) -> Result<(String, u16, bool), ClientError> {
    let bad = |why: &str| Err(ClientError::InvalidConfig(format!("endpoint {:?} {why}", redact_query(url))));
    let (secure, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return bad("is not ws:// or wss://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return bad("must not hold a user name");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return bad("has text after its IPv6 address"),
            },
            None => return bad("has an unclosed '['"),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return bad("has no host");
    }
    let port = match port {
        None if secure => 443,
        None => 80,
        Some(digits) => match digits.parse::<u16>() {
            Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return bad("has an invalid port (1-65535)"),
        },
    };
    Ok((host.to_owned(), port, secure))
}

/// What a refused upgrade's body may show: the first line of its message (an
/// AWS error body is JSON whose message goes on, after its first line, to
/// quote the canonical request), with the secrets of `redactor` removed from
/// the whole body first, then cut to 512 characters.
fn refusal_text(body: &str, redactor: &Redactor) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| ["message", "Message"].iter().find_map(|key| json.get(key)?.as_str().map(str::to_owned)));
    let text = redactor.scrub(&message.unwrap_or_else(|| body.to_owned()));
    // Not JSON (e.g. cut short by the server): stop at a raw or an escaped line break.
    let end = [text.find('\n'), text.find("\\n")].into_iter().flatten().min().unwrap_or(text.len());
    cut_for_display(&text[..end])
}

/// Opens the WebSocket at `url` (the full URL, query included): TCP through
/// `dialer` (directly or through the proxy's tunnel, with the dead-link
/// deadline set), TLS with `tls` for `wss://`. `redactor` holds the secrets
/// of `url`, removed from the body of a refused upgrade; `options` say where
/// a dead link is counted.
pub(super) async fn open_socket(
    url: &str,
    tls: &TlsClient,
    dialer: &Dialer,
    redactor: &Redactor,
    options: &SocketOptions,
) -> Result<(Socket, Phases), ClientError> {
    let (host, port, secure) = host_and_port(url)?;
    let mut request = url.into_client_request().map_err(|e| ClientError::InvalidConfig(format!("endpoint: {e}")))?;
    if let Ok(user_agent) = tungstenite::http::HeaderValue::from_str(&options.user_agent) {
        request.headers_mut().insert(tungstenite::http::header::USER_AGENT, user_agent);
    }
    let (tcp, route) = dialer.dial(&host, port).await.map_err(socket_error)?;
    let tls_started = Instant::now();
    let stream = if secure {
        let tls = tls.connect(&host, tcp).await.map_err(|e| socket_error(route.tls_failure(&host, e)))?;
        Stream::Tls(Box::new(tls))
    } else {
        Stream::Plain(tcp)
    };
    let tls_time = if secure { tls_started.elapsed() } else { Duration::ZERO };
    let stream = Watched::new(stream, options.counters.clone());
    let ws_started = Instant::now();
    let max_inbound = INBOUND_LIMIT.try_with(|limit| *limit).unwrap_or(DEFAULT_MAX_INBOUND_FRAME_LEN);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(max_inbound))
        .max_frame_size(Some(max_inbound))
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config)).await {
        Ok((socket, _response)) => Ok((socket, Phases { tls: tls_time, websocket: ws_started.elapsed() })),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let body = refusal_text(&body, redactor);
            let error_type = response
                .headers()
                .get("x-amzn-ErrorType")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(':').next().unwrap_or(v).to_owned());
            let date = response.headers().get("date").and_then(|v| v.to_str().ok()).map(str::to_owned);
            Err(ClientError::Refused { status: response.status().as_u16(), error_type, body, date })
        }
        Err(tungstenite::Error::Io(e)) if is_dead_link_io(&e) => {
            Err(ClientError::Network(format!("{DEAD_LINK_TEXT}: {e}")))
        }
        Err(tungstenite::Error::Io(e)) => Err(ClientError::Network(e.to_string())),
        Err(tungstenite::Error::Url(e)) => Err(ClientError::InvalidConfig(format!("endpoint: {e}"))),
        Err(e) => Err(ClientError::Handshake(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_schemes() {
        assert_eq!(host_and_port("ws://127.0.0.1:9000/?a=b").unwrap(), ("127.0.0.1".into(), 9000, false));
        assert_eq!(host_and_port("wss://v-1.example.com/path").unwrap(), ("v-1.example.com".into(), 443, true));
        assert_eq!(host_and_port("wss://[::1]:8443/").unwrap(), ("::1".into(), 8443, true));
        assert_eq!(host_and_port("ws://[::1]/").unwrap(), ("::1".into(), 80, false));
        for (bad, why) in [
            ("http://x", "\"http://x\" is not ws:// or wss://"),
            ("ws://", "\"ws://\" has no host"),
            ("ws://:9/", "has no host"),
            ("wss://h:0/", "invalid port"),
            ("wss://h:65536/", "invalid port"),
            ("wss://h:+80/", "invalid port"),
            ("wss://h:x/?X-Amz-Signature=s", "endpoint \"wss://h:x/\" has an invalid port"),
            ("wss://u:p@h/", "user name"),
            ("wss://[::1/", "unclosed"),
            ("wss://[::1]x/", "after its IPv6"),
        ] {
            let error = host_and_port(bad).unwrap_err().to_string();
            assert!(error.contains(why) && !error.contains("Signature"), "{bad}: {error}");
        }
    }

    #[test]
    fn refusals_show_the_first_line_scrubbed_then_cut() {
        let redactor = Redactor::new(["Secret/Token="]);
        let json = r#"{"message":"Signature mismatch\nCanonical request: Secret%2FToken%3D"}"#;
        assert_eq!(refusal_text(json, &redactor), "Signature mismatch");
        let long = format!("{}Secret%2FToken%3D{}", "x".repeat(505), "y".repeat(600));
        let shown = refusal_text(&long, &redactor);
        assert!(!shown.contains("Secret") && shown.ends_with("..."), "{shown}");
        assert!(shown.chars().count() <= 515, "{shown}");
    }

    #[test]
    fn paths_and_redaction() {
        assert_eq!(with_path("ws://h:1"), "ws://h:1/");
        assert_eq!(with_path("wss://h/m-1/"), "wss://h/m-1");
        assert_eq!(redact_query("wss://h/?X-Amz-Signature=abc"), "wss://h/");
    }
}
