//! The scheduler: picks due recipients, groups them per message, action and destination
//! domain, hands each group to a delivery agent through [`Dispatch`], and applies the
//! outcome per recipient: delivered → removed; temporary → retried with exponential
//! backoff and jitter until the queue ttl; permanent or expired → bounced (RFC 3464 DSN,
//! never to the null sender) and removed.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use super::format::{RcptState, StoredEnvelope};
use super::id::{EvpId, MsgId, random_u64};
use super::{Queue, bounce, codec, io_error};
use crate::envelope::{Envelope, Origin, Recipient};
use crate::error::Error;

/// A future whose panic becomes an error, as a spawned task's does, without a task of
/// its own: every delivery attempt runs through one. Boxed, so the attempt's task stays
/// small while the agent's state (several KiB for a relay) is allocated once.
struct CatchUnwind<'a, T>(Pin<Box<dyn Future<Output = T> + Send + 'a>>);

impl<T> Future for CatchUnwind<'_, T> {
    type Output = std::thread::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// What a delivery agent reports for one recipient. The text is the peer's reply or the
/// agent's error, e.g. `250 2.0.0 <x> Saved` or `452 4.2.2 Quota exceeded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered(String),
    TempFail(String),
    PermFail(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptOutcome {
    pub evpid: EvpId,
    pub outcome: Outcome,
}

/// One recipient handed to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptRef {
    pub evpid: EvpId,
    /// The address as accepted at RCPT.
    pub address: String,
    /// The final address after expansion (`address` when nothing expanded).
    pub dest: String,
    /// The local user owning the mail, for local actions.
    pub user: Option<String>,
    pub orcpt: Option<String>,
    /// Attempts so far.
    pub retries: u32,
}

/// The message handed to an agent: its envelope header and a way to read its bytes.
#[derive(Debug, Clone)]
pub struct MessageRef {
    pub msgid: MsgId,
    pub envelope: Arc<Envelope>,
    /// Unix seconds when it was queued (for `delay=` in logs).
    pub ctime: i64,
    pub(crate) queue_dir: Arc<Path>,
    pub(crate) encoding: super::MessageEncoding,
    pub(crate) key: Option<[u8; 32]>,
    /// Where the bytes are in the journal (plain encoding only): always while the
    /// message has no files yet, else for the first attempt.
    pub(crate) body: Option<Arc<super::JournalBody>>,
}

impl MessageRef {
    /// `None` is the null reverse-path.
    pub fn sender(&self) -> Option<&str> {
        self.envelope.mail_from.as_deref()
    }

    /// The message as received (CRLF line ends, dot-unstuffed), from the journal or
    /// decoded from the spool.
    pub async fn read(&self) -> Result<Vec<u8>, Error> {
        // A pread of at most 256 KiB that was just written: no hand-off to the blocking
        // pool for it.
        if let Some(b) = &self.body
            && let Some(bytes) = b.read().map_err(|e| io_error(&self.path(), e))?
        {
            return Ok(bytes);
        }
        let path = self.path();
        let enc = self.encoding;
        let key = self.key;
        tokio::task::spawn_blocking(move || {
            std::fs::read(&path)
                .and_then(|b| codec::decode(enc, key.as_ref(), b))
                .map_err(|e| io_error(&path, e))
        })
        .await
        .map_err(super::blocking_error)?
    }

    /// The message's file in `queue/` (it may not exist yet: see `body`).
    fn path(&self) -> PathBuf {
        super::msg_file(&self.queue_dir, self.msgid)
    }
}

/// The mapping from an action name to a delivery agent, implemented by the daemon from
/// the parsed `action` lines.
pub trait Dispatch: Send + Sync + 'static {
    /// Delivers `msg` to `rcpts` with the action named `action`; one outcome per
    /// recipient (a missing outcome counts as a temporary failure).
    fn deliver(
        &self,
        action: &str,
        msg: &MessageRef,
        rcpts: &[RcptRef],
    ) -> impl Future<Output = Vec<RcptOutcome>> + Send;

    /// Where a bounce to `sender` goes (as the rule set routes a locally submitted
    /// message to that address, expanded); `None` drops the bounce, logged.
    fn bounce_targets(&self, sender: &str) -> Option<Vec<crate::envelope::Target>>;

    /// Whether `action` relays to another host (an `mta` agent, paused by `pause mta`,
    /// logged as `mta delivery`) rather than delivering locally (`mda`).
    fn is_relay(&self, _action: &str) -> bool {
        false
    }
}

