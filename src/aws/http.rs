//! A small HTTP/1.1 client (hyper's connection API over a TCP or TLS stream):
//! one connection per request, which is all the control plane needs (a handful
//! of calls per connect).

use super::AwsError;
use super::proxy::{Dialer, Proxy};
use super::sigv4::strip_query;
use super::tls::TlsClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper::{Request, Uri, header};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// Longest reply body read; a longer one is an error.
const MAX_BODY: usize = 1 << 20;

/// The library's own `User-Agent`, on every HTTPS call and WebSocket upgrade.
pub const USER_AGENT: &str = concat!("kvs-signaling/", env!("CARGO_PKG_VERSION"));
/// The longest user-agent suffix accepted (characters).
pub const MAX_USER_AGENT_SUFFIX_LEN: usize = 256;

/// Checks an application's user-agent suffix: 1-256 printable ASCII
/// characters (space to `~`), so no CR or LF can split a header.
pub fn check_user_agent_suffix(suffix: &str) -> Result<(), String> {
    if suffix.is_empty() || suffix.len() > MAX_USER_AGENT_SUFFIX_LEN {
        return Err(format!("user agent suffix is {} bytes; 1-{MAX_USER_AGENT_SUFFIX_LEN} are accepted", suffix.len()));
    }
    if let Some(bad) = suffix.bytes().find(|b| !(b' '..=b'~').contains(b)) {
        return Err(format!("user agent suffix holds byte 0x{bad:02x}; only printable ASCII is accepted"));
    }
    Ok(())
}

/// The `User-Agent` sent: [`USER_AGENT`], then the application's suffix after a space.
pub fn user_agent(suffix: Option<&str>) -> String {
    match suffix {
        Some(suffix) if !suffix.is_empty() => format!("{USER_AGENT} {suffix}"),
        _ => USER_AGENT.to_owned(),
    }
}

/// A reply: status, headers (lower-case names, in order) and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// `(name, value)` pairs, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

/// Where a request goes, from its URL.
struct Target {
    https: bool,
    /// Host name or IP address to connect to (no brackets).
    host: String,
    port: u16,
    /// `host[:port]` as written in the URL: the `Host` header.
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, AwsError> {
        let bad = |why: &str| AwsError::Config(format!("URL {:?} {why}", strip_query(url)));
        let uri: Uri = url.parse().map_err(|_| bad("does not parse"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("must be http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("must not hold a user name"));
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let path_and_query = if path_and_query.is_empty() { "/".to_owned() } else { path_and_query };
        Ok(Target { https, host, port, authority: authority.as_str().to_owned(), path_and_query })
    }
}

/// A small HTTPS (and, for local tests, HTTP) client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpClient {
    tls: TlsClient,
    dialer: Dialer,
    user_agent: std::sync::Arc<str>,
    max_body: usize,
}

impl HttpClient {
    /// A client that connects directly, whose sockets fail when the server
    /// stops acknowledging for [`crate::client::DEFAULT_TCP_USER_TIMEOUT`] (5 s).
    pub fn new(tls: TlsClient) -> HttpClient {
        HttpClient {
            tls,
            dialer: Dialer::new(crate::tcp::DEFAULT_TCP_USER_TIMEOUT),
            user_agent: USER_AGENT.into(),
            max_body: MAX_BODY,
        }
    }

    /// The same client sending `user_agent` (see [`user_agent`]) on requests
    /// that do not set their own.
    pub fn with_user_agent(mut self, user_agent: &str) -> HttpClient {
        self.user_agent = user_agent.into();
        self
    }

    /// The `User-Agent` this client sends.
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// The same client with another bound on the reply body (default 1 MiB);
    /// a longer reply is [`AwsError::BadResponse`].
    pub fn with_max_body_len(mut self, max_body: usize) -> HttpClient {
        self.max_body = max_body;
        self
    }

    /// The same client with another dead-link deadline (TCP user timeout and
    /// keepalive) for its sockets; zero leaves the system defaults.
    pub fn with_tcp_user_timeout(mut self, deadline: Duration) -> HttpClient {
        self.dialer = self.dialer.with_tcp_user_timeout(deadline);
        self
    }

    /// The same client bounding its sockets' kernel buffers to `bytes` each
    /// (`None`: the system's autotuning).
    pub fn with_socket_buffer(mut self, bytes: Option<usize>) -> HttpClient {
        self.dialer = self.dialer.with_socket_buffer(bytes);
        self
    }

    /// The same client connecting through `proxy` (`None`: directly).
    pub fn with_proxy(mut self, proxy: Option<Arc<Proxy>>) -> HttpClient {
        self.dialer = self.dialer.with_proxy(proxy);
        self
    }

    /// How this client opens its TCP connections (directly or through the
    /// proxy), for other fetches that share its settings.
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// The TLS settings this client connects with.
    pub fn tls(&self) -> &TlsClient {
        &self.tls
    }

    /// POSTs `body` to `url` with `headers` (a `host`, `content-type:
    /// application/json` and `user-agent` are added when absent) and reads the
    /// whole reply, all within `timeout`. Any status is a reply; errors are
    /// transport, TLS, timeout or bad URL.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<HttpResponse, AwsError> {
        let target = Target::parse(url)?;
        let request = build_request("POST", url, &target, headers, Some(body), &self.user_agent)?;
        self.execute(&target, request, timeout).await
    }

    /// GETs `url` with `headers` (a `host` and `user-agent` are added when
    /// absent) and reads the whole reply, all within `timeout`, over the same
    /// connect path as [`HttpClient::post_json`]. Any status is a reply.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<HttpResponse, AwsError> {
        let target = Target::parse(url)?;
        let request = build_request("GET", url, &target, headers, None, &self.user_agent)?;
        self.execute(&target, request, timeout).await
    }

