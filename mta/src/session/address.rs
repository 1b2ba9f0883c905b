//! Mailbox and path syntax: RFC 5321 §4.1.2 with RFC 6531 (UTF-8) extensions.
//!
//! Accepted: dot-string and quoted local parts, LDH domains (underscores tolerated, as
//! OpenSMTPD does), IDNA A-labels, UTF-8 U-labels (reported so the caller can demand
//! SMTPUTF8), address literals `[192.0.2.1]` / `[IPv6:2001:db8::1]`, and source routes
//! `<@a,@b:user@d>`, which RFC 5321 §4.1.1.3 says to accept and ignore. A path without a
//! domain gets the server's name, as in OpenSMTPD (`RCPT TO:<postmaster>`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// RFC 5321 §4.5.3.1.1 / §4.5.3.1.2 / §4.5.3.1.3.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_PATH: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// As typed, quotes included for a quoted local part.
    pub local: String,
    /// Lower-cased.
    pub domain: String,
}

impl Mailbox {
    pub fn to_address(&self) -> String {
        format!("{}@{}", self.local, self.domain)
    }

    pub fn is_ascii(&self) -> bool {
        self.local.is_ascii() && self.domain.is_ascii()
    }
}

/// A parsed `<path>` and whatever followed it on the line (the ESMTP parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPath<'a> {
    /// `None` for the null path `<>`.
    pub mailbox: Option<Mailbox>,
    pub rest: &'a str,
}

/// Parses `<…>` at the start of `s`. `rest` is what follows the `>` (must be empty or
/// start with a space).
pub fn parse_path<'a>(s: &'a str, default_domain: &str) -> Option<ParsedPath<'a>> {
    let inner_start = s.strip_prefix('<')?;
    let close = find_close(inner_start)?;
    let inner = &inner_start[..close];
    let rest = &inner_start[close + 1..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    if inner.len() > MAX_PATH {
        return None;
    }
    if inner.is_empty() {
        return Some(ParsedPath {
            mailbox: None,
            rest,
        });
    }
    let mailbox_text = strip_source_route(inner)?;
    let mailbox = parse_mailbox(mailbox_text, default_domain)?;
    Some(ParsedPath {
        mailbox: Some(mailbox),
        rest,
    })
}

/// The index of the `>` that closes the path, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// RFC 5321 §4.1.2 `A-d-l ":"`: `@one,@two:` is checked and dropped.
fn strip_source_route(s: &str) -> Option<&str> {
    if !s.starts_with('@') {
        return Some(s);
    }
    let (route, mailbox) = s.split_once(':')?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@')?;
        if !valid_domain(domain) {
            return None;
        }
    }
    Some(mailbox)
}

pub fn parse_mailbox(s: &str, default_domain: &str) -> Option<Mailbox> {
    let (local, domain) = match split_at_domain(s) {
        Some((l, d)) => (l, d.to_string()),
        None => (s, default_domain.to_string()),
    };
    if local.is_empty() || local.len() > MAX_LOCAL || !valid_local(local) {
        return None;
    }
    if !valid_domain(&domain) {
        return None;
    }
    Some(Mailbox {
        local: local.to_string(),
        domain: domain.to_lowercase(),
    })
}

/// Splits at the `@` that is outside the quoted local part.
fn split_at_domain(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('"') {
        let end = closing_quote(s)?;
        let after = &s[end + 1..];
        return match after.strip_prefix('@') {
            Some(d) => Some((&s[..=end], d)),
            None if after.is_empty() => None,
            None => Some((s, "")), // garbage after the quote: rejected by valid_local
        };
    }
    s.rsplit_once('@')
}

fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Some(i);
        }
    }
    None
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

