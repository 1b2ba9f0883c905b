//! Delivery agents against real programs: Dovecot's LMTP server (fetched back over IMAP),
//! Maildirs on disk, and `/bin/sh` commands for mda.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fugu_tests::dovecot::{Dovecot, User};
use mta::clock::ManualClock;
use mta::deliver::lmtp::{Lmtp, Target};
use mta::deliver::maildir::Maildir;
use mta::deliver::mda::{Mda, MdaEnv};
use mta::envelope::{BodyType, Envelope, Origin, Recipient};
use mta::queue::{
    Dispatch, MessageRef, Outcome, Queue, QueueConfig, RcptOutcome, RcptRef, Scheduler,
};

fn message(subject: &str, body_lines: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n\r\n"
    )
    .into_bytes();
    for i in 0..body_lines {
        m.extend_from_slice(format!("line {i} of the body\r\n").as_bytes());
    }
    // A line starting with a dot must survive LMTP's dot-stuffing.
    m.extend_from_slice(b".signature\r\n");
    m
}

fn assert_has(haystack: &[u8], needle: &str) {
    let h = String::from_utf8_lossy(haystack);
    assert!(h.contains(needle), "{needle:?} not in:\n{h}");
}

#[tokio::test]
async fn lmtp_delivers_to_a_passwd_file_user_who_finds_it_over_imap() {
    let dovecot = Dovecot::start(&[User::new("bob@example.org", "bobpw")]);
    let sock = dovecot.endpoints.lmtp_socket.clone().unwrap();
    let tcp = dovecot.endpoints.lmtp_tcp.unwrap();

    let over_unix = Lmtp::new(Target::Unix(sock), "mx.example.org");
    let out = over_unix
        .deliver(
            Some("alice@example.org"),
            &["bob@example.org"],
            &message("via-unix", 3),
        )
        .await;
    assert!(
        matches!(&out[..], [Outcome::Delivered(s)] if s.starts_with("250 2.0.0")),
        "{out:?}"
    );

    let over_tcp = Lmtp::new(Target::parse(&tcp.to_string()), "mx.example.org");
    let out = over_tcp
        .deliver(None, &["bob@example.org"], &message("via-tcp", 3))
        .await;
    assert!(matches!(&out[..], [Outcome::Delivered(_)]), "{out:?}");

    let inbox = dovecot.imap_fetch("bob@example.org", "bobpw", "INBOX");
    assert_eq!(inbox.len(), 2, "{}", dovecot.log());
    assert_has(&inbox[0], "Subject: via-unix");
    // Dovecot adds its own trace headers over LMTP.
    assert_has(&inbox[0], "Return-Path: <alice@example.org>");
    assert_has(&inbox[0], "\r\n.signature\r\n");
    assert_has(&inbox[1], "Subject: via-tcp");
    assert_has(&inbox[1], "Return-Path: <>");
    let who = dovecot.doveadm(&[
        "mailbox",
        "status",
        "-u",
        "bob@example.org",
        "messages",
        "INBOX",
    ]);
    assert!(who.trim().ends_with("messages=2"), "{who}");
}

#[tokio::test]
async fn lmtp_reports_unknown_users_per_recipient() {
    let dovecot = Dovecot::start(&[User::new("bob@example.org", "bobpw")]);
    let lmtp = Lmtp::new(
        Target::Unix(dovecot.endpoints.lmtp_socket.clone().unwrap()),
        "mx.example.org",
    );
    let out = lmtp
        .deliver(
            Some("alice@example.org"),
            &["nobody@example.org", "bob@example.org"],
            &message("mixed", 1),
        )
        .await;
    assert!(
        matches!(&out[0], Outcome::PermFail(s) if s.starts_with("550 5.1.1")),
        "{out:?}"
    );
    assert!(matches!(&out[1], Outcome::Delivered(_)), "{out:?}");
}

