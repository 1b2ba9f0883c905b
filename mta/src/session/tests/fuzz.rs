//! Property tests: no input panics the session, the split of the input never changes
//! the outcome, and a message ends only at CRLF.CRLF. (`mta/fuzz` runs the same session
//! under cargo-fuzz for longer.)
use super::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn full_config() -> SessionConfig {
    let mut cfg = config();
    cfg.tls = TlsPolicy::StartTls;
    cfg.auth = AuthPolicy::Optional;
    cfg.max_message_size = 4096;
    cfg.max_errors = 1000;
    cfg
}

const TRANSCRIPT: &[u8] = b"EHLO c.example\r\nMAIL FROM:<a@c.example> BODY=8BITMIME\r\n\
RCPT TO:<x@example.org>\r\nRCPT TO:<unknown@example.org>\r\nDATA\r\n\
Subject: t\r\n\r\n..stuffed\r\nbare\nlf\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<y@example.org>\r\n\
BDAT 5\r\nab\r\ncBDAT 3 LAST\r\nxyzRSET\r\nNOOP\r\nQUIT\r\n";

/// Everything observable: replies, stored messages, aborts, close.
fn run(chunks: &[&[u8]]) -> (Vec<String>, Vec<Stored>, usize, bool) {
    let mut t = T::new(full_config());
    for c in chunks {
        t.send_raw(c);
    }
    let mut replies = Vec::new();
    while let Some(r) = t.replies.pop_front() {
        replies.push(r);
    }
    (replies, t.stored, t.aborted, t.closed)
}

#[test]
fn random_splits_of_a_transcript_give_the_same_outcome() {
    let whole = run(&[TRANSCRIPT]);
    assert_eq!(whole.1.len(), 2, "{:?}", whole.0);
    assert!(whole.3);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let mut cuts: Vec<usize> = (0..rng.below(12))
            .map(|_| rng.below(TRANSCRIPT.len()))
            .collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([TRANSCRIPT.len()]) {
            chunks.push(&TRANSCRIPT[prev..c]);
            prev = c;
        }
        assert_eq!(
            run(&chunks),
            whole,
            "split {:?}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    let alphabet: &[u8] =
        b"\r\n.:<>@ \0\xffAEHLOMAILFROMRCPTTODATABDATLASTRSETSTARTTLSAUTHPLAIN=0123456789";
    for _ in 0..500 {
        let mut t = T::new(full_config());
        for _ in 0..rng.below(20) {
            let len = rng.below(300);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(4) == 0 {
                        rng.next() as u8
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    }
                })
                .collect();
            t.send_raw(&bytes);
        }
        while t.replies.pop_front().is_some() {}
    }
}

#[test]
fn random_message_bodies_end_only_at_crlf_dot_crlf() {
    let mut rng = Rng(7);
    let alphabet: &[u8] = b"\r\n.ab";
    for _ in 0..500 {
        let body: Vec<u8> = (0..rng.below(200))
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let ends = [b"\r\n".as_slice(), &body]
            .concat()
            .windows(5)
            .any(|w| w == b"\r\n.\r\n");
        let mut t = T::ehlo(full_config());
        t.start_data("x@example.org");
        t.send_raw(&body);
        if ends {
            continue;
        }
        assert!(t.stored.is_empty(), "{body:?} ended early");
        t.send_raw(b"\r\n.\r\n");
        assert_eq!(t.stored.len(), 1, "{body:?}");
    }
}
