//! The durable spool: messages and envelopes on stable storage before the 250.
//!
//! Layout under the spool directory (OpenSMTPD's, flattened):
//!
//! - `incoming/<msgid>.msg`, `incoming/<msgid>.env`: a large message being received (or
//!   a small one committed past the journal-only budget). Discarded on start: the client never
//!   got a 250 for it.
//! - `queue/<msgid>.msg`: the message as received (or compressed/encrypted, see
//!   [`format::MessageEncoding`]); `queue/<msgid>.env`: its envelope ([`format`]), one block
//!   per recipient still to deliver. A small message has no files here while it is held
//!   only in the journal (below).
//! - `corrupt/`: files that did not decode on start, kept for the operator.
//! - `commit.log`: the commit journal ([`journal`]).
//! - `queue.lock`: held (`flock`) by the process that has the queue open.
//!
//! Durability (group commit): [`Incoming::commit`] hands the message to one committer
//! thread. The committer takes every message that finished while its previous round ran,
//! appends each whole (envelope and message bytes) to the commit journal with one
//! `write`, and issues one `fdatasync` of the journal for the whole batch; `commit` returns
//! (and the session sends its 250) only after that fdatasync. So a round costs one fsync
//! however many sessions it serves. A message is committed exactly when its journal record
//! is on stable storage; on start, [`journal::recover`] rewrites from the journal every
//! message it holds that has no `D` (done) record, then empties it.
//!
//! A plain message up to 256 KiB, while fewer than 64 MiB are held so
//! ([`JOURNAL_ONLY_BYTES`]), gets no file at all at commit: its journal record is its
//! durable copy, and delivery reads the bytes back from the record (a `pread` from the
//! page cache, [`JournalBody`]), so the daemon does not keep a burst's messages in its
//! own memory. Its files are written when it needs them: an envelope
//! rewrite (a deferral, a partial delivery) writes both, and a journal checkpoint writes
//! whatever is missing from the journal's records before emptying it. Mail relayed at once
//! thus costs no file creation, which under load was the most expensive call (ext4
//! allocating inodes next to just-deleted ones, under the directory lock). Larger
//! messages are written to `incoming/` as they arrive and renamed into `queue/` by the
//! committer before their record.
//!
//! The files in `queue/` become durable on their own only at a journal checkpoint (past
//! [`journal::CHECKPOINT_BYTES`]), which fsyncs the files of the messages still queued,
//! then `queue/`, then empties the journal; when every message in the journal has left
//! the queue (and it passed [`journal::TRUNCATE_BYTES`]) the journal is simply emptied.
//! Removing a delivered message needs no fsync: a file or record that reappears after a
//! crash only means the message is delivered again (at least once, never lost). Envelope
//! rewrites after a delivery attempt are written to a temporary file, fsynced and renamed
//! over the old one.
//!
//! It does not route or expand addresses (the session and the rule evaluator did), and it
//! does not talk to peers: [`scheduler`] hands due recipients to a [`scheduler::Dispatch`].

pub mod bounce;
mod codec;
pub mod format;
pub mod id;
pub mod journal;
pub mod scheduler;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::clock::{Clock, unix_seconds};
use crate::envelope::Envelope;
use crate::error::Error;
pub use format::{MessageEncoding, RcptState, StoredEnvelope, StoredRcpt};
pub use id::{EvpId, MsgId};
pub(crate) use scheduler::{DeliveryLog, delivery_line};
pub use scheduler::{Dispatch, MessageRef, Outcome, RcptOutcome, RcptRef, Scheduler};

/// Queue settings from `smtpd.conf` (`queue ttl`, `queue compression`,
/// `queue encryption`) plus the retry schedule.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `queue ttl`: undelivered recipients bounce this long after the message arrived.
    pub ttl: Duration,
    /// First retry delay; doubles per attempt up to `retry_max`, with ±10% jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Deliveries in flight at once to one destination (action + recipient domain).
    pub max_inflight_per_destination: usize,
    /// Recipients handed to the agent in one delivery (one LMTP/SMTP transaction).
    pub max_rcpts_per_delivery: usize,
    /// The name in DSNs (`Reporting-MTA`, `MAILER-DAEMON@…`).
    pub hostname: String,
    /// `queue compression`: zstd the message files.
    pub compression: bool,
    /// `queue encryption KEY`: AES-256-GCM the message files with this key.
    pub encryption_key: Option<[u8; 32]>,
    /// `bounce warn-interval`: a delay warning goes to the sender when a message still
    /// waits this long after it arrived, once per listed delay.
    pub warn_intervals: Vec<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            // OpenSMTPD's defaults: queue ttl 4d.
            ttl: Duration::from_secs(4 * 86400),
            retry_base: Duration::from_secs(5 * 60),
            retry_max: Duration::from_secs(4 * 3600),
            max_inflight_per_destination: 16,
            max_rcpts_per_delivery: 100,
            hostname: "localhost".into(),
            compression: false,
            encryption_key: None,
            // OpenSMTPD's default: bounce warn-interval 4h.
            warn_intervals: vec![Duration::from_secs(4 * 3600)],
        }
    }
}

/// The handle the daemon shares between sessions, the scheduler and `fugu ctl`.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    incoming: PathBuf,
    /// Shared with every [`MessageRef`], which builds its file's path only to read it.
    queue_dir: Arc<Path>,
    config: QueueConfig,
    counters: Arc<Counters>,
    clock: Arc<dyn Clock>,
    committer: Arc<Jobs>,
    /// Joined when the queue closes, before the spool's lock is let go: a reopened
    /// queue must not share its journal with the old committer.
    committer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    state: Mutex<State>,
    /// Bytes of messages held only in the journal (see [`JournalBody`]).
    journal_only: Arc<AtomicUsize>,
    journal: Arc<journal::Reader>,
    wake: tokio::sync::Notify,
    /// `pause mda` / `pause mta`: the scheduler leaves those recipients waiting.
    paused_mda: AtomicBool,
    paused_mta: AtomicBool,
    _lock: Flock<File>,
}