#[tokio::test]
async fn lmtp_to_a_dead_socket_is_a_temporary_failure_for_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let lmtp = Lmtp::new(Target::Unix(dir.path().join("nothing")), "mx");
    let out = lmtp.deliver(None, &["a@x", "b@x"], b"x\r\n").await;
    assert_eq!(out.len(), 2);
    assert!(
        out.iter()
            .all(|o| matches!(o, Outcome::TempFail(s) if s.starts_with("421 4.4.1"))),
        "{out:?}"
    );
}

/// The daemon's dispatch, reduced to one LMTP action.
struct ToLmtp(Lmtp);

impl Dispatch for ToLmtp {
    async fn deliver(
        &self,
        _action: &str,
        msg: &MessageRef,
        rcpts: &[RcptRef],
    ) -> Vec<RcptOutcome> {
        let data = msg.read().await.unwrap();
        let to: Vec<&str> = rcpts.iter().map(|r| r.address.as_str()).collect();
        let out = self.0.deliver(msg.sender(), &to, &data).await;
        rcpts
            .iter()
            .zip(out)
            .map(|(r, outcome)| RcptOutcome {
                evpid: r.evpid,
                outcome,
            })
            .collect()
    }

    fn bounce_targets(&self, _sender: &str) -> Option<Vec<mta::envelope::Target>> {
        None
    }
}

#[tokio::test]
async fn an_lmtp_4xx_for_one_of_two_recipients_retries_only_that_one() {
    let dovecot = Dovecot::start(&[
        User::new("alice@example.org", "alicepw"),
        User::new("bob@example.org", "bobpw").with_quota("*:storage=1K"),
    ]);
    let spool = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let q = Queue::open(
        spool.path(),
        QueueConfig {
            retry_base: Duration::from_secs(60),
            ..QueueConfig::default()
        },
        clock.clone(),
    )
    .unwrap();
    let lmtp = Lmtp::new(
        Target::Unix(dovecot.endpoints.lmtp_socket.clone().unwrap()),
        "mx.example.org",
    );
    let s = Scheduler::new(q.clone(), Arc::new(ToLmtp(lmtp)));

    let mut inc = q
        .begin(Envelope {
            session_id: 1,
            origin: Origin::Local,
            helo: "localhost".into(),
            rdns: None,
            tag: None,
            auth_user: None,
            protocol: "ESMTP".into(),
            mail_from: Some("carol@example.net".into()),
            body_type: BodyType::SevenBit,
            smtputf8: false,
            dsn_ret: None,
            dsn_envid: None,
            recipients: ["alice@example.org", "bob@example.org"]
                .iter()
                .map(|a| Recipient {
                    address: a.to_string(),
                    action: "dovecot".into(),
                    dest: None,
                    user: None,
                    orcpt: None,
                    notify: None,
                })
                .collect(),
        })
        .await
        .unwrap();
    // Bigger than bob's 1 KiB quota.
    inc.write(&message("quota", 200)).await.unwrap();
    inc.commit().await.unwrap();

    assert_eq!(s.run_once().await, 2);
    let left = q.list();
    assert_eq!(left.len(), 1, "{left:?}\n{}", dovecot.log());
    assert_eq!(left[0].rcpt, "bob@example.org");
    let err = left[0].last_error.clone().unwrap();
    assert!(err.starts_with("452 4.2.2"), "{err}");

    // The operator raises bob's quota; Dovecot re-reads the passwd-file.
    let passwd = dovecot.config().with_file_name("passwd");
    let text = std::fs::read_to_string(&passwd).unwrap().replace(
        "userdb_quota_rule=*:storage=1K",
        "userdb_quota_rule=*:storage=10M",
    );
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&passwd, text).unwrap();

    clock.advance(Duration::from_secs(120));
    assert_eq!(s.run_once().await, 1, "only bob is retried");
    assert!(q.list().is_empty());
    assert_eq!(
        dovecot
            .imap_fetch("alice@example.org", "alicepw", "INBOX")
            .len(),
        1,
        "alice got a duplicate"
    );
    let bob = dovecot.imap_fetch("bob@example.org", "bobpw", "INBOX");
    assert_eq!(bob.len(), 1);
    assert_has(&bob[0], "Subject: quota");
}

