//! `fugu sendmail` and the `sendmail`, `mailq` and `newaliases` names (argv[0] through
//! symlinks): the local submission interface cron, mail(1) and scripts expect. The
//! message goes over SMTP to the daemon's `<spool>/enqueue.sock`, which marks it local.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// sysexits(3) EX_USAGE, EX_DATAERR, EX_TEMPFAIL: what callers of sendmail check.
const EX_USAGE: u8 = 64;
const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;

#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    /// `-t`: recipients from To, Cc and Bcc (added to those on the command line).
    from_headers: bool,
    /// `-f ADDR`.
    sender: Option<String>,
    /// `-F NAME`: the full name for a generated From header.
    full_name: Option<String>,
    /// `-i`/`-oi`: a line with a single dot does not end the message.
    ignore_dots: bool,
    mode: Mode,
    rcpts: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Deliver,
    ListQueue,
    NewAliases,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut i = 0;
    // An option's value: the rest of this word, else the next word.
    let value = |i: &mut usize, rest: &str, flag: &str| -> Result<String, String> {
        if !rest.is_empty() {
            return Ok(rest.to_string());
        }
        *i += 1;
        args.get(*i)
            .cloned()
            .ok_or_else(|| format!("option -{flag} needs a value"))
    };
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            o.rcpts.extend(args[i + 1..].iter().cloned());
            break;
        }
        let Some(opt) = a.strip_prefix('-').filter(|s| !s.is_empty()) else {
            o.rcpts.push(a.clone());
            i += 1;
            continue;
        };
        let (flag, rest) = opt.split_at(1);
        match flag {
            "t" => o.from_headers = true,
            "i" => o.ignore_dots = true,
            "f" | "r" => o.sender = Some(value(&mut i, rest, flag)?),
            "F" => o.full_name = Some(value(&mut i, rest, flag)?),
            "o" => {
                // -oi is -i; the other -oX options (-oem, -odi, -oQ…) tune sendmail's own
                // queue and error handling, which the daemon owns here.
                if rest == "i" {
                    o.ignore_dots = true;
                }
            }
            "b" => match rest {
                "m" => o.mode = Mode::Deliver,
                "p" => o.mode = Mode::ListQueue,
                "i" => o.mode = Mode::NewAliases,
                "s" => return Err("-bs (SMTP on standard input) is not supported".into()),
                other => return Err(format!("-b{other}: unsupported mode")),
            },
            // Verbose, ignored (sendmail compatibility): the daemon logs the delivery.
            "v" | "U" | "m" | "n" => {}
            "N" | "R" | "V" | "X" | "B" | "O" | "L" | "h" | "q" => {
                // Options with values that only sendmail's own queue uses.
                if rest.is_empty() && matches!(flag, "N" | "R" | "V" | "X" | "B" | "O" | "L" | "h")
                {
                    i += 1;
                }
            }
            other => return Err(format!("unknown option -{other}")),
        }
        i += 1;
    }
    Ok(o)
}

/// Entry for `fugu sendmail ARGS` and argv[0] `sendmail`.
pub fn sendmail(args: &[String]) -> ExitCode {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    match opts.mode {
        Mode::ListQueue => mailq(),
        Mode::NewAliases => newaliases(),
        Mode::Deliver => deliver(&opts),
    }
}

