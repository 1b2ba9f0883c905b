//! The browser console and JSON API of the appliance (`fugu admin`).
//!
//! Serves HTTPS (rustls, ring) with a self-signed certificate generated at first start
//! until a real one is configured, redirects plain HTTP to HTTPS, answers only clients in
//! the allow-list, and manages domains, users, aliases, access rules, admins and API
//! tokens through `store`, writing an audit entry for every change. HTML pages work
//! without JavaScript; `/api/v1/` offers the same operations as JSON for token holders.
//! Certificates come from ACME (instant-acme; HTTP-01 answered on the plain-HTTP
//! listener; renewed by a background task on the injected [`Clock`]) or from manual
//! upload; the console serves the stored ones by SNI.
//!
//! It does not bind privileged ports by itself or drop privileges: the binary binds with
//! [`bind`], drops privileges, then calls [`serve`]. It shows the mta's queue (page and
//! `/api/v1/queue`) and the dashboard's mail-flow figures through the control socket when
//! `Config::control_socket` names one. It does not render any file the
//! provisioner owns.

mod acme;
mod api;
mod assets;
mod auth;
mod certificates;
mod clock;
mod config;
mod dkim;
mod dns;
mod error;
mod mailflow;
mod net;
mod ops;
mod pages;
mod queue;
mod tls;
mod totp;
mod wellknown;

use std::future::Future;
use std::sync::Arc;

pub use acme::{AcmeConfig, Challenges, LETSENCRYPT, LETSENCRYPT_STAGING};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::{Cidr, Config, MailServices, TlsSource};
pub use error::Error;
pub use net::{Listeners, bind};

/// Everything a request handler needs.
#[derive(Clone)]
pub(crate) struct AppState {
    pub store: store::Store,
    pub config: Arc<Config>,
    /// DNS live checks and their answer cache (the DNS records page, DKIM activation).
    pub checks: Arc<dns::LiveChecks>,
    /// The console's own certificates by SNI, refreshed when one is issued or uploaded.
    pub certs: Arc<tls::CertResolver>,
}

/// Serves the console on already-bound listeners until `shutdown` completes.
///
/// Opens `config.db_path` (migrating it) and `config.sessions_path`, loads or creates the
/// TLS certificate, then serves HTTPS on `listeners.https` and the redirect on
/// `listeners.http`. Returns when every listener has drained after `shutdown`.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let store = store::Store::open(&config.db_path).await?;
    net::serve_with_store(config, store, listeners, shutdown).await
}

/// Creates a superadmin from the command line (`fugu admin create-superadmin`), with an
/// audit entry by `cli`. Fails when the username is taken or the password is empty.
pub async fn create_superadmin(
    store: &store::Store,
    username: &str,
    password: &str,
) -> Result<store::Admin, Error> {
    let username = store::Username::parse(username)?;
    let hash = auth::hash_password(password.to_string()).await?;
    let admin = store
        .add_admin(&username, &hash, store::Role::Superadmin)
        .await?;
    store
        .add_audit(&store::NewAuditEntry {
            actor: "cli".to_string(),
            action: "admin.add".to_string(),
            object: admin.username.clone(),
            before: None,
            after: Some(
                serde_json::json!({"username": admin.username, "role": "superadmin"}).to_string(),
            ),
            remote_addr: None,
        })
        .await?;
    Ok(admin)
}
