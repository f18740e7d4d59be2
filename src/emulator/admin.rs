//! The admin endpoint (`/admin/...`, documented in the module doc of
//! [`super`]): fault injection, limits and counters over HTTP, for tests that
//! drive the emulator binary. Answers loopback peers, and others only with
//! the admin token ([`super::AdminAccess`]).

use super::faults::{ConnectRefusal, ControlPlaneFault, Operation, Target};
use super::http::{
    HttpError, HttpResponse, JsonObject, json_response, opt_array, opt_i64, opt_str, opt_u64, parse_object, read_body,
    required_str,
};
use super::{EmulatorStats, Shared, lock, storage};
use crate::protocol::{Role, validate_client_id};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Delay between answering `POST /admin/restart` and starting the restart, so
/// that the answer reaches the caller before its connection is cut.
const RESTART_DELAY: Duration = Duration::from_millis(50);

/// Whether a request may use the admin endpoint. With `Authorization: Bearer
/// TOKEN` matching the configured token (compared in constant time), any
/// peer may, unless a browser sent it from another site
/// ([`refuse_cross_site`]). Without it, a loopback peer may when the request
/// passes [`refuse_unless_loopback_addressed`]: a loopback peer can be a web
/// page in the developer's browser. Otherwise 403 `AccessDeniedException`.
pub(super) fn authorize<B>(shared: &Shared, peer: SocketAddr, request: &Request<B>) -> Result<(), HttpError> {
    let headers = request.headers();
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if let (Some(token), Some(presented)) = (&shared.config.admin_token, presented)
        && same_bytes(token.as_bytes(), presented.as_bytes())
    {
        return refuse_cross_site(headers);
    }
    if peer.ip().to_canonical().is_loopback() {
        return refuse_unless_loopback_addressed(headers);
    }
    match shared.config.admin_token {
        None => Err(HttpError::access_denied(
            "the admin endpoint answers loopback peers only; start the emulator with --admin-token to allow others",
        )),
        Some(_) => Err(HttpError::access_denied(
            "the admin endpoint needs `Authorization: Bearer TOKEN` (the --admin-token) from a peer off loopback",
        )),
    }
}

/// The checks that make trusting a loopback peer safe against web pages open
/// in a browser on the same machine: the `Host` header must name a loopback
/// address literal (127.0.0.0/8, `[::1]`) or `localhost`, any port (a DNS
/// rebinding attack sends its own host name); an `Origin` header must be an
/// http(s) origin on such a host (a cross-origin "simple" POST needs no
/// preflight); and `Sec-Fetch-Site` must not be `cross-site`. Each refusal is
/// a 403 `AccessDeniedException` naming the rule (not the header's value).
pub(super) fn refuse_unless_loopback_addressed(headers: &HeaderMap) -> Result<(), HttpError> {
    refuse_cross_site_fetch(headers)?;
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().ok().and_then(|host| host.parse::<Authority>().ok()),
        _ => None,
    };
    if !host.is_some_and(|host| is_loopback_authority(&host)) {
        return Err(HttpError::access_denied(
            "a request trusted for coming from loopback must name a loopback host (127.0.0.1, [::1] or localhost, \
             any port) in its Host header; this one names another host (DNS rebinding?) or none",
        ));
    }
    for origin in headers.get_all(header::ORIGIN) {
        if !origin_authority(origin).is_some_and(|origin| is_loopback_authority(&origin)) {
            return Err(HttpError::access_denied(
                "a request trusted for coming from loopback may only carry an http(s) Origin on a loopback host \
                 (127.0.0.1, [::1] or localhost); this one comes from a page of another site",
            ));
        }
    }
    Ok(())
}

/// The browser checks of a request authorized by the admin token: refused
/// with `Sec-Fetch-Site: cross-site`, or an `Origin` whose host is not the
/// host the request was sent to (`Host`).
fn refuse_cross_site(headers: &HeaderMap) -> Result<(), HttpError> {
    refuse_cross_site_fetch(headers)?;
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()?.parse::<Authority>().ok());
    for origin in headers.get_all(header::ORIGIN) {
        let same_host = match (origin_authority(origin), &host) {
            (Some(origin), Some(host)) => origin.host().eq_ignore_ascii_case(host.host()),
            _ => false,
        };
        if !same_host {
            return Err(HttpError::access_denied(
                "the admin endpoint refuses a request whose Origin is not the host it was sent to (a page of \
                 another site)",
            ));
        }
    }
    Ok(())
}

