//! DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030): opening the message in the queue,
//! streaming it with our Received header first, SIZE enforced while streaming
//! (RFC 1870: 552 5.3.4), and the final 250 only once the queue has committed.

use super::framing::{Framer, HeaderMeter};
use super::received::{ReceivedInfo, received_header};
use super::submission::{HeaderFixup, message_id};
use super::{Action, BareNewline, Message, Mode, Session, Wait, reply};
use crate::clock::rfc5322_date;
use crate::clock::unix_seconds;
use crate::envelope::Origin;

impl Session {
    pub(super) fn data(&mut self, args: Option<&str>) {
        if self.refuse_args(args) {
            return;
        }
        let Some(tx) = self.tx.as_ref() else {
            return self.reply(reply::no_mail_from());
        };
        if tx.message.is_some() {
            return self.reply(reply::data_after_bdat());
        }
        if tx.recipients.is_empty() {
            return self.reply(reply::no_recipients());
        }
        self.begin_message(false);
        self.out.push_back(Action::Reply(reply::start_mail_input()));
        self.mode = Mode::Data;
    }

    pub(super) fn bdat(&mut self, args: Option<&str>) {
        let Some((size, last)) = args.and_then(parse_bdat) else {
            // The chunk length is unknown, so the rest of the stream cannot be framed.
            self.reply(reply::bdat_syntax());
            if !self.closed {
                self.abort_message();
                self.out.push_back(Action::Close);
                self.log("smtp disconnected reason=bad-bdat".into());
                self.closed = true;
            }
            return;
        };
        let refusal = match self.tx.as_ref() {
            None => Some(reply::no_mail_from()),
            Some(tx) if tx.recipients.is_empty() => Some(reply::no_recipients()),
            Some(_) => None,
        };
        if let Some(r) = refusal {
            // RFC 3030 §2: the chunk is read and thrown away, then refused.
            if size == 0 {
                self.reply(r);
            } else {
                self.mode = Mode::BdatDiscard {
                    remaining: size,
                    reply: Box::new(r),
                };
            }
            return;
        }
        if self.tx.as_ref().is_some_and(|t| t.message.is_none()) {
            self.begin_message(true);
        }
        let max = self.cfg.max_message_size;
        if let Some(msg) = self.tx.as_mut().and_then(|t| t.message.as_mut())
            && msg.error.is_none()
            && msg.size.saturating_add(size) > max
        {
            msg.error = Some(reply::message_too_big());
        }
        self.mode = Mode::Bdat {
            remaining: size,
            last,
            size,
        };
        if size == 0 {
            self.bdat_chunk_done(last, 0);
        }
    }

    fn begin_message(&mut self, bdat: bool) {
        let Some(tx) = self.tx.as_ref() else { return };
        let envelope = self.envelope(tx);
        let single = (tx.recipients.len() == 1).then(|| tx.recipients[0].address.clone());
        let protocol = self.protocol();
        let helo = self
            .helo
            .as_ref()
            .map(|h| h.name.clone())
            .unwrap_or_default();
        let header = received_header(&ReceivedInfo {
            helo: &helo,
            rdns: self.peer.rdns.as_deref(),
            origin: &self.peer.origin,
            hostname: &self.cfg.hostname,
            protocol,
            tls: self.tls.as_deref(),
            received_auth: self.cfg.received_auth.then_some(self.auth_user.as_deref()),
            single_rcpt: single.as_deref(),
            mask_src: self.cfg.mask_src,
            now: self.clock.now(),
        });
        self.out.push_back(Action::MessageBegin(Box::new(envelope)));
        let written = header.len() as u64;
        self.out
            .push_back(Action::MessageChunk(header.into_bytes()));
        // RFC 6409 §8.2, §8.3: only submitted mail is completed, never relayed mail.
        let submitted = self.auth_user.is_some() || self.peer.origin == Origin::Local;
        let fixup = submitted.then(|| {
            HeaderFixup::new(
                rfc5322_date(self.clock.now()),
                message_id(
                    unix_seconds(self.clock.now()),
                    self.peer.session_id,
                    self.mails + 1,
                    &self.cfg.hostname,
                ),
            )
        });
        if let Some(tx) = self.tx.as_mut() {
            tx.message = Some(Box::new(Message {
                framer: Framer::new(!bdat, self.cfg.max_data_line),
                headers: HeaderMeter::new(self.cfg.max_header_size, self.cfg.max_header_field),
                size: 0,
                written,
                error: None,
                bdat,
                fixup,
            }));
        }
    }

    /// DATA body bytes; returns how many were consumed.
    pub(super) fn data_input(&mut self, input: &[u8]) -> usize {
        let max = self.cfg.max_message_size;
        let Some(msg) = self.tx.as_mut().and_then(|t| t.message.as_mut()) else {
            self.mode = Mode::Command;
            return 0;
        };
        // Framing only adds a CR to a bare LF, or keeps a dot: rarely more than the input.
        let mut chunk = Vec::with_capacity(input.len() + 2);
        let (n, end) = msg.framer.feed(input, &mut chunk);
        msg.size += n as u64;
        msg.check_limits(&chunk, max);
        if msg.error.is_none() {
            let mut chunk = msg.fix(chunk);
            if end {
                msg.fix_end(&mut chunk);
            }
            if !chunk.is_empty() {
                msg.written += chunk.len() as u64;
                self.out.push_back(Action::MessageChunk(chunk));
            }
        }
        if end {
            self.end_of_message();
        }
        n
    }

