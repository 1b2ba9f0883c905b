//! Format specifiers of maildir paths, mda commands and wrappers (smtpd.conf(5) FORMAT
//! SPECIFIERS): `%{name[slice][:modifier…]}`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Spec(Spec),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    /// `[a:b]` with either end open; `[n]` is `(Some(n), Some(n+1))` in character terms,
    /// kept as written.
    pub slice: Option<(Option<i64>, Option<i64>, bool)>,
    pub modifiers: Vec<String>,
}

const NAMES: &[&str] = &[
    "sender",
    "sender.user",
    "sender.domain",
    "rcpt",
    "rcpt.user",
    "rcpt.domain",
    "dest",
    "dest.user",
    "dest.domain",
    "user.username",
    "user.directory",
    "mbox.from",
    "mda",
];

const MODIFIERS: &[&str] = &["lowercase", "uppercase", "strip", "raw"];

/// Parse and validate a format string; `allow_mda` permits `%{mda}` (wrappers only).
pub fn parse_format(s: &str, allow_mda: bool) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("%{") {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated format specifier in \"{s}\""))?;
        let spec = parse_spec(&after[..end])?;
        if spec.name == "mda" && !allow_mda {
            return Err("%{mda} is only valid in an mda wrapper".into());
        }
        if !lit.is_empty() {
            out.push(Piece::Literal(std::mem::take(&mut lit)));
        }
        out.push(Piece::Spec(spec));
        rest = &after[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Literal(lit));
    }
    Ok(out)
}

fn parse_spec(body: &str) -> Result<Spec, String> {
    // The slice may itself hold a ':', so modifiers start after its ']'.
    let mods_from = body.find(']').map_or(0, |i| i + 1);
    let (head, mods) = match body[mods_from..].find(':') {
        Some(i) => (&body[..mods_from + i], &body[mods_from + i + 1..]),
        None => (body, ""),
    };
    let parts = mods
        .split(':')
        .filter(|m| !m.is_empty() || !mods.is_empty());
    let (name, slice) = match head.find('[') {
        Some(i) => {
            let inner = head[i + 1..]
                .strip_suffix(']')
                .ok_or_else(|| format!("invalid slice in %{{{body}}}"))?;
            (
                &head[..i],
                Some(parse_slice(inner).ok_or_else(|| format!("invalid slice in %{{{body}}}"))?),
            )
        }
        None => (head, None),
    };
    let name = name.to_ascii_lowercase();
    if !NAMES.contains(&name.as_str()) {
        return Err(format!("unknown format specifier %{{{body}}}"));
    }
    let mut modifiers = Vec::new();
    for m in parts.take_while(|_| !mods.is_empty()) {
        let m = m.to_ascii_lowercase();
        if !MODIFIERS.contains(&m.as_str()) {
            return Err(format!("unknown modifier :{m} in %{{{body}}}"));
        }
        modifiers.push(m);
    }
    Ok(Spec {
        name,
        slice,
        modifiers,
    })
}

/// `n`, `n:`, `:n`, `a:b` (negative counts from the end). The bool says whether a `:` was
/// written, so `[2]` and `[2:]` stay distinct.
fn parse_slice(s: &str) -> Option<(Option<i64>, Option<i64>, bool)> {
    let num = |x: &str| -> Option<Option<i64>> {
        if x.is_empty() {
            Some(None)
        } else {
            x.parse().ok().map(Some)
        }
    };
    match s.split_once(':') {
        Some((a, b)) => Some((num(a)?, num(b)?, true)),
        None => Some((Some(s.parse().ok()?), None, false)),
    }
}

/// The values a format can name at delivery time.
#[derive(Debug, Clone, Default)]
pub struct FormatValues {
    pub sender: String,
    pub rcpt: String,
    pub dest: String,
    pub username: String,
    pub directory: String,
    pub mda: String,
}

/// Characters that become `:` unless `:raw` is given (mda_variables.c MAILADDR_ESCAPE),
/// so an address cannot walk a path or break a command line.
const ESCAPE: &str = "!#$%&'*/?^`{|}~";

/// Expands a parsed format (mda_expand_format): slices are character positions, `[n]` is
/// one character, `[a:b]` runs from a to b inclusive, negative counts from the end.
pub fn render(pieces: &[Piece], v: &FormatValues, sub_addr_delim: char) -> Result<String, String> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Literal(l) => out.push_str(l),
            Piece::Spec(spec) => out.push_str(&render_spec(spec, v, sub_addr_delim)?),
        }
    }
    Ok(out)
}

fn user_part(a: &str) -> &str {
    a.rsplit_once('@').map_or(a, |(u, _)| u)
}

fn domain_part(a: &str) -> &str {
    a.rsplit_once('@').map_or("", |(_, d)| d)
}

