//! The console's certificate: configured PEM files, or a self-signed ECDSA certificate
//! generated once and reused across restarts (so browsers' exceptions keep working).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, TlsSource};

pub(crate) fn server_config(source: &TlsSource) -> Result<Arc<rustls::ServerConfig>, Error> {
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
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| Error::Certificate {
        path: cert,
        reason: e.to_string(),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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
