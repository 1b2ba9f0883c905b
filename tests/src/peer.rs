//! A scripted SMTP server for the cases a real MTA will not act out on demand (answer
//! 451 once, then accept): it answers every command from a script the test gives and
//! records what the client sent.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// The reply to a RCPT, by attempt: `rcpt(n, address)` gives the reply for the n-th
/// RCPT TO (counted from 0 over the peer's life).
pub type RcptScript = dyn Fn(usize, &str) -> String + Send + Sync;

/// One message the peer accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub data: String,
}

pub struct Peer {
    pub addr: SocketAddr,
    broken_starttls: bool,
    received: Arc<Mutex<Vec<Received>>>,
    transcript: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    /// Listens on `addr` and serves connections one after another on a thread.
    pub fn start(addr: SocketAddr, rcpt: Box<RcptScript>) -> Peer {
        Peer::start_with(addr, rcpt, false)
    }

    /// With `broken_starttls`, the peer offers STARTTLS, says 220 and then answers the
    /// TLS handshake with clear text and hangs up (a misconfigured MX).
    pub fn start_with(addr: SocketAddr, rcpt: Box<RcptScript>, broken_starttls: bool) -> Peer {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let (r, t) = (received.clone(), transcript.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let _ = serve(stream, &*rcpt, &mut n, &r, &t, broken_starttls);
            }
        });
        Peer {
            addr,
            broken_starttls,
            received,
            transcript,
        }
    }

    pub fn offers_broken_starttls(&self) -> bool {
        self.broken_starttls
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn transcript(&self) -> String {
        self.transcript.lock().unwrap().join("\n")
    }
}

fn serve(
    stream: std::net::TcpStream,
    rcpt: &RcptScript,
    n: &mut usize,
    received: &Mutex<Vec<Received>>,
    transcript: &Mutex<Vec<String>>,
    broken_starttls: bool,
) -> std::io::Result<()> {
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let say = |w: &mut std::net::TcpStream, s: &str| -> std::io::Result<()> {
        transcript.lock().unwrap().push(format!("S: {s}"));
        w.write_all(format!("{s}\r\n").as_bytes())
    };
    say(&mut w, "220 peer.test ESMTP scripted")?;
    let mut cur = Received {
        mail_from: String::new(),
        rcpts: Vec::new(),
        data: String::new(),
    };
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        transcript.lock().unwrap().push(format!("C: {line}"));
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            say(&mut w, "250-peer.test")?;
            if broken_starttls {
                say(&mut w, "250-STARTTLS")?;
            }
            say(&mut w, "250 PIPELINING")?;
        } else if upper == "STARTTLS" && broken_starttls {
            say(&mut w, "220 2.0.0 Ready to start TLS")?;
            say(&mut w, "this is not a TLS server hello")?;
            return Ok(());
        } else if upper.starts_with("MAIL FROM:") {
            cur = Received {
                mail_from: line[10..].to_string(),
                rcpts: Vec::new(),
                data: String::new(),
            };
            say(&mut w, "250 2.1.0 Ok")?;
        } else if upper.starts_with("RCPT TO:") {
            let addr = line[8..].trim_matches(['<', '>']).to_string();
            let reply = rcpt(*n, &addr);
            *n += 1;
            if reply.starts_with('2') {
                cur.rcpts.push(addr);
            }
            say(&mut w, &reply)?;
        } else if upper == "DATA" {
            if cur.rcpts.is_empty() {
                say(&mut w, "554 5.5.1 Error: no valid recipients")?;
                continue;
            }
            say(&mut w, "354 End data with <CR><LF>.<CR><LF>")?;
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" {
                    break;
                }
                cur.data.push_str(&l);
            }
            received.lock().unwrap().push(cur.clone());
            say(&mut w, "250 2.0.0 Ok: queued by the scripted peer")?;
        } else if upper == "RSET" || upper == "NOOP" {
            say(&mut w, "250 2.0.0 Ok")?;
        } else if upper == "QUIT" {
            say(&mut w, "221 2.0.0 Bye")?;
            return Ok(());
        } else {
            say(&mut w, "502 5.5.2 Error: command not recognized")?;
        }
    }
}
