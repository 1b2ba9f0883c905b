//! The dashboard's mail-flow figures, read from the mta's `show stats` over the control
//! socket: from the queue tests' scripted daemon (golden page), from a real `fugu smtpd`,
//! and without one.

use std::path::Path;

use crate::harness::{Client, Console, golden, stable};
use crate::queue::{Smtpd, spawn_daemon};

/// What fugu smtpd's `show stats` printed after a day of light traffic.
pub const STATS: &str = "queue.commit.messages=41\n\
                     queue.commit.rounds=30\n\
                     scheduler.delivery.ok=37\n\
                     scheduler.delivery.permfail=2\n\
                     scheduler.delivery.tempfail=5\n\
                     scheduler.envelope=3\n\
                     scheduler.envelope.expired=1\n\
                     scheduler.envelope.inflight=0\n\
                     scheduler.envelope.removed=0\n\
                     scheduler.ramqueue.message=2\n\
                     uptime=93784\n\
                     uptime.human=1d2h3m4s\n";

/// The text of the mail-flow tile labelled `label`, e.g. `41` for "received".
fn tile(body: &str, label: &str) -> Option<String> {
    let end = body.find(&format!("</b> {label}</div>"))?;
    let start = body[..end].rfind("<b>")? + 3;
    Some(body[start..end].to_string())
}

#[tokio::test]
async fn the_dashboard_shows_the_mtas_mail_flow_figures() {
    let sockdir = tempfile::tempdir().unwrap();
    let socket = sockdir.path().join("control.sock");
    spawn_daemon(&socket, &[]);
    let console = Console::start_with(|c| c.control_socket = Some(socket.clone())).await;
    let mut root = console.superadmin().await;

    let page = root.get("/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    golden("dashboard.html", &stable(&page.body, &page.csrf()));
    let figures: Vec<Option<String>> = [
        "received",
        "delivered",
        "deferred",
        "bounced",
        "in the queue",
        "sessions",
    ]
    .iter()
    .map(|l| tile(&page.body, l))
    .collect();
    // Bounced is permanent failures plus expiries: 2 + 1.
    let expected = ["41", "37", "5", "3", "3", "n/a"].map(|s| Some(s.to_string()));
    assert_eq!(figures, expected);
    assert!(page.body.contains("(1d2h3m4s ago)"));
    console.stop().await;
}

#[tokio::test]
async fn without_a_running_mta_the_dashboard_says_so() {
    let sockdir = tempfile::tempdir().unwrap();
    // Configured, but nothing listens: the socket file does not exist.
    let socket = sockdir.path().join("control.sock");
    let console = Console::start_with(|c| c.control_socket = Some(socket)).await;
    let mut root = console.superadmin().await;
    let body = root.get("/").await.body;
    assert!(
        body.contains("The mta is not running on this box: no mail-flow figures."),
        "{body}"
    );
    assert_eq!(tile(&body, "received"), None);
    console.stop().await;

    // No control socket configured at all reads the same.
    let console = Console::start().await;
    let body = console.superadmin().await.get("/").await.body;
    assert!(body.contains("The mta is not running on this box"));
    console.stop().await;
}

#[tokio::test]
async fn a_domain_admin_sees_no_server_wide_figures() {
    let sockdir = tempfile::tempdir().unwrap();
    let socket = sockdir.path().join("control.sock");
    spawn_daemon(&socket, &[]);
    let console = Console::start_with(|c| c.control_socket = Some(socket.clone())).await;
    let mut root = console.superadmin().await;
    root.add_domain_admin("dora", "correct horse battery", "example.org")
        .await;
    let body = console
        .login("dora", "correct horse battery")
        .await
        .get("/")
        .await
        .body;
    assert!(body.contains("<h1>Dashboard</h1>"), "{body}");
    assert!(!body.contains("Mail flow"), "{body}");
    assert_eq!(tile(&body, "received"), None);
    console.stop().await;
}

/// Polls the dashboard until the tile `label` reads `want`.
async fn wait_tile(client: &mut Client, label: &str, want: &str, log: &Path) -> String {
    for _ in 0..200 {
        let body = client.get("/").await.body;
        if tile(&body, label).as_deref() == Some(want) {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "the dashboard never showed {want} {label}; smtpd log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_smtpds_counters_reach_the_dashboard_and_vanish_when_it_stops() {
    let mut smtpd = Smtpd::start();
    let log = smtpd.root.join("smtpd.log");
    let console = Console::start_with(|c| c.control_socket = Some(smtpd.socket())).await;
    let mut root = console.superadmin().await;

    let body = root.get("/").await.body;
    assert_eq!(tile(&body, "received").as_deref(), Some("0"), "{body}");

    // The LMTP socket does not exist, so the one recipient is deferred and stays queued.
    smtpd.send("alice@client.test", "bob@stuck.test");
    let body = wait_tile(&mut root, "deferred", "1", &log).await;
    assert_eq!(tile(&body, "received").as_deref(), Some("1"));
    assert_eq!(tile(&body, "delivered").as_deref(), Some("0"));
    assert_eq!(tile(&body, "bounced").as_deref(), Some("0"));
    assert_eq!(tile(&body, "in the queue").as_deref(), Some("1"));
    assert!(
        body.contains("1 message(s) in <a href=\"/queue\">"),
        "{body}"
    );

    smtpd.stop();
    let body = root.get("/").await.body;
    assert!(
        body.contains("The mta is not running on this box: no mail-flow figures."),
        "{body}"
    );
    console.stop().await;
}
