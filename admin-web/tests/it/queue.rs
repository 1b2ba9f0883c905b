//! The queue page against a daemon speaking the control-socket protocol of
//! docs/src/reference/protocol.md: one request line, `ok LEN\n` + body or `error TEXT\n`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use crate::api::token_as;
use crate::harness::{Console, golden, stable};

pub const DEFERRED: &str = "1a2b3c4d9e8f7a6b|inet|relay||alice@example.org|bob@example.net|bob@example.net|1000|2000|1300|2|pending|420|3700|421 4.7.0 try later \\| greylisted";
pub const BOUNCE: &str = "5e6f70810000002a|local|deliver|bounce||carol@example.org|carol@example.org|0|0|0|0|inflight|0|90000|";

/// The daemon's side: a queue of `show queue` lines, and every request line it received;
/// `show stats` answers the dashboard's fixed figures.
pub struct Daemon {
    queue: Mutex<Vec<String>>,
    pub requests: Mutex<Vec<String>>,
}

pub fn spawn_daemon(socket: &Path, lines: &[&str]) -> Arc<Daemon> {
    let daemon = Arc::new(Daemon {
        queue: Mutex::new(lines.iter().map(|l| l.to_string()).collect()),
        requests: Mutex::new(Vec::new()),
    });
    let listener = UnixListener::bind(socket).unwrap();
    let d = daemon.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            let line = line.trim_end().to_string();
            d.requests.lock().unwrap().push(line.clone());
            let answer = {
                let mut q = d.queue.lock().unwrap();
                match line.split_once(' ') {
                    Some(("show", "queue")) => Ok(q.iter().map(|l| format!("{l}\n")).collect()),
                    Some(("show", "stats")) => Ok(crate::dashboard::STATS.to_string()),
                    Some(("schedule", id)) if q.iter().any(|l| l.starts_with(id)) => {
                        Ok(String::new())
                    }
                    Some(("remove", id)) if q.iter().any(|l| l.starts_with(id)) => {
                        q.retain(|l| !l.starts_with(id));
                        Ok(String::new())
                    }
                    Some(("schedule" | "remove", id)) => {
                        Err(format!("no such message or envelope: {id}"))
                    }
                    _ => Err(format!("unknown command: {line}")),
                }
            };
            let out = match answer {
                Ok(body) => format!("ok {}\n{body}", body.len()),
                Err(text) => format!("error {text}\n"),
            };
            stream.get_mut().write_all(out.as_bytes()).await.unwrap();
        }
    });
    daemon
}

#[tokio::test]
async fn the_queue_page_lists_deferred_mail_and_retries_and_deletes_it() {
    let sockdir = tempfile::tempdir().unwrap();
    let socket = sockdir.path().join("control.sock");
    let daemon = spawn_daemon(&socket, &[DEFERRED, BOUNCE]);
    let console = Console::start_with(|c| c.control_socket = Some(socket.clone())).await;
    let mut root = console.superadmin().await;

    let page = root.get("/queue").await;
    assert_eq!(page.status, 200, "{}", page.body);
    golden("queue.html", &stable(&page.body, &page.csrf()));
    assert!(page.body.contains("421 4.7.0 try later | greylisted"));

    let csrf = page.csrf();
    let r = root
        .post_form("/queue/1a2b3c4d9e8f7a6b/retry", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    assert!(
        root.get("/queue")
            .await
            .body
            .contains("Scheduled 1a2b3c4d9e8f7a6b.")
    );
    let r = root
        .post_form("/queue/5e6f70810000002a/remove", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    let after = root.get("/queue").await.body;
    assert!(after.contains("Removed 5e6f70810000002a."));
    assert!(!after.contains("carol@example.org"));
    // The daemon's own refusal reaches the operator.
    root.post_form("/queue/5e6f70810000002a/remove", &[("csrf", &csrf)])
        .await;
    assert!(
        root.get("/queue")
            .await
            .body
            .contains("The mta refused: no such message or envelope: 5e6f70810000002a")
    );
    // A POST without the CSRF token never reaches the daemon.
    let forged = root.post_form("/queue/1a2b3c4d9e8f7a6b/remove", &[]).await;
    assert_eq!(forged.status, 403);

    assert_eq!(
        *daemon.requests.lock().unwrap(),
        [
            "show queue",
            "schedule 1a2b3c4d9e8f7a6b",
            "show queue",
            "remove 5e6f70810000002a",
            "show queue",
            "remove 5e6f70810000002a",
            "show queue",
        ]
    );
    let audit = console
        .store
        .list_audit(&store::AuditQuery {
            action: Some("queue.".to_string()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut actions: Vec<(&str, &str, &str)> = audit
        .entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.object.as_str()))
        .collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            ("root", "queue.schedule", "1a2b3c4d9e8f7a6b"),
            ("root", "queue.remove", "5e6f70810000002a"),
        ]
    );
    console.stop().await;
}

#[tokio::test]
async fn without_a_running_mta_the_page_says_so() {
    let sockdir = tempfile::tempdir().unwrap();
    // Configured, but nothing listens: the socket file does not exist.
    let socket = sockdir.path().join("control.sock");
    let console = Console::start_with(|c| c.control_socket = Some(socket)).await;
    let mut root = console.superadmin().await;
    let page = root.get("/queue").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("The mta is not running on this box"));
    let csrf = page.csrf();
    root.post_form("/queue/1a2b3c4d9e8f7a6b/retry", &[("csrf", &csrf)])
        .await;
    assert!(
        root.get("/queue")
            .await
            .body
            .contains("The mta is not running on this box.")
    );
    console.stop().await;
}

