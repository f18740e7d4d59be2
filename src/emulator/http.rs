//! The emulator's HTTP side: the accept loop (with TLS and in-process restarts),
//! request routing ([`route`], the one place every request goes through), the
//! WebSocket upgrade handshake (spec §1.3, §6.8) and the AWS error and JSON
//! helpers the control plane ([`super::control`]) and the admin endpoint
//! ([`super::admin`]) share. Runs on the emulator's tasks; holds the registry
//! lock only inside [`super::channels::Registry`] calls.

use super::channels::{ConnectionKey, Endpoint, PeerHandle, Refusal};
use super::faults::{ConnectRefusal, Operation, default_error_type};
use super::sigv4::{SignedRequest, Verifier};
use super::{REBIND_PATIENCE, RestartRequest, Shared, admin, bump, clock, connection, control, lock, viewer};
use crate::protocol::{validate_channel_arn, validate_client_id};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The WebSocket sub-protocol the C SDK offers (spec §1.3); echoed when offered.
const C_SDK_SUBPROTOCOL: &str = "wss";

/// Pause after a failed `accept` (e.g. out of file descriptors) before retrying.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Longest TLS handshake before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body read (control-plane bodies are a few hundred bytes).
const MAX_BODY_LEN: usize = 1024 * 1024;

pub(super) type HttpResponse = Response<Full<Bytes>>;

