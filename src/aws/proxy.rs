//! HTTPS proxies: every TCP connection the library opens (the control-plane
//! and GetIceServerConfig calls, the WebSocket, any other HTTPS fetch) goes
//! through [`Dialer::dial`], which connects directly or through an HTTP
//! proxy's `CONNECT` tunnel. TLS to the target then runs inside the tunnel:
//! the proxy relays bytes and never sees plaintext.
//!
//! - The proxy is `http://[user:password@]host[:port]` (port 80 by default);
//!   user and password, percent-decoded, go in a `Proxy-Authorization: Basic`
//!   header. An `https://` proxy (TLS to the proxy itself) is refused.
//! - [`ProxyConfig::from_env`] opts into `https_proxy` / `HTTPS_PROXY` and
//!   `no_proxy` / `NO_PROXY` (lower case first, as curl), read once when the
//!   setting is resolved (a client resolves it when it is made).
//! - The no-proxy list follows curl: entries separated by commas or blanks; a
//!   list that is just `*` bypasses every host; a name matches itself and its
//!   subdomains (`example.com` and `.example.com` both match `example.com` and
//!   `www.example.com`, not `notexample.com`), in any case, trailing dots
//!   ignored; an IP literal matches the same address, or a range in CIDR form
//!   (`10.0.0.0/8`, `fd00::/8`); IPv6 entries are written without brackets.
//!   Ports are not part of an entry: `host:8080` matches nothing (as in curl).
//!   Names are matched as written, never resolved.
//! - Bounds: the proxy's reply to `CONNECT` is read up to
//!   [`MAX_PROXY_REPLY_HEAD`] bytes (8 KiB); the TCP connect to the proxy and
//!   its reply take at most [`PROXY_TIMEOUT`] (4 s, inside the caller's own
//!   connect or request timeout).
//! - The password never appears in a log line, an error text or `Debug`.
//!
//! The TCP options of the library (nodelay, the dead-link deadline of
//! `crate::tcp`) apply to the socket to the proxy, which is the socket the
//! tunnel runs on.

use super::AwsError;
use super::redact::Redactor;
use hyper::Uri;
use percent_encoding::percent_decode_str;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// The longest reply head (status line and headers) read from a proxy.
pub const MAX_PROXY_REPLY_HEAD: usize = 8 * 1024;
/// Bound of the TCP connect to a proxy and of its reply to `CONNECT`.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest reason phrase of a refusal kept in an error.
const MAX_REASON_CHARS: usize = 128;

/// Environment variables of [`ProxyConfig::from_env`], lower case first.
const PROXY_VARS: [&str; 2] = ["https_proxy", "HTTPS_PROXY"];
const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// Why a connection through a proxy failed. Texts name the proxy by host and
/// port, never by its URL (which may hold a password).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// The proxy is down: no TCP connection to it, or no reply to `CONNECT`
    /// within [`PROXY_TIMEOUT`]. Transient: a client keeps retrying.
    Unreachable(String),
    /// The proxy answered 407 (or 401, which some proxies, tinyproxy among
    /// them, send for wrong credentials): credentials missing or refused.
    AuthRequired(String),
    /// The proxy answered another non-2xx status (403: the target or its port
    /// is not allowed; 5xx: it could not reach the target).
    Refused {
        /// The HTTP status of the proxy's reply.
        status: u16,
        /// What the reply said (its reason phrase), with the proxy named.
        text: String,
    },
    /// The proxy closed the connection before answering `CONNECT`, or the
    /// tunnel closed during the TLS handshake with the target.
    Closed(String),
    /// The reply is not HTTP, or its head is longer than [`MAX_PROXY_REPLY_HEAD`].
    BadReply(String),
}

impl ProxyError {
    /// The description, without the kind (what `Display` adds).
    pub fn message(&self) -> &str {
        match self {
            ProxyError::Unreachable(m)
            | ProxyError::AuthRequired(m)
            | ProxyError::Closed(m)
            | ProxyError::BadReply(m)
            | ProxyError::Refused { text: m, .. } => m,
        }
    }

