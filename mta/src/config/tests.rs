//! Grammar unit tests over the sans-IO parser: no files, includes from memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::table::{LocalIdentity, StaticTable};

struct Mem(HashMap<PathBuf, String>);

impl SourceLoader for Mem {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

fn ok(text: &str) -> Config {
    match parse(text, Path::new("smtpd.conf"), &Mem(HashMap::new())) {
        Ok(c) => c,
        Err(d) => panic!("unexpected errors:\n{d}"),
    }
}

fn errs(text: &str) -> String {
    parse(text, Path::new("smtpd.conf"), &Mem(HashMap::new()))
        .expect_err("config should be refused")
        .to_string()
}

const FULL: &str = r#"
lan = "{ 10.0.0.0/8, 192.168.0.0/16 }"
table aliases file:/etc/mail/aliases
table vusers sqlite:/etc/mail/sqlite.conf
table relays { 192.0.2.0/24, "[2001:db8::]/32" }
table secrets { isp = "relayuser:pw" }
pki mx.example.org cert "/etc/ssl/mx.pem"
pki mx.example.org key "/etc/ssl/mx.key"
ca client cert "/etc/ssl/ca.pem"
queue compression
queue ttl 5d
smtp max-message-size 50M
smtp sub-addr-delim "-"
smtp limit max-mails 10 max-rcpt 50
smtp limit max-sessions-per-ip 20 max-conn-rate 120 max-header-size 200K max-header-field 32K
smtp ciphers "HIGH:!aNULL:!MD5"
mta max-deferred 200
mta limit for domain example.net max-conn-per-host 2
mda wrapper "spam" "/usr/bin/wrap %{mda}"
bounce warn-interval 1h, 6h
resolver 127.0.0.53
spool "/var/spool/fugu"
filter "no_rdns" phase connect match !rdns disconnect "550 5.7.1 no rDNS"
filter "rsp" proc-exec "filter-rspamd" user _rspamd
filter "in" chain { "no_rdns", "rsp" }
listen on 127.0.0.1
listen on 127.0.0.1 port submission tls-require pki mx.example.org protocols "tlsv1.2,tlsv1.3" ciphers "ECDHE-RSA-AES256-GCM-SHA384" auth <vusers> senders <vusers> masquerade tag SUBMISSION
listen on 127.0.0.1 port 10025 tag SCANNED mask-src no-dsn filter "in"
listen on socket tag LOCAL
action "sys" mbox alias <aliases>
action "vmail" lmtp "/run/dovecot/lmtp" rcpt-to virtual <vusers> userbase <vusers>
action "md" maildir "%{user.directory}/Maildir/%{dest.user:lowercase}" junk user vmail wrapper spam
action "out" relay host smtp+tls://isp@smtp.isp.example:587 auth <secrets> helo mx.example.org mail-from "bounce@example.org" ttl 2d dkim-sign { example.org = "s1:rsa-sha256:/k" }
action "direct" relay tls no-verify src <relays> backup mx mx2.example.org
match tag SCANNED from local for domain <vusers> action "vmail"
match !from src $lan for domain regex "(?i)^ex.*" mail-from "@example.org" action "md"
match from auth for any action "out"
match from any for domain "example.org" rcpt-to { "x@example.org" } reject
match for local action "sys"
"#;

#[test]
fn every_directive_parses_into_typed_config() {
    let c = ok(FULL);
    assert_eq!(c.tables.len(), 4);
    assert_eq!(c.listeners[1].effective_port(), 587);
    assert_eq!(c.listeners[1].tls, ListenTls::Require { verify: false });
    assert_eq!(c.listeners[3].on, ListenOn::Socket);
    assert_eq!(c.max_message_size(), 50 << 20);
    assert_eq!(c.sub_addr_delim(), '-');
    assert_eq!(c.bounce_warn_interval().len(), 2);
    let out = c.action("out").unwrap();
    let Dispatch::Relay(r) = &out.dispatch else {
        panic!()
    };
    assert_eq!(
        r.host,
        Some(RelayHost::Url(RelayUrl {
            proto: RelayProto::SmtpTls,
            label: Some("isp".into()),
            host: "smtp.isp.example".into(),
            port: Some(587)
        }))
    );
    assert!(out.dkim_sign.is_some());
    // parse.y's implicit `from local` / `for local` are explicit in the model.
    let last = c.rules.last().unwrap();
    assert_eq!(last.conditions[0].criterion, Criterion::FromLocal);
    assert_eq!(last.conditions[1].criterion, Criterion::ForLocal);
    let neg = &c.rules[1].conditions[0];
    assert!(neg.negated);
    assert_eq!(
        neg.criterion,
        Criterion::FromSrc(TableCrit {
            regex: false,
            table: TableRef::Inline(StaticTable::List(vec![
                "10.0.0.0/8".into(),
                "192.168.0.0/16".into()
            ]))
        })
    );
}

#[test]
fn smtp_limit_extensions_set_the_session_and_connection_limits() {
    let c = ok(FULL);
    assert_eq!(c.max_sessions_per_ip(), 20);
    assert_eq!(c.max_conn_rate(), 120);
    assert_eq!(c.max_header_size(), 200 * 1024);
    assert_eq!(c.max_header_field(), 32 * 1024);
    // Not given: the defaults.
    assert_eq!(c.max_sessions(), 4096);
    let d = ok("");
    assert_eq!(
        (d.max_conn_rate(), d.max_header_size(), d.max_header_field()),
        (0, 102_400, 65_536)
    );
    assert_eq!(
        errs("smtp limit max-sessions-per-ip 0\n"),
        "smtpd.conf:1:32: invalid number: 0: expected at least 1"
    );
    assert_eq!(
        errs("smtp limit max-header-size lots\n"),
        "smtpd.conf:1:28: invalid size: lots"
    );
    assert!(
        errs("smtp limit max-conn-per-ip 5\n")
            .contains("invalid smtp limit keyword: max-conn-per-ip"),
    );
}

/// Found while adding the `config` fuzz target: the day multiplier overflowed u64
/// (a panic with overflow checks, a wrong delay without).
#[test]
fn a_huge_delay_is_an_error_not_an_overflow() {
    assert_eq!(
        errs("queue ttl 999999999999999999d\n"),
        "smtpd.conf:1:11: invalid delay: 999999999999999999d: expected a number with s, m, h or d"
    );
    assert!(errs("queue ttl 2147483648s\n").contains("invalid delay"));
    assert_eq!(
        ok("queue ttl 2147483647s\n").queue_ttl().as_secs(),
        2_147_483_647
    );
}

#[test]
fn dump_round_trips_to_an_equal_config() {
    let c = ok(FULL);
    let text = c.dump();
    let back = ok(&text);
    assert_eq!(back, c, "dump:\n{text}");
    assert_eq!(back.dump(), text);
}

#[test]
fn all_errors_are_reported_at_once_with_their_lines() {
    let e = errs(
        "action \"x\" mbox alias <nope>\n\
         match from any for any action \"y\"\n\
         listen on 127.0.0.1 filter nofilter\n\
         action relay relay\n\
         table d db:/etc/mail/aliases.db\n\
         frobnicate yes\n",
    );
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 6, "{e}");
    assert!(lines[0].starts_with("smtpd.conf:1:"), "{e}");
    assert!(lines[0].ends_with("no such table: nope"));
    assert!(lines[1].ends_with("no such dispatcher: y"));
    assert!(lines[2].ends_with("no filter exist with that name: nofilter"));
    assert_eq!(
        lines[3],
        "smtpd.conf:4:8: syntax error: reserved word `relay` used as an action name must be quoted: \"relay\""
    );
    assert!(lines[4].contains("db: tables (Berkeley DB) are not supported"));
    assert!(lines[5].contains("unknown directive `frobnicate`"));
}

