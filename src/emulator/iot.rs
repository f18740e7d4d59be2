//! The AWS IoT credentials provider, emulated (the exchange is recorded in
//! [`crate::aws::iot`]): its own TLS listener that requires a client
//! certificate issued by the emulator's device CA, and
//! `GET /role-aliases/ROLE_ALIAS/credentials` answering with temporary keys
//! (`ASIA…`, a secret and a session token) that the emulator's SigV4 checks
//! accept until their `expiration`, then refuse with 403
//! `ExpiredTokenException` "The security token included in the request is
//! expired" (the service's answer, seen by the C and Android SDKs).
//!
//! * The device CA is generated at start (its certificate written to a file),
//!   or given as PEM files. The endpoint's server certificate (`localhost`,
//!   `127.0.0.1`, `::1`) is signed by the same CA, so a client trusts one
//!   file for the endpoint: [`super::Emulator::iot_ca_path`].
//! * A client certificate that does not chain to the device CA, or none,
//!   ends the TLS handshake with an alert (rustls: `UnknownCA`,
//!   `CertificateRequired`, ...).
//! * Device certificates issued by this emulator ([`super::Emulator::issue_iot_device`])
//!   carry their thing name; a request from one with another
//!   `x-amzn-iot-thingname` is 403 `Invalid thing name passed`. A thing name
//!   outside `[a-zA-Z0-9:_-]{1,128}` is 400. Other certificates of the CA may
//!   send any thing name.
//! * An unknown role alias is 404 `{"message":"Role alias does not exist"}`
//!   (text chosen here; the service's exact text was not found); any other
//!   path or method 404 too.
//! * Each answer issues new keys valid for [`IotConfig::credential_lifetime`]
//!   from the emulator's clock (which [`super::Emulator::set_clock_offset`]
//!   shifts). At most [`MAX_ISSUED`] keys are remembered; keys expired for an
//!   hour are forgotten (then refused as unknown), and when the table is full
//!   the one expiring first makes room.
//! * [`super::Emulator::revoke_iot_credentials`] revokes every key issued so
//!   far: they are refused as "The security token included in the request is
//!   invalid." from then on.

use super::{Shared, bump, clock, lock};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The role alias of [`IotConfig::default`].
pub const DEFAULT_ROLE_ALIAS: &str = "kvs-signaling-role-alias";
/// Most issued keys remembered at once.
pub const MAX_ISSUED: usize = 10_000;
/// How long an expired key is still recognised as expired (rather than unknown).
const EXPIRED_KEPT_SECS: i64 = 3600;
/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The service's text for a key past its expiration.
pub(super) const EXPIRED_TOKEN: &str = "The security token included in the request is expired";

/// Settings of the emulated credentials provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IotConfig {
    /// Address of its TLS listener (port 0: a free port).
    pub listen: SocketAddr,
    /// Where the device CA comes from.
    pub ca: IotCa,
    /// Role aliases that exist; others are 404.
    pub role_aliases: Vec<String>,
    /// How long issued keys are valid (the role alias's
    /// `credentialDurationSeconds`; the service allows 900 s to 12 h, the
    /// emulator any whole number of seconds from 1, for tests).
    pub credential_lifetime: Duration,
}

impl Default for IotConfig {
    /// Loopback, a generated CA, the role alias [`DEFAULT_ROLE_ALIAS`], one-hour keys.
    fn default() -> IotConfig {
        IotConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ca: IotCa::Generate { ca_out: None },
            role_aliases: vec![DEFAULT_ROLE_ALIAS.to_owned()],
            credential_lifetime: Duration::from_secs(3600),
        }
    }
}

/// The device CA of the emulated credentials provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IotCa {
    /// Generate one at start and write its certificate (PEM) to `ca_out`, or
    /// to a file in the temporary directory removed when the emulator is dropped.
    Generate {
        /// Where to write the CA certificate.
        ca_out: Option<PathBuf>,
    },
    /// This CA certificate and its private key (PEM files).
    Files {
        /// The CA certificate.
        cert: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

/// A device certificate and key the emulator issued (PEM).
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    /// The thing the certificate is attached to (its common name).
    pub thing_name: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub private_key_pem: String,
}

impl std::fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCertificate").field("thing_name", &self.thing_name).finish_non_exhaustive()
    }
}

