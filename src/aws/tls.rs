//! The client side of TLS, for every connection of the library (the HTTPS
//! calls of the control plane and the WSS socket): [`TlsClient`] is built once
//! from the configured CA bundle and opens TLS streams over TCP.
//!
//! Two backends, chosen at build time:
//! - feature `rustls` (the default): rustls with the ring provider, TLS 1.2 and
//!   1.3, the Mozilla roots (webpki-roots) unless a CA bundle is configured;
//! - feature `native-tls`: the system OpenSSL (native-tls), TLS 1.2 and up, the
//!   system trust store unless a CA bundle is configured. When both features
//!   are enabled the client uses native-tls (rustls then only serves the
//!   emulator).
//!
//! Either way ALPN offers `http/1.1` (spec §1.3), a CA bundle replaces the
//! default roots (only its certificates are trusted), and certificates and
//! host names are always verified: there is no setting to turn that off.
//!
//! A [`ClientIdentity`] (a certificate chain and its private key, PEM files)
//! makes a client present a certificate when the server asks for one: the
//! mutual TLS of the AWS IoT credentials provider ([`super::iot`]). rustls
//! takes PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys; native-tls (OpenSSL) takes
//! PKCS#8 only (`openssl pkcs8 -topk8 -nocrypt` converts the others).

#[cfg(not(any(feature = "rustls", feature = "native-tls")))]
compile_error!("kvs-signaling needs a TLS feature: `rustls` (the default) or `native-tls`");

use super::AwsError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::Path;
#[cfg(not(feature = "native-tls"))]
use std::sync::Arc;
use tokio::net::TcpStream;

/// The TLS backend the client uses in this build.
#[cfg(not(feature = "native-tls"))]
pub const BACKEND: &str = "rustls";
/// The TLS backend the client uses in this build.
#[cfg(feature = "native-tls")]
pub const BACKEND: &str = "native-tls";

// (Imported under another name: cbindgen takes `TlsStream<TcpStream>` for a
// use of the alias itself.)
#[cfg(feature = "native-tls")]
use tokio_native_tls::TlsStream as BackendStream;
#[cfg(not(feature = "native-tls"))]
use tokio_rustls::client::TlsStream as BackendStream;

/// An open TLS connection over TCP (client side).
pub type TlsStream = BackendStream<TcpStream>;

#[cfg(not(feature = "native-tls"))]
type Connector = Arc<rustls::ClientConfig>;
#[cfg(feature = "native-tls")]
type Connector = tokio_native_tls::TlsConnector;

/// The ALPN protocol offered on every connection.
const ALPN: &str = "http/1.1";

/// Why a handshake failed when the server offered an older protocol version
/// (TLS 1.0 / 1.1, SSL) or refused ours.
const OLD_PROTOCOL: &str = "the server offered no TLS 1.2 or 1.3 (protocol version)";
/// Why a handshake failed when the server hung up on our ClientHello, which
/// is what an OpenSSL 3 server limited to TLS 1.0 or 1.1 does.
pub(crate) const HUNG_UP: &str =
    "the server closed the connection during the TLS handshake; it may offer no TLS 1.2 or 1.3 (protocol version)";

/// The client TLS settings of the library. Cheap to clone.
#[derive(Clone)]
pub struct TlsClient {
    connector: Connector,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").field("backend", &BACKEND).field("alpn", &ALPN).finish()
    }
}

/// The certificates of the PEM file `path`; an unreadable file, a bad PEM
/// block or a file without any certificate is an [`AwsError::Config`].
fn load_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, AwsError> {
    let config_error = |e: &dyn fmt::Display| AwsError::Config(format!("CA bundle {}: {e}", path.display()));
    let certificates = CertificateDer::pem_file_iter(path).map_err(|e| config_error(&e))?;
    let certificates = certificates.collect::<Result<Vec<_>, _>>().map_err(|e| config_error(&e))?;
    if certificates.is_empty() {
        return Err(config_error(&"no PEM certificate in the file"));
    }
    Ok(certificates)
}

/// A client certificate chain and its private key, read from PEM files, that
/// a [`TlsClient`] presents when the server asks for one (mutual TLS). Cheap
/// to clone; `Debug` names the files, never the key.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate file as read (PEM), device certificate first.
    chain_pem: std::sync::Arc<[u8]>,
    /// The key file as read (PEM).
    key_pem: std::sync::Arc<[u8]>,
    certificate_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificate", &self.certificate_path)
            .field("private_key", &self.key_path)
            .finish()
    }
}