#[test]
fn relay_and_local_option_conflicts() {
    assert!(
        errs("action \"x\" relay backup host smtp://127.0.0.1\n")
            .ends_with("backup and host are mutually exclusive")
    );
    assert!(
        errs("action \"x\" relay auth { a = \"b:c\" }\n")
            .ends_with("auth may not be specified without host on a dispatcher")
    );
    assert!(
        errs("table a { x = y }\naction \"x\" mbox alias <a> virtual <a>\n")
            .starts_with("smtpd.conf:2:")
    );
    assert!(
        errs("action \"x\" mbox user foo\n")
            .ends_with("user may not be specified for this dispatcher")
    );
    assert!(errs("action \"x\" relay alias { a = b }\n").contains("not valid with relay"));
}

#[test]
fn tls_and_pki_need_each_other() {
    let pki = "pki mx.test cert \"/c\"\npki mx.test key \"/k\"\n";
    assert!(errs("listen on 127.0.0.1 tls\n").contains("tls/smtps requires a pki"));
    let e = errs(&format!("{pki}listen on 127.0.0.1 pki mx.test\n"));
    assert!(e.contains("pki requires tls/smtps"), "{e}");
    assert!(
        errs(&format!("{pki}listen on 127.0.0.1 tls pki nope\n"))
            .contains("pki name not found: nope")
    );
    ok(&format!("{pki}listen on 127.0.0.1 smtps pki mx.test\n"));
}

