//! Password hashes as the appliance stores and checks them.
//!
//! New hashes are argon2id PHC strings (`$argon2id$v=19$…`) or, for operators who also run
//! real OpenSMTPD, bcrypt `$2b$` (OpenBSD's crypt(3) accepts only bcrypt). Verification
//! also accepts what imported tables and Dovecot hold: bcrypt `$2a$/$2b$/$2y$`,
//! sha512-crypt `$6$` and sha256-crypt `$5$`. Dovecot's `{SCHEME}` prefix is understood
//! on input and produced by [`dovecot_scheme`] for its passwd-file.
//!
//! This crate does no I/O and knows nothing of users or tables.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use sha_crypt::ShaCrypt;

/// bcrypt cost for new hashes: Dovecot's default of 5 is too cheap, OpenBSD's
/// `encrypt(1)` tunes to 8-12 on current hardware.
pub const BCRYPT_COST: u32 = 10;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown password scheme {0:?} (expected argon2id or bcrypt)")]
    UnknownScheme(String),
    #[error(
        "stored hash is not in a format fugu can check (argon2, bcrypt, sha512-crypt, sha256-crypt)"
    )]
    UnsupportedHash,
    #[error("stored hash is malformed: {0}")]
    MalformedHash(String),
    #[error("could not hash the password: {0}")]
    Hashing(String),
    #[error("the password is empty")]
    EmptyPassword,
}

/// The scheme used for new hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Argon2id,
    Bcrypt,
}

impl std::str::FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "argon2id" | "argon2" => Ok(Scheme::Argon2id),
            "bcrypt" | "blowfish" | "blf-crypt" => Ok(Scheme::Bcrypt),
            _ => Err(Error::UnknownScheme(s.to_string())),
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::Argon2id => "argon2id",
            Scheme::Bcrypt => "bcrypt",
        })
    }
}

/// Hashes `password` with a fresh random salt, returning the bare hash string
/// (what `smtpctl encrypt` prints, with no `{SCHEME}` prefix).
pub fn hash(password: &str, scheme: Scheme) -> Result<String, Error> {
    if password.is_empty() {
        return Err(Error::EmptyPassword);
    }
    match scheme {
        Scheme::Argon2id => argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::Hashing(e.to_string())),
        Scheme::Bcrypt => {
            bcrypt::hash(password, BCRYPT_COST).map_err(|e| Error::Hashing(e.to_string()))
        }
    }
}

/// The family a stored hash belongs to, judged from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Argon2id,
    Argon2i,
    Bcrypt,
    Sha512Crypt,
    Sha256Crypt,
}

/// Recognises a stored hash, with or without a Dovecot `{SCHEME}` prefix.
pub fn family(stored: &str) -> Option<Family> {
    let bare = strip_dovecot_prefix(stored);
    if bare.starts_with("$argon2id$") {
        Some(Family::Argon2id)
    } else if bare.starts_with("$argon2i$") {
        Some(Family::Argon2i)
    } else if ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| bare.starts_with(p))
    {
        Some(Family::Bcrypt)
    } else if bare.starts_with("$6$") {
        Some(Family::Sha512Crypt)
    } else if bare.starts_with("$5$") {
        Some(Family::Sha256Crypt)
    } else {
        None
    }
}

/// Dovecot's scheme name for a stored hash, as used in `{SCHEME}` prefixes.
pub fn dovecot_scheme(stored: &str) -> Option<&'static str> {
    family(stored).map(|f| match f {
        Family::Argon2id => "ARGON2ID",
        Family::Argon2i => "ARGON2I",
        Family::Bcrypt => "BLF-CRYPT",
        Family::Sha512Crypt => "SHA512-CRYPT",
        Family::Sha256Crypt => "SHA256-CRYPT",
    })
}

/// The value for a Dovecot passwd-file password field: `{SCHEME}hash`.
pub fn dovecot_field(stored: &str) -> Result<String, Error> {
    let bare = strip_dovecot_prefix(stored);
    let scheme = dovecot_scheme(bare).ok_or(Error::UnsupportedHash)?;
    Ok(format!("{{{scheme}}}{bare}"))
}