/// `mailq` (and `sendmail -bp`): the queue in sendmail's layout.
pub fn mailq() -> ExitCode {
    let spool = crate::ctl::default_spool(None);
    match crate::ctl::queue_text(&spool) {
        Ok(text) => {
            print!("{}", mailq_layout(&text));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mailq: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `newaliases`: nothing to rebuild, as OpenSMTPD says for tables that are not db files.
pub fn newaliases() -> ExitCode {
    println!(
        "newaliases: fugu reads aliases live from its tables (file and sqlite); there is nothing to rebuild"
    );
    ExitCode::SUCCESS
}

/// Splits a `show queue` line at the `|` that are not escaped with a backslash.
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(last)) = (chars.next(), out.last_mut()) {
                    last.push(n);
                }
            }
            '|' => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// sendmail's `mailq` layout from `show queue` lines: one block per message with its
/// queue time and sender, then each recipient with its last error, then the total.
fn mailq_layout(show_queue: &str) -> String {
    struct Msg {
        id: String,
        ctime: i64,
        sender: String,
        rcpts: Vec<(String, String)>,
    }
    let mut msgs: Vec<Msg> = Vec::new();
    for line in show_queue.lines() {
        let f = fields(line);
        // evpid|src|action|flags|sender|rcpt|dest|ctime|expire|lasttry|retries|
        // runstate|secs|delay|error
        if f.len() < 15 {
            continue;
        }
        let id = f[0].chars().take(8).collect::<String>();
        let rcpt = (f[5].clone(), f[14].clone());
        match msgs.iter_mut().find(|m| m.id == id) {
            Some(m) => m.rcpts.push(rcpt),
            None => msgs.push(Msg {
                id,
                ctime: f[7].parse().unwrap_or(0),
                sender: if f[4].is_empty() {
                    "<>".into()
                } else {
                    f[4].clone()
                },
                rcpts: vec![rcpt],
            }),
        }
    }
    if msgs.is_empty() {
        return "Mail queue is empty\n".into();
    }
    let mut out =
        String::from("-----Q-ID----- ------Q-Time------ ------------Sender/Recipient-----------\n");
    let n = msgs.len();
    for m in msgs {
        let date = mta::clock::asctime(
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(m.ctime).unwrap_or(0)),
        );
        // asctime: `Tue Nov 14 22:13:20 2023`; sendmail shows `Tue Nov 14 22:13`.
        let short: String = date.chars().take(16).collect();
        out.push_str(&format!("{:<14} {:<18} {}\n", m.id, short, m.sender));
        for (rcpt, err) in m.rcpts {
            if !err.is_empty() {
                out.push_str(&format!("{:>34}({err})\n", ""));
            }
            out.push_str(&format!("{:>34}{rcpt}\n", ""));
        }
    }
    out.push_str(&format!("\t\tTotal requests: {n}\n"));
    out
}

/// The name the daemon also uses (`/etc/mail/mailname`, else the host name).
fn hostname() -> String {
    mta::table::LocalIdentity::system().hostname
}

fn login_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

/// `user` → `user@host`; addresses with a domain stay as they are.
fn qualify(addr: &str, host: &str) -> String {
    let a = addr.trim().trim_start_matches('<').trim_end_matches('>');
    if a.contains('@') || a.is_empty() {
        a.to_string()
    } else {
        format!("{a}@{host}")
    }
}

/// Reads the message from `input`: LF or CRLF lines; without `-i` a lone `.` ends it.
fn read_message(input: impl Read, ignore_dots: bool) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut r = BufReader::new(input);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let mut line = String::from_utf8_lossy(&buf).into_owned();
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        if !ignore_dots && line == "." {
            break;
        }
        lines.push(line);
    }
    Ok(lines)
}

/// The header block's fields, unfolded: (name, value) with the original line range.
fn header_fields(lines: &[String]) -> Vec<(String, String, std::ops::Range<usize>)> {
    let mut out: Vec<(String, String, std::ops::Range<usize>)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.is_empty() {
            break;
        }
        if l.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(l.trim());
                last.2.end = i + 1;
            }
            continue;
        }
        let Some((name, value)) = l.split_once(':') else {
            break;
        };
        out.push((name.trim().to_string(), value.trim().to_string(), i..i + 1));
    }
    out
}

/// Addresses in a To/Cc/Bcc value: `a@x, "B, b" <b@y>, c`.
fn header_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut depth = 0;
    for c in value.chars().chain(std::iter::once(',')) {
        match c {
            '"' => quoted = !quoted,
            // RFC 5322 §3.2.2 comments are not part of the address.
            '(' if !quoted => {
                depth += 1;
                continue;
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                continue;
            }
            ',' if !quoted && depth == 0 => {
                let part = cur.trim();
                let addr = match (part.rfind('<'), part.rfind('>')) {
                    (Some(a), Some(b)) if a < b => &part[a + 1..b],
                    _ => part,
                };
                if !addr.trim().is_empty() {
                    out.push(addr.trim().to_string());
                }
                cur.clear();
                continue;
            }
            _ if depth > 0 => continue,
            _ => {}
        }
        cur.push(c);
    }
    out
}

struct Prepared {
    sender: String,
    rcpts: Vec<String>,
    data: Vec<u8>,
}

