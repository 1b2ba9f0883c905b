//! Authentication results on the way into the queue: a [`MessageWriter`] around the
//! queue's that strips forged `Authentication-Results` fields as the header section
//! streams past, holds the message in memory (up to [`DKIM_BUFFER_LIMIT`]) so DKIM can
//! see all of it, and at the end of DATA runs SPF, DKIM and DMARC, writes our
//! `Authentication-Results` (and junk marks) on top, then the message, then commits, or
//! refuses it with `550 5.7.1` when DMARC says reject and the operator enabled that.
//!
//! A message over the limit is written through from that point on: its results are
//! computed from the header section when the limit is crossed, without DKIM.

use std::net::IpAddr;
use std::sync::Arc;

use mail_auth::MessageAuthenticator;

use super::State;
use crate::authres::headers::{HeaderFacts, HeaderFilter};
use crate::authres::{
    Client, DKIM_BUFFER_LIMIT, Disposition, DkimChecks, DmarcMode, Results, Verifier, authenticate,
    render,
};
use crate::envelope::{Envelope, Origin};
use crate::server::{BoxFuture, MessageWriter};
use crate::session::{Reply, reply};

/// What the checks need to know about the session.
pub(super) struct Context {
    auth: Arc<MessageAuthenticator>,
    authserv_id: String,
    hostname: String,
    ip: IpAddr,
    helo: String,
    mail_from: Option<String>,
    mode: DmarcMode,
    session_id: u64,
}

/// The checks for this message, or `None` when they do not apply: `authres off`, a
/// `no-authres` listener, an authenticated session, the local socket or a loopback client
/// (this host itself: SPF cannot judge 127.0.0.1, and local programs and re-injecting
/// content filters must not be marked as forgers).
pub(super) fn context(
    state: &State,
    verifier: &Verifier,
    envelope: &Envelope,
    listener: usize,
) -> Option<Context> {
    let settings = state.config.authres;
    let Origin::Inet(peer) = envelope.origin else {
        return None;
    };
    let l = state.config.listeners.get(listener)?;
    let loopback = crate::access::net::canonical_ip(peer.ip()).is_loopback();
    if !settings.enabled || l.no_authres || envelope.auth_user.is_some() || loopback {
        return None;
    }
    let auth = match verifier.authenticator(state.config.resolver.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("authres: no resolver, mail goes without results: {e}");
            return None;
        }
    };
    let hostname = l.hostname.clone().unwrap_or_else(|| state.hostname.clone());
    Some(Context {
        auth,
        authserv_id: hostname.clone(),
        hostname,
        ip: peer.ip(),
        helo: envelope.helo.clone(),
        mail_from: envelope.mail_from.clone(),
        mode: settings.dmarc,
        session_id: envelope.session_id,
    })
}

pub(super) struct AuthresWriter {
    inner: Box<dyn MessageWriter>,
    cx: Context,
    filter: HeaderFilter,
    /// The message so far, while it fits the limit.
    held: Vec<u8>,
    /// Set once the limit was crossed: results written, the rest passes through.
    passed_through: Option<Results>,
}

impl AuthresWriter {
    pub(super) fn new(inner: Box<dyn MessageWriter>, cx: Context) -> AuthresWriter {
        AuthresWriter {
            filter: HeaderFilter::new(&cx.authserv_id),
            inner,
            cx,
            held: Vec::new(),
            passed_through: None,
        }
    }
}

/// Runs the checks and logs their outcome. (A free function: the writer itself is not
/// `Sync`, so its futures must not hold a reference to it.)
async fn results(cx: &Context, facts: &HeaderFacts, message: &[u8], complete: bool) -> Results {
    let client = Client {
        ip: cx.ip,
        helo: &cx.helo,
        mail_from: cx.mail_from.as_deref(),
        hostname: &cx.hostname,
    };
    let r = authenticate(
        &cx.auth,
        &client,
        message,
        complete,
        facts.dkim_signed,
        cx.mode,
    )
    .await;
    let dkim = match &r.dkim {
        DkimChecks::Verified(v) if v.is_empty() => "none".to_string(),
        DkimChecks::Verified(v) => v
            .iter()
            .map(|d| format!("{}:{}", d.result.as_str(), d.domain))
            .collect::<Vec<_>>()
            .join(","),
        DkimChecks::TooLarge => "unverified".to_string(),
    };
    tracing::info!(
        "{:016x} smtp authres spf={} dkim={dkim} dmarc={} from-domain={} disposition={:?} forged-removed={}",
        cx.session_id,
        r.spf.result.as_str(),
        r.dmarc.result.as_str(),
        r.dmarc.from_domain.as_deref().unwrap_or("-"),
        r.disposition,
        facts.removed,
    );
    r
}

impl AuthresWriter {
    async fn pass_through(&mut self) -> Result<(), Reply> {
        let r = results(
            &self.cx,
            &self.filter.facts,
            self.filter.header_section(),
            false,
        )
        .await;
        let head = render(&self.cx.authserv_id, &r);
        self.inner.write(head.as_bytes()).await?;
        let held = std::mem::take(&mut self.held);
        self.inner.write(&held).await?;
        self.passed_through = Some(r);
        Ok(())
    }
}

impl MessageWriter for AuthresWriter {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, Result<(), Reply>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(chunk.len());
            self.filter.feed(chunk, &mut out);
            if self.passed_through.is_some() {
                return self.inner.write(&out).await;
            }
            self.held.extend_from_slice(&out);
            if self.held.len() > DKIM_BUFFER_LIMIT {
                self.pass_through().await?;
            }
            Ok(())
        })
    }

    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<String, Reply>> {
        Box::pin(async move {
            let mut out = Vec::new();
            self.filter.finish(&mut out);
            let written = if self.passed_through.is_some() {
                self.inner.write(&out).await
            } else {
                self.held.extend_from_slice(&out);
                let held = std::mem::take(&mut self.held);
                let r = results(&self.cx, &self.filter.facts, &held, true).await;
                if r.disposition == Disposition::Reject {
                    self.inner.abort();
                    return Err(reply::dmarc_rejected(
                        r.dmarc.from_domain.as_deref().unwrap_or(""),
                    ));
                }
                let head = render(&self.cx.authserv_id, &r);
                match self.inner.write(head.as_bytes()).await {
                    Ok(()) => self.inner.write(&held).await,
                    Err(e) => Err(e),
                }
            };
            match written {
                Ok(()) => self.inner.commit().await,
                Err(e) => {
                    self.inner.abort();
                    Err(e)
                }
            }
        })
    }

    fn abort(self: Box<Self>) {
        self.inner.abort();
    }
}
