//! The on-disk envelope: a versioned, line-based `key: value` text in the spirit of
//! OpenSMTPD's envelope version 3, one file per message with one `rcpt:` block per
//! recipient, so `fugu ctl show envelope` can print it as is.
//!
//! ```text
//! version: 1
//! msgid: 1a2b3c4d
//! ctime: 1700000000
//! expire: 1700345600
//! message: plain
//! session: 00000000000000aa
//! origin: inet 192.0.2.1:40000
//! helo: client.example.org
//! protocol: ESMTPS
//! sender: alice@example.org
//! body: 8bitmime
//! smtputf8: no
//!
//! rcpt: 1a2b3c4d9e8f7a6b
//! address: bob@example.net
//! action: deliver
//! state: deferred
//! retry: 2
//! last-try: 1700000600
//! next-try: 1700001800
//! last-error: 451 4.3.0 try later
//! ```
//!
//! Values are escaped (`\\`, `\n`, `\r`, `\xHH` for other control characters) so one
//! value is always one line. The decoder is strict: an unknown version or key, a missing
//! required key, a bad number or escape is an error naming the line, never a panic.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::envelope::{BodyType, DsnNotify, DsnRet, Envelope, Origin, Recipient};
use crate::error::Error;
use crate::queue::id::{EvpId, MsgId};

pub const ENVELOPE_VERSION: u32 = 1;

/// How the message file's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageEncoding {
    #[default]
    Plain,
    Zstd,
    Aes256Gcm,
    ZstdAes256Gcm,
}

impl MessageEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageEncoding::Plain => "plain",
            MessageEncoding::Zstd => "zstd",
            MessageEncoding::Aes256Gcm => "aes-256-gcm",
            MessageEncoding::ZstdAes256Gcm => "zstd+aes-256-gcm",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "plain" => MessageEncoding::Plain,
            "zstd" => MessageEncoding::Zstd,
            "aes-256-gcm" => MessageEncoding::Aes256Gcm,
            "zstd+aes-256-gcm" => MessageEncoding::ZstdAes256Gcm,
            _ => return None,
        })
    }

    pub fn compressed(self) -> bool {
        matches!(self, MessageEncoding::Zstd | MessageEncoding::ZstdAes256Gcm)
    }

    pub fn encrypted(self) -> bool {
        matches!(
            self,
            MessageEncoding::Aes256Gcm | MessageEncoding::ZstdAes256Gcm
        )
    }
}

/// Where a recipient stands between attempts. Delivered and permanently failed
/// recipients are removed from the file; in-flight is a runtime state only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptState {
    /// Never tried yet.
    Pending,
    /// Tried and temporarily failed; due again at `next_try`.
    Deferred,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRcpt {
    pub evpid: EvpId,
    pub recipient: Recipient,
    pub state: RcptState,
    pub retries: u32,
    /// Unix seconds; 0 = never.
    pub last_try: i64,
    /// Unix seconds at which the recipient is due.
    pub next_try: i64,
    pub last_error: Option<String>,
    /// Delay warnings sent so far (one per `bounce warn-interval` passed).
    pub warnings: u32,
}

/// One queued message: the envelope the session handed over (its `recipients` field is
/// left empty; the recipients live in `rcpts` with their state) plus queue metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    pub msgid: MsgId,
    /// Unix seconds when the message was committed.
    pub ctime: i64,
    /// Unix seconds after which undelivered recipients bounce (`ctime + queue ttl`).
    pub expire: i64,
    pub encoding: MessageEncoding,
    /// A delivery status notification made by this queue (never bounced itself).
    pub is_bounce: bool,
    /// Shared with every delivery attempt of the message.
    pub header: Arc<Envelope>,
    pub rcpts: Vec<StoredRcpt>,
}