#[test]
fn unimplemented_keywords_are_named() {
    assert!(
        errs("listen on 127.0.0.1 proxy-v2\n")
            .contains("`proxy-v2` is not implemented by fugu yet")
    );
    assert!(errs("srs key secret\n").contains("`srs`"));
    assert!(
        errs("action \"r\" relay ciphers \"HIGH\"\n")
            .contains("`ciphers` on a relay action is not implemented by fugu yet")
    );
}

#[test]
fn listener_ciphers_and_protocols_are_checked_against_what_rustls_has() {
    let c = ok(FULL);
    assert_eq!(c.listeners[1].protocols.as_deref(), Some("tlsv1.2,tlsv1.3"));
    assert_eq!(
        c.listeners[1].ciphers.as_deref(),
        Some("ECDHE-RSA-AES256-GCM-SHA384")
    );
    assert_eq!(c.smtp.ciphers.as_deref(), Some("HIGH:!aNULL:!MD5"));
    let pki = "pki a cert \"/c\"\npki a key \"/k\"\n";
    assert_eq!(
        errs(&format!(
            "{pki}listen on 127.0.0.1 tls pki a protocols \"tlsv1.1\"\n"
        )),
        "smtpd.conf:3:41: protocol tlsv1.1 is not available in fugu (rustls has tlsv1.2 and tlsv1.3)"
    );
    assert!(
        errs(&format!(
            "{pki}listen on 127.0.0.1 tls pki a ciphers \"DHE-RSA-AES256-SHA\"\n"
        ))
        .starts_with("smtpd.conf:3:39: unknown or unavailable cipher \"DHE-RSA-AES256-SHA\"")
    );
    assert!(errs("smtp ciphers \"HIGH:!BOGUS\"\n").contains("unknown or unavailable cipher"));
}

#[test]
fn action_must_be_defined_before_match_and_be_last() {
    assert!(errs("match for any action \"x\"\naction \"x\" mbox\n").starts_with("smtpd.conf:1:"));
    assert!(
        errs("action \"x\" mbox\nmatch for local action \"x\" from any\n")
            .contains("unexpected `from`")
    );
}

#[test]
fn format_specifiers_are_validated() {
    assert!(
        errs("action \"x\" maildir \"/var/%{bogus}\"\n")
            .contains("unknown format specifier %{bogus}")
    );
    ok("action \"x\" maildir \"/var/%{dest.domain}/%{dest.user[0]}/%{dest.user:strip}\"\n");
}

#[test]
fn includes_splice_files_and_errors_name_the_included_file() {
    let mut m = HashMap::new();
    m.insert(
        PathBuf::from("/etc/inc.conf"),
        "action \"x\" mbox\nbogus\n".to_owned(),
    );
    let e = parse(
        "include \"/etc/inc.conf\"\nmatch for local action \"x\"\n",
        Path::new("smtpd.conf"),
        &Mem(m),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("/etc/inc.conf:2:"), "{e}");
    let e = errs("include \"/etc/missing.conf\"\n");
    assert!(
        e.starts_with("smtpd.conf:1:") && e.contains("failed to include file"),
        "{e}"
    );
}

