//! The spool and the scheduler, against a real filesystem and a manual clock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mta::Error;
use mta::clock::ManualClock;
use mta::envelope::{BodyType, DsnNotify, DsnRet, Envelope, Origin, Recipient};
use mta::queue::bounce::{self, DsnInput, FailedRcpt};
use mta::queue::journal::Record;
use mta::queue::{
    Dispatch, MessageRef, Outcome, Queue, QueueConfig, RcptOutcome, RcptRef, Scheduler,
};

const T0: u64 = 1_700_000_000;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0),
    ))
}

fn envelope(from: Option<&str>, rcpts: &[(&str, &str)]) -> Envelope {
    Envelope {
        session_id: 0x1234,
        origin: Origin::Inet("192.0.2.7:40000".parse().unwrap()),
        helo: "client.example.org".into(),
        rdns: None,
        tag: None,
        auth_user: None,
        protocol: "ESMTP".into(),
        mail_from: from.map(str::to_string),
        body_type: BodyType::SevenBit,
        smtputf8: false,
        dsn_ret: None,
        dsn_envid: None,
        recipients: rcpts
            .iter()
            .map(|(a, act)| Recipient {
                address: a.to_string(),
                action: act.to_string(),
                dest: None,
                user: None,
                orcpt: None,
                notify: None,
            })
            .collect(),
    }
}

const MSG: &[u8] =
    b"From: alice@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nhello\r\n";

async fn enqueue(q: &Queue, env: Envelope, body: &[u8]) -> String {
    let mut inc = q.begin(env).await.unwrap();
    inc.write(body).await.unwrap();
    inc.commit().await.unwrap().to_string()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_committed_message_survives_a_restart_with_its_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = Queue::open(dir.path(), QueueConfig::default(), c.clone()).unwrap();
    let id = enqueue(
        &q,
        envelope(
            Some("alice@example.org"),
            &[
                ("bob@example.net", "deliver"),
                ("carol@example.net", "deliver"),
            ],
        ),
        MSG,
    )
    .await;
    assert_eq!(id.len(), 8);
    // A small message waiting for delivery is held in memory; its durable copy is the
    // journal record, and it has no file until it needs one.
    assert!(files(&dir.path().join("queue")).is_empty());
    assert!(files(&dir.path().join("incoming")).is_empty());
    assert!(matches!(
        &journal_records(dir.path())[..],
        [Record::Commit { msg, .. }] if msg == MSG
    ));
    drop(q);

    let q = Queue::open(dir.path(), QueueConfig::default(), c).unwrap();
    // The restart wrote its files from the journal.
    assert_eq!(
        files(&dir.path().join("queue")),
        vec![format!("{id}.env"), format!("{id}.msg")]
    );
    let list = q.list();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|e| e.evpid.to_string().starts_with(&id)));
    assert_eq!(q.show_message(&id).await.unwrap(), MSG);
    let env = q.show_envelope(&id).unwrap();
    assert!(env.starts_with("version: 1\n"), "{env}");
    assert!(env.contains("address: carol@example.net\n"), "{env}");
    assert!(
        env.contains(&format!("expire: {}\n", T0 + 4 * 86400)),
        "{env}"
    );
}

#[tokio::test]
async fn a_second_process_cannot_open_a_spool_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), QueueConfig::default(), clock()).unwrap();
    let second = Queue::open(dir.path(), QueueConfig::default(), clock());
    assert!(matches!(second, Err(Error::SpoolBusy { .. })));
    // Reading the spool for `show queue` needs no lock.
    assert!(Queue::list_offline(dir.path()).unwrap().is_empty());
    drop(q);
    Queue::open(dir.path(), QueueConfig::default(), clock()).unwrap();
}

#[tokio::test]
async fn an_interrupted_receipt_is_discarded_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), QueueConfig::default(), clock()).unwrap();
    let mut inc = q
        .begin(envelope(None, &[("bob@example.net", "deliver")]))
        .await
        .unwrap();
    inc.write(&vec![b'x'; 600_000]).await.unwrap();
    // A crash: neither commit nor abort runs, and the process is gone. The spool as the
    // crash left it is copied aside (the leaked receipt still holds this one's lock).
    std::mem::forget(inc);
    assert_eq!(files(&dir.path().join("incoming")).len(), 1);
    let after = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.path().display()))
        .arg(after.path())
        .status()
        .unwrap();
    assert!(st.success());
    drop(q);

    let q = Queue::open(after.path(), QueueConfig::default(), clock()).unwrap();
    assert!(files(&after.path().join("incoming")).is_empty());
    assert!(q.list().is_empty());
}

#[tokio::test]
async fn abort_and_drop_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), QueueConfig::default(), clock()).unwrap();
    let mut inc = q
        .begin(envelope(None, &[("bob@example.net", "deliver")]))
        .await
        .unwrap();
    inc.write(MSG).await.unwrap();
    inc.abort();
    let inc = q
        .begin(envelope(None, &[("bob@example.net", "deliver")]))
        .await
        .unwrap();
    drop(inc);
    assert!(files(&dir.path().join("incoming")).is_empty());
    assert!(files(&dir.path().join("queue")).is_empty());
}