#[derive(Default)]
struct State {
    /// Boxed: the map's table keeps its size after a burst, 16 bytes a slot this way.
    messages: HashMap<MsgId, Box<Entry>>,
    /// (next try, envelope) of every recipient waiting, not in flight.
    due: BTreeSet<(i64, EvpId)>,
    inflight: HashSet<EvpId>,
    /// In-flight recipients `remove` was asked for: dropped when their attempt ends,
    /// unless it delivered them.
    removing: HashSet<EvpId>,
    dest_inflight: HashMap<String, usize>,
    /// Due recipients set aside because their destination had no free delivery slot,
    /// by destination; each free slot puts the next message's back into `due`.
    /// Under a burst to one destination, thousands wait this way, and a wake of the
    /// scheduler would otherwise look at every one of them again.
    held_full: HashMap<String, BTreeSet<(i64, EvpId)>>,
    /// Due recipients set aside by `pause mda` (`[0]`) and `pause mta` (`[1]`) until
    /// `resume`.
    held_paused: [BTreeSet<(i64, EvpId)>; 2],
    /// Msgids drawn by receipts not yet committed or discarded.
    reserved: HashSet<MsgId>,
}

impl State {
    /// Every recipient waiting for an attempt: due, or held back.
    fn waiting(&self) -> impl Iterator<Item = &(i64, EvpId)> {
        self.due
            .iter()
            .chain(self.held_paused.iter().flatten())
            .chain(self.held_full.values().flatten())
    }

    /// Every free delivery slot of a destination with held recipients gets the next held
    /// message back into `due` (all of its recipients for that destination, so they still
    /// go in one transaction). Run before each scan: whatever happened to a message
    /// released earlier (delivered, expired, removed), a free slot is never left idle
    /// while mail waits for it.
    fn release_held(&mut self, max_inflight: usize) {
        if self.held_full.is_empty() {
            return;
        }
        let free: Vec<(String, usize)> = self
            .held_full
            .keys()
            .filter_map(|dest| {
                let busy = self.dest_inflight.get(dest).copied().unwrap_or(0);
                (busy < max_inflight).then(|| (dest.clone(), max_inflight - busy))
            })
            .collect();
        for (dest, slots) in free {
            for _ in 0..slots {
                if !self.release_one_held(&dest) {
                    break;
                }
            }
        }
    }

    /// Moves the next live held message for `dest` into `due`; false when none is left.
    fn release_one_held(&mut self, dest: &str) -> bool {
        let Some(held) = self.held_full.get_mut(dest) else {
            return false;
        };
        let mut msgid = None;
        while let Some(&(t, e)) = held.first() {
            let live = self
                .messages
                .get(&e.msgid())
                .is_some_and(|m| m.env.rcpts.iter().any(|r| r.evpid == e));
            if msgid.is_some_and(|m| m != e.msgid()) {
                break;
            }
            held.remove(&(t, e));
            // A recipient gone meanwhile frees nothing: look further.
            if live {
                msgid = Some(e.msgid());
                self.due.insert((t, e));
            }
        }
        if held.is_empty() {
            self.held_full.remove(dest);
        }
        msgid.is_some()
    }
}

struct Entry {
    env: StoredEnvelope,
    /// Serialises rewrites of this message's envelope file.
    write_lock: Arc<tokio::sync::Mutex<()>>,
    /// Where the message file's bytes are while it has none: always when `on_disk` is
    /// false, else until the first delivery attempt takes it.
    body: Option<Arc<JournalBody>>,
    /// Whether `queue/` has this message's files. A small message is first held only in
    /// the journal; its files are written when an envelope rewrite or a journal
    /// checkpoint needs them, so mail relayed at once creates no file.
    on_disk: bool,
}

/// A message held only in the journal: its bytes are read back from its record for
/// each attempt, so a backlog of accepted mail costs no memory but its envelopes.
#[derive(Debug)]
pub(crate) struct JournalBody {
    span: journal::Span,
    journal: Arc<journal::Reader>,
    _counted: Reservation,
}

impl JournalBody {
    /// The bytes, or `None` once a checkpoint moved the message into its files.
    pub(crate) fn read(&self) -> std::io::Result<Option<Vec<u8>>> {
        self.journal.read(self.span)
    }
}

/// Bytes counted against [`JOURNAL_ONLY_BYTES`] until dropped.
#[derive(Debug)]
struct Reservation {
    n: usize,
    total: Arc<AtomicUsize>,
}

impl Reservation {
    fn take(total: &Arc<AtomicUsize>, n: usize) -> Option<Reservation> {
        let r = Reservation {
            n,
            total: total.clone(),
        };
        (total.fetch_add(n, Ordering::Relaxed) + n <= JOURNAL_ONLY_BYTES).then_some(r)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.total.fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// At most this many bytes of committed messages are held only in the journal; past it
/// (a destination down, deliveries paused) messages are written to `queue/` at commit,
/// as large ones always are. It bounds what a checkpoint has to write out.
const JOURNAL_ONLY_BYTES: usize = 64 * 1024 * 1024;
/// Larger messages always get files.
const JOURNAL_ONLY_MESSAGE_MAX: usize = FLUSH_AT;

#[derive(Default)]
struct Counters {
    commit_rounds: AtomicU64,
    committed: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) tempfail: AtomicU64,
    pub(crate) permfail: AtomicU64,
    pub(crate) expired: AtomicU64,
    removed: AtomicU64,
}

/// Counters for `fugu ctl show stats` and for checking that commits are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Journal fdatasync rounds of the committer.
    pub commit_rounds: u64,
    /// Messages those rounds made durable.
    pub committed: u64,
    pub messages: usize,
    pub envelopes: usize,
    pub inflight: usize,
    /// Recipients delivered, deferred, failed permanently, expired, removed by `remove`.
    pub delivered: u64,
    pub tempfail: u64,
    pub permfail: u64,
    pub expired: u64,
    pub removed: u64,
}

enum Job {
    /// Files written into `incoming/`; `data` is the message file's bytes when they are
    /// in memory (else the committer reads the file back).
    Commit {
        msgid: MsgId,
        env: String,
        /// `None`: read the message file back after moving it.
        data: Option<Vec<u8>>,
        /// The files are in `incoming/`, to be moved into `queue/`; else the message is
        /// held only in the journal.
        move_files: bool,
        reply: tokio::sync::oneshot::Sender<Result<journal::Span, Error>>,
    },
    /// Write the `D` records waiting in the inbox now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// The queue is closing: write what waits and end the thread.
    Stop,
}

