//! The browser viewer page (`GET /viewer?channel=NAME`): plain HTML and JS
//! (`viewer.html`, `viewer.js` beside this file, compiled in) that joins a
//! channel as a viewer over the emulator's own WebSocket, negotiates with the
//! browser's `RTCPeerConnection`, shows the master's video and prints the
//! timings. The page asks `GET /viewer/connect?channel=NAME&clientId=ID` for
//! the WebSocket URL; with authentication on the emulator presigns it with its
//! first configured key (the page holds no key), and then only for loopback
//! peers that pass the admin endpoint's loopback checks (a loopback `Host`,
//! no `Origin` of another site, see
//! [`super::admin::refuse_unless_loopback_addressed`]): a presigned URL is a
//! key to the channel, and a browser cannot send the admin token. The page
//! and its script are static and served to anyone.

use super::http::{HttpError, HttpResponse, json_response, percent_decode, request_host};
use super::{Shared, lock};
use crate::aws::Credentials;
use crate::aws::sigv4::{presign_wss_url, uri_encode};
use crate::protocol::validate_client_id;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

const PAGE: &str = include_str!("viewer.html");
const SCRIPT: &str = include_str!("viewer.js");

/// Serves `/viewer`, `/viewer/viewer.js` and `/viewer/connect`.
pub(super) fn handle(shared: &Shared, peer: SocketAddr, request: &Request<Incoming>) -> HttpResponse {
    if request.method() != Method::GET {
        return HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnknownOperationException",
            "the viewer page is GET only",
        )
        .into_response();
    }
    match request.uri().path() {
        "/viewer" | "/viewer/" => text_response(PAGE, "text/html; charset=utf-8"),
        "/viewer/viewer.js" => text_response(SCRIPT, "text/javascript; charset=utf-8"),
        "/viewer/connect" => match connect_url(shared, peer, request) {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(error) => error.into_response(),
        },
        path => HttpError::new(StatusCode::NOT_FOUND, "UnknownOperationException", format!("no page at {path}"))
            .into_response(),
    }
}

fn text_response(body: &'static str, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The first value of `name` in the query, percent-decoded.
fn query_value(query: &str, name: &str) -> Result<Option<String>, HttpError> {
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == name {
            let decoded = percent_decode(value)
                .ok_or_else(|| HttpError::invalid_argument(format!("{name} is not percent-encoded UTF-8")))?;
            return Ok(Some(decoded));
        }
    }
    Ok(None)
}

/// `{"url": ws(s)://HOST/v-LABEL?X-Amz-ChannelARN=..&X-Amz-ClientId=..[SigV4],
/// "channelArn": ARN, "presigned": bool}` for a channel name and a client id.
fn connect_url(shared: &Shared, peer: SocketAddr, request: &Request<Incoming>) -> Result<serde_json::Value, HttpError> {
    if shared.config.auth.is_some() {
        if !peer.ip().to_canonical().is_loopback() {
            return Err(HttpError::access_denied("the viewer page's URLs are presigned for loopback peers only"));
        }
        // The URL is built from the Host header and is a key to the channel:
        // not for a page that reached loopback by DNS rebinding.
        super::admin::refuse_unless_loopback_addressed(request.headers())?;
    }
    let query = request.uri().query().unwrap_or("");
    let channel = query_value(query, "channel")?
        .ok_or_else(|| HttpError::invalid_argument("channel (a channel name) is required"))?;
    let client_id =
        query_value(query, "clientId")?.ok_or_else(|| HttpError::invalid_argument("clientId is required"))?;
    validate_client_id(&client_id).map_err(HttpError::invalid_argument)?;
    let info = lock(&shared.registry)
        .by_name(&channel)
        .ok_or_else(|| HttpError::not_found(format!("channel {channel:?} does not exist")))?;
    let host = request_host(shared, request.headers());
    let scheme = if shared.is_tls() { "wss" } else { "ws" };
    let endpoint = format!("{scheme}://{}/v-{}", host.authority, info.endpoint_label);
    let params = [("X-Amz-ChannelARN", info.arn.as_str()), ("X-Amz-ClientId", client_id.as_str())];
    let (url, presigned) = match shared.config.auth.as_ref().and_then(|keys| keys.first()) {
        Some((access_key, secret_key)) => {
            let credentials = Credentials::new(access_key, secret_key, None);
            let now = UNIX_EPOCH + Duration::from_secs(u64::try_from(shared.now_epoch()).unwrap_or(0));
            let url = presign_wss_url(&endpoint, &params, &credentials, &shared.config.region, now)
                .map_err(|error| HttpError::invalid_argument(format!("cannot presign: {error}")))?;
            (url, true)
        }
        None => {
            let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", uri_encode(v))).collect();
            (format!("{endpoint}?{}", query.join("&")), false)
        }
    };
    Ok(json!({ "url": url, "channelArn": info.arn, "presigned": presigned }))
}
