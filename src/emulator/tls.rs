//! Optional TLS for the emulator's one port: a certificate generated at start
//! (a throw-away CA plus a server certificate for `localhost`, `127.0.0.1` and
//! `::1`, signed by it), or PEM files given by the user. rustls with ring;
//! ALPN `http/1.1`, as the C SDK pins (spec §1.3).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// How the emulator gets its TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSetting {
    /// Generate a CA and a server certificate for `localhost`, `127.0.0.1` and
    /// `::1` at start, and write the CA certificate (PEM) to `ca_out`, or to a
    /// file in the temporary directory (removed when the [`super::Emulator`] is
    /// dropped) when `None`. Clients trust that file.
    Generate {
        /// Where to write the CA certificate.
        ca_out: Option<PathBuf>,
    },
    /// Serve the certificate chain in PEM file `cert` with the private key in
    /// PEM file `key`. [`super::Emulator::ca_path`] then names `cert`.
    Files {
        /// The certificate chain (PEM).
        cert: PathBuf,
        /// The private key (PEM).
        key: PathBuf,
    },
}

/// The loaded TLS state of a running emulator.
pub(super) struct Tls {
    pub(super) acceptor: TlsAcceptor,
    /// What clients should trust, PEM.
    pub(super) ca_pem: String,
    /// Where that PEM is on disk.
    pub(super) ca_path: PathBuf,
    /// Whether `ca_path` is our temporary file, to be removed on drop.
    pub(super) temporary: bool,
}

impl Drop for Tls {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.ca_path);
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn generation_error(error: rcgen::Error) -> io::Error {
    io::Error::other(format!("cannot generate the TLS certificate: {error}"))
}

/// Prepares TLS per `setting`; `port` names the temporary CA file.
pub(super) fn load(setting: &TlsSetting, port: u16) -> io::Result<Tls> {
    let (chain, key, ca_pem, ca_path, temporary) = match setting {
        TlsSetting::Generate { ca_out } => {
            let (chain, key, ca_pem) = generate().map_err(generation_error)?;
            let (path, temporary) = match ca_out {
                Some(path) => (path.clone(), false),
                None => {
                    let name = format!("kvs-signaling-emulator-{}-{port}-ca.pem", std::process::id());
                    (std::env::temp_dir().join(name), true)
                }
            };
            std::fs::write(&path, &ca_pem)
                .map_err(|error| io::Error::new(error.kind(), format!("cannot write {}: {error}", path.display())))?;
            (chain, key, ca_pem, path, temporary)
        }
        TlsSetting::Files { cert, key } => {
            let (chain, key_der, pem) = read_files(cert, key)?;
            (chain, key_der, pem, cert.clone(), false)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(format!("TLS setup: {error}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| invalid(format!("the TLS certificate or key is unusable: {error}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), ca_pem, ca_path, temporary })
}

type Material = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String);

/// A fresh CA and a server certificate signed by it: (chain, server key, CA PEM).
fn generate() -> Result<Material, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "kvs-signaling emulator CA");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let chain = vec![cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((chain, key, ca_cert.pem()))
}

fn read_files(cert: &Path, key: &Path) -> io::Result<Material> {
    let pem = std::fs::read_to_string(cert)
        .map_err(|error| io::Error::new(error.kind(), format!("cannot read {}: {error}", cert.display())))?;
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(format!("{}: {error}", cert.display())))?;
    if chain.is_empty() {
        return Err(invalid(format!("{} holds no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|error| invalid(format!("{}: {error}", key.display())))?;
    Ok((chain, key, pem))
}
