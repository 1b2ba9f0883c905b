//! The answers to a session's questions, from the configuration's rules and tables and
//! the queue: what the SMTP shell calls through [`crate::server::Backend`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::State;
use super::access_hooks;
use crate::config::{Decision, Dispatch, ListenAuth, MatchContext, TableSource};
use crate::envelope::{Envelope, Origin};
use crate::expand::{Expansion, expand, resolve};
use crate::queue::{Incoming, Queue};
use crate::server::{Backend, BoxFuture, MessageWriter};
use crate::session::{AuthVerdict, CheckContext, RecipientVerdict, Reply, SenderVerdict, reply};
use crate::table::Service;

/// OpenSMTPD pauses a failed AUTH for about a second: guessing passwords gets slow.
const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

pub struct DaemonBackend {
    pub(super) state: Arc<super::Shared>,
    pub(super) queue: Queue,
    /// Password hashes are deliberately expensive: at most this many are checked at once,
    /// so a flood of AUTH attempts queues up instead of starving every other session.
    pub(super) hashing: Arc<Semaphore>,
    /// Bans, greylist and block lists (see [`crate::access`]).
    pub(super) guard: Arc<crate::access::Guard>,
    /// SPF/DKIM/DMARC's resolver (see [`crate::authres`]).
    pub(super) authres: Arc<crate::authres::Verifier>,
    /// The clients' reverse names, asked through the configuration's `resolver`.
    pub(super) rdns: Arc<crate::rdns::ReverseResolver>,
}

fn match_context<'a>(ctx: &'a CheckContext, rcpt: &'a str) -> MatchContext<'a> {
    let (local_enqueue, src) = match &ctx.origin {
        Origin::Local => (true, None),
        Origin::Inet(sa) => (false, Some(sa.ip())),
    };
    MatchContext {
        tag: ctx.tag.as_deref(),
        local_enqueue,
        src,
        rdns: ctx.rdns.as_deref(),
        helo: Some(ctx.helo.as_str()).filter(|h| !h.is_empty()),
        auth_user: ctx.auth_user.as_deref(),
        tls: ctx.tls,
        mail_from: ctx.mail_from.as_deref().unwrap_or(""),
        rcpt_to: rcpt,
    }
}

/// The rule decision and expansion for one recipient (blocking: tables may be SQLite).
pub(super) fn decide(state: &State, ctx: &CheckContext, address: &str) -> RecipientVerdict {
    let mctx = match_context(ctx, address);
    match state.config.match_rcpt(&mctx, &state.tables) {
        Decision::Action { action, .. } => {
            match expand(&state.config, &state.tables, &mctx, action) {
                Expansion::Targets(targets) => RecipientVerdict::Accept { targets },
                Expansion::Unknown => RecipientVerdict::Reject(reply::invalid_recipient(address)),
                Expansion::Reject {
                    code,
                    enhanced,
                    text,
                } => RecipientVerdict::Reject(Reply::new(code, enhanced, text)),
                Expansion::TempFail(why) => {
                    tracing::warn!(
                        "{:016x} smtp expansion-failed rcpt=<{address}> reason=\"{why}\"",
                        ctx.session_id
                    );
                    RecipientVerdict::TempFail(reply::lookup_tempfail())
                }
            }
        }
        Decision::Reject { .. } => RecipientVerdict::Reject(reply::recipient_rejected(address)),
        Decision::NoMatch => RecipientVerdict::Reject(reply::invalid_recipient(address)),
        Decision::TempFail(why) => {
            tracing::warn!(
                "{:016x} smtp lookup-failed rcpt=<{address}> reason=\"{why}\"",
                ctx.session_id
            );
            RecipientVerdict::TempFail(reply::lookup_tempfail())
        }
    }
}