/// Recipients, sender and the message with the headers a bare `echo body | sendmail`
/// lacks (From, Date, Message-ID); `Bcc` is removed under `-t`.
fn prepare(
    opts: &Options,
    mut lines: Vec<String>,
    host: &str,
    login: &str,
    now: std::time::SystemTime,
) -> Result<Prepared, String> {
    let sender = qualify(opts.sender.as_deref().unwrap_or(login), host);
    let mut rcpts: Vec<String> = opts.rcpts.iter().map(|r| qualify(r, host)).collect();
    let fields = header_fields(&lines);
    if opts.from_headers {
        for (name, value, _) in &fields {
            if ["to", "cc", "bcc"].contains(&name.to_ascii_lowercase().as_str()) {
                rcpts.extend(header_addresses(value).iter().map(|a| qualify(a, host)));
            }
        }
        let bcc: Vec<std::ops::Range<usize>> = fields
            .iter()
            .filter(|(n, _, _)| n.eq_ignore_ascii_case("bcc"))
            .map(|(_, _, r)| r.clone())
            .collect();
        for r in bcc.into_iter().rev() {
            lines.drain(r);
        }
    }
    rcpts.dedup();
    if rcpts.is_empty() {
        return Err("no recipients".into());
    }
    let has = |h: &str| fields.iter().any(|(n, _, _)| n.eq_ignore_ascii_case(h));
    let mut added = Vec::new();
    if !has("from") {
        added.push(match &opts.full_name {
            Some(name) => format!("From: \"{}\" <{sender}>", name.replace(['"', '\\'], "")),
            None => format!("From: {sender}"),
        });
    }
    if !has("date") {
        added.push(format!("Date: {}", mta::clock::rfc5322_date(now)));
    }
    if !has("message-id") {
        let nanos = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        added.push(format!(
            "Message-ID: <{nanos:x}.{}@{host}>",
            std::process::id()
        ));
    }
    // A message that starts with its body gets an empty line after the added headers.
    if fields.is_empty() && lines.first().is_some_and(|l| !l.is_empty()) {
        added.push(String::new());
    }
    let mut data = Vec::new();
    for l in added.iter().chain(lines.iter()) {
        // RFC 5321 §4.5.2: transparency.
        if l.starts_with('.') {
            data.push(b'.');
        }
        data.extend_from_slice(l.as_bytes());
        data.extend_from_slice(b"\r\n");
    }
    Ok(Prepared {
        sender,
        rcpts,
        data,
    })
}

/// One SMTP exchange over the enqueue socket.
struct Smtp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Smtp {
    fn reply(&mut self) -> Result<(u16, String), String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .r
                .read_line(&mut line)
                .map_err(|e| format!("reading from the daemon: {e}"))?;
            if n == 0 {
                return Err("the daemon closed the connection".into());
            }
            text.push_str(line.trim_end());
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, text));
            }
            text.push(' ');
        }
    }

    fn command(&mut self, line: &str, want: u16) -> Result<(), String> {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| format!("writing to the daemon: {e}"))?;
        let (code, text) = self.reply()?;
        if code / 100 != want / 100 {
            return Err(format!(
                "{}: {text}",
                line.split(':').next().unwrap_or(line)
            ));
        }
        Ok(())
    }
}

fn submit(socket: &Path, p: &Prepared) -> Result<(), (u8, String)> {
    let temp = |e: String| (EX_TEMPFAIL, e);
    let stream = UnixStream::connect(socket).map_err(|e| {
        temp(format!(
            "cannot reach the mail daemon at {}: {e}",
            socket.display()
        ))
    })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(300)));
    let w = stream.try_clone().map_err(|e| temp(e.to_string()))?;
    let mut s = Smtp {
        r: BufReader::new(stream),
        w,
    };
    let (code, text) = s.reply().map_err(temp)?;
    if code != 220 {
        return Err(temp(format!("the daemon greeted with {text}")));
    }
    // A permanent refusal (5xx) of the sender or a recipient is the caller's data error.
    let classify = |e: String| {
        if e.contains(": 5") {
            (EX_DATAERR, e)
        } else {
            (EX_TEMPFAIL, e)
        }
    };
    s.command("EHLO localhost", 250).map_err(classify)?;
    let body = if !p.data.is_ascii() {
        " BODY=8BITMIME"
    } else {
        ""
    };
    s.command(&format!("MAIL FROM:<{}>{body}", p.sender), 250)
        .map_err(classify)?;
    for r in &p.rcpts {
        s.command(&format!("RCPT TO:<{r}>"), 250)
            .map_err(classify)?;
    }
    s.command("DATA", 354).map_err(classify)?;
    let mut data = p.data.clone();
    data.extend_from_slice(b".\r\n");
    s.w.write_all(&data)
        .map_err(|e| temp(format!("writing to the daemon: {e}")))?;
    let (code, text) = s.reply().map_err(temp)?;
    if code != 250 {
        return Err(classify(format!("DATA: {text}")));
    }
    let _ = s.command("QUIT", 221);
    Ok(())
}