fn read_new(maildir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn maildir_delivery_adds_trace_headers_and_junk_files_marked_spam_into_the_junk_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bob/Maildir");
    let inbox = Maildir {
        root: root.clone(),
        junk: false,
        hostname: "mx.example.org".into(),
    };
    let (o, path) = inbox
        .deliver(
            Some("alice@example.org"),
            "bob@example.org",
            &message("first", 2),
        )
        .await;
    assert!(matches!(o, Outcome::Delivered(_)), "{o:?}");
    let path = path.unwrap();
    assert!(mta::deliver::maildir::is_new(&path));
    let got = std::fs::read(&path).unwrap();
    assert!(
        got.starts_with(
            b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.org\nFrom: Alice"
        ),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(!got.contains(&b'\r'), "line ends must be LF on disk");
    for sub in ["cur", "new", "tmp"] {
        assert!(root.join(sub).is_dir());
    }

    let junk = Maildir {
        junk: true,
        ..inbox.clone()
    };
    let mut spam = b"X-Spam: yes\r\n".to_vec();
    spam.extend_from_slice(&message("spam", 1));
    let (o, _) = junk.deliver(None, "bob@example.org", &spam).await;
    assert!(matches!(o, Outcome::Delivered(_)));
    assert_eq!(read_new(&root.join(".Junk")).len(), 1);
    // Mail without the mark goes to the inbox even with `junk` (OpenSMTPD's `mail.maildir -j`).
    let (o, _) = junk
        .deliver(None, "bob@example.org", &message("ham", 1))
        .await;
    assert!(matches!(o, Outcome::Delivered(_)));
    assert_eq!(read_new(&root.join(".Junk")).len(), 1);
    assert_eq!(read_new(&root).len(), 2);
    assert!(root.join(".Junk/maildirfolder").exists());
    assert_has(&read_new(&root.join(".Junk"))[0].1, "Return-Path: <>\n");

    // Unique names: many deliveries, as many files.
    for i in 0..50 {
        inbox
            .deliver(None, "bob@example.org", &message(&format!("m{i}"), 1))
            .await;
    }
    assert_eq!(read_new(&root).len(), 52);
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn maildir_delivery_to_an_unusable_path_keeps_the_mail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"not a directory").unwrap();
    let m = Maildir {
        root: dir.path().join("file/Maildir"),
        junk: false,
        hostname: "h".into(),
    };
    let (o, p) = m.deliver(None, "bob@example.org", b"x\r\n").await;
    assert!(p.is_none());
    assert!(
        matches!(o, Outcome::TempFail(_) | Outcome::PermFail(_)),
        "{o:?}"
    );
}

const CRASH_BODY_LINES: usize = 4000;

/// Run only as the child of `maildir_files_are_complete_after_a_kill_9`: delivers until killed.
#[tokio::test]
#[ignore]
async fn maildir_crash_helper() {
    let Some(root) = std::env::var_os("FUGU_MAILDIR_CRASH_ROOT") else {
        return;
    };
    let m = Maildir {
        root: PathBuf::from(root),
        junk: false,
        hostname: "crash".into(),
    };
    let msg = message("crash", CRASH_BODY_LINES);
    loop {
        m.deliver(None, "bob@example.org", &msg).await;
    }
}

#[test]
fn maildir_files_are_complete_after_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Maildir");
    let expected = {
        let mut e = b"Return-Path: <>\nDelivered-To: bob@example.org\n".to_vec();
        e.extend_from_slice(&mta::deliver::crlf_to_lf(&message(
            "crash",
            CRASH_BODY_LINES,
        )));
        e
    };
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "deliver::maildir_crash_helper",
                "--nocapture",
            ])
            .env("FUGU_MAILDIR_CRASH_ROOT", &root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400 + 150 * round));
        // kill(2) with SIGKILL: no destructor, no flush.
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let delivered = read_new(&root);
    assert!(
        delivered.len() > 3,
        "the helper delivered almost nothing: {}",
        delivered.len()
    );
    for (p, bytes) in &delivered {
        assert!(
            bytes == &expected,
            "{} is incomplete ({} of {} bytes)",
            p.display(),
            bytes.len(),
            expected.len()
        );
    }
}