/// The committer's inbox: commit jobs, and the msgids of messages that left the queue
/// and whose `D` records are not written yet. A plain queue rather than a channel: the
/// channel spun on the committer's thread before sleeping (a twentieth of the daemon's
/// user time under load), and its senders woke the committer even while it was busy
/// writing.
///
/// `D` records ride on the committer's next round instead of waking it once per
/// delivered message: a `D` record is not synced anyway, and under load the wake-up, the
/// thread switch and the write it cost each time were a tenth of the daemon's system
/// calls. They are taken with the round's jobs, under the same lock, so a message that
/// left the queue before a job was sent (and whose msgid a new message may have drawn)
/// has its `D` record before that job's `C` record. They wait at most [`DONE_FLUSH`] for
/// a round; only the first one after the committer found nothing to do for that long
/// wakes it, so an idle server's committer sleeps. The daemon asks for the last ones
/// when it stops ([`Queue::flush_done`]). A crash may lose the last of them: those
/// messages are delivered again after the restart, never lost.
#[derive(Default)]
struct Jobs {
    state: Mutex<JobsState>,
    ready: Condvar,
}

#[derive(Default)]
struct JobsState {
    jobs: Vec<Job>,
    done: Vec<MsgId>,
    waiting: Waiting,
    /// The committer has ended (stopped, or panicked): nothing sent is handled.
    closed: bool,
}

/// What the committer sleeps on `ready` for, and so who must wake it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    #[default]
    No,
    /// A job, or a first `D` record: nothing came for [`DONE_FLUSH`].
    Anything,
    /// A job, for at most [`DONE_FLUSH`]: `D` records ride on its round.
    Job,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, JobsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `job` to the committer; `false` (and the job dropped, so whoever waits for
    /// its answer hears the queue closed) once the committer has ended.
    fn send(&self, job: Job) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.jobs.push(job);
        let wake = std::mem::take(&mut st.waiting) != Waiting::No;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// Queues the `D` record of a message that left the queue.
    fn done(&self, msgid: MsgId) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.done.push(msgid);
        let wake = st.waiting == Waiting::Anything;
        if wake {
            st.waiting = Waiting::No;
        }
        drop(st);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Refuses further jobs and drops those not handled.
    fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let left = std::mem::take(&mut st.jobs);
        drop(st);
        drop(left);
    }

    fn wait_for_job<'a>(
        &'a self,
        st: MutexGuard<'a, JobsState>,
        flush: Duration,
    ) -> MutexGuard<'a, JobsState> {
        self.ready
            .wait_timeout_while(st, flush, |st| st.jobs.is_empty())
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// Every job sent and every `D` record queued so far. Waits up to `flush` for a job
    /// (`D` records ride on its round); when that wait ends with nothing at all to write,
    /// sleeps until something comes, and then gives a first `D` record its `flush` too.
    /// Under load a job always comes first and a `D` record never wakes the committer.
    fn take(&self, flush: Duration) -> (Vec<Job>, Vec<MsgId>) {
        let mut st = self.lock();
        if st.jobs.is_empty() {
            st.waiting = Waiting::Job;
            st = self.wait_for_job(st, flush);
            if st.jobs.is_empty() && st.done.is_empty() {
                st.waiting = Waiting::Anything;
                st = self
                    .ready
                    .wait_while(st, |st| st.jobs.is_empty() && st.done.is_empty())
                    .unwrap_or_else(|p| p.into_inner());
                if st.jobs.is_empty() {
                    st.waiting = Waiting::Job;
                    st = self.wait_for_job(st, flush);
                }
            }
        }
        st.waiting = Waiting::No;
        (std::mem::take(&mut st.jobs), std::mem::take(&mut st.done))
    }
}