/// Accepts connections until the emulator stops; each one is served on its own
/// task. Also performs restarts, which need the listener.
pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    mut listener: TcpListener,
    mut restarts: mpsc::UnboundedReceiver<RestartRequest>,
) {
    let mut stop = shared.stop.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            request = restarts.recv() => Err(request),
            accepted = listener.accept() => Ok(accepted),
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(None) => break,
            Err(Some((down, report))) => match restart(&shared, listener, down, &mut stop).await {
                Ok(rebound) => {
                    listener = rebound;
                    let _ = report.send(Ok(()));
                    continue;
                }
                Err(error) => {
                    shared.log(format_args!("restart failed: {error}"));
                    let _ = report.send(Err(error));
                    break;
                }
            },
        };
        match accepted {
            Ok((stream, peer)) => {
                shared.log(format_args!("TCP connection from {peer}"));
                // Signaling frames are small and latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                let epoch = *shared.epoch.borrow();
                let task_state = shared.clone();
                shared.spawn_tracked(async move {
                    match &task_state.tls {
                        None => serve_connection(task_state.clone(), stream, epoch, peer).await,
                        Some(tls) => {
                            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream));
                            match handshake.await {
                                Ok(Ok(stream)) => serve_connection(task_state.clone(), stream, epoch, peer).await,
                                Ok(Err(error)) => task_state.log(format_args!("TLS handshake failed: {error}")),
                                Err(_) => task_state.log(format_args!("TLS handshake timed out")),
                            }
                        }
                    }
                });
            }
            Err(error) => {
                shared.log(format_args!("accept failed: {error}"));
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// Closes the listener, ends every connection of the current epoch without a
/// close frame, drops stored messages, waits `down` and binds the address again.
async fn restart(
    shared: &Shared,
    listener: TcpListener,
    down: Duration,
    stop: &mut watch::Receiver<bool>,
) -> io::Result<TcpListener> {
    drop(listener);
    shared.epoch.send_modify(|epoch| *epoch += 1);
    let dropped = lock(&shared.registry).clear_stored();
    shared.log(format_args!("restart: down for {down:?}; {dropped} stored messages dropped"));
    let stopped = || io::Error::other("the emulator stopped during the restart");
    tokio::select! {
        _ = stop.wait_for(|stopped| *stopped) => return Err(stopped()),
        _ = tokio::time::sleep(down) => {}
    }
    let give_up = Instant::now() + REBIND_PATIENCE;
    loop {
        match TcpListener::bind(shared.local_addr).await {
            Ok(listener) => {
                bump(&shared.counters.restarts, 1);
                shared.log(format_args!("restart: listening again on {}", shared.local_addr));
                return Ok(listener);
            }
            Err(error) if Instant::now() >= give_up => return Err(error),
            Err(_) => tokio::time::sleep(ACCEPT_RETRY_DELAY).await,
        }
    }
}

/// Serves HTTP/1.1 on one connection until it ends, is upgraded, the emulator
/// stops, or a restart ends the connection's epoch. `peer` is the remote address.
async fn serve_connection<S>(shared: Arc<Shared>, stream: S, epoch: u64, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = shared.stop.subscribe();
    let mut epochs = shared.epoch.subscribe();
    let service_state = shared.clone();
    let service = service_fn(move |request| route(service_state.clone(), epoch, peer, request));
    // The Date header comes from the emulator's own (shiftable) clock.
    let connection =
        http1::Builder::new().auto_date_header(false).serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::select! {
        _ = stop.wait_for(|stopped| *stopped) => {}
        _ = epochs.wait_for(|current| *current != epoch) => {}
        served = connection => {
            if let Err(error) = served {
                shared.log(format_args!("HTTP connection error: {error}"));
            }
        }
    }
}

/// Routes one HTTP request: WebSocket upgrades, the admin endpoint, the viewer
/// page, control-plane
/// operations; anything else is 404 `UnknownOperationException`. Every answer
/// gets `x-amzn-RequestId` and `Date`. An `Err` makes hyper close the
/// connection without answering (the "reset" refusal fault).
async fn route(
    shared: Arc<Shared>,
    epoch: u64,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<HttpResponse, io::Error> {
    let path = request.uri().path().to_owned();
    let upgrade = is_websocket_upgrade(&request);
    if let Some(user_agent) = request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok())
        && !path.starts_with("/admin")
    {
        shared.saw_user_agent(upgrade, user_agent);
    }
    let mut response = if upgrade {
        match accept_websocket(&shared, epoch, request) {
            Ok(response) => response,
            Err(UpgradeRefusal::Reset) => {
                bump(&shared.counters.upgrades_refused, 1);
                shared.log(format_args!("reset an upgrade (refusal fault)"));
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "upgrade refused by a fault"));
            }
            Err(UpgradeRefusal::Error(error)) => {
                bump(&shared.counters.upgrades_refused, 1);
                shared.log(format_args!("refused upgrade: {} {}", error.error_type, error.message));
                let mut response = error.into_response();
                // RFC 6455 §4.4: a refused handshake may name the supported version.
                response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
                response
            }
        }
    } else if path == "/admin" || path.starts_with("/admin/") {
        match admin::authorize(&shared, peer, &request) {
            Ok(()) => admin::handle(&shared, request).await,
            Err(refusal) => {
                shared.log(format_args!("refused an admin request from {peer}: {}", refusal.message));
                refusal.into_response()
            }
        }
    } else if path == "/viewer" || path.starts_with("/viewer/") {
        viewer::handle(&shared, peer, &request)
    } else if let Some(operation) = operation_at(request.method(), &path) {
        control::handle(&shared, operation, request).await
    } else {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("no operation at {} {path}", request.method()),
        )
        .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&shared.new_request_id()) {
        headers.insert("x-amzn-RequestId", id);
    }
    if let Ok(date) = HeaderValue::from_str(&clock::http_date(shared.now_epoch())) {
        headers.insert(header::DATE, date);
    }
    Ok(response)
}