#[tokio::test]
async fn garbage_envelopes_go_to_corrupt_and_orphan_messages_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), QueueConfig::default(), clock()).unwrap();
    let good = enqueue(&q, envelope(None, &[("bob@example.net", "deliver")]), MSG).await;
    drop(q);
    let qd = dir.path().join("queue");
    std::fs::write(qd.join("0badbad0.env"), b"version: 1\nmsgid: \xff\xfe\n").unwrap();
    std::fs::write(qd.join("0badbad0.msg"), MSG).unwrap();
    std::fs::write(qd.join("00000001.msg"), MSG).unwrap();
    std::fs::write(qd.join(format!("{good}.env.tmp")), b"half a rewr").unwrap();

    let q = Queue::open(dir.path(), QueueConfig::default(), clock()).unwrap();
    assert_eq!(q.list().len(), 1);
    assert_eq!(
        files(&qd),
        vec![format!("{good}.env"), format!("{good}.msg")]
    );
    assert_eq!(
        files(&dir.path().join("corrupt")),
        vec!["0badbad0.env", "0badbad0.msg"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_journal_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), QueueConfig::default(), clock()).unwrap();
    let n = 200;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let q = q.clone();
        set.spawn(async move {
            let body = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
            enqueue(
                &q,
                envelope(Some("a@example.org"), &[("b@example.net", "deliver")]),
                body.as_bytes(),
            )
            .await
        });
    }
    let mut ids = Vec::new();
    while let Some(r) = set.join_next().await {
        ids.push(r.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    let s = q.stats();
    assert_eq!(s.committed, n as u64);
    assert_eq!(s.messages, n);
    assert!(s.commit_rounds < n as u64, "no batching: {s:?}");
}

/// Throughput of the commit path, for a quick look: `cargo nextest run -p mta --run-ignored only commit_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn commit_throughput() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let q = Queue::open(
        dir.path(),
        QueueConfig::default(),
        Arc::new(mta::clock::SystemClock),
    )
    .unwrap();
    for sessions in [1usize, 20, 100] {
        let per = 3000 / sessions;
        let start = std::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..sessions {
            let q = q.clone();
            set.spawn(async move {
                for _ in 0..per {
                    enqueue(
                        &q,
                        envelope(Some("a@example.org"), &[("b@example.net", "deliver")]),
                        &[b'x'; 4000],
                    )
                    .await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        let el = start.elapsed().as_secs_f64();
        eprintln!(
            "{sessions} sessions: {:.0} msg/s, {:?}",
            (per * sessions) as f64 / el,
            q.stats()
        );
    }
}

/// Spool on a 1 MiB tmpfs: the full disk is a distinct error, nothing half-written stays,
/// and commits work again once space returns.
#[tokio::test]
async fn a_full_disk_is_reported_and_leaves_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("spool");
    std::fs::create_dir(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "this test needs root to mount a tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());

    let q = Queue::open(&mnt, QueueConfig::default(), clock()).unwrap();
    let kept = enqueue(&q, envelope(None, &[("bob@example.net", "deliver")]), MSG).await;
    std::fs::write(mnt.join("filler"), vec![0u8; 900 * 1024]).unwrap();

    let mut inc = q
        .begin(envelope(None, &[("bob@example.net", "deliver")]))
        .await
        .unwrap();
    let big = vec![b'y'; 300 * 1024];
    let err = match inc.write(&big).await {
        Err(e) => e,
        Ok(()) => inc.commit().await.unwrap_err(),
    };
    assert!(matches!(err, Error::SpoolFull { .. }), "{err:?}");
    assert!(files(&mnt.join("incoming")).is_empty());
    assert!(files(&mnt.join("queue")).is_empty());
    let listed: Vec<String> = q
        .list()
        .iter()
        .map(|e| e.evpid.msgid().to_string())
        .collect();
    assert_eq!(listed, vec![kept.clone()]);

    std::fs::remove_file(mnt.join("filler")).unwrap();
    let mut inc = q
        .begin(envelope(None, &[("bob@example.net", "deliver")]))
        .await
        .unwrap();
    inc.write(&big).await.unwrap();
    inc.commit().await.unwrap();
    assert_eq!(q.list().len(), 2);
}

#[tokio::test]
async fn encrypted_and_compressed_message_files_do_not_hold_the_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = QueueConfig {
        compression: true,
        encryption_key: Some([42; 32]),
        ..QueueConfig::default()
    };
    let q = Queue::open(dir.path(), cfg.clone(), clock()).unwrap();
    let body = b"Subject: secret plans\r\n\r\nmeet at noon\r\n".repeat(100);
    let id = enqueue(&q, envelope(None, &[("bob@example.net", "deliver")]), &body).await;
    let raw = std::fs::read(dir.path().join(format!("queue/{id}.msg"))).unwrap();
    assert!(!raw.windows(6).any(|w| w == b"secret"));
    assert!(raw.len() < body.len() / 4);
    assert_eq!(q.show_message(&id).await.unwrap(), body);
    assert!(
        q.show_envelope(&id)
            .unwrap()
            .contains("message: zstd+aes-256-gcm\n")
    );
    drop(q);
    let wrong = QueueConfig {
        encryption_key: Some([1; 32]),
        ..cfg
    };
    let q = Queue::open(dir.path(), wrong, clock()).unwrap();
    assert!(q.show_message(&id).await.is_err());
}

#[tokio::test]
async fn show_queue_lines_read_the_spool_while_the_daemon_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), QueueConfig::default(), clock()).unwrap();
    let id = enqueue(
        &q,
        envelope(Some("alice@example.org"), &[("bob@example.net", "deliver")]),
        MSG,
    )
    .await;
    let running = q.list();
    drop(q);
    let offline = Queue::list_offline(dir.path()).unwrap();
    assert_eq!(running, offline);
    let now = T0 as i64 + 30;
    let line = offline[0].line(now, false);
    let evpid = offline[0].evpid;
    assert!(evpid.to_string().starts_with(&id));
    assert_eq!(
        line,
        format!(
            "{evpid}|inet|deliver||alice@example.org|bob@example.net|bob@example.net|{T0}|{}|0|0|offline||30|",
            T0 + 4 * 86400
        )
    );
    assert_eq!(
        running[0].line(now, true),
        format!(
            "{evpid}|inet|deliver||alice@example.org|bob@example.net|bob@example.net|{T0}|{}|0|0|pending|0|30|",
            T0 + 4 * 86400
        )
    );
}

/// A dispatcher that answers from a script: address → outcome, and records calls.
#[derive(Default)]
struct Scripted {
    answers: Mutex<HashMap<String, Outcome>>,
    calls: Mutex<Vec<(String, Vec<String>)>>,
    /// The messages handed to action `local-bounce` (DSNs), as read from the spool.
    reports: Mutex<Vec<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    hold: Option<Duration>,
}