fn render_spec(spec: &Spec, v: &FormatValues, delim: char) -> Result<String, String> {
    let value = match spec.name.as_str() {
        "sender" => v.sender.clone(),
        "sender.user" => user_part(&v.sender).to_string(),
        "sender.domain" => domain_part(&v.sender).to_string(),
        "rcpt" => v.rcpt.clone(),
        "rcpt.user" => user_part(&v.rcpt).to_string(),
        "rcpt.domain" => domain_part(&v.rcpt).to_string(),
        "dest" => v.dest.clone(),
        "dest.user" => user_part(&v.dest).to_string(),
        "dest.domain" => domain_part(&v.dest).to_string(),
        "user.username" => v.username.clone(),
        "user.directory" => v.directory.clone(),
        "mbox.from" => {
            if v.sender.is_empty() {
                "MAILER-DAEMON".into()
            } else {
                v.sender.clone()
            }
        }
        "mda" => v.mda.clone(),
        other => return Err(format!("unknown format specifier %{{{other}}}")),
    };
    let mut value = value;
    let mut raw = false;
    for m in &spec.modifiers {
        match m.as_str() {
            "lowercase" => value = value.to_lowercase(),
            "uppercase" => value = value.to_uppercase(),
            "raw" => raw = true,
            "strip" => {
                // Drop a +tag from the user part of an address (or of a bare user).
                let (user, domain) = match value.rsplit_once('@') {
                    Some((u, d)) => (u.to_string(), Some(d.to_string())),
                    None => (value.clone(), None),
                };
                let user = user
                    .split_once(delim)
                    .map_or(user.as_str(), |(u, _)| u)
                    .to_string();
                value = match domain {
                    Some(d) => format!("{user}@{d}"),
                    None => user,
                };
            }
            _ => {}
        }
    }
    if let Some((begin, end, colon)) = spec.slice {
        let chars: Vec<char> = value.chars().collect();
        let len = chars.len() as i64;
        let fix = |n: i64| if n < 0 { (len + n).max(0) } else { n };
        let b = fix(begin.unwrap_or(0));
        let e = match (end, colon) {
            (Some(e), _) => fix(e),
            (None, true) => len - 1,
            (None, false) => b,
        }
        .min(len - 1);
        value = if b > e || b >= len {
            String::new()
        } else {
            chars[b as usize..=e as usize].iter().collect()
        };
    }
    // The home directory and the mda command are trusted paths, never escaped.
    let trusted = matches!(spec.name.as_str(), "user.directory" | "mda");
    if !raw && !trusted {
        value = value
            .chars()
            .map(|c| if ESCAPE.contains(c) { ':' } else { c })
            .collect();
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifiers_slices_and_modifiers() {
        let p = parse_format(
            "/var/vmail/%{dest.domain:lowercase}/%{dest.user[0]}/%{dest.user:strip}",
            false,
        )
        .unwrap();
        assert_eq!(p.len(), 6);
        assert!(parse_format("%{rcpt[-3:]}", false).is_ok());
        assert!(parse_format("%{rcpt[1:4]}", false).is_ok());
        assert_eq!(
            parse_format("%{foo}", false).unwrap_err(),
            "unknown format specifier %{foo}"
        );
        assert!(parse_format("%{rcpt:shout}", false).is_err());
    }

    #[test]
    fn render_expands_like_mda_expand_format() {
        let v = FormatValues {
            sender: "Bob@Example.net".into(),
            rcpt: "alice+lists@example.org".into(),
            dest: "alice+lists@example.org".into(),
            username: "vmail".into(),
            directory: "/var/vmail".into(),
            mda: String::new(),
        };
        let r = |f: &str| render(&parse_format(f, false).unwrap(), &v, '+').unwrap();
        assert_eq!(
            r("%{user.directory}/%{dest.domain}/%{dest.user:strip}"),
            "/var/vmail/example.org/alice"
        );
        assert_eq!(
            r("%{rcpt.user[0]}/%{rcpt.user[-5:]}/%{rcpt.user[0:2]}"),
            "a/lists/ali"
        );
        assert_eq!(r("%{sender:lowercase}"), "bob@example.net");
        assert_eq!(r("%{rcpt.user}"), "alice+lists");
        // Path and shell characters are neutralised unless :raw.
        let v2 = FormatValues {
            rcpt: "../x|y@e.org".into(),
            ..v.clone()
        };
        assert_eq!(
            render(&parse_format("%{rcpt.user}", false).unwrap(), &v2, '+').unwrap(),
            "..:x:y"
        );
        assert_eq!(
            render(&parse_format("%{rcpt.user:raw}", false).unwrap(), &v2, '+').unwrap(),
            "../x|y"
        );
        assert!(parse_format("%{rcpt", false).is_err());
        assert!(parse_format("%{mda}", false).is_err());
        assert!(parse_format("/usr/bin/wrap %{mda}", true).is_ok());
    }
}