/// Whether `segment` is `prefix` followed by hex digits, e.g. `m-1a2b3c4d`.
fn is_label(segment: &str, prefix: &str) -> bool {
    segment.strip_prefix(prefix).is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The operation a `POST` to `path` invokes.
pub(super) fn operation_at(method: &Method, path: &str) -> Option<Operation> {
    if method != Method::POST {
        return None;
    }
    if let Some(operation) =
        super::faults::OPERATIONS.into_iter().find(|operation| operation.control_plane_path() == Some(path))
    {
        return Some(operation);
    }
    let (label, rest) = path.strip_prefix('/')?.split_once('/')?;
    match rest {
        "v1/get-ice-server-config" if is_label(label, "r-") => Some(Operation::GetIceServerConfig),
        "joinStorageSession" if is_label(label, "w-") => Some(Operation::JoinStorageSession),
        "joinStorageSessionAsViewer" if is_label(label, "w-") => Some(Operation::JoinStorageSessionAsViewer),
        _ => None,
    }
}

/// An AWS-style error reply: status, `x-amzn-ErrorType` header and JSON body
/// `{"__type": ..., "message": ..., "Message": ...}` (spec §8.1).
#[derive(Debug)]
pub(super) struct HttpError {
    pub(super) status: StatusCode,
    pub(super) error_type: String,
    pub(super) message: String,
}

impl HttpError {
    pub(super) fn new(status: StatusCode, error_type: impl Into<String>, message: impl Into<String>) -> HttpError {
        HttpError { status, error_type: error_type.into(), message: message.into() }
    }

    pub(super) fn invalid_argument(message: impl ToString) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "InvalidArgumentException", message.to_string())
    }

    pub(super) fn serialization(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "SerializationException", message)
    }

    pub(super) fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    pub(super) fn access_denied(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }

    /// An injected error: `status` (400–599) with its default or given type.
    pub(super) fn injected(status: u16, error_type: String, message: &str) -> HttpError {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpError::new(status, error_type, message)
    }

    pub(super) fn into_response(self) -> HttpResponse {
        let body = serde_json::json!({ "__type": self.error_type, "message": self.message, "Message": self.message });
        let mut response = json_response(self.status, &body);
        let error_type = HeaderValue::from_str(&self.error_type).unwrap_or(HeaderValue::from_static("InternalFailure"));
        response.headers_mut().insert("x-amzn-ErrorType", error_type);
        response
    }
}

/// A JSON reply.
pub(super) fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A 200 reply with an empty body (the joins).
pub(super) fn empty_response() -> HttpResponse {
    Response::new(Full::new(Bytes::new()))
}

/// Reads a request body of at most [`MAX_BODY_LEN`] bytes.
pub(super) async fn read_body(body: Incoming) -> Result<Bytes, HttpError> {
    match Limited::new(body, MAX_BODY_LEN).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SerializationException",
            format!("cannot read the request body: {error}"),
        )),
    }
}

pub(super) type JsonObject = Map<String, Value>;

/// Parses a request body as a JSON object; an empty body is `{}`.
pub(super) fn parse_object(body: &[u8]) -> Result<JsonObject, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(JsonObject::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(HttpError::serialization("the request body must be a JSON object")),
        Err(error) => Err(HttpError::serialization(format!("the request body is not JSON: {error}"))),
    }
}

/// A string member, if present (`null` counts as absent).
pub(super) fn opt_str<'a>(object: &'a JsonObject, key: &str) -> Result<Option<&'a str>, HttpError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(HttpError::serialization(format!("{key} must be a string"))),
    }
}

pub(super) fn required_str<'a>(object: &'a JsonObject, key: &str) -> Result<&'a str, HttpError> {
    opt_str(object, key)?.ok_or_else(|| HttpError::invalid_argument(format!("{key} is required")))
}

/// An integer member, if present.
pub(super) fn opt_i64(object: &JsonObject, key: &str) -> Result<Option<i64>, HttpError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            value.as_i64().map(Some).ok_or_else(|| HttpError::serialization(format!("{key} must be an integer")))
        }
    }
}

/// A non-negative integer member, if present.
pub(super) fn opt_u64(object: &JsonObject, key: &str) -> Result<Option<u64>, HttpError> {
    match opt_i64(object, key)? {
        Some(value) => u64::try_from(value)
            .map(Some)
            .map_err(|_| HttpError::invalid_argument(format!("{key} must not be negative"))),
        None => Ok(None),
    }
}