impl Scripted {
    fn answer(&self, addr: &str, o: Outcome) {
        self.answers.lock().unwrap().insert(addr.into(), o);
    }
    fn calls(&self) -> Vec<(String, Vec<String>)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Dispatch for Scripted {
    async fn deliver(&self, action: &str, msg: &MessageRef, rcpts: &[RcptRef]) -> Vec<RcptOutcome> {
        if action == "local-bounce" {
            let text = String::from_utf8_lossy(&msg.read().await.unwrap()).into_owned();
            self.reports.lock().unwrap().push(text);
        }
        if action == "panic" {
            panic!("a delivery agent with a bug");
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        if let Some(h) = self.hold {
            tokio::time::sleep(h).await;
        }
        self.calls.lock().unwrap().push((
            action.to_string(),
            rcpts.iter().map(|r| r.address.clone()).collect(),
        ));
        let answers = self.answers.lock().unwrap().clone();
        self.running.fetch_sub(1, Ordering::SeqCst);
        rcpts
            .iter()
            .map(|r| RcptOutcome {
                evpid: r.evpid,
                outcome: answers
                    .get(&r.address)
                    .cloned()
                    .unwrap_or(Outcome::Delivered("250 2.0.0 Ok".into())),
            })
            .collect()
    }

    fn bounce_targets(&self, sender: &str) -> Option<Vec<mta::envelope::Target>> {
        Some(vec![mta::envelope::Target {
            action: "local-bounce".into(),
            dest: sender.into(),
            user: None,
        }])
    }
}

fn quick_retries() -> QueueConfig {
    QueueConfig {
        retry_base: Duration::from_secs(60),
        retry_max: Duration::from_secs(3600),
        ttl: Duration::from_secs(3 * 3600),
        hostname: "mx.example.org".into(),
        ..QueueConfig::default()
    }
}

#[tokio::test]
async fn a_panicking_agent_leaves_its_recipients_deferred_not_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), quick_retries(), clock()).unwrap();
    let s = Scheduler::new(q.clone(), Arc::new(Scripted::default()));
    let id = enqueue(&q, envelope(None, &[("bob@example.net", "panic")]), MSG).await;
    assert_eq!(s.run_once().await, 1);
    let listed = q.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].evpid.msgid().to_string(), id);
    assert_eq!(listed[0].retries, 1);
    assert_eq!(q.stats().inflight, 0);
}

/// `D` records wait for the committer's next round (or its 100 ms timer, or
/// `flush_done` as the daemon stops) instead of waking it once per delivery, and are
/// written before the round's `C` records.
#[tokio::test]
async fn done_records_ride_on_the_next_commit_round_before_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), quick_retries(), clock()).unwrap();
    let d = Arc::new(Scripted::default());
    let s = Scheduler::new(q.clone(), d.clone());
    let first = enqueue(&q, envelope(None, &[("now@example.net", "deliver")]), MSG).await;
    assert_eq!(s.run_once().await, 1);
    let second = enqueue(&q, envelope(None, &[("next@example.net", "deliver")]), MSG).await;
    // The commit of the second message returned: its round carried the first's `D`.
    let records: Vec<String> = journal_records(dir.path())
        .into_iter()
        .map(|r| match r {
            Record::Commit { msgid, .. } => format!("C {msgid}"),
            Record::Done(msgid) => format!("D {msgid}"),
        })
        .collect();
    assert_eq!(
        records,
        vec![
            format!("C {first}"),
            format!("D {first}"),
            format!("C {second}")
        ]
    );
    assert_eq!(s.run_once().await, 1);
    q.flush_done().await;
    let last = journal_records(dir.path()).pop();
    assert_eq!(last, Some(Record::Done(second.parse().unwrap())));
}

/// Voluntary context switches of the queue's commit thread so far (Linux names it
/// `fugu-queue-comm`, the first 15 bytes of `fugu-queue-commit`).
fn committer_switches() -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "fugu-queue-comm" {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        return status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    }
    panic!("no commit thread");
}

/// The records of the spool's journal, in order.
fn journal_records(spool: &Path) -> Vec<Record> {
    let journal = std::fs::read(spool.join(mta::queue::journal::FILE_NAME)).unwrap();
    mta::queue::journal::decode(&journal).0
}

/// Waits up to 2 s for `record` to be in the journal: the committer writes a `D` record
/// within 100 ms of its message leaving the queue, unsynced.
async fn wait_for_record(spool: &Path, record: &Record) {
    for _ in 0..100 {
        if journal_records(spool).contains(record) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With nothing to write, the commit thread sleeps until a message or a `D` record comes,
/// instead of waking for its `D` timer: an idle server stays idle.
#[tokio::test]
async fn an_idle_committer_sleeps_until_there_is_something_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), quick_retries(), clock()).unwrap();
    let d = Arc::new(Scripted::default());
    let s = Scheduler::new(q.clone(), d.clone());
    let sent = enqueue(&q, envelope(None, &[("now@example.net", "deliver")]), MSG).await;
    assert_eq!(s.run_once().await, 1);
    // The `D` record goes out when the committer's wait for a round ends.
    let done = Record::Done(sent.parse().unwrap());
    wait_for_record(dir.path(), &done).await;
    assert_eq!(journal_records(dir.path()).last(), Some(&done));

    // After one more wait of 100 ms for a round, it sleeps for good.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = committer_switches();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(committer_switches(), before, "the idle committer woke up");

    // A message wakes it, and so does a `D` record that finds it asleep.
    let next = enqueue(&q, envelope(None, &[("next@example.net", "deliver")]), MSG).await;
    assert!(q.list().iter().any(|e| e.evpid.msgid().to_string() == next));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.run_once().await, 1);
    let done = Record::Done(next.parse().unwrap());
    wait_for_record(dir.path(), &done).await;
    assert_eq!(journal_records(dir.path()).last(), Some(&done));
}

#[tokio::test]
async fn a_message_held_only_in_the_journal_gets_its_files_when_deferred_and_none_when_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = Queue::open(dir.path(), quick_retries(), c.clone()).unwrap();
    let d = Arc::new(Scripted::default());
    d.answer(
        "later@example.net",
        Outcome::TempFail("452 4.2.2 Mailbox full".into()),
    );
    let s = Scheduler::new(q.clone(), d.clone());
    let sent = enqueue(&q, envelope(None, &[("now@example.net", "deliver")]), MSG).await;
    let kept = enqueue(&q, envelope(None, &[("later@example.net", "deliver")]), MSG).await;
    assert!(files(&dir.path().join("queue")).is_empty());

    assert_eq!(s.run_once().await, 2);
    // The delivered one never had a file; the deferred one has both now.
    assert_eq!(
        files(&dir.path().join("queue")),
        vec![format!("{kept}.env"), format!("{kept}.msg")]
    );
    assert_eq!(
        std::fs::read(dir.path().join(format!("queue/{kept}.msg"))).unwrap(),
        MSG
    );
    // Its `D` record is written by the committer thread, unsynced, shortly after.
    wait_for_record(dir.path(), &Record::Done(sent.parse().unwrap())).await;
    let done: Vec<String> = journal_records(dir.path())
        .into_iter()
        .filter_map(|r| match r {
            Record::Done(id) => Some(id.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(done, vec![sent]);
    drop(s);
    drop(q);

    let q = Queue::open(dir.path(), quick_retries(), c).unwrap();
    let left = q.list();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].retries, 1);
    assert_eq!(q.show_message(&kept).await.unwrap(), MSG);
}

