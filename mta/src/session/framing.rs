//! DATA and BDAT body framing, across arbitrary read boundaries.
//!
//! RFC 5321 §4.1.1.4 ends DATA with `CRLF . CRLF`, and that is the only sequence that ends
//! it here. The 2023 SMTP smuggling advisories (SEC Consult; Postfix, Sendmail, Exim
//! fixes) exploit servers that also end on `LF . LF`, `CR . CR` or `LF . CRLF`. This
//! framer treats a bare CR or bare LF as a line break for storage (normalised to CRLF),
//! but a line that began after a bare CR/LF can neither end the message nor be
//! dot-unstuffed, and a `.` line ended by a bare CR/LF is kept as content. Whatever a
//! client sends, the message ends only at a real `CRLF . CRLF`, and what we store can
//! never contain a sequence another server would read as the end of data.
//!
//! RFC 5321 §4.5.2: a leading `.` on a line is removed (dot-unstuffing), DATA only.
//! RFC 3030 (BDAT): no dot handling; line endings are still normalised.

#[derive(Debug, Clone)]
pub struct Framer {
    /// DATA (dot-terminated, dot-stuffed) or BDAT (length-delimited).
    dot: bool,
    max_line: usize,
    /// The current line started at the start of data or after a real CRLF.
    eligible: bool,
    /// A `.` at the start of an eligible line, not yet emitted.
    held_dot: bool,
    pending_cr: bool,
    line_len: usize,
    /// A bare CR or bare LF was seen somewhere.
    pub bare: bool,
    /// A line longer than `max_line` octets (with its line ending) was seen.
    pub long_line: bool,
}

impl Framer {
    pub fn new(dot: bool, max_line: usize) -> Framer {
        Framer {
            dot,
            max_line,
            eligible: true,
            held_dot: false,
            pending_cr: false,
            line_len: 0,
            bare: false,
            long_line: false,
        }
    }

    /// Feeds input, appending the unstuffed, CRLF-normalised body to `out`. Returns how
    /// many bytes were consumed and whether the end-of-data line was seen (DATA only; the
    /// terminator is consumed and not emitted).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    i += 1;
                    self.line_len += 1;
                    if self.held_dot && self.dot {
                        // `CRLF . CRLF`: the only end of data.
                        self.held_dot = false;
                        self.line_len = 0;
                        return (i, true);
                    }
                    self.end_line(out, true);
                    continue;
                }
                self.bare = true;
                self.end_line(out, false);
            }
            if self.line_len > 0 && !self.held_dot {
                // Inside a line only CR and LF mean anything: copy up to the next one
                // whole, rather than deciding byte by byte.
                let rest = &input[i..];
                let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                if run > 0 {
                    out.extend_from_slice(&rest[..run]);
                    self.line_len += run;
                    i += run;
                    continue;
                }
            }
            self.byte(b, out);
            i += 1;
        }
        (input.len(), false)
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        self.line_len += 1;
        match b {
            b'\r' => self.pending_cr = true,
            b'\n' => {
                self.bare = true;
                self.end_line(out, false);
            }
            b'.' if self.dot && self.eligible && self.line_len == 1 => self.held_dot = true,
            _ => {
                // A held dot followed by more text was a stuffing dot: drop it.
                self.held_dot = false;
                out.push(b);
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>, crlf: bool) {
        if self.held_dot {
            // `.` ended by a bare CR/LF: not an end of data, keep it as text.
            out.push(b'.');
            self.held_dot = false;
        }
        out.extend_from_slice(b"\r\n");
        if self.line_len > self.max_line {
            self.long_line = true;
        }
        self.line_len = 0;
        self.eligible = crlf;
    }

    /// Ends a BDAT body: a trailing CR or an unterminated last line gets its CRLF, so the
    /// stored message always ends with a line break.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.line_len -= 1;
            self.end_line(out, true);
        } else if self.line_len > 0 || self.held_dot {
            self.end_line(out, true);
        }
    }
}

