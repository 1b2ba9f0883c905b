//! Outbound TLS: the trust store (system roots plus a configured `ca` file) and the
//! rustls client configurations for verified, opportunistic and unverified TLS.
//!
//! Opportunistic TLS (plain `relay`, `smtp://`) encrypts even when the certificate cannot
//! be verified (self-signed, wrong name, expired): the failure is logged and delivery
//! goes on, as OpenSMTPD does. `tls`, `smtp+tls://`, `smtps://` and MTA-STS `enforce`
//! verify, unless `tls no-verify`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How much the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verify {
    /// Chain and name must verify, or the handshake fails.
    Required,
    /// Verified when possible; a failure is logged and the connection goes on.
    Logged,
    /// `tls no-verify`: not checked at all (signatures still are).
    Off,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trust anchors, plus the PEM certificates in `extra_ca` (a relay's `ca`).
/// Unreadable files are logged; the store is never empty of what could be loaded.
pub fn roots(extra_ca: Option<&Path>) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!("smtp-out: system trust store: {e}");
    }
    let (added, ignored) = store.add_parsable_certificates(native.certs);
    tracing::debug!("smtp-out: {added} system trust anchors ({ignored} unusable)");
    if let Some(path) = extra_ca {
        match CertificateDer::pem_file_iter(path) {
            Ok(certs) => {
                let certs: Vec<_> = certs.filter_map(Result::ok).collect();
                if certs.is_empty() {
                    tracing::warn!(
                        "smtp-out: ca {}: no certificate in the file",
                        path.display()
                    );
                }
                store.add_parsable_certificates(certs);
            }
            Err(e) => tracing::warn!("smtp-out: ca {}: {e}", path.display()),
        }
    }
    Arc::new(store)
}

/// The client configuration for `verify` against `roots`.
pub fn client_config(
    roots: Arc<RootCertStore>,
    verify: Verify,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match verify {
        Verify::Required => builder.with_root_certificates(roots).with_no_client_auth(),
        Verify::Logged | Verify::Off => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient {
                    inner,
                    log: verify == Verify::Logged,
                }))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// Verifies like webpki, but lets an unverifiable certificate through (logged or not).
#[derive(Debug)]
struct Lenient {
    inner: Arc<WebPkiServerVerifier>,
    log: bool,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Err(e) = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) && self.log
        {
            tracing::warn!(
                "smtp-out: certificate of {} not verified ({e}); delivering over unverified TLS",
                server_name.to_str()
            );
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