#[tokio::test]
async fn delivered_recipients_leave_the_queue_and_deferred_ones_retry_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = Queue::open(dir.path(), quick_retries(), c.clone()).unwrap();
    let d = Arc::new(Scripted::default());
    d.answer(
        "later@example.net",
        Outcome::TempFail("452 4.2.2 Mailbox full".into()),
    );
    let s = Scheduler::new(q.clone(), d.clone());
    let id = enqueue(
        &q,
        envelope(
            Some("alice@example.org"),
            &[
                ("bob@example.net", "deliver"),
                ("later@example.net", "deliver"),
            ],
        ),
        MSG,
    )
    .await;

    assert_eq!(s.run_once().await, 2);
    // One transaction for both recipients of the message.
    assert_eq!(
        d.calls(),
        vec![(
            "deliver".to_string(),
            vec![
                "bob@example.net".to_string(),
                "later@example.net".to_string()
            ]
        )]
    );
    let left = q.list();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].rcpt, "later@example.net");
    assert_eq!(left[0].retries, 1);
    assert_eq!(
        left[0].last_error.as_deref(),
        Some("452 4.2.2 Mailbox full")
    );
    let first_delay = left[0].next_try - (T0 as i64);
    assert!((54..=66).contains(&first_delay), "{first_delay}");
    // Not due yet: nothing happens.
    assert_eq!(s.run_once().await, 0);
    // The state is on disk too.
    assert!(
        std::fs::read_to_string(dir.path().join(format!("queue/{id}.env")))
            .unwrap()
            .contains("state: deferred\nretry: 1\n")
    );

    c.advance(Duration::from_secs(70));
    assert_eq!(s.run_once().await, 1);
    let second_delay = q.list()[0].next_try - (T0 as i64 + 70);
    assert!(
        (108..=132).contains(&second_delay),
        "backoff did not double: {second_delay}"
    );

    d.answer("later@example.net", Outcome::Delivered("250 ok".into()));
    c.advance(Duration::from_secs(200));
    assert_eq!(s.run_once().await, 1);
    assert!(q.list().is_empty());
    assert!(files(&dir.path().join("queue")).is_empty());
}

#[tokio::test]
async fn a_permanent_failure_bounces_to_the_sender_and_never_to_the_null_sender() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), quick_retries(), clock()).unwrap();
    let d = Arc::new(Scripted::default());
    d.answer(
        "nobody@example.net",
        Outcome::PermFail("550 5.1.1 <nobody@example.net>: no such user".into()),
    );
    let s = Scheduler::new(q.clone(), d.clone());
    enqueue(
        &q,
        envelope(
            Some("alice@example.org"),
            &[("nobody@example.net", "deliver")],
        ),
        MSG,
    )
    .await;
    enqueue(
        &q,
        envelope(None, &[("nobody@example.net", "deliver")]),
        MSG,
    )
    .await;

    assert_eq!(s.run_once().await, 2);
    let left = q.list();
    assert_eq!(left.len(), 1, "{left:?}");
    let b = &left[0];
    assert!(b.is_bounce);
    assert_eq!(b.sender, None);
    assert_eq!(b.rcpt, "alice@example.org");
    assert_eq!(b.action, "local-bounce");
    let dsn = String::from_utf8(q.show_message(&b.evpid.to_string()).await.unwrap()).unwrap();
    assert!(dsn.contains("Status: 5.1.1\r\n"), "{dsn}");
    assert!(
        dsn.contains("Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: no such user\r\n")
    );
    assert!(dsn.ends_with("--\r\n"));

    // The bounce itself failing goes nowhere: no bounce of a bounce.
    d.answer(
        "alice@example.org",
        Outcome::PermFail("550 5.1.1 gone".into()),
    );
    assert_eq!(s.run_once().await, 1);
    assert!(q.list().is_empty());
}

#[tokio::test]
async fn notify_never_suppresses_the_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), quick_retries(), clock()).unwrap();
    let d = Arc::new(Scripted::default());
    d.answer(
        "nobody@example.net",
        Outcome::PermFail("550 5.1.1 no".into()),
    );
    let s = Scheduler::new(q.clone(), d);
    let mut env = envelope(
        Some("alice@example.org"),
        &[("nobody@example.net", "deliver")],
    );
    env.recipients[0].notify = Some(DsnNotify {
        never: true,
        ..DsnNotify::default()
    });
    enqueue(&q, env, MSG).await;
    s.run_once().await;
    assert!(q.list().is_empty());
}

#[tokio::test]
async fn recipients_still_deferred_at_the_queue_ttl_expire_into_a_bounce() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = Queue::open(dir.path(), quick_retries(), c.clone()).unwrap();
    let d = Arc::new(Scripted::default());
    d.answer(
        "slow@example.net",
        Outcome::TempFail("421 4.4.2 timeout".into()),
    );
    let s = Scheduler::new(q.clone(), d.clone());
    enqueue(
        &q,
        envelope(Some("alice@example.org"), &[("slow@example.net", "relay")]),
        MSG,
    )
    .await;
    let mut attempts = 0;
    for _ in 0..100 {
        attempts += s.run_once().await;
        c.advance(Duration::from_secs(600));
        if q.list().iter().any(|e| e.is_bounce) {
            break;
        }
    }
    let left = q.list();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].is_bounce);
    // 3 h ttl with 1, 2, 4, 8… min backoff capped at 1 h: a handful of tries, not 100.
    assert!((4..=12).contains(&attempts), "{attempts}");
    let dsn = String::from_utf8(q.show_message(&left[0].evpid.to_string()).await.unwrap()).unwrap();
    assert!(dsn.contains("Status: 4.4.7\r\n"), "{dsn}");
    assert!(dsn.contains("Subject: Delivery status notification: expired\r\n"));
}