#[tokio::test]
async fn a_domain_admin_may_not_see_the_queue() {
    let console = Console::start().await;
    let mut root = console.superadmin().await;
    root.add_domain_admin("dora", "correct horse battery", "example.org")
        .await;
    let mut dora = console.login("dora", "correct horse battery").await;
    assert_eq!(dora.get("/queue").await.status, 403);
    let csrf = dora.get("/").await.csrf();
    let r = dora
        .post_form("/queue/1a2b3c4d9e8f7a6b/remove", &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 403);
    console.stop().await;
}

/// A real `fugu smtpd` whose mail for `stuck.test` goes to an LMTP socket nobody listens
/// on, so it stays queued with a last error (the set-up of fugu-tests' `ctl` module).
pub struct Smtpd {
    pub root: fugu_tests::fugu::Root,
    smtp: std::net::SocketAddr,
    child: Option<fugu_tests::process::Child>,
}

impl Smtpd {
    pub fn start() -> Smtpd {
        use std::time::Duration;
        let root = fugu_tests::fugu::Root::new();
        let port = fugu_tests::net::free_port();
        let conf = fugu_tests::fugu::one_user_conf(
            &root,
            port,
            "stuck.test",
            r#"lmtp "{root}/nobody-listens.sock""#,
        );
        let cmd = fugu_tests::fugu::smtpd_command(&conf, &root.join("spool"));
        let child = fugu_tests::process::Child::spawn("fugu smtpd", cmd, &root.join("smtpd.log"));
        let smtp = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        fugu_tests::net::wait_for_port(smtp, Duration::from_secs(10));
        let s = Smtpd {
            root,
            smtp,
            child: Some(child),
        };
        fugu_tests::net::wait_for_unix_socket(&s.socket(), Duration::from_secs(10));
        s
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.root.join("spool").join("control.sock")
    }

    pub fn send(&self, from: &str, to: &str) {
        fugu_tests::smtp::send_message(self.smtp, from, to, "stuck");
    }
}

