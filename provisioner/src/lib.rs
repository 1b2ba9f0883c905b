//! The provisioner: renders every file other programs read from fugu's database, and
//! keeps them in step with it.
//!
//! It renders Dovecot's passwd-file and configuration (with the spam sieve script), the
//! mta's `smtpd.conf` and table-sqlite `sqlite.conf`, DKIM key files and tables (also for
//! dkimproxy and OpenDKIM), TLS certificate and key files, and the packet filter's pf
//! anchor and tables or nftables ruleset. [`render`] is a pure function of a [`Snapshot`]
//! (read in one transaction) and the [`Config`]; [`apply`] is the only I/O: atomic
//! writes, unchanged files left alone, then the reload commands of the outputs that
//! changed. [`run_once`] does both once; [`watch`] repeats whenever the database's
//! change counter moves.
//!
//! It never writes the database, and it does not start or stop the programs it
//! configures: it only runs their configured reload commands.

mod apply;
pub mod config;
mod error;
mod reload;
pub mod render;

use std::time::Duration;

pub use apply::ApplyReport;
pub use config::{
    Command, Config, DovecotConfig, FilterConfig, LocalDelivery, MtaConfig, Output, Paths,
};
pub use error::Error;
pub use reload::ReloadOutcome;
pub use render::{RenderedFile, render};
pub use store::Snapshot;
use store::Store;

/// How often [`watch`] reads the change counter: a change is applied well within 2 s.
pub const POLL_INTERVAL: Duration = Duration::from_millis(400);

/// Writes `files` (atomically, unchanged ones skipped, stale ones removed) and runs the
/// reloads of the outputs that changed. Blocking: call it off the async runtime.
pub fn apply(files: &[RenderedFile], config: &Config) -> Result<ApplyReport, Error> {
    apply::apply(files, config, false)
}

/// What [`apply`] would do, as a unified diff in [`ApplyReport::diff`]; writes nothing.
pub fn diff(files: &[RenderedFile], config: &Config) -> Result<ApplyReport, Error> {
    apply::apply(files, config, true)
}

/// Renders from the database and applies once. With `dry_run`, prints the unified diff
/// of what would change to stdout (also in the report) and changes nothing.
pub async fn run_once(store: &Store, config: &Config, dry_run: bool) -> Result<ApplyReport, Error> {
    let snapshot = Snapshot::load(store).await?;
    let report = apply_snapshot(snapshot, config, dry_run).await?;
    if dry_run {
        print!("{}", report.diff);
    }
    Ok(report)
}

async fn apply_snapshot(
    snapshot: Snapshot,
    config: &Config,
    dry_run: bool,
) -> Result<ApplyReport, Error> {
    let config = config.clone();
    let job = tokio::task::spawn_blocking(move || {
        let files = render(&snapshot, &config);
        if dry_run {
            return diff(&files, &config);
        }
        if config.renders(Output::Smtpd) {
            ensure_local_include(&config)?;
        }
        apply(&files, &config)
    });
    match job.await {
        Ok(result) => result,
        Err(e) => Err(Error::Write {
            path: std::path::PathBuf::new(),
            action: "apply task",
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

/// `smtpd.conf` includes the operator's file, and `include` of a missing file is a
/// configuration error: create it empty (never overwrite it).
fn ensure_local_include(config: &Config) -> Result<(), Error> {
    let path = &config.mta.local_include;
    if path.exists() {
        return Ok(());
    }
    apply::write_atomic(
        path,
        "# Local smtpd.conf additions: tables, actions and match rules placed before fugu's.\n",
        0o644,
    )
}

/// Applies now, then again within [`POLL_INTERVAL`] of every change to the database's
/// change counter; retries failed reloads with a growing delay (up to 5 minutes). Returns
/// only if the first run fails; later errors are logged and retried.
pub async fn watch(store: &Store, config: &Config) -> Result<(), Error> {
    let first = Snapshot::load(store).await?;
    let mut applied = first.change_counter;
    let mut healthy = apply_snapshot(first, config, false).await?.is_success();
    let mut retry = RetryDelay::default();
    loop {
        tokio::time::sleep(POLL_INTERVAL).await;
        let counter = match store.change_counter().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reading the change counter: {e}");
                continue;
            }
        };
        if counter == applied && (healthy || !retry.due()) {
            continue;
        }
        let result = async {
            let snapshot = Snapshot::load(store).await?;
            let counter = snapshot.change_counter;
            Ok::<_, Error>((counter, apply_snapshot(snapshot, config, false).await?))
        }
        .await;
        match result {
            Ok((counter, report)) => {
                applied = counter;
                healthy = report.is_success();
            }
            Err(e) => {
                tracing::error!("provisioning failed, will retry: {e}");
                healthy = false;
            }
        }
        if healthy {
            retry = RetryDelay::default();
        } else {
            retry.failed();
        }
    }
}

/// Backoff for failed reloads: 2 s, doubling, at most 5 minutes.
#[derive(Debug)]
struct RetryDelay {
    next: tokio::time::Instant,
    delay: Duration,
}

impl Default for RetryDelay {
    fn default() -> Self {
        RetryDelay {
            next: tokio::time::Instant::now() + Duration::from_secs(2),
            delay: Duration::from_secs(2),
        }
    }
}

impl RetryDelay {
    fn due(&self) -> bool {
        tokio::time::Instant::now() >= self.next
    }

    fn failed(&mut self) {
        self.delay = (self.delay * 2).min(Duration::from_secs(300));
        self.next = tokio::time::Instant::now() + self.delay;
    }
}
