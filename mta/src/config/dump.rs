//! The normalised text of a [`Config`] (`fugu smtpd -n --dump`): every value quoted, the
//! implicit `from local`/`for local` written out, declarations before their uses. It
//! parses back to an equal `Config`.

use std::fmt::Write;
use std::time::Duration;

use super::model::*;
use crate::table::StaticTable;

pub(crate) fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn name(s: &str) -> String {
    let simple = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !super::parser::is_keyword(s)
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple { s.to_owned() } else { q(s) }
}

pub(crate) fn delay(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn inline(t: &StaticTable) -> String {
    match t {
        StaticTable::List(v) => format!(
            "{{ {} }}",
            v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
        ),
        StaticTable::Map(v) => format!(
            "{{ {} }}",
            v.iter()
                .map(|(k, val)| format!("{} = {}", q(k), q(val)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn tref(t: &TableRef) -> String {
    match t {
        TableRef::Named(n) => format!("<{}>", name(n)),
        TableRef::Inline(t) => inline(t),
    }
}

fn crit(c: &TableCrit) -> String {
    if c.regex {
        format!("regex {}", tref(&c.table))
    } else {
        tref(&c.table)
    }
}

fn opt_crit(prefix: &str, c: &Option<TableCrit>) -> String {
    match c {
        Some(c) => format!("{prefix} {}", crit(c)),
        None => prefix.to_owned(),
    }
}

fn criterion(c: &Criterion) -> String {
    match c {
        Criterion::Tag(t) => format!("tag {}", crit(t)),
        Criterion::FromAny => "from any".into(),
        Criterion::FromLocal => "from local".into(),
        Criterion::FromSocket => "from socket".into(),
        Criterion::FromSrc(t) => format!("from src {}", crit(t)),
        Criterion::FromRdns(t) => opt_crit("from rdns", t),
        Criterion::FromAuth(t) => opt_crit("from auth", t),
        Criterion::FromMailFrom(t) => format!("from mail-from {}", crit(t)),
        Criterion::ForAny => "for any".into(),
        Criterion::ForLocal => "for local".into(),
        Criterion::ForDomain(t) => format!("for domain {}", crit(t)),
        Criterion::ForRcptTo(t) => format!("for rcpt-to {}", crit(t)),
        Criterion::Helo(t) => format!("helo {}", crit(t)),
        Criterion::Auth(t) => opt_crit("auth", t),
        Criterion::MailFrom(t) => format!("mail-from {}", crit(t)),
        Criterion::RcptTo(t) => format!("rcpt-to {}", crit(t)),
        Criterion::Tls => "tls".into(),
    }
}

fn filter_ref(f: &FilterRef) -> String {
    match f {
        FilterRef::Name(n) => q(n),
        FilterRef::Chain(v) => format!(
            "{{ {} }}",
            v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// fugu's `access`, `greylist` and `dnsbl` lines (after the tables they name).
fn access(a: &crate::access::AccessSettings) -> Vec<String> {
    let mut out = Vec::new();
    for l in &a.lists {
        out.push(format!(
            "access {} {} {}",
            l.action.keyword(),
            l.phase.keyword(),
            tref(&l.table)
        ));
    }
    if let Some(b) = &a.ban {
        let table = b
            .table
            .as_ref()
            .map(|t| format!(" <{}>", name(t)))
            .unwrap_or_default();
        out.push(format!(
            "access ban{table} auth-failures {} errors {} within {} for {}",
            b.auth_failures,
            b.errors,
            delay(b.within),
            delay(b.duration)
        ));
    }
    if let Some(g) = &a.greylist {
        out.push(format!(
            "greylist pass {} grey-expiry {} white-expiry {}",
            delay(g.pass),
            delay(g.grey_expiry),
            delay(g.white_expiry)
        ));
    }
    for z in &a.dnsbl_zones {
        out.push(format!("dnsbl zone {} weight {}", q(&z.zone), z.weight));
    }
    if let Some(t) = a.dnsbl_threshold {
        out.push(format!("dnsbl threshold {t}"));
    }
    out
}

impl Config {
    /// The normalised configuration text.
    pub fn dump(&self) -> String {
        let mut o = String::new();
        // Writing to a String cannot fail.
        let mut w = |line: String| {
            let _ = writeln!(o, "{line}");
        };
        if let Some(r) = &self.resolver {
            w(format!("resolver {}", q(r)));
        }
        if let Some(s) = &self.spool {
            w(format!("spool {}", q(&s.display().to_string())));
        }
        if self.queue.compression {
            w("queue compression".into());
        }
        match &self.queue.encryption {
            Some(Some(k)) => w(format!("queue encryption {}", q(k))),
            Some(None) => w("queue encryption".into()),
            None => {}
        }
        if let Some(t) = self.queue.ttl {
            w(format!("queue ttl {}", delay(t)));
        }
        if let Some(n) = self.smtp.max_message_size {
            w(format!("smtp max-message-size {n}"));
        }
        if let Some(c) = self.smtp.sub_addr_delim {
            w(format!("smtp sub-addr-delim {}", q(&c.to_string())));
        }
        if let Some(c) = &self.smtp.ciphers {
            w(format!("smtp ciphers {}", q(c)));
        }
        if let Some(n) = self.smtp.max_mails {
            w(format!("smtp limit max-mails {n}"));
        }
        if let Some(n) = self.smtp.max_rcpt {
            w(format!("smtp limit max-rcpt {n}"));
        }
        for (k, v) in [
            ("max-sessions", self.smtp.max_sessions),
            ("max-sessions-per-ip", self.smtp.max_sessions_per_ip),
            ("max-conn-rate", self.smtp.max_conn_rate),
            ("max-header-size", self.smtp.max_header_size),
            ("max-header-field", self.smtp.max_header_field),
        ] {
            if let Some(n) = v {
                w(format!("smtp limit {k} {n}"));
            }
        }
        if let Some(n) = self.mta.max_deferred {
            w(format!("mta max-deferred {n}"));
        }
        for (dom, k, v) in &self.mta.limits {
            let scope = dom
                .as_ref()
                .map(|d| format!("for domain {} ", q(d)))
                .unwrap_or_default();
            if k == "inet4" || k == "inet6" {
                w(format!("mta limit {scope}{k}"));
            } else {
                w(format!("mta limit {scope}{k} {v}"));
            }
        }
        for (k, v) in &self.mda_limits {
            w(format!("mda limit {k} {v}"));
        }
        if !self.authres.enabled {
            w("authres off".into());
        }
        if self.authres.dmarc != crate::authres::DmarcMode::default() {
            w(format!("authres dmarc {}", self.authres.dmarc.as_str()));
        }
        for (n, c) in &self.mda_wrappers {
            w(format!("mda wrapper {} {}", q(n), q(c)));
        }
        if !self.bounce_warn_interval.is_empty() {
            let v: Vec<String> = self
                .bounce_warn_interval
                .iter()
                .map(|d| delay(*d))
                .collect();
            w(format!("bounce warn-interval {}", v.join(", ")));
        }
        for t in &self.tables {
            let src = match &t.source {
                TableSource::File(p) => q(&format!("file:{}", p.display())),
                TableSource::Sqlite(p) => q(&format!("sqlite:{}", p.display())),
                TableSource::Inline(s) => inline(s),
            };
            w(format!("table {} {src}", name(&t.name)));
        }
        for line in access(&self.access) {
            w(line);
        }
        for (n, p) in &self.pki {
            if let Some(c) = &p.cert {
                w(format!("pki {} cert {}", q(n), q(&c.display().to_string())));
            }
            if let Some(k) = &p.key {
                w(format!("pki {} key {}", q(n), q(&k.display().to_string())));
            }
            if let Some(d) = &p.dhe {
                w(format!("pki {} dhe {d}", q(n)));
            }
        }
        for (n, c) in &self.ca {
            w(format!(
                "ca {} cert {}",
                q(n),
                q(&c.cert.display().to_string())
            ));
        }
        for p in &self.procs {
            let mut s = format!("proc {} {}", q(&p.name), q(&p.command));
            if let Some(u) = &p.user {
                s += &format!(" user {}", q(u));
            }
            if let Some(g) = &p.group {
                s += &format!(" group {}", q(g));
            }
            w(s);
        }
        for f in &self.filters {
            w(dump_filter(f));
        }
        for l in &self.listeners {
            w(dump_listener(l));
        }
        for a in &self.actions {
            w(dump_action(a));
        }
        for r in &self.rules {
            let mut s = String::from("match");
            for c in &r.conditions {
                s.push(' ');
                if c.negated {
                    s.push('!');
                }
                s += &criterion(&c.criterion);
            }
            match &r.decision {
                RuleDecision::Action(n) => s += &format!(" action {}", q(n)),
                RuleDecision::Reject => s += " reject",
            }
            w(s);
        }
        o
    }
}

fn dump_filter(f: &Filter) -> String {
    let mut s = format!("filter {} ", q(&f.name));
    match &f.kind {
        FilterKind::Builtin {
            phase,
            conditions,
            decision,
        } => {
            s += &format!("phase {} match", phase.name());
            for c in conditions {
                s.push(' ');
                if c.negated {
                    s.push('!');
                }
                s += &match &c.criterion {
                    FilterCriterion::Fcrdns => "fcrdns".to_owned(),
                    FilterCriterion::Rdns(t) => opt_crit("rdns", t),
                    FilterCriterion::Src(t) => format!("src {}", crit(t)),
                    FilterCriterion::Helo(t) => format!("helo {}", crit(t)),
                    FilterCriterion::Auth(t) => opt_crit("auth", t),
                    FilterCriterion::MailFrom(t) => format!("mail-from {}", crit(t)),
                    FilterCriterion::RcptTo(t) => format!("rcpt-to {}", crit(t)),
                };
            }
            s += &match decision {
                FilterDecision::Bypass => " bypass".to_owned(),
                FilterDecision::Junk => " junk".to_owned(),
                FilterDecision::Reject(m) => format!(" reject {}", q(m)),
                FilterDecision::Disconnect(m) => format!(" disconnect {}", q(m)),
                FilterDecision::Rewrite(m) => format!(" rewrite {}", q(m)),
                FilterDecision::Report(m) => format!(" report {}", q(m)),
            };
        }
        FilterKind::Proc(p) => s += &format!("proc {}", q(p)),
        FilterKind::ProcExec {
            command,
            user,
            group,
        } => {
            s += &format!("proc-exec {}", q(command));
            if let Some(u) = user {
                s += &format!(" user {}", q(u));
            }
            if let Some(g) = group {
                s += &format!(" group {}", q(g));
            }
        }
        FilterKind::Chain(v) => s += &format!("chain {}", filter_ref(&FilterRef::Chain(v.clone()))),
    }
    s
}

fn dump_listener(l: &Listener) -> String {
    let mut s = String::from("listen on ");
    s += &match &l.on {
        ListenOn::Socket => "socket".to_owned(),
        ListenOn::Addr(a) => q(&a.to_string()),
        ListenOn::Name(n) => q(n),
    };
    match l.family {
        Some(Family::Inet4) => s += " inet4",
        Some(Family::Inet6) => s += " inet6",
        None => {}
    }
    if let Some(p) = l.port {
        s += &format!(" port {p}");
    }
    s += match l.tls {
        ListenTls::Plain => "",
        ListenTls::Starttls => " tls",
        ListenTls::Require { verify: false } => " tls-require",
        ListenTls::Require { verify: true } => " tls-require verify",
        ListenTls::Smtps { verify: false } => " smtps",
        ListenTls::Smtps { verify: true } => " smtps verify",
    };
    for p in &l.pki {
        s += &format!(" pki {}", q(p));
    }
    if let Some(c) = &l.ca {
        s += &format!(" ca {}", q(c));
    }
    if let Some(c) = &l.ciphers {
        s += &format!(" ciphers {}", q(c));
    }
    if let Some(p) = &l.protocols {
        s += &format!(" protocols {}", q(p));
    }
    match &l.auth {
        Some(ListenAuth::Required(t)) => {
            s += " auth";
            if let Some(t) = t {
                s += &format!(" {}", tref(t));
            }
        }
        Some(ListenAuth::Optional(t)) => {
            s += " auth-optional";
            if let Some(t) = t {
                s += &format!(" {}", tref(t));
            }
        }
        None => {}
    }
    if let Some(t) = &l.tag {
        s += &format!(" tag {}", q(t));
    }
    if let Some(h) = &l.hostname {
        s += &format!(" hostname {}", q(h));
    }
    if let Some(t) = &l.hostnames {
        s += &format!(" hostnames {}", tref(t));
    }
    if let Some(t) = &l.senders {
        s += &format!(" senders {}", tref(t));
        if l.masquerade {
            s += " masquerade";
        }
    }
    if l.mask_src {
        s += " mask-src";
    }
    if l.received_auth {
        s += " received-auth";
    }
    if l.no_dsn {
        s += " no-dsn";
    }
    if l.no_authres {
        s += " no-authres";
    }
    if let Some(f) = &l.filter {
        s += &format!(" filter {}", filter_ref(f));
    }
    s
}

pub(crate) fn relay_url(u: &RelayUrl) -> String {
    let mut s = format!("{}://", u.proto.scheme());
    if let Some(l) = &u.label {
        s += &format!("{l}@");
    }
    s += &u.host;
    if let Some(p) = u.port {
        s += &format!(":{p}");
    }
    s
}

fn dump_action(a: &Action) -> String {
    let mut s = format!("action {} ", q(&a.name));
    match &a.dispatch {
        Dispatch::Local(m) => {
            s += &match m {
                LocalMethod::Mbox => "mbox".to_owned(),
                LocalMethod::Maildir { path, junk } => {
                    let mut m = "maildir".to_owned();
                    if let Some(p) = path {
                        m += &format!(" {}", q(p));
                    }
                    if *junk {
                        m += " junk";
                    }
                    m
                }
                LocalMethod::Lmtp { dest, rcpt_to } => {
                    format!("lmtp {}{}", q(dest), if *rcpt_to { " rcpt-to" } else { "" })
                }
                LocalMethod::Mda(c) => format!("mda {}", q(c)),
                LocalMethod::ForwardOnly => "forward-only".to_owned(),
                LocalMethod::ExpandOnly => "expand-only".to_owned(),
            };
            if let Some(t) = &a.alias {
                s += &format!(" alias {}", tref(t));
            }
            if let Some(t) = &a.virtual_ {
                s += &format!(" virtual {}", tref(t));
            }
            if let Some(t) = &a.userbase {
                s += &format!(" userbase {}", tref(t));
            }
            if let Some(u) = &a.user {
                s += &format!(" user {}", q(u));
            }
            if let Some(wr) = &a.wrapper {
                s += &format!(" wrapper {}", q(wr));
            }
        }
        Dispatch::Relay(r) => {
            s += "relay";
            match &r.host {
                Some(RelayHost::Url(u)) => s += &format!(" host {}", q(&relay_url(u))),
                Some(RelayHost::Table(t)) => s += &format!(" host {}", tref(t)),
                None => {}
            }
            if let Some(t) = &r.domain {
                s += &format!(" domain {}", tref(t));
            }
            match &r.backup {
                Some(Some(mx)) => s += &format!(" backup mx {}", q(mx)),
                Some(None) => s += " backup",
                None => {}
            }
            if let Some(h) = &r.helo {
                s += &format!(" helo {}", q(h));
            }
            if let Some(t) = &r.helo_src {
                s += &format!(" helo-src {}", tref(t));
            }
            if let Some(t) = &r.src {
                s += &format!(" src {}", tref(t));
            }
            match r.tls {
                Some(true) => s += " tls",
                Some(false) => s += " tls no-verify",
                None => {}
            }
            if let Some(t) = &r.auth {
                s += &format!(" auth {}", tref(t));
            }
            if let Some(p) = &r.pki {
                s += &format!(" pki {}", q(p));
            }
            if let Some(c) = &r.ca {
                s += &format!(" ca {}", q(c));
            }
            if let Some(m) = &r.mail_from {
                s += &format!(" mail-from {}", q(m));
            }
        }
    }
    if let Some(t) = a.ttl {
        s += &format!(" ttl {}", delay(t));
    }
    if let Some(t) = &a.dkim_sign {
        s += &format!(" dkim-sign {}", tref(t));
    }
    s
}
