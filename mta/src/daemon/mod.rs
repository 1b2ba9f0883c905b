//! The daemon: configuration and tables, listeners, the queue and its scheduler, wired
//! together; SIGHUP reloads the configuration and tables without dropping sessions or
//! ports, SIGTERM/SIGINT stop accepting and let sessions finish.

mod backend;
mod dispatch;
mod listen;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::{Semaphore, watch};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Diagnostics};
use crate::queue::{Queue, QueueConfig, Scheduler};
use crate::server::{Limits, Server};
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
        ..QueueConfig::default()
    };
    let queue = Queue::open(&spool, queue_config, clock.clone())?;
    let listeners = listen::listeners(&state, &spool)?;
    let server = Server::bind(listeners, Limits::default(), clock.clone())?;
    for addr in server.local_addrs() {
        tracing::info!("smtpd: listening on {addr}");
    }
    tracing::info!(
        "smtpd: queue in {}, {} message(s) waiting",
        spool.display(),
        queue.stats().messages
    );

    let shared = Arc::new(Shared(RwLock::new(Arc::new(state))));
    let backend = Arc::new(backend::DaemonBackend {
        state: shared.clone(),
        queue: queue.clone(),
        hashing: Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        )),
    });
    let scheduler = Scheduler::new(
        queue.clone(),
        Arc::new(dispatch::Deliverer {
            state: shared.clone(),
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
            _ = hup.recv() => match load(&opts.config) {
                Ok(new) => {
                    shared.replace(new);
                    tracing::info!("smtpd: configuration and tables reloaded from {}", opts.config.display());
                }
                Err(e) => tracing::warn!("smtpd: reload refused, keeping the running configuration:\n{e}"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("smtpd: shutting down");
    let _ = stop_tx.send(true);
    let _ = server_task.await;
    scheduler_task.abort();
    Ok(())
}

fn signal(
    kind: tokio::signal::unix::SignalKind,
) -> Result<tokio::signal::unix::Signal, StartError> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| StartError::Other(format!("cannot handle signals: {e}")))
}