pub(super) fn opt_object<'a>(object: &'a JsonObject, key: &str) -> Result<Option<&'a JsonObject>, HttpError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(HttpError::serialization(format!("{key} must be an object"))),
    }
}

pub(super) fn opt_array<'a>(object: &'a JsonObject, key: &str) -> Result<Option<&'a Vec<Value>>, HttpError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(HttpError::serialization(format!("{key} must be an array"))),
    }
}

/// The host a client reached the emulator by, from its `Host` header (falling
/// back to the bound address): endpoints point back at it.
pub(super) struct RequestHost {
    /// `host[:port]`, as in a URL.
    pub(super) authority: String,
    /// The host alone (IPv6 in brackets).
    pub(super) hostname: String,
    pub(super) port: u16,
}

pub(super) fn request_host(shared: &Shared, headers: &HeaderMap) -> RequestHost {
    let fallback = || {
        let addr = super::reachable(shared.local_addr);
        let hostname = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        RequestHost { authority: addr.to_string(), hostname, port: addr.port() }
    };
    let Some(authority) = headers.get(header::HOST).and_then(|value| value.to_str().ok()) else {
        return fallback();
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    if authority.is_empty() || !authority.chars().all(allowed) {
        return fallback();
    }
    let (hostname, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            (host.to_owned(), port.parse().unwrap_or(shared.local_addr.port()))
        }
        _ => (authority.to_owned(), shared.local_addr.port()),
    };
    if hostname.is_empty() {
        return fallback();
    }
    RequestHost { authority: authority.to_owned(), hostname, port }
}

/// Checks the request's SigV4 signature when authentication is on (access
/// keys configured, or an IoT endpoint issuing them); counts and explains a
/// failure as a 403 `AccessDeniedException`, or `ExpiredTokenException` for
/// an issued key past its expiration.
pub(super) fn authenticate(
    shared: &Shared,
    method: &Method,
    uri: &hyper::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), HttpError> {
    if shared.config.auth.is_none() && shared.iot.is_none() {
        return Ok(());
    }
    let keys = shared.config.auth.as_deref().unwrap_or_default();
    let verifier =
        Verifier { keys, issued: shared.iot.as_ref(), region: &shared.config.region, now: shared.now_epoch() };
    let request = SignedRequest { method: method.as_str(), path: uri.path(), query: uri.query(), headers };
    verifier.verify(&request, body).map_err(|error| {
        bump(&shared.counters.auth_failures, 1);
        shared.log(format_args!("refused a signature: {}", error.0.lines().next().unwrap_or("")));
        if error.is_expired_token() {
            bump(&shared.counters.expired_tokens_refused, 1);
            HttpError::new(StatusCode::FORBIDDEN, "ExpiredTokenException", error.0)
        } else {
            HttpError::access_denied(error.0)
        }
    })
}

/// Whether any comma-separated token of any `name` header equals `token`
/// (ASCII case-insensitive), as RFC 9110 lists are written.
fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn is_websocket_upgrade(request: &Request<Incoming>) -> bool {
    let headers = request.headers();
    request.method() == Method::GET
        && header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket")
}

/// Why an upgrade gets no 101.
enum UpgradeRefusal {
    Error(HttpError),
    /// Close the connection without an answer.
    Reset,
}

impl From<HttpError> for UpgradeRefusal {
    fn from(error: HttpError) -> UpgradeRefusal {
        UpgradeRefusal::Error(error)
    }
}