impl DeviceCertificate {
    /// Writes `PREFIX.cert.pem` and `PREFIX.key.pem` (the key readable by
    /// the owner only, on Unix) and returns their paths.
    pub fn write(&self, prefix: &Path) -> io::Result<(PathBuf, PathBuf)> {
        let with_suffix = |suffix: &str| {
            let mut name = prefix.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let (cert, key) = (with_suffix(".cert.pem"), with_suffix(".key.pem"));
        let failed =
            |path: &Path, error: io::Error| io::Error::new(error.kind(), format!("{}: {error}", path.display()));
        std::fs::write(&cert, &self.certificate_pem).map_err(|e| failed(&cert, e))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&key).map_err(|e| failed(&key, e))?;
        io::Write::write_all(&mut file, self.private_key_pem.as_bytes()).map_err(|e| failed(&key, e))?;
        Ok((cert, key))
    }
}

/// A key the endpoint issued.
struct Issued {
    secret: String,
    token: String,
    /// Epoch seconds (emulator clock) from which the key is refused as expired.
    expires: i64,
    revoked: bool,
}

/// What a SigV4 check learns about an issued key.
pub(super) enum IssuedKey {
    /// Valid now: its secret.
    Valid(String),
    /// Known but unusable: the refusal text.
    Refused(&'static str),
}

/// The running credentials provider of an emulator.
pub(super) struct IotState {
    config: IotConfig,
    pub(super) local_addr: SocketAddr,
    issuer: Issuer<'static, KeyPair>,
    pub(super) ca_pem: String,
    pub(super) ca_path: PathBuf,
    temporary: bool,
    acceptor: TlsAcceptor,
    /// Device certificates issued here (DER) and their thing names.
    devices: std::sync::Mutex<HashMap<Vec<u8>, String>>,
    issued: std::sync::Mutex<HashMap<String, Issued>>,
    next_key: AtomicU64,
    /// Seed of the issued secrets and tokens.
    seed: String,
}

impl Drop for IotState {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.ca_path);
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn rcgen_error(what: &str) -> impl Fn(rcgen::Error) -> io::Error + '_ {
    move |error| io::Error::other(format!("{what}: {error}"))
}

/// Checks the settings a listener cannot check by itself.
pub(super) fn check(config: &IotConfig) -> io::Result<()> {
    if config.credential_lifetime < Duration::from_secs(1) {
        return Err(invalid("the IoT credential lifetime must be at least one second".into()));
    }
    let alias_ok = |c: char| c.is_ascii_alphanumeric() || "_=,@-".contains(c);
    for alias in &config.role_aliases {
        if alias.is_empty() || alias.len() > 128 || !alias.chars().all(alias_ok) {
            return Err(invalid(format!("role alias {alias:?} must be 1-128 characters of A-Z a-z 0-9 _ = , @ -")));
        }
    }
    Ok(())
}

fn thing_name_ok(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || ":_-".contains(c))
}

impl IotState {
    /// Loads or generates the device CA, signs the endpoint's certificate and
    /// binds the listener; `seed` makes the issued secrets unpredictable.
    pub(super) async fn bind(config: IotConfig, seed: String) -> io::Result<(IotState, TcpListener)> {
        check(&config)?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (issuer, ca_der, ca_pem) = load_ca(&config.ca, local_addr.port())?;
        let (ca_path, temporary) = match &config.ca {
            IotCa::Files { cert, .. } => (cert.clone(), false),
            IotCa::Generate { ca_out: Some(path) } => (path.clone(), false),
            IotCa::Generate { ca_out: None } => {
                let name = format!("kvs-signaling-emulator-{}-{}-iot-ca.pem", std::process::id(), local_addr.port());
                (std::env::temp_dir().join(name), true)
            }
        };
        if !matches!(config.ca, IotCa::Files { .. }) {
            std::fs::write(&ca_path, &ca_pem).map_err(|error| {
                io::Error::new(error.kind(), format!("cannot write {}: {error}", ca_path.display()))
            })?;
        }
        let acceptor = acceptor(&issuer, ca_der)?;
        let state = IotState {
            config,
            local_addr,
            issuer,
            ca_pem,
            ca_path,
            temporary,
            acceptor,
            devices: Default::default(),
            issued: Default::default(),
            next_key: AtomicU64::new(1),
            seed,
        };
        Ok((state, listener))
    }

