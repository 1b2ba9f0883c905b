//! The console's certificate: configured PEM files, or a self-signed ECDSA certificate
//! generated once and reused across restarts (so browsers' exceptions keep working).

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, TlsSource};

/// The console's certificates by SNI: a stored certificate (ACME or uploaded) whose names
/// cover the name the client asked for, else the configured or self-signed one. Refreshed
/// from the database after every issuance, so a renewed certificate is served at once.
#[derive(Debug)]
pub(crate) struct CertResolver {
    fallback: Arc<CertifiedKey>,
    /// Valid certificates, latest expiry first, with their names.
    stored: std::sync::RwLock<Vec<(Vec<String>, Arc<CertifiedKey>)>>,
}

impl CertResolver {
    /// Reloads the certificates valid at `now` (Unix seconds) from the store.
    pub(crate) async fn refresh(&self, store: &store::Store, now: i64) -> Result<(), store::Error> {
        let mut certs = store.certificates().await?;
        certs.retain(|c| c.not_before <= now && now < c.not_after);
        certs.sort_by_key(|c| std::cmp::Reverse((c.not_after, c.id)));
        let mut loaded = Vec::new();
        for c in certs {
            match certified_key(c.chain_pem.as_bytes(), c.key_pem.as_bytes()) {
                Ok(ck) => loaded.push((
                    c.name_list().iter().map(|s| s.to_string()).collect(),
                    Arc::new(ck),
                )),
                Err(reason) => {
                    tracing::warn!(names = %c.names, %reason, "stored certificate not usable for the console")
                }
            }
        }
        *self.stored.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            let stored = self.stored.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, ck)) = stored
                .iter()
                .find(|(names, _)| names.iter().any(|n| crate::certificates::covers(n, &sni)))
            {
                return Some(ck.clone());
            }
        }
        Some(self.fallback.clone())
    }
}

fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(chain, signing))
}

/// The console's TLS configuration and its certificate resolver.
pub(crate) fn server_config(
    source: &TlsSource,
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertResolver>), Error> {
    let (cert, key) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::SelfSigned { dir, names } => {
            let cert = dir.join("console-cert.pem");
            let key = dir.join("console-key.pem");
            if !cert.exists() || !key.exists() {
                generate(&cert, &key, names)?;
            }
            (cert, key)
        }
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Certificate {
            path: cert.clone(),
            reason: e.to_string(),
        })?;
    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|e| Error::Certificate {
        path: key.clone(),
        reason: e.to_string(),
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| {
        Error::Certificate {
            path: key.clone(),
            reason: e.to_string(),
        }
    })?;
    let fallback = CertifiedKey::new(chain.clone(), signing);
    fallback.keys_match().map_err(|e| Error::Certificate {
        path: cert.clone(),
        reason: e.to_string(),
    })?;
    let resolver = Arc::new(CertResolver {
        fallback: Arc::new(fallback),
        stored: std::sync::RwLock::new(Vec::new()),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), resolver))
}

fn generate(cert_path: &Path, key_path: &Path, names: &[String]) -> Result<(), Error> {
    let bad = |reason: String| Error::Certificate {
        path: cert_path.to_path_buf(),
        reason,
    };
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| bad(format!("cannot generate a self-signed certificate: {e}")))?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
    }
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| bad(format!("cannot write {}: {e}", key_path.display())))?;
    std::fs::write(cert_path, certified.cert.pem()).map_err(|e| bad(e.to_string()))?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed console certificate");
    Ok(())
}

/// Writes a key readable by its owner only, never world-readable even for an instant.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
