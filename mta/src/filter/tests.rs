//! Sessions through real filter processes (small Python scripts speaking the protocol)
//! and builtin filters: what the filter saw, and what the session was told.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::proc::{ProcSpec, Process};
use super::*;
use crate::config::{FilterCondition, FilterCriterion, FilterDecision, Phase, TableCrit, TableRef};
use crate::rdns::ReverseName;
use crate::table::StaticTable;

/// Logs every line it gets to argv[1]; registers what argv[2] lists (comma-separated
/// `filter:phase` / `report:event`); rejects senders starting with `bad`, exits on
/// senders starting with `die`, and adds `X-Filtered: yes` in front of the message.
const SCRIPT: &str = r#"
import sys
log = open(sys.argv[1], "a")
def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    line = line.rstrip("\n")
    f = line.split("|")
    if f[0] in ("report", "filter"):
        f[2] = "TIME"
        if f[0] == "filter":
            f[6] = "TOKEN"
    log.write("|".join(f) + "\n")
    log.flush()
    if line == "config|ready":
        for r in sys.argv[2].split(","):
            kind, name = r.split(":")
            out("register|%s|smtp-in|%s" % (kind, name))
        out("register|ready")
    elif f[0] == "filter":
        phase, sid, token, param = line.split("|", 7)[4:8]
        if phase == "data-line":
            if param == ".":
                out("filter-dataline|%s|%s|X-Filtered: yes" % (sid, token))
                for l in pending:
                    out("filter-dataline|%s|%s|%s" % (sid, token, l))
                out("filter-dataline|%s|%s|." % (sid, token))
                pending = []
            else:
                pending.append(param)
        elif param.startswith("die"):
            sys.exit(1)
        elif param.startswith("bad"):
            out("filter-result|%s|%s|reject|550 5.7.1 go away" % (sid, token))
        elif param.startswith("junk"):
            out("filter-result|%s|%s|junk" % (sid, token))
        else:
            out("filter-result|%s|%s|proceed" % (sid, token))
    elif f[0] == "config" and f[1] == "admd":
        pending = []
"#;

struct Fixture {
    dir: PathBuf,
    log: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("fugu-filter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("filter.py"), SCRIPT).unwrap();
        let log = dir.join("seen.log");
        Fixture { dir, log }
    }

    async fn process(&self, registers: &str) -> Arc<Process> {
        Process::start(ProcSpec {
            name: "test".into(),
            command: format!(
                "/usr/bin/python3 {} {} {registers}",
                self.dir.join("filter.py").display(),
                self.log.display()
            ),
            user: None,
            group: None,
            admd: "mx.example.org".into(),
            session_timeout: 300,
        })
        .await
        .unwrap()
    }