    /// BDAT chunk bytes (or a refused chunk being swallowed).
    pub(super) fn bdat_input(&mut self, input: &[u8]) -> usize {
        match &mut self.mode {
            Mode::BdatDiscard { remaining, reply } => {
                let n = (*remaining).min(input.len() as u64);
                *remaining -= n;
                if *remaining == 0 {
                    let r = reply::Reply::clone(reply);
                    self.mode = Mode::Command;
                    self.reply(r);
                }
                n as usize
            }
            Mode::Bdat {
                remaining,
                last,
                size,
            } => {
                let n = (*remaining).min(input.len() as u64);
                *remaining -= n;
                let (done, last, size) = (*remaining == 0, *last, *size);
                let max = self.cfg.max_message_size;
                if let Some(msg) = self.tx.as_mut().and_then(|t| t.message.as_mut()) {
                    let mut chunk = Vec::with_capacity(n as usize + 2);
                    msg.framer.feed(&input[..n as usize], &mut chunk);
                    msg.size += n;
                    msg.check_limits(&chunk, max);
                    let chunk = msg.fix(chunk);
                    if msg.error.is_none() && !chunk.is_empty() {
                        msg.written += chunk.len() as u64;
                        self.out.push_back(Action::MessageChunk(chunk));
                    }
                }
                if done {
                    self.bdat_chunk_done(last, size);
                }
                n as usize
            }
            _ => 0,
        }
    }

    fn bdat_chunk_done(&mut self, last: bool, size: u64) {
        self.mode = Mode::Command;
        let failed = self
            .tx
            .as_ref()
            .and_then(|t| t.message.as_ref())
            .is_some_and(|m| m.error.is_some());
        if failed {
            // RFC 3030 §2: after a failed chunk the transaction is over.
            let r = self
                .tx
                .take()
                .and_then(|t| t.message)
                .and_then(|m| m.error)
                .unwrap_or_else(reply::message_too_big);
            self.out.push_back(Action::MessageAbort);
            return self.reply(r);
        }
        if !last {
            return self.reply(reply::bdat_received(size));
        }
        if let Some(msg) = self.tx.as_mut().and_then(|t| t.message.as_mut()) {
            let mut tail = Vec::new();
            msg.framer.finish(&mut tail);
            let mut tail = msg.fix(tail);
            msg.fix_end(&mut tail);
            if !tail.is_empty() {
                msg.written += tail.len() as u64;
                self.out.push_back(Action::MessageChunk(tail));
            }
        }
        self.end_of_message();
    }

    fn end_of_message(&mut self) {
        self.mode = Mode::Command;
        let Some(msg) = self.tx.as_mut().and_then(|t| t.message.take()) else {
            return;
        };
        let error = msg
            .error
            .or_else(|| {
                (!msg.bdat && msg.framer.bare && self.cfg.bare_newline == BareNewline::Reject)
                    .then(reply::bare_newline)
            })
            .or_else(|| msg.framer.long_line.then(reply::data_line_too_long));
        if let Some(r) = error {
            self.out.push_back(Action::MessageAbort);
            self.tx = None;
            return self.reply(r);
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.size = msg.written;
        }
        self.out.push_back(Action::MessageEnd);
        self.waiting = Some(Wait::Commit);
    }

    pub(super) fn message_committed(&mut self, queue_id: &str) {
        if self.waiting != Some(Wait::Commit) {
            return;
        }
        self.waiting = None;
        let Some(tx) = self.tx.take() else { return };
        self.mails += 1;
        let proto = self.protocol();
        self.log(format!(
            "smtp message msgid={queue_id} size={} nrcpt={} proto={proto}",
            tx.size,
            tx.recipients.len()
        ));
        let from = tx.mail_from.as_deref().unwrap_or("");
        for r in &tx.recipients {
            let line = format!(
                "smtp envelope msgid={queue_id} from=<{from}> to=<{}> action={}",
                r.address, r.action
            );
            self.log(line);
        }
        self.reply(reply::message_accepted(queue_id));
    }

    pub(super) fn message_failed(&mut self, r: reply::Reply) {
        if self.waiting == Some(Wait::Commit) {
            self.waiting = None;
            self.tx = None;
            return self.reply(r);
        }
        // Failed while streaming: keep reading to the end of data, then refuse.
        if let Some(msg) = self.tx.as_mut().and_then(|t| t.message.as_mut()) {
            msg.error.get_or_insert(r);
        }
    }
}

impl Message {
    /// SIZE (RFC 1870) over the client's octets, and the header limits over the framed
    /// chunk; the first limit hit is the reply at the end of data.
    fn check_limits(&mut self, framed: &[u8], max_size: u64) {
        if self.error.is_some() {
            return;
        }
        if self.size > max_size {
            self.error = Some(reply::message_too_big());
            return;
        }
        self.headers.feed(framed);
        if self.headers.exceeded {
            self.error = Some(reply::header_too_large());
        } else if self.headers.looping() {
            self.error = Some(reply::too_many_hops());
        }
    }

    /// A chunk on its way to the queue, with the submission fix-ups applied.
    fn fix(&mut self, chunk: Vec<u8>) -> Vec<u8> {
        match self.fixup.as_mut() {
            None => chunk,
            Some(f) => {
                let mut out = Vec::with_capacity(chunk.len());
                f.feed(&chunk, &mut out);
                out
            }
        }
    }

    /// The end of the message: a header that never ended gets its fields now.
    fn fix_end(&mut self, out: &mut Vec<u8>) {
        if let Some(f) = self.fixup.as_mut() {
            f.finish(out);
        }
    }
}

/// `BDAT <size> [LAST]` (RFC 3030 §3).
fn parse_bdat(args: &str) -> Option<(u64, bool)> {
    let mut words = args.split([' ', '\t']).filter(|w| !w.is_empty());
    let size = words.next()?;
    if size.is_empty() || size.len() > 19 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let size: u64 = size.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    words.next().is_none().then_some((size, last))
}