impl ClientIdentity {
    /// Reads the PEM certificate chain `certificate` (the device certificate
    /// first) and the PEM private key `key`. An unreadable file, a file
    /// without a certificate or without a key is an [`AwsError::Config`]
    /// naming the file (never its contents).
    pub fn from_pem_files(certificate: &Path, key: &Path) -> Result<ClientIdentity, AwsError> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| AwsError::Config(format!("{what} {}: {e}", path.display())))
        };
        let chain_pem = read(certificate, "device certificate")?;
        let key_pem = read(key, "private key")?;
        let identity = ClientIdentity {
            chain_pem: chain_pem.into(),
            key_pem: key_pem.into(),
            certificate_path: certificate.to_owned(),
            key_path: key.to_owned(),
        };
        identity.chain()?;
        identity.key()?;
        Ok(identity)
    }

    /// The certificates of the chain, in file order.
    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, AwsError> {
        let error = |e: &dyn fmt::Display| {
            AwsError::Config(format!("device certificate {}: {e}", self.certificate_path.display()))
        };
        let chain =
            CertificateDer::pem_slice_iter(&self.chain_pem).collect::<Result<Vec<_>, _>>().map_err(|e| error(&e))?;
        if chain.is_empty() {
            return Err(error(&"no PEM certificate in the file"));
        }
        Ok(chain)
    }

    /// The private key (the first key block of the file).
    fn key(&self) -> Result<PrivateKeyDer<'static>, AwsError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| {
            // The parser's text names the PEM section, never the key bytes.
            AwsError::Config(format!("private key {}: no usable PEM private key ({e})", self.key_path.display()))
        })
    }
}

/// The rustls client settings: ring provider, TLS 1.2 and 1.3, ALPN
/// `http/1.1` (spec §1.3), certificates always verified. Trust anchors are the
/// Mozilla roots (webpki-roots), or only the certificates of the PEM file
/// `ca_bundle`. The client's own settings in a rustls build; with the
/// `native-tls` feature too, still available (e.g. for tests).
#[cfg(feature = "rustls")]
pub fn tls_config(ca_bundle: Option<&Path>) -> Result<std::sync::Arc<rustls::ClientConfig>, AwsError> {
    rustls_config(ca_bundle, None)
}

/// [`tls_config`] that also presents `identity` when the server asks for a
/// client certificate.
#[cfg(feature = "rustls")]
fn rustls_config(
    ca_bundle: Option<&Path>,
    identity: Option<&ClientIdentity>,
) -> Result<std::sync::Arc<rustls::ClientConfig>, AwsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            for certificate in load_bundle(path)? {
                roots.add(certificate).map_err(|e| AwsError::Config(format!("CA bundle {}: {e}", path.display())))?;
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AwsError::Tls(format!("TLS settings: {e}")))?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => builder.with_client_auth_cert(identity.chain()?, identity.key()?).map_err(|e| {
            AwsError::Config(format!(
                "device certificate {} with key {}: {e}",
                identity.certificate_path.display(),
                identity.key_path.display()
            ))
        })?,
    };
    config.alpn_protocols = vec![ALPN.as_bytes().to_vec()];
    Ok(std::sync::Arc::new(config))
}

#[cfg(not(feature = "native-tls"))]
impl TlsClient {
    /// The settings for `ca_bundle` (a PEM file), or the Mozilla roots.
    pub fn new(ca_bundle: Option<&Path>) -> Result<TlsClient, AwsError> {
        TlsClient::with_identity(ca_bundle, None)
    }

    /// [`TlsClient::new`] that also presents `identity` when a server asks
    /// for a client certificate. A key that does not match the certificate,
    /// or of a kind rustls cannot use, is an [`AwsError::Config`].
    pub fn with_identity(ca_bundle: Option<&Path>, identity: Option<&ClientIdentity>) -> Result<TlsClient, AwsError> {
        Ok(TlsClient { connector: rustls_config(ca_bundle, identity)? })
    }

    /// The rustls settings in use.
    pub fn rustls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.connector
    }

    /// The TLS handshake with `host` (a name or an IP address, no brackets)
    /// over `tcp`. A certificate that does not verify, or any other TLS
    /// failure, is [`AwsError::Tls`]; a transport failure during the
    /// handshake is [`AwsError::Network`]; a host that cannot be a TLS server
    /// name is [`AwsError::Config`].
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<TlsStream, AwsError> {
        let server_name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|_| AwsError::Config(format!("{host:?} is not a valid TLS server name")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.connector));
        connector.connect(server_name, tcp).await.map_err(|error| {
            match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(rustls_error) if is_protocol_version(rustls_error) => {
                    AwsError::Tls(format!("{host}: {OLD_PROTOCOL}: {rustls_error}"))
                }
                Some(rustls_error) => AwsError::Tls(format!("{host}: {rustls_error}")),
                None if error.kind() == std::io::ErrorKind::InvalidData => AwsError::Tls(format!("{host}: {error}")),
                None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    AwsError::Tls(format!("{host}: {HUNG_UP}"))
                }
                None => AwsError::Network(format!("TLS handshake with {host}: {error}")),
            }
        })
    }
}