/// Checks an upgrade request (path, refusal fault, handshake headers,
/// signature, parameters), admits the connection, spawns its WebSocket task
/// and answers 101; or explains the refusal.
fn accept_websocket(
    shared: &Arc<Shared>,
    epoch: u64,
    mut request: Request<Incoming>,
) -> Result<HttpResponse, UpgradeRefusal> {
    let path = request.uri().path();
    let path_role = match path.strip_prefix('/') {
        Some("") => None,
        Some(label) if is_label(label, "m-") => Some(crate::protocol::Role::Master),
        Some(label) if is_label(label, "v-") => Some(crate::protocol::Role::Viewer),
        _ => return Err(HttpError::not_found(format!("no WebSocket endpoint at {path}")).into()),
    };
    match lock(&shared.faults).connect_refusal(Instant::now()) {
        None => {}
        Some(ConnectRefusal::Reset) => return Err(UpgradeRefusal::Reset),
        Some(ConnectRefusal::Status(status)) => {
            let error_type = default_error_type(status).to_owned();
            return Err(HttpError::injected(status, error_type, "connection refused by an injected fault").into());
        }
    }
    let headers = request.headers();
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err(HttpError::invalid_argument("Sec-WebSocket-Version must be 13").into());
    }
    let Some(websocket_key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(HttpError::invalid_argument("Sec-WebSocket-Key header is required").into());
    };
    let accept_key = derive_accept_key(websocket_key.as_bytes());
    let echo_subprotocol = header_has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, C_SDK_SUBPROTOCOL);
    authenticate(shared, request.method(), request.uri(), headers, b"")?;
    let (channel_arn, endpoint) = parse_connect_query(request.uri().query())?;
    match (path_role, &endpoint) {
        (Some(crate::protocol::Role::Master), Endpoint::Viewer(_)) => {
            return Err(HttpError::invalid_argument("X-Amz-ClientId is not accepted on a MASTER endpoint").into());
        }
        (Some(crate::protocol::Role::Viewer), Endpoint::Master) => {
            return Err(HttpError::invalid_argument("X-Amz-ClientId is required on a VIEWER endpoint").into());
        }
        _ => {}
    }

    let key = ConnectionKey {
        channel_arn,
        endpoint,
        connection_id: shared.next_connection_id.fetch_add(1, Ordering::Relaxed),
    };
    let (outbox, outbox_receiver) = mpsc::unbounded_channel();
    let handle = PeerHandle { outbox, kill: Arc::new(Notify::new()) };
    let quotas = shared.limits().quotas;
    let admitted =
        lock(&shared.registry).admit(&key, handle.clone(), shared.config.max_viewers, quotas, Instant::now());
    let admission = admitted.map_err(|refusal| match refusal {
        Refusal::UnknownChannel => HttpError::not_found(format!("channel {} does not exist", key.channel_arn)),
        Refusal::ViewerLimit => HttpError::new(
            StatusCode::BAD_REQUEST,
            "ClientLimitExceededException",
            format!("the channel already has {} viewers", shared.config.max_viewers),
        ),
        Refusal::StoragePeerId => HttpError::new(
            StatusCode::BAD_REQUEST,
            "ResourceInUseException",
            "X-Amz-ClientId is the client id of the channel's storage session; a viewer must use another",
        ),
        Refusal::ConnectRate => HttpError::new(
            StatusCode::BAD_REQUEST,
            "ClientLimitExceededException",
            format!(
                "more than {} connect requests per second for this channel and role",
                super::faults::CONNECTS_PER_SECOND
            ),
        ),
    })?;
    let session = connection::Session::new(shared.clone(), key, handle, admission, epoch);
    let upgrade = hyper::upgrade::on(&mut request);
    shared.spawn_tracked(connection::run(session, upgrade, outbox_receiver));

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept_value = HeaderValue::from_str(&accept_key).expect("an accept key is base64, a valid header");
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept_value);
    if echo_subprotocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(C_SDK_SUBPROTOCOL));
    }
    Ok(response)
}

