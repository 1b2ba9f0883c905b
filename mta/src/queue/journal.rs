//! The commit journal: one file, `commit.log` in the spool directory, written from the
//! top, that makes a batch of messages durable with one `fdatasync`.
//!
//! Each committed message is appended whole (envelope text and encoded message bytes)
//! as a `C` record; the batch is written with one positioned write and covered by one
//! `fdatasync`, and only then does any session in the batch get its 250. The message's
//! own files in `queue/`, when it has any yet (see the queue's docs: small messages are
//! held only here), are written and renamed without fsync: they are the working copy. A
//! `D` record (appended without fsync) says a message left the queue, so a restart does
//! not deliver it again. A checkpoint writes the files a live message lacks from its
//! record before it empties the journal.
//!
//! The journal is emptied (a new epoch, below) when no message it holds is still queued
//! and it has passed [`TRUNCATE_BYTES`], and checkpointed when it grows past
//! [`CHECKPOINT_BYTES`]: the files of the messages it still holds are fsynced, then
//! `queue/`, then the journal is emptied. Mail that is relayed within seconds is
//! therefore never fsynced file by file.
//!
//! The file's space is written before it is needed. Appending to a file changes its
//! size, and an `fdatasync` after a size change commits the file system's journal as
//! well as the data; over space that already holds written zeros it only writes the data
//! and flushes the disk (about a third less time per round on ext4). So the journal
//! grows in [`GROW_BYTES`] steps of zeros, and emptying it does not shorten the file: it
//! starts a new *epoch* and writes again from the top. Every record's checksum covers
//! the epoch, so the records of earlier epochs that still lie further down no longer
//! read as records.
//!
//! File layout (little endian): [`MAGIC`], the epoch `u64`, then records. A record:
//! kind `u8` (`C` or `D`), msgid `u32`, envelope length `u32`, message length `u64`,
//! envelope bytes, message bytes, and a checksum `u64`: the CRC-32 of the epoch and
//! everything before it in the record. Reading stops at the first record that is short
//! or fails its checksum: a torn tail is a batch whose fdatasync never returned, so no
//! session was told 250 for it; zeros and the records of an earlier epoch end it too.
//! A journal without the header was written by fugu before 2026-11 (records as above
//! without the epoch, checksummed with FNV-1a 64); it is still read on start.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{MsgId, format, fsync_dir, io_error};
use crate::error::Error;

/// The journal is checkpointed (its messages' files fsynced, then emptied) past this.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// A journal whose messages have all left the queue is emptied only once it is this
/// long: at a few messages in flight it would empty after nearly every round, and a new
/// epoch's header costs a write. The `D` records already cover what the journal holds
/// meanwhile.
pub const TRUNCATE_BYTES: u64 = 4 * 1024 * 1024;

const HEADER: usize = 1 + 4 + 4 + 8;
const SUM: usize = 8;

/// The first bytes of a journal file with epochs.
pub const MAGIC: &[u8; 8] = b"fuguJ02\n";
/// [`MAGIC`] and the epoch.
const FILE_HEADER: usize = 8 + 8;

/// The journal's file grows by this much written space at a time.
pub const GROW_BYTES: u64 = 1024 * 1024;

/// Written space beyond this is given back when the journal empties (after a burst or a
/// checkpoint grew it): shortening a file costs about what a round's fdatasync does.
const KEEP_BYTES: u64 = 2 * TRUNCATE_BYTES;

/// What grows the file: reads of it map the zero page, so it takes no memory.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The write buffer kept between rounds.
const PENDING_KEEP: usize = 256 * 1024;

/// Free space a commit round must leave on the spool's file system.
pub const SPARE_BYTES: u64 = 64 * 1024;

/// The journal's file name inside the spool directory.
pub const FILE_NAME: &str = "commit.log";

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A committed message: its envelope text and message file bytes (as stored).
    Commit {
        msgid: MsgId,
        env: Vec<u8>,
        msg: Vec<u8>,
    },
    /// The message left the queue (delivered, bounced or removed).
    Done(MsgId),
}

