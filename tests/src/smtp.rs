//! A transcript-style SMTP/LMTP client: `c.send("MAIL FROM:<a@b>"); c.expect("250 *");`

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A plain-text SMTP (or LMTP) client over TCP or a unix socket.
pub struct Client {
    reader: BufReader<Box<dyn ReadWrite>>,
    transcript: Vec<String>,
}

pub trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client::over(Box::new(s))
    }

    pub fn connect_unix(path: &std::path::Path) -> Client {
        let s = std::os::unix::net::UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client::over(Box::new(s))
    }

    pub fn over(stream: Box<dyn ReadWrite>) -> Client {
        Client {
            reader: BufReader::new(stream),
            transcript: Vec::new(),
        }
    }

    /// Sends one command line (CRLF added).
    pub fn send(&mut self, line: &str) {
        self.transcript.push(format!("C: {line}"));
        let s = self.reader.get_mut();
        s.write_all(line.as_bytes()).unwrap();
        s.write_all(b"\r\n").unwrap();
        s.flush().unwrap();
    }

    /// Sends bytes exactly as given (for pipelining, DATA bodies and malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.transcript
            .push(format!("C: {:?}", String::from_utf8_lossy(bytes)));
        let s = self.reader.get_mut();
        s.write_all(bytes).unwrap();
        s.flush().unwrap();
    }

    /// Reads one complete reply (all its continuation lines).
    pub fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("read reply: {e}\n{}", self.transcript()));
            assert!(
                n > 0,
                "connection closed while waiting for a reply\n{}",
                self.transcript()
            );
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            self.transcript.push(format!("S: {line}"));
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Reads one reply and asserts its last line matches `pattern` (`*` matches any text).
    #[track_caller]
    pub fn expect(&mut self, pattern: &str) -> Vec<String> {
        let lines = self.reply();
        let last = lines.last().cloned().unwrap_or_default();
        assert!(
            glob(pattern, &last),
            "expected {pattern:?}, got {last:?}\n{}",
            self.transcript()
        );
        lines
    }

    /// True when the server closed the connection (reads EOF).
    pub fn closed(&mut self) -> bool {
        let mut line = String::new();
        matches!(self.reader.read_line(&mut line), Ok(0) | Err(_))
    }

    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }
}

/// One whole transaction over a new connection, each reply checked: EHLO, MAIL, RCPT,
/// DATA with a one-line message, QUIT.
pub fn send_message(addr: SocketAddr, from: &str, to: &str, subject: &str) {
    let reply = try_message(addr, from, to, subject);
    assert!(glob("250 *", &reply), "the message was refused: {reply}");
}

/// [`send_message`] whose end of DATA may be refused: returns that reply's last line.
pub fn try_message(addr: SocketAddr, from: &str, to: &str, subject: &str) -> String {
    let mut c = Client::connect(addr);
    c.expect("220 *");
    c.send("EHLO client.test");
    c.expect("250*");
    c.send(&format!("MAIL FROM:<{from}>"));
    c.expect("250 *");
    c.send(&format!("RCPT TO:<{to}>"));
    c.expect("250 *");
    c.send("DATA");
    c.expect("354 *");
    c.send_raw(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes());
    let reply = c.reply().last().cloned().unwrap_or_default();
    c.send("QUIT");
    c.expect("221 *");
    reply
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_like_a_transcript_reader_expects() {
        assert!(glob("250 *", "250 2.0.0 Ok"));
        assert!(glob("550 5.1.1 *", "550 5.1.1 Invalid recipient"));
        assert!(!glob("550 5.1.1 *", "250 ok"));
        assert!(glob("2*Ok", "250 2.0.0 Ok"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }
}