pub struct Scheduler<D: Dispatch> {
    queue: Queue,
    dispatch: Arc<D>,
}

impl<D: Dispatch> Clone for Scheduler<D> {
    fn clone(&self) -> Self {
        Scheduler {
            queue: self.queue.clone(),
            dispatch: self.dispatch.clone(),
        }
    }
}

struct Work {
    msg: MessageRef,
    action: String,
    dest: String,
    rcpts: Vec<RcptRef>,
}

/// A recipient that will not be delivered, on its way to a DSN.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub evpid: EvpId,
    pub diagnostic: String,
    pub expired: bool,
}

fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

impl<D: Dispatch> Scheduler<D> {
    pub fn new(queue: Queue, dispatch: Arc<D>) -> Self {
        Scheduler { queue, dispatch }
    }

    /// Delivers everything due now and waits for the outcomes to be applied; returns how
    /// many recipients were attempted or expired. Tests drive the queue with this and a
    /// `ManualClock`.
    pub async fn run_once(&self) -> usize {
        let now = self.queue.now();
        let (works, expired) = self.take_due(now);
        let mut n = 0;
        for (msgid, failures) in expired {
            n += failures.len();
            self.fail(msgid, failures).await;
        }
        let mut set = tokio::task::JoinSet::new();
        for w in works {
            n += w.rcpts.len();
            let s = self.clone();
            set.spawn(async move { s.attempt(w).await });
        }
        while set.join_next().await.is_some() {}
        n
    }

