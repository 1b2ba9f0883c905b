//! Recipient expansion through virtual, alias and userbase tables, as at RCPT time.

use std::path::Path;

use mta::config::{Decision, MatchContext};
use mta::expand::{Expansion, Target, expand};
use mta::table::LocalIdentity;

struct Setup {
    _dir: tempfile::TempDir,
    cfg: mta::config::Config,
    tables: mta::table::Tables,
}

fn setup(virtuals: &str, aliases: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("virtuals"), virtuals).unwrap();
    // An empty file is a list table, which OpenSMTPD refuses for alias lookups.
    let aliases = if aliases.is_empty() {
        "mailer-daemon: root\n"
    } else {
        aliases
    };
    std::fs::write(p("aliases"), aliases).unwrap();
    std::fs::write(p("domains"), "example.org\nexample.net\n").unwrap();
    std::fs::write(
        p("users"),
        "vmail 5000:5000:/var/vmail\nalice 1001:1001:/home/alice\nbob 1002:1002:/home/bob\n",
    )
    .unwrap();
    let conf = format!(
        "table virtuals file:{v}\ntable aliases file:{a}\ntable domains file:{d}\ntable users file:{u}\n\
         listen on 127.0.0.1\n\
         action \"vmail\" lmtp \"/run/dovecot/lmtp\" rcpt-to virtual <virtuals> userbase <users>\n\
         action \"local\" maildir \"/tmp/%{{user.username}}\" alias <aliases> userbase <users>\n\
         action \"out\" relay\n\
         match from any for domain <domains> action \"vmail\"\n\
         match for local action \"local\"\n\
         match from local for any action \"out\"\n",
        v = p("virtuals").display(),
        a = p("aliases").display(),
        d = p("domains").display(),
        u = p("users").display()
    );
    std::fs::write(p("smtpd.conf"), conf).unwrap();
    let local = LocalIdentity {
        hostname: "mx.example.org".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    let (cfg, tables) = mta::config::load_with_tables(&p("smtpd.conf"), &local).unwrap();
    Setup {
        _dir: dir,
        cfg,
        tables,
    }
}

fn rcpt(s: &Setup, address: &str) -> Expansion {
    let ctx = MatchContext {
        src: Some("192.0.2.7".parse().unwrap()),
        helo: Some("client.example.net"),
        mail_from: "sender@example.net",
        rcpt_to: address,
        ..Default::default()
    };
    match s.cfg.match_rcpt(&ctx, &s.tables) {
        Decision::Action { action, .. } => expand(&s.cfg, &s.tables, &ctx, action),
        other => panic!("{address}: no action matched: {other:?}"),
    }
}

fn target(action: &str, dest: &str, user: &str) -> Target {
    Target {
        action: action.into(),
        dest: dest.into(),
        user: Some(user.into()),
    }
}

const VIRTUALS: &str = "alice@example.org vmail\nbob@example.org vmail\n\
    postmaster@example.org alice@example.org\n\
    abuse@example.org alice@example.org, bob@example.org\n\
    @example.net alice@example.org\n\
    self@example.org self@example.org\n\
    gone@example.org error:550 no longer here\n\
    busy@example.org error:450 try later\n";

#[test]
fn a_mailbox_maps_to_the_userbase_user_with_its_own_address() {
    let s = setup(VIRTUALS, "");
    assert_eq!(
        rcpt(&s, "alice@example.org"),
        Expansion::Targets(vec![target("vmail", "alice@example.org", "vmail")])
    );
}

#[test]
fn an_alias_expands_to_the_final_mailbox_address() {
    let s = setup(VIRTUALS, "");
    assert_eq!(
        rcpt(&s, "postmaster@example.org"),
        Expansion::Targets(vec![target("vmail", "alice@example.org", "vmail")])
    );
}

#[test]
fn a_multi_destination_alias_gives_one_target_each() {
    let s = setup(VIRTUALS, "");
    assert_eq!(
        rcpt(&s, "abuse@example.org"),
        Expansion::Targets(vec![
            target("vmail", "alice@example.org", "vmail"),
            target("vmail", "bob@example.org", "vmail")
        ])
    );
}

#[test]
fn a_catch_all_takes_unknown_local_parts_and_plus_tags_reach_the_mailbox() {
    let s = setup(VIRTUALS, "");
    assert_eq!(
        rcpt(&s, "anyone@example.net"),
        Expansion::Targets(vec![target("vmail", "alice@example.org", "vmail")])
    );
    assert_eq!(
        rcpt(&s, "alice+lists@example.org"),
        Expansion::Targets(vec![target("vmail", "alice+lists@example.org", "vmail")])
    );
}

#[test]
fn unknown_users_are_refused_not_bounced_later() {
    let s = setup(VIRTUALS, "");
    assert_eq!(rcpt(&s, "nobody@example.org"), Expansion::Unknown);
}

#[test]
fn a_self_mapping_ends_in_524_like_opensmtpd() {
    let s = setup(VIRTUALS, "");
    assert!(matches!(
        rcpt(&s, "self@example.org"),
        Expansion::Reject { code: 524, .. }
    ));
}

#[test]
fn error_aliases_reject_or_tempfail_with_their_text() {
    let s = setup(VIRTUALS, "");
    assert_eq!(
        rcpt(&s, "gone@example.org"),
        Expansion::Reject {
            code: 550,
            enhanced: "5.0.0",
            text: "no longer here".into()
        }
    );
    assert!(matches!(rcpt(&s, "busy@example.org"), Expansion::TempFail(t) if t.contains("450")));
}

#[test]
fn an_alias_loop_is_detected() {
    let s = setup(
        "a@example.org b@example.org\nb@example.org a@example.org\n",
        "",
    );
    assert!(matches!(
        rcpt(&s, "a@example.org"),
        Expansion::Reject { code: 524, .. } | Expansion::Reject { code: 550, .. }
    ));
}

#[test]
fn system_aliases_resolve_to_users_of_the_userbase() {
    let s = setup(
        VIRTUALS,
        "root: alice\npostmaster: root\nteam: alice, bob\n",
    );
    let local = |a: &str| {
        let ctx = MatchContext {
            local_enqueue: true,
            mail_from: "cron@mx.example.org",
            rcpt_to: a,
            ..Default::default()
        };
        match s.cfg.match_rcpt(&ctx, &s.tables) {
            Decision::Action { action, .. } => expand(&s.cfg, &s.tables, &ctx, action),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        local("postmaster@localhost"),
        Expansion::Targets(vec![target("local", "alice@localhost", "alice")])
    );
    assert_eq!(
        local("team@localhost"),
        Expansion::Targets(vec![
            target("local", "alice@localhost", "alice"),
            target("local", "bob@localhost", "bob")
        ])
    );
    assert_eq!(local("carol@localhost"), Expansion::Unknown);
}

#[test]
fn relayed_recipients_are_not_expanded() {
    let s = setup(VIRTUALS, "");
    let ctx = MatchContext {
        local_enqueue: true,
        mail_from: "a@example.org",
        rcpt_to: "x@remote.example",
        ..Default::default()
    };
    let Decision::Action { action, .. } = s.cfg.match_rcpt(&ctx, &s.tables) else {
        panic!()
    };
    assert_eq!(
        expand(&s.cfg, &s.tables, &ctx, action),
        Expansion::Targets(vec![Target {
            action: "out".into(),
            dest: "x@remote.example".into(),
            user: None
        }])
    );
    let _ = Path::new("");
}
