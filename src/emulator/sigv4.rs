//! Server-side SigV4 verification (spec §2.1 "Server-side verification", §2.3),
//! written here from the algorithm with `hmac` and `sha2` and sharing nothing
//! with the client's signer, so that a mistake in one shows up against the other.
//!
//! Two forms are checked: a presigned URL (the WebSocket upgrade: `X-Amz-*`
//! query parameters, only `host` signed, empty-payload hash) and an
//! `Authorization` header (the control plane and GetIceServerConfig). Failures
//! carry the service's message texts; clients search the first words of the
//! clock ones (`Signature expired`, `Signature not yet current`) to learn skew.

use super::clock::amz_date;
use super::clock::parse_amz_date;
use super::http::percent_decode;
use hmac::{Hmac, KeyInit, Mac};
use hyper::HeaderMap;
use sha2::{Digest, Sha256};

/// The signing name of the signaling service and its control plane (spec §1.4).
pub(super) const SERVICE: &str = "kinesisvideo";
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";
/// SHA-256 of the empty string: the payload hash of a presigned GET (spec §2.1 step 7).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Longest accepted `X-Amz-Expires`, one week (spec §2.1, §10.9).
pub(super) const MAX_EXPIRES_SECS: u64 = 604_800;
/// Allowed distance between a request's date and the emulator's clock.
pub(super) const MAX_SKEW_SECS: i64 = 300;

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. \
Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
pub(super) const UNKNOWN_KEY: &str = "The security token included in the request is invalid.";

/// Why a request's signature was refused; the text goes into the 403 body,
/// the flag says whether it is an expired session token
/// (`ExpiredTokenException` rather than `AccessDeniedException`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AuthError(pub(super) String, pub(super) bool);

impl AuthError {
    fn new(message: impl Into<String>) -> AuthError {
        AuthError(message.into(), false)
    }

    /// Whether the request's session token has expired.
    pub(super) fn is_expired_token(&self) -> bool {
        self.1
    }
}

/// What the verifier is checked against.
pub(super) struct Verifier<'a> {
    /// Accepted (access key id, secret access key) pairs.
    pub(super) keys: &'a [(String, String)],
    /// Temporary keys issued by the emulated IoT credentials provider.
    pub(super) issued: Option<&'a super::iot::IotState>,
    /// The emulator's region; credential scopes must name it.
    pub(super) region: &'a str,
    /// The emulator's clock, epoch seconds.
    pub(super) now: i64,
}

/// The parts of an HTTP request a signature covers.
pub(super) struct SignedRequest<'a> {
    pub(super) method: &'a str,
    /// The path as received (still percent-encoded), `/` when empty.
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) headers: &'a HeaderMap,
}

/// Whether the request carries any SigV4 material (header or query).
pub(super) fn is_signed(request: &SignedRequest<'_>) -> bool {
    request.headers.contains_key(hyper::header::AUTHORIZATION)
        || raw_pairs(request.query).any(|(name, _)| name == "X-Amz-Signature" || name == "X-Amz-Credential")
}

fn raw_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Decodes every query parameter; a broken escape is a signing error.
fn decoded_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, AuthError> {
    raw_pairs(query)
        .map(|(name, value)| match (percent_decode(name), percent_decode(value)) {
            (Some(name), Some(value)) => Ok((name, value)),
            _ => Err(AuthError::new("The query string is not valid percent-encoded UTF-8.")),
        })
        .collect()
}

/// Percent-encodes all but the RFC 3986 unreserved characters (and `/` when
/// `keep_slash`), upper-case hex, as SigV4 canonical forms require.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => encoded.push(char::from(byte)),
            b'/' if keep_slash => encoded.push('/'),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// The canonical query string: decoded pairs re-encoded, sorted by name then value.
