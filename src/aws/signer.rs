//! Signing by a backend (the JS SDK's `RequestSigner` idea): a device that
//! holds no AWS credentials has its presigned WebSocket URL and the headers of
//! its control-plane calls made by its own backend, through a
//! [`RequestSigner`]. What a signer returns is checked here before it is used:
//! a bounded length, a URL that parses, `wss://` for the expected host (plain
//! `ws://` only when the endpoint itself is `ws://`, a local emulator), and
//! headers that are valid HTTP and do not replace the request's framing.

use super::redact::Redactor;
use super::sigv4::{self, strip_query};
use super::{AwsError, Credentials};
use crate::protocol::Role;
use futures_util::future::BoxFuture;
use percent_encoding::percent_decode_str;
use std::fmt;
use std::time::{Duration, SystemTime};

/// The longest URL a signer may return (8 KiB): a presigned URL with a
/// session token is about 1.5 KB.
pub const MAX_SIGNED_URL_LEN: usize = 8192;
/// The most headers a signer may return for one request.
pub const MAX_SIGNED_HEADERS: usize = 16;
/// The most bytes of header names and values a signer may return for one request (8 KiB).
pub const MAX_SIGNED_HEADER_BYTES: usize = 8192;
/// How long the client waits for a signer by default (10 s); a signer that
/// does not answer in time fails the attempt with [`SignerError::Failed`].
pub const DEFAULT_SIGNER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client asks a signer to presign: the WebSocket URL of one connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WssSignRequest {
    /// The channel's WSS endpoint for the role (`wss://host[:port][/path]`,
    /// no query; `ws://` for a local emulator). The URL returned must be for
    /// this scheme, host and port.
    pub endpoint: String,
    /// Master or viewer.
    pub role: Role,
    /// `X-Amz-ChannelARN`.
    pub channel_arn: String,
    /// `X-Amz-ClientId` (viewers only).
    pub client_id: Option<String>,
    /// The region to sign for.
    pub region: String,
    /// The time to sign at: local time corrected by the clock skew the client
    /// learnt from the service (a backend may use its own clock).
    pub time: SystemTime,
}

/// What the client asks a signer to sign: one control-plane HTTPS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSignRequest {
    /// `POST`.
    pub method: String,
    /// The full URL, e.g. `https://kinesisvideo.us-west-2.amazonaws.com/describeSignalingChannel`.
    pub url: String,
    /// The headers that will be sent (`host`, `content-type`, `user-agent`);
    /// lower-case names.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The region to sign for.
    pub region: String,
    /// The time to sign at, as in [`WssSignRequest::time`].
    pub time: SystemTime,
}

/// Why a signer's answer was not used. None of them holds what the signer returned in full.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignerError {
    /// The signer reported a failure, or did not answer in time; the text says which.
    Failed(String),
    /// The signer returned more than the client accepts.
    TooLong {
        /// What was returned (bytes, or headers for a header list).
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The returned URL does not parse, is for another host or port, or the
    /// returned headers are not valid HTTP; the text says which (without the query).
    InvalidUrl(String),
    /// The returned URL is not `wss://` while the endpoint is (a downgrade to
    /// cleartext, which would expose the signed URL).
    NotSecure(String),
}

impl fmt::Display for SignerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignerError::Failed(text) => write!(f, "the signer failed: {text}"),
            SignerError::TooLong { len, max } => write!(f, "the signer returned {len}, more than the {max} accepted"),
            SignerError::InvalidUrl(text) => write!(f, "the signer returned an invalid answer: {text}"),
            SignerError::NotSecure(text) => write!(f, "the signer returned an insecure URL: {text}"),
        }
    }
}

impl std::error::Error for SignerError {}

/// Produces presigned WebSocket URLs and signed control-plane requests for a
/// client that holds no credentials, typically by asking the application's
/// backend. Called from the client's tasks (never on the send path): once per
/// connect attempt for the URL, once per control-plane call for the headers.
/// Each call is bounded by the client's signer timeout; an implementation
/// that blocks must do so off the runtime (e.g. `tokio::task::spawn_blocking`).
pub trait RequestSigner: Send + Sync + fmt::Debug {
    /// The presigned URL for `request`: the endpoint with
    /// `X-Amz-ChannelARN` (and `X-Amz-ClientId`) and the SigV4 query
    /// parameters (spec §2.1).
    fn presign_wss_url<'a>(&'a self, request: &'a WssSignRequest) -> BoxFuture<'a, Result<String, SignerError>>;

    /// The headers to add to `request` (`authorization`, `x-amz-date`, and
    /// `x-amz-security-token` with temporary credentials).
    fn sign_request<'a>(
        &'a self,
        request: &'a HttpSignRequest,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, SignerError>>;
}

/// The library's own SigV4 signer behind [`RequestSigner`], with fixed
/// credentials: what a backend written in Rust can run for its devices.
#[derive(Clone)]
pub struct SigV4Signer {
    credentials: Credentials,
}

