//! The AWS IoT credentials provider: temporary AWS keys for a device that
//! holds only its AWS IoT X.509 certificate, fetched over mutual TLS and
//! refreshed in the background before they expire ([`IotCredentials`] is a
//! [`CredentialsProvider`]; the control plane wraps it in
//! [`super::CachingCredentials`]).
//!
//! # The exchange (as documented by AWS)
//!
//! Sources: AWS IoT Core Developer Guide, "Authorizing direct calls to AWS
//! services using AWS IoT Core credential provider"
//! (<https://docs.aws.amazon.com/iot/latest/developerguide/authorizing-direct-aws.html>),
//! and its example `curl --cert device.pem.crt --key private.pem.key -H
//! "x-amzn-iot-thingname: THING" https://ENDPOINT/role-aliases/ROLE_ALIAS/credentials`;
//! `CreateRoleAlias` in the AWS IoT API Reference for the role alias pattern.
//!
//! ```text
//! GET /role-aliases/{roleAlias}/credentials HTTP/1.1
//! Host: {prefix}.credentials.iot.{region}.amazonaws.com     (port 443; SNI = this host)
//! x-amzn-iot-thingname: {thingName}                          (optional; must be attached to the certificate)
//! -- TLS 1.2+ with the device certificate and its key (mutual TLS); no SigV4 --
//!
//! HTTP/1.1 200 OK
//! Content-Type: application/json
//! {"credentials":{"accessKeyId":"ASIA...","secretAccessKey":"...",
//!                 "sessionToken":"...","expiration":"2024-06-01T12:00:00Z"}}
//! ```
//!
//! * The endpoint is account-specific: `aws iot describe-endpoint
//!   --endpoint-type iot:CredentialProvider`. The server's certificate chains
//!   to the Amazon roots (Amazon Root CA 1); the CA file of the config is
//!   what this client trusts for it.
//! * `roleAlias`: 1-128 characters of `[A-Za-z0-9_=,@-]`. `thingName`: 1-128
//!   of `[A-Za-z0-9:_-]`.
//! * `expiration`: an ISO-8601 (RFC 3339) time; the keys are valid for the
//!   role alias's `credentialDurationSeconds` (900 s to 12 h, default 3600 s).
//! * Refusals: a status with a JSON body `{"message": "..."}`. 400 (a bad
//!   request, e.g. a malformed thing name), 401 (the certificate is not
//!   valid), 403 (the certificate may not assume the role alias, or the thing
//!   is not attached to it: `Invalid thing name passed` was observed), 404
//!   (no such role alias), 429 (throttled), 5xx (the service failed). A
//!   certificate the service does not know may also end the TLS handshake
//!   with an alert instead of a status.
//!
//! # Errors
//!
//! Every failure is an [`AwsError::IotCredentials`] of an [`IotErrorKind`]
//! (with the service's `message`, cut to 512 characters, when it sent one),
//! except a server certificate this client does not trust
//! ([`AwsError::Tls`]), the transport ([`AwsError::Network`],
//! [`AwsError::Timeout`]) and local settings ([`AwsError::Config`]). A reply
//! body longer than [`MAX_RESPONSE_LEN`] is refused unread. No key, token or
//! reply body ever appears in an error or a log line; the service's message
//! does, cut and without control characters.

use super::credentials::{Credentials, CredentialsProvider};
use super::http::HttpClient;
use super::proxy::ProxyConfig;
use super::tls::{ClientIdentity, TlsClient};
use super::{AwsError, cut_for_display};
use crate::log::{Level, log};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TARGET: &str = "aws";

/// Longest reply read from the credentials provider (16 KiB): a reply holds
/// a session token of a few KB.
pub const MAX_RESPONSE_LEN: usize = 16 * 1024;
/// Default bound of one credentials request (connect, TLS, reply).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest role alias and thing name (AWS IoT limits).
const MAX_NAME_LEN: usize = 128;
/// Longest access key id, secret key and session token accepted in a reply.
const MAX_KEY_LEN: usize = 4096;

/// Where the device's private key is. Only PEM files today; a callback that
/// signs the TLS handshake (a PKCS#11 token, a secure element) can be added as
/// another variant without changing the rest of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceKey {
    /// A PEM file: PKCS#8 (`BEGIN PRIVATE KEY`), or with rustls also PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) and SEC1 (`BEGIN EC PRIVATE KEY`).
    PemFile(PathBuf),
}