fn canonical_query(pairs: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> =
        pairs.iter().map(|(name, value)| (uri_encode(name, false), uri_encode(value, false))).collect();
    encoded.sort();
    encoded.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

/// Canonical URIs a signer may have used: the received path encoded once more
/// (the AWS SDKs' default for every service but S3), and the path as received
/// (what the JS SDK's URL presigner does). Identical for plain paths.
fn canonical_uris(path: &str) -> Vec<String> {
    let path = if path.is_empty() { "/" } else { path };
    let double = uri_encode(path, true);
    if double == path { vec![double] } else { vec![double, path.to_owned()] }
}

/// `name:value\n` for each signed header, values trimmed with inner runs of
/// spaces collapsed and repeated headers joined with commas.
fn canonical_headers(signed: &[&str], headers: &HeaderMap) -> Result<String, AuthError> {
    let mut block = String::new();
    for name in signed {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|value| {
                let text = String::from_utf8_lossy(value.as_bytes());
                text.split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(AuthError::new(format!("The header '{name}' is listed in SignedHeaders but not sent.")));
        }
        block.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(block)
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(super) fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// kSigning of spec §2.1 step 10.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    hmac(&k_service, TERMINATOR)
}

/// A canonical request and the string to sign built from it.
#[derive(Debug)]
struct Canonical {
    request: String,
    string_to_sign: String,
}

/// What a canonical request is built from (spec §2.1 step 8).
struct Parts<'a> {
    method: &'a str,
    uri: &'a str,
    query: &'a str,
    /// `name:value\n` lines.
    headers: &'a str,
    signed_headers: &'a str,
    payload_hash: &'a str,
    amz_date: &'a str,
    scope: &'a str,
}

fn canonical(parts: &Parts<'_>) -> Canonical {
    let Parts { method, uri, query, headers, signed_headers, payload_hash, amz_date, scope } = parts;
    let request = format!("{method}\n{uri}\n{query}\n{headers}\n{signed_headers}\n{payload_hash}");
    let string_to_sign = format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(request.as_bytes()));
    Canonical { request, string_to_sign }
}

/// How a request's date is checked against the clock.
#[derive(Debug, Clone, Copy)]
enum TimeRule {
    /// Header auth: within five minutes either way.
    Skew,
    /// Presigned URL: not more than five minutes ahead, and not past its expiry.
    Expires(u64),
}

/// The SigV4 values of one request, whichever way they came.
struct Presented<'a> {
    credential: &'a str,
    amz_date: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    /// Canonical query string (without `X-Amz-Signature`).
    query: String,
    payload_hash: String,
    time: TimeRule,
}