/// RFC 5321 §4.1.2 `Local-part = Dot-string / Quoted-string` (RFC 6531 adds UTF-8).
pub fn valid_local(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('"') {
        let Some(inner) = inner.strip_suffix('"') else {
            return false;
        };
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                // quoted-pairSMTP = %d92 %d32-126
                '\\' => match chars.next() {
                    Some(n) if (' '..='~').contains(&n) => {}
                    _ => return false,
                },
                '"' => return false,
                // qtextSMTP = %d32-33 / %d35-91 / %d93-126 / UTF8-non-ascii
                c if (' '..='~').contains(&c) => {}
                c if !c.is_ascii() && !c.is_control() => {}
                _ => return false,
            }
        }
        return true;
    }
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// A domain or an address literal, as in EHLO and after `@`.
pub fn valid_domain(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_DOMAIN {
        return false;
    }
    if let Some(lit) = s.strip_prefix('[') {
        let Some(lit) = lit.strip_suffix(']') else {
            return false;
        };
        if let Some(v6) = lit
            .strip_prefix("IPv6:")
            .or_else(|| lit.strip_prefix("ipv6:"))
        {
            return v6.parse::<Ipv6Addr>().is_ok();
        }
        return lit.parse::<Ipv4Addr>().is_ok();
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    if !s.is_ascii() {
        // RFC 6531 §3.3: U-labels must be valid IDNA.
        return idna::domain_to_ascii_strict(s).is_ok_and(|a| valid_ascii_domain(&a));
    }
    valid_ascii_domain(s)
}

fn valid_ascii_domain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// RFC 3461 §4: xtext = *( xchar / hexchar ), hexchar = "+" 2HEXDIG (upper case).
pub fn valid_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                if !(b.get(i + 1).copied().is_some_and(hex)
                    && b.get(i + 2).copied().is_some_and(hex))
                {
                    return false;
                }
                i += 3;
            }
            b'!'..=b'~' if b[i] != b'=' => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> Option<String> {
        parse_path(s, "mx.example.org").map(|p| match p.mailbox {
            Some(m) => m.to_address(),
            None => String::new(),
        })
    }

    #[test]
    fn accepts_plain_null_and_domainless_paths() {
        assert_eq!(mb("<a@b.example>").as_deref(), Some("a@b.example"));
        assert_eq!(mb("<>").as_deref(), Some(""));
        assert_eq!(
            mb("<postmaster>").as_deref(),
            Some("postmaster@mx.example.org")
        );
        assert_eq!(
            mb("<A.B+tag@EXAMPLE.Org>").as_deref(),
            Some("A.B+tag@example.org")
        );
    }

    #[test]
    fn accepts_quoted_local_parts_with_specials() {
        assert_eq!(
            mb(r#"<"john doe"@example.org>"#).as_deref(),
            Some(r#""john doe"@example.org"#)
        );
        assert_eq!(
            mb(r#"<"a>b@c"@example.org>"#).as_deref(),
            Some(r#""a>b@c"@example.org"#)
        );
        assert_eq!(
            mb(r#"<"a\"b"@example.org>"#).as_deref(),
            Some(r#""a\"b"@example.org"#)
        );
        assert_eq!(mb(r#"<"unterminated@example.org>"#), None);
    }

    #[test]
    fn accepts_and_ignores_source_routes() {
        assert_eq!(
            mb("<@relay.example,@b.example:u@d.example>").as_deref(),
            Some("u@d.example")
        );
        assert_eq!(mb("<@:u@d.example>"), None);
    }

    #[test]
    fn accepts_address_literals_and_utf8_domains() {
        assert_eq!(mb("<u@[192.0.2.1]>").as_deref(), Some("u@[192.0.2.1]"));
        assert_eq!(
            mb("<u@[IPv6:2001:db8::1]>").as_deref(),
            Some("u@[ipv6:2001:db8::1]")
        );
        assert_eq!(mb("<u@[300.1.1.1]>"), None);
        assert_eq!(
            mb("<jörg@bücher.example>").as_deref(),
            Some("jörg@bücher.example")
        );
        assert_eq!(
            mb("<u@xn--bcher-kva.example>").as_deref(),
            Some("u@xn--bcher-kva.example")
        );
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "a@b",
            "<a@b",
            "<a..b@c>",
            "<.a@c>",
            "<a.@c>",
            "<a@-b.c>",
            "<a@b..c>",
            "<a b@c>",
            "<a@b>x",
            "<@>",
            "<a@>",
            "<a@b c>",
            "<a@[1.2.3.4>",
        ] {
            assert_eq!(mb(bad), None, "{bad}");
        }
        let long = format!("<{}@b.example>", "x".repeat(65));
        assert_eq!(mb(&long), None);
    }

    #[test]
    fn keeps_parameters_after_the_path() {
        let p = parse_path("<a@b> SIZE=10 BODY=8BITMIME", "h").unwrap();
        assert_eq!(p.rest, " SIZE=10 BODY=8BITMIME");
    }

    #[test]
    fn checks_xtext() {
        assert!(valid_xtext("rfc822;a+2Bb@example.org"));
        assert!(!valid_xtext("a+2"));
        assert!(!valid_xtext("a+zz"));
        assert!(!valid_xtext("a b"));
        assert!(!valid_xtext("a=b"));
    }
}