/// The longest a `D` record waits for a commit round to ride on.
const DONE_FLUSH: Duration = Duration::from_millis(100);

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> Error {
    match source.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Error::SpoolFull {
            path: path.to_path_buf(),
            source,
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn blocking_error(e: tokio::task::JoinError) -> Error {
    Error::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Queue {
    /// Opens (creating if needed) the spool at `spool_dir`, discards incomplete incoming
    /// files, moves undecodable envelopes to `corrupt/` and schedules the rest.
    pub fn open(
        spool_dir: impl AsRef<Path>,
        config: QueueConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Queue, Error> {
        let dir = spool_dir.as_ref().to_path_buf();
        let incoming = dir.join("incoming");
        let queue_dir = dir.join("queue");
        let corrupt = dir.join("corrupt");
        for d in [&dir, &incoming, &queue_dir, &corrupt] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| io_error(d, e))?;
        }
        // One process owns a spool: a second daemon would discard the first one's
        // incoming messages. The kernel drops the lock when the owner dies.
        let lock_path = dir.join("queue.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| Error::SpoolBusy { path: dir.clone() })?;
        let mut state = State::default();
        journal::recover(&dir, &queue_dir)?;
        recover(&incoming, &queue_dir, &corrupt, &mut state)?;
        let journal = journal::Journal::open(&dir, &queue_dir)?;
        let reader = journal.reader();
        let jobs = Arc::new(Jobs::default());
        let rx = jobs.clone();
        let qd = queue_dir.clone();
        let inc = incoming.clone();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let committer_thread = std::thread::Builder::new()
            .name("fugu-queue-commit".into())
            .spawn(move || committer(&inc, &qd, journal, &c, &rx))
            .map_err(|e| io_error(&dir, e))?;
        Ok(Queue {
            inner: Arc::new(Inner {
                incoming,
                queue_dir: queue_dir.into(),
                config,
                counters,
                clock,
                committer: jobs,
                committer_thread: Mutex::new(Some(committer_thread)),
                state: Mutex::new(state),
                journal_only: Arc::default(),
                journal: reader,
                wake: tokio::sync::Notify::new(),
                paused_mda: AtomicBool::new(false),
                paused_mta: AtomicBool::new(false),
                _lock: lock,
            }),
        })
    }

    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Writes the `D` records still waiting for a commit round ([`Jobs`]); the daemon
    /// calls it as it stops.
    pub async fn flush_done(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.inner.committer.send(Job::Flush(tx)) {
            let _ = rx.await;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> i64 {
        unix_seconds(self.inner.clock.now())
    }

    /// Starts receiving a message for `envelope` (which must have at least one recipient).
    pub async fn begin(&self, envelope: Envelope) -> Result<Incoming, Error> {
        self.begin_inner(envelope, false).await
    }

    async fn begin_inner(&self, envelope: Envelope, is_bounce: bool) -> Result<Incoming, Error> {
        let msgid = self.reserve_msgid();
        let encoding = match (
            self.inner.config.compression,
            self.inner.config.encryption_key.is_some(),
        ) {
            (false, false) => MessageEncoding::Plain,
            (true, false) => MessageEncoding::Zstd,
            (false, true) => MessageEncoding::Aes256Gcm,
            (true, true) => MessageEncoding::ZstdAes256Gcm,
        };
        Ok(Incoming {
            queue: self.clone(),
            msgid,
            file: None,
            buf: Vec::new(),
            flushed: false,
            in_incoming: false,
            envelope,
            encoding,
            is_bounce,
            finished: false,
        })
    }

    /// Draws a msgid no queued message, receipt in progress or unfinished removal uses
    /// (a removal keeps its id reserved until its files are unlinked; files a checkpoint
    /// wrote for a removed message are unlinked by the committer before it handles any
    /// later commit). The directory is not searched: lookups in `queue/` were a
    /// measurable share of the time per message, and no file is created here.
    fn reserve_msgid(&self) -> MsgId {
        loop {
            let msgid = MsgId::random();
            let mut st = self.state();
            if st.messages.contains_key(&msgid) || !st.reserved.insert(msgid) {
                continue;
            }
            return msgid;
        }
    }

    fn msg_path(&self, msgid: MsgId) -> PathBuf {
        msg_file(&self.inner.queue_dir, msgid)
    }

    fn env_path(&self, msgid: MsgId) -> PathBuf {
        env_file(&self.inner.queue_dir, msgid)
    }

    /// Every envelope (one entry per recipient) as the running daemon sees it; one
    /// removed during its attempt is gone already.
    pub fn list(&self) -> Vec<QueueEntry> {
        let st = self.state();
        let mut out: Vec<QueueEntry> = st
            .messages
            .values()
            .flat_map(|e| {
                e.env
                    .rcpts
                    .iter()
                    .filter(|r| !st.removing.contains(&r.evpid))
                    .map(|r| QueueEntry::new(&e.env, r, st.inflight.contains(&r.evpid)))
            })
            .collect();
        out.sort_by_key(|e| e.evpid);
        out
    }

    /// Every envelope read straight from the spool files, for `fugu ctl show queue` while
    /// the daemon is down (it takes no lock). Undecodable envelopes are skipped.
    pub fn list_offline(spool_dir: impl AsRef<Path>) -> Result<Vec<QueueEntry>, Error> {
        let qd = spool_dir.as_ref().join("queue");
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let rd = fs::read_dir(&qd).map_err(|e| io_error(&qd, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| io_error(&qd, e))?;
            let path = ent.path();
            if path.extension().and_then(|x| x.to_str()) != Some("env") {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            let Ok(env) = format::decode(&path, &bytes) else {
                continue;
            };
            seen.insert(env.msgid);
            out.extend(env.rcpts.iter().map(|r| QueueEntry::new(&env, r, false)));
        }
        // Messages without files are only in the journal (the next start
        // writes their files).
        let jpath = spool_dir.as_ref().join(journal::FILE_NAME);
        if let Ok(bytes) = fs::read(&jpath) {
            let mut live = HashMap::new();
            for r in journal::decode(&bytes).0 {
                match r {
                    journal::Record::Commit { msgid, env, .. } => {
                        live.insert(msgid, env);
                    }
                    journal::Record::Done(msgid) => {
                        live.remove(&msgid);
                    }
                }
            }
            for (msgid, text) in live {
                if seen.contains(&msgid) {
                    continue;
                }
                if let Ok(env) = format::decode(&jpath, &text) {
                    out.extend(env.rcpts.iter().map(|r| QueueEntry::new(&env, r, false)));
                }
            }
        }
        out.sort_by_key(|e| e.evpid);
        Ok(out)
    }

    /// The envelope file text of a queued message (by msgid or any of its evpids).
    pub fn show_envelope(&self, id: &str) -> Result<String, Error> {
        let msgid = parse_any_id(id)?;
        let st = self.state();
        let e = st
            .messages
            .get(&msgid)
            .ok_or_else(|| Error::NoSuchId(id.into()))?;
        Ok(format::encode(&e.env))
    }

    /// The message as received (decompressed and decrypted).
    pub async fn show_message(&self, id: &str) -> Result<Vec<u8>, Error> {
        let msgid = parse_any_id(id)?;
        let r = self
            .message_ref(msgid)
            .ok_or_else(|| Error::NoSuchId(id.into()))?;
        r.read().await
    }

    fn message_ref(&self, msgid: MsgId) -> Option<MessageRef> {
        let st = self.state();
        let e = st.messages.get(&msgid)?;
        Some(MessageRef {
            msgid,
            envelope: e.env.header.clone(),
            ctime: e.env.ctime,
            queue_dir: self.inner.queue_dir.clone(),
            encoding: e.env.encoding,
            key: self.inner.config.encryption_key,
            body: e.body.clone(),
        })
    }

    /// Makes every waiting recipient of `id` (msgid or evpid; `all` for everything) due now.
    pub fn schedule(&self, id: &str) -> Result<usize, Error> {
        let now = self.now();
        let filter = IdFilter::parse(id)?;
        let mut st = self.state();
        let moved: Vec<(i64, EvpId)> = st
            .due
            .iter()
            .filter(|(t, e)| *t > now && filter.matches(*e))
            .copied()
            .collect();
        for (t, e) in &moved {
            st.due.remove(&(*t, *e));
            st.due.insert((now, *e));
            if let Some(m) = st.messages.get_mut(&e.msgid())
                && let Some(r) = m.env.rcpts.iter_mut().find(|r| r.evpid == *e)
            {
                r.next_try = now;
            }
        }
        drop(st);
        self.inner.wake.notify_one();
        Ok(moved.len())
    }

    /// Deletes the waiting recipients of `id` (msgid, evpid or `all`); returns how many.
    /// Recipients in flight are left alone.
    pub async fn remove(&self, id: &str) -> Result<usize, Error> {
        let filter = IdFilter::parse(id)?;
        let (targets, in_flight): (Vec<EvpId>, usize) = {
            let mut guard = self.state();
            let st = &mut *guard;
            let targets: HashSet<EvpId> = st
                .waiting()
                .filter(|(_, e)| filter.matches(*e))
                .map(|(_, e)| *e)
                .collect();
            let keep = |(_, e): &(i64, EvpId)| !targets.contains(e);
            st.due.retain(keep);
            for held in st.held_paused.iter_mut().chain(st.held_full.values_mut()) {
                held.retain(keep);
            }
            // An attempt under way cannot be called back: its recipients are dropped
            // when it ends, instead of being deferred or bounced.
            let flying: Vec<EvpId> = st
                .inflight
                .iter()
                .filter(|e| filter.matches(**e))
                .copied()
                .collect();
            let in_flight = flying.len();
            st.removing.extend(flying);
            (targets.into_iter().collect(), in_flight)
        };
        let mut by_msg: HashMap<MsgId, Vec<EvpId>> = HashMap::new();
        for e in &targets {
            by_msg.entry(e.msgid()).or_default().push(*e);
        }
        for (msgid, evps) in by_msg {
            {
                let mut st = self.state();
                if let Some(m) = st.messages.get_mut(&msgid) {
                    m.env.rcpts.retain(|r| !evps.contains(&r.evpid));
                }
            }
            for e in &evps {
                tracing::info!("delivery: Remove for {e}: stat=Removed by administrator");
            }
            self.persist(msgid).await?;
        }
        self.inner
            .counters
            .removed
            .fetch_add(targets.len() as u64, Ordering::Relaxed);
        Ok(targets.len() + in_flight)
    }

    /// `pause mda|mta` (true) / `resume` (false): recipients of local (`relay` false) or
    /// relay actions stay queued until resumed.
    pub fn set_paused(&self, relay: bool, paused: bool) {
        let flag = if relay {
            &self.inner.paused_mta
        } else {
            &self.inner.paused_mda
        };
        flag.store(paused, Ordering::Relaxed);
        if !paused {
            let mut st = self.state();
            let held = std::mem::take(&mut st.held_paused[usize::from(relay)]);
            st.due.extend(held);
        }
        self.inner.wake.notify_one();
    }

    pub fn is_paused(&self, relay: bool) -> bool {
        if relay {
            self.inner.paused_mta.load(Ordering::Relaxed)
        } else {
            self.inner.paused_mda.load(Ordering::Relaxed)
        }
    }

    /// Rewrites (or, with no recipients left, deletes) one message's files from the
    /// in-memory state.
    async fn persist(&self, msgid: MsgId) -> Result<(), Error> {
        let lock = match self.state().messages.get(&msgid) {
            Some(e) => e.write_lock.clone(),
            None => return Ok(()),
        };
        let _guard = lock.lock().await;
        // Snapshot after taking the write lock, so the last writer writes the newest state.
        let (snapshot, on_disk, body) = {
            let mut st = self.state();
            let Some(e) = st.messages.get(&msgid) else {
                return Ok(());
            };
            if e.env.rcpts.is_empty() {
                let on_disk = e.on_disk;
                st.messages.remove(&msgid);
                // The `D` record is queued under the lock that hands out msgids, and the
                // id stays reserved until its files are gone: a new message drawing the
                // same id has its `C` record after this one and its files cannot be
                // unlinked by this removal. No fsync: if the removal is lost in a crash,
                // the message is delivered again, never lost.
                self.inner.committer.done(msgid);
                if on_disk {
                    st.reserved.insert(msgid);
                }
                (None, on_disk, None)
            } else {
                (Some(format::encode(&e.env)), e.on_disk, e.body.clone())
            }
        };
        let Some(text) = snapshot else {
            if on_disk {
                let (env_path, msg_path) = (self.env_path(msgid), self.msg_path(msgid));
                // The envelope goes first: a message file without one is an orphan
                // recovery deletes. Done here rather than on the blocking pool: the
                // hand-off cost more than two unlinks (futex wake-ups were most of the
                // daemon's system time relaying small messages).
                let r = fs::remove_file(&env_path).map_err(|e| io_error(&env_path, e));
                let _ = fs::remove_file(&msg_path);
                self.state().reserved.remove(&msgid);
                r?;
            }
            return Ok(());
        };
        let (env_path, msg_path) = (self.env_path(msgid), self.msg_path(msgid));
        let wrote_msg = tokio::task::spawn_blocking(move || -> Result<bool, Error> {
            // A message held only in the journal gets its file now, whole before it has a name
            // (a journal checkpoint may look at it meanwhile). No fsync: the journal
            // keeps the message until a checkpoint fsyncs the file.
            let wrote_msg = match (&body, on_disk) {
                (Some(b), false) => {
                    let Some(bytes) = b.read().map_err(|e| io_error(&msg_path, e))? else {
                        // A checkpoint wrote the file and emptied the journal meanwhile.
                        return write_envelope(&env_path, &text).map(|()| false);
                    };
                    let tmp = msg_path.with_extension("msg.tmp");
                    let r = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&tmp)
                        .and_then(|mut f| f.write_all(&bytes))
                        .and_then(|()| fs::rename(&tmp, &msg_path));
                    if let Err(e) = r {
                        let _ = fs::remove_file(&tmp);
                        return Err(io_error(&msg_path, e));
                    }
                    true
                }
                _ => false,
            };
            write_envelope(&env_path, &text).map(|()| wrote_msg)
        })
        .await
        .map_err(blocking_error)??;
        if wrote_msg && let Some(e) = self.state().messages.get_mut(&msgid) {
            e.on_disk = true;
        }
        Ok(())
    }

    /// Waits until something may have become due (a commit, `schedule`, an outcome).
    pub(crate) async fn woken(&self) {
        self.inner.wake.notified().await
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.state();
        QueueStats {
            commit_rounds: self.inner.counters.commit_rounds.load(Ordering::Relaxed),
            committed: self.inner.counters.committed.load(Ordering::Relaxed),
            messages: st.messages.len(),
            envelopes: st.messages.values().map(|m| m.env.rcpts.len()).sum(),
            inflight: st.inflight.len(),
            delivered: self.inner.counters.delivered.load(Ordering::Relaxed),
            tempfail: self.inner.counters.tempfail.load(Ordering::Relaxed),
            permfail: self.inner.counters.permfail.load(Ordering::Relaxed),
            expired: self.inner.counters.expired.load(Ordering::Relaxed),
            removed: self.inner.counters.removed.load(Ordering::Relaxed),
        }
    }
}

fn parse_any_id(id: &str) -> Result<MsgId, Error> {
    if let Ok(e) = id.parse::<EvpId>() {
        return Ok(e.msgid());
    }
    id.parse::<MsgId>().map_err(|_| Error::NoSuchId(id.into()))
}

enum IdFilter {
    All,
    Msg(MsgId),
    Evp(EvpId),
}

impl IdFilter {
    fn parse(id: &str) -> Result<IdFilter, Error> {
        if id == "all" {
            Ok(IdFilter::All)
        } else if let Ok(e) = id.parse::<EvpId>() {
            Ok(IdFilter::Evp(e))
        } else if let Ok(m) = id.parse::<MsgId>() {
            Ok(IdFilter::Msg(m))
        } else {
            Err(Error::NoSuchId(id.into()))
        }
    }

    fn matches(&self, e: EvpId) -> bool {
        match self {
            IdFilter::All => true,
            IdFilter::Msg(m) => e.msgid() == *m,
            IdFilter::Evp(x) => e == *x,
        }
    }
}

/// One line of `fugu ctl show queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub evpid: EvpId,
    pub local_origin: bool,
    pub action: String,
    pub is_bounce: bool,
    pub auth: bool,
    pub sender: Option<String>,
    pub rcpt: String,
    pub ctime: i64,
    pub expire: i64,
    pub last_try: i64,
    pub retries: u32,
    pub next_try: i64,
    pub inflight: bool,
    pub last_error: Option<String>,
}

impl QueueEntry {
    fn new(env: &StoredEnvelope, r: &StoredRcpt, inflight: bool) -> QueueEntry {
        QueueEntry {
            evpid: r.evpid,
            local_origin: env.header.origin == crate::envelope::Origin::Local,
            action: r.recipient.action.clone(),
            is_bounce: env.is_bounce,
            auth: env.header.auth_user.is_some(),
            sender: env.header.mail_from.clone(),
            rcpt: r.recipient.address.clone(),
            ctime: env.ctime,
            expire: env.expire,
            last_try: r.last_try,
            retries: r.retries,
            next_try: r.next_try,
            inflight,
            last_error: r.last_error.clone(),
        }
    }

    /// OpenSMTPD's `show queue` line:
    /// `evpid|src|action|flags|sender|rcpt|rcpt|ctime|expire|lasttry|retries|runstate|delay|error`.
    /// fugu prints the action name where smtpctl prints the agent. `running` is false when
    /// read from the spool with the daemon down (`offline|`).
    pub fn line(&self, now: i64, running: bool) -> String {
        let mut flags = Vec::new();
        if self.is_bounce {
            flags.push("bounce");
        }
        if self.auth {
            flags.push("auth");
        }
        let runstate = if !running {
            "offline|".to_string()
        } else if self.inflight {
            "inflight|0".to_string()
        } else {
            format!("pending|{}", (self.next_try - now).max(0))
        };
        let mut err = String::new();
        for c in self.last_error.as_deref().unwrap_or("").chars() {
            match c {
                '|' | '\\' => {
                    err.push('\\');
                    err.push(c);
                }
                c if c.is_control() => err.push_str(&format!("\\{:03o}", c as u32)),
                c => err.push(c),
            }
        }
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.evpid,
            if self.local_origin { "local" } else { "inet" },
            self.action,
            flags.join(","),
            self.sender.as_deref().unwrap_or(""),
            self.rcpt,
            self.rcpt,
            self.ctime,
            self.expire,
            self.last_try,
            self.retries,
            runstate,
            (now - self.ctime).max(0),
            err
        )
    }
}

/// A message being received. Dropping it without [`commit`](Incoming::commit) discards it.
pub struct Incoming {
    queue: Queue,
    msgid: MsgId,
    /// The file in `incoming/`, created at the first flush (large messages only).
    file: Option<File>,
    buf: Vec<u8>,
    /// Part of the message is already in the file (large messages).
    flushed: bool,
    /// Small message files were written into `incoming/` at commit.
    in_incoming: bool,
    envelope: Envelope,
    encoding: MessageEncoding,
    is_bounce: bool,
    finished: bool,
}

/// Data is written to the incoming file in chunks this size, off the async threads.
const FLUSH_AT: usize = 256 * 1024;

impl Incoming {
    pub fn msgid(&self) -> MsgId {
        self.msgid
    }

    /// Appends message bytes (as received, after dot-unstuffing).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(data);
        // Compressed or encrypted messages are encoded whole at commit.
        if self.encoding == MessageEncoding::Plain && self.buf.len() >= FLUSH_AT {
            let r = self.flush().await;
            if r.is_err() {
                // Nothing half-written stays behind: the session answers 452 and the
                // message is gone (further writes and the commit fail).
                self.discard();
            }
            return r;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Error> {
        if self.finished {
            return Err(Error::QueueClosed);
        }
        let file = self.file.take();
        let buf = std::mem::take(&mut self.buf);
        let path = self.incoming_msg();
        self.flushed = true;
        let (file, buf, r) = tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(f) => Ok(f),
                None => OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path),
            };
            match file {
                Ok(mut f) => {
                    let r = f.write_all(&buf);
                    (Some(f), buf, r)
                }
                Err(e) => (None, buf, Err(e)),
            }
        })
        .await
        .map_err(blocking_error)?;
        self.file = file;
        self.buf = buf;
        self.buf.clear();
        r.map_err(|e| io_error(&self.incoming_msg(), e))
    }

    fn incoming_msg(&self) -> PathBuf {
        msg_file(&self.queue.inner.incoming, self.msgid)
    }

    fn incoming_env(&self) -> PathBuf {
        env_file(&self.queue.inner.incoming, self.msgid)
    }

    /// Makes the message durable and schedules it. Returns only after the journal record
    /// holding its envelope and message bytes is on stable storage.
    pub async fn commit(mut self) -> Result<MsgId, Error> {
        let r = self.commit_inner().await;
        if r.is_err() {
            self.discard();
        }
        r
    }

    async fn commit_inner(&mut self) -> Result<MsgId, Error> {
        if self.envelope.recipients.is_empty() {
            return Err(Error::BadEnvelope {
                path: self.incoming_env(),
                line: 0,
                reason: "no recipients".into(),
            });
        }
        let now = self.queue.now();
        let ttl = i64::try_from(self.queue.inner.config.ttl.as_secs()).unwrap_or(i64::MAX);
        // Moved out, not cloned: the envelope is not used again whether the commit
        // succeeds or not (`commit` discards the message on failure).
        let e = &mut self.envelope;
        let recipients = std::mem::take(&mut e.recipients);
        let header = Envelope {
            session_id: e.session_id,
            origin: e.origin.clone(),
            helo: std::mem::take(&mut e.helo),
            rdns: e.rdns.take(),
            tag: e.tag.take(),
            auth_user: e.auth_user.take(),
            protocol: std::mem::take(&mut e.protocol),
            mail_from: e.mail_from.take(),
            body_type: e.body_type,
            smtputf8: e.smtputf8,
            dsn_ret: e.dsn_ret,
            dsn_envid: e.dsn_envid.take(),
            recipients: Vec::new(),
        };
        let env = StoredEnvelope {
            msgid: self.msgid,
            ctime: now,
            expire: now.saturating_add(ttl),
            encoding: self.encoding,
            is_bounce: self.is_bounce,
            header: Arc::new(header),
            rcpts: recipients
                .into_iter()
                .map(|recipient| StoredRcpt {
                    evpid: self.msgid.new_evpid(),
                    recipient,
                    state: RcptState::Pending,
                    retries: 0,
                    last_try: 0,
                    next_try: now,
                    last_error: None,
                    warnings: 0,
                })
                .collect(),
        };
        let text = format::encode(&env);
        if self.finished {
            return Err(Error::QueueClosed);
        }
        let buf = std::mem::take(&mut self.buf);
        let encoding = self.encoding;
        let key = self.queue.inner.config.encryption_key;
        let (data, held) = if self.flushed {
            // Large: the rest goes to the file in incoming/, the committer moves it.
            let mut file = self.file.take();
            let msg_path = self.incoming_msg();
            let env_path = self.incoming_env();
            let text = text.clone();
            tokio::task::spawn_blocking(move || -> Result<(), Error> {
                let Some(file) = file.as_mut() else {
                    return Err(Error::QueueClosed);
                };
                file.write_all(&buf).map_err(|e| io_error(&msg_path, e))?;
                write_new(&env_path, text.as_bytes())
            })
            .await
            .map_err(blocking_error)??;
            (None, None)
        } else {
            let data = if encoding == MessageEncoding::Plain {
                buf
            } else {
                let msg_path = self.queue.msg_path(self.msgid);
                tokio::task::spawn_blocking(move || codec::encode(encoding, key.as_ref(), buf))
                    .await
                    .map_err(blocking_error)?
                    .map_err(|e| io_error(&msg_path, e))?
            };
            let held =
                if encoding == MessageEncoding::Plain && data.len() <= JOURNAL_ONLY_MESSAGE_MAX {
                    Reservation::take(&self.queue.inner.journal_only, data.len())
                } else {
                    None
                };
            if held.is_none() {
                // Two small writes, done here rather than on the blocking pool: the
                // hand-off costs more than the calls. The committer moves them.
                self.in_incoming = true;
                write_new(&self.incoming_msg(), &data)?;
                write_new(&self.incoming_env(), text.as_bytes())?;
            }
            // Else no file at all: the journal record is the durable copy, and delivery
            // reads the bytes from it (see `Entry::on_disk`).
            (Some(data), held)
        };
        let on_disk = held.is_none();

        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.queue.inner.committer.send(Job::Commit {
            msgid: self.msgid,
            env: text,
            data,
            move_files: on_disk,
            reply: tx,
        });
        if !sent {
            return Err(Error::QueueClosed);
        }
        let span = rx.await.map_err(|_| Error::QueueClosed)??;
        self.finished = true;
        let body = held.map(|counted| {
            Arc::new(JournalBody {
                span,
                journal: self.queue.inner.journal.clone(),
                _counted: counted,
            })
        });

        {
            let mut st = self.queue.state();
            st.reserved.remove(&self.msgid);
            for r in &env.rcpts {
                st.due.insert((r.next_try, r.evpid));
            }
            st.messages.insert(
                self.msgid,
                Box::new(Entry {
                    env,
                    write_lock: Arc::default(),
                    body,
                    on_disk,
                }),
            );
        }
        self.queue.inner.wake.notify_one();
        Ok(self.msgid)
    }

    /// Discards the message (the session failed or the client gave up).
    pub fn abort(mut self) {
        self.discard();
    }

    fn discard(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.file = None;
        if self.flushed || self.in_incoming {
            let _ = fs::remove_file(self.incoming_msg());
            let _ = fs::remove_file(self.incoming_env());
        }
        self.queue.state().reserved.remove(&self.msgid);
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.discard();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.committer.send(Job::Stop);
        let thread = self
            .committer_thread
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The group-commit loop: every message that arrived while the previous round ran is
/// moved into `queue/`, appended to the journal and covered by one fdatasync.
fn committer(
    incoming: &Path,
    queue_dir: &Path,
    mut journal: journal::Journal,
    counters: &Counters,
    rx: &Jobs,
) {
    /// However the loop ends, commits sent afterwards fail instead of waiting forever.
    struct Closing<'a>(&'a Jobs);
    impl Drop for Closing<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _closing = Closing(rx);
    let mut stop = false;
    while !stop {
        let (batch, left) = rx.take(DONE_FLUSH);
        if batch.is_empty() && left.is_empty() {
            continue;
        }
        for msgid in left {
            journal.add_done(msgid);
        }
        let mut flushed = Vec::new();
        let mut moved = Vec::with_capacity(batch.len());
        for job in batch {
            let (msgid, env, data, move_files, reply) = match job {
                Job::Flush(reply) => {
                    flushed.push(reply);
                    continue;
                }
                Job::Stop => {
                    stop = true;
                    continue;
                }
                Job::Commit {
                    msgid,
                    env,
                    data,
                    move_files,
                    reply,
                } => (msgid, env, data, move_files, reply),
            };
            let mut r = Ok(());
            if move_files {
                for ext in ["msg", "env"] {
                    let from = incoming.join(format!("{msgid}.{ext}"));
                    let to = queue_dir.join(format!("{msgid}.{ext}"));
                    if let Err(e) = fs::rename(&from, &to) {
                        r = Err(io_error(&to, e));
                        break;
                    }
                }
            }
            let data = r.and_then(|()| match data {
                Some(d) => Ok(d),
                None => {
                    let p = msg_file(queue_dir, msgid);
                    fs::read(&p).map_err(|e| io_error(&p, e))
                }
            });
            match data {
                Ok(d) => {
                    let span = journal.add_commit(msgid, env.as_bytes(), &d);
                    moved.push((msgid, reply, span));
                }
                Err(e) => {
                    remove_queued(queue_dir, msgid);
                    let _ = reply.send(Err(e));
                }
            }
        }
        if moved.is_empty() {
            if let Err(e) = journal.flush(false) {
                tracing::error!("queue: commit journal write failed: {e}");
            }
            for reply in flushed {
                let _ = reply.send(());
            }
            continue;
        }
        match journal.flush(true) {
            Ok(()) => {
                tracing::trace!(messages = moved.len(), "queue: commit round");
                counters.commit_rounds.fetch_add(1, Ordering::Relaxed);
                counters
                    .committed
                    .fetch_add(moved.len() as u64, Ordering::Relaxed);
                for (_, reply, span) in moved {
                    let _ = reply.send(Ok(span));
                }
                if let Err(e) = journal.maybe_checkpoint() {
                    tracing::error!("queue: commit journal checkpoint failed: {e}");
                }
            }
            Err(e) => {
                tracing::error!("queue: commit journal fdatasync failed: {e}");
                for (msgid, reply, _) in moved {
                    remove_queued(queue_dir, msgid);
                    // The record may be on disk: its `D` keeps a restart from
                    // delivering a message whose client was told to try again.
                    journal.add_done(msgid);
                    let kind = match &e {
                        Error::SpoolFull { .. } => ErrorKind::StorageFull,
                        _ => ErrorKind::Other,
                    };
                    let _ = reply.send(Err(io_error(
                        queue_dir,
                        std::io::Error::new(kind, e.to_string()),
                    )));
                }
            }
        }
        for reply in flushed {
            let _ = reply.send(());
        }
    }
}

/// Replaces an envelope file, fsynced before its rename.
fn write_envelope(env_path: &Path, text: &str) -> Result<(), Error> {
    let tmp = env_path.with_extension("env.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, e))?;
    let r = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| fs::rename(&tmp, env_path));
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(io_error(env_path, e));
    }
    Ok(())
}