fn refuse_cross_site_fetch(headers: &HeaderMap) -> Result<(), HttpError> {
    let cross_site = headers
        .get_all("sec-fetch-site")
        .iter()
        .any(|value| value.to_str().map_or(true, |value| value.trim().eq_ignore_ascii_case("cross-site")));
    if cross_site {
        return Err(HttpError::access_denied(
            "the admin endpoint refuses requests a browser marks `Sec-Fetch-Site: cross-site` (a page of another site)",
        ));
    }
    Ok(())
}

/// The authority of an `Origin` header value `http(s)://HOST[:PORT]`; `None`
/// for `null`, another scheme, a path or user information.
fn origin_authority(origin: &HeaderValue) -> Option<Authority> {
    let origin = origin.to_str().ok()?;
    let (scheme, rest) = origin.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    rest.parse::<Authority>().ok()
}

/// Whether an authority (as in `Host` or an origin) is `localhost` or a
/// loopback address literal, with any port and no user information.
fn is_loopback_authority(authority: &Authority) -> bool {
    if authority.as_str().contains('@') {
        return false;
    }
    let host = authority.host();
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let address = match host.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().map(IpAddr::V4),
    };
    address.is_ok_and(|address| address.to_canonical().is_loopback())
}

/// Equality that takes the same time wherever the first difference is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

pub(super) async fn handle(shared: &Arc<Shared>, request: Request<Incoming>) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let answer = async {
        let body = read_body(body).await?;
        let input = parse_object(&body)?;
        run(shared, &parts.method, parts.uri.path(), &input)
    };
    match answer.await {
        Ok((status, output)) => json_response(status, &output),
        Err(error) => error.into_response(),
    }
}

fn millis(input: &JsonObject, key: &str) -> Result<Option<Duration>, HttpError> {
    Ok(opt_u64(input, key)?.map(Duration::from_millis))
}

fn target(input: &JsonObject) -> Result<Target, HttpError> {
    let role = match opt_str(input, "role")? {
        None => None,
        Some(role) if role.eq_ignore_ascii_case("master") => Some(Role::Master),
        Some(role) if role.eq_ignore_ascii_case("viewer") => Some(Role::Viewer),
        Some(other) => {
            return Err(HttpError::invalid_argument(format!("role must be MASTER or VIEWER, not {other:?}")));
        }
    };
    Ok(Target {
        channel: opt_str(input, "channel")?.map(str::to_owned),
        role,
        client_id: opt_str(input, "client_id")?.map(str::to_owned),
    })
}

fn status(input: &JsonObject, default: u16) -> Result<u16, HttpError> {
    match opt_u64(input, "status")? {
        None => Ok(default),
        Some(status @ 400..=599) => Ok(status as u16),
        Some(other) => Err(HttpError::invalid_argument(format!("status must be 400 to 599, not {other}"))),
    }
}

fn connections(count: usize) -> (StatusCode, Value) {
    (StatusCode::OK, json!({ "connections": count }))
}

fn done() -> (StatusCode, Value) {
    (StatusCode::OK, json!({}))
}