/// How to reach the AWS IoT credentials provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IotCredentialsConfig {
    /// The account's credentials endpoint, `PREFIX.credentials.iot.REGION.amazonaws.com`,
    /// optionally with `:PORT` (default 443) and an `https://` prefix (a local
    /// emulator: `127.0.0.1:PORT`). Always HTTPS.
    pub endpoint: String,
    /// The role alias whose role the keys are for.
    pub role_alias: String,
    /// Sent as `x-amzn-iot-thingname` when set (the thing must be attached to
    /// the certificate).
    pub thing_name: Option<String>,
    /// The device certificate (PEM; the certificate first, then any intermediates).
    pub certificate: PathBuf,
    /// The device's private key.
    pub private_key: DeviceKey,
    /// A PEM file of the CAs trusted for the endpoint's certificate (the
    /// Amazon roots for the real service); `None` uses the built-in roots.
    pub ca_bundle: Option<PathBuf>,
    /// Bound of one request; default [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// Dead-link deadline of the request's socket (see
    /// `ClientConfig::tcp_user_timeout`); default 5 s, zero for the system's.
    pub tcp_user_timeout: Duration,
    /// The HTTPS proxy of the request (a `CONNECT` tunnel, the mutual TLS
    /// inside it), as for the client's other connections; default direct.
    pub proxy: ProxyConfig,
    /// Appended to the library's `User-Agent`, as on the client's other
    /// requests (1-256 printable ASCII characters).
    pub user_agent_suffix: Option<String>,
}

impl IotCredentialsConfig {
    /// A configuration with the default timeouts and the built-in roots.
    pub fn new(
        endpoint: &str,
        role_alias: &str,
        thing_name: Option<&str>,
        certificate: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> IotCredentialsConfig {
        IotCredentialsConfig {
            endpoint: endpoint.to_owned(),
            role_alias: role_alias.to_owned(),
            thing_name: thing_name.map(str::to_owned),
            certificate: certificate.into(),
            private_key: DeviceKey::PemFile(private_key.into()),
            ca_bundle: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            tcp_user_timeout: crate::tcp::DEFAULT_TCP_USER_TIMEOUT,
            proxy: ProxyConfig::default(),
            user_agent_suffix: None,
        }
    }

    /// `https://HOST[:PORT]/role-aliases/ROLE_ALIAS/credentials`, after the
    /// endpoint, role alias and thing name are checked ([`AwsError::Config`]).
    pub fn url(&self) -> Result<String, AwsError> {
        let bad = |what: String| Err(AwsError::Config(what));
        let endpoint = self.endpoint.trim();
        let host = endpoint.strip_prefix("https://").unwrap_or(endpoint).trim_end_matches('/');
        if host.is_empty()
            || host.contains("://")
            || host.contains(['/', '@', '?', '#'])
            || host.contains(|c: char| c.is_whitespace() || c.is_control())
        {
            return bad(format!(
                "IoT credentials endpoint {:?} must be HOST or HOST:PORT (e.g. PREFIX.credentials.iot.REGION.amazonaws.com)",
                self.endpoint
            ));
        }
        let alias_ok = |c: char| c.is_ascii_alphanumeric() || "_=,@-".contains(c);
        if self.role_alias.is_empty() || self.role_alias.len() > MAX_NAME_LEN || !self.role_alias.chars().all(alias_ok)
        {
            return bad(format!("role alias {:?} must be 1-128 characters of A-Z a-z 0-9 _ = , @ -", self.role_alias));
        }
        if let Some(thing) = &self.thing_name {
            let thing_ok = |c: char| c.is_ascii_alphanumeric() || ":_-".contains(c);
            if thing.is_empty() || thing.len() > MAX_NAME_LEN || !thing.chars().all(thing_ok) {
                return bad(format!("thing name {thing:?} must be 1-128 characters of A-Z a-z 0-9 : _ -"));
            }
        }
        Ok(format!("https://{host}/role-aliases/{}/credentials", self.role_alias))
    }
}

/// What kind of failure an [`IotError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IotErrorKind {
    /// The service refused the device certificate: a TLS alert during the
    /// handshake (unknown CA, bad, revoked or missing certificate) or HTTP 401.
    CertificateRefused,
    /// HTTP 403: the certificate may not assume the role alias, or the thing
    /// name is not attached to it.
    Forbidden,
    /// HTTP 404: no such role alias.
    UnknownRoleAlias,
    /// HTTP 429.
    Throttled,
    /// HTTP 400: the service found the request malformed.
    InvalidRequest,
    /// HTTP 5xx, or another unexpected status.
    ServerError,
    /// A 200 reply without the documented credentials (not JSON, a missing
    /// or oversized field, an unreadable or past expiration).
    BadResponse,
}