impl SigV4Signer {
    /// A signer with `credentials`.
    pub fn new(credentials: Credentials) -> SigV4Signer {
        SigV4Signer { credentials }
    }
}

impl fmt::Debug for SigV4Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4Signer").field("credentials", &self.credentials).finish()
    }
}

fn signing_failed(e: AwsError) -> SignerError {
    SignerError::Failed(e.to_string())
}

impl RequestSigner for SigV4Signer {
    fn presign_wss_url<'a>(&'a self, request: &'a WssSignRequest) -> BoxFuture<'a, Result<String, SignerError>> {
        Box::pin(async move {
            let mut params = vec![("X-Amz-ChannelARN", request.channel_arn.as_str())];
            if let Some(client_id) = &request.client_id {
                params.push(("X-Amz-ClientId", client_id.as_str()));
            }
            sigv4::presign_wss_url(&request.endpoint, &params, &self.credentials, &request.region, request.time)
                .map_err(signing_failed)
        })
    }

    fn sign_request<'a>(
        &'a self,
        request: &'a HttpSignRequest,
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, SignerError>> {
        Box::pin(async move {
            let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            sigv4::sign_request(
                &request.method,
                &request.url,
                &headers,
                &request.body,
                &self.credentials,
                &request.region,
                request.time,
            )
            .map_err(signing_failed)
        })
    }
}

/// Scheme, lower-case host and port of a `ws://`/`wss://` URL.
fn origin(url: &str) -> Option<(String, String, u16)> {
    let uri: hyper::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let default = if scheme == "wss" { 443 } else { 80 };
    Some((scheme, authority.host().to_ascii_lowercase(), authority.port_u16().unwrap_or(default)))
}

/// Checks a URL returned for `endpoint`: at most [`MAX_SIGNED_URL_LEN`]
/// bytes, printable ASCII, a URL that parses, `wss://` (or `ws://` when
/// `endpoint` is `ws://`), the endpoint's host and port, and a query.
pub fn check_signed_url(url: &str, endpoint: &str) -> Result<(), SignerError> {
    if url.len() > MAX_SIGNED_URL_LEN {
        return Err(SignerError::TooLong { len: url.len(), max: MAX_SIGNED_URL_LEN });
    }
    let shown = strip_query(url);
    if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SignerError::InvalidUrl(format!(
            "the URL is empty or holds a space, a control or a non-ASCII character ({:?})",
            shown.chars().take(64).collect::<String>()
        )));
    }
    let expected =
        origin(endpoint).ok_or_else(|| SignerError::InvalidUrl(format!("endpoint {:?} does not parse", endpoint)))?;
    let Some(got) = origin(url) else {
        return Err(SignerError::InvalidUrl(format!("{shown:?} is not a ws:// or wss:// URL with a host")));
    };
    match (expected.0.as_str(), got.0.as_str()) {
        ("wss", "wss") | ("ws", "ws") | ("ws", "wss") => {}
        ("wss", _) => {
            return Err(SignerError::NotSecure(format!("{shown:?} is not wss:// (the endpoint is {endpoint})")));
        }
        _ => return Err(SignerError::InvalidUrl(format!("{shown:?} is not a ws:// or wss:// URL"))),
    }
    if (&got.1, got.2) != (&expected.1, expected.2) {
        return Err(SignerError::InvalidUrl(format!(
            "{shown:?} is for {}:{}, not for the endpoint's {}:{}",
            got.1, got.2, expected.1, expected.2
        )));
    }
    if !url.contains('?') {
        return Err(SignerError::InvalidUrl(format!("{shown:?} has no signed query")));
    }
    Ok(())
}

/// Headers a signer must not set: they frame the request.
const FRAMING_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// Checks the headers a signer returned: at most [`MAX_SIGNED_HEADERS`] and
/// [`MAX_SIGNED_HEADER_BYTES`], valid names and values (no CR or LF), none
/// of the framing headers.
pub fn check_signed_headers(headers: &[(String, String)]) -> Result<(), SignerError> {
    if headers.len() > MAX_SIGNED_HEADERS {
        return Err(SignerError::TooLong { len: headers.len(), max: MAX_SIGNED_HEADERS });
    }
    let bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if bytes > MAX_SIGNED_HEADER_BYTES {
        return Err(SignerError::TooLong { len: bytes, max: MAX_SIGNED_HEADER_BYTES });
    }
    for (name, value) in headers {
        let shown: String = name.chars().take(64).collect();
        if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(SignerError::InvalidUrl(format!("header name {shown:?} is not a valid HTTP header name")));
        }
        if FRAMING_HEADERS.iter().any(|framing| framing.eq_ignore_ascii_case(name)) {
            return Err(SignerError::InvalidUrl(format!("header {shown:?} may not be set by a signer")));
        }
        if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            return Err(SignerError::InvalidUrl(format!(
                "the value of header {shown:?} holds a control or non-ASCII character"
            )));
        }
    }
    Ok(())
}