fn run(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    input: &JsonObject,
) -> Result<(StatusCode, Value), HttpError> {
    if method == Method::GET && path == "/admin/stats" {
        return Ok((StatusCode::OK, stats_json(&shared.counters.snapshot())));
    }
    if method == Method::GET && path == "/admin/storage-sessions" {
        let reports: Vec<Value> = storage::reports(shared).iter().map(storage::report_json).collect();
        return Ok((StatusCode::OK, json!({ "sessions": reports })));
    }
    if method != Method::POST {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("no admin operation at {method} {path}"),
        ));
    }
    match path {
        "/admin/drop" => Ok(connections(shared.drop_connections(&target(input)?))),
        "/admin/close" => {
            let code = opt_u64(input, "code")?.unwrap_or(1001);
            let code = u16::try_from(code)
                .ok()
                .filter(|code| (1000..=4999).contains(code))
                .ok_or_else(|| HttpError::invalid_argument("code must be 1000 to 4999"))?;
            let reason = opt_str(input, "reason")?.unwrap_or("closed by the admin endpoint");
            Ok(connections(shared.close_connections(&target(input)?, code, reason)))
        }
        "/admin/go-away" => Ok(connections(shared.send_go_away(&target(input)?, millis(input, "grace_ms")?))),
        "/admin/reconnect-ice-server" => Ok(connections(shared.send_reconnect_ice_server(&target(input)?))),
        "/admin/refuse-connections" => {
            let duration =
                millis(input, "duration_ms")?.ok_or_else(|| HttpError::invalid_argument("duration_ms is required"))?;
            let reset = match input.get("reset") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(reset)) => *reset,
                Some(_) => return Err(HttpError::serialization("reset must be a boolean")),
            };
            let refusal = if reset { ConnectRefusal::Reset } else { ConnectRefusal::Status(status(input, 503)?) };
            shared.refuse_connections(duration, refusal);
            Ok(done())
        }
        "/admin/control-plane-errors" => {
            let mut operations = Vec::new();
            for item in opt_array(input, "operations")?.into_iter().flatten() {
                let name = item.as_str().unwrap_or_default();
                let operation = Operation::parse(name)
                    .ok_or_else(|| HttpError::invalid_argument(format!("unknown operation {item}")))?;
                operations.push(operation);
            }
            shared.fail_control_plane(ControlPlaneFault {
                status: status(input, 500)?,
                error_type: opt_str(input, "error_type")?.map(str::to_owned),
                count: opt_u64(input, "count")?,
                duration: millis(input, "duration_ms")?,
                operations,
            });
            Ok(done())
        }
        "/admin/delay-frames" => {
            let delay =
                millis(input, "delay_ms")?.ok_or_else(|| HttpError::invalid_argument("delay_ms is required"))?;
            shared.delay_frames(delay, millis(input, "duration_ms")?);
            Ok(done())
        }
        "/admin/restart" => {
            let down = millis(input, "down_ms")?.unwrap_or(Duration::from_secs(1));
            let restarting = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RESTART_DELAY).await;
                let _ = restarting.restart(down).await;
            });
            Ok((StatusCode::ACCEPTED, json!({})))
        }
        "/admin/limits" => {
            let mut limits = shared.limits();
            if let Some(idle) = millis(input, "idle_timeout_ms")? {
                limits.idle_timeout = idle;
            }
            if let Some(age) = millis(input, "max_connection_age_ms")? {
                limits.max_connection_age = age;
            }
            if let Some(grace) = millis(input, "go_away_grace_ms")? {
                limits.go_away_grace = grace;
            }
            match input.get("quotas") {
                None | Some(Value::Null) => {}
                Some(Value::Bool(quotas)) => limits.quotas = *quotas,
                Some(_) => return Err(HttpError::serialization("quotas must be a boolean")),
            }
            shared.limits.send_replace(limits);
            let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
            Ok((
                StatusCode::OK,
                json!({
                    "idle_timeout_ms": millis(limits.idle_timeout),
                    "max_connection_age_ms": millis(limits.max_connection_age),
                    "go_away_grace_ms": millis(limits.go_away_grace),
                    "quotas": limits.quotas,
                }),
            ))
        }
        "/admin/clock" => {
            let offset =
                opt_i64(input, "offset_ms")?.ok_or_else(|| HttpError::invalid_argument("offset_ms is required"))?;
            shared.clock_offset_ms.store(offset, std::sync::atomic::Ordering::Relaxed);
            Ok(done())
        }
        "/admin/storage-peer" => {
            let channel = required_str(input, "channel")?;
            let arn = {
                let registry = lock(&shared.registry);
                registry.channel_arn(channel).or_else(|| registry.by_arn(channel).map(|info| info.arn))
            };
            let arn = arn.ok_or_else(|| HttpError::not_found(format!("no channel {channel}")))?;
            let client_id = opt_str(input, "client_id")?;
            if let Some(id) = client_id {
                validate_client_id(id).map_err(HttpError::invalid_argument)?;
            }
            storage::attach_peer(shared, &arn, client_id.map(str::to_owned));
            Ok(done())
        }
        "/admin/storage-drop-offers" => {
            let count = opt_u64(input, "count")?.ok_or_else(|| HttpError::invalid_argument("count is required"))?;
            storage::drop_offers(shared, count);
            Ok(done())
        }
        "/admin/clear" => {
            shared.clear_faults();
            Ok(done())
        }
        "/admin/iot/issue-device" => {
            let iot =
                shared.iot.as_ref().ok_or_else(|| HttpError::invalid_argument("the emulator has no IoT endpoint"))?;
            let thing =
                opt_str(input, "thing_name")?.ok_or_else(|| HttpError::invalid_argument("thing_name is required"))?;
            let device = iot.issue_device(thing).map_err(|error| HttpError::invalid_argument(error.to_string()))?;
            Ok((
                StatusCode::OK,
                json!({
                    "thing_name": device.thing_name,
                    "certificate_pem": device.certificate_pem,
                    "private_key_pem": device.private_key_pem,
                }),
            ))
        }
        "/admin/iot/revoke" => {
            let revoked = shared.iot.as_ref().map_or(0, super::iot::IotState::revoke_all);
            Ok((StatusCode::OK, json!({ "credentials": revoked })))
        }
        _ => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("no admin operation at {method} {path}"),
        )),
    }
}