    /// The lines the filter got, once it has logged `until`.
    async fn seen(&self, until: &str) -> Vec<String> {
        for _ in 0..200 {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(until) {
                return text.lines().map(str::to_owned).collect();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{until} never seen: {:?}",
            std::fs::read_to_string(&self.log)
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn no_tables() -> Arc<dyn TableLookup> {
    Arc::new(crate::table::Tables::default())
}

fn client() -> Option<std::net::SocketAddr> {
    Some("192.0.2.7:4242".parse().unwrap())
}

fn server() -> Option<std::net::SocketAddr> {
    Some("192.0.2.1:25".parse().unwrap())
}

async fn session(chain: Chain, sid: u64) -> SessionFilters {
    SessionFilters::connect(
        Some(Arc::new(chain)),
        sid,
        client(),
        server(),
        ReverseName::default(),
    )
    .await
}

#[tokio::test]
async fn a_filter_sees_the_handshake_reports_and_requests_in_order() {
    let fx = Fixture::new("transcript");
    let p = fx
        .process("filter:mail-from,filter:rcpt-to,report:link-connect,report:tx-mail,report:link-disconnect")
        .await;
    let mut s = session(Chain::new(vec![Step::Proc(p)], no_tables()), 0x1234).await;
    assert_eq!(s.connect_phase().await, Verdict::Proceed);
    assert_eq!(s.mail(Some("alice@example.net")).await, Verdict::Proceed);
    s.mail_result(Some("alice@example.net"), "ok");
    assert_eq!(
        s.rcpt("bad@example.org").await,
        Verdict::Reject(Reply::new(550, "5.7.1", "go away"))
    );
    s.disconnect();
    let seen = fx.seen("link-disconnect").await;
    let msgid = format!("{:08x}", (0x1234u32).wrapping_add(1));
    assert_eq!(
        seen,
        [
            "config|smtpd-version|6.8.0p2".to_owned(),
            "config|smtp-session-timeout|300".to_owned(),
            "config|subsystem|smtp-in".to_owned(),
            "config|admd|mx.example.org".to_owned(),
            "config|ready".to_owned(),
            "report|0.6|TIME|smtp-in|link-connect|0000000000001234|<unknown>|fail|192.0.2.7:4242|192.0.2.1:25".to_owned(),
            "filter|0.6|TIME|smtp-in|mail-from|0000000000001234|TOKEN|alice@example.net".to_owned(),
            format!("report|0.6|TIME|smtp-in|tx-mail|0000000000001234|{msgid}|ok|alice@example.net"),
            "filter|0.6|TIME|smtp-in|rcpt-to|0000000000001234|TOKEN|bad@example.org".to_owned(),
            "report|0.6|TIME|smtp-in|link-disconnect|0000000000001234".to_owned(),
        ]
    );
}

#[tokio::test]
async fn data_lines_go_through_the_filter_stuffed_and_come_back_unstuffed() {
    let fx = Fixture::new("dataline");
    let p = fx.process("filter:data-line").await;
    let mut s = session(Chain::new(vec![Step::Proc(p)], no_tables()), 7).await;
    assert_eq!(s.data().await, Verdict::Proceed);
    assert_eq!(
        s.chunk(b"Received: by test\r\nSubject: x\r\n".to_vec()),
        None
    );
    assert_eq!(s.chunk(b"\r\n.dot first\r\nend\r\n".to_vec()), None);
    let out = s.message_end().await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "X-Filtered: yes\r\nReceived: by test\r\nSubject: x\r\n\r\n.dot first\r\nend\r\n"
    );
    let seen = fx.seen("|.").await;
    assert!(
        seen.contains(
            &"filter|0.6|TIME|smtp-in|data-line|0000000000000007|TOKEN|..dot first".to_owned()
        ),
        "{seen:?}"
    );
}

#[tokio::test]
async fn junk_puts_x_spam_first() {
    let fx = Fixture::new("junk");
    let p = fx.process("filter:mail-from").await;
    let mut s = session(Chain::new(vec![Step::Proc(p)], no_tables()), 8).await;
    assert_eq!(s.mail(Some("junk@example.net")).await, Verdict::Proceed);
    assert_eq!(s.data().await, Verdict::Proceed);
    assert_eq!(
        s.chunk(b"Received: x\r\n".to_vec()),
        Some(b"X-Spam: Yes\r\nReceived: x\r\n".to_vec())
    );
    assert_eq!(s.chunk(b"rest\r\n".to_vec()), Some(b"rest\r\n".to_vec()));
}

#[tokio::test]
async fn a_dead_filter_tempfails_waiting_sessions_and_is_restarted() {
    let fx = Fixture::new("dead");
    let p = fx.process("filter:mail-from").await;
    let chain = Arc::new(Chain::new(vec![Step::Proc(p.clone())], no_tables()));
    let mut a = SessionFilters::connect(
        Some(chain.clone()),
        1,
        client(),
        server(),
        ReverseName::default(),
    )
    .await;
    let mut b = SessionFilters::connect(
        Some(chain.clone()),
        2,
        client(),
        server(),
        ReverseName::default(),
    )
    .await;
    assert_eq!(
        a.mail(Some("die@example.net")).await,
        Verdict::Disconnect(filter_tempfail())
    );
    assert_eq!(
        b.mail(Some("ok@example.net")).await,
        Verdict::Disconnect(filter_tempfail())
    );
    for _ in 0..200 {
        if p.live().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c =
        SessionFilters::connect(Some(chain), 3, client(), server(), ReverseName::default()).await;
    assert_eq!(c.mail(Some("ok@example.net")).await, Verdict::Proceed);
}

#[tokio::test]
async fn a_filter_that_does_not_register_fails_to_start() {
    let err = Process::start(ProcSpec {
        name: "mute".into(),
        command: "/bin/echo hello".into(),
        user: None,
        group: None,
        admd: "mx".into(),
        session_timeout: 300,
    })
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string().starts_with("filter mute: handshake"),
        "{err}"
    );
}

fn inline(values: &[&str]) -> TableRef {
    TableRef::Inline(StaticTable::List(
        values.iter().map(|s| s.to_string()).collect(),
    ))
}

fn builtin(phase: Phase, conditions: Vec<FilterCondition>, decision: FilterDecision) -> Step {
    Step::Builtin(Builtin {
        name: "b".into(),
        phase,
        conditions,
        decision,
    })
}

#[tokio::test]
async fn builtin_mail_from_reject_matches_the_table_and_its_negation() {
    let cond = |negated| FilterCondition {
        negated,
        criterion: FilterCriterion::MailFrom(TableCrit {
            regex: false,
            table: inline(&["spammer@evil.example"]),
        }),
    };
    let reject = FilterDecision::Reject("550 5.7.1 no thanks".into());
    let mut s = session(
        Chain::new(
            vec![builtin(Phase::MailFrom, vec![cond(false)], reject.clone())],
            no_tables(),
        ),
        1,
    )
    .await;
    assert_eq!(
        s.mail(Some("spammer@evil.example")).await,
        Verdict::Reject(Reply::new(550, "5.7.1", "no thanks"))
    );
    assert_eq!(s.mail(Some("friend@good.example")).await, Verdict::Proceed);
    let mut s = session(
        Chain::new(
            vec![builtin(Phase::MailFrom, vec![cond(true)], reject)],
            no_tables(),
        ),
        2,
    )
    .await;
    assert_eq!(s.mail(Some("spammer@evil.example")).await, Verdict::Proceed);
    assert!(matches!(
        s.mail(Some("friend@good.example")).await,
        Verdict::Reject(_)
    ));
}

#[tokio::test]
async fn builtin_bypass_skips_the_rest_of_the_chain() {
    let src = FilterCondition {
        negated: false,
        criterion: FilterCriterion::Src(TableCrit {
            regex: false,
            table: inline(&["192.0.2.7"]),
        }),
    };
    let chain = Chain::new(
        vec![
            builtin(Phase::Connect, vec![src], FilterDecision::Bypass),
            builtin(
                Phase::Connect,
                vec![],
                FilterDecision::Disconnect("421 closed".into()),
            ),
        ],
        no_tables(),
    );
    let chain = Arc::new(chain);
    let mut trusted = SessionFilters::connect(
        Some(chain.clone()),
        1,
        client(),
        server(),
        ReverseName::default(),
    )
    .await;
    assert_eq!(trusted.connect_phase().await, Verdict::Proceed);
    let other = Some("198.51.100.1:1000".parse().unwrap());
    let mut stranger =
        SessionFilters::connect(Some(chain), 2, other, server(), ReverseName::default()).await;
    assert_eq!(
        stranger.connect_phase().await,
        Verdict::Disconnect(Reply::new(421, "", "closed"))
    );
}

#[tokio::test]
async fn a_builtin_rewrite_goes_to_the_session_at_rcpt_to_and_is_refused_at_data() {
    let rewrite = FilterDecision::Rewrite("x@y".into());
    let mut s = session(
        Chain::new(
            vec![
                builtin(Phase::RcptTo, vec![], rewrite.clone()),
                builtin(Phase::Data, vec![], rewrite),
            ],
            no_tables(),
        ),
        1,
    )
    .await;
    assert_eq!(
        s.command(FilterPhase::RcptTo, "a@b").await,
        FilterVerdict::Rewrite("x@y".into())
    );
    assert!(matches!(s.data().await, Verdict::Reject(r) if r.code == 451));
}

#[tokio::test]
async fn command_phases_are_asked_and_their_reports_follow_opensmtpd() {
    let fx = Fixture::new("commands");
    let p = fx
        .process(
            "filter:ehlo,filter:rset,filter:quit,report:link-identify,report:tx-begin,\
             report:tx-rollback,report:tx-reset,report:protocol-client,report:timeout",
        )
        .await;
    let mut s = session(Chain::new(vec![Step::Proc(p)], no_tables()), 0x99).await;
    s.client_line("EHLO bad.example");
    assert_eq!(
        s.command(FilterPhase::Ehlo, "bad.example").await,
        FilterVerdict::Reject(Reply::new(550, "5.7.1", "go away"))
    );
    assert_eq!(
        s.command(FilterPhase::Ehlo, "good.example").await,
        FilterVerdict::Proceed
    );
    assert_eq!(
        s.command(FilterPhase::MailFrom, "a@example.net").await,
        FilterVerdict::Proceed
    );
    s.mail_result(Some("a@example.net"), "ok");
    assert_eq!(
        s.command(FilterPhase::Rset, "").await,
        FilterVerdict::Proceed
    );
    // A second RSET has no transaction to end.
    assert_eq!(
        s.command(FilterPhase::Rset, "").await,
        FilterVerdict::Proceed
    );
    s.timeout();
    s.disconnect();
    let seen = fx.seen("|timeout|").await;
    let msgid = format!("{:08x}", 0x99u32.wrapping_add(1));
    let sid = "0000000000000099";
    assert_eq!(
        &seen[5..],
        [
            format!("report|0.6|TIME|smtp-in|protocol-client|{sid}|EHLO bad.example"),
            format!("filter|0.6|TIME|smtp-in|ehlo|{sid}|TOKEN|bad.example"),
            format!("filter|0.6|TIME|smtp-in|ehlo|{sid}|TOKEN|good.example"),
            format!("report|0.6|TIME|smtp-in|link-identify|{sid}|EHLO|good.example"),
            format!("report|0.6|TIME|smtp-in|tx-begin|{sid}|{msgid}"),
            format!("filter|0.6|TIME|smtp-in|rset|{sid}|TOKEN|"),
            format!("report|0.6|TIME|smtp-in|tx-rollback|{sid}|{msgid}"),
            format!("report|0.6|TIME|smtp-in|tx-reset|{sid}|{msgid}"),
            format!("filter|0.6|TIME|smtp-in|rset|{sid}|TOKEN|"),
            format!("report|0.6|TIME|smtp-in|timeout|{sid}"),
        ]
    );
}

#[tokio::test]
async fn a_filter_rewrite_of_the_helo_name_is_the_name_reported() {
    let fx = Fixture::new("rewrite");
    let script = fx.dir.join("rewrite.py");
    std::fs::write(
        &script,
        r#"
import sys, os
log = open(sys.argv[1], "a")
for line in sys.stdin:
    f = line.rstrip("\n").split("|")
    if f[0] == "config" and f[1] == "ready":
        print("register|filter|smtp-in|helo")
        print("register|report|smtp-in|link-identify")
        print("register|ready", flush=True)
    elif f[0] == "filter":
        print("filter-result|%s|%s|rewrite|renamed.example" % (f[5], f[6]), flush=True)
    elif f[0] == "report":
        log.write("%s|%s\n" % (f[4], "|".join(f[6:])))
        log.flush()
"#,
    )
    .unwrap();
    let p = Process::start(ProcSpec {
        name: "rewrite".into(),
        command: format!("/usr/bin/python3 {} {}", script.display(), fx.log.display()),
        user: None,
        group: None,
        admd: "mx.example.org".into(),
        session_timeout: 300,
    })
    .await
    .unwrap();
    let mut s = session(Chain::new(vec![Step::Proc(p)], no_tables()), 5).await;
    assert_eq!(
        s.command(FilterPhase::Helo, "original.example").await,
        FilterVerdict::Rewrite("renamed.example".into())
    );
    assert_eq!(
        fx.seen("link-identify").await,
        ["link-identify|HELO|renamed.example"]
    );
}
