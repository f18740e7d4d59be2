//! Fuzz targets over what the emulator reads from the network: control-plane
//! requests, the connect query and SigV4 material; see [`crate::fuzzing`].

use super::channels::Endpoint;
use super::clock::{amz_date, http_date, parse_amz_date};
use super::control::{answer, check_arn, check_name, parse_tags};
use super::faults::OPERATIONS;
use super::http::{operation_at, parse_connect_query, parse_object, percent_decode};
use super::sigv4::{SignedRequest, Verifier};
use super::{EmulatorConfig, Shared, lock};
use crate::aws::sigv4::{presign_wss_url, sign_request, uri_encode};
use crate::aws::{Credentials, parse_http_date};
use crate::fuzzing::fields;
use crate::protocol::{validate_channel_arn, validate_client_id};
use hyper::Method;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::mpsc;

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-west-2";
/// 9999-12-31T23:59:59Z, the last second both date forms can write.
const LAST_SECOND: i64 = 253_402_300_799;

/// An emulator's state without a listener or tasks, with one channel `fuzz`
/// and authentication on.
fn shared() -> Shared {
    let config = EmulatorConfig {
        auth: Some(vec![(ACCESS_KEY.to_owned(), SECRET.to_owned())]),
        channels: vec!["fuzz".to_owned()],
        ..EmulatorConfig::default()
    };
    let listen = config.listen;
    let shared = Shared::new(config, listen, None, None, mpsc::unbounded_channel().0, "fuzz".to_owned());
    let _ = shared.create_channel("fuzz", shared.config.message_ttl, Vec::new());
    shared
}

/// `name: value` lines as a header map; lines that are not a valid header are skipped.
fn header_map(lines: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    headers
}

/// An HTTP request: fields target (`/path?query`), header lines and body,
/// separated by NUL; `$ARN` in the body stands for the ARN of the channel
/// `fuzz`. Read as a control-plane call (the operation its path names, or one
/// picked by the input's length), as a WebSocket connect query, and checked
/// for a signature.
pub fn emulator_request(data: &[u8]) {
    let [target, header_lines, body] = fields::<3>(data);
    let Ok(target) = std::str::from_utf8(target) else { return };
    let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
    let headers = header_map(header_lines);
    let shared = shared();
    let arn = lock(&shared.registry).channel_arn("fuzz").unwrap_or_default();
    let body = String::from_utf8_lossy(body).replace("$ARN", &arn);

    let operation = operation_at(&Method::POST, path).unwrap_or(OPERATIONS[data.len() % OPERATIONS.len()]);
    if let Ok(input) = parse_object(body.as_bytes()) {
        if let Ok(reply) = answer(&shared, operation, &headers, &input) {
            assert!(reply.is_object(), "{} replied {reply}", operation.name());
        }
        let _ = parse_tags(&input);
        for (key, value) in &input {
            if let Some(text) = value.as_str() {
                let _ = (check_name(text, key), check_arn(text));
            }
        }
    }

    if let Ok((channel_arn, endpoint)) = parse_connect_query(query) {
        assert!(validate_channel_arn(&channel_arn).is_ok());
        if let Endpoint::Viewer(client_id) = &endpoint {
            assert!(validate_client_id(client_id).is_ok());
        }
    }
    if let Some(decoded) = query.and_then(percent_decode) {
        assert_eq!(percent_decode(&uri_encode(&decoded)).as_ref(), Some(&decoded), "percent-encoding round trip");
    }
    let verifier = Verifier {
        keys: shared.config.auth.as_deref().unwrap_or_default(),
        issued: None,
        region: REGION,
        now: 1_750_000_000,
    };
    for method in ["GET", "POST"] {
        let request = SignedRequest { method, path, query, headers: &headers };
        assert!(verifier.verify(&request, body.as_bytes()).is_err(), "a forged signature was accepted");
    }
}

