//! Message submission fix-ups (RFC 6409 §8.2, §8.3): a `Date:` and a `Message-ID:` are
//! added when missing from mail of authenticated sessions and local enqueue, as
//! OpenSMTPD does.
//!
//! The header block is watched as it streams past, in whatever pieces the client sent
//! it: field names are tracked at each line start, continuation lines are skipped, and
//! the missing fields are emitted just before the blank line that ends the header (or
//! at the end of a message that has no body).

/// RFC 5322 §2.1.1: no line is longer than 998 characters.
const MAX_LINE: usize = 998;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a header line.
    LineStart,
    /// A CR at the start of a line, held back: it may begin the blank line.
    LineStartCr,
    /// Reading a field name.
    Name,
    /// Inside a field, after the name.
    Field,
    /// Past the header: everything passes through.
    Body,
}

#[derive(Debug, Clone)]
pub(super) struct HeaderFixup {
    state: State,
    name: Vec<u8>,
    has_date: bool,
    has_message_id: bool,
    date: String,
    message_id: String,
}

impl HeaderFixup {
    /// `date` is an RFC 5322 date-time, `message_id` the `<…@…>` to use if needed.
    pub(super) fn new(date: String, message_id: String) -> Self {
        HeaderFixup {
            state: State::LineStart,
            name: Vec::new(),
            has_date: false,
            has_message_id: false,
            date,
            message_id,
        }
    }

    /// Passes `input` (message bytes, CRLF line endings) to `out`, inserting the missing
    /// fields at the end of the header.
    pub(super) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for (i, &b) in input.iter().enumerate() {
            match self.state {
                State::Body => {
                    out.extend_from_slice(&input[i..]);
                    return;
                }
                State::LineStartCr => {
                    if b == b'\n' {
                        self.end_of_header(out);
                        out.extend_from_slice(b"\r\n");
                        continue;
                    }
                    // A lone CR at a line start: not the blank line after all.
                    out.push(b'\r');
                    self.state = State::Field;
                    self.in_field(b, out);
                }
                State::LineStart => match b {
                    b'\r' => self.state = State::LineStartCr,
                    b'\n' => {
                        self.end_of_header(out);
                        out.push(b);
                    }
                    // RFC 5322 §2.2.3: a folded continuation of the previous field.
                    b' ' | b'\t' => {
                        out.push(b);
                        self.state = State::Field;
                    }
                    _ if is_ftext(b) => {
                        self.name.clear();
                        self.state = State::Name;
                        self.in_name(b, out);
                    }
                    // Not a field: the header is over and this line is the body's.
                    _ => {
                        self.end_of_header(out);
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(&input[i..]);
                        return;
                    }
                },
                State::Name => self.in_name(b, out),
                State::Field => self.in_field(b, out),
            }
        }
    }

    /// The message is complete: a header-only message gets the fields at its end.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::Body => {}
            State::LineStart => self.end_of_header(out),
            State::LineStartCr => {
                self.end_of_header(out);
                out.push(b'\r');
            }
            State::Name => self.not_a_field(out),
            State::Field => {
                out.extend_from_slice(b"\r\n");
                self.end_of_header(out);
            }
        }
        self.state = State::Body;
    }

    /// Field name bytes are held back until the colon shows the line is a field.
    fn in_name(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b':' => {
                let name = self.name.trim_ascii_end();
                if name.eq_ignore_ascii_case(b"date") {
                    self.has_date = true;
                } else if name.eq_ignore_ascii_case(b"message-id") {
                    self.has_message_id = true;
                }
                out.extend_from_slice(&self.name);
                out.push(b);
                self.state = State::Field;
            }
            // RFC 5322 §4.5.2 (obs-optional) allows white space before the colon.
            _ if (is_ftext(b) || b == b' ' || b == b'\t') && self.name.len() < MAX_LINE => {
                self.name.push(b)
            }
            // RFC 5322 §3.6.8: no colon after the name, so this line was never a
            // field: the header ended before it and it starts the body.
            _ => {
                self.not_a_field(out);
                out.push(b);
            }
        }
    }

    fn not_a_field(&mut self, out: &mut Vec<u8>) {
        self.end_of_header(out);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&std::mem::take(&mut self.name));
    }

    fn in_field(&mut self, b: u8, out: &mut Vec<u8>) {
        out.push(b);
        if b == b'\n' {
            self.state = State::LineStart;
        }
    }

    fn end_of_header(&mut self, out: &mut Vec<u8>) {
        if !self.has_date {
            out.extend_from_slice(format!("Date: {}\r\n", self.date).as_bytes());
        }
        if !self.has_message_id {
            out.extend_from_slice(format!("Message-ID: {}\r\n", self.message_id).as_bytes());
        }
        self.state = State::Body;
    }
}

/// `<{unix time}.{session id}.{n}@{hostname}>`: the session id is 64 random bits
/// (injected with the peer), `n` counts the session's messages.
pub(super) fn message_id(unix: i64, session_id: u64, n: usize, hostname: &str) -> String {
    format!("<{unix}.{session_id:016x}.{n}@{hostname}>")
}

/// RFC 5322 §3.6.8 ftext: printable US-ASCII except the colon.
fn is_ftext(b: u8) -> bool {
    matches!(b, 33..=57 | 59..=126)
}