    /// Sends `request` to `target` and reads the reply within `timeout`.
    async fn execute(
        &self,
        target: &Target,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<HttpResponse, AwsError> {
        let method = request.method().clone();
        match tokio::time::timeout(timeout, self.send(target, request)).await {
            Ok(result) => result,
            Err(_) => Err(AwsError::Timeout(format!(
                "{method} {}{} got no reply within {} ms",
                target.authority,
                strip_query(&target.path_and_query),
                timeout.as_millis()
            ))),
        }
    }

    async fn send(&self, target: &Target, request: Request<Full<Bytes>>) -> Result<HttpResponse, AwsError> {
        // Nodelay (small request/response exchanges) and the dead-link
        // deadline are set by the dialer.
        let (tcp, route) = self.dialer.dial(&target.host, target.port).await?;
        if !target.https {
            return exchange(TokioIo::new(tcp), request, &target.authority, self.max_body).await;
        }
        let tls = self.tls.connect(&target.host, tcp).await.map_err(|e| route.tls_failure(&target.host, e))?;
        exchange(TokioIo::new(tls), request, &target.authority, self.max_body).await
    }
}

/// A request to `target` with `headers`, plus `host` and `user-agent` (and
/// `content-type: application/json` when there is a `body`) unless given.
fn build_request(
    method: &str,
    url: &str,
    target: &Target,
    headers: &[(String, String)],
    body: Option<Vec<u8>>,
    user_agent: &str,
) -> Result<Request<Full<Bytes>>, AwsError> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut request = Request::builder().method(method).uri(target.path_and_query.as_str());
    if !has("host") {
        request = request.header(header::HOST, target.authority.as_str());
    }
    if body.is_some() && !has("content-type") {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    if !has("user-agent") {
        request = request.header(header::USER_AGENT, user_agent);
    }
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    request
        .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
        .map_err(|e| AwsError::Config(format!("request to {}: {e}", strip_query(url))))
}

/// One request/reply over a fresh connection; the connection is driven
/// alongside and ends once the reply has been read.
async fn exchange<T>(
    io: T,
    request: Request<Full<Bytes>>,
    authority: &str,
    max_body: usize,
) -> Result<HttpResponse, AwsError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let network = |e: hyper::Error| {
        if crate::tcp::is_dead_link_source(&e) {
            return AwsError::Network(format!("HTTP exchange with {authority}: {}", crate::tcp::DEAD_LINK_TEXT));
        }
        // The causes say what hyper's own text does not, e.g. a TLS alert the
        // server sent after the handshake (a refused client certificate).
        let mut text = format!("HTTP exchange with {authority}: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        AwsError::Network(text)
    };
    let (mut sender, connection) = http1::handshake::<_, Full<Bytes>>(io).await.map_err(network)?;
    let reply = async move {
        let response = sender.send_request(request).await.map_err(network)?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                AwsError::BadResponse(format!("the reply of {authority} is longer than {max_body} bytes"))
            } else {
                AwsError::Network(format!("reading the reply of {authority}: {e}"))
            }
        })?;
        // Dropping the sender lets the connection close.
        drop(sender);
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        Ok(HttpResponse { status: parts.status.as_u16(), headers, body: body.to_bytes().to_vec() })
    };
    let (reply, _closed) = tokio::join!(reply, connection);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn targets() {
        let t = Target::parse("https://kinesisvideo.us-west-2.amazonaws.com").unwrap();
        assert!(t.https);
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("kinesisvideo.us-west-2.amazonaws.com", 443, "kinesisvideo.us-west-2.amazonaws.com")
        );
        assert_eq!(t.path_and_query, "/");
        let t = Target::parse("http://127.0.0.1:8080/v1/get-ice-server-config").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.authority.as_str()), ("127.0.0.1", 8080, "127.0.0.1:8080"));
        assert_eq!(t.path_and_query, "/v1/get-ice-server-config");
        let t = Target::parse("https://[::1]:8443/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        for bad in ["ftp://h/", "https://", "not a url", "https://user:pw@h/"] {
            assert!(matches!(Target::parse(bad), Err(AwsError::Config(_))), "{bad}");
        }
    }

    /// Serves one canned reply and returns the request it read.
    async fn one_shot_server(reply: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/describeSignalingChannel", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let n = stream.read(&mut buffer).await.unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            stream.write_all(reply.as_bytes()).await.unwrap();
            let _ = stream.shutdown().await;
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, task)
    }

    #[tokio::test]
    async fn post_over_plain_http() {
        let (url, server) = one_shot_server(
            "HTTP/1.1 404 Not Found\r\nx-amzn-ErrorType: ResourceNotFoundException\r\nContent-Length: 17\r\n\r\n{\"message\":\"no\"}\n",
        )
        .await;
        let client = HttpClient::new(TlsClient::new(None).unwrap());
        let headers = vec![("x-test".to_owned(), "1".to_owned())];
        let response = client.post_json(&url, &headers, b"{\"a\":1}".to_vec(), Duration::from_secs(5)).await.unwrap();
        assert_eq!(response.status, 404);
        assert_eq!(response.header("X-AMZN-ERRORTYPE"), Some("ResourceNotFoundException"));
        assert_eq!(response.body_text(), "{\"message\":\"no\"}\n");
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /describeSignalingChannel HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("host: 127.0.0.1:"), "{request}");
        assert!(request.contains("content-type: application/json\r\n"), "{request}");
        assert!(request.contains("x-test: 1\r\n"), "{request}");
        assert!(request.ends_with("{\"a\":1}"), "{request}");
    }

    #[tokio::test]
    async fn network_timeout_and_tls_failures() {
        let client = HttpClient::new(TlsClient::new(None).unwrap());
        // Nothing listens on a port just released.
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let result = client.post_json(&format!("http://127.0.0.1:{port}/"), &[], vec![], Duration::from_secs(5)).await;
        assert!(matches!(result, Err(AwsError::Network(_))), "{result:?}");

        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let result = client.post_json(&url, &[], vec![], Duration::from_millis(200)).await;
        assert!(matches!(result, Err(AwsError::Timeout(_))), "{result:?}");

        // https:// to a plain HTTP server: the TLS layer fails, not the network.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", plain.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut stream, _) = plain.accept().await.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let result = client.post_json(&url, &[], vec![], Duration::from_secs(5)).await;
        assert!(matches!(result, Err(AwsError::Tls(_))), "{result:?}");
    }
}