/// Which records a file holds: those of one epoch, or (before epochs) FNV-summed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sum {
    Epoch(u64),
    Legacy,
}

impl Sum {
    fn of(self, record: &[u8]) -> u64 {
        match self {
            Sum::Epoch(epoch) => {
                let mut h = crc32fast::Hasher::new();
                h.update(&epoch.to_le_bytes());
                h.update(record);
                u64::from(h.finalize())
            }
            Sum::Legacy => {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in record {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
                h
            }
        }
    }
}

/// The file header of a journal in `epoch`.
pub fn header(epoch: u64) -> [u8; FILE_HEADER] {
    let mut h = [0; FILE_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&epoch.to_le_bytes());
    h
}

/// Appends one record of a journal in `epoch` to `out`.
pub fn encode(out: &mut Vec<u8>, epoch: u64, rec: &Record) {
    encode_in(out, Sum::Epoch(epoch), rec);
}

fn encode_in(out: &mut Vec<u8>, sum: Sum, rec: &Record) {
    let (kind, msgid, env, msg): (u8, MsgId, &[u8], &[u8]) = match rec {
        Record::Commit { msgid, env, msg } => (b'C', *msgid, env, msg),
        Record::Done(msgid) => (b'D', *msgid, &[], &[]),
    };
    encode_parts(out, sum, kind, msgid, env, msg);
}

fn encode_parts(out: &mut Vec<u8>, sum: Sum, kind: u8, msgid: MsgId, env: &[u8], msg: &[u8]) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&msgid.0.to_le_bytes());
    out.extend_from_slice(&u32::try_from(env.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&(msg.len() as u64).to_le_bytes());
    out.extend_from_slice(env);
    out.extend_from_slice(msg);
    let sum = sum.of(&out[start..]);
    out.extend_from_slice(&sum.to_le_bytes());
}

/// Every whole record of a journal file, and where the last one ends; whatever follows
/// (a torn or garbled tail, zeros, an earlier epoch) is ignored.
pub fn decode(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut out = Vec::new();
    let mut end = 0;
    for (rec, at) in records(bytes) {
        out.push(rec);
        end = at;
    }
    if out.is_empty() && bytes.starts_with(MAGIC) {
        end = FILE_HEADER.min(bytes.len());
    }
    (out, end)
}

/// The whole records of a journal file, each with the offset where it ends.
pub fn records(bytes: &[u8]) -> impl Iterator<Item = (Record, usize)> + '_ {
    let (sum, mut at) = match bytes.strip_prefix(MAGIC) {
        Some(rest) => match rest.get(..8) {
            Some(e) => (
                Some(Sum::Epoch(u64::from_le_bytes(
                    e.try_into().unwrap_or_default(),
                ))),
                FILE_HEADER,
            ),
            None => (None, 0),
        },
        None => (Some(Sum::Legacy), 0),
    };
    std::iter::from_fn(move || {
        let (rec, len) = decode_one(&bytes[at..], sum?)?;
        at += len;
        Some((rec, at))
    })
}

fn decode_one(b: &[u8], sum: Sum) -> Option<(Record, usize)> {
    let head = b.get(..HEADER)?;
    let kind = head[0];
    let msgid = MsgId(u32::from_le_bytes(head[1..5].try_into().ok()?));
    let env_len = usize::try_from(u32::from_le_bytes(head[5..9].try_into().ok()?)).ok()?;
    let msg_len = usize::try_from(u64::from_le_bytes(head[9..17].try_into().ok()?)).ok()?;
    let body_end = HEADER.checked_add(env_len)?.checked_add(msg_len)?;
    let end = body_end.checked_add(SUM)?;
    let rec = b.get(..end)?;
    let stored = u64::from_le_bytes(rec[body_end..].try_into().ok()?);
    if sum.of(&rec[..body_end]) != stored {
        return None;
    }
    let env = &rec[HEADER..HEADER + env_len];
    let msg = &rec[HEADER + env_len..body_end];
    let r = match kind {
        b'C' => Record::Commit {
            msgid,
            env: env.to_vec(),
            msg: msg.to_vec(),
        },
        b'D' if env.is_empty() && msg.is_empty() => Record::Done(msgid),
        _ => return None,
    };
    Some((r, end))
}