/// A queue whose deliveries take 30 ms each, at most `limit` at once per destination.
fn slow_deliveries(limit: usize) -> (tempfile::TempDir, Queue, Arc<Scripted>, Scheduler<Scripted>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = QueueConfig {
        max_inflight_per_destination: limit,
        ..quick_retries()
    };
    let q = Queue::open(dir.path(), cfg, clock()).unwrap();
    let d = Arc::new(Scripted {
        hold: Some(Duration::from_millis(30)),
        ..Scripted::default()
    });
    let s = Scheduler::new(q.clone(), d.clone());
    (dir, q, d, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_one_destination_respect_the_concurrency_limit() {
    let (_dir, q, d, s) = slow_deliveries(3);
    for i in 0..12 {
        enqueue(
            &q,
            envelope(
                Some("a@example.org"),
                &[(&format!("u{i}@example.net"), "deliver")],
            ),
            MSG,
        )
        .await;
    }
    enqueue(
        &q,
        envelope(Some("a@example.org"), &[("x@other.example", "deliver")]),
        MSG,
    )
    .await;
    let mut rounds = 0;
    while !q.list().is_empty() {
        s.run_once().await;
        rounds += 1;
        assert!(rounds < 10);
    }
    assert_eq!(
        d.max_running.load(Ordering::SeqCst),
        4,
        "3 for example.net + 1 for other.example"
    );
    assert_eq!(rounds, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_held_for_a_busy_destination_goes_in_one_transaction_when_a_slot_frees() {
    let (_dir, q, d, s) = slow_deliveries(1);
    let one = envelope(Some("a@example.org"), &[("u0@example.net", "deliver")]);
    enqueue(&q, one, MSG).await;
    let three = envelope(
        Some("a@example.org"),
        &[
            ("u1@example.net", "deliver"),
            ("u2@example.net", "deliver"),
            ("u3@example.net", "deliver"),
        ],
    );
    enqueue(&q, three, MSG).await;
    // Same arrival second: either message may go first.
    let first = s.run_once().await;
    let second = s.run_once().await;
    assert_eq!(
        (first.min(second), first.max(second)),
        (1, 3),
        "one slot: one message per round, and the three recipients held together"
    );
    assert_eq!(s.run_once().await, 0);
    let mut rcpts: Vec<usize> = d.calls().iter().map(|(_, r)| r.len()).collect();
    rcpts.sort();
    assert_eq!(rcpts, [1, 3]);
    assert!(q.list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_message_that_expires_when_released_does_not_strand_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let cfg = QueueConfig {
        max_inflight_per_destination: 1,
        ..quick_retries()
    };
    let q = Queue::open(dir.path(), cfg, c.clone()).unwrap();
    let d = Arc::new(Scripted::default());
    let s = Scheduler::new(q.clone(), d.clone());
    for (i, wait) in [(0, 10), (1, 3600), (2, 0)] {
        let env = envelope(
            Some("a@example.org"),
            &[(&format!("u{i}@example.net"), "deliver")],
        );
        enqueue(&q, env, MSG).await;
        c.advance(Duration::from_secs(wait));
    }
    // u0 takes the slot; u1 and u2 wait for it.
    assert_eq!(s.run_once().await, 1);
    // Past u1's expiry (3 h after it arrived), not u2's: u1 gets the free slot back,
    // expires instead of using it, and u2 must still get it.
    c.advance(Duration::from_secs(2 * 3600));
    s.run_once().await;
    s.run_once().await;
    let delivered: Vec<String> = d
        .calls()
        .into_iter()
        .filter(|(action, _)| action == "deliver")
        .flat_map(|(_, rcpts)| rcpts)
        .collect();
    assert_eq!(delivered, ["u0@example.net", "u2@example.net"]);
}

#[tokio::test]
async fn paused_recipients_wait_until_resume_and_remove_still_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), quick_retries(), clock()).unwrap();
    let d = Arc::new(Scripted::default());
    let s = Scheduler::new(q.clone(), d.clone());
    q.set_paused(false, true);
    let mut ids = Vec::new();
    for i in 0..3 {
        let env = envelope(
            Some("a@example.org"),
            &[(&format!("u{i}@example.net"), "deliver")],
        );
        ids.push(enqueue(&q, env, MSG).await);
    }
    assert_eq!(s.run_once().await, 0);
    assert_eq!(s.run_once().await, 0);
    assert_eq!(q.list().len(), 3);
    assert_eq!(q.remove(&ids[0]).await.unwrap(), 1);
    q.set_paused(false, false);
    assert_eq!(s.run_once().await, 2);
    assert!(q.list().is_empty());
    assert_eq!(d.calls().len(), 2);
}

#[tokio::test]
async fn the_daemon_loop_delivers_what_sessions_commit() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(
        dir.path(),
        quick_retries(),
        Arc::new(mta::clock::SystemClock),
    )
    .unwrap();
    let d = Arc::new(Scripted::default());
    let s = Scheduler::new(q.clone(), d.clone());
    let runner = tokio::spawn(async move { s.run().await });
    for _ in 0..5 {
        enqueue(
            &q,
            envelope(Some("a@example.org"), &[("b@example.net", "deliver")]),
            MSG,
        )
        .await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !q.list().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {:?}",
            q.list()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(d.calls().len(), 5);
    runner.abort();
}

#[tokio::test]
async fn remove_and_schedule_act_on_waiting_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = Queue::open(dir.path(), quick_retries(), c.clone()).unwrap();
    let d = Arc::new(Scripted::default());
    d.answer("b@example.net", Outcome::TempFail("451 later".into()));
    d.answer("c@example.net", Outcome::TempFail("451 later".into()));
    let s = Scheduler::new(q.clone(), d.clone());
    let id1 = enqueue(
        &q,
        envelope(Some("a@example.org"), &[("b@example.net", "deliver")]),
        MSG,
    )
    .await;
    enqueue(
        &q,
        envelope(Some("a@example.org"), &[("c@example.net", "deliver")]),
        MSG,
    )
    .await;
    s.run_once().await;
    assert_eq!(s.run_once().await, 0);
    assert_eq!(q.schedule("all").unwrap(), 2);
    assert_eq!(s.run_once().await, 2);
    assert_eq!(q.remove(&id1).await.unwrap(), 1);
    assert_eq!(q.list().len(), 1);
    assert!(!dir.path().join(format!("queue/{id1}.env")).exists());
    assert!(matches!(
        q.remove("nonsense").await,
        Err(Error::NoSuchId(_))
    ));
}

#[tokio::test]
async fn remove_during_an_attempt_drops_what_the_attempt_did_not_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), quick_retries(), clock()).unwrap();
    let d = Arc::new(Scripted {
        hold: Some(Duration::from_millis(300)),
        ..Scripted::default()
    });
    d.answer("later@example.net", Outcome::TempFail("451 later".into()));
    d.answer(
        "never@example.net",
        Outcome::PermFail("550 no such user".into()),
    );
    let s = Scheduler::new(q.clone(), d.clone());
    let mut ids = Vec::new();
    for rcpt in ["later@example.net", "never@example.net", "now@example.net"] {
        let env = envelope(Some("a@example.org"), &[(rcpt, "deliver")]);
        ids.push(enqueue(&q, env, MSG).await);
    }

    // All three attempts are under way when the operator removes the messages.
    let attempts = tokio::spawn(async move { s.run_once().await });
    while q.list().iter().filter(|e| e.inflight).count() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in &ids {
        assert_eq!(q.remove(id).await.unwrap(), 1);
    }
    assert!(q.list().is_empty(), "listed after remove: {:?}", q.list());
    assert_eq!(attempts.await.unwrap(), 3);

    // The deferral is not rescheduled and the refusal not bounced; the delivery stands.
    assert!(q.list().is_empty(), "{:?}", q.list());
    let actions: Vec<String> = d.calls().into_iter().map(|(a, _)| a).collect();
    assert_eq!(actions, ["deliver", "deliver", "deliver"]);
    assert_eq!(q.stats().removed, 2);
    assert_eq!(q.stats().delivered, 1);
    assert!(files(&dir.path().join("queue")).is_empty());
}