impl IotErrorKind {
    /// A short stable name, e.g. `"certificate_refused"`.
    pub fn name(self) -> &'static str {
        match self {
            IotErrorKind::CertificateRefused => "certificate_refused",
            IotErrorKind::Forbidden => "forbidden",
            IotErrorKind::UnknownRoleAlias => "unknown_role_alias",
            IotErrorKind::Throttled => "throttled",
            IotErrorKind::InvalidRequest => "invalid_request",
            IotErrorKind::ServerError => "server_error",
            IotErrorKind::BadResponse => "bad_response",
        }
    }
}

/// A failure of the AWS IoT credentials provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IotError {
    /// What went wrong.
    pub kind: IotErrorKind,
    /// The HTTP status, when the service answered.
    pub status: Option<u16>,
    /// The service's message, or what this client found wrong. Never holds a
    /// key, a token or the body of a success reply.
    pub message: String,
}

impl fmt::Display for IotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            IotErrorKind::CertificateRefused => "the device certificate was refused",
            IotErrorKind::Forbidden => "the certificate may not assume the role alias",
            IotErrorKind::UnknownRoleAlias => "unknown role alias",
            IotErrorKind::Throttled => "throttled",
            IotErrorKind::InvalidRequest => "the request was refused as invalid",
            IotErrorKind::ServerError => "the service failed",
            IotErrorKind::BadResponse => "unusable reply",
        };
        write!(f, "IoT credentials provider: {what}")?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {status})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

fn iot_error(kind: IotErrorKind, status: Option<u16>, message: impl Into<String>) -> AwsError {
    AwsError::IotCredentials(IotError { kind, status, message: message.into() })
}

/// Credentials from the AWS IoT credentials provider. Each fetch makes one
/// request (the caching layer decides when); cheap to share.
pub struct IotCredentials {
    http: HttpClient,
    url: String,
    thing_name: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for IotCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IotCredentials")
            .field("url", &self.url)
            .field("thing_name", &self.thing_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl IotCredentials {
    /// Checks `config` and loads the certificate, the key and the CA file;
    /// any problem is an [`AwsError::Config`] naming the setting or file.
    /// Makes no request yet.
    pub fn new(config: &IotCredentialsConfig) -> Result<IotCredentials, AwsError> {
        let url = config.url()?;
        let identity = match &config.private_key {
            DeviceKey::PemFile(key) => ClientIdentity::from_pem_files(&config.certificate, key)?,
        };
        let tls = TlsClient::with_identity(config.ca_bundle.as_deref(), Some(&identity))?;
        let proxy = config.proxy.resolve_env().proxy()?.map(Arc::new);
        if let Some(suffix) = &config.user_agent_suffix {
            super::http::check_user_agent_suffix(suffix).map_err(AwsError::Config)?;
        }
        let http = HttpClient::new(tls)
            .with_user_agent(&super::http::user_agent(config.user_agent_suffix.as_deref()))
            .with_tcp_user_timeout(config.tcp_user_timeout)
            .with_proxy(proxy)
            .with_max_body_len(MAX_RESPONSE_LEN);
        Ok(IotCredentials { http, url, thing_name: config.thing_name.clone(), timeout: config.request_timeout })
    }

    /// One request for credentials (see the module doc for the errors).
    pub async fn fetch_async(&self) -> Result<Credentials, AwsError> {
        let headers: Vec<(String, String)> = match &self.thing_name {
            Some(thing) => vec![("x-amzn-iot-thingname".to_owned(), thing.clone())],
            None => Vec::new(),
        };
        let response = self.http.get(&self.url, &headers, self.timeout).await.map_err(refused_certificate)?;
        let status = response.status;
        if response.is_success() {
            let credentials = parse_credentials(&response.body)?;
            log!(
                Level::Info,
                TARGET,
                "IoT credentials provider: new keys until {}",
                credentials.expiry.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs())
            );
            return Ok(credentials);
        }
        let kind = match status {
            400 => IotErrorKind::InvalidRequest,
            401 => IotErrorKind::CertificateRefused,
            403 => IotErrorKind::Forbidden,
            404 => IotErrorKind::UnknownRoleAlias,
            429 => IotErrorKind::Throttled,
            _ => IotErrorKind::ServerError,
        };
        let error = iot_error(kind, Some(status), service_message(&response.body));
        log!(Level::Warn, TARGET, "{error}");
        Err(error)
    }
}

impl CredentialsProvider for IotCredentials {
    /// Blocks the calling thread for one request: call it from a blocking
    /// thread (as `CachingCredentials` does, on tokio's blocking pool) or
    /// from outside any runtime, never from an async task.
    fn fetch(&self) -> Result<Credentials, AwsError> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(self.fetch_async()),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| AwsError::Credentials(format!("IoT credentials provider: no runtime: {e}")))?
                .block_on(self.fetch_async()),
        }
    }
}