fn tables_for(c: &Config) -> crate::table::Tables {
    open_tables(
        c,
        &LocalIdentity {
            hostname: "mx.example.org".into(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
        },
    )
    .unwrap()
}

#[test]
fn rules_first_match_wins_with_defaults_and_negation() {
    let c = ok("table doms { example.org, \"*.example.net\" }\n\
         action \"in\" mbox\naction \"out\" relay\n\
         match from any for rcpt-to \"spam@example.org\" reject\n\
         match from any for domain <doms> action \"in\"\n\
         match tag SUB from auth for any action \"out\"\n\
         match !from local for any reject\n\
         match for any action \"out\"\n");
    let t = tables_for(&c);
    let ext = MatchContext {
        src: Some("198.51.100.7".parse().unwrap()),
        mail_from: "a@b.example",
        rcpt_to: "bob@mx1.example.net",
        ..MatchContext::default()
    };
    assert!(
        matches!(c.match_rcpt(&ext, &t), Decision::Action { rule: 1, action } if action.name == "in")
    );
    let spam = MatchContext {
        rcpt_to: "spam@example.org",
        ..ext
    };
    assert_eq!(c.match_rcpt(&spam, &t), Decision::Reject { rule: 0 });
    let relay_attempt = MatchContext {
        rcpt_to: "x@elsewhere.example",
        ..ext
    };
    assert_eq!(
        c.match_rcpt(&relay_attempt, &t),
        Decision::Reject { rule: 3 }
    );
    let sub = MatchContext {
        tag: Some("sub"),
        auth_user: Some("alice"),
        ..relay_attempt
    };
    assert!(matches!(
        c.match_rcpt(&sub, &t),
        Decision::Action { rule: 2, .. }
    ));
    let local = MatchContext {
        src: Some("127.0.0.1".parse().unwrap()),
        ..relay_attempt
    };
    assert!(matches!(
        c.match_rcpt(&local, &t),
        Decision::Action { rule: 4, .. }
    ));
    let c2 = ok("action \"in\" mbox\nmatch from any action \"in\"\n");
    let t2 = tables_for(&c2);
    let to_local = MatchContext {
        rcpt_to: "root@mx.example.org",
        ..ext
    };
    assert!(matches!(
        c2.match_rcpt(&to_local, &t2),
        Decision::Action { .. }
    ));
    assert_eq!(c2.match_rcpt(&ext, &t2), Decision::NoMatch);
}

#[test]
fn from_src_and_from_local_look_up_the_client_address_of_either_family() {
    let c = ok("table nets { \"2001:db8::/32\", \"192.0.2.0/24\" }\n\
         action \"out\" relay\n\
         match from src <nets> for any action \"out\"\n\
         match from local for any action \"out\"\n");
    let t = tables_for(&c);
    let from = |src: &str| MatchContext {
        src: Some(src.parse().unwrap()),
        rcpt_to: "x@elsewhere.example",
        ..MatchContext::default()
    };
    let rule = |src: &str| match c.match_rcpt(&from(src), &t) {
        Decision::Action { rule, .. } => Some(rule),
        _ => None,
    };
    // An address of the longest text form (39 characters), and one outside the network.
    assert_eq!(rule("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), Some(0));
    assert_eq!(rule("192.0.2.200"), Some(0));
    assert_eq!(rule("127.0.0.1"), Some(1));
    assert_eq!(rule("2001:db9::1"), None);
    let local = MatchContext {
        local_enqueue: true,
        ..from("2001:db8::1")
    };
    assert!(matches!(
        c.match_rcpt(&local, &t),
        Decision::Action { rule: 1, .. }
    ));
}

#[test]
fn authres_directives_set_the_checks_and_round_trip() {
    let c = ok("listen on 127.0.0.1\n");
    assert_eq!(c.authres, crate::authres::Settings::default());
    assert!(c.authres.enabled);
    assert_eq!(c.authres.dmarc, crate::authres::DmarcMode::Quarantine);
    assert!(!c.dump().contains("authres"));

    let c = ok("authres off\nauthres dmarc reject\n\
                listen on 127.0.0.1 port 10026 tag FILTERED no-authres\n");
    assert!(!c.authres.enabled);
    assert_eq!(c.authres.dmarc, crate::authres::DmarcMode::Reject);
    assert!(c.listeners[0].no_authres);
    let text = c.dump();
    assert!(
        text.contains("authres off\nauthres dmarc reject\n"),
        "{text}"
    );
    assert!(text.contains(" no-authres"), "{text}");
    assert_eq!(ok(&text), c);

    assert_eq!(
        ok("authres dmarc none\n").authres.dmarc,
        crate::authres::DmarcMode::None
    );
}

#[test]
fn authres_refuses_unknown_words_with_the_choices() {
    assert!(
        errs("authres dmarc always\n")
            .contains("smtpd.conf:1:15: syntax error: expected `reject`, `quarantine` or `none`, found `always`"),
        "{}",
        errs("authres dmarc always\n")
    );
    assert!(errs("authres\n").contains("expected `on`, `off` or `dmarc`, found end of line"));
    assert!(errs("authres on please\n").contains("unexpected `please`"));
}