fn golden(name: &str, actual: &[u8]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with BLESS=1", path.display()));
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&expected),
        "{name} differs; BLESS=1 to accept"
    );
}

fn golden_envelope(ret: Option<DsnRet>) -> mta::queue::StoredEnvelope {
    let mut header = envelope(Some("alice@example.org"), &[]);
    header.dsn_ret = ret;
    header.dsn_envid = Some("QQ314159".into());
    let msgid = mta::queue::MsgId(0x1a2b3c4d);
    mta::queue::StoredEnvelope {
        msgid,
        ctime: T0 as i64,
        expire: T0 as i64 + 4 * 86400,
        encoding: Default::default(),
        is_bounce: false,
        header: header.into(),
        rcpts: vec![],
    }
}

#[test]
fn dsn_for_a_permanent_failure_matches_golden() {
    let env = golden_envelope(None);
    let failed = [
        FailedRcpt {
            address: "nobody@example.net".into(),
            orcpt: Some("rfc822;nobody@example.net".into()),
            diagnostic: "550 5.1.1 <nobody@example.net>: Recipient address rejected".into(),
            expired: false,
            last_attempt: Some(T0 as i64 + 5),
        },
        FailedRcpt {
            address: "prog@example.net".into(),
            orcpt: None,
            diagnostic: "mda command exited with status 1".into(),
            expired: false,
            last_attempt: Some(T0 as i64 + 5),
        },
    ];
    let dsn = bounce::render(&DsnInput {
        hostname: "mx.example.org",
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 5),
        boundary: "16.golden.boundary",
        message_id: "0123456789abcdef@mx.example.org",
        envelope: &env,
        failed: &failed,
        original: MSG,
    });
    golden("dsn-permanent.eml", &dsn);
}

#[test]
fn dsn_for_an_expired_message_returns_headers_only_when_asked() {
    let env = golden_envelope(Some(DsnRet::Headers));
    let failed = [FailedRcpt {
        address: "slow@example.net".into(),
        orcpt: None,
        diagnostic: "421 4.4.2 mx.example.net: connection timed out".into(),
        expired: true,
        last_attempt: Some(T0 as i64 + 4 * 86400),
    }];
    let dsn = bounce::render(&DsnInput {
        hostname: "mx.example.org",
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 4 * 86400 + 60),
        boundary: "16.golden.boundary",
        message_id: "fedcba9876543210@mx.example.org",
        envelope: &env,
        failed: &failed,
        original: MSG,
    });
    assert!(!String::from_utf8_lossy(&dsn).contains("\r\nhello\r\n"));
    golden("dsn-expired.eml", &dsn);
}

/// Run only as the child of the durability tests: commits messages from 8 concurrent
/// "sessions" and prints `COMMITTED <msgid>` after each commit returns, until killed or
/// until `FUGU_QUEUE_HELPER_COUNT` messages per session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn commit_helper() {
    use std::io::Write as _;
    let Some(spool) = std::env::var_os("FUGU_QUEUE_HELPER_SPOOL") else {
        return;
    };
    let count: usize = std::env::var("FUGU_QUEUE_HELPER_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(usize::MAX);
    let q = Queue::open(
        spool,
        QueueConfig::default(),
        Arc::new(mta::clock::SystemClock),
    )
    .unwrap();
    let mut set = tokio::task::JoinSet::new();
    for s in 0..8 {
        let q = q.clone();
        set.spawn(async move {
            for i in 0..count {
                let body = format!("Subject: {s}-{i}\r\n\r\n{}\r\n", "x".repeat(2000));
                let id = enqueue(
                    &q,
                    envelope(Some("a@example.org"), &[("b@example.net", "deliver")]),
                    body.as_bytes(),
                )
                .await;
                // One write(2) per line: what the strace audit looks for.
                let line = format!("COMMITTED {id}\n");
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes()).unwrap();
                out.flush().unwrap();
            }
        });
    }
    while set.join_next().await.is_some() {}
}