    /// Whether trying again later can help (the proxy down or closing).
    pub fn is_transient(&self) -> bool {
        matches!(self, ProxyError::Unreachable(_) | ProxyError::Closed(_))
            || matches!(self, ProxyError::Refused { status, .. } if *status >= 500)
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Unreachable(m) => write!(f, "proxy unreachable: {m}"),
            ProxyError::AuthRequired(m) => write!(f, "proxy authentication required: {m}"),
            ProxyError::Refused { status, text } => {
                write!(f, "the proxy refused the tunnel with HTTP {status}: {text}")
            }
            ProxyError::Closed(m) => write!(f, "the proxy closed the tunnel: {m}"),
            ProxyError::BadReply(m) => write!(f, "bad reply from the proxy: {m}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// How the library reaches the network: directly (the default) or through an
/// HTTP proxy. Checked by [`ProxyConfig::proxy`] (a bad URL is
/// [`AwsError::Config`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `http://[user:password@]host[:port]`, user and password
    /// percent-encoded; `None` connects directly (unless `from_env` finds one).
    pub url: Option<String>,
    /// Hosts reached directly, curl's no-proxy syntax (see the module doc);
    /// `None` bypasses nothing (unless `from_env` finds a list).
    pub no_proxy: Option<String>,
    /// Fill `url` and `no_proxy`, where unset, from `https_proxy` /
    /// `HTTPS_PROXY` and `no_proxy` / `NO_PROXY` (an empty variable counts as
    /// unset). Read once, by [`ProxyConfig::resolve_env`].
    pub from_env: bool,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("url", &self.url.as_deref().map(without_password))
            .field("no_proxy", &self.no_proxy)
            .field("from_env", &self.from_env)
            .finish()
    }
}

impl ProxyConfig {
    /// A proxy at `url` (see [`ProxyConfig::url`]), bypassing nothing.
    pub fn with_url(url: &str) -> ProxyConfig {
        ProxyConfig { url: Some(url.to_owned()), ..ProxyConfig::default() }
    }

    /// This setting with the environment read (when `from_env`): the fields
    /// it leaves unset are taken from the variables; `from_env` is then off,
    /// so the result no longer depends on the environment.
    pub fn resolve_env(&self) -> ProxyConfig {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// [`ProxyConfig::resolve_env`] with `lookup` in place of the environment.
    pub(crate) fn resolve_with(&self, lookup: impl Fn(&str) -> Option<String>) -> ProxyConfig {
        if !self.from_env {
            return self.clone();
        }
        let first = |names: [&str; 2]| names.iter().find_map(|name| lookup(name).filter(|v| !v.trim().is_empty()));
        ProxyConfig {
            url: self.url.clone().or_else(|| first(PROXY_VARS)),
            no_proxy: self.no_proxy.clone().or_else(|| first(NO_PROXY_VARS)),
            from_env: false,
        }
    }

    /// The proxy to use, `None` for direct connections. A URL that does not
    /// parse, has another scheme than `http://`, a path or a query, or a
    /// port out of range is [`AwsError::Config`] (the text never shows the
    /// password). Does not read the environment: call
    /// [`ProxyConfig::resolve_env`] first.
    pub fn proxy(&self) -> Result<Option<Proxy>, AwsError> {
        match &self.url {
            None => Ok(None),
            Some(url) => Proxy::parse(url, self.no_proxy.as_deref().unwrap_or("")).map(Some),
        }
    }
}

/// `host:port`, an IPv6 host in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// `url` with the password of its user info replaced by `***`, for messages.
/// Everything up to the last `@` counts as user info, so that a password
/// holding an unencoded `/`, `?` or `#` (a URL that then does not parse) is
/// hidden too; a path holding `@` is hidden in part, which is harmless.
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            let scheme = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
            format!("{scheme}{user}{hidden}@{host}")
        }
        None => url.to_owned(),
    }
}