    /// The daemon's scheduling loop; returns only if the runtime shuts down.
    pub async fn run(&self) {
        let mut set = tokio::task::JoinSet::new();
        loop {
            // A finished task keeps its memory until it is joined, and the wait below
            // joins one at most: the others are joined here.
            while set.try_join_next().is_some() {}
            let now = self.queue.now();
            let (works, expired) = self.take_due(now);
            for (msgid, failures) in expired {
                self.fail(msgid, failures).await;
            }
            for w in works {
                let s = self.clone();
                set.spawn(async move { s.attempt(w).await });
            }
            // The clock may be moved by hand or jump: never sleep long on a computed time.
            let wait = {
                let st = self.queue.state();
                match st.due.first() {
                    Some((t, _)) if *t > now => Duration::from_secs((*t - now) as u64),
                    _ => Duration::from_secs(1),
                }
            }
            .min(Duration::from_secs(1));
            tokio::select! {
                () = self.queue.woken() => {}
                Some(_) = set.join_next(), if !set.is_empty() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Moves due recipients to in-flight, grouped into deliveries, respecting the
    /// per-destination limit; collects expired ones.
    #[allow(clippy::type_complexity)]
    fn take_due(&self, now: i64) -> (Vec<Work>, Vec<(MsgId, Vec<Failure>)>) {
        let cfg = &self.queue.inner.config;
        let mut guard = self.queue.state();
        let st = &mut *guard;
        st.release_held(cfg.max_inflight_per_destination);
        let candidates: Vec<(i64, EvpId)> =
            st.due.range(..=(now, EvpId(u64::MAX))).copied().collect();
        let mut works: Vec<Work> = Vec::new();
        let mut expired: Vec<(MsgId, Vec<Failure>)> = Vec::new();
        let mut relay_of: Vec<(String, bool)> = Vec::new();
        let mut dest_buf = String::new();
        for (t, evpid) in candidates {
            let msgid = evpid.msgid();
            let Some(entry) = st.messages.get_mut(&msgid) else {
                st.due.remove(&(t, evpid));
                continue;
            };
            let Some(r) = entry.env.rcpts.iter().find(|r| r.evpid == evpid) else {
                st.due.remove(&(t, evpid));
                continue;
            };
            if now >= entry.env.expire {
                let diagnostic = r
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "Envelope expired".into());
                let f = Failure {
                    evpid,
                    diagnostic,
                    expired: true,
                };
                match expired.iter_mut().find(|(m, _)| *m == msgid) {
                    Some((_, v)) => v.push(f),
                    None => expired.push((msgid, vec![f])),
                }
                st.due.remove(&(t, evpid));
                st.inflight.insert(evpid);
                continue;
            }
            // Recipients held back by a pause or a full destination are set aside until
            // a resume or a free slot, so a wake looks at each of them once; these checks
            // come first and allocate nothing (the agent's `is_relay` reads the live
            // configuration).
            let relay = match relay_of.iter().find(|(a, _)| *a == r.recipient.action) {
                Some((_, relay)) => *relay,
                None => {
                    let relay = self.dispatch.is_relay(&r.recipient.action);
                    relay_of.push((r.recipient.action.clone(), relay));
                    relay
                }
            };
            if self.queue.is_paused(relay) {
                st.due.remove(&(t, evpid));
                st.held_paused[usize::from(relay)].insert((t, evpid));
                continue;
            }
            dest_buf.clear();
            dest_buf.push_str(&r.recipient.action);
            dest_buf.push('|');
            dest_buf.push_str(domain_of(&r.recipient.address));
            dest_buf[r.recipient.action.len() + 1..].make_ascii_lowercase();
            let joined = works.iter().position(|w| {
                w.msg.msgid == msgid
                    && w.dest == dest_buf
                    && w.rcpts.len() < cfg.max_rcpts_per_delivery
            });
            if joined.is_none()
                && st
                    .dest_inflight
                    .get(dest_buf.as_str())
                    .copied()
                    .unwrap_or(0)
                    >= cfg.max_inflight_per_destination
            {
                st.due.remove(&(t, evpid));
                match st.held_full.get_mut(dest_buf.as_str()) {
                    Some(held) => {
                        held.insert((t, evpid));
                    }
                    None => {
                        st.held_full
                            .insert(dest_buf.clone(), BTreeSet::from([(t, evpid)]));
                    }
                }
                continue;
            }
            let action = r.recipient.action.clone();
            let dest = dest_buf.clone();
            let rref = RcptRef {
                evpid,
                address: r.recipient.address.clone(),
                dest: r
                    .recipient
                    .dest
                    .clone()
                    .unwrap_or_else(|| r.recipient.address.clone()),
                user: r.recipient.user.clone(),
                orcpt: r.recipient.orcpt.clone(),
                retries: r.retries,
            };
            match joined.and_then(|i| works.get_mut(i)) {
                Some(w) => w.rcpts.push(rref),
                None => {
                    match st.dest_inflight.get_mut(dest.as_str()) {
                        Some(n) => *n += 1,
                        None => {
                            st.dest_inflight.insert(dest.clone(), 1);
                        }
                    }
                    works.push(Work {
                        msg: MessageRef {
                            msgid,
                            envelope: entry.env.header.clone(),
                            ctime: entry.env.ctime,
                            queue_dir: self.queue.inner.queue_dir.clone(),
                            encoding: entry.env.encoding,
                            key: cfg.encryption_key,
                            // Held only in the journal: every attempt reads it there.
                            body: if entry.on_disk {
                                entry.body.take()
                            } else {
                                entry.body.clone()
                            },
                        },
                        action,
                        dest,
                        rcpts: vec![rref],
                    });
                }
            }
            st.due.remove(&(t, evpid));
            st.inflight.insert(evpid);
        }
        // Recipients in the order the client gave them (evpids are random).
        for w in &mut works {
            if let Some(e) = st.messages.get(&w.msg.msgid) {
                w.rcpts
                    .sort_by_key(|r| e.env.rcpts.iter().position(|x| x.evpid == r.evpid));
            }
        }
        (works, expired)
    }

    async fn attempt(&self, w: Work) {
        // A panicking agent must not leave its recipients in flight forever: its
        // recipients get no outcome, which counts as a temporary failure.
        let delivery = self.dispatch.deliver(&w.action, &w.msg, &w.rcpts);
        let out = CatchUnwind(Box::pin(delivery)).await.unwrap_or_else(|_| {
            tracing::error!("delivery agent for action {:?} panicked", w.action);
            Vec::new()
        });
        // Boxed: applying the outcome (2 KiB of state, a bounce among it) would otherwise
        // be part of every delivery's task for all of its life, the wait for the peer
        // included.
        Box::pin(self.apply(w, out)).await;
    }

    fn backoff(&self, retries: u32) -> i64 {
        let cfg = &self.queue.inner.config;
        let base = cfg.retry_base.as_secs().max(1);
        let exp = base.saturating_mul(1u64 << retries.saturating_sub(1).min(30));
        let d = exp.min(cfg.retry_max.as_secs().max(1));
        // ±10% jitter so deferred mail for one destination does not retry in lockstep.
        let span = d / 5;
        let jitter = if span == 0 {
            0
        } else {
            random_u64() % (span + 1)
        };
        i64::try_from(d - d / 10 + jitter).unwrap_or(i64::MAX)
    }

    async fn apply(&self, w: Work, outcomes: Vec<RcptOutcome>) {
        let now = self.queue.now();
        let msgid = w.msg.msgid;
        let mut failures = Vec::new();
        let mut delayed: Vec<bounce::FailedRcpt> = Vec::new();
        let mut succeeded: Vec<bounce::FailedRcpt> = Vec::new();
        let mut snapshot: Option<StoredEnvelope> = None;
        let mut warned_for = 0u64;
        let relayed = self.dispatch.is_relay(&w.action);
        {
            let mut st = self.queue.state();
            if let Some(n) = st.dest_inflight.get_mut(&w.dest) {
                *n = n.saturating_sub(1);
            }
            for rref in &w.rcpts {
                st.inflight.remove(&rref.evpid);
                let removing = st.removing.remove(&rref.evpid);
                let outcome = outcomes
                    .iter()
                    .find(|o| o.evpid == rref.evpid)
                    .map(|o| o.outcome.clone())
                    .unwrap_or_else(|| {
                        Outcome::TempFail("421 4.3.0 no result from the delivery agent".into())
                    });
                let backoff = self.backoff(rref.retries + 1);
                let Some(entry) = st.messages.get_mut(&msgid) else {
                    continue;
                };
                let expire = entry.env.expire;
                let delay = now - entry.env.ctime;
                let Some(idx) = entry.env.rcpts.iter().position(|r| r.evpid == rref.evpid) else {
                    continue;
                };
                let (result, stat, counter) = match &outcome {
                    Outcome::Delivered(s) => ("Ok", s, &self.queue.inner.counters.delivered),
                    Outcome::TempFail(s) => ("TempFail", s, &self.queue.inner.counters.tempfail),
                    Outcome::PermFail(s) => ("PermFail", s, &self.queue.inner.counters.permfail),
                };
                counter.fetch_add(1, Ordering::Relaxed);
                // The relay agent logs its own `mta delivery` line, with the peer it talked
                // to (`relay=`, `source=`), which only it knows.
                if !relayed {
                    tracing::info!(
                        "{}",
                        delivery_line(&DeliveryLog {
                            session_id: w.msg.envelope.session_id,
                            relay: false,
                            peer: None,
                            rcpt: rref,
                            sender: entry.env.header.mail_from.as_deref().unwrap_or(""),
                            delay: u64::try_from(delay).unwrap_or(0),
                            result,
                            stat,
                        })
                    );
                }
                if removing && !matches!(outcome, Outcome::Delivered(_)) {
                    tracing::info!(
                        "delivery: Remove for {}: stat=Removed by administrator",
                        rref.evpid
                    );
                    self.queue
                        .inner
                        .counters
                        .removed
                        .fetch_add(1, Ordering::Relaxed);
                    entry.env.rcpts.remove(idx);
                    continue;
                }
                let notify = entry.env.rcpts[idx].recipient.notify;
                let report = |r: &super::StoredRcpt, diagnostic: &str| bounce::FailedRcpt {
                    address: r.recipient.address.clone(),
                    orcpt: r.recipient.orcpt.clone(),
                    diagnostic: diagnostic.to_string(),
                    expired: false,
                    last_attempt: Some(now),
                };
                match outcome {
                    Outcome::Delivered(reply) => {
                        // RFC 3461 §4.1: success notices only when asked for.
                        if notify.is_some_and(|n| n.success && !n.never) {
                            succeeded.push(report(&entry.env.rcpts[idx], &reply));
                            snapshot.get_or_insert_with(|| entry.env.clone());
                        }
                        entry.env.rcpts.remove(idx);
                    }
                    Outcome::TempFail(e) => {
                        let ctime = entry.env.ctime;
                        let r = &mut entry.env.rcpts[idx];
                        r.retries += 1;
                        r.last_try = now;
                        r.state = RcptState::Deferred;
                        r.last_error = Some(e.clone());
                        // One warning per `bounce warn-interval` the message has waited;
                        // NOTIFY absent means the default, which includes DELAY.
                        let passed: Vec<u64> = self
                            .queue
                            .inner
                            .config
                            .warn_intervals
                            .iter()
                            .map(|d| d.as_secs())
                            .filter(|d| now - ctime >= i64::try_from(*d).unwrap_or(i64::MAX))
                            .collect();
                        let count = u32::try_from(passed.len()).unwrap_or(u32::MAX);
                        if count > r.warnings && now < expire {
                            r.warnings = count;
                            warned_for = warned_for.max(passed.iter().copied().max().unwrap_or(0));
                            if notify.is_none_or(|n| n.delay && !n.never) {
                                delayed.push(report(r, &e));
                            }
                        }
                        if now >= expire {
                            failures.push(Failure {
                                evpid: rref.evpid,
                                diagnostic: e,
                                expired: true,
                            });
                            st.inflight.insert(rref.evpid);
                        } else {
                            let next = now.saturating_add(backoff).min(expire);
                            r.next_try = next;
                            st.due.insert((next, rref.evpid));
                        }
                    }
                    Outcome::PermFail(e) => {
                        let r = &mut entry.env.rcpts[idx];
                        r.retries += 1;
                        r.last_try = now;
                        r.last_error = Some(e.clone());
                        failures.push(Failure {
                            evpid: rref.evpid,
                            diagnostic: e,
                            expired: false,
                        });
                        st.inflight.insert(rref.evpid);
                    }
                }
            }
            if snapshot.is_none() && !delayed.is_empty() {
                snapshot = st.messages.get(&msgid).map(|e| e.env.clone());
            }
        }
        if let Some(env) = &snapshot {
            for (kind, list) in [
                (
                    bounce::ReportKind::Delay {
                        waited: warned_for,
                        until: env.expire,
                    },
                    &delayed,
                ),
                (bounce::ReportKind::Success { relayed }, &succeeded),
            ] {
                if let Err(e) = self.queue_report(env, kind, list).await {
                    tracing::error!("queue: cannot queue a report for {msgid}: {e}");
                }
            }
        }
        if failures.is_empty() {
            self.persist_logged(msgid).await;
        } else {
            self.fail(msgid, failures).await;
        }
        self.queue.inner.wake.notify_one();
    }

    async fn persist_logged(&self, msgid: MsgId) {
        if let Err(e) = self.queue.persist(msgid).await {
            tracing::error!("queue: cannot update message {msgid}: {e}");
        }
    }

    /// Bounces `failures` (one DSN for all of them), then drops them from the message.
    /// If the DSN cannot be queued (full disk), they are deferred and tried again.
    async fn fail(&self, msgid: MsgId, failures: Vec<Failure>) {
        let now = self.queue.now();
        let snapshot: Option<StoredEnvelope> = self
            .queue
            .state()
            .messages
            .get(&msgid)
            .map(|e| e.env.clone());
        let Some(env) = snapshot else { return };
        let queued = self.queue_dsn(&env, &failures).await;
        {
            let mut st = self.queue.state();
            let retry_at = now + self.backoff(1);
            for f in &failures {
                st.inflight.remove(&f.evpid);
                // Its report is queued already: a removal asked for meanwhile is moot.
                st.removing.remove(&f.evpid);
                if queued.is_err() {
                    if let Some(r) = st
                        .messages
                        .get_mut(&msgid)
                        .and_then(|m| m.env.rcpts.iter_mut().find(|r| r.evpid == f.evpid))
                    {
                        r.next_try = retry_at;
                    }
                    st.due.insert((retry_at, f.evpid));
                    continue;
                }
                if let Some(m) = st.messages.get_mut(&msgid) {
                    if f.expired
                        && let Some(r) = m.env.rcpts.iter().find(|r| r.evpid == f.evpid)
                    {
                        self.queue
                            .inner
                            .counters
                            .expired
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            "delivery: Expire for {}: from=<{}>, to=<{}>, delay={}s, stat=Envelope expired",
                            f.evpid,
                            env.header.mail_from.as_deref().unwrap_or(""),
                            r.recipient.address,
                            now - env.ctime
                        );
                    }
                    m.env.rcpts.retain(|r| r.evpid != f.evpid);
                }
            }
        }
        if let Err(e) = &queued {
            tracing::error!("queue: cannot queue a bounce for {msgid}, retrying later: {e}");
        }
        self.persist_logged(msgid).await;
    }

    async fn queue_dsn(&self, env: &StoredEnvelope, failures: &[Failure]) -> Result<(), Error> {
        // RFC 3461 §5.2.1: no DSN to the null reverse-path, and never bounce a bounce.
        if env.header.mail_from.is_none() || env.is_bounce {
            return Ok(());
        }
        let wanted: Vec<bounce::FailedRcpt> = failures
            .iter()
            .filter_map(|f| {
                let r = env.rcpts.iter().find(|r| r.evpid == f.evpid)?;
                // RFC 3461 §4.1: NOTIFY without FAILURE (or NEVER) means no failure DSN.
                if let Some(n) = &r.recipient.notify
                    && (n.never || !n.failure)
                {
                    return None;
                }
                Some(bounce::FailedRcpt {
                    address: r.recipient.address.clone(),
                    orcpt: r.recipient.orcpt.clone(),
                    diagnostic: f.diagnostic.clone(),
                    expired: f.expired,
                    last_attempt: (r.last_try != 0).then_some(r.last_try),
                })
            })
            .collect();
        self.queue_report(env, bounce::ReportKind::Failure, &wanted)
            .await
    }

    /// Queues a report of `kind` about `rcpts` to the message's sender: never to the null
    /// sender, never about a bounce.
    async fn queue_report(
        &self,
        env: &StoredEnvelope,
        kind: bounce::ReportKind,
        wanted: &[bounce::FailedRcpt],
    ) -> Result<(), Error> {
        let Some(sender) = env.header.mail_from.as_deref() else {
            return Ok(());
        };
        if env.is_bounce || wanted.is_empty() {
            return Ok(());
        }
        let Some(targets) = self
            .dispatch
            .bounce_targets(sender)
            .filter(|t| !t.is_empty())
        else {
            tracing::warn!(
                "queue: no action delivers a bounce to <{sender}>; bounce for {} dropped",
                env.msgid
            );
            return Ok(());
        };
        let original = match self.queue.message_ref(env.msgid) {
            Some(m) => m.read().await.unwrap_or_default(),
            None => Vec::new(),
        };
        let cfg = &self.queue.inner.config;
        let dsn = bounce::render_report(
            &bounce::DsnInput {
                hostname: &cfg.hostname,
                now: self.queue.inner.clock.now(),
                boundary: &format!("{:016x}", random_u64()),
                message_id: &format!("{:016x}@{}", random_u64(), cfg.hostname),
                envelope: env,
                failed: wanted,
                original: &original,
            },
            kind,
        );
        let mut inc = self
            .queue
            .begin_inner(
                Envelope {
                    session_id: env.header.session_id,
                    origin: Origin::Local,
                    helo: cfg.hostname.clone(),
                    rdns: None,
                    tag: None,
                    auth_user: None,
                    protocol: "LOCAL".into(),
                    mail_from: None,
                    body_type: env.header.body_type,
                    smtputf8: env.header.smtputf8,
                    dsn_ret: None,
                    dsn_envid: None,
                    recipients: targets
                        .into_iter()
                        .map(|t| Recipient {
                            address: sender.to_string(),
                            action: t.action,
                            dest: (t.dest != sender).then_some(t.dest),
                            user: t.user,
                            orcpt: None,
                            notify: None,
                        })
                        .collect(),
                },
                true,
            )
            .await?;
        inc.write(&dsn).await?;
        let id = inc.commit().await?;
        let what = match kind {
            bounce::ReportKind::Failure => "bounce",
            bounce::ReportKind::Delay { .. } => "delay warning",
            bounce::ReportKind::Success { .. } => "success notice",
        };
        tracing::info!("queue: {what} {id} for {} queued to <{sender}>", env.msgid);
        Ok(())
    }
}

/// What one `mda delivery` / `mta delivery` log line says.
pub(crate) struct DeliveryLog<'a> {
    pub session_id: u64,
    pub relay: bool,
    /// For relayed mail: our address and the peer's (`source="…" relay="…"`).
    pub peer: Option<(&'a str, &'a str)>,
    pub rcpt: &'a RcptRef,
    pub sender: &'a str,
    pub delay: u64,
    pub result: &'a str,
    pub stat: &'a str,
}