fn helper(spool: &Path, count: Option<usize>, wrap: Option<Vec<String>>) -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match &wrap {
        Some(w) => {
            let mut c = std::process::Command::new(&w[0]);
            c.args(&w[1..]).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    cmd.args([
        "--ignored",
        "--exact",
        "queue::commit_helper",
        "--nocapture",
    ])
    .env("FUGU_QUEUE_HELPER_SPOOL", spool)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    if let Some(c) = count {
        cmd.env("FUGU_QUEUE_HELPER_COUNT", c.to_string());
    }
    cmd
}

fn committed_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("COMMITTED "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_commit_that_returned_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..5u64 {
        // A fresh spool per round keeps the check quick; the slow tier may run more rounds.
        let spool = dir.path().join(format!("spool{round}"));
        let mut acknowledged: Vec<String> = Vec::new();
        let mut child = helper(&spool, None, None).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("COMMITTED ") {
                    ids.push(id.to_string());
                    let _ = tx.send(());
                }
            }
            ids
        });
        // Kill mid-stream, at a different point of the commit cycle each round.
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the helper committed nothing");
        std::thread::sleep(Duration::from_millis(50 + 37 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        let ids = reader.join().unwrap();
        acknowledged.extend(ids);

        let q = Queue::open(&spool, QueueConfig::default(), clock()).unwrap();
        let queued: std::collections::HashSet<String> = q
            .list()
            .iter()
            .map(|e| e.evpid.msgid().to_string())
            .collect();
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !queued.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost: {lost:?}"
        );
        // Commits cut short by the kill are either whole in the queue or gone.
        assert!(files(&spool.join("incoming")).is_empty());
        assert!(files(&spool.join("corrupt")).is_empty());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for id in &queued {
            let m = rt.block_on(q.show_message(id)).unwrap();
            let tail = format!("\r\n\r\n{}\r\n", "x".repeat(2000));
            assert!(
                m.starts_with(b"Subject: ") && m.ends_with(tail.as_bytes()),
                "{id} is not whole"
            );
        }
    }
}

/// One completed system call from an `strace -f -y` log.
#[derive(Debug)]
struct Syscall {
    name: String,
    /// The arguments as printed (with `-y` paths), from the line that started the call.
    args: String,
    result: String,
    /// For a call split by another thread's output: the index of its start line.
    started: usize,
    /// The index of the line that reported its result.
    ended: usize,
}

/// Joins `<unfinished ...>` / `<... resumed>` pairs; calls come out in completion order.
fn parse_strace(log: &str) -> Vec<Syscall> {
    let mut pending: HashMap<String, (usize, String, String)> = HashMap::new();
    let mut out = Vec::new();
    for (i, line) in log.lines().enumerate() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("0", line));
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = r.split_once(" resumed>") else {
                continue;
            };
            if let Some((started, pname, args)) = pending.remove(pid) {
                assert_eq!(pname, name);
                let result = tail
                    .rsplit_once(" = ")
                    .map(|(_, r)| r.to_string())
                    .unwrap_or_default();
                out.push(Syscall {
                    name: name.into(),
                    args,
                    result,
                    started,
                    ended: i,
                });
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if let Some(args) = args.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_string(), (i, name.to_string(), args.to_string()));
            continue;
        }
        let Some((args, result)) = args.rsplit_once(" = ") else {
            continue;
        };
        out.push(Syscall {
            name: name.into(),
            args: args.to_string(),
            result: result.to_string(),
            started: i,
            ended: i,
        });
    }
    out
}

/// The audit: every acknowledgement (here the `COMMITTED` line, in the daemon the
/// 250 after DATA) is written after an fdatasync of the commit journal that followed the
/// write of that message's journal record, and the record holds the whole message.
#[test]
fn strace_shows_every_acknowledgement_after_the_journal_fdatasync_of_its_message() {
    let strace = fugu_tests::require_program("strace", "strace");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let log = dir.path().join("strace.log");
    let wrap = vec![
        strace.display().to_string(),
        "-f".into(),
        "-y".into(),
        "-s".into(),
        "64".into(),
        "-e".into(),
        "trace=fsync,fdatasync,write,pwrite64".into(),
        "-o".into(),
        log.display().to_string(),
    ];
    let out = helper(&spool, Some(25), Some(wrap)).output().unwrap();
    assert!(out.status.success());
    let acked = committed_ids(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(acked.len(), 200);

    // Nothing was delivered, so the journal still holds every record, in write order,
    // and nothing but zeros (space written ahead) after them.
    let journal = std::fs::read(spool.join(mta::queue::journal::FILE_NAME)).unwrap();
    let mut end_of: HashMap<String, u64> = HashMap::new();
    let (_, whole) = mta::queue::journal::decode(&journal);
    assert!(journal[whole..].iter().all(|b| *b == 0));
    for (r, end) in mta::queue::journal::records(&journal) {
        if let Record::Commit { msgid, msg, .. } = r {
            assert!(msg.ends_with(format!("{}\r\n", "x".repeat(2000)).as_bytes()));
            end_of.insert(msgid.to_string(), end as u64);
        }
    }

    let text = std::fs::read_to_string(&log).unwrap();
    let calls = parse_strace(&text);
    let journal_fd = format!("<{}>", spool.join("commit.log").display());
    // One committer thread writes and syncs the journal, so its calls are in order:
    // an fdatasync covers every byte written before it. Records are written one after
    // another at rising offsets; the zeros written ahead of them do not count.
    // (line it ended, where the records covered end)
    let mut written = 0u64;
    let mut syncs: Vec<(usize, u64)> = Vec::new();
    let mut audited = 0;
    for c in &calls {
        match c.name.as_str() {
            "fsync" | "fdatasync" if c.result.starts_with('0') && c.args.contains(&journal_fd) => {
                syncs.push((c.ended, written));
            }
            "pwrite64" if c.args.contains(&journal_fd) && !c.args.contains("\"\\0\\0") => {
                let offset: u64 = c
                    .args
                    .trim_end_matches(')')
                    .rsplit(", ")
                    .next()
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                let n: u64 = c.result.trim().parse().unwrap_or(0);
                written = written.max(offset + n);
            }
            "write" if c.args.contains("COMMITTED ") => {
                let id = c.args.split("COMMITTED ").nth(1).unwrap()[..8].to_string();
                let end = end_of[&id];
                // Only an fdatasync that returned before the acknowledgement began counts.
                let synced = syncs
                    .iter()
                    .filter(|(ended, _)| *ended < c.started)
                    .map(|(_, n)| *n)
                    .max()
                    .unwrap_or(0);
                assert!(
                    end <= synced,
                    "{id} acknowledged before its journal record (ending at {end}) was synced ({synced})"
                );
                audited += 1;
            }
            _ => {}
        }
    }
    assert_eq!(
        audited,
        200,
        "strace log:\n{}",
        &text[..text.len().min(4000)]
    );
}

#[tokio::test]
async fn delay_warnings_go_once_per_warn_interval_and_never_to_the_null_sender() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let cfg = QueueConfig {
        warn_intervals: vec![Duration::from_secs(3600), Duration::from_secs(2 * 3600)],
        // Warnings go out with a failed attempt: keep attempts at most ~11 min apart so
        // every interval sees one, whatever the jitter.
        retry_max: Duration::from_secs(600),
        ..quick_retries()
    };
    let q = Queue::open(dir.path(), cfg, c.clone()).unwrap();
    let d = Arc::new(Scripted::default());
    d.answer(
        "slow@example.net",
        Outcome::TempFail("451 4.3.0 try later".into()),
    );
    let s = Scheduler::new(q.clone(), d.clone());
    let id = enqueue(
        &q,
        envelope(Some("alice@example.org"), &[("slow@example.net", "relay")]),
        MSG,
    )
    .await;
    enqueue(&q, envelope(None, &[("slow@example.net", "relay")]), MSG).await;

    let reports_at = |d: &Scripted| d.reports.lock().unwrap().clone();
    let mut warned_file = false;
    // 10-minute steps through the 3 h ttl: warnings at 1 h and 2 h, then the expiry.
    for _ in 0..20 {
        c.advance(Duration::from_secs(600));
        s.run_once().await;
        if let Ok(text) = std::fs::read_to_string(dir.path().join(format!("queue/{id}.env"))) {
            warned_file |= text.contains("\nwarnings: 1\n");
        }
    }
    let reports = reports_at(&d);
    let delayed: Vec<&String> = reports
        .iter()
        .filter(|r| r.contains("Action: delayed\r\n"))
        .collect();
    assert_eq!(
        delayed.len(),
        2,
        "one per interval, only to alice: {reports:#?}"
    );
    assert!(delayed[0].contains("A message is delayed for more than 1h for the following\r\n"));
    assert!(delayed[1].contains("A message is delayed for more than 2h for the following\r\n"));
    assert!(delayed[0].contains("Status: 4.3.0\r\n"));
    assert!(delayed[0].contains("Will-Retry-Until: "));
    assert!(delayed[0].contains("To: alice@example.org\r\n"));
    assert!(
        warned_file,
        "the warning count is kept in the envelope file"
    );
    // Then the failure at the ttl: three reports in all.
    assert_eq!(reports.len(), 3, "{reports:#?}");
    assert!(reports[2].contains("Action: failed\r\n"));
}