fn mda(command: &str, home: &Path) -> Mda {
    Mda {
        command: command.into(),
        env: MdaEnv {
            sender: Some("alice@example.org".into()),
            recipient: "bob+lists@example.org".into(),
            original_recipient: "robert@example.org".into(),
            user: "bob".into(),
            home: home.display().to_string(),
            shell: None,
        },
        user: None,
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn mda_gets_the_message_on_stdin_and_opensmtpd_s_environment() {
    let dir = tempfile::tempdir().unwrap();
    let o = mda("cat > \"$HOME/msg\" && env > \"$HOME/env\"", dir.path())
        .deliver(&message("mda", 2))
        .await;
    assert!(matches!(o, Outcome::Delivered(_)), "{o:?}");
    let msg = std::fs::read(dir.path().join("msg")).unwrap();
    assert_eq!(msg, mta::deliver::crlf_to_lf(&message("mda", 2)));
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
    for line in [
        "SENDER=alice@example.org",
        "RECIPIENT=bob+lists@example.org",
        "ORIGINAL_RECIPIENT=robert@example.org",
        "LOCAL=bob",
        "EXTENSION=lists",
        "DOMAIN=example.org",
        "USER=bob",
        "LOGNAME=bob",
        "SHELL=/bin/sh",
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from:\n{env}"
        );
    }
    assert!(
        env.lines()
            .any(|l| l == format!("HOME={}", dir.path().display()))
    );
}

#[tokio::test]
async fn mda_exit_status_decides_temporary_or_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let t = mda("echo 'disk on fire' >&2; exit 75", dir.path())
        .deliver(b"x\r\n")
        .await;
    assert_eq!(
        t,
        Outcome::TempFail("451 4.3.0 mda exited with status 75: disk on fire".into())
    );
    let t = mda("exit 71", dir.path()).deliver(b"x\r\n").await;
    assert!(matches!(t, Outcome::TempFail(_)), "{t:?}");
    let p = mda("echo 'no such mailbox' >&2; exit 67", dir.path())
        .deliver(b"x\r\n")
        .await;
    assert_eq!(
        p,
        Outcome::PermFail("550 5.3.0 mda exited with status 67: no such mailbox".into())
    );
    // A command that ignores its input still counts by its status.
    let ok = mda("true", dir.path()).deliver(&vec![b'x'; 1 << 20]).await;
    assert!(matches!(ok, Outcome::Delivered(_)), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mbox_deliveries_append_whole_messages() {
    use mta::deliver::mbox::Mbox;
    let dir = tempfile::tempdir().unwrap();
    let mbox = Mbox {
        path: dir.path().join("bob"),
        owner: None,
    };
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let m = mbox.clone();
        set.spawn(async move {
            let msg = format!(
                "Subject: n{i}\r\n\r\nFrom the start\r\n{}\r\nend {i}\r\n",
                "y".repeat(50_000)
            );
            m.deliver(
                Some("alice@example.org"),
                "bob@example.org",
                msg.as_bytes(),
                SystemTime::now(),
            )
            .await
        });
    }
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.unwrap(), Outcome::Delivered(_)));
    }
    let text = std::fs::read_to_string(dir.path().join("bob")).unwrap();
    let messages: Vec<&str> = text.split("\n\nFrom alice@example.org ").collect();
    assert_eq!(messages.len(), 20);
    for m in messages {
        let n = m
            .split("Subject: n")
            .nth(1)
            .unwrap()
            .split('\n')
            .next()
            .unwrap();
        assert!(m.contains("\n>From the start\n"), "From line not quoted");
        assert!(
            m.trim_end().ends_with(&format!("end {n}")),
            "message {n} is interleaved or cut"
        );
    }
    assert!(text.starts_with("From alice@example.org "));
}
