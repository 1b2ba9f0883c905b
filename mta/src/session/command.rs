//! Splitting a command line into its verb and arguments, as OpenSMTPD's `smtp_command`:
//! `MAIL FROM:` and `RCPT TO:` carry a space inside the verb; every other verb ends at the
//! first space. Verbs are case-insensitive (RFC 5321 §2.4).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Helo,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Quit,
    Noop,
    Help,
    Vrfy,
    Expn,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    pub verb: Verb,
    /// Text after the verb (for MAIL/RCPT: after the colon, untouched, so that a space
    /// after the colon can be refused). `None` when there is none.
    pub args: Option<&'a str>,
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

pub fn parse(line: &str) -> Command<'_> {
    let line = line.trim_end_matches([' ', '\t']);
    for (prefix, verb) in [("MAIL FROM:", Verb::Mail), ("RCPT TO:", Verb::Rcpt)] {
        if starts_with_ci(line, prefix) {
            let rest = &line[prefix.len()..];
            return Command {
                verb,
                args: (!rest.is_empty()).then_some(rest),
            };
        }
    }
    let (word, args) = match line.split_once([' ', '\t']) {
        Some((w, a)) => {
            let a = a.trim_start_matches([' ', '\t']);
            (w, (!a.is_empty()).then_some(a))
        }
        None => (line, None),
    };
    let verb = match word.to_ascii_uppercase().as_str() {
        "HELO" => Verb::Helo,
        "EHLO" => Verb::Ehlo,
        "STARTTLS" => Verb::StartTls,
        "AUTH" => Verb::Auth,
        // "MAIL" or "RCPT" without the "FROM:"/"TO:" part: a MAIL/RCPT syntax error.
        "MAIL" => Verb::Mail,
        "RCPT" => Verb::Rcpt,
        "DATA" => Verb::Data,
        "BDAT" => Verb::Bdat,
        "RSET" => Verb::Rset,
        "QUIT" => Verb::Quit,
        "NOOP" => Verb::Noop,
        "HELP" => Verb::Help,
        "VRFY" => Verb::Vrfy,
        "EXPN" => Verb::Expn,
        _ => Verb::Unknown,
    };
    if matches!(verb, Verb::Mail | Verb::Rcpt) {
        // Marker for "verb present but FROM:/TO: missing".
        return Command { verb, args: None };
    }
    Command { verb, args }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_verbs_like_opensmtpd() {
        assert_eq!(parse("mail from:<a@b> SIZE=1").args, Some("<a@b> SIZE=1"));
        assert_eq!(parse("RCPT TO: <a@b>").args, Some(" <a@b>"));
        assert_eq!(parse("EHLO  client.example ").args, Some("client.example"));
        assert_eq!(parse("QUIT").args, None);
        assert_eq!(
            parse("MAIL <a@b>"),
            Command {
                verb: Verb::Mail,
                args: None
            }
        );
        assert_eq!(parse("FOO bar").verb, Verb::Unknown);
        assert_eq!(parse("").verb, Verb::Unknown);
    }
}