/// A parsed proxy: where it is, its credentials, the hosts it is bypassed
/// for. Plain data, `Send + Sync`; its `Debug` never shows the password.
#[derive(Clone)]
pub struct Proxy {
    /// Host name or IP address (no brackets).
    host: String,
    port: u16,
    /// `host:port` (IPv6 in brackets), naming the proxy in messages.
    authority: String,
    user: Option<String>,
    /// The value of `Proxy-Authorization` (a secret), when a user is set.
    authorization: Option<String>,
    /// The password and the credentials in every form that could leak.
    redactor: Redactor,
    no_proxy: NoProxy,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("authority", &self.authority)
            .field("user", &self.user)
            .field("no_proxy", &self.no_proxy)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port][/]` (a URL without a
    /// scheme counts as `http://`, as curl reads it) and the no-proxy list.
    pub fn parse(url: &str, no_proxy: &str) -> Result<Proxy, AwsError> {
        let shown = without_password(url);
        let bad = |why: &str| AwsError::Config(format!("proxy URL {shown:?} {why}"));
        let full = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
        let uri: Uri = full.parse().map_err(|_| bad("does not parse"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "is https://: TLS to the proxy is not supported; use http:// (TLS to the service still runs inside the tunnel)",
                ));
            }
            _ => return Err(bad("must be http://host:port")),
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("must not have a path or a query"));
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        // The port as written (the URI parser takes any digits).
        let host_and_port = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, h)| h);
        let port = match host_and_port.rsplit_once(':').filter(|(_, p)| !p.contains(']')) {
            None => 80,
            Some((_, digits)) => match digits.parse::<u16>() {
                Ok(0) => return Err(bad("has port 0")),
                Ok(port) => port,
                Err(_) => return Err(bad("has an invalid port (1-65535)")),
            },
        };
        let decode = |text: &str| percent_decode_str(text).decode_utf8().map(|t| t.into_owned());
        let (user, password) = match authority.as_str().rsplit_once('@') {
            None => (None, None),
            Some((userinfo, _)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = decode(user).map_err(|_| bad("has a user name that is not UTF-8"))?;
                let password = decode(password).map_err(|_| bad("has a password that is not UTF-8"))?;
                if user.contains(':') {
                    return Err(bad("has a ':' in its user name (Basic authentication cannot carry it)"));
                }
                (Some(user), Some(password))
            }
        };
        let mut redactor = Redactor::default();
        let authorization = user.as_ref().map(|user| {
            let password = password.as_deref().unwrap_or("");
            let pair = format!("{user}:{password}");
            redactor.add(password);
            redactor.add(&pair);
            use base64::Engine;
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        let authority = host_port(host, port);
        Ok(Proxy {
            host: host.to_owned(),
            port,
            authority,
            user,
            authorization,
            redactor,
            no_proxy: NoProxy::parse(no_proxy),
        })
    }

    /// `host:port` of the proxy.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// True when `host` (a name or an IP address, no brackets) is reached
    /// directly, by the no-proxy list.
    pub fn bypasses(&self, host: &str) -> bool {
        self.no_proxy.matches(host)
    }

    /// `text` without the proxy's credentials, in any encoding.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.redactor.scrub(text)
    }

    /// Opens a tunnel to `host:port` through this proxy, within
    /// [`PROXY_TIMEOUT`]; the socket to the proxy gets the dead-link deadline
    /// `tcp_user_timeout`.
    async fn tunnel(&self, host: &str, port: u16, tcp_user_timeout: Duration) -> Result<TcpStream, ProxyError> {
        let deadline = Instant::now() + PROXY_TIMEOUT;
        let proxy = &self.authority;
        let tcp = match timeout_at(deadline, TcpStream::connect((self.host.as_str(), self.port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(ProxyError::Unreachable(format!("cannot connect to the proxy {proxy}: {e}"))),
            Err(_) => {
                return Err(ProxyError::Unreachable(format!(
                    "no TCP connection to the proxy {proxy} within {} ms",
                    PROXY_TIMEOUT.as_millis()
                )));
            }
        };
        let _ = tcp.set_nodelay(true);
        crate::tcp::set_dead_link_deadline(&tcp, tcp_user_timeout);
        let target = host_port(host, port);
        match timeout_at(deadline, self.handshake(tcp, &target)).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::Unreachable(format!(
                "the proxy {proxy} did not answer CONNECT {target} within {} ms",
                PROXY_TIMEOUT.as_millis()
            ))),
        }
    }

    /// Sends `CONNECT target` on `tcp` and reads the reply head.
    async fn handshake(&self, mut tcp: TcpStream, target: &str) -> Result<TcpStream, ProxyError> {
        let proxy = &self.authority;
        let mut request =
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {}\r\n", super::http::USER_AGENT);
        if let Some(authorization) = &self.authorization {
            request.push_str("Proxy-Authorization: ");
            request.push_str(authorization);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let closed = |e: std::io::Error| {
            ProxyError::Closed(format!("the connection to the proxy {proxy} failed during CONNECT {target}: {e}"))
        };
        tcp.write_all(request.as_bytes()).await.map_err(closed)?;
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        loop {
            let room = (MAX_PROXY_REPLY_HEAD + 1 - head.len()).min(chunk.len());
            let n = tcp.read(&mut chunk[..room]).await.map_err(closed)?;
            if n == 0 {
                return Err(ProxyError::Closed(format!(
                    "the proxy {proxy} closed the connection before answering CONNECT {target}"
                )));
            }
            head.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut reply = httparse::Response::new(&mut headers);
            match reply.parse(&head) {
                Ok(httparse::Status::Complete(length)) => {
                    let status = reply.code.unwrap_or(0);
                    let reason: String = reply.reason.unwrap_or("").chars().take(MAX_REASON_CHARS).collect();
                    let reason = self.scrub(&reason);
                    return match status {
                        200..=299 if length < head.len() => Err(ProxyError::BadReply(format!(
                            "the proxy {proxy} sent {} bytes after its reply to CONNECT {target}",
                            head.len() - length
                        ))),
                        200..=299 => Ok(tcp),
                        401 | 407 => Err(ProxyError::AuthRequired(match &self.user {
                            None => format!(
                                "the proxy {proxy} requires credentials (HTTP {status}): put user:password in the proxy URL"
                            ),
                            Some(user) => {
                                format!("the proxy {proxy} refused the credentials of user {user:?} (HTTP {status})")
                            }
                        })),
                        _ => Err(ProxyError::Refused {
                            status,
                            text: format!("the proxy {proxy} refused CONNECT {target}: {reason}"),
                        }),
                    };
                }
                Ok(httparse::Status::Partial) if head.len() > MAX_PROXY_REPLY_HEAD => {
                    return Err(ProxyError::BadReply(format!(
                        "the reply of the proxy {proxy} to CONNECT is longer than {MAX_PROXY_REPLY_HEAD} bytes"
                    )));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(ProxyError::BadReply(format!(
                        "the proxy {proxy} answered CONNECT with a reply that is not HTTP/1.x ({e})"
                    )));
                }
            }
        }
    }
}