#[tokio::test]
async fn success_notices_only_for_recipients_that_asked_with_notify_success() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::open(dir.path(), quick_retries(), clock()).unwrap();
    let d = Arc::new(Scripted::default());
    d.answer(
        "bob@example.net",
        Outcome::Delivered("250 2.1.5 <bob@example.net> Saved".into()),
    );
    let s = Scheduler::new(q.clone(), d.clone());
    let mut env = envelope(
        Some("alice@example.org"),
        &[
            ("bob@example.net", "deliver"),
            ("carol@example.net", "deliver"),
        ],
    );
    env.recipients[0].notify = Some(DsnNotify {
        success: true,
        failure: true,
        ..DsnNotify::default()
    });
    enqueue(&q, env, MSG).await;
    // A bounce-less sender asking for success gets nothing: the null sender.
    let mut null = envelope(None, &[("bob@example.net", "deliver")]);
    null.recipients[0].notify = Some(DsnNotify {
        success: true,
        ..DsnNotify::default()
    });
    enqueue(&q, null, MSG).await;

    s.run_once().await;
    s.run_once().await;
    let reports = d.reports.lock().unwrap().clone();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = &reports[0];
    assert!(
        r.contains("Subject: Delivery status notification: success\r\n"),
        "{r}"
    );
    assert!(
        r.contains(
            "Final-Recipient: rfc822; bob@example.net\r\nAction: delivered\r\nStatus: 2.1.5\r\n"
        ),
        "{r}"
    );
    assert!(!r.contains("carol@example.net"), "{r}");
    assert!(q.list().is_empty());
}

#[test]
fn delay_warning_matches_golden() {
    let env = golden_envelope(None);
    let rcpts = [FailedRcpt {
        address: "slow@example.net".into(),
        orcpt: Some("rfc822;slow@example.net".into()),
        diagnostic: "421 4.4.2 mx.example.net: connection timed out".into(),
        expired: false,
        last_attempt: Some(T0 as i64 + 4 * 3600),
    }];
    let dsn = bounce::render_report(
        &DsnInput {
            hostname: "mx.example.org",
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 4 * 3600),
            boundary: "16.golden.boundary",
            message_id: "0011223344556677@mx.example.org",
            envelope: &env,
            failed: &rcpts,
            original: MSG,
        },
        bounce::ReportKind::Delay {
            waited: 4 * 3600,
            until: T0 as i64 + 4 * 86400,
        },
    );
    golden("dsn-delayed.eml", &dsn);
}

#[test]
fn success_notice_matches_golden_and_relay_says_relayed() {
    let env = golden_envelope(None);
    let rcpts = [FailedRcpt {
        address: "bob@example.net".into(),
        orcpt: None,
        diagnostic: "250 2.0.0 Ok: queued as 4Xyz".into(),
        expired: false,
        last_attempt: Some(T0 as i64 + 2),
    }];
    let input = DsnInput {
        hostname: "mx.example.org",
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + 2),
        boundary: "16.golden.boundary",
        message_id: "8899aabbccddeeff@mx.example.org",
        envelope: &env,
        failed: &rcpts,
        original: MSG,
    };
    let relayed = bounce::render_report(&input, bounce::ReportKind::Success { relayed: true });
    golden("dsn-relayed.eml", &relayed);
    let delivered = String::from_utf8(bounce::render_report(
        &input,
        bounce::ReportKind::Success { relayed: false },
    ))
    .unwrap();
    assert!(delivered.contains("Action: delivered\r\n"));
    assert!(delivered.contains("Your message was successfully delivered to these recipients.\r\n"));
}
