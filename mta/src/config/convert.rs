//! `fugu config convert`: the ≤6.0 grammar (`accept`/`reject … deliver to|relay`) into the
//! 6.4+ grammar, per the mapping in smtpd.conf(5) of 6.4 and the reference's table. Every
//! `accept`/`reject` becomes a `match` plus (for accept) an `action`, identical actions
//! shared; actions are written after all declarations and before the first `match`.
//! Where a rule needed judgement, a `# convert:` comment says what was decided.

use std::collections::HashMap;
use std::path::PathBuf;

use super::lexer::{Lexer, Tok, Token};
use super::{Diagnostic, Diagnostics};

struct Cur<'t> {
    toks: &'t [Token],
    pos: usize,
}

impl<'t> Cur<'t> {
    fn word(&self) -> Option<&'t str> {
        match self.toks.get(self.pos).map(|t| &t.tok) {
            Some(Tok::Word { text, .. }) => Some(text),
            _ => None,
        }
    }
    fn is(&self, w: &str) -> bool {
        matches!(self.toks.get(self.pos).map(|t| &t.tok), Some(Tok::Word { text, quoted: false }) if text == w)
    }
    fn eat(&mut self, w: &str) -> bool {
        let hit = self.is(w);
        if hit {
            self.pos += 1;
        }
        hit
    }
    fn sym(&self, c: char) -> bool {
        matches!(self.toks.get(self.pos).map(|t| &t.tok), Some(Tok::Sym(s)) if *s == c)
    }
    fn done(&self) -> bool {
        self.pos >= self.toks.len()
    }
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(0, |t| t.line)
    }
    /// One token as text: quoted words stay quoted.
    fn take(&mut self) -> Option<String> {
        let t = self.toks.get(self.pos)?;
        self.pos += 1;
        Some(match &t.tok {
            Tok::Word { text, quoted: true } => super::dump::q(text),
            Tok::Word { text, .. } => text.clone(),
            Tok::Sym(c) => c.to_string(),
        })
    }
    /// A value, always written quoted (a bare old value may be a new reserved word).
    fn value(&mut self) -> Option<String> {
        let w = self.word()?.to_owned();
        self.pos += 1;
        Some(super::dump::q(&w))
    }
    /// `<name>`, `{ … }` or a single word, as text.
    fn table(&mut self) -> Option<String> {
        if self.sym('<') {
            let mut s = String::new();
            while !self.done() {
                let t = self.take()?;
                let end = t == ">";
                s += &t;
                if end {
                    return Some(s);
                }
            }
            return None;
        }
        if self.sym('{') {
            let mut parts = Vec::new();
            while !self.done() {
                let end = self.sym('}');
                let t = if self.sym('{') || self.sym('}') || self.sym(',') || self.sym('=') {
                    self.take()?
                } else {
                    self.value()?
                };
                parts.push(t);
                if end {
                    return Some(parts.join(" ").replace(" ,", ","));
                }
            }
            return None;
        }
        self.value()
    }
}

struct Converter {
    out: Vec<String>,
    actions: Vec<(String, String)>,
    rules: Vec<String>,
    diags: Vec<Diagnostic>,
    names: HashMap<String, usize>,
}

fn err(line: usize, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: PathBuf::from("<old config>"),
        line,
        col: None,
        message: message.into(),
    }
}

/// Convert old-grammar text; the result passes `fugu smtpd -n` when its files exist.
pub fn convert(old_text: &str) -> Result<String, Diagnostics> {
    let mut c = Converter {
        out: vec!["# converted from the OpenSMTPD <= 6.0 grammar by `fugu config convert`".into()],
        actions: Vec::new(),
        rules: Vec::new(),
        diags: Vec::new(),
        names: HashMap::new(),
    };
    // Macros are kept as macros: the lexer must not expand them here.
    let mut macros: HashMap<String, String> = HashMap::new();
    let mut lexer = Lexer::new(old_text);
    while let Some(st) = lexer.next_statement(&macros) {
        match st {
            Err(e) => c.diags.push(err(e.line, e.message)),
            Ok(toks) => {
                if let (Some(Tok::Word { text, .. }), Some(Tok::Sym('='))) =
                    (toks.first().map(|t| &t.tok), toks.get(1).map(|t| &t.tok))
                    && let Some(Tok::Word { text: v, .. }) = toks.get(2).map(|t| &t.tok)
                {
                    macros.insert(text.clone(), v.clone());
                    c.out.push(format!("{text} = {}", super::dump::q(v)));
                    continue;
                }
                let mut cur = Cur {
                    toks: &toks,
                    pos: 0,
                };
                if let Err(d) = c.statement(&mut cur) {
                    c.diags.push(d);
                }
            }
        }
    }
    if !c.diags.is_empty() {
        return Err(Diagnostics(c.diags));
    }
    let mut text = c.out.join("\n");
    text.push_str("\n\n");
    for (name, body) in &c.actions {
        text += &format!("action {} {body}\n", super::dump::q(name));
    }
    text.push('\n');
    for r in &c.rules {
        text += r;
        text.push('\n');
    }
    Ok(text)
}