/// `senders <t>`: an authenticated user may use only the addresses its mailaddrmap entry
/// lists (`user@domain`, `@domain`, or a bare `user`).
fn sender_allowed(
    state: &State,
    ctx: &CheckContext,
    address: Option<&str>,
) -> Result<bool, String> {
    let Some(listener) = state.config.listeners.get(ctx.listener) else {
        return Ok(true);
    };
    let (Some(senders), Some(user)) = (&listener.senders, &ctx.auth_user) else {
        return Ok(true);
    };
    // The null sender is allowed: bounces and notifications use it.
    let Some(address) = address else {
        return Ok(true);
    };
    let table =
        resolve(senders, &state.tables).ok_or_else(|| "senders table is not open".to_string())?;
    let Some(value) = table
        .lookup(Service::Mailaddrmap, user)
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    let address = address.to_ascii_lowercase();
    let (local, domain) = address.rsplit_once('@').unwrap_or((address.as_str(), ""));
    Ok(value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            let entry = entry.to_ascii_lowercase();
            match entry.strip_prefix('@') {
                Some(d) => d == domain,
                None if entry.contains('@') => entry == address,
                None => entry == local,
            }
        }))
}

/// Checks a password against the listener's `auth <table>` (`hash` or `user:hash` values).
fn check_credentials(
    state: &State,
    listener: usize,
    user: &str,
    password: &str,
) -> Result<bool, String> {
    let Some(l) = state.config.listeners.get(listener) else {
        return Ok(false);
    };
    let table_ref = match &l.auth {
        Some(ListenAuth::Required(Some(t)) | ListenAuth::Optional(Some(t))) => t,
        // System accounts (PAM / getspnam) are not supported: nothing matches.
        _ => return Ok(false),
    };
    let table = resolve(table_ref, &state.tables)
        .ok_or_else(|| "credentials table is not open".to_string())?;
    let Some(value) = table
        .lookup(Service::Credentials, user)
        .map_err(|e| e.to_string())?
    else {
        return Ok(false);
    };
    // `user:hash` (table-sqlite's two columns) or a bare hash; hashes never contain ':'
    // before their `$` scheme marker.
    let hash = match value.split_once(':') {
        Some((_, h)) if h.starts_with('$') || h.starts_with('{') => h,
        _ => value.as_str(),
    };
    Ok(password::verify(password, hash).unwrap_or(false))
}