/// Query parameters of a presigned URL that let whoever holds them connect.
const SECRET_QUERY_PARAMS: [&str; 3] = ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token"];

/// A redactor of the secrets in a URL a signer returned: its signature,
/// credential scope and session token.
pub(crate) fn signed_url_redactor(url: &str) -> Redactor {
    let mut redactor = Redactor::default();
    let query = url.split_once('?').map_or("", |(_, query)| query);
    for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        if SECRET_QUERY_PARAMS.iter().any(|secret| secret.eq_ignore_ascii_case(name)) {
            redactor.add(&percent_decode_str(value).decode_utf8_lossy());
        }
    }
    redactor
}

/// A redactor of the secrets in headers a signer returned: the signature of
/// `authorization` and the session token.
pub(crate) fn signed_headers_redactor(headers: &[(String, String)]) -> Redactor {
    let mut redactor = Redactor::default();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("authorization") {
            if let Some((_, signature)) = value.split_once("Signature=") {
                redactor.add(signature.trim());
            }
        } else if name.eq_ignore_ascii_case("x-amz-security-token") {
            redactor.add(value);
        }
    }
    redactor
}

/// Runs `future` (a signer call) for at most `timeout`.
pub(crate) async fn within<T>(
    timeout: Duration,
    future: BoxFuture<'_, Result<T, SignerError>>,
) -> Result<T, SignerError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => Err(SignerError::Failed(format!("no answer within {} ms", timeout.as_millis()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_against_the_endpoint() {
        let ok = "wss://v-1.example.com/?X-Amz-ChannelARN=a&X-Amz-Signature=s";
        assert_eq!(check_signed_url(ok, "wss://v-1.example.com"), Ok(()));
        assert_eq!(check_signed_url("wss://V-1.example.com:443/?a=b", "wss://v-1.example.com"), Ok(()));
        assert_eq!(check_signed_url("ws://127.0.0.1:9/?a=b", "ws://127.0.0.1:9"), Ok(()));
        for downgrade in ["ws://v-1.example.com/?X-Amz-Signature=s", "https://v-1.example.com/?X-Amz-Signature=s"] {
            let result = check_signed_url(downgrade, "wss://v-1.example.com");
            assert!(matches!(&result, Err(SignerError::NotSecure(m)) if !m.contains("X-Amz-Signature")), "{result:?}");
        }
        let too_long = format!("wss://v-1.example.com/?{}", "a".repeat(MAX_SIGNED_URL_LEN));
        assert!(matches!(check_signed_url(&too_long, "wss://v-1.example.com"), Err(SignerError::TooLong { .. })));
        for bad in [
            "",
            "not a url",
            "wss://other.example.com/?a=b",
            "wss://v-1.example.com:8443/?a=b",
            "wss://user@v-1.example.com/?a=b",
            "wss://v-1.example.com/",
            "wss://v-1.example.com/?a=b\r\nHost: x",
        ] {
            assert!(matches!(check_signed_url(bad, "wss://v-1.example.com"), Err(SignerError::InvalidUrl(_))), "{bad}");
        }
    }

    #[test]
    fn headers_are_checked() {
        let good = vec![("authorization".to_owned(), "AWS4-HMAC-SHA256 Signature=abcd".to_owned())];
        assert_eq!(check_signed_headers(&good), Ok(()));
        let many: Vec<_> = (0..17).map(|i| (format!("x-h{i}"), "v".to_owned())).collect();
        assert!(matches!(check_signed_headers(&many), Err(SignerError::TooLong { len: 17, .. })));
        let big = vec![("x-big".to_owned(), "v".repeat(MAX_SIGNED_HEADER_BYTES))];
        assert!(matches!(check_signed_headers(&big), Err(SignerError::TooLong { .. })));
        for bad in [("bad name", "v"), ("host", "evil"), ("x-a", "v\r\nx-b: w"), ("Content-Length", "1")] {
            let headers = vec![(bad.0.to_owned(), bad.1.to_owned())];
            assert!(matches!(check_signed_headers(&headers), Err(SignerError::InvalidUrl(_))), "{bad:?}");
        }
    }

    #[test]
    fn redactors_find_the_secrets() {
        let url = "wss://h/?X-Amz-Signature=0a1b2c3d&X-Amz-Security-Token=Tok%2Fen%3D&X-Amz-ChannelARN=arn";
        let shown = signed_url_redactor(url).scrub("echo 0a1b2c3d Tok/en= arn");
        assert!(!shown.contains("0a1b2c3d") && !shown.contains("Tok/en=") && shown.contains("arn"), "{shown}");
        let headers = vec![
            ("authorization".to_owned(), "AWS4-HMAC-SHA256 Credential=A/x, Signature=feedbeef".to_owned()),
            ("x-amz-security-token".to_owned(), "SessionTok".to_owned()),
        ];
        let shown = signed_headers_redactor(&headers).scrub("feedbeef SessionTok");
        assert!(!shown.contains("feedbeef") && !shown.contains("SessionTok"), "{shown}");
    }
}
