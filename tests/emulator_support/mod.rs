//! Helpers of the emulator's control-plane and fault tests: raw HTTP/1.1 over
//! TCP or TLS, an AWS SigV4 signer (the AWS-maintained `aws-sigv4` crate, as the
//! AWS SDKs use it; nothing of this crate's client), and WebSocket helpers.
#![allow(dead_code)]

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4;
use futures_util::{SinkExt, StreamExt};
use kvs_signaling::emulator::{Emulator, EmulatorConfig};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for something that should not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// The JS SDK's offer payload fixture (spec §3.4).
pub const OFFER_PAYLOAD: &str = "eyJzZHAiOiJvZmZlcj0gdHJ1ZVxudmlkZW89IHRydWUiLCJ0eXBlIjoib2ZmZXIifQ==";

pub const ACCESS_KEY: &str = "AKIAEMULATORTEST0001";
pub const SECRET_KEY: &str = "emulator/test+secret=key";

pub async fn start_with(config: EmulatorConfig) -> (Emulator, String) {
    let emulator =
        Emulator::start(EmulatorConfig { channels: vec!["demo".to_owned()], ..config }).await.expect("emulator starts");
    let arn = emulator.channel_arn("demo").expect("demo channel exists");
    (emulator, arn)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `?X-Amz-ChannelARN=...[&X-Amz-ClientId=...]`
pub fn connect_query(arn: &str, client_id: Option<&str>) -> String {
    let mut query = format!("?X-Amz-ChannelARN={}", encode(arn));
    if let Some(id) = client_id {
        query.push_str(&format!("&X-Amz-ClientId={}", encode(id)));
    }
    query
}

pub async fn connect(emulator: &Emulator, arn: &str, client_id: Option<&str>) -> Ws {
    let url = format!("{}/{}", emulator.ws_endpoint(), connect_query(arn, client_id));
    connect_async(url).await.expect("upgrade accepted").0
}

/// A request frame with the JS SDK's camelCase keys; `None` fields are omitted.
pub fn request(action: &str, recipient: Option<&str>, payload: &str, correlation_id: Option<&str>) -> String {
    let mut frame = json!({ "action": action, "messagePayload": payload });
    if let Some(recipient) = recipient {
        frame["recipientClientId"] = json!(recipient);
    }
    if let Some(id) = correlation_id {
        frame["correlationId"] = json!(id);
    }
    frame.to_string()
}

pub async fn send(ws: &mut Ws, text: String) {
    ws.send(Message::text(text)).await.expect("frame sent");
}

pub async fn next_message(ws: &mut Ws) -> Message {
    match timeout(WAIT, ws.next()).await {
        Err(_) => panic!("nothing arrived within {WAIT:?}"),
        Ok(None) => panic!("the connection ended"),
        Ok(Some(Err(error))) => panic!("read failed: {error}"),
        Ok(Some(Ok(message))) => message,
    }
}

pub async fn recv_json(ws: &mut Ws) -> Value {
    match next_message(ws).await {
        Message::Text(text) => serde_json::from_str(&text).expect("text frames are JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

pub async fn expect_quiet(ws: &mut Ws) {
    if let Ok(received) = timeout(QUIET, ws.next()).await {
        panic!("expected nothing, got {received:?}");
    }
}

pub async fn expect_close(ws: &mut Ws) -> CloseFrame {
    loop {
        match next_message(ws).await {
            Message::Close(Some(frame)) => return frame,
            Message::Close(None) => panic!("close frame without a code"),
            _ => continue,
        }
    }
}

/// Reads until the connection ends and asserts that no close frame came:
/// the emulator dropped it.
pub async fn expect_dropped(ws: &mut Ws) {
    loop {
        match timeout(WAIT, ws.next()).await.expect("the connection ends within the wait") {
            None | Some(Err(_)) => return,
            Some(Ok(Message::Close(frame))) => panic!("expected a drop, got a close frame {frame:?}"),
            Some(Ok(_)) => continue,
        }
    }
}

/// Polls `condition` until it holds or the wait ends.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let waited = timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

/// A raw HTTP response: status, lower-case header names, body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("the body is JSON: {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The `message` of an AWS error body.
    pub fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or_default().to_owned()
    }
}

/// Asserts an AWS rest-json error: status, type header and body, both message
/// spellings, request id and date.
pub fn assert_aws_error(response: &RawResponse, status: u16, error_type: &str) {
    assert_eq!(response.status, status, "body: {}", response.body);
    assert_eq!(response.header("x-amzn-errortype"), Some(error_type), "{response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json();
    assert_eq!(body["__type"], error_type);
    assert_eq!(body["message"], body["Message"]);
    assert!(body["message"].is_string());
    assert!(response.header("x-amzn-requestid").is_some_and(|id| id.len() == 36), "{response:?}");
    assert!(response.header("date").is_some_and(|date| date.ends_with(" GMT")), "{response:?}");
}

/// Writes `head` (+ `body`) on `stream` and reads one response (by Content-Length).
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: S, head: &str, body: &[u8]) -> RawResponse {
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(head.as_bytes()).await.expect("request written");
    stream.get_mut().write_all(body).await.expect("body written");
    stream.get_mut().flush().await.expect("request flushed");
    let read = async {
        let mut status_line = String::new();
        stream.read_line(&mut status_line).await.unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
        let length = headers.get("content-length").map_or(0, |length| length.parse().unwrap());
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        RawResponse { status, headers, body: String::from_utf8(body).unwrap() }
    };
    timeout(WAIT, read).await.expect("response within the wait")
}

/// `POST path` with a JSON body and extra headers, on a fresh TCP connection.
pub async fn post(addr: SocketAddr, path: &str, body: &Value, headers: &[(String, String)]) -> RawResponse {
    let body = body.to_string();
    let stream = TcpStream::connect(addr).await.expect("TCP connect");
    exchange(stream, &post_head(&addr.to_string(), path, body.len(), headers), body.as_bytes()).await
}

pub fn post_head(host: &str, path: &str, length: usize, headers: &[(String, String)]) -> String {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        if !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("content-type") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    head
}

/// An unsigned control-plane call.
pub async fn call(emulator: &Emulator, operation_path: &str, body: Value) -> RawResponse {
    post(emulator.local_addr(), operation_path, &body, &[]).await
}

/// Sends `GET {path_and_query}` with WebSocket upgrade headers (plus `extra`
/// header lines) and reads the response head and body.
pub async fn raw_upgrade(addr: SocketAddr, path_and_query: &str, extra: &str) -> RawResponse {
    let head = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    let stream = TcpStream::connect(addr).await.expect("TCP connect");
    exchange(stream, &head, b"").await
}

/// SigV4 with the AWS-maintained signer, as an AWS SDK would sign.
pub struct Signer {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    pub region: String,
}

impl Signer {
    pub fn new(region: &str) -> Signer {
        Signer {
            access_key: ACCESS_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            session_token: None,
            region: region.to_owned(),
        }
    }

    fn identity(&self) -> aws_smithy_runtime_api::client::identity::Identity {
        Credentials::new(&self.access_key, &self.secret_key, self.session_token.clone(), None, "test").into()
    }

    /// Headers (Authorization, X-Amz-Date, ...) for a JSON `POST url`.
    pub fn sign_post(&self, url: &str, body: &[u8], time: SystemTime) -> Vec<(String, String)> {
        let identity = self.identity();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kinesisvideo")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers = [("content-type", "application/json")];
        let signable = SignableRequest::new("POST", url, headers.iter().copied(), SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut request = hyper::Request::builder().uri(url).body(()).unwrap();
        instructions.apply_to_request_http1x(&mut request);
        request.headers().iter().map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned())).collect()
    }

    /// A presigned `url` (which carries its own query), valid for `expires`.
    pub fn presign(&self, url: &str, time: SystemTime, expires: Duration) -> String {
        let identity = self.identity();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kinesisvideo")
            .time(time)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let signable = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[])).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut request = hyper::Request::builder().uri(url).body(()).unwrap();
        instructions.apply_to_request_http1x(&mut request);
        request.uri().to_string()
    }
}

/// A signed control-plane call over plain TCP, signed at `time`.
pub async fn signed_call(
    emulator: &Emulator,
    signer: &Signer,
    path: &str,
    body: &Value,
    time: SystemTime,
) -> RawResponse {
    let url = format!("{}{path}", emulator.control_plane_url());
    let headers = signer.sign_post(&url, body.to_string().as_bytes(), time);
    post(emulator.local_addr(), path, body, &headers).await
}

/// A rustls client configuration trusting `ca_pem` only.
pub fn client_tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// `POST path` over TLS to `addr`, verifying the certificate for `server_name`.
pub async fn post_tls(
    addr: SocketAddr,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    body: &Value,
    headers: &[(String, String)],
) -> Result<RawResponse, std::io::Error> {
    let body = body.to_string();
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, stream).await?;
    let host = format!("{server_name}:{}", addr.port());
    Ok(exchange(stream, &post_head(&host, path, body.len(), headers), body.as_bytes()).await)
}