impl Converter {
    fn statement(&mut self, c: &mut Cur<'_>) -> Result<(), Diagnostic> {
        let line = c.line();
        let Some(kw) = c.word() else {
            return Err(err(line, "syntax error"));
        };
        let kw = kw.to_owned();
        c.pos += 1;
        let rest = |c: &mut Cur<'_>| -> Vec<String> {
            let mut v = Vec::new();
            while let Some(t) = c.take() {
                v.push(t);
            }
            v
        };
        match kw.as_str() {
            "include" | "table" | "queue" if kw != "queue" || !c.is("encryption") => {
                let r = rest(c);
                self.out.push(format!("{kw} {}", r.join(" ")));
            }
            "queue" => {
                c.pos += 1;
                c.eat("key");
                let r = rest(c);
                self.out.push(
                    format!("queue encryption {}", r.join(" "))
                        .trim_end()
                        .to_owned(),
                );
            }
            "map" => {
                // map NAME { source TYPE "PATH" } (≤5.x)
                let name = c.take().ok_or_else(|| err(line, "map needs a name"))?;
                let name = name.trim_matches('"').to_owned();
                let body = rest(c).join(" ");
                let words: Vec<&str> = body
                    .split_whitespace()
                    .map(|w| w.trim_matches('"'))
                    .collect();
                let src = words.iter().position(|w| *w == "source");
                match src.and_then(|i| Some((words.get(i + 1)?, words.get(i + 2)?))) {
                    Some((ty, path)) => self.out.push(format!("table {name} {ty}:{path}")),
                    None => return Err(err(line, "cannot convert map without `source TYPE PATH`")),
                }
            }
            "pki" | "ca" => {
                let name = c
                    .value()
                    .ok_or_else(|| err(line, format!("{kw} needs a name")))?;
                let what = c.word().unwrap_or("").to_owned();
                c.pos += 1;
                let what = match what.as_str() {
                    "certificate" | "cert" => "cert",
                    "key" => "key",
                    "dhe" | "dhparams" => "dhe",
                    other => {
                        return Err(err(line, format!("cannot convert {kw} option `{other}`")));
                    }
                };
                let v = c
                    .value()
                    .ok_or_else(|| err(line, format!("{kw} {what} needs a value")))?;
                if what == "dhe" {
                    self.out.push(format!("# convert: `{kw} … dhparams FILE` dropped: 6.4+ only knows dhe none|auto|legacy"));
                    self.out.push(format!("pki {name} dhe auto"));
                } else {
                    self.out.push(format!("{kw} {name} {what} {v}"));
                }
            }
            "listen" => self.listen(c, line)?,
            "expire" => {
                let v = rest(c).join(" ");
                self.out.push(format!("queue ttl {v}"));
            }
            "bounce-warn" => {
                let v = rest(c).join(" ").replace(" ,", ",");
                self.out.push(format!("bounce warn-interval {v}"));
            }
            "max-message-size" => self
                .out
                .push(format!("smtp max-message-size {}", rest(c).join(" "))),
            "subaddressing-delimiter" => {
                let v = c
                    .value()
                    .ok_or_else(|| err(line, "subaddressing-delimiter needs a character"))?;
                self.out.push(format!("smtp sub-addr-delim {v}"));
            }
            "limit" => {
                let what = c.word().unwrap_or("").to_owned();
                c.pos += 1;
                let r = rest(c).join(" ");
                match what.as_str() {
                    "session" => self.out.push(format!("smtp limit {r}")),
                    "mta" => self.out.push(format!("mta limit {r}")),
                    "scheduler" => self.out.push(format!(
                        "# convert: `limit scheduler {r}` dropped: fugu has no scheduler limits"
                    )),
                    other => return Err(err(line, format!("cannot convert `limit {other}`"))),
                }
            }
            "accept" | "reject" => self.rule(c, line, kw == "accept")?,
            other => {
                return Err(err(
                    line,
                    format!("cannot convert `{other}`: not part of the old grammar"),
                ));
            }
        }
        Ok(())
    }

    fn listen(&mut self, c: &mut Cur<'_>, line: usize) -> Result<(), Diagnostic> {
        if !c.eat("on") {
            return Err(err(line, "listen needs `on`"));
        }
        let mut s = String::from("listen on ");
        s += &c
            .take()
            .ok_or_else(|| err(line, "listen on needs an interface"))?;
        let mut pki = None;
        let mut tls = false;
        let mut notes = Vec::new();
        while let Some(w) = c.word() {
            let w = w.to_owned();
            c.pos += 1;
            match w.as_str() {
                "port" | "tag" | "hostname" => {
                    s += &format!(" {w} {}", c.take().unwrap_or_default())
                }
                "tls" | "smtps" | "tls-require" => {
                    tls = true;
                    s += &format!(" {w}");
                    if c.eat("verify") {
                        s += " verify";
                    }
                }
                "secure" => {
                    tls = true;
                    notes.push("# convert: `secure` (STARTTLS and SMTPS) became `tls`; add a second listener with `smtps` for port 465");
                    s += " tls";
                }
                "certificate" | "pki" => pki = Some(c.value().unwrap_or_default()),
                "enable" => {
                    c.eat("auth");
                    s += " auth";
                }
                "auth" | "auth-optional" => {
                    s += &format!(" {w}");
                    if c.sym('<') || c.sym('{') {
                        s += &format!(" {}", c.table().unwrap_or_default());
                    }
                }
                "mask-source" | "mask-src" => s += " mask-src",
                "no-dsn" | "inet4" | "inet6" | "received-auth" => s += &format!(" {w}"),
                "hostnames" => s += &format!(" hostnames {}", c.table().unwrap_or_default()),
                "senders" => {
                    s += &format!(" senders {}", c.table().unwrap_or_default());
                    if c.eat("masquerade") {
                        s += " masquerade";
                    }
                }
                other => return Err(err(line, format!("cannot convert listen option `{other}`"))),
            }
        }
        match (pki, tls) {
            (Some(p), true) => s += &format!(" pki {p}"),
            (Some(_), false) => {
                notes.push("# convert: certificate without tls dropped: 6.4+ requires tls with pki")
            }
            (None, _) => {}
        }
        for n in notes {
            self.out.push(n.to_owned());
        }
        self.out.push(s);
        Ok(())
    }

    fn rule(&mut self, c: &mut Cur<'_>, line: usize, accept: bool) -> Result<(), Diagnostic> {
        let mut crit: Vec<String> = Vec::new();
        let mut opts: Vec<String> = Vec::new();
        let mut method: Option<String> = None;
        let mut user: Option<String> = None;
        let mut notes: Vec<String> = Vec::new();
        let mut ttl: Option<String> = None;
        while !c.done() {
            let neg = if c.sym('!') {
                c.pos += 1;
                "!"
            } else {
                ""
            };
            let Some(w) = c.word() else {
                return Err(err(line, "cannot convert rule: unexpected symbol"));
            };
            let w = w.to_owned();
            c.pos += 1;
            match w.as_str() {
                "authenticated" => crit.push(format!("{neg}auth")),
                "tagged" => {
                    let n = if c.sym('!') {
                        c.pos += 1;
                        "!"
                    } else {
                        neg
                    };
                    crit.push(format!("{n}tag {}", c.value().unwrap_or_default()));
                }
                "from" => {
                    let n = if c.sym('!') {
                        c.pos += 1;
                        "!"
                    } else {
                        neg
                    };
                    if c.eat("any") || c.eat("all") {
                        crit.push(format!("{n}from any"));
                    } else if c.eat("local") {
                        crit.push(format!("{n}from local"));
                    } else {
                        c.eat("source");
                        crit.push(format!(
                            "{n}from src {}",
                            c.table()
                                .ok_or_else(|| err(line, "from source needs a table"))?
                        ));
                    }
                }
                "sender" | "recipient" => {
                    let n = if c.sym('!') {
                        c.pos += 1;
                        "!"
                    } else {
                        neg
                    };
                    let kw = if w == "sender" {
                        "mail-from"
                    } else {
                        "rcpt-to"
                    };
                    crit.push(format!(
                        "{n}{kw} {}",
                        c.table()
                            .ok_or_else(|| err(line, format!("{w} needs a table")))?
                    ));
                }
                "for" => {
                    let n = if c.sym('!') {
                        c.pos += 1;
                        "!"
                    } else {
                        neg
                    };
                    if c.eat("any") || c.eat("all") {
                        crit.push(format!("{n}for any"));
                    } else if c.eat("local") {
                        crit.push(format!("{n}for local"));
                    } else {
                        c.eat("domain");
                        crit.push(format!(
                            "{n}for domain {}",
                            c.table()
                                .ok_or_else(|| err(line, "for domain needs a value"))?
                        ));
                    }
                }
                "alias" | "virtual" | "userbase" => {
                    opts.push(format!(
                        "{w} {}",
                        c.table()
                            .ok_or_else(|| err(line, format!("{w} needs a table")))?
                    ));
                }
                "deliver" => {
                    c.eat("to");
                    let m = c.word().unwrap_or("").to_owned();
                    c.pos += 1;
                    method = Some(match m.as_str() {
                        "mbox" => "mbox".into(),
                        "maildir" => match c.word() {
                            Some(p) if !c.is("as") && !c.is("expire") => {
                                let p = super::dump::q(p);
                                c.pos += 1;
                                format!("maildir {p}")
                            }
                            _ => "maildir".into(),
                        },
                        "lmtp" => {
                            let d = c
                                .value()
                                .ok_or_else(|| err(line, "lmtp needs a destination"))?;
                            if c.eat("rcpt-to") {
                                format!("lmtp {d} rcpt-to")
                            } else {
                                format!("lmtp {d}")
                            }
                        }
                        "mda" => format!(
                            "mda {}",
                            c.value().ok_or_else(|| err(line, "mda needs a command"))?
                        ),
                        other => {
                            return Err(err(line, format!("cannot convert `deliver to {other}`")));
                        }
                    });
                }
                "as" => user = Some(c.value().ok_or_else(|| err(line, "as needs a user"))?),
                "forward-only" => method = Some("forward-only".into()),
                "expire" => ttl = Some(c.take().ok_or_else(|| err(line, "expire needs a delay"))?),
                "relay" => {
                    let (m, n) = self.relay(c, line)?;
                    method = Some(m);
                    notes.extend(n);
                }
                other => return Err(err(line, format!("cannot convert rule keyword `{other}`"))),
            }
        }
        if !crit
            .iter()
            .any(|x| x.trim_start_matches('!').starts_with("for "))
        {
            // 6.0 read a rule without `for` as `for local`, like 6.4.
            crit.push("for local".into());
        }
        for n in notes {
            self.rules.push(format!("# convert: {n}"));
        }
        let crits = crit.join(" ");
        if !accept {
            self.rules.push(format!("match {crits} reject"));
            return Ok(());
        }
        let Some(method) = method else {
            return Err(err(
                line,
                "accept rule without `deliver to`, `relay` or `forward-only`",
            ));
        };
        let mut body = method.clone();
        for o in &opts {
            body += &format!(" {o}");
        }
        if let Some(u) = user {
            if method.starts_with("mbox") {
                self.rules.push(
                    "# convert: `as USER` dropped: 6.4+ does not allow user with mbox".into(),
                );
            } else {
                body += &format!(" user {u}");
            }
        }
        if let Some(t) = ttl {
            body += &format!(" ttl {t}");
        }
        let name = self.action_name(&method, &body);
        self.rules
            .push(format!("match {crits} action {}", super::dump::q(&name)));
        Ok(())
    }

    /// The relay half of an old rule: (`relay …` text, judgement notes).
    fn relay(&mut self, c: &mut Cur<'_>, line: usize) -> Result<(String, Vec<String>), Diagnostic> {
        let mut s = String::from("relay");
        let mut notes = Vec::new();
        let mut verify = false;
        let mut tls_url = false;
        let mut tls_kw = false;
        while let Some(w) = c.word() {
            if w == "expire" {
                break;
            }
            let w = w.to_owned();
            c.pos += 1;
            match w.as_str() {
                "via" => {
                    let url = c
                        .word()
                        .ok_or_else(|| err(line, "relay via needs a URL"))?
                        .to_owned();
                    c.pos += 1;
                    let (scheme, rest) = url.split_once("://").unwrap_or(("smtp", url.as_str()));
                    let new = match scheme {
                        "smtp" => "smtp",
                        "lmtp" => "lmtp",
                        "tls" | "tls+auth" => {
                            tls_url = true;
                            "smtp+tls"
                        }
                        "smtps" | "smtps+auth" => {
                            tls_url = true;
                            "smtps"
                        }
                        "secure" | "secure+auth" => {
                            tls_url = true;
                            notes.push(format!("`{scheme}://` (STARTTLS or SMTPS) became smtps://; use smtp+tls:// if the host speaks STARTTLS"));
                            "smtps"
                        }
                        other => {
                            return Err(err(
                                line,
                                format!("cannot convert relay URL scheme {other}://"),
                            ));
                        }
                    };
                    s += &format!(" host {}", super::dump::q(&format!("{new}://{rest}")));
                }
                "auth" => {
                    s += &format!(
                        " auth {}",
                        c.table().ok_or_else(|| err(line, "auth needs a table"))?
                    )
                }
                "as" => {
                    s += &format!(
                        " mail-from {}",
                        c.value().ok_or_else(|| err(line, "as needs an address"))?
                    )
                }
                "source" => {
                    s += &format!(
                        " src {}",
                        c.table().ok_or_else(|| err(line, "source needs a table"))?
                    )
                }
                "hostname" => {
                    s += &format!(
                        " helo {}",
                        c.value()
                            .ok_or_else(|| err(line, "hostname needs a name"))?
                    )
                }
                "hostnames" => {
                    s += &format!(
                        " helo-src {}",
                        c.table()
                            .ok_or_else(|| err(line, "hostnames needs a table"))?
                    )
                }
                "pki" => {
                    s += &format!(
                        " pki {}",
                        c.value().ok_or_else(|| err(line, "pki needs a name"))?
                    )
                }
                "tls" => tls_kw = true,
                "verify" => verify = true,
                "backup" => {
                    s += " backup";
                    if c.eat("mx") {
                        s += &format!(" mx {}", c.value().ok_or_else(|| err(line, "backup mx needs a name"))?);
                    } else if let Some(mx) = c.word().filter(|_| !c.is("expire") && c.toks.get(c.pos).is_some_and(|t| matches!(&t.tok, Tok::Word { quoted: true, .. }) || !matches!(&t.tok, Tok::Word { text, .. } if is_old_relay_kw(text)))) {
                        let mx = super::dump::q(mx);
                        c.pos += 1;
                        s += &format!(" mx {mx}");
                    }
                }
                other => return Err(err(line, format!("cannot convert relay option `{other}`"))),
            }
        }
        if tls_kw && verify {
            s += " tls";
        } else if tls_kw || (tls_url && !verify) {
            // ≤6.0 did not verify server certificates unless told; 6.4+ verifies by default.
            s += " tls no-verify";
            notes.push("6.0 did not verify the relay's certificate here; `tls no-verify` keeps that (remove it to verify)".into());
        }
        Ok((s, notes))
    }

    fn action_name(&mut self, method: &str, body: &str) -> String {
        if let Some((n, _)) = self.actions.iter().find(|(_, b)| b == body) {
            return n.clone();
        }
        let base = method
            .split_whitespace()
            .next()
            .unwrap_or("action")
            .replace('-', "_");
        let base = if base == "relay" {
            "relay".to_owned()
        } else {
            format!("local_{base}")
        };
        let n = self.names.entry(base.clone()).or_insert(0);
        *n += 1;
        let name = if *n == 1 { base } else { format!("{base}_{n}") };
        self.actions.push((name.clone(), body.to_owned()));
        name
    }
}

fn is_old_relay_kw(w: &str) -> bool {
    matches!(
        w,
        "via"
            | "auth"
            | "as"
            | "source"
            | "hostname"
            | "hostnames"
            | "pki"
            | "tls"
            | "verify"
            | "backup"
            | "expire"
    )
}
