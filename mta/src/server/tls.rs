//! rustls (ring provider) server configuration from `pki` certificate/key files, with SNI
//! choosing the certificate and the first `pki` as the default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::Error as ServerError;
use crate::session::TlsInfo;

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

/// A TLS server configuration for a listener's `pki` list (the first is the default).
pub fn server_config(pkis: &[Pki]) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(ring::default_provider());
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
        let ck = Arc::new(CertifiedKey::new(chain, signing));
        by_name.insert(pki.name.to_ascii_lowercase(), ck.clone());
        default.get_or_insert(ck);
    }
    let Some(default) = default else {
        return Err(ServerError::NoPki);
    };
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { by_name, default }));
    Ok(Arc::new(cfg))
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
    TlsInfo {
        version,
        cipher,
        bits,
        sni: conn.server_name().map(str::to_string),
        client_cert: None,
    }
}
