//! The daemon's side of [`crate::access`]: when the lists, bans, block lists and the
//! greylist are asked, and the one log line each decision writes.

use std::net::IpAddr;

use super::backend::DaemonBackend;
use crate::access::greylist::GreyVerdict;
use crate::access::{Failure, Phase, Verdict, check_address, check_client, reply};
use crate::config::{ListenAuth, TableSource};
use crate::envelope::Origin;
use crate::session::{CheckContext, RecipientVerdict, Reply, SenderVerdict};

async fn client_verdict(b: &DaemonBackend, ip: IpAddr) -> Result<Verdict, String> {
    let state = b.state.current();
    // Without lists there is nothing to look up: no trip to the blocking pool (its
    // hand-off costs more than the rest of the check, once per connection).
    if !state.config.access.has_lists(Phase::Connect) {
        return Ok(Verdict::Unlisted);
    }
    tokio::task::spawn_blocking(move || check_client(&state.config.access, &state.tables, ip))
        .await
        .map_err(|e| e.to_string())?
}

pub(super) async fn check_connect(b: &DaemonBackend, ip: IpAddr, listener: usize) -> Option<Reply> {
    let state = b.state.current();
    match client_verdict(b, ip).await {
        Ok(Verdict::Allowed) => return None,
        // A ban of ours reaches the block table a moment after it takes effect here; the
        // client hears the same reason either way.
        Ok(Verdict::Blocked(_)) if b.guard.is_banned(ip) => {
            tracing::info!("smtp refused address={ip} reason=banned");
            return Some(reply::client_banned(&ip.to_string()));
        }
        Ok(Verdict::Blocked(table)) => {
            tracing::info!("smtp refused address={ip} reason=blocked table={table}");
            return Some(reply::client_blocked(&ip.to_string()));
        }
        Ok(Verdict::Unlisted) => {}
        // A lookup failure must not close the door to everyone: the client goes on to
        // the other checks, and the failure is logged.
        Err(why) => tracing::warn!("smtp access lookup-failed address={ip} reason=\"{why}\""),
    }
    if b.guard.is_banned(ip) {
        tracing::info!("smtp refused address={ip} reason=banned");
        return Some(reply::client_banned(&ip.to_string()));
    }
    // Submission clients (a listener requiring AUTH) often sit on dial-up ranges that
    // block lists carry: the lists judge servers, not users.
    let submission = state
        .config
        .listeners
        .get(listener)
        .is_some_and(|l| matches!(l.auth, Some(ListenAuth::Required(_))));
    if !submission
        && let Some(score) = b
            .guard
            .dnsbl(&state.config.access, state.config.resolver.as_deref(), ip)
            .await
    {
        let threshold = state.config.access.dnsbl_threshold();
        if score.weight >= threshold {
            let zones = score.listed_by.join(",");
            tracing::info!(
                "smtp refused address={ip} reason=dnsbl zones={zones} weight={}",
                score.weight
            );
            return Some(reply::client_dnsbl(&ip.to_string(), &zones));
        }
    }
    None
}

pub(super) fn record_failure(b: &DaemonBackend, ip: IpAddr, failure: Failure) {
    let state = b.state.current();
    let Some(settings) = state.config.access.ban.clone() else {
        return;
    };
    let Some(ban) = b.guard.record_failure(&settings, ip, failure) else {
        return;
    };
    let conf = settings.table.as_ref().and_then(|t| {
        state.config.table(t).and_then(|d| match &d.source {
            TableSource::Sqlite(p) => Some(p.clone()),
            _ => None,
        })
    });
    tokio::task::spawn_blocking(move || {
        // Allow always wins: an allow-listed address is never written as banned.
        if let Ok(Verdict::Allowed) = check_client(&state.config.access, &state.tables, ban.ip) {
            return;
        }
        tracing::info!(
            "smtp banned address={} until={} reason=\"{}\"",
            ban.ip,
            ban.expires_at,
            ban.reason
        );
        if let Some(conf) = conf
            && let Err(e) = crate::access::bans::write_ban(&conf, &ban)
        {
            tracing::warn!("smtp ban-write-failed address={} reason=\"{e}\"", ban.ip);
        }
    });
}