/// A `C` record's envelope and message bytes.
type EnvAndMsg = (Vec<u8>, Vec<u8>);

/// Where a committed message's bytes lie in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    generation: u64,
    offset: u64,
    len: usize,
}

/// The journal as the queue reads it: a small message's bytes are read back from its
/// record for each delivery attempt instead of being held in memory (they are in the
/// page cache, just written). Every truncation starts a new generation; a span of an
/// older one is gone, and its message's file (which a checkpoint wrote before
/// truncating) is read instead.
#[derive(Debug)]
pub(crate) struct Reader {
    file: File,
    generation: RwLock<u64>,
}

impl Reader {
    /// The bytes of `span`, or `None` when the journal was truncated since.
    pub(crate) fn read(&self, span: Span) -> std::io::Result<Option<Vec<u8>>> {
        let generation = self.generation.read().unwrap_or_else(|p| p.into_inner());
        if *generation != span.generation {
            return Ok(None);
        }
        let mut bytes = vec![0; span.len];
        self.file.read_exact_at(&mut bytes, span.offset)?;
        Ok(Some(bytes))
    }
}

/// The open journal, owned by the committer thread.
pub(super) struct Journal {
    file: File,
    reader: Arc<Reader>,
    path: PathBuf,
    queue_dir: PathBuf,
    /// The current epoch (also the reader's generation of spans).
    epoch: u64,
    /// Where the next record goes.
    len: u64,
    /// The file's length: everything before it is written (records or zeros).
    written: u64,
    /// Messages whose only fsynced copy is in the journal.
    live: HashSet<MsgId>,
    /// Messages held only here whose files a checkpoint wrote: their `D` record also
    /// removes the files (the queue thinks they have none).
    materialized: HashSet<MsgId>,
    /// Records waiting for the next write.
    pending: Vec<u8>,
    /// Where the first `C` record in `pending` starts (the `D` records before it are
    /// written even when the round is refused).
    first_commit: Option<usize>,
    /// [`TRUNCATE_BYTES`], lowered by tests.
    truncate_at: u64,
}