fn deliver(opts: &Options) -> ExitCode {
    let lines = match read_message(std::io::stdin().lock(), opts.ignore_dots) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sendmail: reading the message: {e}; nothing was queued");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let prepared = match prepare(
        opts,
        lines,
        &hostname(),
        &login_name(),
        std::time::SystemTime::now(),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sendmail: {e}; nothing was queued");
            return ExitCode::from(EX_USAGE);
        }
    };
    let socket: PathBuf = crate::ctl::default_spool(None).join(mta::daemon::ENQUEUE_SOCKET);
    match submit(&socket, &prepared) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("sendmail: {e}; nothing was queued");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_cron_and_mail_use_are_understood() {
        let o = parse_args(&args(&[
            "-oi",
            "-t",
            "-f",
            "root",
            "-FCron Daemon",
            "--",
            "-odd",
        ]))
        .unwrap();
        assert!(o.from_headers && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("root"));
        assert_eq!(o.full_name.as_deref(), Some("Cron Daemon"));
        assert_eq!(o.rcpts, vec!["-odd".to_string()]);
        assert_eq!(parse_args(&args(&["-bp"])).unwrap().mode, Mode::ListQueue);
        assert_eq!(parse_args(&args(&["-bi"])).unwrap().mode, Mode::NewAliases);
        assert_eq!(
            parse_args(&args(&["-fbob@x", "a"]))
                .unwrap()
                .sender
                .as_deref(),
            Some("bob@x")
        );
        assert!(parse_args(&args(&["-bs"])).is_err());
        assert!(parse_args(&args(&["-f"])).is_err());
        assert!(parse_args(&args(&["-k"])).is_err());
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_i() {
        let input = "a\n.\nb\n";
        assert_eq!(read_message(input.as_bytes(), false).unwrap(), vec!["a"]);
        assert_eq!(
            read_message(input.as_bytes(), true).unwrap(),
            vec!["a", ".", "b"]
        );
    }

    #[test]
    fn dash_t_takes_to_cc_bcc_drops_bcc_and_adds_missing_headers() {
        let opts = Options {
            from_headers: true,
            rcpts: vec!["extra".into()],
            ..Options::default()
        };
        let lines = [
            "To: \"Doe, Jane\" <jane@example.org>, bob",
            "Cc: carol@example.net (Carol)",
            "Bcc: dave@example.com",
            "Subject: hi",
            "",
            ".leading dot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = prepare(&opts, lines, "mx.example.org", "alice", t).unwrap();
        assert_eq!(p.sender, "alice@mx.example.org");
        assert_eq!(
            p.rcpts,
            vec![
                "extra@mx.example.org",
                "jane@example.org",
                "bob@mx.example.org",
                "carol@example.net",
                "dave@example.com"
            ]
        );
        let text = String::from_utf8(p.data).unwrap();
        let pid = std::process::id();
        assert_eq!(
            text,
            format!(
                "From: alice@mx.example.org\r\n\
                 Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
                 Message-ID: <17979cfe362a0000.{pid}@mx.example.org>\r\n\
                 To: \"Doe, Jane\" <jane@example.org>, bob\r\n\
                 Cc: carol@example.net (Carol)\r\n\
                 Subject: hi\r\n\
                 \r\n\
                 ..leading dot\r\n"
            )
        );
    }

    #[test]
    fn a_bare_body_gets_headers_and_a_separating_blank_line() {
        let opts = Options {
            full_name: Some("Cron \"Daemon\"".into()),
            rcpts: vec!["root".into()],
            ..Options::default()
        };
        let p = prepare(
            &opts,
            vec!["hello".into()],
            "h",
            "root",
            std::time::UNIX_EPOCH,
        )
        .unwrap();
        let text = String::from_utf8(p.data).unwrap();
        assert!(
            text.starts_with("From: \"Cron Daemon\" <root@h>\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nhello\r\n"), "{text}");
        assert!(prepare(&Options::default(), vec![], "h", "u", std::time::UNIX_EPOCH).is_err());
    }

    #[test]
    fn mailq_groups_envelopes_by_message_with_their_errors() {
        let q = "1a2b3c4d00000001|local|local|||bob@example.org|bob@example.org|1700000000|1700345600|1700000100|1|pending|300|100|421 4.3.0 LMTP\\|down\n\
                 1a2b3c4d00000002|local|local|||carol@example.org|carol@example.org|1700000000|1700345600|0|0|pending|0|100|\n";
        assert_eq!(
            mailq_layout(q),
            "-----Q-ID----- ------Q-Time------ ------------Sender/Recipient-----------\n\
             1a2b3c4d       Tue Nov 14 22:13   <>\n\
             \x20                                 (421 4.3.0 LMTP|down)\n\
             \x20                                 bob@example.org\n\
             \x20                                 carol@example.org\n\
             \t\tTotal requests: 1\n"
        );
        assert_eq!(mailq_layout(""), "Mail queue is empty\n");
    }
}
