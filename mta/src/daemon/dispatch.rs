//! Delivery: the queue's scheduler hands recipients grouped by action; this maps the
//! action's method onto a delivery agent (LMTP, maildir, mbox, mda).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::State;
use crate::config::format::{FormatValues, parse_format, render};
use crate::config::{Action, Decision, Dispatch as Method, LocalMethod, MatchContext};
use crate::deliver::{lmtp, maildir::Maildir, mbox::Mbox, mda};
use crate::envelope::Target;
use crate::expand::{Expansion, expand, resolve};
use crate::queue::{Dispatch, MessageRef, Outcome, RcptOutcome, RcptRef};
use crate::table::Service;

/// An mda command that runs longer than this is killed and retried later.
const MDA_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub struct Deliverer {
    pub(super) state: Arc<super::Shared>,
    /// Outbound state for `relay` actions: resolver, idle connections, limits.
    pub(super) relayer: Arc<crate::relay::Relayer>,
    /// DKIM keys for `dkim-sign` actions, loaded once per key file.
    pub(super) dkim: Arc<crate::dkim::DkimSigner>,
}

/// `uid:gid:home` from a userbase (`userinfo` service).
struct UserInfo {
    uid: u32,
    gid: u32,
    home: String,
}

fn userinfo(state: &State, action: &Action, user: &str) -> Result<Option<UserInfo>, String> {
    let table = match &action.userbase {
        Some(r) => resolve(r, &state.tables).ok_or("userbase table is not open")?,
        None => state
            .tables
            .get("<getpwnam>")
            .map(|t| t.as_ref() as &dyn crate::table::Table)
            .ok_or("no userbase")?,
    };
    let Some(v) = table
        .lookup(Service::Userinfo, user)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let mut parts = v.splitn(3, ':');
    let (Some(uid), Some(gid), Some(home)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("userinfo for {user} is not uid:gid:home: {v:?}"));
    };
    Ok(Some(UserInfo {
        uid: uid
            .trim()
            .parse()
            .map_err(|_| format!("bad uid in userinfo for {user}"))?,
        gid: gid
            .trim()
            .parse()
            .map_err(|_| format!("bad gid in userinfo for {user}"))?,
        home: home.trim().to_string(),
    }))
}

fn all(rcpts: &[RcptRef], outcome: Outcome) -> Vec<RcptOutcome> {
    rcpts
        .iter()
        .map(|r| RcptOutcome {
            evpid: r.evpid,
            outcome: outcome.clone(),
        })
        .collect()
}

fn local_user(r: &RcptRef) -> String {
    r.user.clone().unwrap_or_else(|| {
        r.dest
            .rsplit_once('@')
            .map_or(r.dest.as_str(), |(u, _)| u)
            .to_string()
    })
}

/// The values `%{…}` formats see for one recipient.
fn values(msg: &MessageRef, r: &RcptRef, user: &str, home: &str) -> FormatValues {
    FormatValues {
        sender: msg.sender().unwrap_or("").to_string(),
        rcpt: r.address.clone(),
        dest: r.dest.clone(),
        username: user.to_string(),
        directory: home.to_string(),
        mda: String::new(),
    }
}

impl Deliverer {
    async fn deliver_local(
        &self,
        state: &State,
        action: &Action,
        method: &LocalMethod,
        msg: &MessageRef,
        rcpts: &[RcptRef],
    ) -> Vec<RcptOutcome> {
        let data = match msg.read().await {
            Ok(d) => d,
            Err(e) => {
                return all(
                    rcpts,
                    Outcome::TempFail(format!("421 4.3.0 cannot read the queued message: {e}")),
                );
            }
        };
        let sender = msg.sender();
        let delim = state.config.sub_addr_delim();
        match method {
            LocalMethod::Lmtp { dest, rcpt_to } => {
                // `rcpt-to`: RCPT TO is the address after expansion; otherwise the user.
                let names: Vec<String> = rcpts
                    .iter()
                    .map(|r| {
                        if *rcpt_to {
                            r.dest.clone()
                        } else {
                            local_user(r)
                        }
                    })
                    .collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let agent = lmtp::Lmtp::new(lmtp::Target::parse(dest), state.hostname.clone());
                let outcomes = agent.deliver(sender, &refs, &data).await;
                rcpts
                    .iter()
                    .zip(outcomes)
                    .map(|(r, outcome)| RcptOutcome {
                        evpid: r.evpid,
                        outcome,
                    })
                    .collect()
            }
            LocalMethod::Maildir { path, junk } => {
                let mut out = Vec::with_capacity(rcpts.len());
                for r in rcpts {
                    let outcome = match self.mailbox_path(
                        state,
                        action,
                        msg,
                        r,
                        path.as_deref().unwrap_or("~/Maildir"),
                        delim,
                    ) {
                        Ok((root, _)) => {
                            let md = Maildir {
                                root,
                                junk: *junk,
                                hostname: state.hostname.clone(),
                            };
                            md.deliver(sender, &r.dest, &data).await.0
                        }
                        Err(o) => o,
                    };
                    out.push(RcptOutcome {
                        evpid: r.evpid,
                        outcome,
                    });
                }
                out
            }
            LocalMethod::Mbox => {
                let mut out = Vec::with_capacity(rcpts.len());
                for r in rcpts {
                    let user = local_user(r);
                    let outcome = match userinfo(state, action, &user) {
                        Ok(Some(ui)) => {
                            let mbox = Mbox {
                                path: PathBuf::from("/var/mail").join(&user),
                                owner: Some((ui.uid, ui.gid)),
                            };
                            mbox.deliver(sender, &r.dest, &data, std::time::SystemTime::now())
                                .await
                        }
                        Ok(None) => Outcome::PermFail(format!("550 5.1.1 no such user {user}")),
                        Err(e) => Outcome::TempFail(format!("451 4.3.0 {e}")),
                    };
                    out.push(RcptOutcome {
                        evpid: r.evpid,
                        outcome,
                    });
                }
                out
            }
            LocalMethod::Mda(command) => {
                let mut out = Vec::with_capacity(rcpts.len());
                for r in rcpts {
                    let outcome = match self.mailbox_path(state, action, msg, r, command, delim) {
                        Ok((cmd, ui)) => {
                            let agent = mda::Mda {
                                command: cmd.display().to_string(),
                                env: mda::MdaEnv {
                                    sender: sender.map(str::to_string),
                                    recipient: r.dest.clone(),
                                    original_recipient: r.address.clone(),
                                    user: local_user(r),
                                    home: ui.home.clone(),
                                    shell: None,
                                },
                                user: running_as_root().then_some((ui.uid, ui.gid)),
                                timeout: MDA_TIMEOUT,
                            };
                            agent.deliver(&data).await
                        }
                        Err(o) => o,
                    };
                    out.push(RcptOutcome {
                        evpid: r.evpid,
                        outcome,
                    });
                }
                out
            }
            LocalMethod::ForwardOnly | LocalMethod::ExpandOnly => all(
                rcpts,
                Outcome::PermFail(
                    "550 5.1.1 this action only forwards; nothing to deliver locally".into(),
                ),
            ),
        }
    }