impl Journal {
    /// Opens the journal of a spool whose [`recover`] already ran (it is empty then).
    /// The header of its first epoch is written now and synced by the first round.
    pub(super) fn open(spool: &Path, queue_dir: &Path) -> Result<Journal, Error> {
        let path = spool.join(FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let written = file.metadata().map_err(|e| io_error(&path, e))?.len();
        let reader = Arc::new(Reader {
            file: File::open(&path).map_err(|e| io_error(&path, e))?,
            generation: RwLock::new(0),
        });
        let mut j = Journal {
            file,
            reader,
            path,
            queue_dir: queue_dir.to_path_buf(),
            epoch: 0,
            len: 0,
            written,
            live: HashSet::new(),
            materialized: HashSet::new(),
            pending: Vec::new(),
            first_commit: None,
            truncate_at: TRUNCATE_BYTES,
        };
        j.new_epoch()?;
        Ok(j)
    }

    /// The queue's handle for reading records back.
    pub(super) fn reader(&self) -> Arc<Reader> {
        self.reader.clone()
    }

    /// Queues a `C` record for `msgid`; the span is readable once the next
    /// [`flush`](Journal::flush) returned.
    pub(super) fn add_commit(&mut self, msgid: MsgId, env: &[u8], msg: &[u8]) -> Span {
        let offset = self.len + (self.pending.len() + HEADER + env.len()) as u64;
        self.first_commit.get_or_insert(self.pending.len());
        encode_parts(
            &mut self.pending,
            Sum::Epoch(self.epoch),
            b'C',
            msgid,
            env,
            msg,
        );
        self.live.insert(msgid);
        Span {
            generation: self.epoch,
            offset,
            len: msg.len(),
        }
    }

    /// Empties the journal: the records of the epoch that ends are no longer read, nor
    /// are spans into them. The new header is written now and made durable by the next
    /// round; until then a restart reads the old epoch, whose messages all left the
    /// queue (or, after a checkpoint, have their files). When the header cannot be
    /// written, nothing changes: records keep going into the old epoch.
    fn new_epoch(&mut self) -> Result<(), Error> {
        let epoch = self.epoch + 1;
        self.file
            .write_all_at(&header(epoch), 0)
            .map_err(|e| io_error(&self.path, e))?;
        // Old spans stay readable until here: only the header was overwritten.
        *self
            .reader
            .generation
            .write()
            .unwrap_or_else(|p| p.into_inner()) = epoch;
        self.epoch = epoch;
        self.len = FILE_HEADER as u64;
        // Giving space back is optional: on failure the file just stays longer.
        if self.written > KEEP_BYTES && self.file.set_len(TRUNCATE_BYTES).is_ok() {
            self.written = TRUNCATE_BYTES;
        }
        self.written = self.written.max(self.len);
        Ok(())
    }

    /// Forgets a message that left the queue; a `D` record rides on the next write.
    pub(super) fn add_done(&mut self, msgid: MsgId) {
        if self.live.remove(&msgid) {
            encode_parts(
                &mut self.pending,
                Sum::Epoch(self.epoch),
                b'D',
                msgid,
                &[],
                &[],
            );
        }
        if self.materialized.remove(&msgid) {
            super::remove_queued(&self.queue_dir, msgid);
        }
    }

    /// Writes what is pending; with `sync`, returns only once it is on stable storage.
    /// A commit round is refused (its records dropped, `SpoolFull`) when the file system
    /// would keep less than [`SPARE_BYTES`] after it: mail accepted then could not get
    /// its own files, nor could deliveries rewrite envelopes.
    pub(super) fn flush(&mut self, sync: bool) -> Result<(), Error> {
        let end = self.len + self.pending.len() as u64;
        let free = if (sync && !self.pending.is_empty()) || end > self.written {
            self.free_space()
        } else {
            None
        };
        let room = |bytes: u64| free.is_none_or(|f| f >= bytes + SPARE_BYTES);
        // Past the written space the file grows by a whole step of zeros, written with
        // the records and covered by the same fdatasync; on a disk without room for the
        // step, by the records only.
        let grow_to = if end <= self.written {
            self.written
        } else {
            let step = end.div_ceil(GROW_BYTES) * GROW_BYTES;
            if room(step - self.written) { step } else { end }
        };
        if sync && !self.pending.is_empty() && !room(grow_to - self.written) {
            let keep = self.first_commit.take().unwrap_or(self.pending.len());
            self.pending.truncate(keep);
            let _ = self.flush(false);
            return Err(io_error(
                &self.path,
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            ));
        }
        if self.live.is_empty() && !sync && end >= self.truncate_at {
            // Nothing in the journal is needed any more: start it afresh.
            self.pending.clear();
            self.first_commit = None;
            return self.new_epoch();
        }
        if !self.pending.is_empty() {
            let r = self
                .file
                .write_all_at(&self.pending, self.len)
                .and_then(|()| self.write_zeros(end, grow_to));
            self.pending.clear();
            self.first_commit = None;
            // A round for a thousand sessions is megabytes; do not keep that around.
            if self.pending.capacity() > PENDING_KEEP {
                self.pending = Vec::new();
            }
            // A short write leaves a torn record that recovery stops at; the next round
            // writes over it.
            r.map_err(|e| io_error(&self.path, e))?;
            self.len = end;
            self.written = self.written.max(grow_to);
        }
        if sync {
            self.file.sync_data().map_err(|e| io_error(&self.path, e))?;
        }
        Ok(())
    }

    fn write_zeros(&self, mut from: u64, to: u64) -> std::io::Result<()> {
        from = from.max(self.written);
        while from < to {
            let n = (to - from).min(ZEROS.len() as u64);
            self.file.write_all_at(&ZEROS[..n as usize], from)?;
            from += n;
        }
        Ok(())
    }

    /// Free bytes on the spool's file system, when it says.
    fn free_space(&self) -> Option<u64> {
        let st = rustix::fs::fstatvfs(&self.file).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Past [`CHECKPOINT_BYTES`]: fsyncs the queued files of the messages the journal
    /// still holds, then `queue/`, then empties the journal.
    pub(super) fn maybe_checkpoint(&mut self) -> Result<(), Error> {
        if self.len < CHECKPOINT_BYTES {
            return Ok(());
        }
        self.checkpoint()
    }

    fn checkpoint(&mut self) -> Result<(), Error> {
        // Messages held only here have no files yet (or half of them, while the queue
        // writes them for an envelope rewrite): what is missing is written from the
        // journal's record. A message removed meanwhile gets files back too; its `D`
        // record, still on its way, removes them (`materialized`).
        let mut records: Option<HashMap<MsgId, EnvAndMsg>> = None;
        for id in &self.live {
            for ext in ["msg", "env"] {
                let p = self.queue_dir.join(format!("{id}.{ext}"));
                let f = match File::open(&p) {
                    Ok(f) => f,
                    Err(_) => {
                        if records.is_none() {
                            let mut bytes = Vec::new();
                            File::open(&self.path)
                                .and_then(|mut f| f.read_to_end(&mut bytes))
                                .map_err(|e| io_error(&self.path, e))?;
                            let mut m = HashMap::new();
                            for r in decode(&bytes).0 {
                                if let Record::Commit { msgid, env, msg } = r {
                                    m.insert(msgid, (env, msg));
                                }
                            }
                            records = Some(m);
                        }
                        let Some((env, msg)) = records.as_ref().and_then(|m| m.get(id)) else {
                            continue;
                        };
                        let bytes = if ext == "msg" { msg } else { env };
                        match OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&p)
                        {
                            Ok(mut f) => {
                                f.write_all(bytes).map_err(|e| io_error(&p, e))?;
                                self.materialized.insert(*id);
                                f
                            }
                            // Written meanwhile by the queue, whole (it renames into place).
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                                File::open(&p).map_err(|e| io_error(&p, e))?
                            }
                            Err(e) => return Err(io_error(&p, e)),
                        }
                    }
                };
                f.sync_all().map_err(|e| io_error(&p, e))?;
            }
        }
        fsync_dir(&self.queue_dir)?;
        self.new_epoch()?;
        self.file.sync_all().map_err(|e| io_error(&self.path, e))?;
        self.live.clear();
        Ok(())
    }
}