fn escape(v: &str, out: &mut String) {
    if !v.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn unescape(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            if (c as u32) < 0x20 || c as u32 == 0x7f {
                return Err("raw control character in value".into());
            }
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('x') => {
                let h: String = it.by_ref().take(2).collect();
                let b = u8::from_str_radix(&h, 16)
                    .ok()
                    .filter(|b| h.len() == 2 && *b < 0x80)
                    .ok_or_else(|| format!("bad \\x escape {h:?}"))?;
                out.push(char::from(b));
            }
            other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

fn kv(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str(": ");
    escape(value, out);
    out.push('\n');
}

/// A value that never needs escaping (a number, an id, an address), written in place.
fn kv_plain(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{key}: {value}");
}

fn notify_str(n: &DsnNotify) -> String {
    if n.never {
        return "never".into();
    }
    let mut parts = Vec::new();
    if n.success {
        parts.push("success");
    }
    if n.failure {
        parts.push("failure");
    }
    if n.delay {
        parts.push("delay");
    }
    parts.join(",")
}

/// Renders the envelope file.
pub fn encode(e: &StoredEnvelope) -> String {
    let h = &e.header;
    let mut o = String::with_capacity(512);
    kv_plain(&mut o, "version", ENVELOPE_VERSION);
    kv_plain(&mut o, "msgid", e.msgid);
    kv_plain(&mut o, "ctime", e.ctime);
    kv_plain(&mut o, "expire", e.expire);
    kv(&mut o, "message", e.encoding.as_str());
    if e.is_bounce {
        kv(&mut o, "flags", "bounce");
    }
    kv_plain(&mut o, "session", format_args!("{:016x}", h.session_id));
    match &h.origin {
        Origin::Inet(a) => kv_plain(&mut o, "origin", format_args!("inet {a}")),
        Origin::Local => kv(&mut o, "origin", "local"),
    }
    kv(&mut o, "helo", &h.helo);
    if let Some(v) = &h.rdns {
        kv(&mut o, "rdns", v);
    }
    if let Some(v) = &h.tag {
        kv(&mut o, "tag", v);
    }
    if let Some(v) = &h.auth_user {
        kv(&mut o, "auth-user", v);
    }
    kv(&mut o, "protocol", &h.protocol);
    kv(&mut o, "sender", h.mail_from.as_deref().unwrap_or("<>"));
    kv(
        &mut o,
        "body",
        match h.body_type {
            BodyType::SevenBit => "7bit",
            BodyType::EightBitMime => "8bitmime",
            BodyType::BinaryMime => "binarymime",
        },
    );
    kv(&mut o, "smtputf8", if h.smtputf8 { "yes" } else { "no" });
    if let Some(r) = h.dsn_ret {
        kv(
            &mut o,
            "dsn-ret",
            match r {
                DsnRet::Full => "full",
                DsnRet::Headers => "hdrs",
            },
        );
    }
    if let Some(v) = &h.dsn_envid {
        kv(&mut o, "dsn-envid", v);
    }
    for r in &e.rcpts {
        o.push('\n');
        kv_plain(&mut o, "rcpt", r.evpid);
        kv(&mut o, "address", &r.recipient.address);
        kv(&mut o, "action", &r.recipient.action);
        if let Some(v) = &r.recipient.dest {
            kv(&mut o, "dest", v);
        }
        if let Some(v) = &r.recipient.user {
            kv(&mut o, "user", v);
        }
        if let Some(v) = &r.recipient.orcpt {
            kv(&mut o, "orcpt", v);
        }
        if let Some(n) = &r.recipient.notify {
            kv(&mut o, "notify", &notify_str(n));
        }
        kv(
            &mut o,
            "state",
            match r.state {
                RcptState::Pending => "pending",
                RcptState::Deferred => "deferred",
            },
        );
        kv_plain(&mut o, "retry", r.retries);
        kv_plain(&mut o, "last-try", r.last_try);
        kv_plain(&mut o, "next-try", r.next_try);
        if let Some(v) = &r.last_error {
            kv(&mut o, "last-error", v);
        }
        // Absent means none: envelopes written before delay warnings existed decode.
        if r.warnings > 0 {
            kv_plain(&mut o, "warnings", r.warnings);
        }
    }
    o
}

#[derive(Default)]
struct RcptDraft {
    evpid: Option<EvpId>,
    address: Option<String>,
    action: Option<String>,
    dest: Option<String>,
    user: Option<String>,
    orcpt: Option<String>,
    notify: Option<DsnNotify>,
    state: Option<RcptState>,
    retries: u32,
    last_try: i64,
    next_try: i64,
    last_error: Option<String>,
    warnings: u32,
}

/// Decodes an envelope file; `path` only names the file in errors.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<StoredEnvelope, Error> {
    let bad = |line: usize, reason: String| Error::BadEnvelope {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(0, format!("not UTF-8: {e}")))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(bad(text.lines().count(), "truncated last line".into()));
    }

    let mut version = None;
    let mut msgid = None;
    let mut ctime = None;
    let mut expire = None;
    let mut encoding = None;
    let mut is_bounce = false;
    let mut session = None;
    let mut origin = None;
    let mut helo = None;
    let mut rdns = None;
    let mut tag = None;
    let mut auth_user = None;
    let mut protocol = None;
    let mut sender: Option<Option<String>> = None;
    let mut body = None;
    let mut smtputf8 = None;
    let mut dsn_ret = None;
    let mut dsn_envid = None;
    let mut rcpts: Vec<(usize, RcptDraft)> = Vec::new();

    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.is_empty() {
            continue;
        }
        let (key, value) = raw
            .split_once(": ")
            .or_else(|| raw.strip_suffix(':').map(|k| (k, "")))
            .ok_or_else(|| bad(n, "expected `key: value`".into()))?;
        let value = unescape(value).map_err(|r| bad(n, r))?;
        if version.is_none() && key != "version" {
            return Err(bad(n, "the first line must be `version`".into()));
        }
        let num = |v: &str| -> Result<i64, Error> {
            v.parse::<i64>()
                .map_err(|_| bad(n, format!("{key}: not a number: {v:?}")))
        };
        if key == "rcpt" {
            let evpid: EvpId = value
                .parse()
                .map_err(|_| bad(n, format!("bad envelope id {value:?}")))?;
            rcpts.push((
                n,
                RcptDraft {
                    evpid: Some(evpid),
                    ..RcptDraft::default()
                },
            ));
            continue;
        }
        if let Some((_, r)) = rcpts.last_mut() {
            match key {
                "address" => r.address = Some(value),
                "action" => r.action = Some(value),
                "dest" => r.dest = Some(value),
                "user" => r.user = Some(value),
                "orcpt" => r.orcpt = Some(value),
                "notify" => r.notify = Some(parse_notify(&value).map_err(|e| bad(n, e))?),
                "state" => {
                    r.state = Some(match value.as_str() {
                        "pending" => RcptState::Pending,
                        "deferred" => RcptState::Deferred,
                        _ => return Err(bad(n, format!("unknown state {value:?}"))),
                    })
                }
                "retry" => {
                    r.retries = u32::try_from(num(&value)?)
                        .map_err(|_| bad(n, "retry out of range".into()))?
                }
                "last-try" => r.last_try = num(&value)?,
                "next-try" => r.next_try = num(&value)?,
                "last-error" => r.last_error = Some(value),
                "warnings" => {
                    r.warnings = u32::try_from(num(&value)?)
                        .map_err(|_| bad(n, "warnings out of range".into()))?
                }
                _ => return Err(bad(n, format!("unknown recipient key {key:?}"))),
            }
            continue;
        }
        match key {
            "version" => {
                if version.is_some() {
                    return Err(bad(n, "duplicate version".into()));
                }
                let v = num(&value)?;
                if v != i64::from(ENVELOPE_VERSION) {
                    return Err(bad(n, format!("unsupported envelope version {v}")));
                }
                version = Some(v);
            }
            "msgid" => {
                msgid = Some(
                    value
                        .parse::<MsgId>()
                        .map_err(|_| bad(n, format!("bad msgid {value:?}")))?,
                )
            }
            "ctime" => ctime = Some(num(&value)?),
            "expire" => expire = Some(num(&value)?),
            "message" => {
                encoding = Some(
                    MessageEncoding::parse(&value)
                        .ok_or_else(|| bad(n, format!("unknown message encoding {value:?}")))?,
                )
            }
            "flags" => {
                for f in value.split(',').filter(|f| !f.is_empty()) {
                    match f {
                        "bounce" => is_bounce = true,
                        _ => return Err(bad(n, format!("unknown flag {f:?}"))),
                    }
                }
            }
            "session" => {
                session = Some(
                    u64::from_str_radix(&value, 16)
                        .map_err(|_| bad(n, format!("bad session id {value:?}")))?,
                )
            }
            "origin" => {
                origin = Some(if value == "local" {
                    Origin::Local
                } else if let Some(a) = value.strip_prefix("inet ") {
                    Origin::Inet(
                        a.parse::<SocketAddr>()
                            .map_err(|_| bad(n, format!("bad address {a:?}")))?,
                    )
                } else {
                    return Err(bad(n, format!("bad origin {value:?}")));
                })
            }
            "helo" => helo = Some(value),
            "rdns" => rdns = Some(value),
            "tag" => tag = Some(value),
            "auth-user" => auth_user = Some(value),
            "protocol" => protocol = Some(value),
            "sender" => sender = Some(if value == "<>" { None } else { Some(value) }),
            "body" => {
                body = Some(match value.as_str() {
                    "7bit" => BodyType::SevenBit,
                    "8bitmime" => BodyType::EightBitMime,
                    "binarymime" => BodyType::BinaryMime,
                    _ => return Err(bad(n, format!("unknown body type {value:?}"))),
                })
            }
            "smtputf8" => {
                smtputf8 = Some(match value.as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad(n, "smtputf8 must be yes or no".into())),
                })
            }
            "dsn-ret" => {
                dsn_ret = Some(match value.as_str() {
                    "full" => DsnRet::Full,
                    "hdrs" => DsnRet::Headers,
                    _ => return Err(bad(n, format!("unknown dsn-ret {value:?}"))),
                })
            }
            "dsn-envid" => dsn_envid = Some(value),
            _ => return Err(bad(n, format!("unknown key {key:?}"))),
        }
    }

    let end = text.lines().count();
    let need = |what: &str| bad(end, format!("missing `{what}`"));
    if version.is_none() {
        return Err(bad(1, "empty envelope".into()));
    }
    let msgid = msgid.ok_or_else(|| need("msgid"))?;
    let mut out_rcpts = Vec::with_capacity(rcpts.len());
    for (line, r) in rcpts {
        let evpid = r
            .evpid
            .ok_or_else(|| bad(line, "missing envelope id".into()))?;
        if evpid.msgid() != msgid {
            return Err(bad(
                line,
                format!("envelope {evpid} is not under message {msgid}"),
            ));
        }
        out_rcpts.push(StoredRcpt {
            evpid,
            recipient: Recipient {
                address: r
                    .address
                    .ok_or_else(|| bad(line, "recipient without `address`".into()))?,
                action: r
                    .action
                    .ok_or_else(|| bad(line, "recipient without `action`".into()))?,
                dest: r.dest,
                user: r.user,
                orcpt: r.orcpt,
                notify: r.notify,
            },
            state: r
                .state
                .ok_or_else(|| bad(line, "recipient without `state`".into()))?,
            retries: r.retries,
            last_try: r.last_try,
            next_try: r.next_try,
            last_error: r.last_error,
            warnings: r.warnings,
        });
    }
    if out_rcpts.is_empty() {
        return Err(need("rcpt"));
    }
    Ok(StoredEnvelope {
        msgid,
        ctime: ctime.ok_or_else(|| need("ctime"))?,
        expire: expire.ok_or_else(|| need("expire"))?,
        encoding: encoding.ok_or_else(|| need("message"))?,
        is_bounce,
        header: Arc::new(Envelope {
            session_id: session.ok_or_else(|| need("session"))?,
            origin: origin.ok_or_else(|| need("origin"))?,
            helo: helo.ok_or_else(|| need("helo"))?,
            rdns,
            tag,
            auth_user,
            protocol: protocol.ok_or_else(|| need("protocol"))?,
            mail_from: sender.ok_or_else(|| need("sender"))?,
            body_type: body.ok_or_else(|| need("body"))?,
            smtputf8: smtputf8.ok_or_else(|| need("smtputf8"))?,
            dsn_ret,
            dsn_envid,
            recipients: Vec::new(),
        }),
        rcpts: out_rcpts,
    })
}