impl Smtpd {
    /// Kills the daemon; its control socket file stays behind, as after a crash.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.signal(9);
            c.wait_timeout(std::time::Duration::from_secs(10));
        }
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls the queue page until it contains `needle`.
async fn wait_page(client: &mut crate::harness::Client, needle: &str, log: &Path) -> String {
    for _ in 0..200 {
        let page = client.get("/queue").await;
        if page.body.contains(needle) {
            return page.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the queue page never showed {needle:?}; smtpd log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_smtpd_queue_is_listed_retried_and_emptied_from_the_console() {
    let smtpd = Smtpd::start();
    let log = smtpd.root.join("smtpd.log");
    smtpd.send("alice@client.test", "bob@stuck.test");
    let console = Console::start_with(|c| c.control_socket = Some(smtpd.socket())).await;
    let mut root = console.superadmin().await;

    // After the failed LMTP attempt the row has its sender, recipient and the error.
    let body = wait_page(&mut root, "nobody-listens.sock", &log).await;
    assert!(
        body.contains("<td>alice@client.test</td><td>bob@stuck.test</td>"),
        "{body}"
    );
    assert!(
        body.contains("<td>in "),
        "next attempt is in the future: {body}"
    );
    let at = body.find("/retry\"").unwrap();
    let evpid = &body[at - 16..at];
    assert!(evpid.bytes().all(|b| b.is_ascii_hexdigit()), "{evpid}");

    let csrf = root.get("/queue").await.csrf();
    let r = root
        .post_form(&format!("/queue/{evpid}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 303);
    wait_page(&mut root, &format!("Scheduled {evpid}."), &log).await;
    root.post_form(&format!("/queue/{evpid}/remove"), &[("csrf", &csrf)])
        .await;
    let body = wait_page(&mut root, &format!("Removed {evpid}."), &log).await;
    assert!(body.contains("The queue is empty."), "{body}");
    console.stop().await;
}

// ---- the same queue through /api/v1/queue ----------------------------------------------

#[tokio::test]
async fn the_queue_api_lists_retries_and_deletes_within_token_scopes() {
    let sockdir = tempfile::tempdir().unwrap();
    let socket = sockdir.path().join("control.sock");
    let daemon = spawn_daemon(&socket, &[DEFERRED, BOUNCE]);
    let console = Console::start_with(|c| c.control_socket = Some(socket.clone())).await;
    let mut root = console.superadmin().await;
    root.add_domain_admin("dora", "correct horse battery", "example.org")
        .await;
    let mut reader = token_as(&console, "root", "read").await;
    let mut writer = token_as(&console, "root", "read-write").await;
    let mut dora = token_as(&console, "dora", "read-write").await;

    let r = reader.get("/api/v1/queue").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["envelopes"],
        serde_json::json!([
            {"id": "1a2b3c4d9e8f7a6b", "sender": "alice@example.org",
             "recipient": "bob@example.net", "state": "pending", "retries": 2,
             "age_seconds": 3700, "next_attempt_seconds": 420,
             "last_error": "421 4.7.0 try later | greylisted"},
            {"id": "5e6f70810000002a", "sender": "<>",
             "recipient": "carol@example.org", "state": "inflight", "retries": 0,
             "age_seconds": 90000, "next_attempt_seconds": null, "last_error": ""},
        ])
    );

    // Neither a read-only token nor a domain admin's reaches the daemon.
    let r = reader
        .request("POST", "/api/v1/queue/1a2b3c4d9e8f7a6b/retry", None, "")
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["message"], "this token is read-only");
    assert_eq!(dora.get("/api/v1/queue").await.status, 403);
    let r = dora
        .request("DELETE", "/api/v1/queue/1a2b3c4d9e8f7a6b", None, "")
        .await;
    assert_eq!(r.status, 403);
    // An id that is not hex is refused before the daemon sees it.
    let r = writer
        .request("DELETE", "/api/v1/queue/1a2b%20show", None, "")
        .await;
    assert_eq!(r.status, 404);

    let r = writer
        .request("POST", "/api/v1/queue/1a2b3c4d9e8f7a6b/retry", None, "")
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = writer
        .request("DELETE", "/api/v1/queue/5e6f70810000002a", None, "")
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = writer
        .request("DELETE", "/api/v1/queue/5e6f70810000002a", None, "")
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        "no such message or envelope: 5e6f70810000002a"
    );
    let r = reader.get("/api/v1/queue").await;
    assert_eq!(r.json()["envelopes"].as_array().unwrap().len(), 1);

    assert_eq!(
        *daemon.requests.lock().unwrap(),
        [
            "show queue",
            "schedule 1a2b3c4d9e8f7a6b",
            "remove 5e6f70810000002a",
            "remove 5e6f70810000002a",
            "show queue",
        ]
    );
    let audit = console
        .store
        .list_audit(&store::AuditQuery {
            action: Some("queue.".to_string()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut actions: Vec<(&str, &str)> = audit
        .entries
        .iter()
        .map(|e| (e.action.as_str(), e.object.as_str()))
        .collect();
    actions.reverse();
    assert_eq!(
        actions,
        [
            ("queue.schedule", "1a2b3c4d9e8f7a6b"),
            ("queue.remove", "5e6f70810000002a"),
        ]
    );
    console.stop().await;
}

#[tokio::test]
async fn the_queue_api_answers_503_without_a_running_mta() {
    let sockdir = tempfile::tempdir().unwrap();
    let socket = sockdir.path().join("control.sock");
    let console = Console::start_with(|c| c.control_socket = Some(socket)).await;
    console.superadmin().await;
    let mut api = token_as(&console, "root", "read-write").await;
    let r = api.get("/api/v1/queue").await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["error"]["message"],
        "The mta is not running on this box."
    );
    let r = api
        .request("POST", "/api/v1/queue/1a2b3c4d9e8f7a6b/retry", None, "")
        .await;
    assert_eq!(r.status, 503);
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_smtpd_queue_is_listed_and_emptied_through_the_api() {
    let smtpd = Smtpd::start();
    smtpd.send("alice@client.test", "bob@stuck.test");
    let console = Console::start_with(|c| c.control_socket = Some(smtpd.socket())).await;
    console.superadmin().await;
    let mut api = token_as(&console, "root", "read-write").await;

    let mut envelope = serde_json::Value::Null;
    for _ in 0..200 {
        let r = api.get("/api/v1/queue").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let e = r.json()["envelopes"][0].clone();
        if e["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("nobody-listens.sock")
        {
            envelope = e;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(envelope["sender"], "alice@client.test", "{envelope}");
    assert_eq!(envelope["recipient"], "bob@stuck.test");
    assert_eq!(envelope["state"], "pending");
    assert!(
        envelope["next_attempt_seconds"].as_i64().unwrap() > 0,
        "{envelope}"
    );
    let id = envelope["id"].as_str().unwrap();

    let r = api
        .request("POST", &format!("/api/v1/queue/{id}/retry"), None, "")
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = api
        .request("DELETE", &format!("/api/v1/queue/{id}"), None, "")
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = api.get("/api/v1/queue").await;
    assert_eq!(r.json()["envelopes"], serde_json::json!([]));
    console.stop().await;
}