/// Creates `path` (it must not exist) holding `bytes`; on failure nothing is left.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let r = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes));
    if let Err(e) = r {
        if e.kind() != ErrorKind::AlreadyExists {
            let _ = fs::remove_file(path);
        }
        return Err(io_error(path, e));
    }
    Ok(())
}

fn remove_queued(queue_dir: &Path, msgid: MsgId) {
    let _ = fs::remove_file(env_file(queue_dir, msgid));
    let _ = fs::remove_file(msg_file(queue_dir, msgid));
}

/// A message's envelope file in `dir` (`queue/` or `incoming/`).
fn env_file(dir: &Path, msgid: MsgId) -> PathBuf {
    dir.join(format!("{msgid}.env"))
}

/// A message's content file in `dir` (`queue/` or `incoming/`).
fn msg_file(dir: &Path, msgid: MsgId) -> PathBuf {
    dir.join(format!("{msgid}.msg"))
}

fn recover(incoming: &Path, queue_dir: &Path, corrupt: &Path, st: &mut State) -> Result<(), Error> {
    let mut discarded = 0;
    for ent in fs::read_dir(incoming).map_err(|e| io_error(incoming, e))? {
        let ent = ent.map_err(|e| io_error(incoming, e))?;
        fs::remove_file(ent.path()).map_err(|e| io_error(&ent.path(), e))?;
        discarded += 1;
    }
    let mut envs = Vec::new();
    let mut msgs = HashSet::new();
    for ent in fs::read_dir(queue_dir).map_err(|e| io_error(queue_dir, e))? {
        let ent = ent.map_err(|e| io_error(queue_dir, e))?;
        let path = ent.path();
        let name = ent.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".env") {
            envs.push((id.to_string(), path));
        } else if let Some(id) = name.strip_suffix(".msg") {
            msgs.insert(id.to_string());
        } else {
            // Interrupted envelope rewrites (`.env.tmp`) and strays: the `.env` beside
            // them is the committed state.
            let _ = fs::remove_file(&path);
        }
    }
    let mut loaded = 0;
    for (id, path) in envs {
        let decoded = fs::read(&path)
            .map_err(|e| io_error(&path, e))
            .and_then(|b| format::decode(&path, &b));
        match decoded {
            Ok(env) if msgs.contains(&id) && env.msgid.to_string() == id => {
                msgs.remove(&id);
                for r in &env.rcpts {
                    st.due.insert((r.next_try, r.evpid));
                }
                st.messages.insert(
                    env.msgid,
                    Box::new(Entry {
                        env,
                        write_lock: Arc::default(),
                        body: None,
                        on_disk: true,
                    }),
                );
                loaded += 1;
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "message file missing or misnamed".into(),
                };
                tracing::error!("queue: moving {} to corrupt/: {why}", path.display());
                let _ = fs::rename(&path, corrupt.join(format!("{id}.env")));
                if msgs.remove(&id) {
                    let _ = fs::rename(
                        queue_dir.join(format!("{id}.msg")),
                        corrupt.join(format!("{id}.msg")),
                    );
                }
            }
        }
    }
    // Message files without an envelope never got their 250.
    for id in msgs {
        let _ = fs::remove_file(queue_dir.join(format!("{id}.msg")));
    }
    fsync_dir(incoming)?;
    fsync_dir(queue_dir)?;
    if discarded > 0 || loaded > 0 {
        tracing::info!(
            "queue: recovered {loaded} messages, discarded {discarded} incomplete files"
        );
    }
    Ok(())
}