impl Verifier<'_> {
    /// Checks whichever signature the request carries: the `Authorization`
    /// header when present, else presigned query parameters. `body` is the
    /// request body (empty for the upgrade).
    pub(super) fn verify(&self, request: &SignedRequest<'_>, body: &[u8]) -> Result<(), AuthError> {
        if let Some(authorization) = request.headers.get(hyper::header::AUTHORIZATION) {
            let authorization = authorization
                .to_str()
                .map_err(|_| AuthError::new("The Authorization header is not ASCII."))?
                .to_owned();
            self.verify_header(request, &authorization, body)
        } else if is_signed(request) {
            self.verify_presigned(request)
        } else {
            Err(AuthError::new("Missing Authentication Token"))
        }
    }

    fn verify_presigned(&self, request: &SignedRequest<'_>) -> Result<(), AuthError> {
        let pairs = decoded_pairs(request.query)?;
        let param = |name: &str| pairs.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
        let missing: Vec<&str> =
            ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"]
                .into_iter()
                .filter(|name| param(name).is_none())
                .collect();
        if !missing.is_empty() {
            return Err(AuthError::new(format!(
                "AWS query-string parameters must include {}. Re-examine the query-string parameters.",
                missing.iter().map(|name| format!("'{name}'")).collect::<Vec<_>>().join(", ")
            )));
        }
        let algorithm = param("X-Amz-Algorithm").unwrap_or_default();
        if algorithm != ALGORITHM {
            return Err(AuthError::new(format!("Unsupported X-Amz-Algorithm '{algorithm}': only {ALGORITHM}.")));
        }
        let expires = match param("X-Amz-Expires") {
            None => return Err(AuthError::new("X-Amz-Expires is required in a presigned URL.")),
            Some(text) => text
                .parse::<u64>()
                .map_err(|_| AuthError::new(format!("X-Amz-Expires should be a number, not '{text}'.")))?,
        };
        if expires > MAX_EXPIRES_SECS {
            return Err(AuthError::new(format!(
                "X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES_SECS}"
            )));
        }
        let unsigned: Vec<(String, String)> =
            pairs.iter().filter(|(name, _)| name != "X-Amz-Signature").cloned().collect();
        self.check(
            request,
            Presented {
                credential: param("X-Amz-Credential").unwrap_or_default(),
                amz_date: param("X-Amz-Date").unwrap_or_default(),
                signed_headers: param("X-Amz-SignedHeaders").unwrap_or_default(),
                signature: param("X-Amz-Signature").unwrap_or_default(),
                query: canonical_query(&unsigned),
                payload_hash: EMPTY_SHA256.to_owned(),
                time: TimeRule::Expires(expires),
            },
        )
    }

    fn verify_header(&self, request: &SignedRequest<'_>, authorization: &str, body: &[u8]) -> Result<(), AuthError> {
        let (algorithm, rest) = authorization.trim().split_once(' ').unwrap_or((authorization, ""));
        if algorithm != ALGORITHM {
            return Err(AuthError::new(format!(
                "Unsupported Authorization algorithm '{algorithm}': only {ALGORITHM}."
            )));
        }
        let component =
            |wanted: &str| rest.split(',').map(str::trim).find_map(|part| part.strip_prefix(wanted)?.strip_prefix('='));
        let missing: Vec<String> = ["Credential", "SignedHeaders", "Signature"]
            .into_iter()
            .filter(|name| component(name).is_none())
            .map(|name| format!("Authorization header requires '{name}' parameter."))
            .collect();
        let amz_date = request.headers.get("x-amz-date").and_then(|value| value.to_str().ok());
        let mut problems = missing;
        if amz_date.is_none() {
            problems
                .push("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into());
        }
        if !problems.is_empty() {
            return Err(AuthError::new(format!("{} Authorization={authorization}", problems.join(" "))));
        }
        let body_hash = sha256_hex(body);
        let payload_hash = match request.headers.get("x-amz-content-sha256").and_then(|value| value.to_str().ok()) {
            None => body_hash,
            Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD".to_owned(),
            Some(claimed) if claimed.eq_ignore_ascii_case(&body_hash) => claimed.to_owned(),
            Some(_) => {
                return Err(AuthError::new(
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
        };
        self.check(
            request,
            Presented {
                credential: component("Credential").unwrap_or_default(),
                amz_date: amz_date.unwrap_or_default(),
                signed_headers: component("SignedHeaders").unwrap_or_default(),
                signature: component("Signature").unwrap_or_default(),
                query: canonical_query(&decoded_pairs(request.query)?),
                payload_hash,
                time: TimeRule::Skew,
            },
        )
    }

    /// The checks common to both forms, in the order the service reports them:
    /// scope, key, date, signed headers, signature.
    fn check(&self, request: &SignedRequest<'_>, presented: Presented<'_>) -> Result<(), AuthError> {
        let parts: Vec<&str> = presented.credential.split('/').collect();
        let [access_key, scope_date, scope_region, scope_service, terminator] = parts[..] else {
            return Err(AuthError::new(format!(
                "Credential should be ACCESS_KEY_ID/yyyymmdd/region/{SERVICE}/{TERMINATOR}, not '{}'.",
                presented.credential
            )));
        };
        if terminator != TERMINATOR {
            return Err(AuthError::new(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'. "
            )));
        }
        if scope_service != SERVICE {
            return Err(AuthError::new(format!("Credential should be scoped to correct service: '{SERVICE}'. ")));
        }
        if scope_region != self.region {
            return Err(AuthError::new(format!(
                "Credential should be scoped to a valid region, not '{scope_region}'. "
            )));
        }
        let issued = || match self.issued?.lookup(access_key, session_token(request).as_deref(), self.now)? {
            super::iot::IssuedKey::Valid(secret) => Some(Ok(secret)),
            super::iot::IssuedKey::Refused(text) => {
                Some(Err(AuthError(text.to_owned(), text == super::iot::EXPIRED_TOKEN)))
            }
        };
        let secret = match self.keys.iter().find(|(id, _)| id == access_key) {
            Some((_, secret)) => secret.clone(),
            None => issued().unwrap_or_else(|| Err(AuthError::new(UNKNOWN_KEY)))?,
        };
        let Some(date) = parse_amz_date(presented.amz_date) else {
            return Err(AuthError::new(format!(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\", not '{}'.",
                presented.amz_date
            )));
        };
        if scope_date != &presented.amz_date[..8] {
            return Err(AuthError::new(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
                 '{scope_date}' != '{}', from '{}'.",
                &presented.amz_date[..8],
                presented.amz_date
            )));
        }
        self.check_time(presented.amz_date, date, presented.time)?;
        let signed: Vec<&str> = presented.signed_headers.split(';').collect();
        if !signed.contains(&"host") {
            return Err(AuthError::new("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."));
        }
        let headers = canonical_headers(&signed, request.headers)?;
        let scope = format!("{scope_date}/{scope_region}/{SERVICE}/{TERMINATOR}");
        let key = signing_key(&secret, scope_date, scope_region, SERVICE);
        let provided = decode_hex(presented.signature);
        let candidates: Vec<Canonical> = canonical_uris(request.path)
            .iter()
            .map(|uri| {
                canonical(&Parts {
                    method: request.method,
                    uri,
                    query: &presented.query,
                    headers: &headers,
                    signed_headers: presented.signed_headers,
                    payload_hash: &presented.payload_hash,
                    amz_date: presented.amz_date,
                    scope: &scope,
                })
            })
            .collect();
        let matches = |candidate: &Canonical| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
            mac.update(candidate.string_to_sign.as_bytes());
            provided.as_deref().is_some_and(|provided| mac.verify_slice(provided).is_ok())
        };
        if candidates.iter().any(matches) {
            return Ok(());
        }
        let expected = &candidates[0];
        Err(AuthError::new(format!(
            "{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n'{}'\n\n\
             The String-to-Sign should have been\n'{}'\n",
            expected.request, expected.string_to_sign
        )))
    }

    fn check_time(&self, amz: &str, date: i64, rule: TimeRule) -> Result<(), AuthError> {
        let now = self.now;
        if date > now + MAX_SKEW_SECS {
            return Err(AuthError::new(format!(
                "Signature not yet current: {amz} is still later than {} ({} + 5 min.)",
                amz_date(now + MAX_SKEW_SECS),
                amz_date(now)
            )));
        }
        match rule {
            TimeRule::Skew if date < now - MAX_SKEW_SECS => Err(AuthError::new(format!(
                "Signature expired: {amz} is now earlier than {} ({} - 5 min.)",
                amz_date(now - MAX_SKEW_SECS),
                amz_date(now)
            ))),
            TimeRule::Expires(expires) if now > date.saturating_add_unsigned(expires) => Err(AuthError::new(format!(
                "Signature expired: {amz} is now earlier than {} ({} - {expires} sec.)",
                amz_date(now.saturating_sub_unsigned(expires)),
                amz_date(now)
            ))),
            _ => Ok(()),
        }
    }
}