/// Reads `X-Amz-ChannelARN` and `X-Amz-ClientId` (percent-decoded; the first
/// occurrence wins; other parameters, such as SigV4's, are ignored). No client
/// id means the master.
pub(super) fn parse_connect_query(query: Option<&str>) -> Result<(String, Endpoint), HttpError> {
    let mut channel_arn = None;
    let mut client_id = None;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "X-Amz-ChannelARN" => &mut channel_arn,
            "X-Amz-ClientId" => &mut client_id,
            _ => continue,
        };
        if slot.is_none() {
            let decoded = percent_decode(value)
                .ok_or_else(|| HttpError::invalid_argument(format!("{name} is not percent-encoded UTF-8")))?;
            *slot = Some(decoded);
        }
    }
    let channel_arn = channel_arn.unwrap_or_default();
    validate_channel_arn(&channel_arn).map_err(HttpError::invalid_argument)?;
    let endpoint = match client_id {
        None => Endpoint::Master,
        Some(id) => {
            validate_client_id(&id).map_err(HttpError::invalid_argument)?;
            Endpoint::Viewer(id)
        }
    };
    Ok((channel_arn, endpoint))
}

/// Decodes `%XX` escapes; `None` for a broken escape or a result that is not UTF-8.
/// `+` stays `+` (SigV4 encodes a space as `%20`).
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let digit = |offset: usize| char::from(*bytes.get(index + offset)?).to_digit(16);
            let value = digit(1)? * 16 + digit(2)?;
            decoded.push(u8::try_from(value).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab%2fc+d").as_deref(), Some("a:b/c+d"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn connect_query_roles_and_errors() {
        let arn = "arn%3Aaws%3Akinesisvideo%3Aus-west-2%3A1%3Achannel%2Fc%2F5";
        let (parsed_arn, endpoint) = parse_connect_query(Some(&format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-ChannelARN={arn}&X-Amz-ChannelARN=other"
        )))
        .ok()
        .unwrap();
        assert_eq!(parsed_arn, "arn:aws:kinesisvideo:us-west-2:1:channel/c/5");
        assert_eq!(endpoint, Endpoint::Master);
        let (_, endpoint) =
            parse_connect_query(Some(&format!("X-Amz-ChannelARN={arn}&X-Amz-ClientId=v%2D1"))).ok().unwrap();
        assert_eq!(endpoint, Endpoint::Viewer("v-1".into()));

        let error = parse_connect_query(None).err().unwrap();
        assert_eq!(error.error_type, "InvalidArgumentException");
        assert!(error.message.contains("X-Amz-ChannelARN"), "{}", error.message);
        let error = parse_connect_query(Some(&format!("X-Amz-ChannelARN={arn}&X-Amz-ClientId=AWS_x"))).err().unwrap();
        assert_eq!(error.message, "X-Amz-ClientId must not start with AWS_");
        let error = parse_connect_query(Some("X-Amz-ChannelARN=%E9")).err().unwrap();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn operation_paths() {
        assert_eq!(operation_at(&Method::POST, "/describeSignalingChannel"), Some(Operation::DescribeSignalingChannel));
        assert_eq!(operation_at(&Method::GET, "/describeSignalingChannel"), None);
        assert_eq!(operation_at(&Method::POST, "/DescribeSignalingChannel"), None);
        assert_eq!(
            operation_at(&Method::POST, "/r-0a1b/v1/get-ice-server-config"),
            Some(Operation::GetIceServerConfig)
        );
        assert_eq!(operation_at(&Method::POST, "/v1/get-ice-server-config"), None);
        assert_eq!(operation_at(&Method::POST, "/m-0a1b/v1/get-ice-server-config"), None);
        assert_eq!(operation_at(&Method::POST, "/w-0a1b/joinStorageSession"), Some(Operation::JoinStorageSession));
        assert_eq!(
            operation_at(&Method::POST, "/w-0a1b/joinStorageSessionAsViewer"),
            Some(Operation::JoinStorageSessionAsViewer)
        );
        assert_eq!(operation_at(&Method::POST, "/r-0a1b/joinStorageSession"), None);
        assert_eq!(operation_at(&Method::POST, "/joinStorageSession"), None);
        assert!(is_label("m-0f", "m-") && !is_label("m-", "m-") && !is_label("m-xy", "m-"));
    }
}
