//! Fuzz targets over what the control plane (or whoever answers in its place)
//! sends back, and over the endpoint cache file; see [`crate::fuzzing`].

use super::cache::parse_file;
use super::control_plane::{
    error_from_response, parse_channel_info, parse_create_reply, parse_endpoints, parse_success,
};
use super::ice::{parse_ice_server_list, refresh_after};
use super::{AwsError, ClockSkew, Credentials, HttpResponse, is_clock_skew_message, parse_http_date};
use crate::fuzzing::{assert_not_amplified, fields};
use crate::protocol::validate_channel_arn;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "FwoGZXIvYXdzEXAMPLEsessionTOKEN";

/// A successful reply body, read as each operation's reply: Describe,
/// GetEndpoint, Create, GetIceServerConfig. What they copy out is no larger
/// than the body.
pub fn control_plane_reply(data: &[u8]) {
    let response = HttpResponse { status: 200, headers: Vec::new(), body: data.to_vec() };
    let Ok(body) = parse_success("Fuzz", &response) else { return };
    assert!(body.is_object());
    if let Ok(info) = parse_channel_info(&body) {
        assert!(!info.arn.is_empty());
        let copied: usize =
            [&info.channel_type, &info.status, &info.version].into_iter().flatten().map(String::len).sum();
        assert_not_amplified(info.name.len() + info.arn.len() + copied, data.len(), 0);
        let _ = info.is_active();
    }
    if let Ok(endpoints) = parse_endpoints(&body) {
        assert!(!endpoints.wss.ends_with('/') && !endpoints.https.ends_with('/'));
        assert_not_amplified(endpoints.wss.len() + endpoints.https.len(), data.len(), 0);
    }
    if let Ok(arn) = parse_create_reply(&body) {
        assert!(!arn.is_empty());
    }
    if let Ok(servers) = parse_ice_server_list(&body) {
        let copied: usize = servers
            .iter()
            .map(|s| {
                assert!(!s.uris.is_empty());
                s.uris.iter().map(String::len).sum::<usize>() + s.username.len() + s.password.len()
            })
            .sum();
        assert_not_amplified(copied, data.len(), 0);
        let _ = refresh_after(&servers);
    }
}

/// An error reply: fields status (2 bytes, little endian), `x-amzn-ErrorType`,
/// `x-amzn-RequestId` and body, separated by NUL. The message is bounded and
/// never shows the secret key or session token the body echoes.
pub fn service_error(data: &[u8]) {
    let [status, error_type, request_id, body] = fields::<4>(data);
    let status = match *status {
        [low, high, ..] => u16::from_le_bytes([low, high]),
        _ => 400,
    };
    let mut headers = Vec::new();
    for (name, value) in [("x-amzn-ErrorType", error_type), ("x-amzn-RequestId", request_id)] {
        if let Ok(value) = std::str::from_utf8(value)
            && !value.is_empty()
        {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    let echoed_in_headers = headers.iter().any(|(_, v)| v.contains(SECRET) || v.contains(TOKEN));
    let response = HttpResponse { status, headers, body: body.to_vec() };
    let credentials = Credentials::new("AKIDEXAMPLE", SECRET, Some(TOKEN));
    let error = error_from_response(&response, &credentials.redactor());
    assert!(error.message().chars().count() <= 515, "message of {} characters", error.message().chars().count());
    let shown = format!("{error} {error:?}");
    assert!(echoed_in_headers || !(shown.contains(SECRET) || shown.contains(TOKEN)), "a secret in {shown:?}");
    if let AwsError::NotFound(e) | AwsError::AccessDenied(e) | AwsError::Throttled(e) = &error {
        assert_eq!(e.status, status);
    }
    let _ = (error.kind_name(), error.is_transient(), is_clock_skew_message(&response.body_text()));
}

/// An HTTP `Date` header: what parses is after the epoch, and is learnt as the
/// clock skew relative to a fixed local time.
pub fn http_date(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = parse_http_date(text);
    let local = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let skew = ClockSkew::new();
    assert_eq!(skew.learn(text, local).is_some(), parsed.is_some());
    if let Some(server) = parsed {
        assert!(server >= UNIX_EPOCH);
        let corrected: SystemTime = skew.apply(local);
        if server.duration_since(UNIX_EPOCH).is_ok_and(|d| d.as_millis() < i64::MAX as u128) {
            assert_eq!(corrected, server, "the skew maps local time onto the server's");
        }
    }
}

/// The endpoint cache file: what loads is plausible, and no larger than the file.
pub fn endpoint_cache(data: &[u8]) {
    let entries = parse_file(data, Path::new("fuzz"));
    let mut copied = 0;
    for ((channel, _role), entry) in &entries {
        assert!(!channel.is_empty());
        assert!(validate_channel_arn(&entry.arn).is_ok());
        assert!(entry.endpoints.wss.starts_with("ws"));
        assert!(entry.endpoints.https.starts_with("http"));
        copied += channel.len() + entry.arn.len() + entry.endpoints.wss.len() + entry.endpoints.https.len();
    }
    assert_not_amplified(copied, data.len(), 0);
}