    /// Renders a maildir path or an mda command for one recipient, with its userinfo.
    fn mailbox_path(
        &self,
        state: &State,
        action: &Action,
        msg: &MessageRef,
        r: &RcptRef,
        format: &str,
        delim: char,
    ) -> Result<(PathBuf, UserInfo), Outcome> {
        let user = local_user(r);
        let ui = match userinfo(state, action, &user) {
            Ok(Some(ui)) => ui,
            // Without a userbase entry (maildir with a fixed path and no users), the mail
            // belongs to the daemon's own user.
            Ok(None) if !format.contains("~") && !format.contains("%{user.") => UserInfo {
                uid: 0,
                gid: 0,
                home: String::new(),
            },
            Ok(None) => return Err(Outcome::PermFail(format!("550 5.1.1 no such user {user}"))),
            Err(e) => return Err(Outcome::TempFail(format!("451 4.3.0 {e}"))),
        };
        let format = match format.strip_prefix("~/") {
            Some(rest) => format!("%{{user.directory}}/{rest}"),
            None => format.to_string(),
        };
        let pieces = parse_format(&format, false)
            .map_err(|e| Outcome::PermFail(format!("550 5.3.5 bad path format: {e}")))?;
        let rendered = render(&pieces, &values(msg, r, &user, &ui.home), delim)
            .map_err(|e| Outcome::PermFail(format!("550 5.3.5 {e}")))?;
        Ok((PathBuf::from(rendered), ui))
    }
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Deliverer {
    /// `data` with the DKIM-Signature fields of its From: domain on top (RFC 6376 §5);
    /// unchanged when there is nothing to sign with. Table lookups and key loading
    /// may block, so this runs on the blocking pool.
    async fn dkim_sign(
        &self,
        state: &Arc<State>,
        table: &crate::config::TableRef,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let (signer, state, table) = (self.dkim.clone(), state.clone(), table.clone());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        tokio::task::spawn_blocking(move || {
            let mut signed = signer.sign(&state.tables, &table, &data, now);
            signed.extend_from_slice(&data);
            signed
        })
        .await
        .map_err(|e| format!("421 4.3.0 DKIM signing failed: {e}"))
    }
}

impl Dispatch for Deliverer {
    async fn deliver(&self, action: &str, msg: &MessageRef, rcpts: &[RcptRef]) -> Vec<RcptOutcome> {
        let state = self.state.current();
        let Some(act) = state.config.action(action) else {
            // The configuration was reloaded without this action: keep the mail.
            return all(
                rcpts,
                Outcome::TempFail(format!(
                    "451 4.3.0 no action {action:?} in the configuration"
                )),
            );
        };
        match &act.dispatch {
            Method::Local(method) => self.deliver_local(&state, act, method, msg, rcpts).await,
            Method::Relay(relay) => {
                let data = match msg.read().await {
                    Ok(d) => d,
                    Err(e) => {
                        return all(
                            rcpts,
                            Outcome::TempFail(format!(
                                "421 4.3.0 cannot read the queued message: {e}"
                            )),
                        );
                    }
                };
                let data = match &act.dkim_sign {
                    Some(table) => match self.dkim_sign(&state, table, data).await {
                        Ok(d) => d,
                        Err(e) => return all(rcpts, Outcome::TempFail(e)),
                    },
                    None => data,
                };
                self.relayer
                    .deliver(crate::relay::Request {
                        config: &state.config,
                        tables: &state.tables,
                        relay,
                        hostname: &state.hostname,
                        msg,
                        rcpts,
                        data: &data,
                    })
                    .await
            }
        }
    }

    fn is_relay(&self, action: &str) -> bool {
        let state = self.state.current();
        state
            .config
            .action(action)
            .is_some_and(|a| matches!(a.dispatch, Method::Relay(_)))
    }

    fn bounce_targets(&self, sender: &str) -> Option<Vec<Target>> {
        let state = self.state.current();
        // A bounce is mail from this server to the original sender.
        let ctx = MatchContext {
            local_enqueue: true,
            mail_from: "",
            rcpt_to: sender,
            ..Default::default()
        };
        match state.config.match_rcpt(&ctx, &state.tables) {
            Decision::Action { action, .. } => {
                match expand(&state.config, &state.tables, &ctx, action) {
                    Expansion::Targets(t) => Some(t),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}