/// What the client signs, the emulator accepts: fields channel name, client
/// id, body and signing time (8 bytes), separated by NUL. The presigned
/// connect URL (whose query then names the same channel and client) and a
/// header-signed POST both verify.
pub fn emulator_signature(data: &[u8]) {
    let [name, client_id, body, time] = fields::<4>(data);
    let name = String::from_utf8_lossy(name);
    let client_id = String::from_utf8_lossy(client_id);
    let mut seconds = [0; 8];
    for (slot, byte) in seconds.iter_mut().zip(time) {
        *slot = *byte;
    }
    // Any second from 2000 to 2099.
    let now = 946_684_800 + i64::from_le_bytes(seconds).rem_euclid(3_155_760_000);
    let signed_at = UNIX_EPOCH + Duration::from_secs(now.unsigned_abs());
    let credentials = Credentials::new(ACCESS_KEY, SECRET, None);
    let keys = [(ACCESS_KEY.to_owned(), SECRET.to_owned())];
    let verifier = Verifier { keys: &keys, issued: None, region: REGION, now };
    let mut host = HeaderMap::new();
    host.insert("host", HeaderValue::from_static("host.example"));

    let arn = format!("arn:aws:kinesisvideo:{REGION}:123456789012:channel/{name}/1700000000000");
    let mut params = vec![("X-Amz-ChannelARN", arn.as_str())];
    if !client_id.is_empty() {
        params.push(("X-Amz-ClientId", &client_id));
    }
    let url = presign_wss_url("wss://host.example", &params, &credentials, REGION, signed_at).expect("presigns");
    let (_, query) = url.split_once('?').expect("a presigned URL has a query");
    let request = SignedRequest { method: "GET", path: "/", query: Some(query), headers: &host };
    if let Err(error) = verifier.verify(&request, b"") {
        panic!("the emulator refused the client's presigned URL {url}: {}", error.0);
    }
    let expected = (!client_id.is_empty()).then(|| client_id.to_string());
    match parse_connect_query(Some(query)) {
        Ok((channel_arn, endpoint)) => {
            assert_eq!(channel_arn, arn);
            let viewer = match endpoint {
                Endpoint::Master => None,
                Endpoint::Viewer(id) => Some(id),
            };
            assert_eq!(viewer, expected);
        }
        Err(_) => {
            let valid_id = expected.as_deref().is_none_or(|id| validate_client_id(id).is_ok());
            assert!(validate_channel_arn(&arn).is_err() || !valid_id, "a valid connect query was refused: {query}");
        }
    }

    let unsigned = [("host", "host.example"), ("content-type", "application/json")];
    let url = "https://host.example/describeSignalingChannel";
    let signed = sign_request("POST", url, &unsigned, body, &credentials, REGION, signed_at).expect("signs");
    let mut headers = host.clone();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in &signed {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a signed header name is valid");
        headers.insert(name, HeaderValue::from_str(value).expect("a signed header value is valid"));
    }
    let request = SignedRequest { method: "POST", path: "/describeSignalingChannel", query: None, headers: &headers };
    if let Err(error) = verifier.verify(&request, body) {
        panic!("the emulator refused the client's signed POST: {}", error.0);
    }
}

/// Date texts and, from the first 8 bytes, a second up to year 9999: the
/// client's `Date` parser reads the emulator's `Date` headers, and the
/// emulator's SigV4 date parser reads its own `X-Amz-Date` form.
pub fn dates(data: &[u8]) {
    let mut bytes = [0; 8];
    for (slot, byte) in bytes.iter_mut().zip(data) {
        *slot = *byte;
    }
    let second = i64::from_le_bytes(bytes).rem_euclid(LAST_SECOND + 1);
    let expected = UNIX_EPOCH + Duration::from_secs(second.unsigned_abs());
    assert_eq!(parse_http_date(&http_date(second)), Some(expected), "Date round trip of {second}");
    assert_eq!(parse_amz_date(&amz_date(second)), Some(second), "X-Amz-Date round trip of {second}");

    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(parsed) = parse_http_date(text)
        && let Ok(since) = parsed.duration_since(UNIX_EPOCH)
        && let Ok(second) = i64::try_from(since.as_secs())
        && second <= LAST_SECOND
    {
        assert_eq!(parse_http_date(&http_date(second)), Some(parsed), "{text:?} formatted and parsed again");
    }
    if let Some(second) = parse_amz_date(text) {
        assert_eq!(parse_amz_date(&amz_date(second)), Some(second), "{text:?} formatted and parsed again");
    }
}
