//! aliases(5) values and the virtual lookup order of aliases.c.

/// The keys `virtual <t>` tries, in order (aliases.c `aliases_virtual_get`):
/// `user+tag@domain`, `user@domain`, `user+tag`, `user`, `@domain`, `@`.
/// Keys are lower-cased; the tag variants appear only when the local part has a delimiter.
pub fn virtual_keys(address: &str, sub_addr_delim: char) -> Vec<String> {
    let address = address.to_ascii_lowercase();
    let (user, domain) = match address.rsplit_once('@') {
        Some((u, d)) => (u.to_owned(), d.to_owned()),
        None => (address.clone(), String::new()),
    };
    let bare = match user.find(sub_addr_delim) {
        // A local part starting with the delimiter has no "user" to strip down to.
        Some(i) if i > 0 => Some(user[..i].to_owned()),
        _ => None,
    };
    let mut keys = Vec::with_capacity(6);
    keys.push(format!("{user}@{domain}"));
    if let Some(b) = &bare {
        keys.push(format!("{b}@{domain}"));
        keys.push(user.clone());
    }
    keys.push(bare.unwrap_or(user));
    keys.push(format!("@{domain}"));
    keys.push("@".to_owned());
    keys
}

/// One element of an alias value (aliases(5) / `text_to_expandnode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandNode {
    /// A local user name, resolved through `userbase`.
    User(String),
    /// A mail address, expanded again.
    Address(String),
    /// `/abs/path`: append to the file.
    File(String),
    /// `|command`: pipe to the command.
    Command(String),
    /// `:include:/path`: a file of further alias elements.
    Include(String),
    /// `error:code text`: bounce (5xx) or tempfail (4xx) with this text.
    Error { code: u16, text: String },
}

/// Split an alias value ("a, b@x, |cmd") into its elements.
pub fn parse_alias_value(value: &str) -> Result<Vec<ExpandNode>, String> {
    let mut out = Vec::new();
    for raw in split_alias_list(value) {
        let item = raw.trim();
        if item.is_empty() {
            continue;
        }
        let item = item
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(item);
        out.push(parse_one(item)?);
    }
    Ok(out)
}

fn split_alias_list(value: &str) -> Vec<&str> {
    // Commas inside a quoted "|cmd, arg" stay in the element.
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

fn parse_one(item: &str) -> Result<ExpandNode, String> {
    if let Some(cmd) = item.strip_prefix('|') {
        return Ok(ExpandNode::Command(cmd.trim().to_owned()));
    }
    if let Some(path) = item.strip_prefix(":include:") {
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(format!("include path must be absolute: {path}"));
        }
        return Ok(ExpandNode::Include(path.to_owned()));
    }
    if item.starts_with('/') {
        return Ok(ExpandNode::File(item.to_owned()));
    }
    if let Some(rest) = item.strip_prefix("error:") {
        let rest = rest.trim_start();
        let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code
            .parse()
            .map_err(|_| format!("error: needs a 4xx or 5xx code: {item}"))?;
        if !(400..600).contains(&code) {
            return Err(format!("error: needs a 4xx or 5xx code: {item}"));
        }
        return Ok(ExpandNode::Error {
            code,
            text: text.trim().to_owned(),
        });
    }
    if item.contains('@') {
        return Ok(ExpandNode::Address(item.to_owned()));
    }
    if item.chars().any(|c| c.is_whitespace()) {
        return Err(format!("invalid alias element: {item}"));
    }
    Ok(ExpandNode::User(item.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_order_with_tag() {
        assert_eq!(
            virtual_keys("Alice+News@Example.ORG", '+'),
            [
                "alice+news@example.org",
                "alice@example.org",
                "alice+news",
                "alice",
                "@example.org",
                "@"
            ]
        );
    }

    #[test]
    fn virtual_order_without_tag_and_other_delimiter() {
        assert_eq!(
            virtual_keys("bob@example.org", '+'),
            ["bob@example.org", "bob", "@example.org", "@"]
        );
        assert_eq!(virtual_keys("bob-x@example.org", '-')[1], "bob@example.org");
    }

    #[test]
    fn alias_elements_of_every_kind() {
        let v = parse_alias_value(
            "alice, bob@example.org, /var/mail/log, \"|/usr/bin/vacation -a x\", :include:/etc/list, error:550 no such user",
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                ExpandNode::User("alice".into()),
                ExpandNode::Address("bob@example.org".into()),
                ExpandNode::File("/var/mail/log".into()),
                ExpandNode::Command("/usr/bin/vacation -a x".into()),
                ExpandNode::Include("/etc/list".into()),
                ExpandNode::Error {
                    code: 550,
                    text: "no such user".into()
                },
            ]
        );
        assert!(parse_alias_value("error:250 fine").is_err());
    }
}
