//! AUTH PLAIN and AUTH LOGIN framing (RFC 4954, RFC 4616). The session only frames the
//! exchange: it emits [`Action::VerifyCredentials`] and waits for the verdict. AUTH is
//! accepted only where it is advertised: a listener with `auth`/`auth-optional`, on a
//! TLS session, not yet authenticated. Credentials are never logged.

use super::{Action, AuthVerdict, FilterPhase, Mode, Session, Wait, reply};

/// What a `failed-command` log line shows for an AUTH line.
pub(super) fn log_text(args: Option<&str>) -> String {
    let mech = args
        .and_then(|a| a.split([' ', '\t']).next())
        .unwrap_or("")
        .to_ascii_uppercase();
    let mech: String = mech
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(20)
        .collect();
    format!("AUTH {mech} (...)")
}

impl Session {
    pub(super) fn auth(&mut self, args: Option<&str>) {
        if self.helo.is_none() || self.tx.is_some() {
            return self.reply(reply::bad_sequence());
        }
        if self.auth_user.is_some() {
            return self.reply(reply::already_authenticated());
        }
        if !self.auth_offered() {
            return self.reply(reply::command_not_supported());
        }
        let Some(args) = args else {
            return self.reply(reply::auth_no_parameters());
        };
        // smtpd-filters(7): the `auth` phase sees the raw arguments, as OpenSMTPD sends.
        self.filter_phase(FilterPhase::Auth, args.to_string());
    }

    /// AUTH once the filters let it through (`args` may be a filter's rewrite).
    pub(super) fn auth_proceed(&mut self, args: &str) {
        let (mech, initial) = match args.split_once([' ', '\t']) {
            Some((m, i)) => (m, Some(i.trim())),
            None => (args, None),
        };
        if mech.eq_ignore_ascii_case("PLAIN") {
            match initial {
                None => {
                    self.mode = Mode::AuthPlain;
                    self.out.push_back(Action::Reply(reply::auth_challenge("")));
                }
                Some(ir) => self.auth_plain_response(ir),
            }
        } else if mech.eq_ignore_ascii_case("LOGIN") {
            self.mode = Mode::AuthLoginUser;
            match initial {
                None => self
                    .out
                    .push_back(Action::Reply(reply::auth_challenge("VXNlcm5hbWU6"))),
                Some(ir) => self.auth_login_response(ir),
            }
        } else {
            self.reply(reply::auth_mechanism_unsupported(mech));
        }
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`, base64; `=` is an empty response.
    pub(super) fn auth_plain_response(&mut self, line: &str) {
        self.mode = Mode::Command;
        self.last_command = "AUTH PLAIN (...)".into();
        if line == "*" {
            return self.reply(reply::auth_cancelled());
        }
        let decoded = if line == "=" {
            Some(Vec::new())
        } else {
            base64_decode(line)
        };
        let Some(decoded) = decoded else {
            return self.reply(reply::auth_syntax_error());
        };
        let mut parts = decoded.split(|&b| b == 0);
        let (Some(_authzid), Some(user), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.reply(reply::auth_syntax_error());
        };
        match (std::str::from_utf8(user), std::str::from_utf8(pass)) {
            (Ok(u), Ok(p)) if !u.is_empty() && !p.is_empty() => {
                self.verify(u.to_string(), p.to_string())
            }
            _ => self.reply(reply::auth_syntax_error()),
        }
    }

    pub(super) fn auth_login_response(&mut self, line: &str) {
        let mode = std::mem::replace(&mut self.mode, Mode::Command);
        if line == "*" {
            self.last_command = "AUTH LOGIN (...)".into();
            return self.reply(reply::auth_cancelled());
        }
        let text = base64_decode(line).and_then(|d| String::from_utf8(d).ok());
        match (mode, text) {
            (Mode::AuthLoginUser, Some(user)) if !user.is_empty() => {
                self.mode = Mode::AuthLoginPass { user };
                self.out
                    .push_back(Action::Reply(reply::auth_challenge("UGFzc3dvcmQ6")));
            }
            (Mode::AuthLoginPass { user }, Some(pass)) if !pass.is_empty() => {
                self.verify(user, pass)
            }
            (Mode::AuthLoginUser, _) => {
                self.last_command = "AUTH LOGIN (username)".into();
                self.reply(reply::auth_syntax_error())
            }
            _ => {
                self.last_command = "AUTH LOGIN (password)".into();
                self.reply(reply::auth_syntax_error())
            }
        }
    }

    fn verify(&mut self, user: String, password: String) {
        self.pending_auth_user = Some(user.clone());
        self.out
            .push_back(Action::VerifyCredentials { user, password });
        self.waiting = Some(Wait::Auth);
    }

    pub(super) fn auth_verdict(&mut self, verdict: AuthVerdict) {
        if self.waiting != Some(Wait::Auth) {
            return;
        }
        self.waiting = None;
        let user = self.pending_auth_user.take().unwrap_or_default();
        let shown: String = user.escape_default().collect();
        match verdict {
            AuthVerdict::Ok => {
                self.log(format!("smtp authentication user={shown} result=ok"));
                self.auth_user = Some(user);
                self.reply(reply::auth_succeeded());
            }
            AuthVerdict::Fail => {
                self.log(format!("smtp authentication user={shown} result=permfail"));
                self.reply(reply::auth_failed());
            }
            AuthVerdict::TempFail => {
                self.log(format!("smtp authentication user={shown} result=tempfail"));
                self.reply(reply::auth_tempfail());
            }
        }
    }
}

/// Strict RFC 4648 base64 (padding required, no whitespace).
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = (i + 1) * 4 == b.len();
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_strictly() {
        assert_eq!(
            base64_decode("AGFsaWNlAHNlY3JldA==").unwrap(),
            b"\0alice\0secret"
        );
        assert_eq!(base64_decode("VXNlcm5hbWU6").unwrap(), b"Username:");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("YQ=").is_none());
        assert!(base64_decode("Y===").is_none());
        assert!(base64_decode("YQ==YQ==").is_none());
        assert!(base64_decode("Y Q==").is_none());
        assert!(base64_decode("").is_none());
    }
}