    /// A new device certificate and key for `thing_name`, signed by the CA.
    pub(super) fn issue_device(&self, thing_name: &str) -> io::Result<DeviceCertificate> {
        if !thing_name_ok(thing_name) {
            return Err(invalid(format!("thing name {thing_name:?} must be 1-128 characters of A-Z a-z 0-9 : _ -")));
        }
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("device certificate"))?;
        params.distinguished_name.push(DnType::CommonName, thing_name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(rcgen_error("device key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error("device certificate"))?;
        lock(&self.devices).insert(cert.der().to_vec(), thing_name.to_owned());
        Ok(DeviceCertificate {
            thing_name: thing_name.to_owned(),
            certificate_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
        })
    }

    /// Marks every key issued so far as revoked; returns how many.
    pub(super) fn revoke_all(&self) -> usize {
        let mut revoked = 0;
        for key in lock(&self.issued).values_mut().filter(|key| !key.revoked) {
            key.revoked = true;
            revoked += 1;
        }
        revoked
    }

    /// What the SigV4 check should do with `access_key` presented with
    /// `token` at `now`; `None` when this endpoint never issued it.
    pub(super) fn lookup(&self, access_key: &str, token: Option<&str>, now: i64) -> Option<IssuedKey> {
        let issued = lock(&self.issued);
        let key = issued.get(access_key)?;
        Some(if key.revoked || token != Some(key.token.as_str()) {
            IssuedKey::Refused(super::sigv4::UNKNOWN_KEY)
        } else if now >= key.expires {
            IssuedKey::Refused(EXPIRED_TOKEN)
        } else {
            IssuedKey::Valid(key.secret.clone())
        })
    }

    /// Issues a key valid from `now` for the configured lifetime.
    fn issue_key(&self, now: i64) -> (String, Issued) {
        let n = self.next_key.fetch_add(1, Ordering::Relaxed);
        let material = |label: &str| super::sigv4::hmac(self.seed.as_bytes(), &format!("{label}-{n}"));
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let id: String = material("id").iter().take(16).map(|b| char::from(alphabet[usize::from(b % 32)])).collect();
        use base64::Engine;
        let engine = base64::engine::general_purpose::STANDARD;
        let secret: String = engine.encode(material("secret")).chars().take(40).collect();
        let token = engine.encode([material("token-a"), material("token-b"), material("token-c")].concat());
        let lifetime = i64::try_from(self.config.credential_lifetime.as_secs()).unwrap_or(i64::MAX);
        (format!("ASIA{id}"), Issued { secret, token, expires: now.saturating_add(lifetime), revoked: false })
    }

    /// Stores a new key, forgetting long-expired ones and, when full, the one
    /// expiring first.
    fn remember(&self, access_key: String, key: Issued, now: i64) {
        let mut issued = lock(&self.issued);
        issued.retain(|_, old| old.expires.saturating_add(EXPIRED_KEPT_SECS) > now);
        if issued.len() >= MAX_ISSUED
            && let Some(first) = issued.iter().min_by_key(|(_, old)| old.expires).map(|(id, _)| id.clone())
        {
            issued.remove(&first);
        }
        issued.insert(access_key, key);
    }
}

/// The CA as an issuer, its DER and its PEM; a generated one is named after
/// the process and `port`, so that two emulators' CAs differ by name too.
fn load_ca(ca: &IotCa, port: u16) -> io::Result<(Issuer<'static, KeyPair>, CertificateDer<'static>, String)> {
    match ca {
        IotCa::Generate { .. } => {
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("IoT CA"))?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let name = format!("kvs-signaling emulator IoT device CA {}-{port}", std::process::id());
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages =
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().map_err(rcgen_error("IoT CA key"))?;
            let cert = params.self_signed(&key).map_err(rcgen_error("IoT CA"))?;
            Ok((Issuer::new(params, key), cert.der().clone(), cert.pem()))
        }
        IotCa::Files { cert, key } => {
            let read = |path: &Path| {
                std::fs::read_to_string(path)
                    .map_err(|error| io::Error::new(error.kind(), format!("cannot read {}: {error}", path.display())))
            };
            let (cert_pem, key_pem) = (read(cert)?, read(key)?);
            let key_pair = KeyPair::from_pem(&key_pem)
                .map_err(|error| invalid(format!("{}: not a usable private key: {error}", key.display())))?;
            let der =
                <CertificateDer<'static> as rustls_pki_types::pem::PemObject>::from_pem_slice(cert_pem.as_bytes())
                    .map_err(|error| invalid(format!("{}: {error}", cert.display())))?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key_pair)
                .map_err(|error| invalid(format!("{}: not a usable CA certificate: {error}", cert.display())))?;
            Ok((issuer, der, cert_pem))
        }
    }
}