/// Measures the header section of the framed (CRLF-normalised) message as it streams:
/// the whole section and each field with its folded continuation lines (RFC 5322 §2.2.3).
/// The section ends at the first empty line, or at a line that cannot be a header field
/// (no `name:`), which RFC 5322 §2.1 makes the start of the body.
#[derive(Debug, Clone)]
pub struct HeaderMeter {
    max_section: usize,
    max_field: usize,
    section: usize,
    field: usize,
    /// Octets on the current line, line ending excluded.
    line: usize,
    /// The current line is still in its field name (no `:` yet).
    in_name: bool,
    done: bool,
    /// A limit was exceeded.
    pub exceeded: bool,
    /// The current field's name so far, lower-cased (only as long as a hop field's).
    name: [u8; 12],
    name_len: usize,
    /// `Received:` and `Delivered-To:` fields seen: the hops the message has made.
    pub hops: usize,
}

/// RFC 5321 §6.3: a message that has passed this many relays is looping. OpenSMTPD's
/// `MAX_HOPS_COUNT` (it counts `Received:` and `Delivered-To:`).
pub const MAX_HOPS: usize = 100;

impl HeaderMeter {
    pub fn new(max_section: usize, max_field: usize) -> HeaderMeter {
        HeaderMeter {
            max_section,
            max_field,
            section: 0,
            field: 0,
            line: 0,
            in_name: false,
            done: false,
            exceeded: false,
            name: [0; 12],
            name_len: 0,
            hops: 0,
        }
    }

    /// The message has been relayed more than [`MAX_HOPS`] times.
    pub fn looping(&self) -> bool {
        self.hops > MAX_HOPS
    }