/// A TLS alert the server sends when it refuses our certificate: rustls names
/// it (`UnknownCA`), OpenSSL writes it out (`alert unknown ca`). Only for the
/// requests of this module, where the client presents a certificate. In TLS 1.3
/// the alert arrives after the client's side of the handshake, so it may
/// surface as a failure of the HTTP exchange.
fn refused_certificate(error: AwsError) -> AwsError {
    const ALERTS: [&str; 16] = [
        "unknownca",
        "unknown ca",
        "badcertificate",
        "bad certificate",
        "certificaterequired",
        "certificate required",
        "certificaterevoked",
        "certificate revoked",
        "certificateexpired",
        "certificate expired",
        "unsupportedcertificate",
        "unsupported certificate",
        "certificateunknown",
        "certificate unknown",
        // The server could not verify the certificate's signature (a CA of
        // the same name) or our proof of the key.
        "decrypterror",
        "decrypt error",
    ];
    let text = match &error {
        AwsError::Tls(text) | AwsError::Network(text) => text.to_ascii_lowercase(),
        _ => return error,
    };
    if text.contains("alert") && ALERTS.iter().any(|alert| text.contains(alert)) {
        return iot_error(IotErrorKind::CertificateRefused, None, error.message());
    }
    error
}

/// The `message` (or `Message`) of an error body, cut; the start of the body
/// when it is not that JSON.
fn service_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { message: Some(message) }) => cut_for_display(&message),
        _ => cut_for_display(String::from_utf8_lossy(body).trim()),
    }
}