/// The scheduler's delivery line in OpenSMTPD 6.4+'s format: `mda delivery` (mda.c) with
/// `user=` and bare values, `mta delivery` (mta.c) with quoted `result`/`stat`; `to` is the
/// final address and `rcpt` the one accepted at RCPT (`mda` prints it only when they
/// differ, `mta` always, `<->` when equal).
pub(crate) fn delivery_line(l: &DeliveryLog<'_>) -> String {
    let delay = crate::control::duration_text(l.delay);
    let r = l.rcpt;
    if l.relay {
        let rcpt = if r.address == r.dest {
            "-"
        } else {
            r.address.as_str()
        };
        let peer = l
            .peer
            .map(|(source, relay)| format!(" source=\"{source}\" relay=\"{relay}\""))
            .unwrap_or_default();
        format!(
            "{:016x} mta delivery evpid={} from=<{}> to=<{}> rcpt=<{rcpt}>{peer} delay={delay} result=\"{}\" stat=\"{}\"",
            l.session_id, r.evpid, l.sender, r.dest, l.result, l.stat
        )
    } else {
        let rcpt = if r.address == r.dest {
            String::new()
        } else {
            format!(" rcpt=<{}>", r.address)
        };
        let user = r
            .user
            .as_deref()
            .unwrap_or_else(|| r.dest.rsplit_once('@').map_or(r.dest.as_str(), |(u, _)| u));
        format!(
            "{:016x} mda delivery evpid={} from=<{}> to=<{}>{rcpt} user={user} delay={delay} result={} stat={}",
            l.session_id, r.evpid, l.sender, r.dest, l.result, l.stat
        )
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    fn rcpt(address: &str, dest: &str, user: Option<&str>) -> RcptRef {
        RcptRef {
            evpid: EvpId(0x1a2b_3c4d_5e6f_7081),
            address: address.into(),
            dest: dest.into(),
            user: user.map(str::to_string),
            orcpt: None,
            retries: 0,
        }
    }

    #[test]
    fn local_deliveries_log_as_mda_with_rcpt_only_when_expanded() {
        let r = rcpt("postmaster@example.org", "bob@example.org", Some("bob"));
        let line = delivery_line(&DeliveryLog {
            session_id: 0xabc,
            relay: false,
            peer: None,
            rcpt: &r,
            sender: "alice@example.net",
            delay: 65,
            result: "Ok",
            stat: "Delivered",
        });
        assert_eq!(
            line,
            "0000000000000abc mda delivery evpid=1a2b3c4d5e6f7081 from=<alice@example.net> \
             to=<bob@example.org> rcpt=<postmaster@example.org> user=bob delay=1m5s result=Ok stat=Delivered"
        );
        let same = rcpt("bob@example.org", "bob@example.org", None);
        let line = delivery_line(&DeliveryLog {
            session_id: 0xabc,
            relay: false,
            peer: None,
            rcpt: &same,
            sender: "",
            delay: 0,
            result: "TempFail",
            stat: "421 4.3.0 down",
        });
        assert_eq!(
            line,
            "0000000000000abc mda delivery evpid=1a2b3c4d5e6f7081 from=<> to=<bob@example.org> \
             user=bob delay=0s result=TempFail stat=421 4.3.0 down"
        );
    }

    #[test]
    fn relay_deliveries_log_as_mta_with_quoted_result_and_stat() {
        let r = rcpt("carol@example.com", "carol@example.com", None);
        let line = delivery_line(&DeliveryLog {
            session_id: 1,
            relay: true,
            peer: Some(("192.0.2.1", "198.51.100.7 (mx.example.com)")),
            rcpt: &r,
            sender: "alice@example.org",
            delay: 2,
            result: "Ok",
            stat: "250 2.0.0 Ok: queued as ABC",
        });
        assert_eq!(
            line,
            "0000000000000001 mta delivery evpid=1a2b3c4d5e6f7081 from=<alice@example.org> \
             to=<carol@example.com> rcpt=<-> source=\"192.0.2.1\" relay=\"198.51.100.7 (mx.example.com)\" delay=2s result=\"Ok\" stat=\"250 2.0.0 Ok: queued as ABC\""
        );
    }
}