/// On start, before `queue/` is scanned: restores every message the journal holds and
/// that did not leave the queue, fsyncs the restored files and `queue/`, then empties the
/// journal. The message file is always rewritten from the journal (the queued copy may
/// be torn); the queued envelope is kept when it is whole and newer (a rewrite after a
/// delivery attempt is fsynced before its rename), i.e. when it decodes and is not a
/// strict prefix of the journal's.
pub(super) fn recover(spool: &Path, queue_dir: &Path) -> Result<usize, Error> {
    let path = spool.join(FILE_NAME);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes).map_err(|e| io_error(&path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io_error(&path, e))?;
            f.sync_all().map_err(|e| io_error(&path, e))?;
            fsync_dir(spool)?;
            return Ok(0);
        }
        Err(e) => return Err(io_error(&path, e)),
    }
    let (records, _) = decode(&bytes);
    let mut live: HashMap<MsgId, (Vec<u8>, Vec<u8>)> = HashMap::new();
    for r in records {
        match r {
            Record::Commit { msgid, env, msg } => {
                live.insert(msgid, (env, msg));
            }
            Record::Done(msgid) => {
                live.remove(&msgid);
            }
        }
    }
    let restored = live.len();
    for (msgid, (env, msg)) in &live {
        let env_path = super::env_file(queue_dir, *msgid);
        let msg_path = super::msg_file(queue_dir, *msgid);
        write_synced(&msg_path, msg)?;
        let keep = fs::read(&env_path).is_ok_and(|disk| {
            !(disk.len() < env.len() && env.starts_with(&disk))
                && format::decode(&env_path, &disk).is_ok()
        });
        if keep {
            File::open(&env_path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_error(&env_path, e))?;
        } else {
            write_synced(&env_path, env)?;
        }
    }
    if restored > 0 {
        fsync_dir(queue_dir)?;
        tracing::info!("queue: restored {restored} messages from the commit journal");
    }
    let f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    f.set_len(0)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error(&path, e))?;
    Ok(restored)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(id: u32, env: &str, msg: &str) -> Record {
        Record::Commit {
            msgid: MsgId(id),
            env: env.as_bytes().to_vec(),
            msg: msg.as_bytes().to_vec(),
        }
    }

    /// A journal file in `epoch` holding `recs`.
    fn file(epoch: u64, recs: &[Record]) -> Vec<u8> {
        let mut buf = header(epoch).to_vec();
        for r in recs {
            encode(&mut buf, epoch, r);
        }
        buf
    }

    #[test]
    fn records_read_back_as_written() {
        let recs = vec![
            commit(1, "version: 1\n", "Subject: a\r\n\r\nx\r\n"),
            Record::Done(MsgId(1)),
            commit(2, "e", ""),
        ];
        let buf = file(7, &recs);
        assert_eq!(decode(&buf), (recs, buf.len()));
    }

    #[test]
    fn a_journal_written_before_epochs_still_reads() {
        let recs = vec![commit(1, "env", "message"), Record::Done(MsgId(1))];
        let mut buf = Vec::new();
        for r in &recs {
            encode_in(&mut buf, Sum::Legacy, r);
        }
        assert_eq!(decode(&buf), (recs, buf.len()));
    }

    #[test]
    fn records_of_an_earlier_epoch_further_down_are_not_read() {
        // Epoch 3 wrote two records; epoch 4 wrote one over the top, of the same size, so
        // the old second record starts exactly where the new one ends.
        let old = file(3, &[commit(1, "env", "one"), commit(2, "env", "two")]);
        let mut new = file(4, &[commit(9, "env", "new")]);
        let whole = new.len();
        new.extend_from_slice(&old[whole..]);
        assert_eq!(new.len(), old.len());
        assert_eq!(decode(&new), (vec![commit(9, "env", "new")], whole));
        // And zeros past the records, as the file grows, end it too.
        let mut grown = file(4, &[commit(9, "env", "new")]);
        grown.resize(whole + 4096, 0);
        assert_eq!(decode(&grown), (vec![commit(9, "env", "new")], whole));
    }

    #[test]
    fn a_torn_tail_is_ignored_at_every_cut() {
        let mut buf = file(1, &[commit(1, "env one", "message one")]);
        let whole = buf.len();
        encode(&mut buf, 1, &commit(2, "env two", "message two"));
        for cut in whole..buf.len() {
            let (recs, len) = decode(&buf[..cut]);
            assert_eq!(recs, vec![commit(1, "env one", "message one")], "cut {cut}");
            assert_eq!(len, whole);
        }
    }

    #[test]
    fn a_flipped_byte_ends_the_journal_there() {
        let mut buf = file(1, &[commit(1, "env one", "message one")]);
        let whole = buf.len();
        encode(&mut buf, 1, &commit(2, "env two", "message two"));
        encode(&mut buf, 1, &commit(3, "env three", "message three"));
        buf[whole + HEADER + 2] ^= 0x20;
        let (recs, len) = decode(&buf);
        assert_eq!(recs.len(), 1);
        assert_eq!(len, whole);
        // Zeros, as a crash may leave past the last commit, are no record either.
        assert_eq!(decode(&[0u8; 64]), (vec![], 0));
    }

    fn spool() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let qd = dir.path().join("queue");
        fs::create_dir(&qd).unwrap();
        (dir, qd)
    }

    /// A journal opened as the queue opens it: recovered (empty) first.
    fn opened() -> (tempfile::TempDir, PathBuf, Journal) {
        let (dir, qd) = spool();
        recover(dir.path(), &qd).unwrap();
        let j = Journal::open(dir.path(), &qd).unwrap();
        (dir, qd, j)
    }

    fn env_text(id: u32, rcpts: usize) -> String {
        let mut s = format!(
            "version: 1\nmsgid: {:08x}\nctime: 1\nexpire: 2\nmessage: plain\nsession: 0000000000000001\norigin: local\nhelo: localhost\nprotocol: ESMTP\nsender: a@example.org\nbody: 7bit\nsmtputf8: no\n",
            id
        );
        for i in 0..rcpts {
            s.push_str(&format!(
                "\nrcpt: {:08x}{:08x}\naddress: r{i}@example.net\naction: relay\nstate: pending\nretry: 0\nlast-try: 0\nnext-try: 1\n",
                id,
                i + 1
            ));
        }
        s
    }

    #[test]
    fn recovery_restores_live_messages_and_skips_done_ones() {
        let (dir, qd) = spool();
        let e1 = env_text(0x11, 2);
        format::decode(Path::new("t"), e1.as_bytes()).unwrap();
        let mut buf = file(
            5,
            &[
                commit(0x11, &e1, "body one"),
                commit(0x22, &env_text(0x22, 1), "body two"),
                Record::Done(MsgId(0x22)),
            ],
        );
        buf.extend_from_slice(b"C\x33\0\0"); // a batch cut short by the crash
        buf.resize(buf.len() + 1000, 0); // the written space past it
        fs::write(dir.path().join(FILE_NAME), &buf).unwrap();
        // The crash left the queued copies torn: an empty message, half an envelope.
        fs::write(qd.join("00000011.msg"), b"").unwrap();
        fs::write(qd.join("00000011.env"), &e1.as_bytes()[..40]).unwrap();

        assert_eq!(recover(dir.path(), &qd).unwrap(), 1);
        assert_eq!(fs::read(qd.join("00000011.msg")).unwrap(), b"body one");
        assert_eq!(fs::read_to_string(qd.join("00000011.env")).unwrap(), e1);
        assert!(!qd.join("00000022.env").exists());
        assert_eq!(fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(), 0);
    }

    #[test]
    fn recovery_keeps_an_envelope_rewritten_after_the_commit() {
        let (dir, qd) = spool();
        let buf = file(1, &[commit(0x11, &env_text(0x11, 2), "body")]);
        fs::write(dir.path().join(FILE_NAME), &buf).unwrap();
        // One of two recipients was delivered and the envelope rewritten (fsynced).
        let newer = env_text(0x11, 1).replace("r0@", "r1@");
        fs::write(qd.join("00000011.env"), &newer).unwrap();

        recover(dir.path(), &qd).unwrap();
        assert_eq!(fs::read_to_string(qd.join("00000011.env")).unwrap(), newer);
        assert_eq!(fs::read(qd.join("00000011.msg")).unwrap(), b"body");
    }

    #[test]
    fn a_checkpoint_writes_the_files_of_messages_held_only_in_the_journal() {
        let (dir, qd, mut j) = opened();
        let reader = j.reader();
        let (e1, e2) = (env_text(0x11, 1), env_text(0x22, 1));
        let held = j.add_commit(MsgId(0x11), e1.as_bytes(), b"held in the journal");
        // This one's files were written for an envelope rewrite, the newer envelope.
        j.add_commit(MsgId(0x22), e2.as_bytes(), b"on disk");
        j.flush(true).unwrap();
        fs::write(qd.join("00000022.msg"), b"on disk").unwrap();
        fs::write(qd.join("00000022.env"), "newer").unwrap();
        assert_eq!(
            reader.read(held).unwrap().as_deref(),
            Some(&b"held in the journal"[..])
        );

        j.checkpoint().unwrap();
        assert_eq!(
            fs::read(qd.join("00000011.msg")).unwrap(),
            b"held in the journal"
        );
        // The record is gone: its reader is sent to the file.
        assert_eq!(reader.read(held).unwrap(), None);
        assert_eq!(fs::read_to_string(qd.join("00000011.env")).unwrap(), e1);
        assert_eq!(
            fs::read_to_string(qd.join("00000022.env")).unwrap(),
            "newer"
        );
        let (recs, _) = decode(&fs::read(dir.path().join(FILE_NAME)).unwrap());
        assert_eq!(recs, vec![]);

        // The queue does not know the checkpoint wrote them: the `D` record removes them.
        j.add_done(MsgId(0x11));
        assert!(!qd.join("00000011.msg").exists());
        assert!(!qd.join("00000011.env").exists());
        j.add_done(MsgId(0x22));
        assert!(qd.join("00000022.env").exists());
    }

    #[test]
    fn the_journal_empties_when_nothing_it_holds_is_queued() {
        let (dir, _, mut j) = opened();
        let path = dir.path().join(FILE_NAME);
        let first = FILE_HEADER as u64 + 2 * (HEADER + 2 + SUM) as u64;
        j.truncate_at = first + (HEADER + SUM) as u64 * 2 + 1;
        j.add_commit(MsgId(1), b"e", b"m");
        j.add_commit(MsgId(2), b"e", b"m");
        j.flush(true).unwrap();
        // The file grew by a whole step of written space, not by the records' length.
        assert_eq!(fs::metadata(&path).unwrap().len(), GROW_BYTES);
        j.add_done(MsgId(1));
        j.flush(false).unwrap();
        let (recs, _) = decode(&fs::read(dir.path().join(FILE_NAME)).unwrap());
        assert_eq!(recs.len(), 3);
        // Empty but short: the `D` record is written, the file is kept.
        j.add_done(MsgId(2));
        j.flush(false).unwrap();
        let (recs, _) = decode(&fs::read(dir.path().join(FILE_NAME)).unwrap());
        assert_eq!(recs.len(), 4);
        // Empty and past the threshold: truncated.
        let third = j.add_commit(MsgId(3), b"e", b"m3");
        j.flush(true).unwrap();
        assert_eq!(j.reader().read(third).unwrap().as_deref(), Some(&b"m3"[..]));
        j.add_done(MsgId(3));
        j.flush(false).unwrap();
        let (recs, _) = decode(&fs::read(&path).unwrap());
        assert_eq!(recs, vec![]);
        // The space stays written for the next epoch.
        assert_eq!(fs::metadata(&path).unwrap().len(), GROW_BYTES);
        assert_eq!(j.reader().read(third).unwrap(), None);
        // Records written since do not bring the old span back.
        let fourth = j.add_commit(MsgId(4), b"e", b"m4");
        j.flush(true).unwrap();
        assert_eq!(j.reader().read(third).unwrap(), None);
        assert_eq!(
            j.reader().read(fourth).unwrap().as_deref(),
            Some(&b"m4"[..])
        );
        let (recs, _) = decode(&fs::read(&path).unwrap());
        assert_eq!(recs, vec![commit(4, "e", "m4")]);
    }

    #[test]
    fn a_round_past_the_written_space_grows_it_and_an_empty_journal_gives_a_burst_back() {
        let (dir, _, mut j) = opened();
        let path = dir.path().join(FILE_NAME);
        let big = vec![b'x'; (KEEP_BYTES + GROW_BYTES / 2) as usize];
        j.add_commit(MsgId(1), b"e", &big);
        j.flush(true).unwrap();
        let len = fs::metadata(&path).unwrap().len();
        assert_eq!(len, KEEP_BYTES + GROW_BYTES);
        let (recs, _) = decode(&fs::read(&path).unwrap());
        assert_eq!(recs.len(), 1);
        j.add_done(MsgId(1));
        j.flush(false).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), TRUNCATE_BYTES);
        let (recs, _) = decode(&fs::read(&path).unwrap());
        assert_eq!(recs, vec![]);
    }
}
