//! Domain names and addresses as the appliance stores them: validated, lower-cased, and
//! with internationalised domains in their ASCII (IDNA) form, because that is the form
//! every lookup uses.

use std::fmt;

use crate::Error;

/// RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 1035 §2.3.4 / RFC 5321 §4.5.3.1.2.
pub const MAX_DOMAIN: usize = 253;
const MAX_LABEL: usize = 63;

/// A mail domain in lower-case ASCII form (`xn--` labels for IDNA names).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidDomain {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        if trimmed != input {
            return Err(bad("it has leading or trailing white space"));
        }
        // A trailing dot is the DNS root, never part of a mail domain as typed.
        if input.ends_with('.') {
            return Err(bad("it ends with a dot"));
        }
        let ascii = if input.is_ascii() {
            input.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii(input)
                .map_err(|_| bad("it is not a valid internationalised domain name"))?
        };
        if ascii.len() > MAX_DOMAIN {
            return Err(bad("it is longer than 253 characters"));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(bad("it needs at least two labels, like example.org"));
        }
        for label in &labels {
            if label.is_empty() {
                return Err(bad(
                    "it has an empty label (two dots in a row, or a leading dot)",
                ));
            }
            if label.len() > MAX_LABEL {
                return Err(bad("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(bad("only letters, digits, hyphens and dots are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label starts or ends with a hyphen"));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad(
                "the last label is numeric (an IP address is not a mail domain)",
            ));
        }
        Ok(DomainName(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Unicode form for display (`bücher.example` for `xn--bcher-kva.example`).
    pub fn to_unicode(&self) -> String {
        let (unicode, result) = idna::domain_to_unicode(&self.0);
        if result.is_ok() {
            unicode
        } else {
            self.0.clone()
        }
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The part of an address before the `@`, lower-cased, in RFC 5322 dot-atom form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalPart(String);

impl LocalPart {
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidAddress {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("the local part is empty"));
        }
        if input.len() > MAX_LOCAL_PART {
            return Err(bad("the local part is longer than 64 characters"));
        }
        if input.starts_with('.') || input.ends_with('.') || input.contains("..") {
            return Err(bad(
                "the local part starts or ends with a dot, or has two in a row",
            ));
        }
        // RFC 5322 §3.2.3 atext, plus UTF-8 per RFC 6531 §3.3.
        let atext = |c: char| {
            c.is_ascii_alphanumeric()
                || "!#$%&'*+/=?^_`{|}~-.".contains(c)
                || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        };
        if let Some(c) = input.chars().find(|c| !atext(*c)) {
            return Err(bad(&format!(
                "the local part contains {c:?}, which is not allowed in an address"
            )));
        }
        Ok(LocalPart(input.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LocalPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `local@domain`, both parts validated and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EmailAddress {
    local: LocalPart,
    domain: DomainName,
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::InvalidAddress {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let Some((local, domain)) = input.rsplit_once('@') else {
            return Err(bad("it has no @"));
        };
        if local.contains('@') {
            return Err(bad("it has more than one @"));
        }
        let local = LocalPart::parse(local).map_err(|e| match e {
            Error::InvalidAddress { reason, .. } => bad(&reason),
            other => other,
        })?;
        let domain = DomainName::parse(domain).map_err(|e| match e {
            Error::InvalidDomain { reason, .. } => bad(&format!("the domain is invalid: {reason}")),
            other => other,
        })?;
        Ok(EmailAddress { local, domain })
    }

    pub fn new(local: LocalPart, domain: DomainName) -> Self {
        EmailAddress { local, domain }
    }

    pub fn local_part(&self) -> &LocalPart {
        &self.local
    }

    pub fn domain(&self) -> &DomainName {
        &self.domain
    }

    /// True when the local part is plain ASCII: Dovecot 2.3's LMTP has no SMTPUTF8, so
    /// mailboxes delivered over LMTP must have ASCII local parts.
    pub fn is_ascii(&self) -> bool {
        self.local.as_str().is_ascii()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// The left side of an alias: one address, or every address of a domain (`@domain`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AliasSource {
    Address(EmailAddress),
    CatchAll(DomainName),
}

impl AliasSource {
    pub fn parse(input: &str) -> Result<Self, Error> {
        match input.strip_prefix('@') {
            Some(domain) => Ok(AliasSource::CatchAll(DomainName::parse(domain).map_err(
                |e| match e {
                    Error::InvalidDomain { reason, .. } => Error::InvalidAddress {
                        input: input.to_string(),
                        reason: format!("the catch-all domain is invalid: {reason}"),
                    },
                    other => other,
                },
            )?)),
            None => Ok(AliasSource::Address(EmailAddress::parse(input)?)),
        }
    }

    pub fn domain(&self) -> &DomainName {
        match self {
            AliasSource::Address(a) => a.domain(),
            AliasSource::CatchAll(d) => d,
        }
    }
}

impl fmt::Display for AliasSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AliasSource::Address(a) => a.fmt(f),
            AliasSource::CatchAll(d) => write!(f, "@{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<impl fmt::Debug, Error>) -> String {
        match r {
            Err(Error::InvalidAddress { reason, .. } | Error::InvalidDomain { reason, .. }) => {
                reason
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn domains_are_lowercased_and_idna_encoded() {
        assert_eq!(
            DomainName::parse("Example.ORG").unwrap().as_str(),
            "example.org"
        );
        let d = DomainName::parse("bücher.example").unwrap();
        assert_eq!(d.as_str(), "xn--bcher-kva.example");
        assert_eq!(d.to_unicode(), "bücher.example");
    }

    #[test]
    fn bad_domains_say_why() {
        assert_eq!(
            reason(DomainName::parse("localhost")),
            "it needs at least two labels, like example.org"
        );
        assert!(reason(DomainName::parse("a..b")).contains("empty label"));
        assert!(reason(DomainName::parse("-a.org")).contains("hyphen"));
        assert!(reason(DomainName::parse("192.0.2.1")).contains("numeric"));
        assert!(reason(DomainName::parse("a_b.org")).contains("only letters"));
        assert!(reason(DomainName::parse("example.org.")).contains("ends with a dot"));
        assert!(reason(DomainName::parse(&format!("{}.org", "a".repeat(64)))).contains("63"));
        assert!(
            reason(DomainName::parse(&format!("{}.org", ["a"; 130].join(".")))).contains("253")
        );
    }

    #[test]
    fn addresses_parse_and_lowercase() {
        let a = EmailAddress::parse("Alice.Smith+tag@Example.org").unwrap();
        assert_eq!(a.to_string(), "alice.smith+tag@example.org");
        assert_eq!(a.domain().as_str(), "example.org");
    }

    #[test]
    fn invalid_addresses_are_refused_with_a_reason() {
        assert!(reason(EmailAddress::parse("alice@@example.org")).contains("more than one @"));
        assert!(reason(EmailAddress::parse("a b@example.org")).contains("' '"));
        assert!(
            reason(EmailAddress::parse(&format!(
                "{}@example.org",
                "a".repeat(300)
            )))
            .contains("64")
        );
        assert!(reason(EmailAddress::parse("alice")).contains("no @"));
        assert!(reason(EmailAddress::parse("@example.org")).contains("empty"));
        assert!(reason(EmailAddress::parse(".alice@example.org")).contains("dot"));
        assert!(reason(EmailAddress::parse("alice@example")).contains("domain is invalid"));
    }

    #[test]
    fn alias_sources_are_addresses_or_catch_alls() {
        assert_eq!(
            AliasSource::parse("@Example.org").unwrap(),
            AliasSource::CatchAll(DomainName::parse("example.org").unwrap())
        );
        assert_eq!(
            AliasSource::parse("postmaster@example.org")
                .unwrap()
                .to_string(),
            "postmaster@example.org"
        );
        assert!(AliasSource::parse("@").is_err());
    }
}
