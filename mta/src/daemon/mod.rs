//! The daemon: configuration and tables, listeners, the queue and its scheduler, wired
//! together; SIGHUP reloads the configuration and tables without dropping sessions or
//! ports, SIGTERM/SIGINT stop accepting and let sessions finish.

mod access_hooks;
mod authres_writer;
mod backend;
mod control;
mod dispatch;
mod listen;

pub use control::{CONTROL_SOCKET, set_log_switch};
pub use listen::ENQUEUE_SOCKET;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::{Semaphore, watch};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Diagnostics};
use crate::queue::{Queue, QueueConfig, Scheduler};
use crate::server::Server;
use crate::table::{LocalIdentity, Tables};

/// Where the queue lives when neither the command line nor `spool` says.
pub const DEFAULT_SPOOL: &str = "/var/spool/fugu";

/// What `fugu smtpd` was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    /// Overrides the configuration's `spool`.
    pub spool: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(Diagnostics),
    #[error(transparent)]
    Mta(#[from] crate::Error),
    #[error("{0}")]
    Other(String),
}

/// The configuration and its open tables: replaced whole on reload.
pub(crate) struct State {
    pub config: Config,
    pub tables: Tables,
    /// The server's name (banner, LHLO, DSNs).
    pub hostname: String,
}

/// The current [`State`], swapped atomically by a reload; readers keep the one they took.
pub(crate) struct Shared(RwLock<Arc<State>>);

impl Shared {
    pub fn current(&self) -> Arc<State> {
        self.0
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn replace(&self, s: State) {
        match self.0.write() {
            Ok(mut g) => *g = Arc::new(s),
            Err(p) => *p.into_inner() = Arc::new(s),
        }
    }
}

/// Re-reads the configuration, tables and `pki` files for SIGHUP and `fugu ctl reload`.
pub(crate) struct Reloader {
    config: PathBuf,
    shared: Arc<Shared>,
    tls: Vec<listen::TlsHandle>,
    /// One reload at a time: SIGHUP and the control socket may race.
    busy: std::sync::Mutex<()>,
}

impl Reloader {
    /// Loads everything first and swaps only if all of it loaded: a broken configuration
    /// or an unreadable key keeps the running state. Listener addresses are bound once;
    /// changes to `listen on` lines need a restart.
    pub fn reload(&self) -> Result<(), String> {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let new = load(&self.config).map_err(|e| e.to_string())?;
        let mut certs = Vec::with_capacity(self.tls.len());
        for h in &self.tls {
            let pkis = listen::pkis(&new.config, &h.pki).map_err(|e| e.to_string())?;
            certs.push(crate::server::tls::load_certs(&pkis).map_err(|e| e.to_string())?);
        }
        self.shared.replace(new);
        for (h, c) in self.tls.iter().zip(certs) {
            h.switch.install(c);
        }
        Ok(())
    }