/// A curl-style no-proxy list (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct NoProxy {
    /// The list is `*`: every host is reached directly.
    all: bool,
    /// Entries without their leading and trailing dots, lower case.
    entries: Vec<String>,
}

impl NoProxy {
    fn parse(list: &str) -> NoProxy {
        if list.trim() == "*" {
            return NoProxy { all: true, entries: Vec::new() };
        }
        let entries = list
            .split([',', ' ', '\t'])
            .map(|entry| entry.trim_end_matches('.').trim_start_matches('.').to_ascii_lowercase())
            .filter(|entry| !entry.is_empty())
            .collect();
        NoProxy { all: false, entries }
    }

    fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match host.parse::<IpAddr>() {
            Ok(address) => self.entries.iter().any(|entry| ip_matches(address, entry)),
            Err(_) => {
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                self.entries.iter().any(|entry| {
                    name == *entry
                        || (name.ends_with(entry.as_str()) && name[..name.len() - entry.len()].ends_with('.'))
                })
            }
        }
    }
}

/// Whether `address` is the IP literal `entry`, or in its CIDR range.
fn ip_matches(address: IpAddr, entry: &str) -> bool {
    let entry = entry.trim_start_matches('[').trim_end_matches(']');
    let (network, bits) = match entry.split_once('/') {
        Some((network, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (network, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(network) = network.parse::<IpAddr>() else { return false };
    let prefix = |a: u128, b: u128, width: u32, bits: Option<u32>| match bits {
        None => a == b,
        Some(bits) if bits > width => false,
        Some(0) => true,
        Some(bits) => (a ^ b) >> (width - bits) == 0,
    };
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => prefix(u32::from(a).into(), u32::from(n).into(), 32, bits),
        (IpAddr::V6(a), IpAddr::V6(n)) => prefix(u128::from(a), u128::from(n), 128, bits),
        _ => false,
    }
}

/// Opens the library's TCP connections: directly, or through a proxy's
/// tunnel. Cheap to clone; `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Dialer {
    proxy: Option<Arc<Proxy>>,
    tcp_user_timeout: Duration,
    /// Bound of the kernel socket buffers; `None` leaves the system's.
    socket_buffer: Option<usize>,
}

/// How [`Dialer::dial`] reached a host.
#[derive(Clone, Debug)]
pub enum Route {
    /// A direct TCP connection.
    Direct,
    /// A tunnel through this proxy.
    Tunnel(Arc<Proxy>),
}

impl Route {
    /// A TLS failure over this route, as reported: through a tunnel, a
    /// transport failure or a hang-up during the handshake is the tunnel
    /// closing ([`ProxyError::Closed`]); anything else stays as it is.
    pub(crate) fn tls_failure(&self, host: &str, error: AwsError) -> AwsError {
        match (self, &error) {
            (Route::Tunnel(proxy), AwsError::Network(m)) => AwsError::Proxy(ProxyError::Closed(format!(
                "the tunnel through the proxy {} failed during the TLS handshake with {host}: {}",
                proxy.authority,
                proxy.scrub(m)
            ))),
            (Route::Tunnel(proxy), AwsError::Tls(m)) if m.contains(super::tls::HUNG_UP) => {
                AwsError::Proxy(ProxyError::Closed(format!(
                    "the tunnel through the proxy {} closed during the TLS handshake with {host} (the proxy or the server hung up)",
                    proxy.authority
                )))
            }
            _ => error,
        }
    }
}

impl Dialer {
    /// Direct connections whose sockets get the dead-link deadline
    /// `tcp_user_timeout` (zero: the system defaults).
    pub fn new(tcp_user_timeout: Duration) -> Dialer {
        Dialer { proxy: None, tcp_user_timeout, socket_buffer: Some(crate::tcp::DEFAULT_SOCKET_BUFFER) }
    }

    /// The same dialer bounding each socket's kernel receive and send buffers
    /// to `bytes` (`None`: the system's autotuning).
    pub fn with_socket_buffer(mut self, bytes: Option<usize>) -> Dialer {
        self.socket_buffer = bytes;
        self
    }

    /// The same dialer through `proxy` (`None`: directly).
    pub fn with_proxy(mut self, proxy: Option<Arc<Proxy>>) -> Dialer {
        self.proxy = proxy;
        self
    }

    /// The same dialer with another dead-link deadline.
    pub fn with_tcp_user_timeout(mut self, tcp_user_timeout: Duration) -> Dialer {
        self.tcp_user_timeout = tcp_user_timeout;
        self
    }

    /// The proxy in use, if any.
    pub fn proxy(&self) -> Option<&Arc<Proxy>> {
        self.proxy.as_ref()
    }

    /// A TCP stream to `host:port` (a name or an IP address, no brackets),
    /// with nodelay and the dead-link deadline set: a direct connection, or a
    /// tunnel through the proxy unless its no-proxy list names `host`. Errors:
    /// [`AwsError::Network`] (direct), [`AwsError::Proxy`] (through the proxy).
    pub async fn dial(&self, host: &str, port: u16) -> Result<(TcpStream, Route), AwsError> {
        if let Some(proxy) = self.proxy.as_ref().filter(|p| !p.bypasses(host)) {
            let tcp = proxy.tunnel(host, port, self.tcp_user_timeout).await.map_err(AwsError::Proxy)?;
            crate::tcp::set_buffer_bound(&tcp, self.socket_buffer);
            return Ok((tcp, Route::Tunnel(proxy.clone())));
        }
        let target = host_port(host, port);
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| AwsError::Network(format!("cannot connect to {target}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        crate::tcp::set_dead_link_deadline(&tcp, self.tcp_user_timeout);
        crate::tcp::set_buffer_bound(&tcp, self.socket_buffer);
        Ok((tcp, Route::Direct))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn no_proxy(list: &str) -> NoProxy {
        NoProxy::parse(list)
    }

    /// The kernel buffers of a dialed socket are bounded (Linux reports twice
    /// the bound, its bookkeeping included); `None` leaves autotuning.
    #[tokio::test]
    async fn dialed_sockets_have_bounded_kernel_buffers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let deadline = crate::tcp::DEFAULT_TCP_USER_TIMEOUT;
        let sizes = |tcp: &TcpStream| {
            let socket = socket2::SockRef::from(tcp);
            (socket.recv_buffer_size().unwrap(), socket.send_buffer_size().unwrap())
        };
        let (small, _) =
            Dialer::new(deadline).with_socket_buffer(Some(16 * 1024)).dial("127.0.0.1", port).await.unwrap();
        let (default, _) = Dialer::new(deadline).dial("127.0.0.1", port).await.unwrap();
        let (system, _) = Dialer::new(deadline).with_socket_buffer(None).dial("127.0.0.1", port).await.unwrap();
        let (small, default, system) = (sizes(&small), sizes(&default), sizes(&system));
        assert!(small.0 <= 2 * 16 * 1024 && small.1 <= 2 * 16 * 1024, "{small:?}");
        let bound = 2 * crate::tcp::DEFAULT_SOCKET_BUFFER;
        assert!(default.0 <= bound && default.1 <= bound && default.0 > small.0, "{default:?}");
        assert!(system.0 > small.0, "autotuned {system:?} vs bounded {small:?}");
    }

    #[test]
    fn no_proxy_follows_curl() {
        let list = no_proxy("example.com, .internal.lan,10.0.0.0/8 192.168.1.7,fd00::/8,::1 ,host.with.port:8080");
        for host in [
            "example.com",
            "EXAMPLE.com",
            "www.example.com",
            "example.com.",
            "a.b.internal.lan",
            "internal.lan",
            "10.1.2.3",
            "192.168.1.7",
            "fd12::1",
            "::1",
            "[::1]",
        ] {
            assert!(list.matches(host), "{host} is bypassed");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "11.0.0.1",
            "192.168.1.8",
            "fe80::1",
            "::2",
            "host.with.port",
            "kinesisvideo.us-west-2.amazonaws.com",
        ] {
            assert!(!list.matches(host), "{host} goes through the proxy");
        }
        assert!(no_proxy("*").matches("anything.example"));
        assert!(no_proxy(" * ").matches("10.0.0.1"));
        assert!(!no_proxy("").matches("example.com"));
        assert!(!no_proxy(",, ,").matches("example.com"));
        // A name is not resolved, an address is not a name.
        assert!(!no_proxy("localhost").matches("127.0.0.1"));
        assert!(!no_proxy("127.0.0.1").matches("localhost"));
        assert!(no_proxy("127.0.0.0/8").matches("127.0.0.1"));
        assert!(!no_proxy("127.0.0.0/33").matches("127.0.0.1"));
        assert!(!no_proxy("127.0.0.1/x").matches("127.0.0.1"));
        assert!(no_proxy("0.0.0.0/0").matches("8.8.8.8"));
        assert!(!no_proxy("0.0.0.0/0").matches("::1"));
    }

    #[test]
    fn urls_parse_and_bad_ones_are_named_without_the_password() {
        let proxy = Proxy::parse("http://user%40corp:p%3Ass%20word@proxy.corp:3128/", "").unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port, proxy.authority()), ("proxy.corp", 3128, "proxy.corp:3128"));
        assert_eq!(proxy.user.as_deref(), Some("user@corp"));
        use base64::Engine;
        let expected = base64::engine::general_purpose::STANDARD.encode("user@corp:p:ss word");
        assert_eq!(proxy.authorization.as_deref(), Some(format!("Basic {expected}").as_str()));
        let debug = format!("{proxy:?}");
        assert!(!debug.contains("ss word") && !debug.contains(&expected), "{debug}");

        let bare = Proxy::parse("10.0.0.1", "").unwrap();
        assert_eq!((bare.authority(), bare.authorization.is_none()), ("10.0.0.1:80", true));
        assert_eq!(Proxy::parse("http://[::1]:8080", "").unwrap().authority(), "[::1]:8080");

        for (bad, why) in [
            ("https://u:hunter22@proxy:443", "TLS to the proxy is not supported"),
            ("socks5://u:hunter22@proxy:1080", "must be http://"),
            ("http://u:hunter22@proxy:3128/path", "path"),
            ("http://u:hunter22@proxy:3128/?q=1", "path or a query"),
            ("http://u:hunter22@proxy:0", "port 0"),
            ("http://u:hunter22@proxy:99999", "invalid port"),
            ("http://u:hunter22@:3128", "host"),
            ("http://u:hunter22@pro xy:3128", "does not parse"),
            ("http://u:hunter22%ff@proxy:3128", "not UTF-8"),
            // Unencoded `/`, `?`, `#` in the password: the URL does not parse as meant.
            ("http://u:hunter22/x@proxy:3128", ""),
            ("http://u:hu?nter22@proxy:3128", ""),
            ("http://u:hunter22#@proxy:3128", ""),
        ] {
            let error = Proxy::parse(bad, "").unwrap_err();
            let text = error.to_string();
            assert!(matches!(error, AwsError::Config(_)), "{bad}: {error:?}");
            assert!(text.contains(why), "{bad}: {text}");
            assert!(!text.contains("hunter22"), "{text}");
        }
        for url in ["http://u:hunter22@proxy:3128", "http://u:hunter22/x@proxy:3128"] {
            let config = ProxyConfig::with_url(url);
            assert!(!format!("{config:?}").contains("hunter22"), "{config:?}");
        }
    }

    #[test]
    fn the_environment_fills_what_is_unset() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
        };
        let vars: &[(&str, &str)] = &[
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:2"),
            ("NO_PROXY", "upper.example"),
            ("no_proxy", ""),
        ];
        let from_env = ProxyConfig { from_env: true, ..ProxyConfig::default() };
        let resolved = from_env.resolve_with(env(vars));
        assert_eq!(resolved.url.as_deref(), Some("http://lower:2"));
        // An empty variable counts as unset.
        assert_eq!(resolved.no_proxy.as_deref(), Some("upper.example"));
        assert!(!resolved.from_env);
        let explicit = ProxyConfig { url: Some("http://mine:3".into()), no_proxy: Some(String::new()), from_env: true };
        let resolved = explicit.resolve_with(env(vars));
        assert_eq!((resolved.url.as_deref(), resolved.no_proxy.as_deref()), (Some("http://mine:3"), Some("")));
        // Without the opt-in the environment is ignored.
        assert_eq!(ProxyConfig::default().resolve_with(env(vars)), ProxyConfig::default());
    }

    /// A proxy that reads a request head, answers `reply` and then, when
    /// `close` is false, keeps the connection open for a while.
    async fn scripted_proxy(reply: Vec<u8>, close: bool) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buffer).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
            }
            let _ = stream.write_all(&reply).await;
            if !close {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            String::from_utf8_lossy(&request).into_owned()
        });
        (address, task)
    }

    fn dialer(address: &str, userinfo: &str) -> Dialer {
        let proxy = Proxy::parse(&format!("http://{userinfo}{address}"), "").unwrap();
        Dialer::new(Duration::from_secs(5)).with_proxy(Some(Arc::new(proxy)))
    }

    #[tokio::test]
    async fn connect_requests_and_replies() {
        let (address, proxy) = scripted_proxy(b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(), false).await;
        let (_tcp, route) = dialer(&address, "bob:pa%3Ass@").dial("::1", 443).await.unwrap();
        assert!(matches!(route, Route::Tunnel(_)));
        let request = proxy.await.unwrap();
        assert!(request.starts_with("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n"), "{request}");
        use base64::Engine;
        let credentials = base64::engine::general_purpose::STANDARD.encode("bob:pa:ss");
        assert!(request.contains(&format!("\r\nProxy-Authorization: Basic {credentials}\r\n")), "{request}");

        type Expectation = fn(&ProxyError) -> bool;
        let cases: Vec<(Vec<u8>, Expectation)> = vec![
            (
                b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n".to_vec(),
                |e| matches!(e, ProxyError::AuthRequired(m) if m.contains("refused the credentials of user \"bob\"")),
            ),
            (
                b"HTTP/1.1 403 Forbidden bob:pa:ss\r\nContent-Length: 0\r\n\r\n".to_vec(),
                |e| matches!(e, ProxyError::Refused { status: 403, text } if text.contains("Forbidden") && !text.contains("pa:ss")),
            ),
            (b"HTTP/1.1 502 Bad Gateway\r\n\r\n".to_vec(), |e| {
                matches!(e, ProxyError::Refused { status: 502, .. }) && e.is_transient()
            }),
            (
                b"HTTP/1.1 200 OK\r\n\r\nearly".to_vec(),
                |e| matches!(e, ProxyError::BadReply(m) if m.contains("5 bytes after")),
            ),
            (
                b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(),
                |e| matches!(e, ProxyError::BadReply(m) if m.contains("not HTTP/1.x")),
            ),
            (
                format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_PROXY_REPLY_HEAD)).into_bytes(),
                |e| matches!(e, ProxyError::BadReply(m) if m.contains("longer than 8192 bytes")),
            ),
            (b"HTTP/1.1 200".to_vec(), |e| {
                matches!(e, ProxyError::Closed(m) if m.contains("before answering")) && e.is_transient()
            }),
        ];
        for (reply, expected) in cases {
            let shown = String::from_utf8_lossy(&reply[..reply.len().min(40)]).into_owned();
            let (address, _proxy) = scripted_proxy(reply, true).await;
            match dialer(&address, "bob:pa%3Ass@").dial("example.com", 443).await {
                Err(AwsError::Proxy(error)) => assert!(expected(&error), "{shown}: {error:?}"),
                other => panic!("{shown}: {other:?}"),
            }
        }
        let (address, _proxy) = scripted_proxy(b"HTTP/1.1 407 Auth\r\n\r\n".to_vec(), true).await;
        let error = dialer(&address, "").dial("example.com", 443).await.unwrap_err();
        assert!(error.to_string().contains("requires credentials"), "{error}");
    }

    #[tokio::test]
    async fn a_tunnel_that_closes_during_the_tls_handshake_is_named() {
        let (address, _proxy) = scripted_proxy(b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(), true).await;
        let proxy = Proxy::parse(&format!("http://{address}"), "").unwrap();
        let client = super::super::HttpClient::new(super::super::TlsClient::new(None).unwrap())
            .with_proxy(Some(Arc::new(proxy)));
        let result =
            client.post_json("https://kinesisvideo.us-west-2.amazonaws.com/", &[], vec![], PROXY_TIMEOUT).await;
        match result {
            Err(AwsError::Proxy(ProxyError::Closed(m))) => {
                assert!(m.contains("during the TLS handshake with kinesisvideo.us-west-2.amazonaws.com"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_proxy_that_is_down_or_silent_is_unreachable() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let error = dialer(&format!("127.0.0.1:{port}"), "u:secret-pw@").dial("example.com", 443).await.unwrap_err();
        assert!(
            matches!(&error, AwsError::Proxy(ProxyError::Unreachable(m)) if m.contains("cannot connect")),
            "{error:?}"
        );
        assert!(error.is_transient());

        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = silent.local_addr().unwrap().to_string();
        let started = std::time::Instant::now();
        let error = dialer(&address, "").dial("example.com", 443).await.unwrap_err();
        assert!(
            matches!(&error, AwsError::Proxy(ProxyError::Unreachable(m)) if m.contains("did not answer")),
            "{error:?}"
        );
        assert!(started.elapsed() < PROXY_TIMEOUT * 2, "bounded by the proxy timeout");
    }

    #[tokio::test]
    async fn bypassed_hosts_are_dialed_directly() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = target.local_addr().unwrap().port();
        // The proxy is a closed port: only a direct connection can succeed.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let proxy = Proxy::parse(&format!("http://127.0.0.1:{closed}"), "localhost,127.0.0.1").unwrap();
        let dialer = Dialer::new(Duration::from_secs(5)).with_proxy(Some(Arc::new(proxy)));
        let (_tcp, route) = dialer.dial("127.0.0.1", port).await.unwrap();
        assert!(matches!(route, Route::Direct));
        assert!(matches!(dialer.dial("::1", port).await, Err(AwsError::Proxy(ProxyError::Unreachable(_)))));
    }
}
