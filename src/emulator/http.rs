//! The emulator's HTTP side: the accept loop, request routing ([`route`], the one
//! place every request goes through) and the WebSocket upgrade handshake
//! (spec §1.3, §6.8). Runs on the emulator's tasks; holds the registry lock only
//! inside [`super::channels::Registry`] calls.

use super::channels::{ConnectionKey, Endpoint, Refusal};
use super::{Shared, bump, connection, lock};
use crate::protocol::{validate_channel_arn, validate_client_id};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The WebSocket sub-protocol the C SDK offers (spec §1.3); echoed when offered.
const C_SDK_SUBPROTOCOL: &str = "wss";

/// Pause after a failed `accept` (e.g. out of file descriptors) before retrying.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

type HttpResponse = Response<Full<Bytes>>;

/// Accepts connections until the emulator stops; each one is served on its own task.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.stop.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared.log(format_args!("TCP connection from {peer}"));
                shared.spawn_tracked(serve_connection(shared.clone(), stream));
            }
            Err(error) => {
                shared.log(format_args!("accept failed: {error}"));
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on one TCP connection until it ends, is upgraded, or the
/// emulator stops.
async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    // Signaling frames are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let mut stop = shared.stop.subscribe();
    let service_state = shared.clone();
    let service = service_fn(move |request| route(service_state.clone(), request));
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::select! {
        _ = stop.wait_for(|stopped| *stopped) => {}
        served = connection => {
            if let Err(error) = served {
                shared.log(format_args!("HTTP connection error: {error}"));
            }
        }
    }
}

/// Routes one HTTP request. Today: WebSocket upgrades; anything else is 404.
async fn route(shared: Arc<Shared>, request: Request<Incoming>) -> Result<HttpResponse, Infallible> {
    let response = if is_websocket_upgrade(&request) {
        accept_websocket(&shared, request).unwrap_or_else(|error| {
            bump(&shared.counters.upgrades_refused, 1);
            shared.log(format_args!("refused upgrade: {} {}", error.error_type, error.message));
            let mut response = error.into_response();
            // RFC 6455 §4.4: a refused handshake may name the supported version.
            response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            response
        })
    } else {
        HttpError::not_found(format!("no operation at {} {}", request.method(), request.uri().path())).into_response()
    };
    Ok(response)
}

/// An AWS-style error reply: status, `x-amzn-ErrorType` header and JSON body
/// `{"__type": ..., "message": ...}` (spec §8.1).
struct HttpError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl HttpError {
    fn invalid_argument(message: impl ToString) -> HttpError {
        HttpError {
            status: StatusCode::BAD_REQUEST,
            error_type: "InvalidArgumentException",
            message: message.to_string(),
        }
    }

    fn not_found(message: String) -> HttpError {
        HttpError { status: StatusCode::NOT_FOUND, error_type: "ResourceNotFoundException", message }
    }

    fn into_response(self) -> HttpResponse {
        let body = serde_json::json!({ "__type": self.error_type, "message": self.message });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-amzn-ErrorType", HeaderValue::from_static(self.error_type));
        response
    }
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

/// Checks an upgrade request, admits the connection, spawns its WebSocket task
/// and answers 101; or explains the refusal.
fn accept_websocket(shared: &Arc<Shared>, mut request: Request<Incoming>) -> Result<HttpResponse, HttpError> {
    let headers = request.headers();
    if request.uri().path() != "/" {
        return Err(HttpError::not_found(format!("no WebSocket endpoint at {}", request.uri().path())));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        return Err(HttpError::invalid_argument("Sec-WebSocket-Version must be 13"));
    }
    let Some(websocket_key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(HttpError::invalid_argument("Sec-WebSocket-Key header is required"));
    };
    let accept_key = derive_accept_key(websocket_key.as_bytes());
    let echo_subprotocol = header_has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, C_SDK_SUBPROTOCOL);
    let (channel_arn, endpoint) = parse_connect_query(request.uri().query())?;

    let key = ConnectionKey {
        channel_arn,
        endpoint,
        connection_id: shared.next_connection_id.fetch_add(1, Ordering::Relaxed),
    };
    let (outbox, outbox_receiver) = mpsc::unbounded_channel();
    let admitted = lock(&shared.registry).admit(&key, outbox.clone(), shared.config.max_viewers, Instant::now());
    let admission = admitted.map_err(|refusal| match refusal {
        Refusal::UnknownChannel => HttpError::not_found(format!("channel {} does not exist", key.channel_arn)),
        Refusal::ViewerLimit => HttpError {
            status: StatusCode::BAD_REQUEST,
            error_type: "ClientLimitExceededException",
            message: format!("the channel already has {} viewers", shared.config.max_viewers),
        },
    })?;
    let session = connection::Session::new(shared.clone(), key, outbox, admission);
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
fn parse_connect_query(query: Option<&str>) -> Result<(String, Endpoint), HttpError> {
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
fn percent_decode(text: &str) -> Option<String> {
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
}