async fn address_verdict(
    b: &DaemonBackend,
    phase: Phase,
    address: &str,
) -> Result<Verdict, String> {
    let state = b.state.current();
    if address.is_empty() || !state.config.access.has_lists(phase) {
        return Ok(Verdict::Unlisted);
    }
    let address = address.to_string();
    tokio::task::spawn_blocking(move || {
        check_address(&state.config.access, &state.tables, phase, &address)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `Some` when the sender lists decide (block); `None` lets the usual checks run.
pub(super) async fn check_sender(
    b: &DaemonBackend,
    address: Option<&str>,
    ctx: &CheckContext,
) -> Option<SenderVerdict> {
    let address = address?;
    match address_verdict(b, Phase::Sender, address).await {
        Ok(Verdict::Blocked(table)) => {
            tracing::info!(
                "{:016x} smtp refused sender=<{address}> reason=blocked table={table}",
                ctx.session_id
            );
            Some(SenderVerdict::Reject(reply::sender_blocked()))
        }
        Ok(_) => None,
        Err(why) => {
            tracing::warn!(
                "{:016x} smtp access lookup-failed sender=<{address}> reason=\"{why}\"",
                ctx.session_id
            );
            Some(SenderVerdict::TempFail(
                crate::session::reply::sender_tempfail(),
            ))
        }
    }
}

/// The recipient lists, then the greylist, for a recipient the rules accepted.
pub(super) async fn check_recipient(
    b: &DaemonBackend,
    address: &str,
    ctx: &CheckContext,
    verdict: RecipientVerdict,
) -> RecipientVerdict {
    if !matches!(verdict, RecipientVerdict::Accept { .. }) {
        return verdict;
    }
    let sid = ctx.session_id;
    match address_verdict(b, Phase::Recipient, address).await {
        Ok(Verdict::Blocked(table)) => {
            tracing::info!("{sid:016x} smtp refused rcpt=<{address}> reason=blocked table={table}");
            return RecipientVerdict::Reject(reply::recipient_blocked());
        }
        Ok(Verdict::Allowed) => return verdict,
        Ok(Verdict::Unlisted) => {}
        Err(why) => {
            tracing::warn!(
                "{sid:016x} smtp access lookup-failed rcpt=<{address}> reason=\"{why}\""
            );
            return RecipientVerdict::TempFail(crate::session::reply::lookup_tempfail());
        }
    }
    let state = b.state.current();
    let Some(settings) = state.config.access.greylist else {
        return verdict;
    };
    // Authenticated and local mail is ours; only strangers are greylisted.
    let Origin::Inet(sa) = ctx.origin else {
        return verdict;
    };
    if ctx.auth_user.is_some() {
        return verdict;
    }
    // Only mail delivered here is greylisted: a recipient the rules relay onwards is our
    // own outbound mail (the rules allowed the client to relay).
    let RecipientVerdict::Accept { targets } = &verdict else {
        return verdict;
    };
    let relayed = targets.iter().any(|t| {
        state
            .config
            .action(&t.action)
            .is_some_and(|a| matches!(a.dispatch, crate::config::Dispatch::Relay(_)))
    });
    if relayed {
        return verdict;
    }
    let sender = ctx.mail_from.clone().unwrap_or_default();
    if matches!(client_verdict(b, sa.ip()).await, Ok(Verdict::Allowed))
        || matches!(
            address_verdict(b, Phase::Sender, &sender).await,
            Ok(Verdict::Allowed)
        )
    {
        return verdict;
    }
    let guard = b.guard.clone();
    let rcpt = address.to_string();
    let grey =
        tokio::task::spawn_blocking(move || guard.greylist(&settings, sa.ip(), &sender, &rcpt))
            .await;
    match grey {
        Ok(Ok(GreyVerdict::Pass)) => verdict,
        Ok(Ok(GreyVerdict::Grey)) => {
            tracing::info!(
                "{sid:016x} smtp greylisted address={} rcpt=<{address}>",
                sa.ip()
            );
            RecipientVerdict::TempFail(reply::greylisted())
        }
        // A broken state database lets mail through rather than delaying it forever.
        Ok(Err(why)) => {
            tracing::warn!("{sid:016x} greylist lookup-failed reason=\"{why}\"");
            verdict
        }
        Err(_) => verdict,
    }
}