    fn reload_logged(&self) -> Result<(), String> {
        let r = self.reload();
        match &r {
            Ok(()) => tracing::info!(
                "smtpd: configuration, tables and certificates reloaded from {}",
                self.config.display()
            ),
            Err(e) => {
                tracing::warn!("smtpd: reload refused, keeping the running configuration:\n{e}")
            }
        }
        r
    }
}

fn load(path: &Path) -> Result<State, StartError> {
    let local = LocalIdentity::system();
    let (config, tables) =
        crate::config::load_with_tables(path, &local).map_err(StartError::Config)?;
    Ok(State {
        config,
        tables,
        hostname: local.hostname,
    })
}

/// Runs the daemon until SIGTERM or SIGINT. Builds its own runtime, so callers can drop
/// privileges before (see the crate docs of `fugu`).
pub fn run(opts: Options) -> Result<(), StartError> {
    match crate::server::raise_nofile_limit() {
        Ok(n) => tracing::debug!("open file limit {n}"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
    let state = load(&opts.config)?;
    let spool = opts
        .spool
        .clone()
        .or_else(|| state.config.spool.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL));
    std::fs::create_dir_all(&spool).map_err(|source| crate::Error::Io {
        path: spool.clone(),
        source,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Spool writes are short and the disk is one queue: past a few dozen threads,
        // 1000 sessions only add stacks and context switches, not throughput.
        .max_blocking_threads(64)
        .build()
        .map_err(|e| StartError::Other(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(opts, spool, state))
}

async fn serve(opts: Options, spool: PathBuf, state: State) -> Result<(), StartError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let queue_config = QueueConfig {
        ttl: state.config.queue_ttl(),
        hostname: state.hostname.clone(),
        compression: state.config.queue.compression,
        encryption_key: listen::queue_key(&state.config)?,
        warn_intervals: state.config.bounce_warn_interval(),
        // For end-to-end tests only: `FUGU_RETRY_BASE_SECS` shortens the retry backoff's
        // first step (default 5 minutes) so a deferred message is retried within seconds.
        retry_base: std::env::var("FUGU_RETRY_BASE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(
                QueueConfig::default().retry_base,
                std::time::Duration::from_secs,
            ),
        ..QueueConfig::default()
    };
    let queue = Queue::open(&spool, queue_config, clock.clone())?;
    let (mut listeners, tls) = listen::listeners(&state, &spool)?;
    // smtpd-filters(7): no SMTP before every filter process has registered.
    let filter_tables = Arc::new(crate::filter::LateTables::default());
    let filters =
        crate::filter::Filters::start(&state.config, &state.hostname, filter_tables.clone())
            .await?;
    for l in &mut listeners {
        l.filters = filters.chain(l.session.listener);
    }
    let server = Server::bind(listeners, listen::limits(&state.config), clock.clone())?;
    let control_listener = control::bind(&spool)?;
    for addr in server.local_addrs() {
        tracing::info!("smtpd: listening on {addr}");
    }
    tracing::info!(
        "smtpd: queue in {}, {} message(s) waiting",
        spool.display(),
        queue.stats().messages
    );

    let guard = Arc::new(crate::access::Guard::open(
        &state.config.access,
        &spool,
        clock.clone(),
    ));
    let shared = Arc::new(Shared(RwLock::new(Arc::new(state))));
    filter_tables.set(shared.clone());
    let backend = Arc::new(backend::DaemonBackend {
        state: shared.clone(),
        queue: queue.clone(),
        hashing: Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
        guard: guard.clone(),
        authres: Arc::default(),
        rdns: Arc::default(),
    });
    let reloader = Arc::new(Reloader {
        config: opts.config.clone(),
        shared: shared.clone(),
        tls,
        busy: std::sync::Mutex::new(()),
    });
    let control = Arc::new(control::Control {
        queue: queue.clone(),
        reloader: reloader.clone(),
        smtp_paused: server.pause_switch(),
        sessions: server.session_gauge(),
        started: std::time::Instant::now(),
        daemon_uid: nix::unistd::geteuid().as_raw(),
        fugu_gid: control::fugu_gid(),
    });
    let control_task = tokio::spawn(control::serve(control_listener, control));
    let relayer = Arc::new(crate::relay::Relayer::new());
    {
        let guard = guard.clone();
        let _ = relayer
            .on_delivered
            .set(Arc::new(move |ip| guard.record_outbound(ip)));
    }
    // Read before the first delivery, which would otherwise read them on a worker thread
    // and hold up the sessions that thread serves.
    let (r, resolver) = (relayer.clone(), shared.current().config.resolver.clone());
    let _ = tokio::task::spawn_blocking(move || r.prepare(resolver.as_deref())).await;
    let scheduler = Scheduler::new(
        queue.clone(),
        Arc::new(dispatch::Deliverer {
            state: shared.clone(),
            relayer,
            dkim: Arc::new(crate::dkim::DkimSigner::new()),
        }),
    );
    let scheduler_task = tokio::spawn(async move { scheduler.run().await });

    let (stop_tx, stop_rx) = watch::channel(false);
    let server_task = tokio::spawn(server.run(backend, stop_rx));

    let mut hup = signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let r = reloader.clone();
                let _ = tokio::task::spawn_blocking(move || r.reload_logged()).await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("smtpd: shutting down");
    let _ = stop_tx.send(true);
    let _ = server_task.await;
    scheduler_task.abort();
    control_task.abort();
    queue.flush_done().await;
    let _ = std::fs::remove_file(spool.join(CONTROL_SOCKET));
    Ok(())
}

fn signal(
    kind: tokio::signal::unix::SignalKind,
) -> Result<tokio::signal::unix::Signal, StartError> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| StartError::Other(format!("cannot handle signals: {e}")))
}