/// The credentials of a 200 reply. Errors name the field, never its value.
fn parse_credentials(body: &[u8]) -> Result<Credentials, AwsError> {
    #[derive(Deserialize)]
    struct Reply {
        credentials: Option<Fields>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Fields {
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
        expiration: Option<String>,
    }
    let bad = |what: &str| iot_error(IotErrorKind::BadResponse, Some(200), what);
    // serde's error texts may quote the input: not passed on.
    let reply: Reply = serde_json::from_slice(body).map_err(|_| bad("the reply is not the documented JSON"))?;
    let fields = reply.credentials.ok_or_else(|| bad("the reply has no `credentials` object"))?;
    let field = |value: Option<String>, name: &str| match value {
        Some(value) if !value.is_empty() && value.len() <= MAX_KEY_LEN => Ok(value),
        Some(value) if !value.is_empty() => Err(bad(&format!("`{name}` is longer than {MAX_KEY_LEN} bytes"))),
        _ => Err(bad(&format!("`{name}` is missing or empty"))),
    };
    let access_key_id = field(fields.access_key_id, "accessKeyId")?;
    let secret = field(fields.secret_access_key, "secretAccessKey")?;
    let token = field(fields.session_token, "sessionToken")?;
    let expiration = field(fields.expiration, "expiration")?;
    let expiry = parse_expiration(&expiration)
        .ok_or_else(|| bad(&format!("`expiration` {:?} is not an ISO-8601 time", cut_for_display(&expiration))))?;
    if expiry <= SystemTime::now() {
        return Err(bad(&format!("`expiration` {expiration} is in the past (check the device clock)")));
    }
    let credentials = Credentials::new(&access_key_id, &secret, Some(&token)).with_expiry(expiry);
    credentials.check().map_err(|e| bad(e.message()))?;
    Ok(credentials)
}

/// An RFC 3339 time (`2024-06-01T12:00:00Z`, fractions and offsets allowed).
fn parse_expiration(text: &str) -> Option<SystemTime> {
    let time = time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    let seconds = u64::try_from(time.unix_timestamp()).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, time.nanosecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IotCredentialsConfig {
        IotCredentialsConfig::new("abc.credentials.iot.us-west-2.amazonaws.com", "kvs-alias", Some("cam-1"), "c", "k")
    }

    #[test]
    fn urls_and_names() {
        assert_eq!(
            config().url().unwrap(),
            "https://abc.credentials.iot.us-west-2.amazonaws.com/role-aliases/kvs-alias/credentials"
        );
        let local = IotCredentialsConfig { endpoint: "https://127.0.0.1:8443/".into(), ..config() };
        assert_eq!(local.url().unwrap(), "https://127.0.0.1:8443/role-aliases/kvs-alias/credentials");
        for endpoint in ["", "http://h", "h/x", "user@h", "h h", "h?q"] {
            let bad = IotCredentialsConfig { endpoint: endpoint.into(), ..config() };
            assert!(matches!(bad.url(), Err(AwsError::Config(_))), "{endpoint:?}");
        }
        for alias in ["", "a/b", "a b", &"a".repeat(129)] {
            let bad = IotCredentialsConfig { role_alias: alias.into(), ..config() };
            assert!(matches!(bad.url(), Err(AwsError::Config(_))), "{alias:?}");
        }
        assert!(IotCredentialsConfig { role_alias: "a=b,c@d_e-f".into(), ..config() }.url().is_ok());
        for thing in ["", "a/b", "a\nb", &"t".repeat(129)] {
            let bad = IotCredentialsConfig { thing_name: Some(thing.into()), ..config() };
            assert!(matches!(bad.url(), Err(AwsError::Config(_))), "{thing:?}");
        }
        assert!(IotCredentialsConfig { thing_name: None, ..config() }.url().is_ok());
    }

    #[test]
    fn replies_parse_and_refusals_name_the_field_not_the_value() {
        let future = "2999-01-02T03:04:05Z";
        let body = format!(
            r#"{{"credentials":{{"accessKeyId":"ASIAEXAMPLE","secretAccessKey":"SecretValue","sessionToken":"TokenValue","expiration":"{future}"}}}}"#
        );
        let credentials = parse_credentials(body.as_bytes()).unwrap();
        assert_eq!(credentials.access_key_id, "ASIAEXAMPLE");
        assert_eq!(credentials.session_token.as_deref(), Some("TokenValue"));
        assert_eq!(credentials.expiry, parse_expiration("2999-01-02T05:04:05.000+02:00"));
        assert_eq!(credentials.expiry.unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(), 32_472_241_445);

        let cases = [
            (body.replace("SecretValue", ""), "secretAccessKey"),
            (body.replace(r#""sessionToken":"TokenValue","#, ""), "sessionToken"),
            (body.replace(future, "tomorrow"), "ISO-8601"),
            (body.replace(future, "2001-01-01T00:00:00Z"), "in the past"),
            (body.replace("TokenValue", &"t".repeat(MAX_KEY_LEN + 1)), "longer than"),
            (r#"{"Credentials":{}}"#.to_owned(), "no `credentials`"),
            (body.replace('}', ""), "not the documented JSON"),
        ];
        for (body, expected) in cases {
            let error = parse_credentials(body.as_bytes()).unwrap_err();
            let text = error.to_string();
            assert!(matches!(&error, AwsError::IotCredentials(e) if e.kind == IotErrorKind::BadResponse), "{text}");
            assert!(text.contains(expected), "{text}");
            assert!(!text.contains("SecretValue") && !text.contains("TokenValue"), "{text}");
        }
    }

    #[test]
    fn alerts_mean_a_refused_certificate() {
        let kind = |error: AwsError| match refused_certificate(error) {
            AwsError::IotCredentials(e) => Some(e.kind),
            _ => None,
        };
        let refused = Some(IotErrorKind::CertificateRefused);
        assert_eq!(kind(AwsError::Network("HTTP exchange: received fatal alert: UnknownCA".into())), refused);
        assert_eq!(kind(AwsError::Tls("h: ssl3_read_bytes:tlsv13 alert certificate required".into())), refused);
        assert_eq!(kind(AwsError::Network("connection error: received fatal alert: DecryptError".into())), refused);
        // What the emulator (rustls) answers a self-signed device certificate.
        assert_eq!(kind(AwsError::Network("received fatal alert: CertificateUnknown".into())), refused);
        assert_eq!(kind(AwsError::Tls("h: invalid peer certificate: UnknownIssuer".into())), None);
        assert_eq!(kind(AwsError::Network("connection refused".into())), None);
        assert_eq!(service_message(br#"{"message":"Role alias does not exist"}"#), "Role alias does not exist");
        assert_eq!(service_message(b"<html>busy</html>"), "<html>busy</html>");
    }
}
