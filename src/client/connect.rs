//! Opening one WebSocket: TCP, TLS (for `wss://`), then the upgrade, each phase
//! timed. The one place a socket is set up.

use super::ClientError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(super) type SocketWriter = futures_util::stream::SplitSink<Socket, Message>;
pub(super) type SocketReader = futures_util::stream::SplitStream<Socket>;

/// Read buffer per socket. tungstenite's default (128 KiB) is zero-filled on
/// every read and stays resident per connection; signaling frames are small,
/// and larger ones still arrive whole.
const READ_BUFFER: usize = 4096;
/// Frames above this size make tungstenite fail the connection; smaller ones
/// above the configured inbound limit are skipped by the client instead.
const SOCKET_MAX_MESSAGE: usize = 1 << 20;

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

/// The default TLS configuration: Mozilla's roots, ring, ALPN http/1.1.
pub(crate) fn default_tls() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn host_and_port(url: &str) -> Result<(String, u16, bool), ClientError> {
    let (secure, rest) = if let Some(rest) = url.strip_prefix("wss://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("ws://") {
        (false, rest)
    } else {
        return Err(ClientError::InvalidConfig(format!("endpoint {} is not ws:// or wss://", redact_query(url))));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => match port.parse::<u16>() {
            Ok(port) => (host, port),
            Err(_) => (authority, if secure { 443 } else { 80 }),
        },
        _ => (authority, if secure { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ClientError::InvalidConfig(format!("endpoint {} has no host", redact_query(url))));
    }
    Ok((host.to_owned(), port, secure))
}

/// Opens the WebSocket at `url` (the full URL, query included). `tls` is used
/// for `wss://`.
pub(super) async fn open_socket(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<(Socket, Phases), ClientError> {
    let (host, port, secure) = host_and_port(url)?;
    let request = url.into_client_request().map_err(|e| ClientError::InvalidConfig(format!("endpoint: {e}")))?;
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| ClientError::Network(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let tls_started = Instant::now();
    let stream = if secure {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| ClientError::InvalidConfig(format!("endpoint host {host:?}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
        let tls_stream = connector.connect(name, tcp).await.map_err(|e| match e.get_ref() {
            Some(inner) if inner.is::<rustls::Error>() => ClientError::Tls(inner.to_string()),
            _ => ClientError::Network(e.to_string()),
        })?;
        MaybeTlsStream::Rustls(tls_stream)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    let tls_time = if secure { tls_started.elapsed() } else { Duration::ZERO };
    let ws_started = Instant::now();
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(SOCKET_MAX_MESSAGE))
        .max_frame_size(Some(SOCKET_MAX_MESSAGE))
        .read_buffer_size(READ_BUFFER);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config)).await {
        Ok((socket, _response)) => Ok((socket, Phases { tls: tls_time, websocket: ws_started.elapsed() })),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let body: String = body.chars().take(512).collect();
            let error_type = response
                .headers()
                .get("x-amzn-ErrorType")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(':').next().unwrap_or(v).to_owned());
            let date = response.headers().get("date").and_then(|v| v.to_str().ok()).map(str::to_owned);
            Err(ClientError::Refused { status: response.status().as_u16(), error_type, body, date })
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
        assert!(host_and_port("http://x").is_err());
        assert!(host_and_port("ws://:9/").is_err());
    }

    #[test]
    fn paths_and_redaction() {
        assert_eq!(with_path("ws://h:1"), "ws://h:1/");
        assert_eq!(with_path("wss://h/m-1/"), "wss://h/m-1");
        assert_eq!(redact_query("wss://h/?X-Amz-Signature=abc"), "wss://h/");
    }
}