    /// Feeds framed output, whose line endings are all CRLF.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done {
                return;
            }
            match b {
                b'\r' => continue,
                b'\n' if self.line == 0 => {
                    self.done = true;
                    continue;
                }
                b'\n' => {
                    self.line = 0;
                    self.count(2);
                    continue;
                }
                _ => {}
            }
            if self.line == 0 {
                if b == b' ' || b == b'\t' {
                    // A continuation line belongs to the field above.
                    self.in_name = false;
                } else {
                    self.field = 0;
                    self.in_name = true;
                    self.name_len = 0;
                }
            }
            if self.in_name {
                if b == b':' && self.line > 0 {
                    self.in_name = false;
                    let name = self.name.get(..self.name_len).unwrap_or_default();
                    if name == b"received" || name == b"delivered-to" {
                        self.hops += 1;
                    }
                } else if !(33..=126).contains(&b) {
                    // RFC 5322 §2.2: not a field name, so the body has begun.
                    self.done = true;
                    return;
                }
            }
            if self.in_name {
                if let Some(slot) = self.name.get_mut(self.name_len) {
                    *slot = b.to_ascii_lowercase();
                }
                self.name_len += 1;
            }
            self.line += 1;
            self.count(1);
        }
    }

    fn count(&mut self, n: usize) {
        self.section += n;
        self.field += n;
        if self.section > self.max_section || self.field > self.max_field {
            self.exceeded = true;
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(msg: &[u8], section: usize, field: usize) -> bool {
        let mut m = HeaderMeter::new(section, field);
        for b in msg.chunks(3) {
            m.feed(b);
        }
        m.exceeded
    }

    #[test]
    fn header_meter_counts_received_and_delivered_to_as_hops() {
        let mut m = HeaderMeter::new(1 << 20, 1 << 20);
        m.feed(b"Received: from a\r\n\tby b\r\nRECEIVED: x\r\nDelivered-To: u@d\r\n");
        m.feed(b"Received-SPF: pass\r\nX-Received: y\r\nReceivedx: z\r\n");
        m.feed(b"Delivered-Tox: q\r\n");
        m.feed(b"\r\nReceived: in the body\r\n");
        assert_eq!(m.hops, 3);
        assert!(!m.looping());
        let mut m = HeaderMeter::new(1 << 20, 1 << 20);
        for _ in 0..=MAX_HOPS {
            m.feed(b"Received: from relay\r\n");
        }
        assert!(m.looping());
    }

    #[test]
    fn header_meter_counts_the_section_up_to_the_empty_line() {
        let msg = b"Subject: hi\r\nTo: a@b\r\n\r\nbody body body body body body\r\n";
        // The section is 13 + 9 octets with line endings; the body never counts.
        assert!(!meter(msg, 22, 100));
        assert!(meter(msg, 21, 100));
    }

    #[test]
    fn header_meter_counts_folded_lines_as_one_field() {
        let msg = b"X-Long: a\r\n b\r\n c\r\nTo: x\r\n\r\n";
        // `X-Long: a` and 2 continuation lines: 11 + 4 + 4 octets.
        assert!(!meter(msg, 1000, 19));
        assert!(meter(msg, 1000, 18));
    }

    #[test]
    fn header_meter_stops_at_a_line_that_is_no_field() {
        let big = [
            b"Subject: x\r\nnot a header line\r\n".to_vec(),
            vec![b'a'; 500],
        ]
        .concat();
        assert!(!meter(&big, 100, 100));
        let no_colon = [b"Subject: x\r\n".to_vec(), vec![b'a'; 500]].concat();
        assert!(meter(&no_colon, 100, 1000));
    }

    fn data(input: &[u8]) -> (Vec<u8>, Option<usize>, Framer) {
        let mut f = Framer::new(true, 1000);
        let mut out = Vec::new();
        let (n, end) = f.feed(input, &mut out);
        (out, end.then_some(n), f)
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (out, end, f) = data(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(end, Some(24));
        assert!(!f.bare);
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        assert_eq!(data(b".\r\n").1, Some(3));
    }

    #[test]
    fn unstuffs_leading_dots() {
        let (out, end, _) = data(b"..leading\r\n...\r\n.\r\n");
        assert_eq!(out, b".leading\r\n..\r\n");
        assert!(end.is_some());
    }

    #[test]
    fn smuggling_sequences_never_end_the_message() {
        for payload in [
            &b"a\n.\nMAIL FROM:<x@y>\n"[..],
            b"a\r.\rMAIL FROM:<x@y>\r",
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\n.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y>\r\n",
            b"a\r\n\x00.\r\n",
        ] {
            let (out, end, _) = data(payload);
            assert_eq!(end, None, "{payload:?}");
            // Stored with CRLF only: a "." line in it is content that the next hop's
            // client dot-stuffs again.
            assert!(!out.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
        }
    }

    #[test]
    fn normalises_bare_line_endings_and_reports_them() {
        let (out, _, f) = data(b"a\nb\rc\r\n");
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        assert!(f.bare);
    }

    #[test]
    fn terminator_split_across_reads_is_found() {
        let input = b"x\r\n.\r\n";
        for split in 0..input.len() {
            let mut f = Framer::new(true, 1000);
            let mut out = Vec::new();
            let (n1, e1) = f.feed(&input[..split], &mut out);
            assert!(!e1);
            assert_eq!(n1, split);
            let (_, e2) = f.feed(&input[split..], &mut out);
            assert!(e2, "split at {split}");
            assert_eq!(out, b"x\r\n");
        }
    }

    #[test]
    fn any_split_of_the_input_frames_the_same() {
        for input in [
            &b"Subject: x\r\n\r\n..a\r\nb\nc\rd\r\n.e\r\n.\r.\n\r\n.\r\nQUIT\r\n"[..],
            b"a\r\n.\nb\r\n\r\r\n..\r\n.\r\n",
            b"0123456789\r\n.0123456789\n.\r\n",
        ] {
            let (whole, end, f) = data(input);
            for split in 0..=input.len() {
                let mut g = Framer::new(true, 1000);
                let mut out = Vec::new();
                let (n1, e1) = g.feed(&input[..split], &mut out);
                let got = if e1 {
                    Some(n1)
                } else {
                    let (n2, e2) = g.feed(&input[split..], &mut out);
                    e2.then_some(split + n2)
                };
                assert_eq!((&out, got), (&whole, end), "{input:?} split at {split}");
                assert_eq!(g.bare, f.bare, "{input:?} split at {split}");
            }
        }
    }

    #[test]
    fn flags_lines_over_the_limit() {
        let ok = [vec![b'a'; 998], b"\r\n.\r\n".to_vec()].concat();
        assert!(!data(&ok).2.long_line);
        let long = [vec![b'a'; 999], b"\r\n.\r\n".to_vec()].concat();
        assert!(data(&long).2.long_line);
    }

    #[test]
    fn bdat_keeps_dots_and_terminates_the_last_line() {
        let mut f = Framer::new(false, 1000);
        let mut out = Vec::new();
        let (n, end) = f.feed(b".\r\n..x\r\nlast", &mut out);
        assert_eq!((n, end), (12, false));
        f.finish(&mut out);
        assert_eq!(out, b".\r\n..x\r\nlast\r\n");
    }
}
