//! Mail-flow figures for the dashboard: the mta's `show stats` read over its control
//! socket (the same client as the queue page), reduced to what an operator watches.
//!
//! The counters are the daemon's since it started; they are not stored, so a restart of
//! the mta starts them again from zero (as OpenSMTPD's `smtpctl show stats` does).

use std::collections::HashMap;

use crate::AppState;
use crate::queue::{ControlError, request};

/// The dashboard's figures, each `None` when the daemon did not report its counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MailFlow {
    /// Messages made durable in the queue: accepted over SMTP, submitted locally, or DSNs.
    pub received: Option<i64>,
    /// Recipients delivered.
    pub delivered: Option<i64>,
    /// Delivery attempts that failed temporarily and were rescheduled.
    pub deferred: Option<i64>,
    /// Recipients that failed permanently or expired in the queue (a DSN was sent).
    pub bounced: Option<i64>,
    /// Recipients waiting in the queue now, and the messages they belong to.
    pub queued: Option<i64>,
    pub queued_messages: Option<i64>,
    /// SMTP sessions open now (`smtp.session`), when the daemon reports it.
    pub sessions: Option<i64>,
    /// `uptime.human`, in OpenSMTPD's `1d2h3m4s` form.
    pub uptime: Option<String>,
}

impl MailFlow {
    /// The figures in the order the dashboard shows them, with "n/a" for a counter the
    /// daemon does not report.
    pub(crate) fn tiles(&self) -> Vec<(&'static str, String)> {
        let n = |v: Option<i64>| v.map_or_else(|| "n/a".to_string(), |v| v.to_string());
        vec![
            ("received", n(self.received)),
            ("delivered", n(self.delivered)),
            ("deferred", n(self.deferred)),
            ("bounced", n(self.bounced)),
            ("in the queue", n(self.queued)),
            ("sessions", n(self.sessions)),
        ]
    }
}

/// What the dashboard shows in its mail-flow box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FlowView {
    /// No control socket is configured, or nothing listens on it.
    NotRunning,
    /// The daemon answered with an error, or the answer broke the protocol.
    Problem(String),
    Figures(MailFlow),
}

/// Parses `show stats`: `key=value` lines. Unknown keys are ignored, so a daemon that
/// reports more (or OpenSMTPD's own `smtpctl show stats` output) still reads.
pub(crate) fn parse_stats(body: &str) -> MailFlow {
    let kv: HashMap<&str, &str> = body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let n = |k: &str| kv.get(k).and_then(|v| v.parse::<i64>().ok());
    let bounced = match (
        n("scheduler.delivery.permfail"),
        n("scheduler.envelope.expired"),
    ) {
        (None, None) => None,
        (p, e) => Some(p.unwrap_or(0).saturating_add(e.unwrap_or(0))),
    };
    MailFlow {
        received: n("queue.commit.messages"),
        delivered: n("scheduler.delivery.ok"),
        deferred: n("scheduler.delivery.tempfail"),
        bounced,
        queued: n("scheduler.envelope"),
        queued_messages: n("scheduler.ramqueue.message"),
        sessions: n("smtp.session"),
        uptime: kv.get("uptime.human").map(|s| s.to_string()),
    }
}

/// Asks the mta for its statistics, if it runs on this box.
pub(crate) async fn fetch(state: &AppState) -> FlowView {
    let Some(path) = &state.config.control_socket else {
        return FlowView::NotRunning;
    };
    match request(path, "show stats").await {
        Ok(body) => FlowView::Figures(parse_stats(&body)),
        Err(ControlError::NotRunning) => FlowView::NotRunning,
        Err(ControlError::Refused(t) | ControlError::Protocol(t)) => FlowView::Problem(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fugu_smtpd_stats_become_dashboard_figures() {
        let flow = parse_stats(
            "queue.commit.messages=12\n\
             queue.commit.rounds=9\n\
             scheduler.delivery.ok=10\n\
             scheduler.delivery.permfail=1\n\
             scheduler.delivery.tempfail=4\n\
             scheduler.envelope=2\n\
             scheduler.envelope.expired=1\n\
             scheduler.envelope.inflight=0\n\
             scheduler.envelope.removed=0\n\
             scheduler.ramqueue.message=1\n\
             uptime=3725\n\
             uptime.human=1h2m5s\n",
        );
        assert_eq!(
            flow,
            MailFlow {
                received: Some(12),
                delivered: Some(10),
                deferred: Some(4),
                bounced: Some(2),
                queued: Some(2),
                queued_messages: Some(1),
                sessions: None,
                uptime: Some("1h2m5s".to_string()),
            }
        );
    }

    #[test]
    fn opensmtpd_session_counter_and_garbage_lines() {
        let flow = parse_stats("smtp.session=7\nnot a stat\nscheduler.delivery.ok=x\n");
        assert_eq!(flow.sessions, Some(7));
        assert_eq!(flow.delivered, None);
        assert_eq!(flow.bounced, None);
    }
}