fn stats_json(stats: &EmulatorStats) -> Value {
    let calls = &stats.control_plane;
    json!({
        "open_connections": stats.open_connections,
        "upgrades_refused": stats.upgrades_refused,
        "messages_relayed": stats.messages_relayed,
        "messages_stored": stats.messages_stored,
        "messages_replaced": stats.messages_replaced,
        "messages_expired": stats.messages_expired,
        "status_responses_sent": stats.status_responses_sent,
        "frames_rejected": stats.frames_rejected,
        "messages_throttled": stats.messages_throttled,
        "messages_blocked_by_storage": stats.messages_blocked_by_storage,
        "control_plane": {
            "create_signaling_channel": calls.create_signaling_channel,
            "describe_signaling_channel": calls.describe_signaling_channel,
            "get_signaling_channel_endpoint": calls.get_signaling_channel_endpoint,
            "delete_signaling_channel": calls.delete_signaling_channel,
            "list_signaling_channels": calls.list_signaling_channels,
            "describe_media_storage_configuration": calls.describe_media_storage_configuration,
            "get_ice_server_config": calls.get_ice_server_config,
            "update_media_storage_configuration": calls.update_media_storage_configuration,
            "join_storage_session": calls.join_storage_session,
            "join_storage_session_as_viewer": calls.join_storage_session_as_viewer,
            "total": calls.total(),
        },
        "control_plane_faults": stats.control_plane_faults,
        "auth_failures": stats.auth_failures,
        "go_aways_sent": stats.go_aways_sent,
        "reconnect_ice_servers_sent": stats.reconnect_ice_servers_sent,
        "connections_dropped": stats.connections_dropped,
        "idle_timeouts": stats.idle_timeouts,
        "max_age_closes": stats.max_age_closes,
        "restarts": stats.restarts,
        "iot_credentials_issued": stats.iot_credentials_issued,
        "iot_handshakes_refused": stats.iot_handshakes_refused,
        "expired_tokens_refused": stats.expired_tokens_refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn loopback_hosts_and_origins() {
        for host in ["127.0.0.1:8080", "127.9.8.7", "localhost:1", "LocalHost", "[::1]:443", "[::ffff:127.0.0.1]:9"] {
            assert!(refuse_unless_loopback_addressed(&headers(&[("host", host)])).is_ok(), "{host}");
        }
        for host in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "0x7f.0.0.1",
            "2130706433",
            "user@127.0.0.1",
            "[::2]",
            "10.0.0.1:80",
            "",
        ] {
            let refused = refuse_unless_loopback_addressed(&headers(&[("host", host)])).unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{host}");
            assert!(refused.message.contains("Host header"), "{}", refused.message);
        }
        assert!(refuse_unless_loopback_addressed(&HeaderMap::new()).is_err(), "no Host");
        let two_hosts = headers(&[("host", "127.0.0.1"), ("host", "evil.example")]);
        assert!(refuse_unless_loopback_addressed(&two_hosts).is_err(), "two Hosts");

        for origin in ["http://127.0.0.1:8080", "https://localhost", "HTTP://[::1]:3000"] {
            let request = headers(&[("host", "127.0.0.1:8080"), ("origin", origin)]);
            assert!(refuse_unless_loopback_addressed(&request).is_ok(), "{origin}");
        }
        for origin in
            ["http://evil.example", "null", "file://", "ws://127.0.0.1", "http://127.0.0.1/x", "http://a@[::1]"]
        {
            let request = headers(&[("host", "127.0.0.1:8080"), ("origin", origin)]);
            let refused = refuse_unless_loopback_addressed(&request).unwrap_err();
            assert!(refused.message.contains("Origin"), "{origin}: {}", refused.message);
        }
        let cross = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(refuse_unless_loopback_addressed(&cross).unwrap_err().message.contains("Sec-Fetch-Site"));
        let same = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "same-origin")]);
        assert!(refuse_unless_loopback_addressed(&same).is_ok());
    }

    #[test]
    fn token_requests_refuse_other_sites_only() {
        assert!(refuse_cross_site(&headers(&[("host", "emulator.lan:8080")])).is_ok());
        let same = headers(&[("host", "emulator.lan:8080"), ("origin", "https://Emulator.lan:8080")]);
        assert!(refuse_cross_site(&same).is_ok());
        for origin in ["https://evil.example", "null"] {
            let request = headers(&[("host", "emulator.lan:8080"), ("origin", origin)]);
            assert!(refuse_cross_site(&request).is_err(), "{origin}");
        }
        let cross = headers(&[("host", "emulator.lan"), ("sec-fetch-site", "cross-site")]);
        assert!(refuse_cross_site(&cross).is_err());
    }
}
