//! What a session hands to the queue: the envelope of one accepted message.
//!
//! This is the contract between [`crate::session`] (which fills it while the client
//! talks) and [`crate::queue`] (which makes it durable and schedules delivery).

use std::net::SocketAddr;

/// Who connected: a network peer or the local enqueuer (`fugu sendmail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Inet(SocketAddr),
    Local,
}

/// RFC 1652 / RFC 3030 body type from `MAIL FROM … BODY=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// RFC 3461 `RET=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnRet {
    Full,
    Headers,
}

/// RFC 3461 `NOTIFY=`: `never`, or any of success/failure/delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DsnNotify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// One accepted recipient with the rule decision that accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given in RCPT TO (without angle brackets), local part as typed,
    /// domain lower-cased.
    pub address: String,
    /// The name of the `action` the matching rule selected.
    pub action: String,
    /// Where expansion led (`virtual`/`alias`): the final address, when it differs
    /// from `address`. LMTP `rcpt-to` and `Delivered-To` use it.
    pub dest: Option<String>,
    /// The local user owning the mail after expansion (a userbase key), for local actions.
    pub user: Option<String>,
    /// RFC 3461 `ORCPT=` (addr-type;xtext as received).
    pub orcpt: Option<String>,
    /// RFC 3461 `NOTIFY=`; `None` when the client did not give it.
    pub notify: Option<DsnNotify>,
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// 16 hex digit session id, as in the logs.
    pub session_id: u64,
    pub origin: Origin,
    /// The name the client gave in HELO/EHLO.
    pub helo: String,
    /// The reverse name of the client, when known.
    pub rdns: Option<String>,
    /// The listener's `tag`, if any.
    pub tag: Option<String>,
    /// The authenticated user, if the session authenticated.
    pub auth_user: Option<String>,
    /// `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`, `SMTP`…, as in the Received header.
    pub protocol: String,
    /// MAIL FROM; `None` is the null reverse-path `<>`.
    pub mail_from: Option<String>,
    pub body_type: BodyType,
    pub smtputf8: bool,
    pub dsn_ret: Option<DsnRet>,
    pub dsn_envid: Option<String>,
    pub recipients: Vec<Recipient>,
}

/// One delivery an accepted RCPT leads to, after alias and virtual expansion: a
/// recipient may fan out to several (a multi-destination alias), each queued on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The action that delivers it.
    pub action: String,
    /// The final address.
    pub dest: String,
    /// The local user that owns the mail, for local actions (userbase key).
    pub user: Option<String>,
}