/// TLS that requires a client certificate chaining to the device CA, with a
/// server certificate for the loopback names signed by that CA.
fn acceptor(issuer: &Issuer<'static, KeyPair>, ca_der: CertificateDer<'static>) -> io::Result<TlsAcceptor> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])
        .map_err(rcgen_error("IoT endpoint certificate"))?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(rcgen_error("IoT endpoint key"))?;
    let cert = params.signed_by(&key, issuer).map_err(rcgen_error("IoT endpoint certificate"))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.clone()).map_err(|error| invalid(format!("the IoT CA is unusable: {error}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| invalid(format!("IoT client verification: {error}")))?;
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(format!("IoT TLS setup: {error}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert.der().clone(), ca_der], key)
        .map_err(|error| invalid(format!("IoT TLS setup: {error}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections on the IoT listener until the emulator stops.
pub(super) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut stop = shared.stop.subscribe();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let task_state = shared.clone();
        shared.spawn_tracked(async move {
            let Some(iot) = &task_state.iot else { return };
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, iot.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    bump(&task_state.counters.iot_handshakes_refused, 1);
                    task_state.log(format_args!("IoT: TLS handshake with {peer} refused: {error}"));
                    return;
                }
                Err(_) => return task_state.log(format_args!("IoT: TLS handshake with {peer} timed out")),
            };
            let device = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|c| c.to_vec());
            let thing = device.and_then(|der| lock(&iot.devices).get(&der).cloned());
            let service_state = task_state.clone();
            let service = service_fn(move |request| {
                let state = service_state.clone();
                let thing = thing.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&state, &request, thing.as_deref())) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(tls), service);
            let mut stop = task_state.stop.subscribe();
            tokio::select! {
                _ = connection => {}
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
        });
    }
}

/// `{"message": TEXT}` with `status`.
fn refusal(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    super::http::json_response(status, &serde_json::json!({ "message": message }))
}

/// Answers one request; `thing` is the thing name of an issued device certificate.
fn answer(shared: &Shared, request: &Request<Incoming>, thing: Option<&str>) -> Response<Full<Bytes>> {
    let Some(iot) = &shared.iot else {
        return refusal(StatusCode::NOT_FOUND, "no IoT endpoint");
    };
    if let Some(user_agent) = request.headers().get(hyper::header::USER_AGENT).and_then(|v| v.to_str().ok()) {
        shared.saw_user_agent(false, user_agent);
    }
    let path = request.uri().path();
    let alias = path.strip_prefix("/role-aliases/").and_then(|rest| rest.strip_suffix("/credentials"));
    let Some(alias) = alias.filter(|_| request.method() == Method::GET) else {
        return refusal(StatusCode::NOT_FOUND, "Not Found");
    };
    if !iot.config.role_aliases.iter().any(|known| known == alias) {
        shared.log(format_args!("IoT: unknown role alias {alias:?}"));
        return refusal(StatusCode::NOT_FOUND, "Role alias does not exist");
    }
    match request.headers().get("x-amzn-iot-thingname").map(HeaderValue::to_str) {
        None => {}
        Some(Ok(name)) if !thing_name_ok(name) => return refusal(StatusCode::BAD_REQUEST, "Invalid thing name"),
        Some(Err(_)) => return refusal(StatusCode::BAD_REQUEST, "Invalid thing name"),
        Some(Ok(name)) if thing.is_some_and(|attached| attached != name) => {
            shared.log(format_args!("IoT: thing {name:?} is not attached to the certificate"));
            return refusal(StatusCode::FORBIDDEN, "Invalid thing name passed");
        }
        Some(Ok(_)) => {}
    }
    let now = shared.now_epoch();
    let (access_key, key) = iot.issue_key(now);
    let body = serde_json::json!({
        "credentials": {
            "accessKeyId": access_key,
            "secretAccessKey": key.secret,
            "sessionToken": key.token,
            "expiration": clock::iso8601(key.expires),
        }
    });
    shared.log(format_args!("IoT: issued {access_key} for role alias {alias} until {}", clock::iso8601(key.expires)));
    iot.remember(access_key, key, now);
    bump(&shared.counters.iot_credentials_issued, 1);
    let mut response = super::http::json_response(StatusCode::OK, &body);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
