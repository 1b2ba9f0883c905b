//! A streaming filter over the header section of an arriving message: it drops
//! `Authentication-Results` fields that carry our authserv-id (RFC 8601 §5: a receiver
//! must not trust, and should remove, results claiming to come from itself), keeps a
//! copy of the header section for the checks, and passes the body through untouched.

/// What the filter learnt from the header section.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderFacts {
    /// Forged `Authentication-Results` fields removed.
    pub removed: usize,
    /// A `DKIM-Signature` field was seen.
    pub dkim_signed: bool,
}

pub struct HeaderFilter {
    authserv_id: String,
    /// Bytes of an unfinished line.
    partial: Vec<u8>,
    /// The current field (with its continuation lines), held until the next line shows
    /// it is complete.
    field: Vec<u8>,
    /// The header section as kept (for DMARC's From when the body is not buffered).
    kept: Vec<u8>,
    in_body: bool,
    pub facts: HeaderFacts,
}

/// The header copy is for `From:`; a header section beyond this is not kept whole.
const MAX_KEPT: usize = 256 * 1024;

impl HeaderFilter {
    pub fn new(authserv_id: &str) -> HeaderFilter {
        HeaderFilter {
            authserv_id: authserv_id.to_ascii_lowercase(),
            partial: Vec::new(),
            field: Vec::new(),
            kept: Vec::new(),
            in_body: false,
            facts: HeaderFacts::default(),
        }
    }

    /// The header section as passed on, ending with the blank line once it was seen.
    pub fn header_section(&self) -> &[u8] {
        &self.kept
    }

    /// Filters one chunk, appending what passes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.in_body {
            out.extend_from_slice(chunk);
            return;
        }
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(i + 1);
            rest = tail;
            if self.partial.is_empty() {
                self.line(line, out);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, out);
            }
            if self.in_body {
                out.extend_from_slice(rest);
                return;
            }
        }
        self.partial.extend_from_slice(rest);
    }

    /// The end of the message: whatever is still held is passed on.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush_field(out);
        out.append(&mut self.partial);
        self.in_body = true;
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        if line == b"\r\n" || line == b"\n" {
            self.flush_field(out);
            self.keep(line);
            out.extend_from_slice(line);
            self.in_body = true;
        } else if line[0] == b' ' || line[0] == b'\t' {
            self.field.extend_from_slice(line);
        } else {
            self.flush_field(out);
            self.field.extend_from_slice(line);
        }
    }

    fn flush_field(&mut self, out: &mut Vec<u8>) {
        if self.field.is_empty() {
            return;
        }
        let field = std::mem::take(&mut self.field);
        if let Some(value) = value_of(&field, "authentication-results")
            && authserv_id(value).eq_ignore_ascii_case(&self.authserv_id)
        {
            self.facts.removed += 1;
            return;
        }
        if value_of(&field, "dkim-signature").is_some() {
            self.facts.dkim_signed = true;
        }
        self.keep(&field);
        out.extend_from_slice(&field);
    }

    fn keep(&mut self, bytes: &[u8]) {
        if self.kept.len() + bytes.len() <= MAX_KEPT {
            self.kept.extend_from_slice(bytes);
        }
    }
}

/// The value of a header field named `name` (case-insensitive), or `None`.
fn value_of<'a>(field: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let colon = field.iter().position(|&b| b == b':')?;
    let (n, v) = field.split_at(colon);
    let n = n.strip_suffix(b" ").unwrap_or(n);
    n.eq_ignore_ascii_case(name.as_bytes()).then_some(&v[1..])
}

/// RFC 8601 §2.2: `authserv-id [version] ";" …`, after optional CFWS.
fn authserv_id(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut s = text.trim_start();
    // Leading comments: `(…) mx.example.org;`.
    while let Some(rest) = s.strip_prefix('(') {
        s = rest.split_once(')').map_or("", |(_, r)| r).trim_start();
    }
    s.split(|c: char| c == ';' || c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, chunks: &[&str]) -> (String, HeaderFilter) {
        let mut f = HeaderFilter::new(id);
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c.as_bytes(), &mut out);
        }
        f.finish(&mut out);
        (String::from_utf8(out).unwrap(), f)
    }

    #[test]
    fn results_claiming_our_authserv_id_are_removed_and_others_kept() {
        let msg = "Received: from x by mx.example.org;\r\n\tSat, 1 Jan 2026\r\n\
                   Authentication-Results: MX.example.org;\r\n\tdkim=pass header.d=bank.example\r\n\
                   Authentication-Results: other.example; spf=pass\r\n\
                   authentication-results : (forged) mx.example.org 1; dmarc=pass\r\n\
                   Subject: hi\r\n\
                   \r\n\
                   Authentication-Results: mx.example.org; in the body stays\r\n";
        let (out, f) = run("mx.example.org", &[msg]);
        assert_eq!(
            out,
            "Received: from x by mx.example.org;\r\n\tSat, 1 Jan 2026\r\n\
             Authentication-Results: other.example; spf=pass\r\n\
             Subject: hi\r\n\
             \r\n\
             Authentication-Results: mx.example.org; in the body stays\r\n"
        );
        assert_eq!(f.facts.removed, 2);
        assert!(!f.facts.dkim_signed);
    }

    #[test]
    fn fields_split_across_chunks_are_judged_whole() {
        let msg = "DKIM-Signature: v=1; d=a.example;\r\n b=xyz\r\nAuthentication-Results: mx.example.org; spf=pass\r\nFrom: a@a.example\r\n\r\nbody\r\n";
        let chunks: Vec<String> = msg
            .as_bytes()
            .chunks(7)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let (out, f) = run("mx.example.org", &refs);
        assert_eq!(
            out,
            "DKIM-Signature: v=1; d=a.example;\r\n b=xyz\r\nFrom: a@a.example\r\n\r\nbody\r\n"
        );
        assert!(f.facts.dkim_signed);
        assert_eq!(
            f.header_section(),
            b"DKIM-Signature: v=1; d=a.example;\r\n b=xyz\r\nFrom: a@a.example\r\n\r\n"
        );
    }

    #[test]
    fn a_message_without_body_keeps_its_last_field() {
        let (out, _) = run("mx.example.org", &["Subject: x\r\nFrom: a@b"]);
        assert_eq!(out, "Subject: x\r\nFrom: a@b");
    }
}