/// The session token of a request: the `x-amz-security-token` header, or
/// the `X-Amz-Security-Token` query parameter of a presigned URL.
fn session_token<'a>(request: &'a SignedRequest<'_>) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(token) = request.headers.get("x-amz-security-token").and_then(|value| value.to_str().ok()) {
        return Some(token.into());
    }
    raw_pairs(request.query)
        .find(|(name, _)| *name == "X-Amz-Security-Token")
        .and_then(|(_, value)| percent_decode(value))
        .map(Into::into)
}

/// 64 hex digits → 32 bytes; `None` otherwise.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len()).step_by(2).map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    /// Spec §2.2 vector set A: the JS SDK's presigner test.
    const JS_DATE: i64 = 1_575_158_400;
    const JS_KEY: &str = "AKIA4F7WJQR7FMMWMNXI";
    const JS_SECRET: &str = "FakeSecretKey";
    const JS_WITH_TOKEN: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201%2Fus-west-2%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20191201T000000Z&X-Amz-Expires=299&X-Amz-Security-Token=FakeSessionToken&X-Amz-Signature=fc268038be276315822b4f73eafd28ee3a5632a2a35fdb0a88db9a42b13d6c92&X-Amz-SignedHeaders=host&X-Amz-TestParam=test-param-value";
    const JS_NO_TOKEN: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201%2Fus-west-2%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20191201T000000Z&X-Amz-Expires=299&X-Amz-Signature=be1e78950d956a8a9a1997417099ddbd7455619f3d08c4ad20e1e272179ca695&X-Amz-SignedHeaders=host&X-Amz-TestParam=test-param-value";

    fn host_headers(host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_str(host).unwrap());
        headers
    }

    fn keys() -> Vec<(String, String)> {
        vec![("OTHERKEY".into(), "other".into()), (JS_KEY.into(), JS_SECRET.into())]
    }

    fn verify_at(now: i64, path: &str, query: &str, keys: &[(String, String)], region: &str) -> Result<(), AuthError> {
        let headers = host_headers("kvs.awsamazon.com");
        let verifier = Verifier { keys, issued: None, region, now };
        verifier.verify(&SignedRequest { method: "GET", path, query: Some(query), headers: &headers }, b"")
    }

    #[test]
    fn js_vector_canonical_request_and_signature_are_recomputed() {
        // Rebuild the spec's canonical request from the decoded query.
        let pairs = decoded_pairs(Some(JS_WITH_TOKEN)).unwrap();
        let unsigned: Vec<_> = pairs.into_iter().filter(|(name, _)| name != "X-Amz-Signature").collect();
        let built = canonical(&Parts {
            method: "GET",
            uri: "/",
            query: &canonical_query(&unsigned),
            headers: "host:kvs.awsamazon.com\n",
            signed_headers: "host",
            payload_hash: EMPTY_SHA256,
            amz_date: "20191201T000000Z",
            scope: "20191201/us-west-2/kinesisvideo/aws4_request",
        });
        let spec_request = "GET\n/\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA4F7WJQR7FMMWMNXI%2F20191201%2Fus-west-2%2Fkinesisvideo%2Faws4_request&X-Amz-Date=20191201T000000Z&X-Amz-Expires=299&X-Amz-Security-Token=FakeSessionToken&X-Amz-SignedHeaders=host&X-Amz-TestParam=test-param-value\nhost:kvs.awsamazon.com\n\nhost\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(built.request, spec_request);
        assert_eq!(
            built.string_to_sign,
            "AWS4-HMAC-SHA256\n20191201T000000Z\n20191201/us-west-2/kinesisvideo/aws4_request\n\
             15dd016816b0ab9d86e9a923d4adaaeaeeb4c7e961eb8c334bd8df0cc034bda8"
        );
        let key = signing_key(JS_SECRET, "20191201", "us-west-2", SERVICE);
        assert_eq!(
            hex(&hmac(&key, &built.string_to_sign)),
            "fc268038be276315822b4f73eafd28ee3a5632a2a35fdb0a88db9a42b13d6c92"
        );
    }

    #[test]
    fn js_vectors_verify() {
        let keys = keys();
        assert_eq!(verify_at(JS_DATE + 10, "/", JS_WITH_TOKEN, &keys, "us-west-2"), Ok(()));
        assert_eq!(verify_at(JS_DATE + 299, "/", JS_NO_TOKEN, &keys, "us-west-2"), Ok(()));
        // The JS SDK's path vector: same parameters, another signature.
        let with_path = JS_WITH_TOKEN.replace(
            "fc268038be276315822b4f73eafd28ee3a5632a2a35fdb0a88db9a42b13d6c92",
            "0bf3df6ca23d8d82f688e8dbfb90d69e74843d40038541b1721c545eef7612a4",
        );
        assert_eq!(verify_at(JS_DATE, "/path/path/path", &with_path, &keys, "us-west-2"), Ok(()));
        // Parameter order on the wire does not matter.
        let mut shuffled: Vec<&str> = JS_NO_TOKEN.split('&').collect();
        shuffled.reverse();
        assert_eq!(verify_at(JS_DATE, "/", &shuffled.join("&"), &keys, "us-west-2"), Ok(()));
    }

    #[test]
    fn js_vector_refusals() {
        let keys = keys();
        let message = |result: Result<(), AuthError>| result.unwrap_err().0;
        // Wrong secret, tampered parameter, wrong path.
        let wrong_secret = vec![(JS_KEY.to_owned(), "NotTheSecret".to_owned())];
        assert!(
            message(verify_at(JS_DATE, "/", JS_WITH_TOKEN, &wrong_secret, "us-west-2"))
                .starts_with("The request signature we calculated does not match the signature you provided.")
        );
        let tampered = JS_WITH_TOKEN.replace("test-param-value", "other-value");
        let error = message(verify_at(JS_DATE, "/", &tampered, &keys, "us-west-2"));
        assert!(error.contains("X-Amz-TestParam=other-value\nhost:kvs.awsamazon.com\n"), "{error}");
        assert!(message(verify_at(JS_DATE, "/other", JS_WITH_TOKEN, &keys, "us-west-2")).starts_with("The request"));
        // Unknown key, other region.
        assert_eq!(message(verify_at(JS_DATE, "/", JS_WITH_TOKEN, &keys[..1], "us-west-2")), UNKNOWN_KEY);
        assert_eq!(
            message(verify_at(JS_DATE, "/", JS_WITH_TOKEN, &keys, "eu-west-1")),
            "Credential should be scoped to a valid region, not 'us-west-2'. "
        );
        // Expired: 299 s after the date is the last valid second.
        assert_eq!(
            message(verify_at(JS_DATE + 300, "/", JS_WITH_TOKEN, &keys, "us-west-2")),
            "Signature expired: 20191201T000000Z is now earlier than 20191201T000001Z (20191201T000500Z - 299 sec.)"
        );
        // Signed more than five minutes in the future.
        assert_eq!(
            message(verify_at(JS_DATE - 301, "/", JS_WITH_TOKEN, &keys, "us-west-2")),
            "Signature not yet current: 20191201T000000Z is still later than 20191130T235959Z \
             (20191130T235459Z + 5 min.)"
        );
        assert_eq!(verify_at(JS_DATE - 300, "/", JS_WITH_TOKEN, &keys, "us-west-2"), Ok(()));
        // Missing parameters.
        let error = message(verify_at(JS_DATE, "/", "X-Amz-Credential=a", &keys, "us-west-2"));
        assert!(error.contains("'X-Amz-Algorithm', 'X-Amz-Date', 'X-Amz-SignedHeaders', 'X-Amz-Signature'"), "{error}");
        let long = JS_WITH_TOKEN.replace("X-Amz-Expires=299", "X-Amz-Expires=604801");
        assert!(message(verify_at(JS_DATE, "/", &long, &keys, "us-west-2")).starts_with("X-Amz-Expires must be less"));
    }

    /// A header-signed POST built here by hand, as an AWS SDK would.
    fn sign_post(secret: &str, date: &str, body: &[u8]) -> HeaderMap {
        let mut headers = host_headers("127.0.0.1:4566");
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-amz-date", HeaderValue::from_str(date).unwrap());
        let signed = "content-type;host;x-amz-date";
        let block = canonical_headers(&["content-type", "host", "x-amz-date"], &headers).unwrap();
        let scope = format!("{}/us-west-2/kinesisvideo/aws4_request", &date[..8]);
        let built = canonical(&Parts {
            method: "POST",
            uri: "/describeSignalingChannel",
            query: "",
            headers: &block,
            signed_headers: signed,
            payload_hash: &sha256_hex(body),
            amz_date: date,
            scope: &scope,
        });
        let signature = hex(&hmac(&signing_key(secret, &date[..8], "us-west-2", SERVICE), &built.string_to_sign));
        let authorization =
            format!("AWS4-HMAC-SHA256 Credential=AKID/{scope}, SignedHeaders={signed}, Signature={signature}");
        headers.insert("authorization", HeaderValue::from_str(&authorization).unwrap());
        headers
    }

    #[test]
    fn header_auth_accepts_and_refuses() {
        let keys = vec![("AKID".to_owned(), "secret".to_owned())];
        let body = br#"{"ChannelName":"demo"}"#;
        let now = JS_DATE;
        let verify = |headers: &HeaderMap, body: &[u8], now: i64| {
            let verifier = Verifier { keys: &keys, issued: None, region: "us-west-2", now };
            let request = SignedRequest { method: "POST", path: "/describeSignalingChannel", query: None, headers };
            verifier.verify(&request, body).map_err(|error| error.0)
        };
        let headers = sign_post("secret", "20191201T000000Z", body);
        assert_eq!(verify(&headers, body, now), Ok(()));
        assert_eq!(verify(&headers, body, now + 300), Ok(()));
        assert!(verify(&headers, b"{}", now).unwrap_err().starts_with("The request signature we calculated"));
        assert!(
            verify(&sign_post("wrong", "20191201T000000Z", body), body, now).unwrap_err().starts_with("The request")
        );
        assert_eq!(
            verify(&headers, body, now + 301).unwrap_err(),
            "Signature expired: 20191201T000000Z is now earlier than 20191201T000001Z (20191201T000501Z - 5 min.)"
        );
        assert!(verify(&headers, body, now - 301).unwrap_err().starts_with("Signature not yet current: "));

        let mut with_hash = headers.clone();
        with_hash.insert("x-amz-content-sha256", HeaderValue::from_static("00"));
        assert!(verify(&with_hash, body, now).unwrap_err().contains("x-amz-content-sha256"));
        let mut no_date = headers.clone();
        no_date.remove("x-amz-date");
        assert!(verify(&no_date, body, now).unwrap_err().contains("'X-Amz-Date' or a 'Date' header"));
        assert_eq!(verify(&host_headers("h"), body, now).unwrap_err(), "Missing Authentication Token");
    }

    #[test]
    fn encoding_rules() {
        assert_eq!(uri_encode("a b+c/d~e", false), "a%20b%2Bc%2Fd~e");
        assert_eq!(uri_encode("/r-1/v1/x y", true), "/r-1/v1/x%20y");
        assert_eq!(canonical_uris(""), vec!["/".to_owned()]);
        assert_eq!(canonical_uris("/a%20b"), vec!["/a%2520b".to_owned(), "/a%20b".to_owned()]);
        assert_eq!(
            canonical_query(&[("b".into(), "2".into()), ("a".into(), "x y".into()), ("a".into(), "1".into())]),
            "a=1&a=x%20y&b=2"
        );
        assert_eq!(decode_hex(&"0f".repeat(32)), Some(vec![15; 32]));
        assert_eq!(decode_hex("0f"), None);
        assert_eq!(decode_hex(&"zz".repeat(32)), None);
    }
}