impl Backend for DaemonBackend {
    fn check_connect(&self, ip: IpAddr, listener: usize) -> BoxFuture<'_, Option<Reply>> {
        Box::pin(access_hooks::check_connect(self, ip, listener))
    }

    fn record_failure(&self, ip: IpAddr, failure: crate::access::Failure) {
        access_hooks::record_failure(self, ip, failure);
    }

    fn reverse_name(&self, ip: IpAddr) -> BoxFuture<'_, crate::rdns::ReverseName> {
        Box::pin(async move {
            let state = self.state.current();
            self.rdns.lookup(state.config.resolver.as_deref(), ip).await
        })
    }

    fn check_sender<'a>(
        &'a self,
        address: Option<&'a str>,
        ctx: &'a CheckContext,
    ) -> BoxFuture<'a, SenderVerdict> {
        Box::pin(async move {
            if let Some(v) = access_hooks::check_sender(self, address, ctx).await {
                return v;
            }
            let state = self.state.current();
            // Only an authenticated session on a listener with `senders` has a table to
            // ask (see `sender_allowed`); the rest skip the blocking pool.
            let owned = ctx.auth_user.is_some()
                && state
                    .config
                    .listeners
                    .get(ctx.listener)
                    .is_some_and(|l| l.senders.is_some());
            if !owned || address.is_none() {
                return SenderVerdict::Accept;
            }
            let address = address.map(str::to_string);
            let ctx2 = ctx.clone();
            let verdict = tokio::task::spawn_blocking(move || {
                sender_allowed(&state, &ctx2, address.as_deref())
            })
            .await;
            match verdict {
                Ok(Ok(true)) => SenderVerdict::Accept,
                Ok(Ok(false)) => SenderVerdict::Reject(Reply::new(
                    553,
                    "5.7.1",
                    "Sender address rejected: not owned by the authenticated user",
                )),
                Ok(Err(why)) => {
                    tracing::warn!(
                        "{:016x} smtp lookup-failed sender reason=\"{why}\"",
                        ctx.session_id
                    );
                    SenderVerdict::TempFail(reply::sender_tempfail())
                }
                Err(_) => SenderVerdict::TempFail(reply::sender_tempfail()),
            }
        })
    }

    fn check_recipient<'a>(
        &'a self,
        address: &'a str,
        ctx: &'a CheckContext,
    ) -> BoxFuture<'a, RecipientVerdict> {
        Box::pin(async move {
            let state = self.state.current();
            // Without an SQLite table, matching reads only memory (file tables are
            // loaded at start), and a relay action expands to the address itself: that
            // is decided here, without the blocking pool (its hand-off, and the threads
            // it grows to under a thousand sessions, cost more than the decision).
            let pure = !state
                .config
                .tables
                .iter()
                .any(|t| matches!(t.source, TableSource::Sqlite(_)))
                && matches!(
                    state.config.match_rcpt(&match_context(ctx, address), &state.tables),
                    Decision::Action { action, .. } if matches!(action.dispatch, Dispatch::Relay(_))
                );
            let verdict = if pure {
                decide(&state, ctx, address)
            } else {
                let (ctx2, addr) = (ctx.clone(), address.to_string());
                tokio::task::spawn_blocking(move || decide(&state, &ctx2, &addr))
                    .await
                    .unwrap_or_else(|_| RecipientVerdict::TempFail(reply::lookup_tempfail()))
            };
            access_hooks::check_recipient(self, address, ctx, verdict).await
        })
    }

    fn verify_credentials<'a>(
        &'a self,
        user: &'a str,
        password: &'a str,
        listener: usize,
    ) -> BoxFuture<'a, AuthVerdict> {
        Box::pin(async move {
            let Ok(_permit) = self.hashing.acquire().await else {
                return AuthVerdict::TempFail;
            };
            let state = self.state.current();
            let (u, p) = (user.to_ascii_lowercase(), password.to_string());
            let result =
                tokio::task::spawn_blocking(move || check_credentials(&state, listener, &u, &p))
                    .await;
            match result {
                Ok(Ok(true)) => AuthVerdict::Ok,
                Ok(Ok(false)) => {
                    tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                    AuthVerdict::Fail
                }
                Ok(Err(why)) => {
                    tracing::warn!(
                        "smtp authentication lookup-failed user={user} reason=\"{why}\""
                    );
                    AuthVerdict::TempFail
                }
                Err(_) => AuthVerdict::TempFail,
            }
        })
    }

    fn begin_message(
        &self,
        envelope: Envelope,
    ) -> BoxFuture<'_, Result<Box<dyn MessageWriter>, Reply>> {
        Box::pin(async move {
            match self.queue.begin(envelope).await {
                Ok(incoming) => Ok(Box::new(QueueWriter(incoming)) as Box<dyn MessageWriter>),
                Err(e) => {
                    tracing::warn!("queue: cannot start a message: {e}");
                    Err(reply::queue_error(&e))
                }
            }
        })
    }

    fn begin_message_on(
        &self,
        envelope: Envelope,
        listener: usize,
    ) -> BoxFuture<'_, Result<Box<dyn MessageWriter>, Reply>> {
        Box::pin(async move {
            let state = self.state.current();
            let checks = super::authres_writer::context(&state, &self.authres, &envelope, listener);
            let inner = self.begin_message(envelope).await?;
            Ok(match checks {
                Some(cx) => Box::new(super::authres_writer::AuthresWriter::new(inner, cx))
                    as Box<dyn MessageWriter>,
                None => inner,
            })
        })
    }
}

struct QueueWriter(Incoming);

impl MessageWriter for QueueWriter {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), Reply>> {
        Box::pin(async move {
            self.0.write(chunk).await.map_err(|e| {
                tracing::warn!("queue: write failed: {e}");
                reply::queue_error(&e)
            })
        })
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<String, Reply>> {
        Box::pin(async move {
            match self.0.commit().await {
                Ok(id) => Ok(id.to_string()),
                Err(e) => {
                    tracing::warn!("queue: commit failed: {e}");
                    Err(reply::queue_error(&e))
                }
            }
        })
    }

    fn abort(self: Box<Self>) {
        self.0.abort();
    }
}