fn strip_dovecot_prefix(stored: &str) -> &str {
    match stored
        .strip_prefix('{')
        .and_then(|rest| rest.find('}').map(|end| &rest[end + 1..]))
    {
        Some(bare) => bare,
        None => stored,
    }
}

/// Checks `password` against a stored hash. `Ok(false)` is a wrong password; an error
/// means the stored value cannot be checked at all (and so never matches).
pub fn verify(password: &str, stored: &str) -> Result<bool, Error> {
    let bare = strip_dovecot_prefix(stored);
    match family(bare).ok_or(Error::UnsupportedHash)? {
        Family::Argon2id | Family::Argon2i => {
            let parsed =
                PasswordHash::new(bare).map_err(|e| Error::MalformedHash(e.to_string()))?;
            Ok(argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        }
        Family::Bcrypt => {
            bcrypt::verify(password, bare).map_err(|e| Error::MalformedHash(e.to_string()))
        }
        Family::Sha512Crypt | Family::Sha256Crypt => {
            match ShaCrypt::default().verify_password(password.as_bytes(), bare) {
                Ok(()) => Ok(true),
                Err(sha_crypt::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(e) => Err(Error::MalformedHash(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hash_verifies_and_rejects_wrong_password() {
        let h = hash("secret", Scheme::Argon2id).unwrap();
        assert!(h.starts_with("$argon2id$v=19$"));
        assert_eq!(verify("secret", &h), Ok(true));
        assert_eq!(verify("wrong", &h), Ok(false));
    }

    #[test]
    fn bcrypt_hash_is_2b_and_verifies() {
        let h = hash("secret", Scheme::Bcrypt).unwrap();
        assert!(h.starts_with("$2b$10$"), "{h}");
        assert_eq!(verify("secret", &h), Ok(true));
        assert_eq!(verify("wrong", &h), Ok(false));
    }

    #[test]
    fn verifies_hashes_written_by_dovecot() {
        // `doveadm pw -s … -p secret` on Debian bookworm (shared/reference/crates.md).
        let argon = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$v/WlZAEPWBYnwsxyoQa9ww$YF/L2AdRNMbpuFaZu9xInaBGr5OJDxi0EaRPYjK/UJQ";
        let blf = "{BLF-CRYPT}$2y$05$Mk9Lqw8MT/Mp/3e4hNEIk.fO76ZONn/GRZkiPKnorMiKPEoBvL9sm";
        let sha = "{SHA512-CRYPT}$6$AmJZjWuUjST92Vp4$4NMIoUh9TTdu8EAfjbHfGXosbdtMOy3mFTav5LEny0vSXXfgXeEWm.3NxgWunBAIG4QF6hgA.C/83gdKgNS0r0";
        for h in [argon, blf, sha] {
            assert_eq!(verify("secret", h), Ok(true), "{h}");
            assert_eq!(verify("Secret", h), Ok(false), "{h}");
        }
    }

    #[test]
    fn dovecot_field_prefixes_each_family() {
        assert_eq!(
            dovecot_field("$2b$10$AyZjTpqBmUlXeWuCcuA4o.WLEpNrb1S88ouQOY2BBeJvUb1LDFkL.").unwrap(),
            "{BLF-CRYPT}$2b$10$AyZjTpqBmUlXeWuCcuA4o.WLEpNrb1S88ouQOY2BBeJvUb1LDFkL."
        );
        assert!(
            dovecot_field("$argon2id$v=19$x")
                .unwrap()
                .starts_with("{ARGON2ID}$argon2id$")
        );
        assert!(
            dovecot_field("$6$salt$x")
                .unwrap()
                .starts_with("{SHA512-CRYPT}$6$")
        );
        assert_eq!(dovecot_field("plaintext"), Err(Error::UnsupportedHash));
    }

    #[test]
    fn unknown_formats_never_match() {
        assert_eq!(verify("secret", "secret"), Err(Error::UnsupportedHash));
        assert_eq!(verify("", ""), Err(Error::UnsupportedHash));
        assert!(verify("secret", "$2b$10$short").is_err());
    }

    #[test]
    fn empty_password_is_refused_for_new_hashes() {
        assert_eq!(hash("", Scheme::Argon2id), Err(Error::EmptyPassword));
    }
}
