//! rustls (ring provider) server configuration from `pki` certificate/key files, with SNI
//! choosing the certificate and the first `pki` as the default. A listener with `verify`
//! (`smtps verify`, `tls-require verify`) demands a client certificate that chains to its
//! `ca`: a client without one, or with one from another CA, fails the handshake.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::RootCertStore;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::Error as ServerError;
use crate::session::{ClientCert, TlsInfo};

/// One `pki NAME cert FILE key FILE`.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The `pki` name: the host name it is chosen for by SNI (`*` never matches SNI).
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let chosen = hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()));
        Some(chosen.unwrap_or(&self.default).clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn bad(path: &Path, reason: impl Into<String>) -> ServerError {
    ServerError::Pki {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The certificates of one listener, loaded and checked, ready to
/// [`install`](CertSwitch::install).
#[derive(Debug)]
pub struct Certs(Arc<SniResolver>);

/// A listener's certificate resolver whose certificates a reload can replace: sessions
/// that already finished their handshake keep theirs, new handshakes get the new ones.
#[derive(Debug)]
pub struct CertSwitch {
    current: RwLock<Arc<SniResolver>>,
}

impl CertSwitch {
    fn current(&self) -> Arc<SniResolver> {
        self.current
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the certificates for handshakes from now on.
    pub fn install(&self, certs: Certs) {
        match self.current.write() {
            Ok(mut g) => *g = certs.0,
            Err(p) => *p.into_inner() = certs.0,
        }
    }
}

impl ResolvesServerCert for CertSwitch {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current().resolve(hello)
    }
}

/// A TLS server configuration for a listener's `pki` list (the first is the default).
pub fn server_config(pkis: &[Pki]) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    Ok(reloadable_server_config(pkis)?.0)
}

/// [`server_config`] plus the switch a reload uses to swap its certificates.
pub fn reloadable_server_config(
    pkis: &[Pki],
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertSwitch>), ServerError> {
    reloadable_server_config_with(pkis, &TlsOptions::default())
}

/// A listener's TLS settings beyond its certificates.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions<'a> {
    /// `verify`: the PEM file of the listener's `ca`; every client must present a
    /// certificate issued by it.
    pub client_ca: Option<&'a Path>,
    /// `ciphers` (listener, else `smtp ciphers`), libtls syntax.
    pub ciphers: Option<&'a str>,
    /// `protocols`, libtls syntax.
    pub protocols: Option<&'a str>,
}

/// [`reloadable_server_config`] with the listener's [`TlsOptions`].
pub fn reloadable_server_config_with(
    pkis: &[Pki],
    opts: &TlsOptions<'_>,
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertSwitch>), ServerError> {
    let certs = load_certs(pkis)?;
    let switch = Arc::new(CertSwitch {
        current: RwLock::new(certs.0),
    });
    let mut provider = ring::default_provider();
    if let Some(list) = opts.ciphers {
        provider.cipher_suites = super::ciphers::parse_ciphers(list).map_err(ServerError::Tls)?;
    }
    let versions = match opts.protocols {
        Some(list) => super::ciphers::parse_protocols(list).map_err(ServerError::Tls)?,
        None => rustls::DEFAULT_VERSIONS.to_vec(),
    };
    let provider = Arc::new(provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match opts.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots(ca)?), provider)
                    .build()
                    .map_err(|e| bad(ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let cfg = builder.with_cert_resolver(switch.clone());
    Ok((Arc::new(cfg), switch))
}

/// The CA certificates a `verify` listener trusts for client certificates.
fn client_roots(ca: &Path) -> Result<RootCertStore, ServerError> {
    let pem = read(ca)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(ca, e.to_string()))?;
        roots.add(cert).map_err(|e| bad(ca, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad(ca, "no CA certificate in file"));
    }
    Ok(roots)
}

/// Reads and checks the certificate chains and keys of `pkis` (the first is the default).
pub fn load_certs(pkis: &[Pki]) -> Result<Certs, ServerError> {
    let provider = ring::default_provider();
    let mut by_name = HashMap::new();
    let mut default = None;
    for pki in pkis {
        let pem = read(&pki.cert)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&pki.cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(bad(&pki.cert, "no certificate in file"));
        }
        let key_pem = read(&pki.key)?;
        let key =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(&pki.key, e.to_string()))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| bad(&pki.key, e.to_string()))?;
        let ck = CertifiedKey::new(chain, signing);
        // A renewed certificate copied without its new key must not reach clients.
        match ck.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(e) => {
                return Err(bad(
                    &pki.key,
                    format!("does not match {}: {e}", pki.cert.display()),
                ));
            }
        }
        let ck = Arc::new(ck);
        by_name.insert(pki.name.to_ascii_lowercase(), ck.clone());
        default.get_or_insert(ck);
    }
    let Some(default) = default else {
        return Err(ServerError::NoPki);
    };
    Ok(Certs(Arc::new(SniResolver { by_name, default })))
}

/// What the session and the logs need from a finished handshake.
pub fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()).replace("TLS13_", "TLS_"))
        .unwrap_or_else(|| "unknown".into());
    let bits = if cipher.contains("AES_128") { 128 } else { 256 };
    // A certificate is only ever asked for by a `verify` listener, whose verifier has
    // refused the handshake unless it chains to the `ca`: one that is here is verified.
    let client_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| ClientCert {
            verified: true,
            fingerprint: fingerprint(c),
        });
    TlsInfo {
        version,
        cipher,
        bits,
        sni: conn.server_name().map(str::to_string),
        client_cert,
    }
}

/// `SHA256:<hex>` of the DER certificate, as OpenSMTPD logs it.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ::ring::digest::digest(&::ring::digest::SHA256, cert.as_ref());
    let mut s = String::from("SHA256:");
    for b in digest.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