/// Whether rustls failed because the server speaks no TLS 1.2 or 1.3.
#[cfg(not(feature = "native-tls"))]
fn is_protocol_version(error: &rustls::Error) -> bool {
    matches!(
        error,
        rustls::Error::PeerIncompatible(rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13)
            | rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
    )
}

#[cfg(feature = "native-tls")]
impl TlsClient {
    /// The settings for `ca_bundle` (a PEM file; only its certificates are
    /// trusted), or the system trust store.
    pub fn new(ca_bundle: Option<&Path>) -> Result<TlsClient, AwsError> {
        TlsClient::with_identity(ca_bundle, None)
    }

    /// [`TlsClient::new`] that also presents `identity` when a server asks
    /// for a client certificate. A key that is not PKCS#8, or that OpenSSL
    /// refuses, is an [`AwsError::Config`].
    pub fn with_identity(ca_bundle: Option<&Path>, identity: Option<&ClientIdentity>) -> Result<TlsClient, AwsError> {
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(identity) = identity {
            if !matches!(identity.key()?, PrivateKeyDer::Pkcs8(_)) {
                return Err(AwsError::Config(format!(
                    "private key {}: native-tls needs a PKCS#8 key (BEGIN PRIVATE KEY); convert it with \
                     `openssl pkcs8 -topk8 -nocrypt`",
                    identity.key_path.display()
                )));
            }
            identity.chain()?;
            let native = native_tls::Identity::from_pkcs8(&identity.chain_pem, &identity.key_pem).map_err(|e| {
                AwsError::Config(format!(
                    "device certificate {} with key {}: {e}",
                    identity.certificate_path.display(),
                    identity.key_path.display()
                ))
            })?;
            builder.identity(native);
        }
        builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12)).request_alpns(&[ALPN]);
        if let Some(path) = ca_bundle {
            builder.disable_built_in_roots(true);
            for certificate in load_bundle(path)? {
                let certificate = native_tls::Certificate::from_der(&certificate)
                    .map_err(|e| AwsError::Config(format!("CA bundle {}: {e}", path.display())))?;
                builder.add_root_certificate(certificate);
            }
        }
        let connector = builder.build().map_err(|e| AwsError::Tls(format!("TLS settings: {e}")))?;
        Ok(TlsClient { connector: connector.into() })
    }

    /// The TLS handshake with `host` (a name or an IP address, no brackets)
    /// over `tcp`. A certificate that does not verify, or any other TLS
    /// failure, is [`AwsError::Tls`]; a transport failure during the
    /// handshake is [`AwsError::Network`].
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<TlsStream, AwsError> {
        self.connector.connect(host, tcp).await.map_err(|error| {
            // OpenSSL reports a failing socket as the source of its error.
            let mut source = std::error::Error::source(&error);
            let mut text = error.to_string();
            while let Some(inner) = source {
                match inner.downcast_ref::<std::io::Error>() {
                    Some(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return AwsError::Tls(format!("{host}: {HUNG_UP}"));
                    }
                    Some(_) => return AwsError::Network(format!("TLS handshake with {host}: {error}")),
                    None => text = format!("{text}: {inner}"),
                }
                source = inner.source();
            }
            let text = text.to_ascii_lowercase();
            if text.contains("unexpected eof") {
                AwsError::Tls(format!("{host}: {HUNG_UP}: {error}"))
            } else if ["unsupported protocol", "wrong version number", "protocol version"]
                .iter()
                .any(|t| text.contains(t))
            {
                AwsError::Tls(format!("{host}: {OLD_PROTOCOL}: {error}"))
            } else {
                AwsError::Tls(format!("{host}: {error}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_must_hold_certificates() {
        TlsClient::new(None).unwrap();
        let missing = std::env::temp_dir().join(format!("kvs-no-such-bundle-{}.pem", std::process::id()));
        assert!(matches!(TlsClient::new(Some(&missing)), Err(AwsError::Config(_))));
        let empty = std::env::temp_dir().join(format!("kvs-empty-bundle-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let result = TlsClient::new(Some(&empty));
        assert!(matches!(&result, Err(AwsError::Config(m)) if m.contains("no PEM certificate")), "{result:?}");
        let _ = std::fs::remove_file(&empty);
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn rustls_settings() {
        let config = tls_config(None).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let missing = std::env::temp_dir().join(format!("kvs-no-such-bundle-r-{}.pem", std::process::id()));
        assert!(matches!(tls_config(Some(&missing)), Err(AwsError::Config(_))));
    }
}