fn parse_notify(v: &str) -> Result<DsnNotify, String> {
    let mut n = DsnNotify::default();
    for part in v.split(',') {
        match part {
            "never" => n.never = true,
            "success" => n.success = true,
            "failure" => n.failure = true,
            "delay" => n.delay = true,
            _ => return Err(format!("unknown notify value {part:?}")),
        }
    }
    if n.never && (n.success || n.failure || n.delay) {
        return Err("notify never cannot be combined".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> StoredEnvelope {
        let msgid = MsgId(0x1a2b3c4d);
        StoredEnvelope {
            msgid,
            ctime: 1_700_000_000,
            expire: 1_700_345_600,
            encoding: MessageEncoding::Plain,
            is_bounce: false,
            header: Arc::new(Envelope {
                session_id: 0xaa,
                origin: Origin::Inet("[2001:db8::1]:40000".parse().unwrap()),
                helo: "client.example.org".into(),
                rdns: Some("client.example.org".into()),
                tag: None,
                auth_user: Some("alice".into()),
                protocol: "ESMTPSA".into(),
                mail_from: Some("alice@example.org".into()),
                body_type: BodyType::EightBitMime,
                smtputf8: false,
                dsn_ret: Some(DsnRet::Headers),
                dsn_envid: Some("QQ314159".into()),
                recipients: vec![],
            }),
            rcpts: vec![StoredRcpt {
                evpid: EvpId(0x1a2b3c4d_00000001),
                recipient: Recipient {
                    address: "bob@example.net".into(),
                    action: "deliver".into(),
                    dest: Some("robert@example.net".into()),
                    user: Some("vmail".into()),
                    orcpt: Some("rfc822;bob@example.net".into()),
                    notify: Some(DsnNotify {
                        failure: true,
                        delay: true,
                        ..DsnNotify::default()
                    }),
                },
                state: RcptState::Deferred,
                retries: 2,
                last_try: 1_700_000_600,
                next_try: 1_700_001_800,
                last_error: Some("451 4.3.0 try\\later\r\nsecond line\x01".into()),
                warnings: 1,
            }],
        }
    }

    #[test]
    fn round_trips_every_field() {
        let e = sample();
        let text = encode(&e);
        assert!(text.starts_with("version: 1\n"));
        assert!(text.contains("last-error: 451 4.3.0 try\\\\later\\r\\nsecond line\\x01\n"));
        assert_eq!(decode(Path::new("x"), text.as_bytes()).unwrap(), e);
    }

    #[test]
    fn null_sender_and_local_origin_round_trip() {
        let mut e = sample();
        Arc::make_mut(&mut e.header).mail_from = None;
        Arc::make_mut(&mut e.header).origin = Origin::Local;
        e.is_bounce = true;
        let d = decode(Path::new("x"), encode(&e).as_bytes()).unwrap();
        assert_eq!(d, e);
    }

    fn err_of(text: &str) -> String {
        decode(Path::new("q/e"), text.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn rejects_garbage_with_the_line() {
        let good = encode(&sample());
        assert!(err_of("").contains("empty envelope"));
        assert!(err_of("\u{0}\u{1}garbage\n").contains("q/e:1:"));
        assert!(err_of("version: 2\n").contains("unsupported envelope version 2"));
        assert!(err_of("msgid: 1a2b3c4d\n").contains("first line must be `version`"));
        let t = good.replace("ctime: 1700000000", "ctime: soon");
        assert!(err_of(&t).contains(":3: bad envelope: ctime: not a number"));
        let t = good.replace("body: 8bitmime", "colour: blue");
        assert!(err_of(&t).contains("unknown key \"colour\""));
        let t = good.replace("rcpt: 1a2b3c4d00000001", "rcpt: 0000000100000001");
        assert!(err_of(&t).contains("is not under message"));
        assert!(err_of(&good[..good.len() - 3]).contains("truncated"));
        let header_only: String = good.split("\nrcpt:").next().unwrap().to_string() + "\n";
        assert!(err_of(&header_only).contains("missing `rcpt`"));
        assert!(err_of("version: 1\nhelo: a\\q\n").contains("bad escape"));
    }

    #[test]
    fn decoder_never_panics_on_mutations() {
        let good = encode(&sample()).into_bytes();
        // Every truncation and every single-byte corruption decodes or errors.
        for cut in 0..good.len() {
            let _ = decode(Path::new("x"), &good[..cut]);
        }
        for i in 0..good.len() {
            for b in [0u8, b'\n', b':', b'\\', 0xff, b'x'] {
                let mut m = good.clone();
                m[i] = b;
                let _ = decode(Path::new("x"), &m);
            }
        }
    }
}
